/*
 * roles/ca.c: `weft --role=ca`, the certificate authority on its own:
 * Istio's CreateCertificate (core/identity/casvc) over gRPC with TLS, for
 * deployments that run the CA apart from istiod.  The CA's key material is
 * --ca-dir (Istio plugged certs, or a root generated there on first start);
 * its serving certificate is issued by itself for --server-name and
 * renewed at half its life.  Clients may present their workload
 * certificate (renewal) or a bootstrap token from `weft token`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/sha256.h>
#include <uv.h>

#include "admin/httpd.h"
#include "ca/ca.h"
#include "grpc/grpc.h"
#include "identity/casvc.h"
#include "roles/roles.h"
#include "tls/tls.h"
#include "util/flags.h"
#include "util/log.h"
#include "util/loop.h"

#define SERVER_CERT_TTL (30L * 86400)

static const char *ca_dir, *listen_addr, *server_name, *trust_domain, *cert_ttl, *max_cert_ttl,
    *monitoring, *log_level;

static const wf_flag flags[] = {
    {"ca-dir", WF_FLAG_STR, &ca_dir, 0, 0, "DIR",
     "Istio plugged certs (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem), or where "
     "a generated root is kept (required)"},
    {"listen", WF_FLAG_ADDR, &listen_addr, 0, 0, "ADDR",
     "CreateCertificate over gRPC with TLS (127.0.0.1:15012)"},
    {"server-name", WF_FLAG_STR, &server_name, 0, 0, "NAME",
     "DNS name in the CA's own serving certificate (istiod.istio-system.svc)"},
    {"trust-domain", WF_FLAG_STR, &trust_domain, 0, 0, "TD",
     "SPIFFE trust domain of the identities issued (cluster.local)"},
    WF_FLAGS_CERT_TTL(&cert_ttl, "lifetime of a workload certificate when the request does not ask",
                      &max_cert_ttl, "longest lifetime granted; longer requests are cut"),
    {"monitoring", WF_FLAG_ADDR, &monitoring, 0, 0, "ADDR", "/ready and /metrics (off)"},
    WF_FLAG_LOG_LEVEL(&log_level),
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

typedef struct ca_role {
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int;
    uv_timer_t rotate;
    wf_ca *ca;
    wf_ca_service *svc;
    wf_grpc_server *srv;
    wf_httpd *mon;
    int stopping;
} ca_role;

/* The httpd handler has no user data; one CA runs per process. */
static ca_role *mon_role;

static void handler(const char *method, const char *path, wf_http_reply *r)
{
    ca_role *R = mon_role;

    if (wf_http_refuse_unless_get(method, r))
        return;
#define IS(p) wf_http_path_is(path, p)
    if (IS("/ready")) {
        if (R->srv && !R->stopping)
            wf_http_reply_text(r, 200, "text/plain", "ready\n");
        else
            wf_http_reply_text(r, 503, "text/plain", "not ready\n");
    } else if (IS("/metrics") || IS("/stats/prometheus")) {
        char *buf = NULL;
        size_t len = 0, cap = 0;
        if (wf_ca_service_metrics(R->svc, &buf, &len, &cap) != 0) {
            free(buf);
            buf = NULL;
        }
        wf_http_reply_metrics(r, buf, len);
    } else if (IS("/")) {
        wf_http_reply_text(r, 200, "text/plain", "weft ca\n  /ready\n  /metrics\n");
    }
#undef IS
}

/* A server TLS context with a fresh serving certificate; NULL after logging. */
static wf_tls_ctx *serving_ctx(ca_role *R, time_t *not_after)
{
    char *err = NULL;
    wf_tls_ctx *ctx = wf_ca_serving_ctx(R->ca, server_name, SERVER_CERT_TTL, not_after, &err);

    if (!ctx)
        WF_ERROR("%s", err ? err : "cannot make the serving TLS context");
    free(err);
    return ctx;
}

/* Renews the serving certificate at half its life (or retries in a minute). */
static void on_rotate(uv_timer_t *t)
{
    ca_role *R = t->data;
    time_t not_after = 0;
    wf_tls_ctx *ctx = serving_ctx(R, &not_after);
    uint64_t ms = 60000;

    if (ctx) {
        wf_grpc_server_set_tls(R->srv, ctx);
        wf_tls_ctx_unref(ctx);
        time_t now = time(NULL);
        if (not_after > now)
            ms = (uint64_t)(not_after - now) * 1000 / 2;
        WF_INFO("serving certificate for %s renewed", server_name);
    }
    if (ms < 60000)
        ms = 60000;
    uv_timer_start(&R->rotate, on_rotate, ms, 0);
}

static void stop(ca_role *R)
{
    if (R->stopping)
        return;
    R->stopping = 1;
    uv_close((uv_handle_t *)&R->sig_term, NULL);
    uv_close((uv_handle_t *)&R->sig_int, NULL);
    uv_close((uv_handle_t *)&R->rotate, NULL);
    if (R->mon)
        wf_httpd_stop(R->mon);
    R->mon = NULL;
    if (R->srv)
        wf_grpc_server_stop(R->srv);
    R->srv = NULL;
}

static void on_signal(uv_signal_t *s, int signum)
{
    WF_INFO("received %s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    stop(s->data);
}

static void root_sha256(const wf_ca *ca, char out[65])
{
    const mbedtls_x509_crt *r = wf_ca_root(ca);
    unsigned char h[32];
    out[0] = 0;
    if (mbedtls_sha256_ret(r->raw.p, r->raw.len, h, 0) == 0)
        for (int i = 0; i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static int run(int argc, char **argv, int first)
{
    static ca_role role;
    ca_role *R = &role;
    char err[512], fp[65], path[4096];
    char *cerr = NULL;
    long ttl = 0, max_ttl = 0;
    int rc = 0;

    ca_dir = NULL;
    listen_addr = "127.0.0.1:15012";
    server_name = WF_CA_SERVER_NAME;
    trust_domain = WF_CA_DEFAULT_TRUST_DOMAIN;
    cert_ttl = WF_CERT_TTL_DEFAULT;
    max_cert_ttl = WF_MAX_CERT_TTL_DEFAULT;
    monitoring = NULL;
    if (wf_role_flags(flags, N_FLAGS, argc, argv, first, &log_level))
        return 2;
    if (!ca_dir)
        return wf_usage_error("--role=ca needs --ca-dir DIR (plugged certs, or where to keep a "
                              "generated root)");
    if (wf_cert_ttl_flags(cert_ttl, max_cert_ttl, &ttl, &max_ttl))
        return 2;

    wf_log_role = "ca";
    signal(SIGPIPE, SIG_IGN);
    memset(R, 0, sizeof(*R));
    mon_role = R;
    /* The directory holds the key: create it private when it is missing. */
    if (mkdir(ca_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "weft: ca: cannot create --ca-dir %s: %s\n", ca_dir, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/ca-cert.pem", ca_dir);
    int existed = access(path, F_OK) == 0;
    snprintf(path, sizeof(path), "%s/cert-chain.pem", ca_dir);
    int plugged = access(path, F_OK) == 0;
    if (wf_ca_load_or_create(ca_dir, trust_domain, &R->ca, &cerr) != 0) {
        fprintf(stderr, "weft: ca: %s\n", cerr ? cerr : "out of memory");
        free(cerr);
        return 1;
    }
    if (!(R->svc = wf_ca_service_new(R->ca, ttl, max_ttl))) {
        fprintf(stderr, "weft: ca: out of memory\n");
        wf_ca_free(R->ca);
        return 1;
    }
    if (uv_loop_init(&R->loop) < 0) {
        fprintf(stderr, "weft: ca: cannot create the event loop\n");
        wf_ca_service_free(R->svc);
        wf_ca_free(R->ca);
        return 1;
    }
    uv_signal_init(&R->loop, &R->sig_term);
    uv_signal_init(&R->loop, &R->sig_int);
    uv_timer_init(&R->loop, &R->rotate);
    R->sig_term.data = R->sig_int.data = R->rotate.data = R;
    uv_signal_start(&R->sig_term, on_signal, SIGTERM);
    uv_signal_start(&R->sig_int, on_signal, SIGINT);

    time_t not_after = 0;
    wf_tls_ctx *ctx = serving_ctx(R, &not_after);
    if (!ctx) {
        fprintf(stderr, "weft: ca: cannot set up the serving certificate (see the log above)\n");
        rc = 1;
        goto out;
    }
    wf_grpc_server_handlers h;
    wf_ca_service_handlers(R->svc, &h);
    R->srv = wf_grpc_server_start_tls(&R->loop, listen_addr, &h, ctx, err, sizeof(err));
    wf_tls_ctx_unref(ctx);
    if (!R->srv) {
        fprintf(stderr, "weft: ca: cannot listen on --listen %s: %s\n", listen_addr, err);
        rc = 1;
        goto out;
    }
    {
        time_t now = time(NULL);
        uint64_t ms = not_after > now ? (uint64_t)(not_after - now) * 1000 / 2 : 60000;
        uv_timer_start(&R->rotate, on_rotate, ms < 60000 ? 60000 : ms, 0);
    }
    if (monitoring && !(R->mon = wf_httpd_start(&R->loop, monitoring, handler, err, sizeof(err)))) {
        fprintf(stderr, "weft: ca: monitoring (--monitoring %s): %s\n", monitoring, err);
        rc = 1;
        goto out;
    }
    root_sha256(R->ca, fp);
    WF_INFO("ca %s: %s root in %s (sha256 %s), trust domain %s", WF_VERSION,
            !existed  ? "generated a new"
            : plugged ? "plugged certs with their"
                      : "loaded the",
            ca_dir, fp, trust_domain);
    WF_INFO("CreateCertificate on %s (TLS as %s, client certificates optional), "
            "certificates %lds by default, at most %lds%s%s",
            listen_addr, server_name, ttl, max_ttl, monitoring ? ", monitoring on " : "",
            monitoring ? monitoring : "");
    uv_run(&R->loop, UV_RUN_DEFAULT);
    goto done;
out:
    stop(R);
done:
    wf_loop_finish(&R->loop);
    wf_ca_service_free(R->svc);
    wf_ca_free(R->ca);
    if (!rc)
        WF_INFO("stopped");
    return rc;
}

static void usage(void)
{
    wf_flags_usage(flags, N_FLAGS);
}

const wf_role wf_role_ca = {"ca", "the certificate authority alone (Istio's CreateCertificate)",
                            run, usage};
