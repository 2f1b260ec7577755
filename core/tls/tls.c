/*
 * tls.c: TLS 1.2 on mbedTLS 2.28 with a memory transport; see tls.h.
 *
 * The pieces:
 *   - one process-wide RNG (ctr_drbg, locked by mbedTLS under THREADING) and
 *     one session-ticket key context, made once (pthread_once), so a ticket
 *     issued by one worker or before a certificate rotation resumes on any
 *     other;
 *   - tickets are bound to a "class" (the server's trusted roots, client
 *     certificate policy and profile): a 16-byte HMAC over the class and the
 *     ticket is appended to every ticket and checked before mbedTLS decrypts
 *     it, so a session made on a listener that asked for no certificate, or
 *     trusted other roots, never resumes on an mTLS listener;
 *   - the BIO: recv hands mbedTLS the caller's borrowed ciphertext (or what
 *     an earlier call left over, copied), send goes to the owner's send
 *     function, either directly or gathered in a per-thread buffer so that
 *     one wf_tls_write or one handshake flight is one send call;
 *   - plaintext is decrypted into a per-thread buffer and handed to the
 *     owner's deliver callback, record by record.
 *
 * Reentrancy: the per-thread buffers are claimed with flags, so a send or
 * deliver callback that drives another connection on the same thread falls
 * back to direct sends and a heap buffer instead of clobbering them.  A
 * deliver callback must not free the connection that called it.
 */
#define _GNU_SOURCE /* vasprintf, timegm, strcasecmp */
#include "tls/tls.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "ca/ca.h"
#include "util/arena.h"
#include "util/log.h"

#define PENDING_MAX (1u << 20)          /* plaintext written before the handshake is done */
#define LEFTOVER_MAX (8u << 20)         /* ciphertext fed while the owner has paused */
#define OUT_SEND_MAX (64u << 10)        /* one send call per write up to this much plaintext */
#define OUT_CAP (OUT_SEND_MAX + 8 * 64) /* plus record overhead */
#define PT_CAP (MBEDTLS_SSL_IN_CONTENT_LEN + 256) /* one whole record's plaintext */
#define REC MBEDTLS_SSL_OUT_CONTENT_LEN           /* plaintext per record */
#define TICKET_TAG 16
#define TICKET_LIFETIME (24 * 3600)

/* ---- process-wide state ---------------------------------------------------------------------- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_ret; /* mbedTLS code of a failed initialisation */
static mbedtls_entropy_context g_entropy;
static mbedtls_ctr_drbg_context g_drbg;
static mbedtls_ssl_ticket_context g_ticket;
static unsigned char g_tag_key[32]; /* binds tickets to a class */

static void global_init(void)
{
    static const char pers[] = "weft-tls";
    mbedtls_entropy_init(&g_entropy);
    mbedtls_ctr_drbg_init(&g_drbg);
    mbedtls_ssl_ticket_init(&g_ticket);
    int ret = mbedtls_ctr_drbg_seed(&g_drbg, mbedtls_entropy_func, &g_entropy,
                                    (const unsigned char *)pers, sizeof pers - 1);
    if (ret == 0)
        ret = mbedtls_ctr_drbg_random(&g_drbg, g_tag_key, sizeof g_tag_key);
    if (ret == 0)
        ret = mbedtls_ssl_ticket_setup(&g_ticket, mbedtls_ctr_drbg_random, &g_drbg,
                                       MBEDTLS_CIPHER_AES_256_GCM, TICKET_LIFETIME);
    g_init_ret = ret;
}

/* Per-thread scratch: see the file comment.  The buffers are made on a
 * thread's first use (wf_thread_buffer): threads that never speak TLS
 * hold none. */
static __thread struct {
    void *pt; /* PT_CAP: decrypted plaintext being delivered */
    int pt_busy;
    void *out; /* OUT_CAP: ciphertext gathered for one send */
    size_t out_len;
    wf_tls_conn *owner; /* whose ciphertext out holds, NULL when free */
    int sending;        /* out is being handed to a send function */
    void *scratch;      /* REC: small buffers coalesced into one record */
    int scratch_busy;
} tl;

/* ---- types ----------------------------------------------------------------------------------- */

struct wf_tls_ctx {
    atomic_int refs;
    int server, mesh, has_cert, has_roots;
    wf_tls_peer_cert peer_cert;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt chain, roots;
    mbedtls_pk_context key;
    char **alpn;               /* NULL-terminated copies, as mbedTLS keeps the pointer */
    unsigned char tag_key[32]; /* HMAC key for this context's ticket class */
};

enum { ST_HANDSHAKE, ST_OPEN, ST_EOF, ST_FAILED };
enum { NAME_NONE, NAME_MBEDTLS, NAME_SNI_ONLY, NAME_OWN };

struct wf_tls_conn {
    mbedtls_ssl_context ssl;
    wf_tls_ctx *ctx;
    int (*send)(void *ud, const char *data, size_t len);
    void *ud;
    int state, full_handshake, send_failed, name_mode, got_input;
    /* input: borrowed during wf_tls_feed, or owned leftovers */
    const unsigned char *in;
    size_t in_len;
    unsigned char *left;
    size_t left_off, left_len, left_cap;
    /* plaintext written before the handshake completed */
    char *pend;
    size_t pend_len, pend_cap;
    char *verify_name;
    char **peer_ids;
    size_t n_peer_ids;
    wf_tls_session **session;
    char *peer_id, *err;
    char *leaf_desc; /* the peer's leaf as seen in verification, for errors */
};

struct wf_tls_session {
    mbedtls_ssl_session s;
};

static const int mesh_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};
/* X25519 first for the key exchange (as Envoy prefers it; cheaper than P-256
 * in mbedTLS), P-256 for the certificates and for peers without it. */
static const mbedtls_ecp_group_id mesh_curves[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
                                                   MBEDTLS_ECP_DP_NONE};

/* ---- helpers --------------------------------------------------------------------------------- */


static const char *mberr(int code, char *buf, size_t len)
{
    mbedtls_strerror(code, buf, len);
    return buf;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}


static void fmt_x509_time(const mbedtls_x509_time *t, char *buf, size_t len)
{
    snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d UTC", t->year, t->mon, t->day, t->hour,
             t->min, t->sec);
}

/* The SANs of a certificate (mbedTLS keeps every GeneralName in
 * subject_alt_names with its context tag, URIs included). */
#define SAN_DNS (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)
#define SAN_URI (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6)

static int san_is(const mbedtls_x509_buf *b, int tag)
{
    return (b->tag & (MBEDTLS_ASN1_TAG_CLASS_MASK | MBEDTLS_ASN1_TAG_VALUE_MASK)) == tag;
}

/* The first SAN of tag (a spiffe:// one preferred for URIs), malloc'd, or NULL. */
static char *san_first(const mbedtls_x509_crt *crt, int tag)
{
    const mbedtls_x509_buf *pick = NULL;
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next) {
        const mbedtls_x509_buf *b = &s->buf;
        if (!b->p || !san_is(b, tag) || memchr(b->p, 0, b->len))
            continue;
        if (tag == SAN_URI && b->len >= 9 && memcmp(b->p, "spiffe://", 9) == 0)
            return strndup((const char *)b->p, b->len);
        if (!pick)
            pick = b;
    }
    return pick ? strndup((const char *)pick->p, pick->len) : NULL;
}

/* The identity shown for a certificate: URI SAN, else first DNS SAN. */
static char *cert_identity(const mbedtls_x509_crt *crt)
{
    char *id = san_first(crt, SAN_URI);
    return id ? id : san_first(crt, SAN_DNS);
}

/* Whether the certificate carries id as a URI SAN (exact) or DNS SAN (any case). */
static int cert_has_san(const mbedtls_x509_crt *crt, const char *id)
{
    size_t n = strlen(id);
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next) {
        const mbedtls_x509_buf *b = &s->buf;
        if (!b->p || b->len != n)
            continue;
        if (san_is(b, SAN_URI) && memcmp(b->p, id, n) == 0)
            return 1;
        if (san_is(b, SAN_DNS) && strncasecmp((const char *)b->p, id, n) == 0)
            return 1;
    }
    return 0;
}

/* "a, b, c" of every URI and DNS SAN, malloc'd. */
static char *cert_san_list(const mbedtls_x509_crt *crt)
{
    size_t cap = 1;
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next)
        cap += s->buf.len + 2;
    char *out = malloc(cap), *p = out;
    if (!out)
        return NULL;
    *p = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next) {
            const mbedtls_x509_buf *b = &s->buf;
            if (!b->p || !san_is(b, pass ? SAN_DNS : SAN_URI))
                continue;
            if (p != out)
                p += sprintf(p, ", ");
            memcpy(p, b->p, b->len);
            p += b->len;
            *p = 0;
        }
    }
    return out;
}

/* RFC 6125 style match of a DNS name against a SAN or CN: case-insensitive,
 * a leading "*." matches exactly one label. */
static int dns_match(const char *name, const unsigned char *pat, size_t plen)
{
    size_t n = strlen(name);
    if (plen == n && strncasecmp(name, (const char *)pat, n) == 0)
        return 1;
    if (plen > 2 && pat[0] == '*' && pat[1] == '.') {
        const char *dot = strchr(name, '.');
        size_t rest = plen - 1; /* ".example.com" */
        return dot && dot != name && strlen(dot) == rest &&
               strncasecmp(dot, (const char *)pat + 1, rest) == 0;
    }
    return 0;
}

/* Does crt carry name as a DNS SAN (or, without any DNS SAN, as its CN)? */
static int cert_matches_name(const mbedtls_x509_crt *crt, const char *name)
{
    int any_dns = 0;
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next) {
        if (!s->buf.p || !san_is(&s->buf, SAN_DNS))
            continue;
        any_dns = 1;
        if (dns_match(name, s->buf.p, s->buf.len))
            return 1;
    }
    if (any_dns)
        return 0;
    for (const mbedtls_x509_name *dn = &crt->subject; dn; dn = dn->next) {
        if (dn->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &dn->oid) == 0 &&
            dns_match(name, dn->val.p, dn->val.len))
            return 1;
    }
    return 0;
}

static const char *alert_name(unsigned char a)
{
    static const struct {
        unsigned char code;
        const char *name;
    } names[] = {
        {0, "close_notify"},
        {10, "unexpected_message"},
        {20, "bad_record_mac"},
        {40, "handshake_failure"},
        {42, "bad_certificate"},
        {43, "unsupported_certificate"},
        {44, "certificate_revoked"},
        {45, "certificate_expired"},
        {46, "certificate_unknown"},
        {47, "illegal_parameter"},
        {48, "unknown_ca"},
        {49, "access_denied"},
        {50, "decode_error"},
        {51, "decrypt_error"},
        {70, "protocol_version"},
        {71, "insufficient_security"},
        {80, "internal_error"},
        {90, "user_canceled"},
        {100, "no_renegotiation"},
        {110, "unsupported_extension"},
        {112, "unrecognized_name"},
        {116, "certificate_required"},
        {120, "no_application_protocol"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].code == a)
            return names[i].name;
    return "unknown alert";
}

static const char *alert_hint(unsigned char a)
{
    switch (a) {
    case 40:
        return ": no cipher suite or curve in common, or the peer requires a client "
               "certificate and got none";
    case 42:
    case 43:
    case 45:
    case 46:
    case 48:
    case 116:
        return ": the peer does not accept our certificate (not issued by a root it trusts, "
               "expired, or not the identity it expects); its log says which";
    case 70:
        return ": TLS version mismatch (weft speaks TLS 1.2)";
    case 120:
        return ": no ALPN protocol in common";
    default:
        return "";
    }
}

/* ---- contexts -------------------------------------------------------------------------------- */

static int ticket_tag(const wf_tls_ctx *ctx, const unsigned char *t, size_t len,
                      unsigned char out[TICKET_TAG])
{
    unsigned char mac[32];
    int ret = mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), ctx->tag_key,
                              sizeof ctx->tag_key, t, len, mac);
    memcpy(out, mac, TICKET_TAG);
    return ret;
}

static int ticket_write(void *p, const mbedtls_ssl_session *session, unsigned char *start,
                        const unsigned char *end, size_t *tlen, uint32_t *lifetime)
{
    wf_tls_ctx *ctx = p;
    if (end - start < TICKET_TAG)
        return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
    int ret = mbedtls_ssl_ticket_write(&g_ticket, session, start, end - TICKET_TAG, tlen, lifetime);
    if (ret == 0)
        ret = ticket_tag(ctx, start, *tlen, start + *tlen);
    if (ret == 0)
        *tlen += TICKET_TAG;
    return ret;
}

static int ticket_parse(void *p, mbedtls_ssl_session *session, unsigned char *buf, size_t len)
{
    wf_tls_ctx *ctx = p;
    unsigned char tag[TICKET_TAG];
    if (len < TICKET_TAG || ticket_tag(ctx, buf, len - TICKET_TAG, tag) != 0)
        return MBEDTLS_ERR_SSL_INVALID_MAC;
    unsigned char diff = 0;
    for (size_t i = 0; i < TICKET_TAG; i++)
        diff |= tag[i] ^ buf[len - TICKET_TAG + i];
    if (diff) /* another class's ticket: do a full handshake */
        return MBEDTLS_ERR_SSL_INVALID_MAC;
    return mbedtls_ssl_ticket_parse(&g_ticket, session, buf, len - TICKET_TAG);
}

/* The class key: HMAC key = SHA-256(process key | policy | profile | roots). */
static int class_key(wf_tls_ctx *ctx)
{
    mbedtls_sha256_context h;
    unsigned char pol[2] = {(unsigned char)ctx->peer_cert, (unsigned char)ctx->mesh};
    mbedtls_sha256_init(&h);
    int ret = mbedtls_sha256_starts_ret(&h, 0);
    if (ret == 0)
        ret = mbedtls_sha256_update_ret(&h, g_tag_key, sizeof g_tag_key);
    if (ret == 0)
        ret = mbedtls_sha256_update_ret(&h, pol, sizeof pol);
    for (const mbedtls_x509_crt *r = ctx->has_roots ? &ctx->roots : NULL; r && ret == 0;
         r = r->next)
        if (r->raw.p)
            ret = mbedtls_sha256_update_ret(&h, r->raw.p, r->raw.len);
    if (ret == 0)
        ret = mbedtls_sha256_finish_ret(&h, ctx->tag_key);
    mbedtls_sha256_free(&h);
    return ret;
}

static void ctx_free(wf_tls_ctx *c)
{
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->chain);
    mbedtls_x509_crt_free(&c->roots);
    mbedtls_pk_free(&c->key);
    for (char **a = c->alpn; a && *a; a++)
        free(*a);
    free(c->alpn);
    mbedtls_platform_zeroize(c->tag_key, sizeof c->tag_key);
    free(c);
}

static int load_own(wf_tls_ctx *c, const wf_tls_ctx_opts *o, char **err)
{
    char eb[128];
    int ret = mbedtls_x509_crt_parse(&c->chain, (const unsigned char *)o->cert_chain_pem,
                                     strlen(o->cert_chain_pem) + 1);
    if (ret != 0)
        return wf_fail(err, "TLS certificate chain is not valid PEM: %s",
                    ret > 0 ? "some certificates could not be parsed" : mberr(ret, eb, sizeof eb));
    ret = mbedtls_pk_parse_key(&c->key, (const unsigned char *)o->key_pem, strlen(o->key_pem) + 1,
                               NULL, 0);
    if (ret != 0)
        return wf_fail(err, "TLS private key is not a valid unencrypted PEM key: %s",
                    mberr(ret, eb, sizeof eb));
    if (mbedtls_pk_check_pair(&c->chain.pk, &c->key) != 0)
        return wf_fail(err, "TLS private key does not belong to the first certificate of the chain "
                         "(the chain must start with the leaf)");
    if (c->mesh && (!mbedtls_pk_can_do(&c->key, MBEDTLS_PK_ECKEY) ||
                    mbedtls_pk_ec(c->key)->grp.id != MBEDTLS_ECP_DP_SECP256R1))
        return wf_fail(err, "the mesh TLS profile needs an ECDSA P-256 certificate and key");
    if ((ret = mbedtls_ssl_conf_own_cert(&c->conf, &c->chain, &c->key)) != 0)
        return wf_fail(err, "cannot use the TLS certificate: %s", mberr(ret, eb, sizeof eb));
    c->has_cert = 1;
    return 0;
}

int wf_tls_ctx_new(const wf_tls_ctx_opts *o, wf_tls_ctx **out, char **err)
{
    char eb[128];
    *out = NULL;
    if (!o)
        return wf_fail(err, "no TLS options given");
    if (o->server && (!o->cert_chain_pem || !o->key_pem))
        return wf_fail(err, "a TLS server needs a certificate chain and a key");
    if (!o->cert_chain_pem != !o->key_pem)
        return wf_fail(err, "a TLS certificate chain needs its key, and a key its chain");
    if (o->server && o->peer_cert != WF_TLS_PEER_NONE && !o->roots_pem)
        return wf_fail(err, "a TLS server that asks for client certificates needs trusted roots");
    pthread_once(&g_once, global_init);
    if (g_init_ret != 0)
        return wf_fail(err, "cannot seed the TLS random generator: %s",
                    mberr(g_init_ret, eb, sizeof eb));

    wf_tls_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return wf_fail(err, "out of memory");
    atomic_init(&c->refs, 1);
    c->server = !!o->server;
    c->mesh = !!o->mesh;
    c->peer_cert = o->server ? o->peer_cert : WF_TLS_PEER_NONE;
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->chain);
    mbedtls_x509_crt_init(&c->roots);
    mbedtls_pk_init(&c->key);

    mbedtls_ssl_config *cf = &c->conf;
    int ret =
        mbedtls_ssl_config_defaults(cf, o->server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                    MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        wf_fail(err, "cannot set up TLS defaults: %s", mberr(ret, eb, sizeof eb));
        goto bad;
    }
    mbedtls_ssl_conf_rng(cf, mbedtls_ctr_drbg_random, &g_drbg);
    mbedtls_ssl_conf_min_version(cf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(cf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_renegotiation(cf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    if (c->mesh) {
        mbedtls_ssl_conf_ciphersuites(cf, mesh_suites);
        mbedtls_ssl_conf_curves(cf, mesh_curves);
    }

    if (o->cert_chain_pem && load_own(c, o, err) != 0)
        goto bad;
    if (o->roots_pem) {
        ret = mbedtls_x509_crt_parse(&c->roots, (const unsigned char *)o->roots_pem,
                                     strlen(o->roots_pem) + 1);
        if (ret < 0 || !c->roots.raw.p) {
            wf_fail(err, "TLS trusted roots are not valid PEM: %s",
                 ret < 0 ? mberr(ret, eb, sizeof eb) : "no certificate in them");
            goto bad;
        }
        /* ret > 0: some certificates of a bundle were unusable; the others count. */
        c->has_roots = 1;
        mbedtls_ssl_conf_ca_chain(cf, &c->roots, NULL);
    }
    if (o->server) {
        static const int modes[] = {MBEDTLS_SSL_VERIFY_NONE, MBEDTLS_SSL_VERIFY_OPTIONAL,
                                    MBEDTLS_SSL_VERIFY_REQUIRED};
        if ((unsigned)o->peer_cert > WF_TLS_PEER_REQUIRED) {
            wf_fail(err, "unknown TLS client certificate policy %d", (int)o->peer_cert);
            goto bad;
        }
        /* OPTIONAL lets a bad certificate through mbedTLS; feed refuses it after the
         * handshake, so "optional" means "none or a valid one". */
        mbedtls_ssl_conf_authmode(cf, modes[o->peer_cert]);
        if (class_key(c) != 0) {
            wf_fail(err, "cannot derive the TLS session ticket key");
            goto bad;
        }
        mbedtls_ssl_conf_session_tickets_cb(cf, ticket_write, ticket_parse, c);
    } else {
        mbedtls_ssl_conf_authmode(cf, o->roots_pem ? MBEDTLS_SSL_VERIFY_REQUIRED
                                                   : MBEDTLS_SSL_VERIFY_NONE);
        mbedtls_ssl_conf_session_tickets(cf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    }
    if (o->alpn && o->alpn[0]) {
        size_t n = 0;
        while (o->alpn[n])
            n++;
        c->alpn = calloc(n + 1, sizeof *c->alpn);
        if (!c->alpn) {
            wf_fail(err, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(o->alpn[i]);
            if (l == 0 || l > 255) {
                wf_fail(err, "ALPN protocol name \"%s\" must be 1 to 255 bytes", o->alpn[i]);
                goto bad;
            }
            if (!(c->alpn[i] = strdup(o->alpn[i]))) {
                wf_fail(err, "out of memory");
                goto bad;
            }
        }
        if ((ret = mbedtls_ssl_conf_alpn_protocols(cf, (const char **)c->alpn)) != 0) {
            wf_fail(err, "cannot set ALPN: %s", mberr(ret, eb, sizeof eb));
            goto bad;
        }
    }
    *out = c;
    return 0;
bad:
    ctx_free(c);
    return -1;
}

void wf_tls_ctx_ref(wf_tls_ctx *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void wf_tls_ctx_unref(wf_tls_ctx *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        ctx_free(c);
}

int wf_tls_ctx_info(const wf_tls_ctx *c, wf_tls_cert_info *out)
{
    memset(out, 0, sizeof *out);
    if (!c)
        return -1;
    if (c->has_roots && c->roots.raw.p) {
        unsigned char h[32];
        if (mbedtls_sha256_ret(c->roots.raw.p, c->roots.raw.len, h, 0) == 0)
            for (int i = 0; i < 32; i++)
                snprintf(out->root_sha256 + 2 * i, 3, "%02x", h[i]);
    }
    if (!c->has_cert)
        return -1;
    const mbedtls_x509_crt *leaf = &c->chain;
    char *id = cert_identity(leaf);
    if (id) {
        snprintf(out->identity, sizeof out->identity, "%s", id);
        free(id);
    }
    /* The DER INTEGER may carry a leading zero byte to stay positive. */
    size_t i = 0, o = 0;
    while (i + 1 < leaf->serial.len && leaf->serial.p[i] == 0)
        i++;
    for (; i < leaf->serial.len && o + 3 <= sizeof out->serial; i++, o += 2)
        snprintf(out->serial + o, 3, "%02x", leaf->serial.p[i]);
    out->not_before = wf_x509_time(&leaf->valid_from);
    out->not_after = wf_x509_time(&leaf->valid_to);
    return 0;
}

const char *const *wf_tls_ctx_alpn(const wf_tls_ctx *c)
{
    return c ? (const char *const *)c->alpn : NULL;
}

/* ---- the memory BIO -------------------------------------------------------------------------- */

static int raw_send(wf_tls_conn *c, const unsigned char *buf, size_t len)
{
    if (c->send(c->ud, (const char *)buf, len) < 0) {
        c->send_failed = 1;
        return -1;
    }
    return 0;
}

/* Hands what out gathered to the owner's send. */
static int out_flush(wf_tls_conn *c)
{
    if (tl.out_len == 0)
        return 0;
    tl.sending = 1;
    int rc = raw_send(c, tl.out, tl.out_len);
    tl.sending = 0;
    tl.out_len = 0;
    return rc;
}

/* Claims the per-thread out buffer for c; 1 when this frame owns it. */
static int collect_begin(wf_tls_conn *c)
{
    if (tl.owner || tl.sending || !wf_thread_buffer(&tl.out, OUT_CAP))
        return 0;
    tl.owner = c;
    tl.out_len = 0;
    return 1;
}

static int collect_end(wf_tls_conn *c, int owned)
{
    if (!owned)
        return 0;
    int rc = out_flush(c);
    tl.owner = NULL;
    return rc;
}

static int bio_send(void *p, const unsigned char *buf, size_t len)
{
    wf_tls_conn *c = p;
    if (c->send_failed)
        return MBEDTLS_ERR_NET_SEND_FAILED;
    if (tl.owner == c && !tl.sending) {
        if (tl.out_len + len > OUT_CAP && out_flush(c) < 0)
            return MBEDTLS_ERR_NET_SEND_FAILED;
        if (len <= OUT_CAP) {
            memcpy((unsigned char *)tl.out + tl.out_len, buf, len);
            tl.out_len += len;
            return (int)len;
        }
    }
    return raw_send(c, buf, len) < 0 ? MBEDTLS_ERR_NET_SEND_FAILED : (int)len;
}

static int bio_recv(void *p, unsigned char *buf, size_t len)
{
    wf_tls_conn *c = p;
    size_t n;
    if (c->left_len) {
        n = len < c->left_len ? len : c->left_len;
        memcpy(buf, c->left + c->left_off, n);
        c->left_off += n;
        c->left_len -= n;
        if (c->left_len == 0)
            c->left_off = 0;
        return (int)n;
    }
    if (c->in_len) {
        n = len < c->in_len ? len : c->in_len;
        memcpy(buf, c->in, n);
        c->in += n;
        c->in_len -= n;
        return (int)n;
    }
    return MBEDTLS_ERR_SSL_WANT_READ;
}

/* Appends ciphertext to the owned leftovers. */
static int left_append(wf_tls_conn *c, const unsigned char *data, size_t len)
{
    if (c->left_off && c->left_len)
        memmove(c->left, c->left + c->left_off, c->left_len);
    c->left_off = 0;
    if (c->left_len + len > c->left_cap) {
        if (c->left_len + len > LEFTOVER_MAX)
            return -1;
        size_t cap = c->left_cap ? c->left_cap : 4096;
        while (cap < c->left_len + len)
            cap *= 2;
        unsigned char *b = realloc(c->left, cap);
        if (!b)
            return -1;
        c->left = b;
        c->left_cap = cap;
    }
    memcpy(c->left + c->left_len, data, len);
    c->left_len += len;
    return 0;
}

/* ---- connections ----------------------------------------------------------------------------- */

static int verify_cb(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    wf_tls_conn *c = p;
    if (depth != 0)
        return 0;
    char *id = cert_identity(crt);
    char nb[40];
    fmt_x509_time((*flags & MBEDTLS_X509_BADCERT_FUTURE) ? &crt->valid_from : &crt->valid_to, nb,
                  sizeof nb);
    free(c->leaf_desc);
    if (asprintf(&c->leaf_desc, "%s, valid %s %s", id ? id : "no URI or DNS SAN",
                 (*flags & MBEDTLS_X509_BADCERT_FUTURE) ? "from" : "until", nb) < 0)
        c->leaf_desc = NULL;
    free(id);
    if (c->name_mode == NAME_SNI_ONLY) {
        *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
    } else if (c->name_mode == NAME_OWN) {
        *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
        if (!cert_matches_name(crt, c->verify_name))
            *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    }
    return 0;
}

wf_tls_conn *wf_tls_conn_new(wf_tls_ctx *ctx, const wf_tls_conn_opts *o, char **err)
{
    char eb[128];
    if (!ctx || !o || !o->send) {
        wf_fail(err, "a TLS connection needs a context and a send function");
        return NULL;
    }
    wf_tls_conn *c = calloc(1, sizeof *c);
    if (!c) {
        wf_fail(err, "out of memory");
        return NULL;
    }
    mbedtls_ssl_init(&c->ssl);
    wf_tls_ctx_ref(ctx);
    c->ctx = ctx;
    c->send = o->send;
    c->ud = o->ud;
    int ret = mbedtls_ssl_setup(&c->ssl, &ctx->conf);
    if (ret != 0) {
        wf_fail(err, "cannot set up a TLS connection: %s", mberr(ret, eb, sizeof eb));
        goto bad;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    mbedtls_ssl_set_verify(&c->ssl, verify_cb, c);
    if (!ctx->server) {
        /* mbedTLS has one hostname for SNI and for the name check; when they differ
         * the name is checked in verify_cb. */
        const char *host = o->verify_name ? o->verify_name : o->sni;
        if (o->verify_name && o->sni && strcmp(o->verify_name, o->sni) != 0) {
            host = o->sni;
            c->name_mode = NAME_OWN;
        } else if (o->verify_name) {
            c->name_mode = NAME_MBEDTLS;
        } else if (o->sni) {
            c->name_mode = NAME_SNI_ONLY;
        }
        if (host && (ret = mbedtls_ssl_set_hostname(&c->ssl, host)) != 0) {
            wf_fail(err, "cannot use \"%s\" as TLS server name: %s", host, mberr(ret, eb, sizeof eb));
            goto bad;
        }
        if (o->verify_name && !(c->verify_name = strdup(o->verify_name)))
            goto oom;
        if (o->n_peer_ids) {
            if (!(c->peer_ids = calloc(o->n_peer_ids, sizeof *c->peer_ids)))
                goto oom;
            c->n_peer_ids = o->n_peer_ids;
            for (size_t i = 0; i < o->n_peer_ids; i++)
                if (!(c->peer_ids[i] = xstrdup(o->peer_ids[i])))
                    goto oom;
        }
        c->session = o->session;
        /* A session mbedTLS refuses is no error: a full handshake follows. */
        if (o->session && *o->session)
            (void)mbedtls_ssl_set_session(&c->ssl, &(*o->session)->s);
    }
    return c;
oom:
    wf_fail(err, "out of memory");
bad:
    wf_tls_conn_free(c);
    return NULL;
}

void wf_tls_conn_free(wf_tls_conn *c)
{
    if (!c)
        return;
    if (tl.owner == c) /* freed from inside its own send: drop what was gathered */
        tl.owner = NULL, tl.out_len = 0;
    mbedtls_ssl_free(&c->ssl);
    wf_tls_ctx_unref(c->ctx);
    free(c->left);
    free(c->pend);
    free(c->verify_name);
    for (size_t i = 0; i < c->n_peer_ids; i++)
        free(c->peer_ids[i]);
    free(c->peer_ids);
    free(c->peer_id);
    free(c->err);
    free(c->leaf_desc);
    free(c);
}

/* Marks c failed with a message; returns -1. */
static int conn_fail(wf_tls_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_fail(wf_tls_conn *c, const char *fmt, ...)
{
    if (c->state == ST_FAILED && c->err)
        return -1; /* keep the first reason */
    free(c->err);
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&c->err, fmt, ap) < 0)
        c->err = NULL;
    va_end(ap);
    c->state = ST_FAILED;
    return -1;
}

static int alert(wf_tls_conn *c, unsigned char what)
{
    return mbedtls_ssl_send_alert_message(&c->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL, what);
}

/* The operator's sentence for a certificate verification failure. */
static int verify_fail(wf_tls_conn *c, uint32_t flags)
{
    const char *who = c->ctx->server ? "client" : "server";
    const char *d = c->leaf_desc ? c->leaf_desc : "no details";
    if (flags & MBEDTLS_X509_BADCERT_MISSING)
        return conn_fail(c, "%s sent no certificate, but one is required (mTLS)", who);
    if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        return conn_fail(c,
                         "peer certificate is not signed by a trusted root (%s %s); check "
                         "that both sides use the same root of trust",
                         who, d);
    if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
        return conn_fail(c,
                         "peer certificate has expired (%s %s); is its certificate being "
                         "renewed, and are the clocks right?",
                         who, d);
    if (flags & MBEDTLS_X509_BADCERT_FUTURE)
        return conn_fail(c, "peer certificate is not valid yet (%s %s); check the clocks", who, d);
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        return conn_fail(c, "server certificate does not carry the name %s (%s %s)",
                         c->verify_name ? c->verify_name : "(unknown)", who, d);
    char info[512];
    if (mbedtls_x509_crt_verify_info(info, sizeof info, "", flags) < 0)
        snprintf(info, sizeof info, "flags 0x%x", (unsigned)flags);
    /* verify_info ends each reason with a newline; keep one line. */
    for (char *p = info; *p; p++)
        if (*p == '\n')
            *p = p[1] ? ';' : 0;
    return conn_fail(c, "peer certificate refused (%s %s): %s", who, d, info);
}

static int handshake_fail(wf_tls_conn *c, int ret)
{
    char eb[160];
    if (c->send_failed)
        return conn_fail(c, "handshake failed: the transport could not send");
    switch (ret) {
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
        return verify_fail(c, mbedtls_ssl_get_verify_result(&c->ssl));
    case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
        /* mbedTLS 2.28 sends no alert here; OpenSSL's choice is handshake_failure. */
        alert(c, MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
        return conn_fail(c, "client sent no certificate, but this server requires one (mTLS)");
    case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE: {
        unsigned char a = c->ssl.in_msg ? c->ssl.in_msg[1] : 0;
        return conn_fail(c, "handshake failed: the peer sent the fatal alert %s (%u)%s",
                         alert_name(a), a, alert_hint(a));
    }
    case MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN:
    case MBEDTLS_ERR_SSL_NO_USABLE_CIPHERSUITE:
        return conn_fail(c,
                         "handshake failed: %s (the mesh profile allows only ECDHE-ECDSA "
                         "with AES-GCM or ChaCha20-Poly1305 on P-256, TLS 1.2)",
                         mberr(ret, eb, sizeof eb));
    default:
        return conn_fail(c, "handshake failed: %s", mberr(ret, eb, sizeof eb));
    }
}

static int write_bufs(wf_tls_conn *c, const uv_buf_t *bufs, unsigned n);

/* Checks and bookkeeping once mbedTLS says the handshake is over. */
static int handshake_done(wf_tls_conn *c)
{
    wf_tls_ctx *x = c->ctx;
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&c->ssl);
    uint32_t vr = mbedtls_ssl_get_verify_result(&c->ssl);
    int verifies = x->server ? x->peer_cert != WF_TLS_PEER_NONE : x->has_roots;
    if (x->server && x->peer_cert == WF_TLS_PEER_REQUIRED && !peer) {
        alert(c, MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
        return conn_fail(c, "client sent no certificate, but this server requires one (mTLS)");
    }
    if (verifies && peer && vr != 0) {
        /* Only PEER_OPTIONAL gets here: mbedTLS let a bad certificate through. */
        alert(c, MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
        return verify_fail(c, vr);
    }
    if (!x->server && c->n_peer_ids) {
        int ok = 0;
        for (size_t i = 0; peer && i < c->n_peer_ids && !ok; i++)
            ok = c->peer_ids[i] && cert_has_san(peer, c->peer_ids[i]);
        if (!ok) {
            char *have = peer ? cert_san_list(peer) : NULL;
            size_t wl = 1;
            for (size_t i = 0; i < c->n_peer_ids; i++)
                wl += (c->peer_ids[i] ? strlen(c->peer_ids[i]) : 0) + 2;
            char *want = malloc(wl);
            if (want) {
                want[0] = 0;
                for (size_t i = 0; i < c->n_peer_ids; i++) {
                    if (i)
                        strcat(want, ", ");
                    strcat(want, c->peer_ids[i] ? c->peer_ids[i] : "");
                }
            }
            alert(c, MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
            conn_fail(c, "server identity %s is not one of: %s",
                      !peer           ? "(no certificate)"
                      : have && *have ? have
                                      : "(no URI or DNS SAN)",
                      want ? want : "(out of memory)");
            free(have);
            free(want);
            return -1;
        }
    }
    if (peer && verifies) {
        c->peer_id = san_first(peer, SAN_URI);
    }
    if (!x->server && c->session) {
        wf_tls_session *s = calloc(1, sizeof *s);
        if (s) {
            mbedtls_ssl_session_init(&s->s);
            if (mbedtls_ssl_get_session(&c->ssl, &s->s) == 0) {
                wf_tls_session_free(*c->session);
                *c->session = s;
            } else {
                wf_tls_session_free(s);
            }
        }
    }
    c->state = ST_OPEN;
    if (c->pend_len) {
        uv_buf_t b = uv_buf_init(c->pend, (unsigned)c->pend_len);
        int rc = write_bufs(c, &b, 1);
        free(c->pend);
        c->pend = NULL;
        c->pend_len = c->pend_cap = 0;
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Advances the handshake; 0 when done, 1 when it waits for the peer, -1 on failure. */
static int handshake(wf_tls_conn *c)
{
    while (c->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        /* A resumed handshake skips the certificate; mbedTLS 2.28 has no getter
         * for "resumed" once the handshake is over, so watch for that state. */
        if (c->ssl.state == MBEDTLS_SSL_SERVER_CERTIFICATE)
            c->full_handshake = 1;
        int ret = mbedtls_ssl_handshake_step(&c->ssl);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ)
            return 1;
        if (ret != 0)
            return handshake_fail(c, ret);
    }
    return handshake_done(c);
}

int wf_tls_start(wf_tls_conn *c)
{
    if (c->state == ST_FAILED)
        return -1;
    if (c->state != ST_HANDSHAKE)
        return 0;
    int owned = collect_begin(c);
    int rc = handshake(c);
    if (collect_end(c, owned) < 0 && rc >= 0)
        rc = conn_fail(c, "handshake failed: the transport could not send");
    return rc < 0 ? -1 : 0;
}

int wf_tls_feed(wf_tls_conn *c, const char *data, size_t len, wf_tls_deliver deliver, void *ud)
{
    if (c->state == ST_FAILED)
        return -1;
    if (len) {
        if (c->left_len) {
            if (left_append(c, (const unsigned char *)data, len) < 0)
                return conn_fail(c,
                                 "TLS input buffer full (%u bytes unread): the reader has "
                                 "paused too long",
                                 LEFTOVER_MAX);
        } else {
            c->in = (const unsigned char *)data;
            c->in_len = len;
        }
    }
    int rc = 0;
    if (c->state == ST_HANDSHAKE && !c->got_input && len) {
        c->got_input = 1;
        if (wf_tls_sniff(data, len) == 0) {
            char shown[40];
            size_t o = 0;
            for (size_t i = 0; i < len && i < 16; i++)
                o += (size_t)snprintf(shown + o, sizeof shown - o, "%c",
                                      data[i] >= 0x20 && data[i] < 0x7f ? data[i] : '.');
            c->in = NULL;
            c->in_len = c->left_len = 0;
            return conn_fail(c,
                             "handshake failed: the peer does not speak TLS (it sent \"%s\"); "
                             "is it plaintext, or a port without TLS?",
                             shown);
        }
    }
    if (c->state == ST_HANDSHAKE) {
        int owned = collect_begin(c);
        rc = handshake(c);
        if (collect_end(c, owned) < 0 && rc >= 0)
            rc = conn_fail(c, "handshake failed: the transport could not send");
    }
    if (rc == 0 && c->state == ST_EOF)
        rc = WF_TLS_EOF;
    if (rc == 0 && c->state == ST_OPEN) {
        unsigned char *pt = tl.pt_busy ? NULL : wf_thread_buffer(&tl.pt, PT_CAP), *heap = NULL;
        if (!pt && !(pt = heap = malloc(PT_CAP)))
            rc = conn_fail(c, "out of memory");
        else if (!heap)
            tl.pt_busy = 1;
        while (rc == 0) {
            int n = mbedtls_ssl_read(&c->ssl, pt, PT_CAP);
            if (n > 0) {
                if (deliver(ud, (const char *)pt, (size_t)n))
                    break;
                continue;
            }
            if (n == MBEDTLS_ERR_SSL_WANT_READ) {
                /* mbedTLS also says this after a record it handled itself (a
                 * refused renegotiation); go on while input remains. */
                if (c->in_len || c->left_len)
                    continue;
                break;
            }
            if (n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || n == 0) {
                c->state = ST_EOF;
                rc = WF_TLS_EOF;
                break;
            }
            char eb[128];
            unsigned char a = c->ssl.in_msg ? c->ssl.in_msg[1] : 0;
            if (c->send_failed)
                rc = conn_fail(c, "TLS: the transport could not send");
            else if (n == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE)
                rc = conn_fail(c, "the peer ended the connection with the fatal alert %s (%u)%s",
                               alert_name(a), a, alert_hint(a));
            else
                rc = conn_fail(c, "TLS record refused: %s", mberr(n, eb, sizeof eb));
        }
        if (heap)
            free(heap);
        else if (pt && pt == tl.pt)
            tl.pt_busy = 0;
    }
    /* Keep what mbedTLS did not read; data is only borrowed. */
    if (c->in_len) {
        if (rc >= 0 && left_append(c, c->in, c->in_len) < 0)
            rc = conn_fail(c, "out of memory");
        c->in = NULL;
        c->in_len = 0;
    }
    return rc == WF_TLS_EOF ? rc : rc < 0 ? -1 : 0;
}

int wf_tls_pending(const wf_tls_conn *c)
{
    if (c->left_len || c->in_len)
        return 1;
    if (c->state != ST_OPEN)
        return 0;
    return mbedtls_ssl_get_bytes_avail(&c->ssl) > 0 || mbedtls_ssl_check_pending(&c->ssl);
}

/* Encrypts len bytes, in as many records as it takes. */
static int write_all(wf_tls_conn *c, const unsigned char *p, size_t len)
{
    while (len) {
        int n = mbedtls_ssl_write(&c->ssl, p, len);
        if (n < 0) {
            char eb[128];
            return c->send_failed ? conn_fail(c, "TLS: the transport could not send")
                                  : conn_fail(c, "TLS write failed: %s", mberr(n, eb, sizeof eb));
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes bufs, coalescing small ones in the per-thread scratch into whole records. */
static int write_bufs(wf_tls_conn *c, const uv_buf_t *bufs, unsigned n)
{
    unsigned char *scr = tl.scratch_busy ? NULL : wf_thread_buffer(&tl.scratch, REC);
    size_t fill = 0;
    int rc = 0;
    if (scr)
        tl.scratch_busy = 1;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        const unsigned char *p = (const unsigned char *)bufs[i].base;
        size_t left = bufs[i].len;
        while (left && rc == 0) {
            if (scr && (fill || left < REC)) {
                size_t k = REC - fill < left ? REC - fill : left;
                memcpy(scr + fill, p, k);
                fill += k;
                p += k;
                left -= k;
                if (fill == REC) {
                    rc = write_all(c, scr, fill);
                    fill = 0;
                }
            } else {
                size_t k = left < REC ? left : REC;
                rc = write_all(c, p, k);
                p += k;
                left -= k;
            }
        }
    }
    if (rc == 0 && fill)
        rc = write_all(c, scr, fill);
    if (scr)
        tl.scratch_busy = 0;
    return rc;
}

int wf_tls_write(wf_tls_conn *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->state == ST_FAILED)
        return -1;
    if (c->state == ST_HANDSHAKE) {
        size_t total = c->pend_len;
        for (unsigned i = 0; i < n; i++)
            total += bufs[i].len;
        if (total > PENDING_MAX)
            return conn_fail(c, "more than %u bytes written before the TLS handshake finished",
                             PENDING_MAX);
        if (total > c->pend_cap) {
            size_t cap = c->pend_cap ? c->pend_cap : 4096;
            while (cap < total)
                cap *= 2;
            char *b = realloc(c->pend, cap);
            if (!b)
                return conn_fail(c, "out of memory");
            c->pend = b;
            c->pend_cap = cap;
        }
        for (unsigned i = 0; i < n; i++) {
            memcpy(c->pend + c->pend_len, bufs[i].base, bufs[i].len);
            c->pend_len += bufs[i].len;
        }
        return 0;
    }
    int owned = collect_begin(c);
    int rc = write_bufs(c, bufs, n);
    if (collect_end(c, owned) < 0 && rc == 0)
        rc = conn_fail(c, "TLS: the transport could not send");
    return rc;
}

int wf_tls_close_notify(wf_tls_conn *c)
{
    if (c->state != ST_OPEN && c->state != ST_EOF)
        return c->state == ST_FAILED ? -1 : 0;
    int owned = collect_begin(c);
    int ret = mbedtls_ssl_close_notify(&c->ssl);
    int rc = collect_end(c, owned);
    return ret < 0 || rc < 0 ? -1 : 0;
}

int wf_tls_established(const wf_tls_conn *c)
{
    return c->state == ST_OPEN || c->state == ST_EOF;
}

int wf_tls_resumed(const wf_tls_conn *c)
{
    return wf_tls_established(c) && !c->full_handshake;
}

const char *wf_tls_peer_id(const wf_tls_conn *c)
{
    return wf_tls_established(c) ? c->peer_id : NULL;
}

const char *wf_tls_alpn(const wf_tls_conn *c)
{
    return wf_tls_established(c) ? mbedtls_ssl_get_alpn_protocol(&c->ssl) : NULL;
}

const char *wf_tls_cipher(const wf_tls_conn *c)
{
    return mbedtls_ssl_get_ciphersuite(&c->ssl);
}

const char *wf_tls_error(const wf_tls_conn *c)
{
    if (c->err)
        return c->err;
    return c->state == ST_FAILED ? "out of memory" : "";
}

void wf_tls_session_free(wf_tls_session *s)
{
    if (!s)
        return;
    mbedtls_ssl_session_free(&s->s);
    free(s);
}

int wf_tls_sniff(const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    if (len >= 1 && p[0] != 0x16)
        return 0;
    if (len >= 2 && p[1] != 0x03)
        return 0;
    if (len >= 3 && p[2] > 0x04)
        return 0;
    return len >= 3 ? 1 : -1;
}
