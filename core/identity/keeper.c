/*
 * keeper.c: keeps a workload certificate current (see keeper.h).  One
 * attempt at a time: make a key and CSR, call CreateCertificate, check the
 * answer, hand it to the owner, and schedule the next renewal or retry on
 * one timer; a second timer bounds each call.
 */
#define _GNU_SOURCE /* asprintf */
#include "identity/keeper.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "ca/ca.h"
#include "grpc/grpc.h"
#include "identity/casvc.h"
#include "istio/v1/auth/ca.pb-c.h"
#include "tls/tls.h"
#include "util/log.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define CALL_TIMEOUT_MS 10000
#define TOKEN_MAX (16 * 1024)

struct wf_keeper {
    uv_loop_t *loop;
    char *ca_addr, *ca_name, *root_pem, *token_path, *expect_id;
    long ttl, call_timeout_ms;
    int plaintext;
    wf_keeper_cert_cb on_cert;
    void *ud;

    uv_timer_t timer;    /* next attempt */
    uv_timer_t deadline; /* the call in flight */
    int open_handles;
    int stopping;

    /* What we hold now. */
    char *chain_pem, *key_pem;
    wf_keeper_status st;

    /* The attempt in flight. */
    wf_grpc_call *call;
    int via_cert;    /* authenticated with our certificate, not the token */
    int force_token; /* the next attempt must use the token */
    int timed_out;
    char *csr_pem, *new_key, *want_id;
    uint8_t *resp;
    size_t resp_len;
    int got_resp;

    unsigned backoff_ms;
    uint64_t rng;
};

static void set_error(wf_keeper *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(wf_keeper *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->st.last_error, sizeof k->st.last_error, fmt, ap);
    va_end(ap);
    k->st.last_error_at = time(NULL);
    k->st.consecutive_failures++;
    WF_WARN("identity: %s", k->st.last_error);
}

/* xorshift64*: jitter only, nothing secret. */
static double rnd01(wf_keeper *k)
{
    k->rng ^= k->rng >> 12;
    k->rng ^= k->rng << 25;
    k->rng ^= k->rng >> 27;
    return (double)((k->rng * 0x2545F4914F6CDD1DULL) >> 11) / (double)(1ULL << 53);
}

static void attempt(wf_keeper *k);

/* Wall-clock milliseconds: certificate times are wall-clock, and whole
 * seconds are too coarse for short lifetimes (a "2 s" certificate issued at
 * .9 may have 1.1 s left). */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds the current certificate has left (<= 0: none or expired). */
static int64_t cert_left_ms(const wf_keeper *k)
{
    return k->chain_pem ? (int64_t)k->st.not_after * 1000 - now_ms() : 0;
}

static void on_timer(uv_timer_t *t)
{
    attempt(t->data);
}

static void schedule(wf_keeper *k, uint64_t ms)
{
    if (k->stopping)
        return;
    k->st.next_attempt = time(NULL) + (time_t)((ms + 999) / 1000);
    uv_timer_start(&k->timer, on_timer, ms, 0);
}

static void schedule_retry(wf_keeper *k)
{
    double ms = k->backoff_ms * (0.8 + 0.4 * rnd01(k));
    /* While the current certificate is valid, try again before it expires. */
    int64_t left = cert_left_ms(k);
    if (left > 0) {
        double half = (double)left / 2;
        if (half < 100)
            half = 100;
        if (ms > half)
            ms = half;
    }
    k->backoff_ms = k->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : k->backoff_ms * 2;
    schedule(k, (uint64_t)ms);
}

static void attempt_done(wf_keeper *k)
{
    uv_timer_stop(&k->deadline);
    if (k->new_key) {
        mbedtls_platform_zeroize(k->new_key, strlen(k->new_key));
        free(k->new_key);
    }
    free(k->csr_pem);
    free(k->want_id);
    free(k->resp);
    k->new_key = k->csr_pem = k->want_id = NULL;
    k->resp = NULL;
    k->resp_len = 0;
    k->got_resp = 0;
    k->call = NULL;
}

/* Reads the token file, trimmed.  NULL with an error set. */
static char *read_token(wf_keeper *k)
{
    if (!k->token_path) {
        set_error(k, "no valid certificate to renew with and no bootstrap token file configured");
        return NULL;
    }
    FILE *f = fopen(k->token_path, "r");
    if (!f) {
        set_error(k, "cannot read the bootstrap token %s: %s (make one with `weft token`)",
                  k->token_path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(TOKEN_MAX + 1);
    size_t n = buf ? fread(buf, 1, TOKEN_MAX + 1, f) : 0;
    fclose(f);
    if (!buf) {
        set_error(k, "out of memory");
        return NULL;
    }
    if (n > TOKEN_MAX) {
        free(buf);
        set_error(k, "bootstrap token file %s is larger than %d bytes", k->token_path, TOKEN_MAX);
        return NULL;
    }
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = 0;
    if (!n) {
        free(buf);
        set_error(k, "bootstrap token file %s is empty", k->token_path);
        return NULL;
    }
    /* A JWT is base64url and dots; anything else would also be refused as
     * a header value. */
    if (strspn(buf, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") != n) {
        free(buf);
        set_error(k, "bootstrap token file %s does not hold a token (make one with `weft token`)",
                  k->token_path);
        return NULL;
    }
    return buf;
}

/* Good enough to present: a handshake takes milliseconds, not a quarter second. */
static int have_valid_cert(const wf_keeper *k)
{
    return cert_left_ms(k) > 250;
}

/* ---- the call ---- */

static void c_on_open(wf_grpc_call *c, void *ud)
{
    wf_keeper *k = ud;
    Istio__V1__Auth__IstioCertificateRequest req = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
    req.csr = k->csr_pem;
    req.validity_duration = k->ttl;
    size_t len = istio__v1__auth__istio_certificate_request__get_packed_size(&req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        wf_grpc_cancel(c);
        return;
    }
    istio__v1__auth__istio_certificate_request__pack(&req, buf);
    if (wf_grpc_send(c, buf, len) != 0)
        wf_grpc_cancel(c);
    else
        wf_grpc_finish(c, WF_GRPC_OK, NULL); /* half-close: unary */
    free(buf);
}

static void c_on_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    wf_keeper *k = ud;
    if (k->got_resp)
        return; /* unary: a second message is ignored (and the answer judged on the first) */
    k->resp = malloc(len ? len : 1);
    if (!k->resp)
        return;
    memcpy(k->resp, msg, len);
    k->resp_len = len;
    k->got_resp = 1;
}

/* Hex SHA-256 of the configured root that anchors the response chain. */
static void root_fingerprint(const wf_keeper *k, const char *top_pem, char out[65])
{
    mbedtls_x509_crt roots, top;
    mbedtls_x509_crt_init(&roots);
    mbedtls_x509_crt_init(&top);
    out[0] = 0;
    if (mbedtls_x509_crt_parse(&roots, (const unsigned char *)k->root_pem,
                               strlen(k->root_pem) + 1) < 0 ||
        !roots.raw.p)
        goto done;
    const mbedtls_x509_crt *pick = &roots;
    if (top_pem &&
        mbedtls_x509_crt_parse(&top, (const unsigned char *)top_pem, strlen(top_pem) + 1) == 0) {
        for (const mbedtls_x509_crt *r = &roots; r && r->raw.p; r = r->next) {
            int same = r->raw.len == top.raw.len && memcmp(r->raw.p, top.raw.p, r->raw.len) == 0;
            int issuer = r->subject_raw.len == top.issuer_raw.len &&
                         memcmp(r->subject_raw.p, top.issuer_raw.p, r->subject_raw.len) == 0;
            if (same || issuer) {
                pick = r;
                break;
            }
        }
    }
    unsigned char h[32];
    if (mbedtls_sha256_ret(pick->raw.p, pick->raw.len, h, 0) == 0)
        for (int i = 0; i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", h[i]);
done:
    mbedtls_x509_crt_free(&roots);
    mbedtls_x509_crt_free(&top);
}

static int self_signed(const char *pem)
{
    mbedtls_x509_crt c;
    mbedtls_x509_crt_init(&c);
    int r = mbedtls_x509_crt_parse(&c, (const unsigned char *)pem, strlen(pem) + 1) == 0 &&
            c.issuer_raw.len == c.subject_raw.len &&
            memcmp(c.issuer_raw.p, c.subject_raw.p, c.issuer_raw.len) == 0;
    mbedtls_x509_crt_free(&c);
    return r;
}

/* Checks and installs the answer.  0, or -1 with the error set. */
static int accept_answer(wf_keeper *k)
{
    Istio__V1__Auth__IstioCertificateResponse *r =
        istio__v1__auth__istio_certificate_response__unpack(NULL, k->resp_len, k->resp);
    char *why = NULL, *chain = NULL;
    wf_ca_cert_info info;
    int rc = -1;
    if (!r) {
        set_error(k, "the CA at %s answered something that is not an IstioCertificateResponse",
                  k->ca_addr);
        return -1;
    }
    if (r->n_cert_chain == 0) {
        set_error(k, "the CA at %s answered an empty certificate chain", k->ca_addr);
        goto out;
    }
    if (wf_ca_check_issued((const char *const *)r->cert_chain, r->n_cert_chain, k->root_pem,
                           k->new_key, k->want_id, &info, &why) != 0) {
        set_error(k, "refusing the certificate from the CA at %s: %s", k->ca_addr,
                  why ? why : "out of memory");
        goto out;
    }
    /* Leaf and intermediates; a self-signed last entry is the root, which
     * the owner has already. */
    size_t n = r->n_cert_chain, len = 0;
    if (n > 1 && self_signed(r->cert_chain[n - 1]))
        n--;
    for (size_t i = 0; i < n; i++)
        len += strlen(r->cert_chain[i]) + 1;
    chain = malloc(len + 1);
    if (!chain) {
        set_error(k, "out of memory");
        goto out;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(r->cert_chain[i]);
        memcpy(chain + o, r->cert_chain[i], l);
        o += l;
        if (l && r->cert_chain[i][l - 1] != '\n')
            chain[o++] = '\n';
    }
    chain[o] = 0;

    char fp[65];
    root_fingerprint(k, r->cert_chain[r->n_cert_chain - 1], fp);
    free(k->chain_pem);
    if (k->key_pem) {
        mbedtls_platform_zeroize(k->key_pem, strlen(k->key_pem));
        free(k->key_pem);
    }
    k->chain_pem = chain;
    k->key_pem = k->new_key;
    k->new_key = NULL;
    chain = NULL;
    snprintf(k->st.identity, sizeof k->st.identity, "%s", info.identity);
    snprintf(k->st.serial, sizeof k->st.serial, "%s", info.serial);
    snprintf(k->st.root_sha256, sizeof k->st.root_sha256, "%s", fp);
    k->st.not_before = info.not_before;
    k->st.not_after = info.not_after;
    k->st.issued++;
    k->st.consecutive_failures = 0;
    rc = 0;
out:
    free(why);
    free(chain);
    istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);
    return rc;
}

static void schedule_renewal(wf_keeper *k)
{
    double life = (double)cert_left_ms(k);
    if (life < 0)
        life = 0;
    double ms = life * (0.4 + 0.2 * rnd01(k));
    if (ms < 100)
        ms = 100;
    schedule(k, (uint64_t)ms);
}

static void c_on_close(wf_grpc_call *c, int status, const char *message, void *ud)
{
    wf_keeper *k = ud;
    int via_cert = k->via_cert;

    if (k->stopping) {
        attempt_done(k);
        if (k->open_handles == 0)
            free(k);
        return;
    }
    if (status == WF_GRPC_OK && k->got_resp) {
        if (accept_answer(k) == 0) {
            char until[32];
            struct tm tm;
            gmtime_r(&k->st.not_after, &tm);
            strftime(until, sizeof until, "%Y-%m-%dT%H:%M:%SZ", &tm);
            WF_INFO("identity: got %s serial %s until %s from %s (%s)", k->st.identity,
                    k->st.serial, until, k->ca_addr,
                    via_cert ? "renewed with our certificate" : "with the bootstrap token");
            attempt_done(k);
            k->backoff_ms = BACKOFF_MIN_MS;
            k->force_token = 0;
            /* Schedule first: the owner may call wf_keeper_renew_now or stop. */
            schedule_renewal(k);
            if (k->on_cert)
                k->on_cert(k->chain_pem, k->key_pem, k->st.not_after, k->ud);
            return;
        }
    } else if (status == WF_GRPC_OK) {
        set_error(k, "the CA at %s ended CreateCertificate without an answer", k->ca_addr);
    } else if (k->timed_out) {
        set_error(k, "the CA at %s did not answer within %ld ms", k->ca_addr, k->call_timeout_ms);
    } else {
        set_error(k, "CreateCertificate at %s failed (%s): %s", k->ca_addr,
                  status == WF_GRPC_UNAUTHENTICATED     ? "UNAUTHENTICATED"
                  : status == WF_GRPC_PERMISSION_DENIED ? "PERMISSION_DENIED"
                  : status == WF_GRPC_INVALID_ARGUMENT  ? "INVALID_ARGUMENT"
                  : status == WF_GRPC_UNAVAILABLE       ? "UNAVAILABLE"
                  : status == WF_GRPC_DEADLINE_EXCEEDED ? "DEADLINE_EXCEEDED"
                                                        : "error",
                  message && *message ? message : "no message");
    }
    attempt_done(k);
    /* The CA no longer takes our certificate (revoked trust, new root, a
     * different identity wanted): the token may still work, try it now. */
    if (via_cert && k->token_path &&
        (status == WF_GRPC_UNAUTHENTICATED || status == WF_GRPC_PERMISSION_DENIED)) {
        k->force_token = 1;
        schedule(k, 0);
        return;
    }
    schedule_retry(k);
}

static void on_deadline(uv_timer_t *t)
{
    wf_keeper *k = t->data;
    if (k->call) {
        k->timed_out = 1;
        wf_grpc_cancel(k->call);
    }
}

static void attempt(wf_keeper *k)
{
    static const char *const alpn[] = {"h2", NULL};
    char err[256], *e = NULL, *token = NULL, *hdr = NULL;
    wf_tls_ctx *ctx = NULL;

    if (k->stopping || k->call)
        return;
    uv_timer_stop(&k->timer);
    k->st.next_attempt = 0;
    k->timed_out = 0;
    k->via_cert = !k->plaintext && !k->force_token && have_valid_cert(k);
    if (!k->via_cert && !(token = read_token(k)))
        goto retry;

    /* Which identity the answer must carry. */
    if (k->expect_id) {
        k->want_id = strdup(k->expect_id);
    } else if (k->via_cert) {
        k->want_id = strdup(k->st.identity);
    } else {
        char *ns = NULL, *sa = NULL, *td = NULL;
        if (wf_ca_token_claims(token, &ns, &sa, &td, NULL, &e) != 0) {
            set_error(k, "bootstrap token %s: %s", k->token_path, e ? e : "out of memory");
            goto retry;
        }
        if (asprintf(&k->want_id, "spiffe://%s/ns/%s/sa/%s", td, ns, sa) < 0)
            k->want_id = NULL;
        free(ns);
        free(sa);
        free(td);
    }
    if (!k->want_id) {
        set_error(k, "out of memory");
        goto retry;
    }
    if (wf_ca_make_key_csr(&k->new_key, &k->csr_pem, &e) != 0) {
        set_error(k, "%s", e ? e : "cannot make a key");
        goto retry;
    }

    wf_grpc_client_handlers h = {c_on_open, c_on_message, c_on_close, k};
    if (k->plaintext) {
        k->call = wf_grpc_client_call(k->loop, k->ca_addr, WF_CA_CREATE_CERTIFICATE, NULL, &h, err,
                                      sizeof err);
    } else {
        wf_tls_ctx_opts to = {0};
        to.server = 0;
        to.roots_pem = k->root_pem;
        to.alpn = alpn;
        to.mesh = 1;
        if (k->via_cert) {
            to.cert_chain_pem = k->chain_pem;
            to.key_pem = k->key_pem;
        }
        if (wf_tls_ctx_new(&to, &ctx, &e) != 0) {
            set_error(k, "cannot set up TLS toward the CA: %s", e ? e : "out of memory");
            goto retry;
        }
        wf_grpc_tls tls = {ctx, k->ca_name, NULL, 0};
        k->call = wf_grpc_client_call_tls(k->loop, k->ca_addr, WF_CA_CREATE_CERTIFICATE, NULL, &tls,
                                          &h, err, sizeof err);
        wf_tls_ctx_unref(ctx); /* the call holds its own reference */
    }
    if (!k->call) {
        set_error(k, "cannot call the CA at %s: %s", k->ca_addr, err);
        goto retry;
    }
    /* The token's characters were checked, so this fails only when out of
     * memory; on_close then reports the cancelled call and retries. */
    if (token) {
        if (asprintf(&hdr, "Bearer %s", token) < 0)
            hdr = NULL;
        if (!hdr || wf_grpc_add_header(k->call, "authorization", hdr) != 0)
            wf_grpc_cancel(k->call);
        free(hdr);
    }
    uv_timer_start(&k->deadline, on_deadline, (uint64_t)k->call_timeout_ms, 0);
    goto out;
retry:
    attempt_done(k);
    schedule_retry(k);
out:
    if (token) {
        mbedtls_platform_zeroize(token, strlen(token));
        free(token);
    }
    free(e);
}

/* ---- lifecycle ---- */

static void free_strings(wf_keeper *k)
{
    free(k->ca_addr);
    free(k->ca_name);
    free(k->root_pem);
    free(k->token_path);
    free(k->expect_id);
    free(k->chain_pem);
    if (k->key_pem) {
        mbedtls_platform_zeroize(k->key_pem, strlen(k->key_pem));
        free(k->key_pem);
    }
}

int wf_keeper_start(uv_loop_t *loop, const wf_keeper_opts *o, wf_keeper **out, char **err)
{
    const char *why = NULL;
    if (!o->ca_addr || !*o->ca_addr)
        why = "no CA address";
    else if (!o->plaintext && (!o->root_pem || !*o->root_pem))
        why = "no root certificate to verify the CA with";
    else if (o->ttl < 0)
        why = "negative certificate lifetime";
    else if (o->expect_id && wf_spiffe_parse(o->expect_id, NULL, NULL) != 0)
        why = "the expected identity is not a SPIFFE ID spiffe://TD/ns/NS/sa/SA";
    if (why) {
        if (err && asprintf(err, "identity: %s", why) < 0)
            *err = NULL;
        return -1;
    }
    wf_keeper *k = calloc(1, sizeof *k);
    if (!k)
        goto oom;
    k->loop = loop;
    k->ca_addr = strdup(o->ca_addr);
    k->ca_name = strdup(o->ca_name ? o->ca_name : WF_KEEPER_DEFAULT_CA_NAME);
    k->root_pem = strdup(o->root_pem ? o->root_pem : "");
    k->token_path = o->token_path ? strdup(o->token_path) : NULL;
    k->expect_id = o->expect_id ? strdup(o->expect_id) : NULL;
    if (!k->ca_addr || !k->ca_name || !k->root_pem || (o->token_path && !k->token_path) ||
        (o->expect_id && !k->expect_id)) {
        free_strings(k);
        free(k);
        goto oom;
    }
    k->ttl = o->ttl;
    k->plaintext = o->plaintext;
    k->call_timeout_ms = o->call_timeout_ms > 0 ? o->call_timeout_ms : CALL_TIMEOUT_MS;
    k->on_cert = o->on_cert;
    k->ud = o->ud;
    k->backoff_ms = BACKOFF_MIN_MS;
    k->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)k << 16) ^ 0x9E3779B97F4A7C15ULL;
    uv_timer_init(loop, &k->timer);
    uv_timer_init(loop, &k->deadline);
    k->timer.data = k->deadline.data = k;
    k->open_handles = 2;
    schedule(k, 0);
    *out = k;
    return 0;
oom:
    if (err && asprintf(err, "identity: out of memory") < 0)
        *err = NULL;
    return -1;
}

static void on_handle_closed(uv_handle_t *h)
{
    wf_keeper *k = h->data;
    if (--k->open_handles == 0 && !k->call)
        free(k);
}

void wf_keeper_stop(wf_keeper *k)
{
    if (!k || k->stopping)
        return;
    k->stopping = 1;
    free_strings(k);
    k->ca_addr = k->ca_name = k->root_pem = k->token_path = k->expect_id = NULL;
    k->chain_pem = k->key_pem = NULL;
    uv_close((uv_handle_t *)&k->timer, on_handle_closed);
    uv_close((uv_handle_t *)&k->deadline, on_handle_closed);
    if (k->call)
        wf_grpc_cancel(k->call); /* its on_close frees k if the handles are gone */
}

void wf_keeper_status_get(const wf_keeper *k, wf_keeper_status *out)
{
    *out = k->st;
}

int wf_keeper_renew_now(wf_keeper *k)
{
    if (!k || k->stopping || k->call)
        return -1;
    attempt(k);
    return 0;
}
