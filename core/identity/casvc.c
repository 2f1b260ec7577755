/*
 * casvc.c: CreateCertificate on the gRPC transport (see casvc.h): decode
 * the request, find out who is calling (TLS client certificate, else
 * bootstrap token), check the CSR asks for nothing else, sign, answer, and
 * count and log the outcome for the operator.
 */
#define _GNU_SOURCE /* vasprintf, strcasecmp */
#include "identity/casvc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "istio/v1/auth/ca.pb-c.h"
#include "util/log.h"

struct wf_ca_service {
    wf_ca *ca;
    long default_ttl, max_ttl;
    wf_ca_service_stats st;
};

static const char *const refusal_names[WF_CA_REFUSED_N] = {
    [WF_CA_REFUSED_NO_CREDENTIAL] = "no_credential",
    [WF_CA_REFUSED_BAD_TOKEN] = "bad_token",
    [WF_CA_REFUSED_BAD_CERT] = "bad_certificate",
    [WF_CA_REFUSED_BAD_REQUEST] = "bad_request",
    [WF_CA_REFUSED_BAD_CSR] = "bad_csr",
    [WF_CA_REFUSED_IDENTITY] = "identity_mismatch",
    [WF_CA_REFUSED_INTERNAL] = "internal",
};

const char *wf_ca_refusal_name(wf_ca_refusal r)
{
    return (unsigned)r < WF_CA_REFUSED_N ? refusal_names[r] : "unknown";
}

wf_ca_service *wf_ca_service_new(wf_ca *ca, long default_ttl, long max_ttl)
{
    wf_ca_service *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->ca = ca;
    s->max_ttl = max_ttl > 0 ? max_ttl : WF_CA_MAX_TTL;
    s->default_ttl = default_ttl > 0 ? default_ttl : WF_CA_DEFAULT_TTL;
    if (s->default_ttl > s->max_ttl)
        s->default_ttl = s->max_ttl;
    return s;
}

void wf_ca_service_free(wf_ca_service *s)
{
    free(s);
}

int wf_ca_service_handles(const char *path)
{
    return path && strncmp(path, WF_CA_SERVICE, sizeof WF_CA_SERVICE - 1) == 0;
}

int wf_ca_service_on_call(wf_ca_service *s, wf_grpc_call *c, const char *path)
{
    if (!path || strcmp(path, WF_CA_CREATE_CERTIFICATE) != 0) {
        wf_grpc_finish(c, WF_GRPC_UNIMPLEMENTED,
                       "this CA implements only "
                       "/istio.v1.auth.IstioCertificateService/CreateCertificate");
        return WF_GRPC_UNIMPLEMENTED;
    }
    wf_grpc_set_data(c, s);
    return WF_GRPC_OK;
}

/* A call's data is the service while it waits for its request, and one
 * byte into the service once answered (so a second message is ignored). */
static void *answered(const wf_ca_service *s)
{
    return (char *)s + 1;
}

int wf_ca_service_owns(const wf_ca_service *s, const wf_grpc_call *c)
{
    const void *d = wf_grpc_data(c);
    return s && (d == (const void *)s || d == answered(s));
}

const wf_ca_service_stats *wf_ca_service_stats_get(const wf_ca_service *s)
{
    return &s->st;
}

/* Ends the call with status and a message built from fmt, counts the
 * refusal and logs it as one line. */
static void refuse(wf_ca_service *s, wf_grpc_call *c, wf_ca_refusal why, int status,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void refuse(wf_ca_service *s, wf_grpc_call *c, wf_ca_refusal why, int status,
                   const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    s->st.refused[why]++;
    WF_WARN("ca: refused CreateCertificate from %s: %s (reason %s)", wf_grpc_peer(c),
            msg ? msg : "out of memory", refusal_names[why]);
    wf_grpc_finish(c, status, msg ? msg : "refused");
    free(msg);
}

/*
 * Who is calling.  Returns 0 with *id (malloc'd) and *via, or -1 after
 * refusing the call.
 */
static int authenticate(wf_ca_service *s, wf_grpc_call *c, char **id, const char **via)
{
    const char *td = wf_ca_trust_domain(s->ca);
    const char *peer_id = wf_grpc_peer_id(c);
    char *why = NULL, *cert_problem = NULL;
    wf_spiffe_id sid;

    if (peer_id) {
        /* TLS verified the chain against our roots; the identity must still
         * be a SPIFFE ID of this trust domain. */
        if (wf_spiffe_parse(peer_id, &sid, &why) == 0 && strcmp(sid.td, td) == 0) {
            if (!(*id = strdup(peer_id)))
                goto oom;
            *via = "certificate";
            return 0;
        }
        if (asprintf(&cert_problem,
                     "client certificate identity %s is not a SPIFFE ID of trust "
                     "domain \"%s\"",
                     peer_id, td) < 0)
            cert_problem = NULL;
        free(why);
        why = NULL;
    }
    const char *auth = wf_grpc_header(c, "authorization");
    if (!auth || !*auth) {
        s->st.auth_failures++;
        if (cert_problem) {
            refuse(s, c, WF_CA_REFUSED_BAD_CERT, WF_GRPC_UNAUTHENTICATED,
                   "%s, and no bootstrap token was sent", cert_problem);
            free(cert_problem);
        } else {
            refuse(s, c, WF_CA_REFUSED_NO_CREDENTIAL, WF_GRPC_UNAUTHENTICATED,
                   "no credential: send a bootstrap token (weft token) or present a "
                   "certificate");
        }
        return -1;
    }
    free(cert_problem);
    if (strncasecmp(auth, "Bearer ", 7) != 0) {
        s->st.auth_failures++;
        refuse(s, c, WF_CA_REFUSED_BAD_TOKEN, WF_GRPC_UNAUTHENTICATED,
               "authorization header is not \"Bearer <token>\"");
        return -1;
    }
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    char *ns = NULL, *sa = NULL;
    if (wf_ca_token_verify(s->ca, tok, 0, &ns, &sa, &why) != 0) {
        s->st.auth_failures++;
        refuse(s, c, WF_CA_REFUSED_BAD_TOKEN, WF_GRPC_UNAUTHENTICATED,
               "bootstrap token refused: %s", why ? why : "out of memory");
        free(why);
        return -1;
    }
    int n = asprintf(id, "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
    free(ns);
    free(sa);
    if (n < 0)
        goto oom;
    *via = "token";
    return 0;
oom:
    refuse(s, c, WF_CA_REFUSED_INTERNAL, WF_GRPC_INTERNAL, "out of memory");
    return -1;
}

static void fmt_utc(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void wf_ca_service_on_message(wf_ca_service *s, wf_grpc_call *c, const uint8_t *msg, size_t len)
{
    Istio__V1__Auth__IstioCertificateRequest *req = NULL;
    char *id = NULL, *why = NULL, **uris = NULL, **chain = NULL;
    size_t nuris = 0, nchain = 0;
    const char *via = NULL;

    if (wf_grpc_data(c) == answered(s))
        return; /* unary: one request per call */
    wf_grpc_set_data(c, answered(s));
    s->st.csr++;
    req = istio__v1__auth__istio_certificate_request__unpack(NULL, len, msg);
    if (!req) {
        refuse(s, c, WF_CA_REFUSED_BAD_REQUEST, WF_GRPC_INVALID_ARGUMENT,
               "request is not an istio.v1.auth.IstioCertificateRequest");
        return;
    }
    if (authenticate(s, c, &id, &via) != 0)
        goto out;
    if (wf_ca_csr_check(req->csr, &uris, &nuris, &why) != 0) {
        s->st.csr_parse_errors++;
        refuse(s, c, WF_CA_REFUSED_BAD_CSR, WF_GRPC_INVALID_ARGUMENT, "CSR refused: %s",
               why ? why : "out of memory");
        goto out;
    }
    /* The certificate carries the caller's identity only; a CSR that asks
     * for another says the caller wants what it has no right to. */
    for (size_t i = 0; i < nuris; i++) {
        if (strcmp(uris[i], id) != 0) {
            refuse(s, c, WF_CA_REFUSED_IDENTITY, WF_GRPC_PERMISSION_DENIED,
                   "%s for %s cannot obtain %s", via, id, uris[i]);
            goto out;
        }
    }
    if (req->validity_duration < 0) {
        refuse(s, c, WF_CA_REFUSED_BAD_REQUEST, WF_GRPC_INVALID_ARGUMENT,
               "validity_duration %lld is negative; send 0 for the CA's default",
               (long long)req->validity_duration);
        goto out;
    }
    long ttl = req->validity_duration == 0           ? s->default_ttl
               : req->validity_duration > s->max_ttl ? s->max_ttl
                                                     : (long)req->validity_duration;
    if (wf_ca_sign_csr(s->ca, req->csr, id, ttl, &chain, &nchain, &why) != 0) {
        refuse(s, c, WF_CA_REFUSED_INTERNAL, WF_GRPC_INTERNAL, "cannot sign: %s",
               why ? why : "out of memory");
        goto out;
    }

    Istio__V1__Auth__IstioCertificateResponse resp =
        ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
    resp.n_cert_chain = nchain;
    resp.cert_chain = chain;
    size_t plen = istio__v1__auth__istio_certificate_response__get_packed_size(&resp);
    uint8_t *out = malloc(plen ? plen : 1);
    if (!out) {
        refuse(s, c, WF_CA_REFUSED_INTERNAL, WF_GRPC_INTERNAL, "out of memory");
        goto out;
    }
    istio__v1__auth__istio_certificate_response__pack(&resp, out);
    if (wf_grpc_send(c, out, plen) != 0) {
        free(out);
        refuse(s, c, WF_CA_REFUSED_INTERNAL, WF_GRPC_INTERNAL,
               "cannot send the response (call closing)");
        goto out;
    }
    free(out);
    wf_grpc_finish(c, WF_GRPC_OK, NULL);
    s->st.issued++;
    wf_ca_cert_info info;
    char until[32] = "?";
    if (wf_ca_pem_info(chain[0], &info, NULL) == 0)
        fmt_utc(info.not_after, until, sizeof until);
    else
        snprintf(info.serial, sizeof info.serial, "?");
    WF_INFO("ca: issued %s serial %s not_after %s (asked %llds, got %lds) to %s via %s", id,
            info.serial, until, (long long)req->validity_duration, ttl, wf_grpc_peer(c), via);
out:
    wf_ca_chain_free(chain, nchain);
    wf_ca_chain_free(uris, nuris);
    free(why);
    free(id);
    istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
}

void wf_ca_service_on_half_close(wf_ca_service *s, wf_grpc_call *c)
{
    /* Ignored by the transport when the call was already answered. */
    wf_grpc_finish(c, WF_GRPC_INVALID_ARGUMENT,
                   "CreateCertificate needs one IstioCertificateRequest message");
}

static int h_on_call(wf_grpc_call *c, const char *path, void *ud)
{
    if (!wf_ca_service_handles(path)) {
        wf_grpc_finish(c, WF_GRPC_UNIMPLEMENTED, "this server serves only the Istio CA service");
        return WF_GRPC_UNIMPLEMENTED;
    }
    return wf_ca_service_on_call(ud, c, path);
}

static void h_on_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    wf_ca_service_on_message(ud, c, msg, len);
}

static void h_on_close(wf_grpc_call *c, void *ud)
{
}

static void h_on_half_close(wf_grpc_call *c, void *ud)
{
    wf_ca_service_on_half_close(ud, c);
}

void wf_ca_service_handlers(wf_ca_service *s, wf_grpc_server_handlers *h)
{
    memset(h, 0, sizeof *h);
    h->on_call = h_on_call;
    h->on_message = h_on_message;
    h->on_close = h_on_close;
    h->on_half_close = h_on_half_close;
    h->ud = s;
}

/* ---- /metrics ---- */

static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if (!*buf || *len + (size_t)n + 1 > *cap) {
        size_t nc = *cap ? *cap : 1024;
        while (nc < *len + (size_t)n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
    return 0;
}

int wf_ca_service_metrics(const wf_ca_service *s, char **buf, size_t *len, size_t *cap)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"citadel_server_csr_count", "CreateCertificate requests received by the CA.",
         offsetof(wf_ca_service_stats, csr)},
        {"citadel_server_success_cert_issuance_count", "Certificates issued by the CA.",
         offsetof(wf_ca_service_stats, issued)},
        {"citadel_server_authentication_failure_count",
         "CreateCertificate requests without a valid token or client certificate.",
         offsetof(wf_ca_service_stats, auth_failures)},
        {"citadel_server_csr_parsing_err_count", "CSRs that did not parse or verify.",
         offsetof(wf_ca_service_stats, csr_parse_errors)},
    };
    size_t start = *len;
    for (size_t i = 0; i < sizeof counters / sizeof *counters; i++) {
        uint64_t v = *(const uint64_t *)((const char *)&s->st + counters[i].off);
        if (appendf(buf, len, cap, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counters[i].name,
                    counters[i].help, counters[i].name, counters[i].name,
                    (unsigned long long)v) != 0)
            goto oom;
    }
    if (appendf(buf, len, cap,
                "# HELP weft_ca_refused_total CreateCertificate requests refused, by reason.\n"
                "# TYPE weft_ca_refused_total counter\n") != 0)
        goto oom;
    for (int r = 0; r < WF_CA_REFUSED_N; r++)
        if (appendf(buf, len, cap, "weft_ca_refused_total{reason=\"%s\"} %llu\n", refusal_names[r],
                    (unsigned long long)s->st.refused[r]) != 0)
            goto oom;
    return 0;
oom:
    *len = start;
    if (*buf)
        (*buf)[start] = 0;
    return -1;
}

wf_tls_ctx *wf_ca_serving_ctx(wf_ca *ca, const char *dns_name, long ttl, time_t *not_after,
                              char **err)
{
    static const char *const alpn[] = {"h2", NULL};
    char *chain = NULL, *key = NULL, *e = NULL;
    wf_tls_ctx *ctx = NULL;
    wf_ca_cert_info info;
    wf_tls_ctx_opts o = {.server = 1,
                         .roots_pem = wf_ca_root_pem(ca),
                         .peer_cert = WF_TLS_PEER_OPTIONAL,
                         .alpn = alpn,
                         .mesh = 1};

    if (wf_ca_issue_server(ca, dns_name, ttl, &chain, &key, &e) != 0) {
        wf_fail(err, "cannot issue the serving certificate for %s: %s", dns_name,
                e ? e : "unknown error");
    } else {
        o.cert_chain_pem = chain;
        o.key_pem = key;
        if (wf_tls_ctx_new(&o, &ctx, &e) != 0) {
            wf_fail(err, "cannot set up TLS with the serving certificate: %s",
                    e ? e : "unknown error");
            ctx = NULL;
        } else if (not_after) {
            *not_after = wf_ca_pem_info(chain, &info, NULL) == 0 ? info.not_after : 0;
        }
    }
    free(e);
    free(chain);
    if (key) {
        memset(key, 0, strlen(key));
        free(key);
    }
    return ctx;
}
