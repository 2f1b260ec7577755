/*
 * keeper.h: the workload side of identity: keeps a SPIFFE certificate from
 * the CA (CreateCertificate) current on a libuv loop.  Used by the proxy for
 * its mTLS identity and by istiod's replicas.
 *
 * It makes a P-256 key and a CSR in-process (the key never leaves the
 * process), calls the CA over TLS (server verified against root_pem and
 * ca_name), authenticating with the bootstrap token (re-read from
 * token_path at each use, so a rotated token is picked up) while it has no
 * valid certificate, and with its current certificate as TLS client
 * certificate when renewing; a renewal refused with UNAUTHENTICATED or
 * PERMISSION_DENIED is retried at once with the token.  Every answer is
 * checked (the expected SPIFFE ID, chains to root_pem, matches our key)
 * before the owner's callback sees it.
 *
 * Timing: renewal at 50 % of the lifetime, +-10 % jitter.  A failed
 * attempt is retried after 0.5 s, doubling to 30 s, +-20 % jitter, but
 * never later than half the time left on the current certificate, so that
 * while the CA answers the certificate is renewed before it expires.
 *
 * Threads: the loop's thread only.
 */
#ifndef WF_IDENTITY_KEEPER_H
#define WF_IDENTITY_KEEPER_H

#include <stddef.h>
#include <time.h>
#include <uv.h>

#define WF_KEEPER_DEFAULT_CA_NAME "istiod.istio-system.svc"

typedef struct wf_keeper wf_keeper;

/*
 * A new certificate: chain_pem is one PEM string, the leaf first, then the
 * intermediates (the root is not included: it is root_pem); key_pem is its
 * private key.  Both are borrowed for the call: copy what you keep.
 */
typedef void (*wf_keeper_cert_cb)(const char *chain_pem, const char *key_pem, time_t not_after,
                                  void *ud);

typedef struct wf_keeper_opts {
    const char *ca_addr;    /* "host:port" of the CA (istiod's 15012 or --role=ca) */
    const char *ca_name;    /* DNS name the CA's certificate must carry; NULL: the default */
    const char *root_pem;   /* trusted root(s), PEM */
    const char *token_path; /* bootstrap token file, or NULL (renew by certificate only) */
    long ttl;               /* lifetime to ask for, seconds; 0: the CA's default */
    /* The identity the certificate must carry ("spiffe://td/ns/NS/sa/SA"),
     * or NULL: the one the token names, then the current certificate's. */
    const char *expect_id;
    int plaintext;        /* tests: h2c without TLS (then the token is always sent) */
    long call_timeout_ms; /* one attempt's deadline; 0: 10 s */
    wf_keeper_cert_cb on_cert;
    void *ud;
} wf_keeper_opts;

/* For /certs and logs. */
typedef struct wf_keeper_status {
    char identity[512]; /* "" before the first certificate */
    char serial[80];    /* hex */
    time_t not_before, not_after;
    char root_sha256[65]; /* hex SHA-256 of the root the chain verified against */
    char last_error[512]; /* the last failure, kept after a later success; "" if none */
    time_t last_error_at; /* 0 if none */
    time_t next_attempt;  /* when the next renewal or retry starts (0: in flight) */
    unsigned long issued; /* certificates obtained */
    unsigned consecutive_failures;
} wf_keeper_status;

/*
 * Starts keeping: the first attempt begins on the next loop turn.  Strings
 * in o are copied.  Fails (with *err, malloc'd) only on bad options.
 * *out is freed by wf_keeper_stop.
 */
int wf_keeper_start(uv_loop_t *loop, const wf_keeper_opts *o, wf_keeper **out, char **err);
/* Cancels any call in flight and frees k once its handles have closed
 * (keep running the loop).  No callback follows.  NULL is fine. */
void wf_keeper_stop(wf_keeper *k);
void wf_keeper_status_get(const wf_keeper *k, wf_keeper_status *out);
/* Starts an attempt now unless one is in flight (e.g. after the token was
 * replaced).  Returns 0, or -1 when one is in flight. */
int wf_keeper_renew_now(wf_keeper *k);

#endif
