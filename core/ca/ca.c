/*
 * ca.c: the CA's crypto core (see ca.h): root of trust, CSR signing into
 * SPIFFE certificates, SAN parsing, SPIFFE ID validation and ES256 bootstrap
 * tokens.  mbedTLS 2.28 for the crypto, jansson for the JWT JSON.
 */
#define _GNU_SOURCE /* vasprintf */
#include "ca/ca.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <mbedtls/asn1.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_csr.h>

#define PEM_MAX 8192
#define TOKEN_MAX 8192
#define ROOT_YEARS 10

struct wf_ca {
    char *td;
    char *dir;
    mbedtls_x509_crt ca_crt; /* the signing certificate (root or intermediate) */
    mbedtls_x509_crt root;   /* root-cert.pem */
    mbedtls_pk_context key;  /* ca-key.pem */
    char *root_pem;
    char **chain; /* what follows a leaf: ca-cert ... root, root last */
    size_t chain_n;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

static int fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char **err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(err, fmt, ap) < 0)
            *err = NULL;
        va_end(ap);
    }
    return -1;
}

static const char *tls_err(int code, char *buf, size_t len)
{
    mbedtls_strerror(code, buf, len);
    return buf;
}

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer. */
static int slurp(const char *path, char **out, size_t *len, char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap > (1 << 20)) {
                fclose(f);
                free(buf);
                return fail(err, "%s is larger than 1 MiB; not a PEM file?", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0)
            break;
        n += r;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return fail(err, "cannot read %s", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

/* Writes via a temporary file and rename so a crash never leaves half a PEM. */
static int write_file(const char *dir, const char *name, const char *data, mode_t mode, char **err)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return fail(err, "cannot create %s: %s", tmp, strerror(errno));
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return fail(err, "cannot write %s: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    /* The key must not be readable by others even if umask is lax. */
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return fail(err, "cannot finish %s: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return fail(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    }
    return 0;
}

static int file_exists(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static char *der_to_pem(const unsigned char *der, size_t len)
{
    size_t cap = len * 2 + 128, olen = 0;
    unsigned char *buf = malloc(cap);
    if (!buf)
        return NULL;
    if (mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n",
                                 der, len, buf, cap, &olen) != 0) {
        free(buf);
        return NULL;
    }
    return (char *)buf;
}

static void fmt_time(time_t t, char *buf, size_t len, const char *fmt)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, fmt, &tm);
}

static int random_serial(mbedtls_ctr_drbg_context *drbg, mbedtls_mpi *serial)
{
    unsigned char b[16];
    int ret = mbedtls_ctr_drbg_random(drbg, b, sizeof b);
    if (ret != 0)
        return ret;
    /* Positive and of full length, as RFC 5280 wants. */
    b[0] = (unsigned char)((b[0] & 0x7f) | 0x40);
    return mbedtls_mpi_read_binary(serial, b, sizeof b);
}

/* ---- names ---------------------------------------------------------------------------------- */

static int is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* DNS-1123 label: Kubernetes namespace rules. */
static int valid_label(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-')
            return 0;
    return 1;
}

/* DNS-1123 subdomain: Kubernetes service-account rules. */
static int valid_subdomain(const char *s, size_t n)
{
    if (n == 0 || n > 253 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-' && s[i] != '.')
            return 0;
    return 1;
}

/* SPIFFE trust domain: lower-case letters, digits, '.', '-', '_'. */
static int valid_td(const char *s, size_t n)
{
    if (n == 0 || n > 255)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-' && s[i] != '.' && s[i] != '_')
            return 0;
    return 1;
}

int wf_spiffe_parse(const char *uri, wf_spiffe_id *out, char **err)
{
    static const char prefix[] = "spiffe://";
    if (!uri)
        return fail(err, "SPIFFE ID is missing");
    size_t total = strlen(uri);
    if (total > 2048)
        return fail(err, "SPIFFE ID is %zu bytes long; the limit is 2048", total);
    if (strncmp(uri, prefix, sizeof prefix - 1) != 0)
        return fail(err, "SPIFFE ID \"%s\" does not start with \"spiffe://\"", uri);
    const char *td = uri + sizeof prefix - 1;
    const char *slash = strchr(td, '/');
    if (!slash)
        return fail(err, "SPIFFE ID \"%s\" has no path; expected spiffe://TD/ns/NS/sa/SA", uri);
    size_t tdn = (size_t)(slash - td);
    if (!valid_td(td, tdn))
        return fail(err,
                    "SPIFFE ID \"%s\": trust domain \"%.*s\" is not valid (lower-case letters, "
                    "digits, '.', '-', '_' only, no port or user info)",
                    uri, (int)tdn, td);
    const char *p = slash + 1;
    if (strncmp(p, "ns/", 3) != 0)
        return fail(err, "SPIFFE ID \"%s\": path must be /ns/NS/sa/SA", uri);
    const char *ns = p + 3;
    const char *nse = strchr(ns, '/');
    if (!nse || strncmp(nse, "/sa/", 4) != 0)
        return fail(err, "SPIFFE ID \"%s\": path must be /ns/NS/sa/SA", uri);
    size_t nsn = (size_t)(nse - ns);
    if (!valid_label(ns, nsn))
        return fail(err, "SPIFFE ID \"%s\": namespace \"%.*s\" is not a DNS-1123 label", uri,
                    (int)nsn, ns);
    const char *sa = nse + 4;
    size_t san = strlen(sa);
    if (!valid_subdomain(sa, san))
        return fail(err,
                    "SPIFFE ID \"%s\": service account \"%s\" is not a DNS-1123 subdomain (or "
                    "the path has extra segments)",
                    uri, sa);
    if (out) {
        memcpy(out->td, td, tdn);
        out->td[tdn] = 0;
        memcpy(out->ns, ns, nsn);
        out->ns[nsn] = 0;
        memcpy(out->sa, sa, san);
        out->sa[san] = 0;
    }
    return 0;
}

/* ---- SAN parsing ---------------------------------------------------------------------------- */

int wf_ca_san_spiffe_from_der(const unsigned char *der, size_t len, char **uri, char **err)
{
    unsigned char *p = (unsigned char *)der;
    const unsigned char *end = der + len;
    size_t l;
    char *found = NULL;
    if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0 ||
        p + l != end)
        return fail(err, "subjectAltName is not a well-formed GeneralNames SEQUENCE");
    while (p < end) {
        unsigned char tag = *p++;
        if ((tag & 0x1f) == 0x1f || mbedtls_asn1_get_len(&p, end, &l) != 0) {
            free(found);
            return fail(err, "subjectAltName has a malformed GeneralName");
        }
        /* uniformResourceIdentifier is [6] IMPLICIT IA5String, primitive. */
        if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6) && l >= 9 &&
            memcmp(p, "spiffe://", 9) == 0) {
            if (found) {
                free(found);
                return fail(err, "certificate has more than one spiffe:// URI SAN");
            }
            if (memchr(p, 0, l)) /* an embedded NUL would hide the rest */
                return fail(err, "certificate's spiffe:// URI SAN contains a NUL byte");
            found = strndup((const char *)p, l);
            if (!found)
                return fail(err, "out of memory");
        }
        p += l;
    }
    if (!found)
        return fail(err, "certificate has no spiffe:// URI SAN");
    if (wf_spiffe_parse(found, NULL, err) != 0) {
        free(found);
        return -1;
    }
    *uri = found;
    return 0;
}

int wf_ca_cert_spiffe_id(const mbedtls_x509_crt *crt, char **uri, char **err)
{
    static const unsigned char san_oid[] = {0x55, 0x1d, 0x11}; /* 2.5.29.17 */
    unsigned char *p = crt->v3_ext.p;
    if (!p || crt->v3_ext.len == 0)
        return fail(err, "certificate has no extensions, so no SPIFFE ID");
    const unsigned char *end = p + crt->v3_ext.len;
    size_t l;
    /* mbedTLS leaves p after the [3] wrapper; tolerate both positions. */
    if (*p == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3)) {
        if (mbedtls_asn1_get_tag(&p, end, &l, *p) != 0)
            return fail(err, "certificate extensions are malformed");
        end = p + l;
    }
    if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return fail(err, "certificate extensions are malformed");
    end = p + l;
    while (p < end) {
        if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) !=
            0)
            return fail(err, "certificate extension is malformed");
        unsigned char *ext_end = p + l;
        mbedtls_asn1_buf oid;
        if (mbedtls_asn1_get_tag(&p, ext_end, &oid.len, MBEDTLS_ASN1_OID) != 0)
            return fail(err, "certificate extension has no OID");
        oid.p = p;
        p += oid.len;
        int critical = 0;
        if (p < ext_end && *p == MBEDTLS_ASN1_BOOLEAN &&
            mbedtls_asn1_get_bool(&p, ext_end, &critical) != 0)
            return fail(err, "certificate extension has a malformed critical flag");
        if (mbedtls_asn1_get_tag(&p, ext_end, &l, MBEDTLS_ASN1_OCTET_STRING) != 0 ||
            p + l != ext_end)
            return fail(err, "certificate extension value is malformed");
        if (oid.len == sizeof san_oid && memcmp(oid.p, san_oid, sizeof san_oid) == 0)
            return wf_ca_san_spiffe_from_der(p, l, uri, err);
        p = ext_end;
    }
    return fail(err, "certificate has no subjectAltName extension, so no SPIFFE ID");
}

/* ---- loading -------------------------------------------------------------------------------- */

static int gen_p256(mbedtls_pk_context *pk, mbedtls_ctr_drbg_context *drbg)
{
    int ret = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0)
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk),
                                  mbedtls_ctr_drbg_random, drbg);
    return ret;
}

static int generate_root(wf_ca *ca, char **err)
{
    char eb[128], name[512], nb[16], na[16];
    unsigned char cert[PEM_MAX], key[PEM_MAX];
    mbedtls_pk_context pk;
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    int ret;
    mbedtls_pk_init(&pk);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    time_t now = time(NULL);
    snprintf(name, sizeof name, "CN=weft root CA,O=%s", ca->td);
    fmt_time(now - 3600, nb, sizeof nb, "%Y%m%d%H%M%S");
    fmt_time(now + (time_t)ROOT_YEARS * 365 * 86400, na, sizeof na, "%Y%m%d%H%M%S");
    if ((ret = gen_p256(&pk, &ca->drbg)) != 0 || (ret = random_serial(&ca->drbg, &serial)) != 0)
        goto out;
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &pk);
    mbedtls_x509write_crt_set_issuer_key(&w, &pk);
    if ((ret = mbedtls_x509write_crt_set_serial(&w, &serial)) != 0 ||
        (ret = mbedtls_x509write_crt_set_validity(&w, nb, na)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_name(&w, name)) != 0 ||
        (ret = mbedtls_x509write_crt_set_issuer_name(&w, name)) != 0 ||
        (ret = mbedtls_x509write_crt_set_basic_constraints(&w, 1, -1)) != 0 ||
        (ret = mbedtls_x509write_crt_set_key_usage(
             &w, MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_key_identifier(&w)) != 0 ||
        (ret = mbedtls_x509write_crt_set_authority_key_identifier(&w)) != 0 ||
        (ret = mbedtls_x509write_crt_pem(&w, cert, sizeof cert, mbedtls_ctr_drbg_random,
                                         &ca->drbg)) != 0 ||
        (ret = mbedtls_pk_write_key_pem(&pk, key, sizeof key)) != 0)
        goto out;
    /* Key first and ca-cert.pem last: ca-cert.pem's presence means "complete". */
    if (write_file(ca->dir, "ca-key.pem", (char *)key, 0600, err) != 0 ||
        write_file(ca->dir, "root-cert.pem", (char *)cert, 0644, err) != 0 ||
        write_file(ca->dir, "ca-cert.pem", (char *)cert, 0644, err) != 0)
        ret = -1;
out:
    mbedtls_platform_zeroize(key, sizeof key);
    mbedtls_pk_free(&pk);
    mbedtls_x509write_crt_free(&w);
    mbedtls_mpi_free(&serial);
    if (ret > 0 || ret < -1)
        return fail(err, "cannot generate a root CA in %s: %s", ca->dir,
                    tls_err(ret, eb, sizeof eb));
    return ret;
}

static int parse_certs(mbedtls_x509_crt *crt, const char *dir, const char *name, char **err)
{
    char path[4096], eb[128], *buf = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (slurp(path, &buf, &len, err) != 0)
        return -1;
    int ret = mbedtls_x509_crt_parse(crt, (unsigned char *)buf, len + 1);
    free(buf);
    if (ret != 0)
        return fail(err, "%s: not a valid PEM certificate file: %s", path,
                    ret < 0 ? tls_err(ret, eb, sizeof eb) : "some certificates did not parse");
    return 0;
}

static int add_chain(wf_ca *ca, const mbedtls_x509_crt *c)
{
    char **nc = realloc(ca->chain, (ca->chain_n + 1) * sizeof *nc);
    if (!nc)
        return -1;
    ca->chain = nc;
    if (!(nc[ca->chain_n] = der_to_pem(c->raw.p, c->raw.len)))
        return -1;
    ca->chain_n++;
    return 0;
}

static int load(wf_ca *ca, char **err)
{
    char path[4096], eb[128], *buf = NULL;
    size_t len;
    int ret;
    if (parse_certs(&ca->ca_crt, ca->dir, "ca-cert.pem", err) != 0 ||
        parse_certs(&ca->root, ca->dir, "root-cert.pem", err) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/ca-key.pem", ca->dir);
    if (slurp(path, &buf, &len, err) != 0)
        return -1;
    ret = mbedtls_pk_parse_key(&ca->key, (unsigned char *)buf, len + 1, NULL, 0);
    mbedtls_platform_zeroize(buf, len);
    free(buf);
    if (ret != 0)
        return fail(err, "%s: cannot parse the CA key: %s", path, tls_err(ret, eb, sizeof eb));
    if (mbedtls_pk_check_pair(&ca->ca_crt.pk, &ca->key) != 0)
        return fail(err, "%s/ca-key.pem does not match %s/ca-cert.pem", ca->dir, ca->dir);
    if (!ca->ca_crt.ca_istrue)
        return fail(err, "%s/ca-cert.pem is not a CA certificate (basicConstraints CA:FALSE)",
                    ca->dir);
    /* The signing cert must chain to the root, or every leaf would be useless. */
    uint32_t flags = 0;
    mbedtls_x509_crt chain;
    mbedtls_x509_crt_init(&chain);
    int have_chain = file_exists(ca->dir, "cert-chain.pem");
    if (have_chain && parse_certs(&chain, ca->dir, "cert-chain.pem", err) != 0) {
        mbedtls_x509_crt_free(&chain);
        return -1;
    }
    const mbedtls_x509_crt *first = have_chain ? &chain : &ca->ca_crt;
    ret = mbedtls_x509_crt_verify((mbedtls_x509_crt *)first, &ca->root, NULL, NULL, &flags, NULL,
                                  NULL);
    if (ret != 0) {
        char vb[512];
        mbedtls_x509_crt_verify_info(vb, sizeof vb, "", flags);
        mbedtls_x509_crt_free(&chain);
        return fail(err, "%s: %s does not chain to root-cert.pem: %s", ca->dir,
                    have_chain ? "cert-chain.pem" : "ca-cert.pem", vb);
    }
    const mbedtls_x509_crt *last = NULL;
    for (const mbedtls_x509_crt *c = first; c && c->raw.p; c = c->next) {
        if (add_chain(ca, c) != 0) {
            mbedtls_x509_crt_free(&chain);
            return fail(err, "out of memory");
        }
        last = c;
    }
    int root_last = last && last->raw.len == ca->root.raw.len &&
                    memcmp(last->raw.p, ca->root.raw.p, last->raw.len) == 0;
    mbedtls_x509_crt_free(&chain);
    if (!root_last && add_chain(ca, &ca->root) != 0)
        return fail(err, "out of memory");
    if (!(ca->root_pem = der_to_pem(ca->root.raw.p, ca->root.raw.len)))
        return fail(err, "out of memory");
    return 0;
}

int wf_ca_load_or_create(const char *dir, const char *trust_domain, wf_ca **out, char **err)
{
    static const char pers[] = "weft-ca";
    char eb[128];
    if (!trust_domain)
        trust_domain = WF_CA_DEFAULT_TRUST_DOMAIN;
    if (!valid_td(trust_domain, strlen(trust_domain)))
        return fail(err, "trust domain \"%s\" is not valid (lower-case letters, digits, '.', "
                         "'-', '_')",
                    trust_domain);
    wf_ca *ca = calloc(1, sizeof *ca);
    if (!ca)
        return fail(err, "out of memory");
    mbedtls_x509_crt_init(&ca->ca_crt);
    mbedtls_x509_crt_init(&ca->root);
    mbedtls_pk_init(&ca->key);
    mbedtls_entropy_init(&ca->entropy);
    mbedtls_ctr_drbg_init(&ca->drbg);
    ca->td = strdup(trust_domain);
    ca->dir = strdup(dir);
    if (!ca->td || !ca->dir) {
        wf_ca_free(ca);
        return fail(err, "out of memory");
    }
    int ret = mbedtls_ctr_drbg_seed(&ca->drbg, mbedtls_entropy_func, &ca->entropy,
                                    (const unsigned char *)pers, sizeof pers - 1);
    if (ret != 0) {
        wf_ca_free(ca);
        return fail(err, "cannot seed the random generator: %s", tls_err(ret, eb, sizeof eb));
    }
    if (!file_exists(dir, "ca-cert.pem")) {
        if (file_exists(dir, "ca-key.pem")) {
            wf_ca_free(ca);
            return fail(err,
                        "%s has ca-key.pem but no ca-cert.pem; add the certificate, or remove "
                        "the key to have weft generate a new root",
                        dir);
        }
        if (generate_root(ca, err) != 0) {
            wf_ca_free(ca);
            return -1;
        }
    }
    if (load(ca, err) != 0) {
        wf_ca_free(ca);
        return -1;
    }
    *out = ca;
    return 0;
}

void wf_ca_free(wf_ca *ca)
{
    if (!ca)
        return;
    mbedtls_x509_crt_free(&ca->ca_crt);
    mbedtls_x509_crt_free(&ca->root);
    mbedtls_pk_free(&ca->key);
    mbedtls_ctr_drbg_free(&ca->drbg);
    mbedtls_entropy_free(&ca->entropy);
    wf_ca_chain_free(ca->chain, ca->chain_n);
    free(ca->root_pem);
    free(ca->td);
    free(ca->dir);
    free(ca);
}

const char *wf_ca_trust_domain(const wf_ca *ca)
{
    return ca->td;
}

const char *wf_ca_root_pem(const wf_ca *ca)
{
    return ca->root_pem;
}

const mbedtls_x509_crt *wf_ca_root(const wf_ca *ca)
{
    return &ca->root;
}

void wf_ca_chain_free(char **chain, size_t n)
{
    if (!chain)
        return;
    for (size_t i = 0; i < n; i++)
        free(chain[i]);
    free(chain);
}

/* ---- signing -------------------------------------------------------------------------------- */

static int csr_check(mbedtls_x509_csr *csr, char **err)
{
    char eb[128];
    unsigned char hash[MBEDTLS_MD_MAX_SIZE];
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(csr->sig_md);
    if (!md)
        return fail(err, "CSR uses an unsupported signature hash");
    int ret = mbedtls_md(md, csr->cri.p, csr->cri.len, hash);
    if (ret == 0)
        ret = mbedtls_pk_verify_ext(csr->sig_pk, csr->sig_opts, &csr->pk, csr->sig_md, hash,
                                    mbedtls_md_get_size(md), csr->sig.p, csr->sig.len);
    if (ret != 0)
        return fail(err, "CSR signature does not verify (%s); the CSR was altered or not signed "
                         "by its own key",
                    tls_err(ret, eb, sizeof eb));
    if (mbedtls_pk_get_type(&csr->pk) != MBEDTLS_PK_ECKEY ||
        mbedtls_pk_ec(csr->pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return fail(err, "CSR key is not an ECDSA P-256 key; weft issues P-256 certificates only");
    return 0;
}

int wf_ca_sign_csr(wf_ca *ca, const char *csr_pem, const char *spiffe_id, long ttl_seconds,
                   char ***chain_out, size_t *n_out, char **err)
{
    char eb[128], issuer[1024], nb[16], na[16];
    unsigned char san[2200], pem[PEM_MAX];
    static const unsigned char eku[] = {0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05,
                                        0x05, 0x07, 0x03, 0x01, 0x06, 0x08, 0x2b, 0x06,
                                        0x01, 0x05, 0x05, 0x07, 0x03, 0x02};
    wf_spiffe_id id;
    if (wf_spiffe_parse(spiffe_id, &id, err) != 0)
        return -1;
    if (strcmp(id.td, ca->td) != 0)
        return fail(err, "identity %s is outside this CA's trust domain \"%s\"", spiffe_id,
                    ca->td);
    if (!csr_pem)
        return fail(err, "CSR is missing");
    if (ttl_seconds <= 0)
        ttl_seconds = WF_CA_DEFAULT_TTL;

    mbedtls_x509_csr csr;
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    mbedtls_x509_csr_init(&csr);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    char **chain = NULL;
    int rc = -1;
    int ret = mbedtls_x509_csr_parse(&csr, (const unsigned char *)csr_pem, strlen(csr_pem) + 1);
    if (ret != 0) {
        fail(err, "CSR is not a valid PEM certificate request: %s", tls_err(ret, eb, sizeof eb));
        goto out;
    }
    if (csr_check(&csr, err) != 0)
        goto out;

    /* SAN: SEQUENCE { [6] uri }, written backwards as mbedTLS does. */
    size_t ulen = strlen(spiffe_id);
    unsigned char *p = san + sizeof san;
    int l1 = 0, l2 = 0;
    if ((l1 = mbedtls_asn1_write_raw_buffer(&p, san, (const unsigned char *)spiffe_id, ulen)) <
            0 ||
        (l2 = mbedtls_asn1_write_len(&p, san, ulen)) < 0 ||
        mbedtls_asn1_write_tag(&p, san, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6) < 0 ||
        mbedtls_asn1_write_len(&p, san, ulen + (size_t)l2 + 1) < 0 ||
        mbedtls_asn1_write_tag(&p, san, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) < 0) {
        fail(err, "SPIFFE ID too long for a certificate");
        goto out;
    }
    size_t sanlen = (size_t)(san + sizeof san - p);

    if ((ret = mbedtls_x509_dn_gets(issuer, sizeof issuer, &ca->ca_crt.subject)) < 0) {
        fail(err, "cannot format the CA subject: %s", tls_err(ret, eb, sizeof eb));
        goto out;
    }
    time_t now = time(NULL);
    /* Back-date a minute so a peer whose clock is slightly behind accepts it. */
    fmt_time(now - 60, nb, sizeof nb, "%Y%m%d%H%M%S");
    fmt_time(now + ttl_seconds, na, sizeof na, "%Y%m%d%H%M%S");
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &csr.pk);
    mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
    /* Subject left empty as Istio does; the identity is the (critical) SAN. */
    if ((ret = random_serial(&ca->drbg, &serial)) != 0 ||
        (ret = mbedtls_x509write_crt_set_serial(&w, &serial)) != 0 ||
        (ret = mbedtls_x509write_crt_set_validity(&w, nb, na)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_name(&w, "")) != 0 ||
        (ret = mbedtls_x509write_crt_set_issuer_name(&w, issuer)) != 0 ||
        (ret = mbedtls_x509write_crt_set_basic_constraints(&w, 0, -1)) != 0 ||
        (ret = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE |
                                                           MBEDTLS_X509_KU_KEY_ENCIPHERMENT)) !=
            0 ||
        (ret = mbedtls_x509write_crt_set_extension(
             &w, MBEDTLS_OID_EXTENDED_KEY_USAGE, MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
             0, eku, sizeof eku)) != 0 ||
        (ret = mbedtls_x509write_crt_set_extension(
             &w, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 1,
             p, sanlen)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_key_identifier(&w)) != 0 ||
        (ret = mbedtls_x509write_crt_set_authority_key_identifier(&w)) != 0 ||
        (ret = mbedtls_x509write_crt_pem(&w, pem, sizeof pem, mbedtls_ctr_drbg_random,
                                         &ca->drbg)) != 0) {
        fail(err, "cannot issue a certificate for %s: %s", spiffe_id,
             tls_err(ret, eb, sizeof eb));
        goto out;
    }
    size_t n = 1 + ca->chain_n;
    chain = calloc(n, sizeof *chain);
    if (!chain || !(chain[0] = strdup((char *)pem))) {
        fail(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < ca->chain_n; i++) {
        if (!(chain[i + 1] = strdup(ca->chain[i]))) {
            fail(err, "out of memory");
            goto out;
        }
    }
    *chain_out = chain;
    *n_out = n;
    chain = NULL;
    rc = 0;
out:
    if (chain)
        wf_ca_chain_free(chain, 1 + ca->chain_n);
    mbedtls_x509_csr_free(&csr);
    mbedtls_x509write_crt_free(&w);
    mbedtls_mpi_free(&serial);
    return rc;
}

int wf_ca_make_key_csr(char **key_pem, char **csr_pem, char **err)
{
    static const char pers[] = "weft-csr";
    char eb[128];
    unsigned char kb[PEM_MAX], cb[PEM_MAX];
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context pk;
    mbedtls_x509write_csr w;
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_pk_init(&pk);
    mbedtls_x509write_csr_init(&w);
    int ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent,
                                    (const unsigned char *)pers, sizeof pers - 1);
    if (ret == 0)
        ret = gen_p256(&pk, &drbg);
    if (ret == 0) {
        mbedtls_x509write_csr_set_key(&w, &pk);
        mbedtls_x509write_csr_set_md_alg(&w, MBEDTLS_MD_SHA256);
        ret = mbedtls_x509write_csr_set_subject_name(&w, "O=weft");
    }
    if (ret == 0)
        ret = mbedtls_x509write_csr_pem(&w, cb, sizeof cb, mbedtls_ctr_drbg_random, &drbg);
    if (ret == 0)
        ret = mbedtls_pk_write_key_pem(&pk, kb, sizeof kb);
    int rc = 0;
    if (ret != 0) {
        rc = fail(err, "cannot make a key and CSR: %s", tls_err(ret, eb, sizeof eb));
    } else {
        *key_pem = strdup((char *)kb);
        *csr_pem = strdup((char *)cb);
        if (!*key_pem || !*csr_pem) {
            free(*key_pem);
            free(*csr_pem);
            *key_pem = *csr_pem = NULL;
            rc = fail(err, "out of memory");
        }
    }
    mbedtls_platform_zeroize(kb, sizeof kb);
    mbedtls_x509write_csr_free(&w);
    mbedtls_pk_free(&pk);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
    return rc;
}

/* ---- tokens --------------------------------------------------------------------------------- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Appends base64url (no padding) of in to out, which has room for 4*(n+2)/3+1. */
static size_t b64url_enc(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64url[(v >> 6) & 63];
    }
    out[o] = 0;
    return o;
}

/* Strict decoder: alphabet only, no padding, no leftover bits. -1 on error. */
static long b64url_dec(const char *in, size_t n, unsigned char *out, size_t cap)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *q = in[i] ? memchr(b64url, in[i], 64) : NULL;
        if (!q)
            return -1;
        acc = (acc << 6) | (uint32_t)(q - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (acc & ((1u << bits) - 1))
        return -1;
    return (long)o;
}

static int ca_ec_key(const wf_ca *ca, mbedtls_ecp_keypair **ec, char **err)
{
    if (mbedtls_pk_get_type(&ca->key) != MBEDTLS_PK_ECKEY ||
        mbedtls_pk_ec(ca->key)->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return fail(err, "CA key in %s is not ECDSA P-256, so it cannot sign ES256 tokens",
                    ca->dir);
    *ec = mbedtls_pk_ec(ca->key);
    return 0;
}

int wf_ca_token_issue_at(wf_ca *ca, const char *ns, const char *sa, time_t iat, long ttl_seconds,
                         char **token, char **err)
{
    static const char header[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
    char eb[128];
    if (!ns || !valid_label(ns, strlen(ns)))
        return fail(err, "namespace \"%s\" is not a DNS-1123 label", ns ? ns : "");
    if (!sa || !valid_subdomain(sa, strlen(sa)))
        return fail(err, "service account \"%s\" is not a DNS-1123 subdomain", sa ? sa : "");
    if (ttl_seconds <= 0)
        return fail(err, "token lifetime must be positive, got %ld s", ttl_seconds);
    mbedtls_ecp_keypair *ec;
    if (ca_ec_key(ca, &ec, err) != 0)
        return -1;
    char sub[400];
    snprintf(sub, sizeof sub, "system:serviceaccount:%s:%s", ns, sa);
    json_t *claims = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "iss", "weft-ca", "aud", ca->td,
                               "sub", sub, "ns", ns, "sa", sa, "iat", (json_int_t)iat, "exp",
                               (json_int_t)(iat + ttl_seconds));
    char *body = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    json_decref(claims);
    if (!body)
        return fail(err, "out of memory");
    size_t blen = strlen(body);
    size_t cap = (sizeof header + blen + 64) * 4 / 3 + 16;
    char *t = malloc(cap + 100);
    if (!t) {
        free(body);
        return fail(err, "out of memory");
    }
    size_t o = b64url_enc((const unsigned char *)header, sizeof header - 1, t);
    t[o++] = '.';
    o += b64url_enc((const unsigned char *)body, blen, t + o);
    free(body);

    unsigned char hash[32], sig[64];
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int ret = mbedtls_sha256_ret((const unsigned char *)t, o, hash, 0);
    if (ret == 0)
        ret = mbedtls_ecdsa_sign(&ec->grp, &r, &s, &ec->d, hash, sizeof hash,
                                 mbedtls_ctr_drbg_random, &ca->drbg);
    /* JWS wants raw r||s, each 32 bytes big-endian, not DER. */
    if (ret == 0)
        ret = mbedtls_mpi_write_binary(&r, sig, 32);
    if (ret == 0)
        ret = mbedtls_mpi_write_binary(&s, sig + 32, 32);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    if (ret != 0) {
        free(t);
        return fail(err, "cannot sign the token: %s", tls_err(ret, eb, sizeof eb));
    }
    t[o++] = '.';
    b64url_enc(sig, sizeof sig, t + o);
    *token = t;
    return 0;
}

int wf_ca_token_issue(wf_ca *ca, const char *ns, const char *sa, long ttl_seconds, char **token,
                      char **err)
{
    return wf_ca_token_issue_at(ca, ns, sa, time(NULL), ttl_seconds, token, err);
}

static json_t *decode_json(const char *s, size_t n)
{
    unsigned char buf[TOKEN_MAX];
    long len = b64url_dec(s, n, buf, sizeof buf);
    if (len < 0)
        return NULL;
    json_t *j = json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static const char *claim_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static int verify_claims(const wf_ca *ca, json_t *c, time_t now, char **ns_out, char **sa_out,
                         char **err)
{
    char when[32], nowb[32];
    const char *iss = claim_str(c, "iss");
    if (!iss || strcmp(iss, "weft-ca") != 0)
        return fail(err, "token issuer \"%s\" is not \"weft-ca\"", iss ? iss : "");
    const char *aud = claim_str(c, "aud");
    if (!aud || strcmp(aud, ca->td) != 0)
        return fail(err, "token audience \"%s\" is not this CA's trust domain \"%s\"",
                    aud ? aud : "", ca->td);
    json_t *exp = json_object_get(c, "exp"), *iat = json_object_get(c, "iat");
    if (!json_is_integer(exp) || !json_is_integer(iat))
        return fail(err, "token lacks integer iat/exp claims");
    fmt_time(now, nowb, sizeof nowb, "%Y-%m-%dT%H:%M:%SZ");
    if ((json_int_t)now >= json_integer_value(exp)) {
        fmt_time((time_t)json_integer_value(exp), when, sizeof when, "%Y-%m-%dT%H:%M:%SZ");
        return fail(err, "token expired at %s (now %s); issue a new one with `weft token`", when,
                    nowb);
    }
    /* Five minutes of slack for clocks that disagree. */
    if (json_integer_value(iat) > (json_int_t)now + 300) {
        fmt_time((time_t)json_integer_value(iat), when, sizeof when, "%Y-%m-%dT%H:%M:%SZ");
        return fail(err, "token issued in the future (%s, now %s); check the clocks", when, nowb);
    }
    const char *ns = claim_str(c, "ns"), *sa = claim_str(c, "sa"), *sub = claim_str(c, "sub");
    if (!ns || !valid_label(ns, strlen(ns)) || !sa || !valid_subdomain(sa, strlen(sa)))
        return fail(err, "token ns/sa claims are missing or not valid Kubernetes names");
    char want[400];
    snprintf(want, sizeof want, "system:serviceaccount:%s:%s", ns, sa);
    if (!sub || strcmp(sub, want) != 0)
        return fail(err, "token subject \"%s\" does not match ns/sa (%s)", sub ? sub : "", want);
    char *n2 = ns_out ? strdup(ns) : NULL, *s2 = sa_out ? strdup(sa) : NULL;
    if ((ns_out && !n2) || (sa_out && !s2)) {
        free(n2);
        free(s2);
        return fail(err, "out of memory");
    }
    if (ns_out)
        *ns_out = n2;
    if (sa_out)
        *sa_out = s2;
    return 0;
}

int wf_ca_token_verify(const wf_ca *ca, const char *token, time_t now, char **ns_out,
                       char **sa_out, char **err)
{
    char eb[128];
    if (!token)
        return fail(err, "token is missing");
    size_t tl = strlen(token);
    if (tl > TOKEN_MAX)
        return fail(err, "token is %zu bytes long; the limit is %d", tl, TOKEN_MAX);
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.') || d1 == token || d2 == d1 + 1 || !d2[1])
        return fail(err, "token is not a JWT (expected header.payload.signature)");
    if (now == 0)
        now = time(NULL);
    json_t *h = decode_json(token, (size_t)(d1 - token));
    if (!h)
        return fail(err, "token header is not base64url JSON");
    const char *alg = claim_str(h, "alg");
    int alg_ok = alg && strcmp(alg, "ES256") == 0;
    char algbuf[64];
    snprintf(algbuf, sizeof algbuf, "%s", alg ? alg : "");
    json_decref(h);
    if (!alg_ok)
        return fail(err, "token algorithm \"%s\" is not ES256", algbuf);

    unsigned char sig[64], hash[32];
    if (b64url_dec(d2 + 1, strlen(d2 + 1), sig, sizeof sig) != 64)
        return fail(err, "token signature is not 64 bytes of base64url (raw ES256 r||s)");
    mbedtls_ecp_keypair *ec;
    if (ca_ec_key(ca, &ec, err) != 0)
        return -1;
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int ret = mbedtls_sha256_ret((const unsigned char *)token, (size_t)(d2 - token), hash, 0);
    if (ret == 0)
        ret = mbedtls_mpi_read_binary(&r, sig, 32);
    if (ret == 0)
        ret = mbedtls_mpi_read_binary(&s, sig + 32, 32);
    if (ret == 0)
        ret = mbedtls_ecdsa_verify(&ec->grp, hash, sizeof hash, &ec->Q, &r, &s);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    if (ret != 0)
        return fail(err, "token has a bad signature (not signed by this CA's key, or altered): %s",
                    tls_err(ret, eb, sizeof eb));
    json_t *c = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!c)
        return fail(err, "token payload is not base64url JSON");
    int rc = verify_claims(ca, c, now, ns_out, sa_out, err);
    json_decref(c);
    return rc;
}
