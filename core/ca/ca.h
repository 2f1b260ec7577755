/*
 * ca.h: weft's certificate authority as a library: the root of trust (Istio
 * plugged certs or a generated ECDSA P-256 root), signing workload CSRs into
 * SPIFFE certificates, bootstrap tokens (ES256 JWTs) and the helpers a proxy
 * needs (key + CSR, SPIFFE SAN extraction, SPIFFE ID validation).
 *
 * No network and no roles here: the CA role and the proxy wrap this.
 * Errors: functions return 0 on success, negative on failure, and fill
 * *err (when err is not NULL) with a malloc'd message the caller frees.
 */
#ifndef WF_CA_H
#define WF_CA_H

#include <stddef.h>
#include <time.h>

#include <mbedtls/x509_crt.h>

#define WF_CA_DEFAULT_TTL (24 * 3600)
#define WF_CA_DEFAULT_TRUST_DOMAIN "cluster.local"
/* The name clients verify in the CA's (istiod's) serving certificate. */
#define WF_CA_SERVER_NAME "istiod.istio-system.svc"

typedef struct wf_ca wf_ca;

/* A parsed spiffe://<td>/ns/<ns>/sa/<sa> identity. */
typedef struct wf_spiffe_id {
    char td[256];
    char ns[64];
    char sa[254];
} wf_spiffe_id;

/*
 * Loads the CA from dir: Istio plugged certs (ca-cert.pem + ca-key.pem +
 * root-cert.pem, optional cert-chain.pem) when ca-cert.pem exists, otherwise
 * generates a self-signed P-256 root and writes ca-cert.pem, root-cert.pem
 * and ca-key.pem (mode 0600) so that a restart reuses it.  dir must exist.
 * trust_domain NULL means "cluster.local".  *out is owned by the caller
 * (wf_ca_free).
 */
int wf_ca_load_or_create(const char *dir, const char *trust_domain, wf_ca **out, char **err);
/* The same without ever creating one: WF_CA_NO_CA when dir has no
 * ca-cert.pem (for `weft token`, which must not invent a second root). */
#define WF_CA_NO_CA (-2)
int wf_ca_load(const char *dir, const char *trust_domain, wf_ca **out, char **err);
void wf_ca_free(wf_ca *ca);

/* An X.509 time (UTC) as time_t. */
time_t wf_x509_time(const mbedtls_x509_time *t);

/* Borrowed from ca, valid until wf_ca_free. */
const char *wf_ca_trust_domain(const wf_ca *ca);
const char *wf_ca_root_pem(const wf_ca *ca);
const mbedtls_x509_crt *wf_ca_root(const wf_ca *ca);

/*
 * Parses csr_pem, verifies its signature and that its key is P-256, and
 * returns the URI SANs it asks for (any scheme, in order; *uris NULL and *n
 * 0 when none).  Free *uris with wf_ca_chain_free.  A CA uses it to refuse a
 * request for an identity the caller does not have.
 */
int wf_ca_csr_check(const char *csr_pem, char ***uris, size_t *n, char **err);

/*
 * Verifies csr_pem's signature and issues a P-256 leaf for spiffe_id (the
 * CA decides the SAN; whatever the CSR asks for is ignored).  spiffe_id must
 * be in this CA's trust domain.  ttl_seconds <= 0 means 24 h; notAfter
 * never goes past the CA certificate's (or its chain's) own.  The issuer
 * name is ca-cert.pem's subject byte for byte.  On success *chain is a
 * malloc'd array of *n malloc'd PEM strings, leaf first, root last, n >= 2;
 * free with wf_ca_chain_free.
 */
int wf_ca_sign_csr(wf_ca *ca, const char *csr_pem, const char *spiffe_id, long ttl_seconds,
                   char ***chain, size_t *n, char **err);
void wf_ca_chain_free(char **chain, size_t n);

/*
 * A serving certificate for the CA itself or istiod: a fresh P-256 key and
 * a leaf with one DNS SAN (e.g. "istiod.istio-system.svc"), EKU serverAuth
 * and clientAuth, lifetime as for wf_ca_sign_csr.  *chain_pem is one PEM
 * string, the leaf first, then the intermediates (the root is left out:
 * clients have it).  *chain_pem and *key_pem are malloc'd.
 */
int wf_ca_issue_server(wf_ca *ca, const char *dns_name, long ttl_seconds, char **chain_pem,
                       char **key_pem, char **err);

/* What a holder shows on /certs and in logs. */
typedef struct wf_ca_cert_info {
    char identity[512]; /* the SPIFFE ID, else the first DNS SAN, else "" */
    char serial[80];    /* lower-case hex, no colons */
    time_t not_before, not_after;
} wf_ca_cert_info;

int wf_ca_crt_info(const mbedtls_x509_crt *crt, wf_ca_cert_info *out);
/* The same for the first certificate of a PEM string. */
int wf_ca_pem_info(const char *pem, wf_ca_cert_info *out, char **err);

/*
 * A client's check of what CreateCertificate returned: chain[0] is a
 * workload (non-CA) certificate for key_pem's key that chains through
 * chain[1..n) to one of roots_pem and carries exactly one SPIFFE ID, equal
 * to want_id unless that is NULL.  Fills *info (may be NULL) for the leaf.
 */
int wf_ca_check_issued(const char *const *chain, size_t n, const char *roots_pem,
                       const char *key_pem, const char *want_id, wf_ca_cert_info *info,
                       char **err);

/* Proxy side: a fresh P-256 key and a CSR for it; both malloc'd PEM. */
int wf_ca_make_key_csr(char **key_pem, char **csr_pem, char **err);

/*
 * Strictly validates "spiffe://td/ns/NS/sa/SA" (lower-case DNS-ish trust
 * domain, NS a DNS-1123 label, SA a DNS-1123 subdomain, nothing else).
 * out may be NULL.
 */
int wf_spiffe_parse(const char *uri, wf_spiffe_id *out, char **err);

/*
 * Extracts the single spiffe:// URI from a subjectAltName extension value
 * (the DER GeneralNames SEQUENCE).  *uri is malloc'd.  Fails if there is
 * none, more than one, or the DER is malformed.
 */
int wf_ca_san_spiffe_from_der(const unsigned char *der, size_t len, char **uri, char **err);

/* The same for a parsed certificate (walks its raw extensions). */
int wf_ca_cert_spiffe_id(const mbedtls_x509_crt *crt, char **uri, char **err);

/*
 * Bootstrap tokens: an ES256 JWT signed with the CA key, audience the trust
 * domain, subject system:serviceaccount:<ns>:<sa>.  *token is malloc'd.
 */
int wf_ca_token_issue(wf_ca *ca, const char *ns, const char *sa, long ttl_seconds, char **token,
                      char **err);
/* As above with an explicit issue time (tests, clock injection). */
int wf_ca_token_issue_at(wf_ca *ca, const char *ns, const char *sa, time_t iat, long ttl_seconds,
                         char **token, char **err);
/*
 * Verifies signature, issuer, audience and expiry at time now (0 means the
 * current time).  ns_out/sa_out receive malloc'd copies (either may be NULL).
 */
int wf_ca_token_verify(const wf_ca *ca, const char *token, time_t now, char **ns_out,
                       char **sa_out, char **err);
/*
 * Reads a token's ns, sa, audience (trust domain) and expiry WITHOUT
 * verifying it: the holder's view (which identity to expect from the CA).
 * Never use it to decide what to grant.  Any out may be NULL; strings are
 * malloc'd.
 */
int wf_ca_token_claims(const char *token, char **ns, char **sa, char **td, time_t *exp,
                       char **err);

#endif
