/*
 * casvc.h: Istio's certificate service
 * (/istio.v1.auth.IstioCertificateService/CreateCertificate) on weft's gRPC
 * transport, in front of a core/ca CA.  Any wf_grpc_server can mount it:
 * the CA role runs a server with only this service (wf_ca_service_handlers),
 * istiod dispatches to it from its own handlers next to ADS:
 *
 *     on_call:       if (wf_ca_service_handles(path))
 *                        return wf_ca_service_on_call(svc, c, path);
 *     on_message:    if (wf_ca_service_owns(svc, c))
 *                        return wf_ca_service_on_message(svc, c, msg, len);
 *     on_half_close: if (wf_ca_service_owns(svc, c))
 *                        return wf_ca_service_on_half_close(svc, c);
 *     on_close:      nothing to do for the service's calls (no per-call state).
 *
 * Who gets what: the caller is identified by its TLS client certificate
 * (wf_grpc_peer_id: a SPIFFE ID of this trust domain, already verified
 * against the roots by TLS), which renews that identity; otherwise by
 * `authorization: Bearer <token>`, a bootstrap token from `weft token`
 * (wf_ca_token_verify: signature, audience = trust domain, expiry).  The
 * certificate carries exactly that identity; a CSR asking for another URI
 * SAN is refused.  Status codes: UNAUTHENTICATED (no or bad credential),
 * INVALID_ARGUMENT (not a request, bad CSR, negative lifetime),
 * PERMISSION_DENIED (CSR asks for another identity), INTERNAL (signing
 * failed).  Every issuance and refusal is one log line.
 *
 * Threads: the loop's thread only, like the gRPC transport.
 */
#ifndef WF_IDENTITY_CASVC_H
#define WF_IDENTITY_CASVC_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ca/ca.h"
#include "grpc/grpc.h"

#define WF_CA_SERVICE "/istio.v1.auth.IstioCertificateService/"
#define WF_CA_CREATE_CERTIFICATE "/istio.v1.auth.IstioCertificateService/CreateCertificate"
#define WF_CA_MAX_TTL (90L * 86400)

typedef struct wf_ca_service wf_ca_service;

/* Why requests were refused (the reason label of weft_ca_refused_total). */
typedef enum wf_ca_refusal {
    WF_CA_REFUSED_NO_CREDENTIAL = 0,
    WF_CA_REFUSED_BAD_TOKEN,
    WF_CA_REFUSED_BAD_CERT,
    WF_CA_REFUSED_BAD_REQUEST,
    WF_CA_REFUSED_BAD_CSR,
    WF_CA_REFUSED_IDENTITY,
    WF_CA_REFUSED_INTERNAL,
    WF_CA_REFUSED_N
} wf_ca_refusal;

typedef struct wf_ca_service_stats {
    uint64_t csr;              /* citadel_server_csr_count: requests received */
    uint64_t issued;           /* citadel_server_success_cert_issuance_count */
    uint64_t auth_failures;    /* citadel_server_authentication_failure_count */
    uint64_t csr_parse_errors; /* citadel_server_csr_parsing_err_count */
    uint64_t refused[WF_CA_REFUSED_N];
} wf_ca_service_stats;

/*
 * A service signing with ca (borrowed: it must outlive the service).
 * default_ttl (seconds; <= 0: 24 h) is used when a request asks for 0;
 * longer requests are cut to max_ttl (<= 0: 90 days).  NULL when out of
 * memory.  Free with wf_ca_service_free once no call is open.
 */
wf_ca_service *wf_ca_service_new(wf_ca *ca, long default_ttl, long max_ttl);
void wf_ca_service_free(wf_ca_service *s); /* NULL is fine */

/* 1 when path belongs to the certificate service (any of its methods). */
int wf_ca_service_handles(const char *path);
/* Accepts a call to path: WF_GRPC_OK for CreateCertificate (the service
 * takes the call's data pointer for itself, see wf_ca_service_owns),
 * WF_GRPC_UNIMPLEMENTED with a message for its other methods. */
int wf_ca_service_on_call(wf_ca_service *s, wf_grpc_call *c, const char *path);
/* 1 when c is a call this service accepted. */
int wf_ca_service_owns(const wf_ca_service *s, const wf_grpc_call *c);
/* The request: answers and finishes the call inside (unary). */
void wf_ca_service_on_message(wf_ca_service *s, wf_grpc_call *c, const uint8_t *msg, size_t len);
/* The client half-closed: finishes a call that sent no request with
 * INVALID_ARGUMENT (a call already answered is left alone). */
void wf_ca_service_on_half_close(wf_ca_service *s, wf_grpc_call *c);

/*
 * The CA's (or istiod's) own serving side: a fresh certificate for
 * dns_name valid ttl seconds, as a TLS server context for the secure port
 * (ALPN h2, mesh profile, client certificates optional: a workload renewing
 * shows its certificate, one bootstrapping with a token has none).
 * *not_after (may be NULL) is the certificate's expiry.  NULL with *err.
 */
wf_tls_ctx *wf_ca_serving_ctx(wf_ca *ca, const char *dns_name, long ttl, time_t *not_after,
                              char **err);

/* Handlers for a server that serves only this service (ud = s). */
void wf_ca_service_handlers(wf_ca_service *s, wf_grpc_server_handlers *h);

const wf_ca_service_stats *wf_ca_service_stats_get(const wf_ca_service *s);
/* The reason label of r ("no_credential", "bad_token", ...). */
const char *wf_ca_refusal_name(wf_ca_refusal r);

/*
 * Appends the counters in Prometheus text format (HELP, TYPE, samples) to
 * the malloc'd buffer *buf of *len bytes used out of *cap (all three may
 * start as NULL/0; the buffer is grown with realloc and stays
 * NUL-terminated).  Returns 0, or -1 when out of memory (buffer unchanged
 * but still valid).
 */
int wf_ca_service_metrics(const wf_ca_service *s, char **buf, size_t *len, size_t *cap);

#endif
