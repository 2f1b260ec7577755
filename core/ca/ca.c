/*
 * ca.c: the CA's crypto core (see ca.h): root of trust, CSR signing into
 * SPIFFE certificates, SAN parsing, SPIFFE ID validation and ES256 bootstrap
 * tokens.  mbedTLS 2.28 for the crypto, jansson for the JWT JSON.
 */
#define _GNU_SOURCE /* vasprintf */
#include "ca/ca.h"
#include "util/file.h"
#include "util/log.h"

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
    /* ca-cert.pem's subject as mbedTLS's writer wants it (last RDN first),
     * checked at load to encode to exactly the subject's DER, so every leaf's
     * issuer matches byte for byte whatever string types the CA used. */
    mbedtls_asn1_named_data *issuer_names;
    time_t not_after; /* earliest notAfter of ca-cert and its chain: no leaf outlives it */
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};


static const char *tls_err(int code, char *buf, size_t len)
{
    mbedtls_strerror(code, buf, len);
    return buf;
}

/* Reads a whole PEM file (at most 1 MiB). */
static int slurp(const char *path, char **out, size_t *len, char **err)
{
    int r = wf_read_file(path, 1 << 20, out, len);

    if (r == -EFBIG)
        return wf_fail(err, "%s is larger than 1 MiB; not a PEM file?", path);
    if (r < 0)
        return wf_fail(err, "cannot read %s: %s", path, strerror(-r));
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
        return wf_fail(err, "cannot create %s: %s", tmp, strerror(errno));
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return wf_fail(err, "cannot write %s: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    /* The key must not be readable by others even if umask is lax. */
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return wf_fail(err, "cannot finish %s: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return wf_fail(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
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
        return wf_fail(err, "SPIFFE ID is missing");
    size_t total = strlen(uri);
    if (total > 2048)
        return wf_fail(err, "SPIFFE ID is %zu bytes long; the limit is 2048", total);
    if (strncmp(uri, prefix, sizeof prefix - 1) != 0)
        return wf_fail(err, "SPIFFE ID \"%s\" does not start with \"spiffe://\"", uri);
    const char *td = uri + sizeof prefix - 1;
    const char *slash = strchr(td, '/');
    if (!slash)
        return wf_fail(err, "SPIFFE ID \"%s\" has no path; expected spiffe://TD/ns/NS/sa/SA", uri);
    size_t tdn = (size_t)(slash - td);
    if (!valid_td(td, tdn))
        return wf_fail(err,
                    "SPIFFE ID \"%s\": trust domain \"%.*s\" is not valid (lower-case letters, "
                    "digits, '.', '-', '_' only, no port or user info)",
                    uri, (int)tdn, td);
    const char *p = slash + 1;
    if (strncmp(p, "ns/", 3) != 0)
        return wf_fail(err, "SPIFFE ID \"%s\": path must be /ns/NS/sa/SA", uri);
    const char *ns = p + 3;
    const char *nse = strchr(ns, '/');
    if (!nse || strncmp(nse, "/sa/", 4) != 0)
        return wf_fail(err, "SPIFFE ID \"%s\": path must be /ns/NS/sa/SA", uri);
    size_t nsn = (size_t)(nse - ns);
    if (!valid_label(ns, nsn))
        return wf_fail(err, "SPIFFE ID \"%s\": namespace \"%.*s\" is not a DNS-1123 label", uri,
                    (int)nsn, ns);
    const char *sa = nse + 4;
    size_t san = strlen(sa);
    if (!valid_subdomain(sa, san))
        return wf_fail(err,
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
        return wf_fail(err, "subjectAltName is not a well-formed GeneralNames SEQUENCE");
    while (p < end) {
        unsigned char tag = *p++;
        if ((tag & 0x1f) == 0x1f || mbedtls_asn1_get_len(&p, end, &l) != 0) {
            free(found);
            return wf_fail(err, "subjectAltName has a malformed GeneralName");
        }
        /* uniformResourceIdentifier is [6] IMPLICIT IA5String, primitive. */
        if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6) && l >= 9 &&
            memcmp(p, "spiffe://", 9) == 0) {
            if (found) {
                free(found);
                return wf_fail(err, "certificate has more than one spiffe:// URI SAN");
            }
            if (memchr(p, 0, l)) /* an embedded NUL would hide the rest */
                return wf_fail(err, "certificate's spiffe:// URI SAN contains a NUL byte");
            found = strndup((const char *)p, l);
            if (!found)
                return wf_fail(err, "out of memory");
        }
        p += l;
    }
    if (!found)
        return wf_fail(err, "certificate has no spiffe:// URI SAN");
    if (wf_spiffe_parse(found, NULL, err) != 0) {
        free(found);
        return -1;
    }
    *uri = found;
    return 0;
}

static const unsigned char san_oid[] = {0x55, 0x1d, 0x11}; /* 2.5.29.17 */

/*
 * Finds the extension oid in an Extensions SEQUENCE at [p, end).  Returns 1
 * with its value (the OCTET STRING's contents), 0 when absent, -1 when the
 * DER is malformed.
 */
static int find_ext(unsigned char *p, const unsigned char *end, const unsigned char *oid,
                    size_t oidlen, unsigned char **val, size_t *vlen)
{
    size_t l;
    if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return -1;
    end = p + l;
    while (p < end) {
        if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) !=
            0)
            return -1;
        unsigned char *ext_end = p + l;
        mbedtls_asn1_buf o;
        if (mbedtls_asn1_get_tag(&p, ext_end, &o.len, MBEDTLS_ASN1_OID) != 0)
            return -1;
        o.p = p;
        p += o.len;
        int critical = 0;
        if (p < ext_end && *p == MBEDTLS_ASN1_BOOLEAN &&
            mbedtls_asn1_get_bool(&p, ext_end, &critical) != 0)
            return -1;
        if (mbedtls_asn1_get_tag(&p, ext_end, &l, MBEDTLS_ASN1_OCTET_STRING) != 0 ||
            p + l != ext_end)
            return -1;
        if (o.len == oidlen && memcmp(o.p, oid, oidlen) == 0) {
            *val = p;
            *vlen = l;
            return 1;
        }
        p = ext_end;
    }
    return 0;
}

int wf_ca_cert_spiffe_id(const mbedtls_x509_crt *crt, char **uri, char **err)
{
    unsigned char *p = crt->v3_ext.p, *val;
    size_t l, vlen;
    if (!p || crt->v3_ext.len == 0)
        return wf_fail(err, "certificate has no extensions, so no SPIFFE ID");
    const unsigned char *end = p + crt->v3_ext.len;
    /* mbedTLS leaves p after the [3] wrapper; tolerate both positions. */
    if (*p == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3)) {
        if (mbedtls_asn1_get_tag(&p, end, &l, *p) != 0)
            return wf_fail(err, "certificate extensions are malformed");
        end = p + l;
    }
    int r = find_ext(p, end, san_oid, sizeof san_oid, &val, &vlen);
    if (r < 0)
        return wf_fail(err, "certificate extensions are malformed");
    if (r == 0)
        return wf_fail(err, "certificate has no subjectAltName extension, so no SPIFFE ID");
    return wf_ca_san_spiffe_from_der(val, vlen, uri, err);
}

/* Every URI in a GeneralNames SEQUENCE, whatever its scheme. */
static int san_uris(unsigned char *p, const unsigned char *end, char ***uris, size_t *n,
                    char **err)
{
    size_t l;
    if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0 ||
        p + l != end)
        return wf_fail(err, "CSR subjectAltName is not a well-formed GeneralNames SEQUENCE");
    while (p < end) {
        unsigned char tag = *p++;
        if ((tag & 0x1f) == 0x1f || mbedtls_asn1_get_len(&p, end, &l) != 0)
            return wf_fail(err, "CSR subjectAltName has a malformed GeneralName");
        if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6)) {
            char **nu = realloc(*uris, (*n + 1) * sizeof *nu);
            if (!nu)
                return wf_fail(err, "out of memory");
            *uris = nu;
            /* A NUL inside would hide the rest from every string compare. */
            if (memchr(p, 0, l))
                return wf_fail(err, "CSR asks for a URI SAN containing a NUL byte");
            if (!(nu[*n] = strndup((const char *)p, l)))
                return wf_fail(err, "out of memory");
            (*n)++;
        }
        p += l;
    }
    return 0;
}

/*
 * The URI SANs a CSR asks for: CertificationRequestInfo is SEQUENCE {
 * version, subject, subjectPKInfo, [0] attributes }, and the SANs live in
 * the extensionRequest attribute (1.2.840.113549.1.9.14), whose value is an
 * Extensions SEQUENCE.  mbedTLS 2.28 does not parse CSR attributes.
 */
static int csr_uris(const mbedtls_x509_csr *csr, char ***uris, size_t *n, char **err)
{
    static const unsigned char ext_req[] = {0x2a, 0x86, 0x48, 0x86, 0xf7,
                                            0x0d, 0x01, 0x09, 0x0e};
    unsigned char *p = csr->cri.p, *val;
    const unsigned char *end = p + csr->cri.len;
    size_t l, vlen;
    if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        goto bad;
    end = p + l;
    /* version, subject, subjectPKInfo */
    for (int i = 0; i < 3; i++) {
        if (p >= end)
            goto bad;
        p++;
        if (mbedtls_asn1_get_len(&p, end, &l) != 0)
            goto bad;
        p += l;
    }
    if (p >= end)
        return 0; /* no attributes */
    if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED) !=
        0)
        goto bad;
    end = p + l;
    while (p < end) {
        if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) !=
            0)
            goto bad;
        unsigned char *attr_end = p + l;
        mbedtls_asn1_buf o;
        if (mbedtls_asn1_get_tag(&p, attr_end, &o.len, MBEDTLS_ASN1_OID) != 0)
            goto bad;
        o.p = p;
        p += o.len;
        if (o.len == sizeof ext_req && memcmp(o.p, ext_req, sizeof ext_req) == 0) {
            if (mbedtls_asn1_get_tag(&p, attr_end, &l,
                                     MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SET) != 0)
                goto bad;
            unsigned char *set_end = p + l;
            while (p < set_end) {
                unsigned char *q = p;
                if (mbedtls_asn1_get_tag(&q, set_end, &l,
                                         MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
                    goto bad;
                unsigned char *ext_end = q + l;
                int r = find_ext(p, ext_end, san_oid, sizeof san_oid, &val, &vlen);
                if (r < 0)
                    goto bad;
                if (r == 1 && san_uris(val, val + vlen, uris, n, err) != 0)
                    return -1;
                p = ext_end;
            }
        }
        p = attr_end;
    }
    return 0;
bad:
    return wf_fail(err, "CSR attributes are malformed DER");
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
        return wf_fail(err, "cannot generate a root CA in %s: %s", ca->dir,
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
        return wf_fail(err, "%s: not a valid PEM certificate file: %s", path,
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

time_t wf_x509_time(const mbedtls_x509_time *t)
{
    struct tm tm = {0};
    tm.tm_year = t->year - 1900;
    tm.tm_mon = t->mon - 1;
    tm.tm_mday = t->day;
    tm.tm_hour = t->hour;
    tm.tm_min = t->min;
    tm.tm_sec = t->sec;
    return timegm(&tm);
}

static int same_cert(const mbedtls_x509_crt *a, const mbedtls_x509_crt *b)
{
    return a->raw.len == b->raw.len && memcmp(a->raw.p, b->raw.p, a->raw.len) == 0;
}

/*
 * Builds ca->issuer_names from ca-cert.pem's parsed subject and checks that
 * mbedTLS writes it back as exactly the subject's DER.  Rebuilding the name
 * from its text form would change string types (PrintableString becomes
 * UTF8String) and escaping, and a verifier that compares names byte for byte
 * would then find no issuer for the leaves.
 */
static int build_issuer(wf_ca *ca, char **err)
{
    unsigned char buf[2048], *p = buf + sizeof buf;
    for (const mbedtls_x509_name *n = &ca->ca_crt.subject; n && n->oid.p; n = n->next) {
        mbedtls_asn1_named_data *d = calloc(1, sizeof *d);
        if (!d)
            return wf_fail(err, "out of memory");
        d->next = ca->issuer_names; /* the writer emits the list last RDN first */
        ca->issuer_names = d;
        d->oid.tag = n->oid.tag;
        d->oid.len = n->oid.len;
        d->val.tag = n->val.tag;
        d->val.len = n->val.len;
        d->oid.p = malloc(n->oid.len ? n->oid.len : 1);
        d->val.p = malloc(n->val.len ? n->val.len : 1);
        if (!d->oid.p || !d->val.p)
            return wf_fail(err, "out of memory");
        memcpy(d->oid.p, n->oid.p, n->oid.len);
        memcpy(d->val.p, n->val.p, n->val.len);
    }
    int len = mbedtls_x509_write_names(&p, buf, ca->issuer_names);
    if (len < 0 || (size_t)len != ca->ca_crt.subject_raw.len ||
        memcmp(p, ca->ca_crt.subject_raw.p, (size_t)len) != 0)
        return wf_fail(err,
                    "%s/ca-cert.pem: its subject name cannot be reproduced byte for byte as the "
                    "issuer of new certificates (a multi-valued RDN or an unusual encoding); "
                    "reissue the CA certificate with a plain subject such as \"O=example,CN=CA\"",
                    ca->dir);
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
        return wf_fail(err, "%s: cannot parse the CA key: %s", path, tls_err(ret, eb, sizeof eb));
    if (mbedtls_pk_check_pair(&ca->ca_crt.pk, &ca->key) != 0)
        return wf_fail(err,
                    "%s/ca-key.pem is not the private key of %s/ca-cert.pem; install the "
                    "matching pair",
                    ca->dir, ca->dir);
    if (!ca->ca_crt.ca_istrue)
        return wf_fail(err, "%s/ca-cert.pem is not a CA certificate (basicConstraints CA:FALSE)",
                    ca->dir);
    if (mbedtls_x509_crt_check_key_usage(&ca->ca_crt, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0)
        return wf_fail(err, "%s/ca-cert.pem may not sign certificates (keyUsage lacks keyCertSign)",
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
    /* Istio's cert-chain.pem starts with ca-cert.pem and goes up to the root;
     * its certificates follow every leaf, so a different first one would
     * send peers a chain that does not fit. */
    if (have_chain && !same_cert(&chain, &ca->ca_crt)) {
        mbedtls_x509_crt_free(&chain);
        return wf_fail(err,
                    "%s/cert-chain.pem does not start with the certificate in %s/ca-cert.pem; "
                    "it must hold ca-cert.pem followed by its issuers up to the root",
                    ca->dir, ca->dir);
    }
    const mbedtls_x509_crt *first = have_chain ? &chain : &ca->ca_crt;
    ret = mbedtls_x509_crt_verify((mbedtls_x509_crt *)first, &ca->root, NULL, NULL, &flags, NULL,
                                  NULL);
    if (ret != 0) {
        char vb[512];
        mbedtls_x509_crt_verify_info(vb, sizeof vb, "", flags);
        for (char *q = vb; *q; q++) /* one line for the operator */
            if (*q == '\n')
                *q = (q[1] ? ';' : 0);
        mbedtls_x509_crt_free(&chain);
        return wf_fail(err, "%s/%s does not chain to %s/root-cert.pem:%s", ca->dir,
                    have_chain ? "cert-chain.pem" : "ca-cert.pem", ca->dir, vb);
    }
    const mbedtls_x509_crt *last = NULL;
    ca->not_after = wf_x509_time(&ca->root.valid_to);
    for (const mbedtls_x509_crt *c = first; c && c->raw.p; c = c->next) {
        if (add_chain(ca, c) != 0) {
            mbedtls_x509_crt_free(&chain);
            return wf_fail(err, "out of memory");
        }
        time_t t = wf_x509_time(&c->valid_to);
        if (t < ca->not_after)
            ca->not_after = t;
        last = c;
    }
    int root_last = last && same_cert(last, &ca->root);
    mbedtls_x509_crt_free(&chain);
    if (!root_last && add_chain(ca, &ca->root) != 0)
        return wf_fail(err, "out of memory");
    if (!(ca->root_pem = der_to_pem(ca->root.raw.p, ca->root.raw.len)))
        return wf_fail(err, "out of memory");
    return build_issuer(ca, err);
}

static int open_ca(const char *dir, const char *trust_domain, int create, wf_ca **out,
                   char **err)
{
    static const char pers[] = "weft-ca";
    char eb[128];
    if (!trust_domain)
        trust_domain = WF_CA_DEFAULT_TRUST_DOMAIN;
    if (!valid_td(trust_domain, strlen(trust_domain)))
        return wf_fail(err, "trust domain \"%s\" is not valid (lower-case letters, digits, '.', "
                         "'-', '_')",
                    trust_domain);
    wf_ca *ca = calloc(1, sizeof *ca);
    if (!ca)
        return wf_fail(err, "out of memory");
    mbedtls_x509_crt_init(&ca->ca_crt);
    mbedtls_x509_crt_init(&ca->root);
    mbedtls_pk_init(&ca->key);
    mbedtls_entropy_init(&ca->entropy);
    mbedtls_ctr_drbg_init(&ca->drbg);
    ca->td = strdup(trust_domain);
    ca->dir = strdup(dir);
    if (!ca->td || !ca->dir) {
        wf_ca_free(ca);
        return wf_fail(err, "out of memory");
    }
    int ret = mbedtls_ctr_drbg_seed(&ca->drbg, mbedtls_entropy_func, &ca->entropy,
                                    (const unsigned char *)pers, sizeof pers - 1);
    if (ret != 0) {
        wf_ca_free(ca);
        return wf_fail(err, "cannot seed the random generator: %s", tls_err(ret, eb, sizeof eb));
    }
    if (!file_exists(dir, "ca-cert.pem")) {
        if (!create) {
            wf_ca_free(ca);
            wf_fail(err, "no CA in %s (no ca-cert.pem)", dir);
            return WF_CA_NO_CA;
        }
        if (file_exists(dir, "ca-key.pem")) {
            wf_ca_free(ca);
            return wf_fail(err,
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

int wf_ca_load_or_create(const char *dir, const char *trust_domain, wf_ca **out, char **err)
{
    return open_ca(dir, trust_domain, 1, out, err);
}

int wf_ca_load(const char *dir, const char *trust_domain, wf_ca **out, char **err)
{
    return open_ca(dir, trust_domain, 0, out, err);
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
    mbedtls_asn1_free_named_data_list(&ca->issuer_names);
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
        return wf_fail(err, "CSR uses an unsupported signature hash");
    int ret = mbedtls_md(md, csr->cri.p, csr->cri.len, hash);
    if (ret == 0)
        ret = mbedtls_pk_verify_ext(csr->sig_pk, csr->sig_opts, &csr->pk, csr->sig_md, hash,
                                    mbedtls_md_get_size(md), csr->sig.p, csr->sig.len);
    if (ret != 0)
        return wf_fail(err, "CSR signature does not verify (%s); the CSR was altered or not signed "
                         "by its own key",
                    tls_err(ret, eb, sizeof eb));
    if (mbedtls_pk_get_type(&csr->pk) != MBEDTLS_PK_ECKEY ||
        mbedtls_pk_ec(csr->pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return wf_fail(err, "CSR key is not an ECDSA P-256 key; weft issues P-256 certificates only");
    return 0;
}

int wf_ca_csr_check(const char *csr_pem, char ***uris, size_t *n, char **err)
{
    char eb[128];
    mbedtls_x509_csr csr;
    *uris = NULL;
    *n = 0;
    if (!csr_pem || !*csr_pem)
        return wf_fail(err, "CSR is missing");
    mbedtls_x509_csr_init(&csr);
    int rc = -1, ret = mbedtls_x509_csr_parse(&csr, (const unsigned char *)csr_pem,
                                              strlen(csr_pem) + 1);
    if (ret != 0)
        wf_fail(err, "CSR is not a valid PEM certificate request: %s", tls_err(ret, eb, sizeof eb));
    else if (csr_check(&csr, err) == 0 && csr_uris(&csr, uris, n, err) == 0)
        rc = 0;
    if (rc != 0) {
        wf_ca_chain_free(*uris, *n);
        *uris = NULL;
        *n = 0;
    }
    mbedtls_x509_csr_free(&csr);
    return rc;
}

/* SAN extension value: SEQUENCE { [tag] name }, written backwards as mbedTLS does. */
static int san_der(unsigned char *buf, size_t cap, int tag, const char *name, unsigned char **out,
                   size_t *outlen)
{
    size_t nlen = strlen(name);
    unsigned char *p = buf + cap;
    int l2;
    if (mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)name, nlen) < 0 ||
        (l2 = mbedtls_asn1_write_len(&p, buf, nlen)) < 0 ||
        mbedtls_asn1_write_tag(&p, buf, (unsigned char)(MBEDTLS_ASN1_CONTEXT_SPECIFIC | tag)) <
            0 ||
        mbedtls_asn1_write_len(&p, buf, nlen + (size_t)l2 + 1) < 0 ||
        mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) < 0)
        return -1;
    *out = p;
    *outlen = (size_t)(buf + cap - p);
    return 0;
}

/*
 * Signs one end-entity certificate for subject_key with ca's key: empty
 * subject, the critical SAN given as DER, notBefore a minute back, notAfter
 * now+ttl capped at the CA's own expiry.  pem receives the PEM text.
 */
static int issue(wf_ca *ca, mbedtls_pk_context *subject_key, const unsigned char *san,
                 size_t sanlen, long ttl_seconds, const char *what, unsigned char *pem,
                 size_t pemcap, char **err)
{
    static const unsigned char eku[] = {0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05,
                                        0x05, 0x07, 0x03, 0x01, 0x06, 0x08, 0x2b, 0x06,
                                        0x01, 0x05, 0x05, 0x07, 0x03, 0x02};
    char eb[128], nb[16], na[16], when[32];
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    int ret;
    time_t now = time(NULL);
    if (now >= ca->not_after) {
        fmt_time(ca->not_after, when, sizeof when, "%Y-%m-%dT%H:%M:%SZ");
        return wf_fail(err,
                    "cannot issue a certificate for %s: the CA certificate in %s (or its chain) "
                    "expired at %s; install a renewed CA",
                    what, ca->dir, when);
    }
    time_t until = now + ttl_seconds;
    /* A leaf that outlived its issuer would fail verification early anyway;
     * capping says so honestly in its notAfter. */
    if (until > ca->not_after || until < now)
        until = ca->not_after;
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    /* Back-date a minute so a peer whose clock is slightly behind accepts it. */
    fmt_time(now - 60, nb, sizeof nb, "%Y%m%d%H%M%S");
    fmt_time(until, na, sizeof na, "%Y%m%d%H%M%S");
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, subject_key);
    mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
    /* Borrowed for the write; detached again before mbedtls frees w. */
    w.issuer = ca->issuer_names;
    /* Subject left empty as Istio does; the identity is the (critical) SAN. */
    if ((ret = random_serial(&ca->drbg, &serial)) != 0 ||
        (ret = mbedtls_x509write_crt_set_serial(&w, &serial)) != 0 ||
        (ret = mbedtls_x509write_crt_set_validity(&w, nb, na)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_name(&w, "")) != 0 ||
        (ret = mbedtls_x509write_crt_set_basic_constraints(&w, 0, -1)) != 0 ||
        (ret = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE |
                                                           MBEDTLS_X509_KU_KEY_ENCIPHERMENT)) !=
            0 ||
        (ret = mbedtls_x509write_crt_set_extension(
             &w, MBEDTLS_OID_EXTENDED_KEY_USAGE, MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
             0, eku, sizeof eku)) != 0 ||
        (ret = mbedtls_x509write_crt_set_extension(
             &w, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 1,
             san, sanlen)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_key_identifier(&w)) != 0 ||
        (ret = mbedtls_x509write_crt_set_authority_key_identifier(&w)) != 0 ||
        (ret = mbedtls_x509write_crt_pem(&w, pem, pemcap, mbedtls_ctr_drbg_random, &ca->drbg)) !=
            0)
        wf_fail(err, "cannot issue a certificate for %s: %s", what, tls_err(ret, eb, sizeof eb));
    w.issuer = NULL;
    mbedtls_x509write_crt_free(&w);
    mbedtls_mpi_free(&serial);
    return ret ? -1 : 0;
}

int wf_ca_sign_csr(wf_ca *ca, const char *csr_pem, const char *spiffe_id, long ttl_seconds,
                   char ***chain_out, size_t *n_out, char **err)
{
    char eb[128];
    unsigned char sanbuf[2200], *san, pem[PEM_MAX];
    size_t sanlen;
    wf_spiffe_id id;
    if (wf_spiffe_parse(spiffe_id, &id, err) != 0)
        return -1;
    if (strcmp(id.td, ca->td) != 0)
        return wf_fail(err, "identity %s is outside this CA's trust domain \"%s\"", spiffe_id,
                    ca->td);
    if (!csr_pem)
        return wf_fail(err, "CSR is missing");
    if (ttl_seconds <= 0)
        ttl_seconds = WF_CA_DEFAULT_TTL;
    if (san_der(sanbuf, sizeof sanbuf, 6, spiffe_id, &san, &sanlen) != 0)
        return wf_fail(err, "SPIFFE ID too long for a certificate");

    mbedtls_x509_csr csr;
    mbedtls_x509_csr_init(&csr);
    char **chain = NULL;
    int rc = -1;
    int ret = mbedtls_x509_csr_parse(&csr, (const unsigned char *)csr_pem, strlen(csr_pem) + 1);
    if (ret != 0) {
        wf_fail(err, "CSR is not a valid PEM certificate request: %s", tls_err(ret, eb, sizeof eb));
        goto out;
    }
    if (csr_check(&csr, err) != 0 ||
        issue(ca, &csr.pk, san, sanlen, ttl_seconds, spiffe_id, pem, sizeof pem, err) != 0)
        goto out;
    size_t n = 1 + ca->chain_n;
    chain = calloc(n, sizeof *chain);
    if (!chain || !(chain[0] = strdup((char *)pem))) {
        wf_fail(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < ca->chain_n; i++) {
        if (!(chain[i + 1] = strdup(ca->chain[i]))) {
            wf_fail(err, "out of memory");
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
    return rc;
}

int wf_ca_issue_server(wf_ca *ca, const char *dns_name, long ttl_seconds, char **chain_pem,
                       char **key_pem, char **err)
{
    char eb[128];
    unsigned char sanbuf[600], *san, pem[PEM_MAX], kb[PEM_MAX];
    size_t sanlen, dl = dns_name ? strlen(dns_name) : 0;
    if (dl == 0 || dl > 253 || !valid_subdomain(dns_name, dl))
        return wf_fail(err, "server name \"%s\" is not a DNS name (lower-case letters, digits, '-', "
                         "'.')",
                    dns_name ? dns_name : "");
    if (ttl_seconds <= 0)
        ttl_seconds = WF_CA_DEFAULT_TTL;
    if (san_der(sanbuf, sizeof sanbuf, 2, dns_name, &san, &sanlen) != 0)
        return wf_fail(err, "server name too long for a certificate");
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    int rc = -1, ret = gen_p256(&pk, &ca->drbg);
    if (ret == 0)
        ret = mbedtls_pk_write_key_pem(&pk, kb, sizeof kb);
    if (ret != 0) {
        wf_fail(err, "cannot make a key for %s: %s", dns_name, tls_err(ret, eb, sizeof eb));
        goto out;
    }
    if (issue(ca, &pk, san, sanlen, ttl_seconds, dns_name, pem, sizeof pem, err) != 0)
        goto out;
    /* Leaf and intermediates; the root stays out, peers have it already. */
    size_t n = ca->chain_n > 1 ? ca->chain_n - 1 : 0, len = strlen((char *)pem);
    for (size_t i = 0; i < n; i++)
        len += strlen(ca->chain[i]);
    char *c = malloc(len + 1), *k = strdup((char *)kb);
    if (!c || !k) {
        free(c);
        free(k);
        wf_fail(err, "out of memory");
        goto out;
    }
    size_t o = strlen((char *)pem);
    memcpy(c, pem, o);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ca->chain[i]);
        memcpy(c + o, ca->chain[i], l);
        o += l;
    }
    c[o] = 0;
    *chain_pem = c;
    *key_pem = k;
    rc = 0;
out:
    mbedtls_platform_zeroize(kb, sizeof kb);
    mbedtls_pk_free(&pk);
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
        rc = wf_fail(err, "cannot make a key and CSR: %s", tls_err(ret, eb, sizeof eb));
    } else {
        *key_pem = strdup((char *)kb);
        *csr_pem = strdup((char *)cb);
        if (!*key_pem || !*csr_pem) {
            free(*key_pem);
            free(*csr_pem);
            *key_pem = *csr_pem = NULL;
            rc = wf_fail(err, "out of memory");
        }
    }
    mbedtls_platform_zeroize(kb, sizeof kb);
    mbedtls_x509write_csr_free(&w);
    mbedtls_pk_free(&pk);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
    return rc;
}

/* ---- facts and checks for holders of certificates ------------------------------------------- */

int wf_ca_crt_info(const mbedtls_x509_crt *crt, wf_ca_cert_info *out)
{
    char *uri = NULL;
    memset(out, 0, sizeof *out);
    if (wf_ca_cert_spiffe_id(crt, &uri, NULL) == 0) {
        snprintf(out->identity, sizeof out->identity, "%s", uri);
        free(uri);
    } else {
        for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p;
             s = s->next) {
            if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2) &&
                s->buf.len < sizeof out->identity && !memchr(s->buf.p, 0, s->buf.len)) {
                memcpy(out->identity, s->buf.p, s->buf.len);
                out->identity[s->buf.len] = 0;
                break;
            }
        }
    }
    size_t o = 0;
    for (size_t i = 0; i < crt->serial.len && o + 3 < sizeof out->serial; i++)
        o += (size_t)snprintf(out->serial + o, sizeof out->serial - o, "%02x", crt->serial.p[i]);
    out->not_before = wf_x509_time(&crt->valid_from);
    out->not_after = wf_x509_time(&crt->valid_to);
    return 0;
}

int wf_ca_pem_info(const char *pem, wf_ca_cert_info *out, char **err)
{
    char eb[128];
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int ret = pem ? mbedtls_x509_crt_parse(&crt, (const unsigned char *)pem, strlen(pem) + 1)
                  : MBEDTLS_ERR_X509_BAD_INPUT_DATA;
    if (ret < 0 || !crt.raw.p) {
        mbedtls_x509_crt_free(&crt);
        return wf_fail(err, "not a PEM certificate: %s", tls_err(ret, eb, sizeof eb));
    }
    wf_ca_crt_info(&crt, out);
    mbedtls_x509_crt_free(&crt);
    return 0;
}

int wf_ca_check_issued(const char *const *chain, size_t n, const char *roots_pem,
                       const char *key_pem, const char *want_id, wf_ca_cert_info *info,
                       char **err)
{
    char eb[128];
    mbedtls_x509_crt crt, roots;
    mbedtls_pk_context key;
    char *uri = NULL;
    int rc = -1, ret;
    mbedtls_x509_crt_init(&crt);
    mbedtls_x509_crt_init(&roots);
    mbedtls_pk_init(&key);
    if (n == 0 || !chain[0]) {
        wf_fail(err, "the CA returned no certificate");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        ret = chain[i] ? mbedtls_x509_crt_parse(&crt, (const unsigned char *)chain[i],
                                                strlen(chain[i]) + 1)
                       : MBEDTLS_ERR_X509_BAD_INPUT_DATA;
        if (ret != 0) {
            wf_fail(err, "certificate %zu of the chain the CA returned does not parse: %s", i + 1,
                 ret < 0 ? tls_err(ret, eb, sizeof eb) : "some certificates did not parse");
            goto out;
        }
    }
    if (!roots_pem || (ret = mbedtls_x509_crt_parse(&roots, (const unsigned char *)roots_pem,
                                                    strlen(roots_pem) + 1)) != 0 ||
        !roots.raw.p) {
        wf_fail(err, "the trusted root certificates do not parse");
        goto out;
    }
    if (crt.ca_istrue) {
        wf_fail(err, "the CA returned a CA certificate where a workload certificate belongs");
        goto out;
    }
    uint32_t flags = 0;
    if (mbedtls_x509_crt_verify(&crt, &roots, NULL, NULL, &flags, NULL, NULL) != 0) {
        char vb[512];
        mbedtls_x509_crt_verify_info(vb, sizeof vb, "", flags);
        for (char *q = vb; *q; q++)
            if (*q == '\n')
                *q = (q[1] ? ';' : 0);
        wf_fail(err, "the certificate the CA returned does not chain to the trusted root:%s", vb);
        goto out;
    }
    if (!key_pem || (ret = mbedtls_pk_parse_key(&key, (const unsigned char *)key_pem,
                                                strlen(key_pem) + 1, NULL, 0)) != 0) {
        wf_fail(err, "the private key does not parse");
        goto out;
    }
    if (mbedtls_pk_check_pair(&crt.pk, &key) != 0) {
        wf_fail(err, "the certificate the CA returned is not for our key");
        goto out;
    }
    if (wf_ca_cert_spiffe_id(&crt, &uri, err) != 0)
        goto out;
    if (want_id && strcmp(uri, want_id) != 0) {
        wf_fail(err, "the CA issued %s where %s was expected", uri, want_id);
        goto out;
    }
    if (info)
        wf_ca_crt_info(&crt, info);
    rc = 0;
out:
    free(uri);
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&crt);
    mbedtls_x509_crt_free(&roots);
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
        return wf_fail(err, "CA key in %s is not ECDSA P-256, so it cannot sign ES256 tokens",
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
        return wf_fail(err, "namespace \"%s\" is not a DNS-1123 label", ns ? ns : "");
    if (!sa || !valid_subdomain(sa, strlen(sa)))
        return wf_fail(err, "service account \"%s\" is not a DNS-1123 subdomain", sa ? sa : "");
    if (ttl_seconds <= 0)
        return wf_fail(err, "token lifetime must be positive, got %ld s", ttl_seconds);
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
        return wf_fail(err, "out of memory");
    size_t blen = strlen(body);
    size_t cap = (sizeof header + blen + 64) * 4 / 3 + 16;
    char *t = malloc(cap + 100);
    if (!t) {
        free(body);
        return wf_fail(err, "out of memory");
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
        return wf_fail(err, "cannot sign the token: %s", tls_err(ret, eb, sizeof eb));
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
        return wf_fail(err, "token issuer \"%s\" is not \"weft-ca\"", iss ? iss : "");
    const char *aud = claim_str(c, "aud");
    if (!aud || strcmp(aud, ca->td) != 0)
        return wf_fail(err, "token audience \"%s\" is not this CA's trust domain \"%s\"",
                    aud ? aud : "", ca->td);
    json_t *exp = json_object_get(c, "exp"), *iat = json_object_get(c, "iat");
    if (!json_is_integer(exp) || !json_is_integer(iat))
        return wf_fail(err, "token lacks integer iat/exp claims");
    fmt_time(now, nowb, sizeof nowb, "%Y-%m-%dT%H:%M:%SZ");
    if ((json_int_t)now >= json_integer_value(exp)) {
        fmt_time((time_t)json_integer_value(exp), when, sizeof when, "%Y-%m-%dT%H:%M:%SZ");
        return wf_fail(err, "token expired at %s (now %s); issue a new one with `weft token`", when,
                    nowb);
    }
    /* Five minutes of slack for clocks that disagree. */
    if (json_integer_value(iat) > (json_int_t)now + 300) {
        fmt_time((time_t)json_integer_value(iat), when, sizeof when, "%Y-%m-%dT%H:%M:%SZ");
        return wf_fail(err, "token issued in the future (%s, now %s); check the clocks", when, nowb);
    }
    const char *ns = claim_str(c, "ns"), *sa = claim_str(c, "sa"), *sub = claim_str(c, "sub");
    if (!ns || !valid_label(ns, strlen(ns)) || !sa || !valid_subdomain(sa, strlen(sa)))
        return wf_fail(err, "token ns/sa claims are missing or not valid Kubernetes names");
    char want[400];
    snprintf(want, sizeof want, "system:serviceaccount:%s:%s", ns, sa);
    if (!sub || strcmp(sub, want) != 0)
        return wf_fail(err, "token subject \"%s\" does not match ns/sa (%s)", sub ? sub : "", want);
    char *n2 = ns_out ? strdup(ns) : NULL, *s2 = sa_out ? strdup(sa) : NULL;
    if ((ns_out && !n2) || (sa_out && !s2)) {
        free(n2);
        free(s2);
        return wf_fail(err, "out of memory");
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
        return wf_fail(err, "token is missing");
    size_t tl = strlen(token);
    if (tl > TOKEN_MAX)
        return wf_fail(err, "token is %zu bytes long; the limit is %d", tl, TOKEN_MAX);
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.') || d1 == token || d2 == d1 + 1 || !d2[1])
        return wf_fail(err, "token is not a JWT (expected header.payload.signature)");
    if (now == 0)
        now = time(NULL);
    json_t *h = decode_json(token, (size_t)(d1 - token));
    if (!h)
        return wf_fail(err, "token header is not base64url JSON");
    const char *alg = claim_str(h, "alg");
    int alg_ok = alg && strcmp(alg, "ES256") == 0;
    char algbuf[64];
    snprintf(algbuf, sizeof algbuf, "%s", alg ? alg : "");
    json_decref(h);
    if (!alg_ok)
        return wf_fail(err, "token algorithm \"%s\" is not ES256", algbuf);

    unsigned char sig[64], hash[32];
    if (b64url_dec(d2 + 1, strlen(d2 + 1), sig, sizeof sig) != 64)
        return wf_fail(err, "token signature is not 64 bytes of base64url (raw ES256 r||s)");
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
        return wf_fail(err, "token has a bad signature (not signed by this CA's key, or altered): %s",
                    tls_err(ret, eb, sizeof eb));
    json_t *c = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!c)
        return wf_fail(err, "token payload is not base64url JSON");
    int rc = verify_claims(ca, c, now, ns_out, sa_out, err);
    json_decref(c);
    return rc;
}

int wf_ca_token_claims(const char *token, char **ns, char **sa, char **td, time_t *exp,
                       char **err)
{
    const char *d1 = token ? strchr(token, '.') : NULL;
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2)
        return wf_fail(err, "token is not a JWT (expected header.payload.signature)");
    json_t *c = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!c)
        return wf_fail(err, "token payload is not base64url JSON");
    const char *n = claim_str(c, "ns"), *s = claim_str(c, "sa"), *a = claim_str(c, "aud");
    json_t *e = json_object_get(c, "exp");
    if (!n || !s || !a || !json_is_integer(e)) {
        json_decref(c);
        return wf_fail(err, "token lacks the ns, sa, aud or exp claim");
    }
    char *n2 = ns ? strdup(n) : NULL, *s2 = sa ? strdup(s) : NULL, *a2 = td ? strdup(a) : NULL;
    if (exp)
        *exp = (time_t)json_integer_value(e);
    json_decref(c);
    if ((ns && !n2) || (sa && !s2) || (td && !a2)) {
        free(n2);
        free(s2);
        free(a2);
        return wf_fail(err, "out of memory");
    }
    if (ns)
        *ns = n2;
    if (sa)
        *sa = s2;
    if (td)
        *td = a2;
    return 0;
}
