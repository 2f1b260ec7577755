/*
 * ident.c: the workload's identity on the data path.  The main thread turns
 * each certificate the keeper obtains into a server context (the inbound
 * listener: mTLS required) and client contexts (ISTIO_MUTUAL clusters), one
 * per ALPN offer: h2 between proxies (it also carries xDS to istiod),
 * http/1.1 for upgraded requests (WebSocket), none for opaque TCP.  They
 * are published by pointer; workers take a reference when a connection
 * starts, so rotation never touches a connection already open.
 *
 * A worker reads the pointer and then takes its reference, so a context
 * cannot be released the moment it is replaced: replaced contexts are kept
 * (retired) for RETIRE_MS before their reference is dropped, far longer than
 * the few instructions between a worker's load and its ref.
 */
#include "proxy/proxy.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define RETIRE_MS 10000
#define MAX_RETIRED 64

static wf_tls_ctx *_Atomic cur_server;
static wf_tls_ctx *_Atomic cur_client[WF_ALPN_COUNT];
static struct {
    wf_tls_ctx *ctx;
    uint64_t at_ms;
} retired[MAX_RETIRED];
static size_t n_retired;
static wf_tls_cert_info info;
static int have_info;

static uint64_t now_ms(void)
{
    return wf_now_us() / 1000;
}

static void retire(wf_tls_ctx *c)
{
    uint64_t now = now_ms();
    size_t k = 0;

    for (size_t i = 0; i < n_retired; i++) {
        if (now - retired[i].at_ms >= RETIRE_MS)
            wf_tls_ctx_unref(retired[i].ctx);
        else
            retired[k++] = retired[i];
    }
    n_retired = k;
    if (!c)
        return;
    if (n_retired == MAX_RETIRED) {
        /* Rotating faster than every RETIRE_MS / MAX_RETIRED: keep the
         * oldest alive forever rather than risk a worker's load. */
        WF_WARN("identity: certificates rotating too fast; keeping an old context");
        return;
    }
    retired[n_retired].ctx = c;
    retired[n_retired].at_ms = now;
    n_retired++;
}

int wf_ident_set(const char *chain_pem, const char *key_pem, const char *roots, char *err,
                 size_t errlen)
{
    /* Peers talk HTTP/2 to each other (upstream_h2.c); an HTTP/1.1 peer
     * (openssl s_client, an older weft) is still served. */
    static const char *const alpn[] = {"h2", "http/1.1", NULL};
    static const char *const offers[WF_ALPN_COUNT][2] = {{"h2", NULL}, {"http/1.1", NULL}, {NULL}};
    wf_tls_ctx_opts so = {.server = 1,
                          .cert_chain_pem = chain_pem,
                          .key_pem = key_pem,
                          .roots_pem = roots,
                          .peer_cert = WF_TLS_PEER_REQUIRED,
                          .alpn = alpn,
                          .mesh = 1};
    wf_tls_ctx *s = NULL, *c[WF_ALPN_COUNT] = {NULL};
    char *e = NULL;
    int bad = wf_tls_ctx_new(&so, &s, &e) < 0;

    for (int k = 0; k < WF_ALPN_COUNT && !bad; k++) {
        wf_tls_ctx_opts co = {.server = 0,
                              .cert_chain_pem = chain_pem,
                              .key_pem = key_pem,
                              .roots_pem = roots,
                              .alpn = offers[k][0] ? offers[k] : NULL,
                              .mesh = 1};
        bad = wf_tls_ctx_new(&co, &c[k], &e) < 0;
    }
    if (bad) {
        snprintf(err, errlen, "workload certificate refused: %s", e ? e : "unknown error");
        free(e);
        wf_tls_ctx_unref(s);
        for (int k = 0; k < WF_ALPN_COUNT; k++)
            wf_tls_ctx_unref(c[k]);
        return -1;
    }
    have_info = wf_tls_ctx_info(s, &info) == 0;
    retire(atomic_exchange(&cur_server, s));
    for (int k = 0; k < WF_ALPN_COUNT; k++)
        retire(atomic_exchange(&cur_client[k], c[k]));
    return 0;
}

wf_tls_ctx *wf_ident_server(void)
{
    wf_tls_ctx *c = atomic_load(&cur_server);

    if (c)
        wf_tls_ctx_ref(c);
    return c;
}

wf_tls_ctx *wf_ident_client(void)
{
    return wf_ident_client_alpn(WF_ALPN_H2);
}

wf_tls_ctx *wf_ident_client_alpn(int alpn)
{
    wf_tls_ctx *c = atomic_load(&cur_client[alpn]);

    if (c)
        wf_tls_ctx_ref(c);
    return c;
}

int wf_ident_ready(void)
{
    return atomic_load(&cur_client[WF_ALPN_H2]) != NULL;
}

const char *wf_ident_id(void)
{
    return have_info ? info.identity : NULL;
}

json_t *wf_ident_dump(void)
{
    char nb[32], na[32];
    struct tm tm;

    if (!have_info)
        return json_pack("{s:n}", "identity");
    strftime(nb, sizeof(nb), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&info.not_before, &tm));
    strftime(na, sizeof(na), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&info.not_after, &tm));
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "identity", info.identity, "serial",
                     info.serial, "not_before", nb, "not_after", na, "root_sha256",
                     info.root_sha256);
}

void wf_ident_shutdown(void)
{
    wf_tls_ctx_unref(atomic_exchange(&cur_server, NULL));
    for (int k = 0; k < WF_ALPN_COUNT; k++)
        wf_tls_ctx_unref(atomic_exchange(&cur_client[k], NULL));
    for (size_t i = 0; i < n_retired; i++)
        wf_tls_ctx_unref(retired[i].ctx);
    n_retired = 0;
    have_info = 0;
}
