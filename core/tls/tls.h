/*
 * tls.h: TLS 1.2 (mbedTLS 2.28, what Debian 12 ships) for weft's
 * connections: mTLS between proxies, the inbound listener, the control
 * plane's gRPC, and TLS toward external servers (DestinationRule SIMPLE and
 * MUTUAL).
 *
 * The library does no I/O of its own: the owner of a connection reads
 * ciphertext from its socket and feeds it in, gets plaintext back through a
 * callback, and hands plaintext to wf_tls_write, which gives ciphertext to
 * the owner's send function.  So it sits under the HTTP/1.1 parser, nghttp2
 * or a TCP relay alike, on any libuv loop.
 *
 * Threads: a wf_tls_ctx is immutable once made and may be shared by every
 * worker (its reference count is atomic; mbedTLS locks its ticket keys and
 * RNG internally, on the handshake path only).  A wf_tls_conn and a
 * wf_tls_session belong to one thread.
 *
 * Errors: 0 on success, negative on failure; *err (when not NULL) receives a
 * malloc'd message the caller frees.
 */
#ifndef WF_TLS_TLS_H
#define WF_TLS_TLS_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>
#include <uv.h>

typedef struct wf_tls_ctx wf_tls_ctx;
typedef struct wf_tls_conn wf_tls_conn;
typedef struct wf_tls_session wf_tls_session;

/* What a server asks of its clients' certificates. */
typedef enum wf_tls_peer_cert {
    WF_TLS_PEER_NONE = 0,     /* no certificate requested */
    WF_TLS_PEER_OPTIONAL = 1, /* requested; verified against the roots when sent */
    WF_TLS_PEER_REQUIRED = 2, /* mTLS: no valid certificate, no connection */
} wf_tls_peer_cert;

typedef struct wf_tls_ctx_opts {
    int server;                 /* 1: accepts connections; 0: dials */
    const char *cert_chain_pem; /* own chain, leaf first, or NULL (a client without one) */
    const char *key_pem;        /* private key of the leaf (with cert_chain_pem) */
    const char *roots_pem;      /* trusted roots; NULL only for a client that must not verify
                                 * (DestinationRule insecureSkipVerify) */
    wf_tls_peer_cert peer_cert; /* server only */
    const char *const *alpn;    /* NULL-terminated preference list ("h2", "http/1.1"), or NULL */
    int mesh;                   /* 1: the mesh profile: ECDHE-ECDSA with AES-GCM or
                                 * ChaCha20-Poly1305 only, P-256; 0: mbedTLS's TLS 1.2 defaults
                                 * (external servers) */
} wf_tls_ctx_opts;

/*
 * Makes a context (an mbedtls_ssl_config with its certificates and keys).
 * Strings are copied.  Server contexts issue session tickets with a key
 * shared by the whole process, so resumption survives certificate rotation.
 * The caller owns one reference (*out).
 */
int wf_tls_ctx_new(const wf_tls_ctx_opts *o, wf_tls_ctx **out, char **err);
void wf_tls_ctx_ref(wf_tls_ctx *c);
void wf_tls_ctx_unref(wf_tls_ctx *c); /* NULL is fine */

/* The context's own certificate, for /certs and logs. */
typedef struct wf_tls_cert_info {
    char identity[512]; /* the leaf's URI SAN (SPIFFE ID), else its first DNS SAN, else "" */
    char serial[80];    /* hex, colon-free, lower case */
    time_t not_before, not_after;
    char root_sha256[65]; /* hex SHA-256 of the first trusted root's DER, "" without roots */
} wf_tls_cert_info;

/* Fills *out; -1 when the context has no certificate. */
int wf_tls_ctx_info(const wf_tls_ctx *c, wf_tls_cert_info *out);
/* The context's ALPN list (NULL-terminated, borrowed from c), or NULL. */
const char *const *wf_tls_ctx_alpn(const wf_tls_ctx *c);

/* Per-connection choices. */
typedef struct wf_tls_conn_opts {
    /* Gives ciphertext to the transport (called from inside wf_tls_* calls).
     * Returns 0, or negative when the transport failed (the call that sent
     * then fails too). */
    int (*send)(void *ud, const char *data, size_t len);
    void *ud;
    /* Client only, all optional: */
    const char *sni;         /* server_name sent in the ClientHello */
    const char *verify_name; /* a DNS name the server's certificate must carry (SAN or CN) */
    /* The server's certificate must carry one of these SANs (a URI such as a
     * SPIFFE ID, or a DNS name); none given means any certificate that
     * chains to the roots.  Copied. */
    const char *const *peer_ids;
    size_t n_peer_ids;
    /* Resumption: a session saved in *session is offered, and the session of
     * a completed handshake is saved there (replacing it).  The slot belongs
     * to the caller (one per destination per worker); free with
     * wf_tls_session_free. */
    wf_tls_session **session;
} wf_tls_conn_opts;

/* A connection on ctx (referenced until wf_tls_conn_free).  NULL with *err
 * on failure. */
wf_tls_conn *wf_tls_conn_new(wf_tls_ctx *ctx, const wf_tls_conn_opts *o, char **err);
void wf_tls_conn_free(wf_tls_conn *c); /* NULL is fine; sends nothing */

/* Client: starts the handshake (sends the ClientHello). */
int wf_tls_start(wf_tls_conn *c);

/*
 * Plaintext delivery.  Return 0 to go on, or 1 to stop (the owner paused
 * reading): the rest stays buffered in c until the next wf_tls_feed.  It may
 * call wf_tls_write or wf_tls_close_notify on c, but must not free c (return
 * 1 and free it after wf_tls_feed returns).
 */
typedef int (*wf_tls_deliver)(void *ud, const char *data, size_t len);

#define WF_TLS_EOF (-4095) /* the peer sent close_notify */

/*
 * Feeds ciphertext read from the socket (data may be NULL, len 0, to drain
 * what an earlier stop left buffered), advances the handshake and hands
 * every whole record's plaintext to deliver.  data is only borrowed: what
 * is not consumed is copied.  Returns 0, WF_TLS_EOF, or a negative error
 * (handshake failure, bad record, the peer's identity refused): the alert
 * has been sent, wf_tls_error says why, close the transport.
 */
int wf_tls_feed(wf_tls_conn *c, const char *data, size_t len, wf_tls_deliver deliver, void *ud);
/* 1 when plaintext or ciphertext is buffered after a stop. */
int wf_tls_pending(const wf_tls_conn *c);

/*
 * Encrypts bufs in order and sends the records (small buffers are coalesced
 * into one record; one send call per wf_tls_write when it fits 64 KiB).
 * Before the handshake completes the plaintext is queued and sent once it
 * does.  Returns 0 or negative.
 */
int wf_tls_write(wf_tls_conn *c, const uv_buf_t *bufs, unsigned n);
/* Sends close_notify. */
int wf_tls_close_notify(wf_tls_conn *c);

int wf_tls_established(const wf_tls_conn *c);
int wf_tls_resumed(const wf_tls_conn *c);
/* The peer's verified identity (URI SAN, e.g. a SPIFFE ID), or NULL when it
 * sent no certificate, it was not verified (a client without roots) or the
 * handshake is not done.  Valid until free. */
const char *wf_tls_peer_id(const wf_tls_conn *c);
/* The negotiated ALPN protocol, or NULL. */
const char *wf_tls_alpn(const wf_tls_conn *c);
/* The cipher suite's name (for logs and tests). */
const char *wf_tls_cipher(const wf_tls_conn *c);
/* Why the last call failed, for the operator ("peer certificate expired",
 * "server identity spiffe://td/ns/a/sa/x is not one of ..."); "" when
 * nothing failed. */
const char *wf_tls_error(const wf_tls_conn *c);

void wf_tls_session_free(wf_tls_session *s); /* NULL is fine */

/*
 * Protocol sniffing for PERMISSIVE listeners: 1 when the first bytes are a
 * TLS handshake record (0x16 0x03 ...), 0 when they are not, -1 when more
 * bytes are needed to tell.
 */
int wf_tls_sniff(const char *data, size_t len);

#endif
