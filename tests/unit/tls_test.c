/*
 * tls_test.c: unit tests for core/tls: two wf_tls_conns wired back to back
 * in memory (what one sends, the other is fed), with certificates from the
 * CA core, covering mTLS, ALPN, data both ways, refusals with their
 * operator messages, resumption, close_notify, pausing and sniffing.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "ca/ca.h"
#include "test.h"
#include "tls/tls.h"

#define TD "spiffe://cluster.local/ns/a/sa/"

/* ---- certificates ---------------------------------------------------------------------------- */

typedef struct pki {
    char dir[64];
    wf_ca *ca;
    mbedtls_pk_context key; /* the CA's key, for hand-made certificates */
    mbedtls_x509_crt crt;
} pki;

typedef struct ident {
    char *chain, *key;
} ident;

static int pki_init(pki *p)
{
    char *err = NULL;
    snprintf(p->dir, sizeof p->dir, "/tmp/wf-tls-test-XXXXXX");
    if (!mkdtemp(p->dir))
        return -1;
    mbedtls_pk_init(&p->key);
    mbedtls_x509_crt_init(&p->crt);
    if (wf_ca_load_or_create(p->dir, NULL, &p->ca, &err) != 0) {
        fprintf(stderr, "ca: %s\n", err);
        free(err);
        return -1;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/ca-key.pem", p->dir);
    if (mbedtls_pk_parse_keyfile(&p->key, path, NULL) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/ca-cert.pem", p->dir);
    return mbedtls_x509_crt_parse_file(&p->crt, path) == 0 ? 0 : -1;
}

static void pki_free(pki *p)
{
    char cmd[128];
    wf_ca_free(p->ca);
    mbedtls_pk_free(&p->key);
    mbedtls_x509_crt_free(&p->crt);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", p->dir);
}

static void ident_free(ident *i)
{
    free(i->chain);
    free(i->key);
    i->chain = i->key = NULL;
}

/* A SPIFFE identity signed by the CA core (chain: leaf + root). */
static ident issue(pki *p, const char *spiffe)
{
    ident id = {0};
    char *err = NULL, *csr = NULL, **chain = NULL;
    size_t n = 0;
    if (wf_ca_make_key_csr(&id.key, &csr, &err) != 0 ||
        wf_ca_sign_csr(p->ca, csr, spiffe, 3600, &chain, &n, &err) != 0) {
        fprintf(stderr, "issue %s: %s\n", spiffe, err);
        free(err);
        free(csr);
        return id;
    }
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(chain[i]);
    id.chain = calloc(1, len);
    for (size_t i = 0; i < n; i++)
        strcat(id.chain, chain[i]);
    wf_ca_chain_free(chain, n);
    free(csr);
    return id;
}

static void fmt_time(time_t t, char *buf)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 16, "%Y%m%d%H%M%S", &tm);
}

static int rng(void *ctx, unsigned char *out, size_t len)
{
    static mbedtls_entropy_context ent;
    static mbedtls_ctr_drbg_context drbg;
    static int seeded;
    if (!seeded) {
        mbedtls_entropy_init(&ent);
        mbedtls_ctr_drbg_init(&drbg);
        if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, NULL, 0) != 0)
            return -1;
        seeded = 1;
    }
    return mbedtls_ctr_drbg_random(&drbg, out, len);
}

/*
 * A hand-made leaf (with a key of its own) for what the CA core will not
 * issue: any validity window, DNS SANs, no SAN.  uri and dns may be NULL.
 */
static ident issue_custom(pki *p, const char *uri, const char *dns, time_t nb, time_t na)
{
    static int serial_n = 1000;
    static const unsigned char eku[] = {0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05,
                                        0x05, 0x07, 0x03, 0x01, 0x06, 0x08, 0x2b, 0x06,
                                        0x01, 0x05, 0x05, 0x07, 0x03, 0x02};
    ident id = {0};
    char *err = NULL, *csr = NULL, issuer[512], nbs[16], nas[16];
    unsigned char san[1024], pem[4096];
    if (wf_ca_make_key_csr(&id.key, &csr, &err) != 0) {
        free(err);
        return id;
    }
    free(csr);
    mbedtls_pk_context leaf;
    mbedtls_pk_init(&leaf);
    mbedtls_x509write_cert w;
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    mbedtls_mpi_lset(&serial, serial_n++);
    unsigned char *q = san + sizeof san;
    size_t len = 0;
    if (dns) {
        len += mbedtls_asn1_write_raw_buffer(&q, san, (const unsigned char *)dns, strlen(dns));
        len += mbedtls_asn1_write_len(&q, san, strlen(dns));
        len += mbedtls_asn1_write_tag(&q, san, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2);
    }
    if (uri) {
        len += mbedtls_asn1_write_raw_buffer(&q, san, (const unsigned char *)uri, strlen(uri));
        len += mbedtls_asn1_write_len(&q, san, strlen(uri));
        len += mbedtls_asn1_write_tag(&q, san, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6);
    }
    len += mbedtls_asn1_write_len(&q, san, len);
    len += mbedtls_asn1_write_tag(&q, san, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
    mbedtls_x509_dn_gets(issuer, sizeof issuer, &p->crt.subject);
    fmt_time(nb, nbs);
    fmt_time(na, nas);
    int ret =
        mbedtls_pk_parse_key(&leaf, (const unsigned char *)id.key, strlen(id.key) + 1, NULL, 0);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &leaf);
    mbedtls_x509write_crt_set_issuer_key(&w, &p->key);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_serial(&w, &serial);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_validity(&w, nbs, nas);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_subject_name(&w, dns ? "CN=not-the-name" : "O=weft");
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_issuer_name(&w, issuer);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_basic_constraints(&w, 0, -1);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
                                                  0, eku, sizeof eku);
    if (ret == 0 && (uri || dns))
        ret = mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
                                                  q, len);
    if (ret == 0)
        ret = mbedtls_x509write_crt_pem(&w, pem, sizeof pem, rng, NULL);
    if (ret == 0) {
        const char *root = wf_ca_root_pem(p->ca);
        id.chain = malloc(strlen((char *)pem) + strlen(root) + 1);
        strcpy(id.chain, (char *)pem);
        strcat(id.chain, root);
    } else {
        fprintf(stderr, "issue_custom: mbedTLS error -0x%x\n", (unsigned)-ret);
    }
    mbedtls_pk_free(&leaf);
    mbedtls_x509write_crt_free(&w);
    mbedtls_mpi_free(&serial);
    return id;
}

static const char *h2_only[] = {"h2", NULL};
static const char *h2_h1[] = {"h2", "http/1.1", NULL};

static wf_tls_ctx *server_ctx(pki *p, const ident *id, wf_tls_peer_cert pc, int mesh)
{
    wf_tls_ctx_opts o = {.server = 1,
                         .cert_chain_pem = id->chain,
                         .key_pem = id->key,
                         .roots_pem = wf_ca_root_pem(p->ca),
                         .peer_cert = pc,
                         .alpn = h2_h1,
                         .mesh = mesh};
    wf_tls_ctx *c = NULL;
    char *err = NULL;
    if (wf_tls_ctx_new(&o, &c, &err) != 0)
        fprintf(stderr, "server ctx: %s\n", err);
    free(err);
    return c;
}

/* id NULL: a client without a certificate. */
static wf_tls_ctx *client_ctx(pki *p, const ident *id, int mesh)
{
    wf_tls_ctx_opts o = {.cert_chain_pem = id ? id->chain : NULL,
                         .key_pem = id ? id->key : NULL,
                         .roots_pem = wf_ca_root_pem(p->ca),
                         .alpn = h2_only,
                         .mesh = mesh};
    wf_tls_ctx *c = NULL;
    char *err = NULL;
    if (wf_tls_ctx_new(&o, &c, &err) != 0)
        fprintf(stderr, "client ctx: %s\n", err);
    free(err);
    return c;
}

/* ---- two connections back to back ----------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const char *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

typedef struct end {
    wf_tls_conn *c;
    buf out; /* ciphertext sent, not yet fed to the other end */
    buf rx;  /* plaintext delivered */
    int sends, delivers;
    int pause; /* deliver returns 1 after each record while set */
    int rc;    /* the last non-zero feed result */
} end;

static int send_cb(void *ud, const char *d, size_t n)
{
    end *e = ud;
    e->sends++;
    buf_add(&e->out, d, n);
    return 0;
}

static int deliver_cb(void *ud, const char *d, size_t n)
{
    end *e = ud;
    e->delivers++;
    buf_add(&e->rx, d, n);
    return e->pause ? 1 : 0;
}

static void end_free(end *e)
{
    if (getenv("WF_TEST_VERBOSE") && e->c && *wf_tls_error(e->c))
        fprintf(stderr, "  [%s] %s\n", e->c && wf_tls_established(e->c) ? "open" : "failed",
                wf_tls_error(e->c));
    wf_tls_conn_free(e->c);
    free(e->out.p);
    free(e->rx.p);
    memset(e, 0, sizeof *e);
}

/* Moves what from sent to its peer; 1 when something moved. */
static int move(end *from, end *to)
{
    if (!from->out.len)
        return 0;
    buf b = from->out;
    memset(&from->out, 0, sizeof from->out);
    int rc = to->c ? wf_tls_feed(to->c, b.p, b.len, deliver_cb, to) : 0;
    if (rc)
        to->rc = rc;
    free(b.p);
    return 1;
}

static void pump(end *a, end *b)
{
    for (int i = 0; i < 10000; i++)
        if (!move(a, b) && !move(b, a))
            return;
}

static void conn_pair(end *cl, end *sv, wf_tls_ctx *cctx, wf_tls_ctx *sctx,
                      const wf_tls_conn_opts *copts)
{
    char *err = NULL;
    memset(cl, 0, sizeof *cl);
    memset(sv, 0, sizeof *sv);
    wf_tls_conn_opts co = copts ? *copts : (wf_tls_conn_opts){0};
    co.send = send_cb;
    co.ud = cl;
    wf_tls_conn_opts so = {.send = send_cb, .ud = sv};
    cl->c = wf_tls_conn_new(cctx, &co, &err);
    if (!cl->c)
        fprintf(stderr, "client conn: %s\n", err);
    free(err);
    err = NULL;
    sv->c = wf_tls_conn_new(sctx, &so, &err);
    if (!sv->c)
        fprintf(stderr, "server conn: %s\n", err);
    free(err);
}

/* Connects, handshakes, returns 0 when both ends are established. */
static int connect_pair(end *cl, end *sv, wf_tls_ctx *cctx, wf_tls_ctx *sctx,
                        const wf_tls_conn_opts *copts)
{
    conn_pair(cl, sv, cctx, sctx, copts);
    if (!cl->c || !sv->c)
        return -1;
    if (wf_tls_start(cl->c) != 0)
        return -1;
    pump(cl, sv);
    return wf_tls_established(cl->c) && wf_tls_established(sv->c) ? 0 : -1;
}

static int starts_with(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

#define CHECK_PREFIX(s, prefix)                                                                    \
    do {                                                                                           \
        const char *s_ = (s);                                                                      \
        if (!starts_with(s_, prefix)) {                                                            \
            fprintf(stderr, "%s:%d: expected \"%s...\", got \"%s\"\n", __FILE__, __LINE__, prefix, \
                    s_ ? s_ : "(null)");                                                           \
            test_current_failed = 1;                                                               \
        }                                                                                          \
    } while (0)

/* ---- tests ----------------------------------------------------------------------------------- */

static pki P, Q; /* two unrelated roots */
static ident X, Y, C;

TEST(mtls_handshake)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    const char *ids[] = {TD "y", TD "x"};
    wf_tls_conn_opts o = {.peer_ids = ids, .n_peer_ids = 2};
    end cl, sv;
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    CHECK_STR(wf_tls_peer_id(cl.c), TD "x");
    CHECK_STR(wf_tls_peer_id(sv.c), TD "c");
    CHECK_STR(wf_tls_alpn(cl.c), "h2");
    CHECK_STR(wf_tls_alpn(sv.c), "h2");
    CHECK(strstr(wf_tls_cipher(cl.c), "ECDHE-ECDSA") != NULL);
    CHECK_INT(wf_tls_resumed(cl.c), 0);
    CHECK_INT(wf_tls_resumed(sv.c), 0);
    CHECK_STR(wf_tls_error(cl.c), "");
    /* The client's first flight is one send, and so is the server's. */
    CHECK(cl.sends <= 3);
    CHECK(sv.sends <= 3);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

static void fill_pattern(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((i * 31 + seed) & 0xff);
}

TEST(data_both_ways)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    end cl, sv;
    CHECK_INT(connect_pair(&cl, &sv, k, s, NULL), 0);
    size_t big = 1 << 20;
    char *a = malloc(big), *b = malloc(big);
    fill_pattern(a, big, 1);
    fill_pattern(b, big, 7);
    uv_buf_t ba = uv_buf_init(a, (unsigned)big), bb = uv_buf_init(b, (unsigned)big);
    CHECK_INT(wf_tls_write(cl.c, &ba, 1), 0);
    CHECK_INT(wf_tls_write(sv.c, &bb, 1), 0);
    pump(&cl, &sv);
    CHECK_INT(sv.rx.len, big);
    CHECK(sv.rx.len == big && memcmp(sv.rx.p, a, big) == 0);
    CHECK_INT(cl.rx.len, big);
    CHECK(cl.rx.len == big && memcmp(cl.rx.p, b, big) == 0);

    /* Many small buffers in one write: one send, few records. */
    sv.rx.len = 0;
    uv_buf_t small[1000];
    char text[1000][12];
    for (int i = 0; i < 1000; i++) {
        snprintf(text[i], sizeof text[i], "%05d;", i);
        small[i] = uv_buf_init(text[i], 6);
    }
    cl.sends = 0;
    CHECK_INT(wf_tls_write(cl.c, small, 1000), 0);
    CHECK_INT(cl.sends, 1);
    CHECK(cl.out.len < 6000 + 2 * 64); /* one record's overhead, not a thousand */
    /* And many small writes. */
    for (int i = 0; i < 200; i++)
        CHECK_INT(wf_tls_write(cl.c, &small[i], 1), 0);
    pump(&cl, &sv);
    CHECK_INT(sv.rx.len, 6000 + 1200);
    CHECK(sv.rx.len >= 12 && memcmp(sv.rx.p, "00000;00001;", 12) == 0);
    CHECK(sv.rx.len == 7200 && memcmp(sv.rx.p + 6000, "00000;00001;", 12) == 0);
    CHECK(sv.rx.len == 7200 && memcmp(sv.rx.p + 5994, "00999;", 6) == 0);

    /* A 64 KiB write of mixed sizes is still one send. */
    cl.sends = 0;
    uv_buf_t mixed[3] = {uv_buf_init(a, 100), uv_buf_init(a + 100, 40000),
                         uv_buf_init(a + 40100, 25436)};
    CHECK_INT(wf_tls_write(cl.c, mixed, 3), 0);
    CHECK_INT(cl.sends, 1);
    sv.rx.len = 0;
    pump(&cl, &sv);
    CHECK(sv.rx.len == 65536 && memcmp(sv.rx.p, a, 65536) == 0);
    free(a);
    free(b);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(write_before_handshake)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    end cl, sv;
    conn_pair(&cl, &sv, k, s, NULL);
    uv_buf_t b = uv_buf_init("hello", 5);
    CHECK_INT(wf_tls_write(cl.c, &b, 1), 0);
    CHECK_INT(cl.sends, 0);
    CHECK_INT(wf_tls_start(cl.c), 0);
    pump(&cl, &sv);
    CHECK(sv.rx.len == 5 && memcmp(sv.rx.p, "hello", 5) == 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(refuses_other_root)
{
    ident other = issue(&Q, TD "x");
    wf_tls_ctx *s = server_ctx(&Q, &other, WF_TLS_PEER_NONE, 1), *k = client_ctx(&P, &C, 1);
    end cl, sv;
    CHECK(connect_pair(&cl, &sv, k, s, NULL) != 0);
    CHECK_PREFIX(wf_tls_error(cl.c), "peer certificate is not signed by a trusted root");
    CHECK(cl.rc < 0 && cl.rc != WF_TLS_EOF);
    CHECK(sv.rc < 0);
    CHECK(strstr(wf_tls_error(sv.c), "alert") != NULL);
    CHECK_INT(wf_tls_established(cl.c), 0);
    uv_buf_t b = uv_buf_init("x", 1);
    CHECK(wf_tls_write(cl.c, &b, 1) < 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
    ident_free(&other);
}

TEST(refuses_expired)
{
    time_t now = time(NULL);
    ident old = issue_custom(&P, TD "x", NULL, now - 2 * 86400, now - 86400);
    wf_tls_ctx *s = server_ctx(&P, &old, WF_TLS_PEER_NONE, 1), *k = client_ctx(&P, &C, 1);
    end cl, sv;
    CHECK(connect_pair(&cl, &sv, k, s, NULL) != 0);
    CHECK_PREFIX(wf_tls_error(cl.c), "peer certificate has expired");
    CHECK(strstr(wf_tls_error(cl.c), TD "x") != NULL);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
    /* The other way: a server refuses an expired client certificate. */
    s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1);
    k = client_ctx(&P, &old, 1);
    CHECK(connect_pair(&cl, &sv, k, s, NULL) != 0);
    CHECK_PREFIX(wf_tls_error(sv.c), "peer certificate has expired");
    CHECK(cl.rc < 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
    ident_free(&old);
}

TEST(refuses_wrong_identity)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    const char *ids[] = {TD "y", "y.example.com"};
    wf_tls_conn_opts o = {.peer_ids = ids, .n_peer_ids = 2};
    end cl, sv;
    CHECK(connect_pair(&cl, &sv, k, s, &o) != 0);
    CHECK_STR(wf_tls_error(cl.c), "server identity " TD "x is not one of: " TD "y, y.example.com");
    CHECK(cl.rc < 0);
    CHECK(sv.rc < 0); /* it got bad_certificate */
    CHECK(strstr(wf_tls_error(sv.c), "bad_certificate") != NULL);
    CHECK(wf_tls_peer_id(cl.c) == NULL);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(required_client_cert_missing)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, NULL, 1);
    end cl, sv;
    CHECK(connect_pair(&cl, &sv, k, s, NULL) != 0);
    CHECK_STR(wf_tls_error(sv.c), "client sent no certificate, but this server requires one "
                                  "(mTLS)");
    CHECK(cl.rc < 0);
    CHECK_PREFIX(wf_tls_error(cl.c), "handshake failed: the peer sent the fatal alert");
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(optional_client_cert)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_OPTIONAL, 1);
    wf_tls_ctx *with = client_ctx(&P, &C, 1), *without = client_ctx(&P, NULL, 1);
    end cl, sv;
    CHECK_INT(connect_pair(&cl, &sv, with, s, NULL), 0);
    CHECK_STR(wf_tls_peer_id(sv.c), TD "c");
    end_free(&cl);
    end_free(&sv);
    CHECK_INT(connect_pair(&cl, &sv, without, s, NULL), 0);
    CHECK(wf_tls_peer_id(sv.c) == NULL);
    CHECK_STR(wf_tls_peer_id(cl.c), TD "x");
    end_free(&cl);
    end_free(&sv);
    /* Optional still means valid when sent. */
    ident other = issue(&Q, TD "c");
    wf_tls_ctx_opts o = {.cert_chain_pem = other.chain,
                         .key_pem = other.key,
                         .roots_pem = wf_ca_root_pem(P.ca),
                         .mesh = 1};
    wf_tls_ctx *foreign = NULL;
    CHECK_INT(wf_tls_ctx_new(&o, &foreign, NULL), 0);
    CHECK(connect_pair(&cl, &sv, foreign, s, NULL) != 0);
    CHECK_PREFIX(wf_tls_error(sv.c), "peer certificate is not signed by a trusted root");
    CHECK(cl.rc < 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(foreign);
    ident_free(&other);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(with);
    wf_tls_ctx_unref(without);
}

TEST(resumption)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    wf_tls_session *sess = NULL;
    const char *ids[] = {TD "x"};
    wf_tls_conn_opts o = {.session = &sess, .peer_ids = ids, .n_peer_ids = 1};
    end cl, sv;
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    CHECK_INT(wf_tls_resumed(cl.c), 0);
    CHECK(sess != NULL);
    end_free(&cl);
    end_free(&sv);

    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    CHECK_INT(wf_tls_resumed(cl.c), 1);
    CHECK_INT(wf_tls_resumed(sv.c), 1);
    CHECK_STR(wf_tls_peer_id(sv.c), TD "c");
    CHECK_STR(wf_tls_peer_id(cl.c), TD "x");
    CHECK_STR(wf_tls_alpn(sv.c), "h2");
    uv_buf_t b = uv_buf_init("after resumption", 16);
    CHECK_INT(wf_tls_write(sv.c, &b, 1), 0);
    pump(&cl, &sv);
    CHECK(cl.rx.len == 16 && memcmp(cl.rx.p, "after resumption", 16) == 0);
    end_free(&cl);
    end_free(&sv);

    /* A rotated certificate on a new context object: tickets are process-wide. */
    ident x2 = issue(&P, TD "x");
    wf_tls_ctx *s2 = server_ctx(&P, &x2, WF_TLS_PEER_REQUIRED, 1);
    CHECK_INT(connect_pair(&cl, &sv, k, s2, &o), 0);
    CHECK_INT(wf_tls_resumed(cl.c), 1);
    CHECK_INT(wf_tls_resumed(sv.c), 1);
    CHECK_STR(wf_tls_peer_id(sv.c), TD "c");
    end_free(&cl);
    end_free(&sv);

    /* But not on a listener with another client-certificate policy, nor
     * another root: those fall back to a full handshake. */
    wf_tls_ctx *s3 = server_ctx(&P, &X, WF_TLS_PEER_OPTIONAL, 1);
    CHECK_INT(connect_pair(&cl, &sv, k, s3, &o), 0);
    CHECK_INT(wf_tls_resumed(sv.c), 0);
    CHECK_INT(wf_tls_resumed(cl.c), 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s3);

    /* A session from a non-mTLS listener never resumes on the mTLS one. */
    wf_tls_ctx *open = server_ctx(&P, &X, WF_TLS_PEER_NONE, 1);
    wf_tls_ctx *anon = client_ctx(&P, NULL, 1);
    wf_tls_session *s_anon = NULL;
    wf_tls_conn_opts oa = {.session = &s_anon};
    CHECK_INT(connect_pair(&cl, &sv, anon, open, &oa), 0);
    end_free(&cl);
    end_free(&sv);
    CHECK(s_anon != NULL);
    CHECK(connect_pair(&cl, &sv, anon, s, &oa) != 0);
    CHECK_PREFIX(wf_tls_error(sv.c), "client sent no certificate");
    end_free(&cl);
    end_free(&sv);
    wf_tls_session_free(s_anon);
    wf_tls_ctx_unref(open);
    wf_tls_ctx_unref(anon);

    wf_tls_session_free(sess);
    wf_tls_ctx_unref(s2);
    ident_free(&x2);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(close_notify)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    end cl, sv;
    CHECK_INT(connect_pair(&cl, &sv, k, s, NULL), 0);
    uv_buf_t b = uv_buf_init("bye", 3);
    CHECK_INT(wf_tls_write(cl.c, &b, 1), 0);
    CHECK_INT(wf_tls_close_notify(cl.c), 0);
    pump(&cl, &sv);
    CHECK(sv.rx.len == 3 && memcmp(sv.rx.p, "bye", 3) == 0);
    CHECK_INT(sv.rc, WF_TLS_EOF);
    CHECK_INT(wf_tls_feed(sv.c, NULL, 0, deliver_cb, &sv), WF_TLS_EOF);
    /* A half-closed peer still gets our answer. */
    CHECK_INT(wf_tls_write(sv.c, &b, 1), 0);
    pump(&cl, &sv);
    CHECK(cl.rx.len == 3);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(pause_and_drain)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    end cl, sv;
    CHECK_INT(connect_pair(&cl, &sv, k, s, NULL), 0);
    /* Three records in one go. */
    size_t n = 3 * 16384;
    char *a = malloc(n);
    fill_pattern(a, n, 3);
    uv_buf_t b = uv_buf_init(a, (unsigned)n);
    CHECK_INT(wf_tls_write(sv.c, &b, 1), 0);
    cl.pause = 1;
    pump(&cl, &sv);
    CHECK_INT(cl.delivers, 1);
    CHECK_INT(cl.rx.len, 16384);
    CHECK_INT(wf_tls_pending(cl.c), 1);
    CHECK_INT(wf_tls_feed(cl.c, NULL, 0, deliver_cb, &cl), 0);
    CHECK_INT(cl.delivers, 2);
    CHECK_INT(wf_tls_pending(cl.c), 1);
    /* More ciphertext arriving while paused queues behind the rest. */
    uv_buf_t m = uv_buf_init("more", 4);
    CHECK_INT(wf_tls_write(sv.c, &m, 1), 0);
    cl.pause = 0;
    pump(&cl, &sv);
    CHECK_INT(cl.rx.len, n + 4);
    CHECK(cl.rx.len == n + 4 && memcmp(cl.rx.p, a, n) == 0 && memcmp(cl.rx.p + n, "more", 4) == 0);
    CHECK_INT(wf_tls_pending(cl.c), 0);
    free(a);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(byte_by_byte)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, &C, 1);
    end cl, sv;
    conn_pair(&cl, &sv, k, s, NULL);
    CHECK_INT(wf_tls_start(cl.c), 0);
    uv_buf_t b = uv_buf_init("ping", 4);
    CHECK_INT(wf_tls_write(cl.c, &b, 1), 0);
    /* Feed every byte on its own: the leftover and partial-record paths. */
    for (int round = 0; round < 50; round++) {
        int moved = 0;
        end *pairs[2][2] = {{&cl, &sv}, {&sv, &cl}};
        for (int d = 0; d < 2; d++) {
            end *f = pairs[d][0], *t = pairs[d][1];
            buf x = f->out;
            memset(&f->out, 0, sizeof f->out);
            for (size_t i = 0; i < x.len; i++)
                CHECK_INT(wf_tls_feed(t->c, x.p + i, 1, deliver_cb, t), 0);
            moved |= x.len > 0;
            free(x.p);
        }
        if (!moved)
            break;
    }
    CHECK(wf_tls_established(sv.c));
    CHECK(sv.rx.len == 4 && memcmp(sv.rx.p, "ping", 4) == 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(names)
{
    time_t now = time(NULL);
    ident d = issue_custom(&P, NULL, "istiod.istio-system.svc", now - 60, now + 3600);
    ident w = issue_custom(&P, NULL, "*.example.com", now - 60, now + 3600);
    wf_tls_ctx *s = server_ctx(&P, &d, WF_TLS_PEER_NONE, 1), *k = client_ctx(&P, NULL, 1);
    end cl, sv;
    wf_tls_conn_opts o = {.verify_name = "istiod.istio-system.svc"};
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    CHECK(wf_tls_peer_id(cl.c) == NULL); /* no URI SAN */
    end_free(&cl);
    end_free(&sv);
    o.verify_name = "other.istio-system.svc";
    CHECK(connect_pair(&cl, &sv, k, s, &o) != 0);
    CHECK_PREFIX(wf_tls_error(cl.c),
                 "server certificate does not carry the name other.istio-system.svc");
    end_free(&cl);
    end_free(&sv);
    /* SNI alone does not check the name. */
    o = (wf_tls_conn_opts){.sni = "somewhere.else"};
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    end_free(&cl);
    end_free(&sv);
    /* SNI and a different name to verify: checked here, not by mbedTLS. */
    o = (wf_tls_conn_opts){.sni = "somewhere.else", .verify_name = "istiod.istio-system.svc"};
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    end_free(&cl);
    end_free(&sv);
    o.verify_name = "ISTIOD.istio-system.svc";
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    end_free(&cl);
    end_free(&sv);
    o.verify_name = "istiod";
    CHECK(connect_pair(&cl, &sv, k, s, &o) != 0);
    CHECK_PREFIX(wf_tls_error(cl.c), "server certificate does not carry the name istiod");
    end_free(&cl);
    end_free(&sv);
    /* A DNS peer id. */
    const char *ids[] = {"istiod.istio-system.svc"};
    o = (wf_tls_conn_opts){.peer_ids = ids, .n_peer_ids = 1};
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    /* Wildcards: one label only. */
    s = server_ctx(&P, &w, WF_TLS_PEER_NONE, 1);
    o = (wf_tls_conn_opts){.sni = "x", .verify_name = "api.example.com"};
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    end_free(&cl);
    end_free(&sv);
    o.verify_name = "a.b.example.com";
    CHECK(connect_pair(&cl, &sv, k, s, &o) != 0);
    end_free(&cl);
    end_free(&sv);
    o = (wf_tls_conn_opts){.verify_name = "api.example.com"};
    CHECK_INT(connect_pair(&cl, &sv, k, s, &o), 0);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
    ident_free(&d);
    ident_free(&w);
}

TEST(default_profile_and_no_verify)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_NONE, 0);
    wf_tls_ctx_opts o = {0}; /* no roots: insecureSkipVerify */
    wf_tls_ctx *k = NULL;
    CHECK_INT(wf_tls_ctx_new(&o, &k, NULL), 0);
    end cl, sv;
    CHECK_INT(connect_pair(&cl, &sv, k, s, NULL), 0);
    CHECK(wf_tls_alpn(cl.c) == NULL);
    CHECK(wf_tls_peer_id(cl.c) == NULL); /* not verified, so no identity */
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(k);
    /* A mesh client against a default-profile server still agrees. */
    k = client_ctx(&P, NULL, 1);
    CHECK_INT(connect_pair(&cl, &sv, k, s, NULL), 0);
    CHECK_STR(wf_tls_alpn(cl.c), "h2");
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(k);
    wf_tls_ctx_unref(s);
}

TEST(ctx_errors)
{
    char *err = NULL;
    wf_tls_ctx *c = NULL;
    wf_tls_ctx_opts o = {.server = 1};
    CHECK(wf_tls_ctx_new(&o, &c, &err) != 0);
    CHECK_STR(err, "a TLS server needs a certificate chain and a key");
    free(err);
    err = NULL;
    o = (wf_tls_ctx_opts){.server = 1, .cert_chain_pem = X.chain, .key_pem = C.key};
    CHECK(wf_tls_ctx_new(&o, &c, &err) != 0);
    CHECK_PREFIX(err, "TLS private key does not belong");
    free(err);
    err = NULL;
    o = (wf_tls_ctx_opts){.server = 1, .cert_chain_pem = "garbage", .key_pem = C.key};
    CHECK(wf_tls_ctx_new(&o, &c, &err) != 0);
    CHECK_PREFIX(err, "TLS certificate chain is not valid PEM");
    free(err);
    err = NULL;
    o = (wf_tls_ctx_opts){.server = 1,
                          .cert_chain_pem = X.chain,
                          .key_pem = X.key,
                          .peer_cert = WF_TLS_PEER_REQUIRED};
    CHECK(wf_tls_ctx_new(&o, &c, &err) != 0);
    CHECK_PREFIX(err, "a TLS server that asks for client certificates needs trusted roots");
    free(err);
    CHECK(c == NULL);
    wf_tls_ctx_unref(NULL);
    wf_tls_conn_free(NULL);
    wf_tls_session_free(NULL);
}

TEST(ctx_info)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_REQUIRED, 1), *k = client_ctx(&P, NULL, 1);
    wf_tls_cert_info i;
    CHECK_INT(wf_tls_ctx_info(s, &i), 0);
    CHECK_STR(i.identity, TD "x");
    CHECK(strlen(i.serial) > 0 && strspn(i.serial, "0123456789abcdef") == strlen(i.serial));
    time_t now = time(NULL);
    CHECK(i.not_before <= now && now - i.not_before < 600);
    CHECK(i.not_after > now + 3000 && i.not_after <= now + 3600 + 5);
    /* The root's hash, computed here from its DER. */
    const mbedtls_x509_crt *root = wf_ca_root(P.ca);
    unsigned char h[32];
    char hex[65];
    mbedtls_sha256_ret(root->raw.p, root->raw.len, h, 0);
    for (int j = 0; j < 32; j++)
        snprintf(hex + 2 * j, 3, "%02x", h[j]);
    CHECK_STR(i.root_sha256, hex);
    /* The serial matches mbedTLS's own rendering (colons and case aside). */
    mbedtls_x509_crt leaf;
    mbedtls_x509_crt_init(&leaf);
    mbedtls_x509_crt_parse(&leaf, (const unsigned char *)X.chain, strlen(X.chain) + 1);
    char ser[128], flat[128];
    mbedtls_x509_serial_gets(ser, sizeof ser, &leaf.serial);
    size_t o = 0;
    for (char *p = ser; *p && o + 1 < sizeof flat; p++)
        if (*p != ':')
            flat[o++] = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
    flat[o] = 0;
    const char *fp = flat;
    while (fp[0] == '0' && fp[1] == '0' && fp[2]) /* leading zero bytes */
        fp += 2;
    CHECK_STR(i.serial, fp);
    mbedtls_x509_crt_free(&leaf);
    /* A client without a certificate has no info, but its root is known. */
    CHECK_INT(wf_tls_ctx_info(k, &i), -1);
    CHECK_STR(i.root_sha256, hex);
    /* DNS identity when there is no URI SAN. */
    ident d = issue_custom(&P, NULL, "istiod.istio-system.svc", now - 60, now + 60);
    wf_tls_ctx *ds = server_ctx(&P, &d, WF_TLS_PEER_NONE, 1);
    CHECK_INT(wf_tls_ctx_info(ds, &i), 0);
    CHECK_STR(i.identity, "istiod.istio-system.svc");
    wf_tls_ctx_unref(ds);
    ident_free(&d);
    wf_tls_ctx_unref(s);
    wf_tls_ctx_unref(k);
}

TEST(sniff)
{
    CHECK_INT(wf_tls_sniff("", 0), -1);
    CHECK_INT(wf_tls_sniff("\x16", 1), -1);
    CHECK_INT(wf_tls_sniff("\x16\x03", 2), -1);
    CHECK_INT(wf_tls_sniff("\x16\x03\x01\x02\x00", 5), 1);
    CHECK_INT(wf_tls_sniff("\x16\x03\x03", 3), 1);
    CHECK_INT(wf_tls_sniff("GET / HTTP/1.1\r\n", 16), 0);
    CHECK_INT(wf_tls_sniff("PRI * HTTP/2.0", 14), 0);
    CHECK_INT(wf_tls_sniff("\x16\x04", 2), 0);
    CHECK_INT(wf_tls_sniff("\x16\x03\x09", 3), 0);
    /* A real ClientHello. */
    wf_tls_ctx *k = client_ctx(&P, NULL, 1), *s = server_ctx(&P, &X, WF_TLS_PEER_NONE, 1);
    end cl, sv;
    conn_pair(&cl, &sv, k, s, NULL);
    CHECK_INT(wf_tls_start(cl.c), 0);
    CHECK(cl.out.len > 5);
    CHECK_INT(wf_tls_sniff(cl.out.p, cl.out.len), 1);
    end_free(&cl);
    end_free(&sv);
    wf_tls_ctx_unref(k);
    wf_tls_ctx_unref(s);
}

TEST(garbage_in)
{
    wf_tls_ctx *s = server_ctx(&P, &X, WF_TLS_PEER_NONE, 1);
    end sv = {0};
    wf_tls_conn_opts so = {.send = send_cb, .ud = &sv};
    sv.c = wf_tls_conn_new(s, &so, NULL);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(wf_tls_feed(sv.c, http, strlen(http), deliver_cb, &sv) < 0);
    CHECK_STR(wf_tls_error(sv.c), "handshake failed: the peer does not speak TLS (it sent "
                                  "\"GET / HTTP/1.1..\"); is it plaintext, or a port without TLS?");
    CHECK(wf_tls_feed(sv.c, http, strlen(http), deliver_cb, &sv) < 0);
    end_free(&sv);
    wf_tls_ctx_unref(s);
}

static int failing_send(void *ud, const char *d, size_t n)
{
    return -1;
}

TEST(send_failure)
{
    wf_tls_ctx *k = client_ctx(&P, NULL, 1);
    wf_tls_conn_opts o = {.send = failing_send};
    wf_tls_conn *c = wf_tls_conn_new(k, &o, NULL);
    CHECK(wf_tls_start(c) < 0);
    CHECK_PREFIX(wf_tls_error(c), "handshake failed: the transport could not send");
    wf_tls_conn_free(c);
    wf_tls_ctx_unref(k);
}

int main(void)
{
    if (pki_init(&P) != 0 || pki_init(&Q) != 0) {
        fprintf(stderr, "cannot make the test CAs\n");
        return 1;
    }
    X = issue(&P, TD "x");
    Y = issue(&P, TD "y");
    C = issue(&P, TD "c");
    RUN(mtls_handshake);
    RUN(data_both_ways);
    RUN(write_before_handshake);
    RUN(refuses_other_root);
    RUN(refuses_expired);
    RUN(refuses_wrong_identity);
    RUN(required_client_cert_missing);
    RUN(optional_client_cert);
    RUN(resumption);
    RUN(close_notify);
    RUN(pause_and_drain);
    RUN(byte_by_byte);
    RUN(names);
    RUN(default_profile_and_no_verify);
    RUN(ctx_errors);
    RUN(ctx_info);
    RUN(sniff);
    RUN(garbage_in);
    RUN(send_failure);
    ident_free(&X);
    ident_free(&Y);
    ident_free(&C);
    pki_free(&P);
    pki_free(&Q);
    return TEST_SUMMARY();
}
