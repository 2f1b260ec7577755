/*
 * grpc.h: gRPC over HTTP/2 (nghttp2) on libuv, for the control plane: the
 * ADS stream between istiod and proxies (and proxyless gRPC clients), and
 * the CA.  h2c with prior knowledge, or TLS (core/tls, ALPN h2) when a
 * server or client is given a TLS context.
 *
 * Framing (XDS.md): each message is 1 byte compressed flag (0) + 4 byte
 * big-endian length + bytes; a call ends with trailers carrying
 * grpc-status and an optional percent-encoded grpc-message.
 *
 * Threads: everything runs on the loop given at start; no function may be
 * called from another thread.  Messages passed in are copied; messages
 * passed to callbacks are valid only during the callback.
 */
#ifndef WF_GRPC_GRPC_H
#define WF_GRPC_GRPC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tls/tls.h"

/* Status codes used here (gRPC's numbering). */
enum {
    WF_GRPC_OK = 0,
    WF_GRPC_CANCELLED = 1,
    WF_GRPC_UNKNOWN = 2,
    WF_GRPC_INVALID_ARGUMENT = 3,
    WF_GRPC_DEADLINE_EXCEEDED = 4,
    WF_GRPC_NOT_FOUND = 5,
    WF_GRPC_PERMISSION_DENIED = 7,
    WF_GRPC_RESOURCE_EXHAUSTED = 8,
    WF_GRPC_UNIMPLEMENTED = 12,
    WF_GRPC_INTERNAL = 13,
    WF_GRPC_UNAVAILABLE = 14,
    WF_GRPC_UNAUTHENTICATED = 16,
};

#define WF_GRPC_MAX_MESSAGE (4 * 1024 * 1024) /* what gRPC clients accept */

typedef struct wf_grpc_server wf_grpc_server;
typedef struct wf_grpc_call wf_grpc_call; /* one stream, server or client side */

/* Server side.  ud is the handlers' user data. */
typedef struct wf_grpc_server_handlers {
    /* A call arrived for path ("/pkg.Service/Method").  Return WF_GRPC_OK to
     * accept it, or a status to refuse it (sent as trailers-only). */
    int (*on_call)(wf_grpc_call *c, const char *path, void *ud);
    /* One whole message of an accepted call. */
    void (*on_message)(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud);
    /* The call is over: it ended with trailers, the peer reset it, or the
     * connection went away.  Called exactly once for every accepted call
     * (never for one on_call refused); the call is freed right after this
     * returns. */
    void (*on_close)(wf_grpc_call *c, void *ud);
    void *ud;
    /* Optional.  The peer half-closed (sent END_STREAM): it will send no more
     * messages but still waits for the server's messages and trailers, so
     * the handler must call wf_grpc_finish now or later.  When NULL, the
     * call is finished with WF_GRPC_OK after the messages already queued,
     * which suits a handler that answers inside on_message (unary calls)
     * and a stream whose client leaves (ADS). */
    void (*on_half_close)(wf_grpc_call *c, void *ud);
} wf_grpc_server_handlers;

/* Listens on addr ("host:port").  NULL with a reason in err on failure. */
wf_grpc_server *wf_grpc_server_start(uv_loop_t *loop, const char *addr,
                                     const wf_grpc_server_handlers *h, char *err, size_t errlen);
/* Stops listening and closes every connection (each open call gets
 * on_close).  Each connection is sent GOAWAY first and closed once that is
 * written (at most a second later); the server is freed when the last one
 * is, so keep running the loop. */
void wf_grpc_server_stop(wf_grpc_server *s);
/* The same over TLS: every connection must complete a TLS handshake on
 * tls (a server context; its peer_cert says whether clients present
 * certificates).  The server takes a reference to tls.  tls must offer
 * ALPN "h2" (refused otherwise); clients offering no ALPN are accepted. */
wf_grpc_server *wf_grpc_server_start_tls(uv_loop_t *loop, const char *addr,
                                         const wf_grpc_server_handlers *h, wf_tls_ctx *tls,
                                         char *err, size_t errlen);
/* Certificate rotation: connections accepted from now on use tls (a new
 * reference is taken, the old one dropped once no connection uses it). */
void wf_grpc_server_set_tls(wf_grpc_server *s, wf_tls_ctx *tls);
/* The port the server listens on (useful after listening on port 0). */
int wf_grpc_server_port(const wf_grpc_server *s);

/* Client side: one connection carrying one call, as an ADS client needs. */
typedef struct wf_grpc_client_handlers {
    /* The connection is up and the request headers are sent: start sending. */
    void (*on_open)(wf_grpc_call *c, void *ud);
    void (*on_message)(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud);
    /* The call ended: status from the trailers, or WF_GRPC_UNAVAILABLE with
     * a reason when the connection failed or closed.  Freed after return. */
    void (*on_close)(wf_grpc_call *c, int status, const char *message, void *ud);
    void *ud;
} wf_grpc_client_handlers;

/* Connects to addr and opens a call to path.  Returns the call (callbacks
 * follow), or NULL with a reason in err when addr is invalid.  addr is
 * "ip:port", "[ipv6]:port" or "name:port" (resolved with getaddrinfo);
 * authority NULL means addr.  on_close is never called before this
 * returns: a connection that fails at once reports on the next loop turn. */
wf_grpc_call *wf_grpc_client_call(uv_loop_t *loop, const char *addr, const char *path,
                                  const char *authority, const wf_grpc_client_handlers *h,
                                  char *err, size_t errlen);
/* TLS for a client call: the context (a client context, with or without a
 * certificate), and what the server must prove (see wf_tls_conn_opts). */
typedef struct wf_grpc_tls {
    wf_tls_ctx *ctx;
    const char *verify_name;     /* e.g. "istiod.istio-system.svc", or NULL */
    const char *const *peer_ids; /* or NULL */
    size_t n_peer_ids;
} wf_grpc_tls;
/* As wf_grpc_client_call, over TLS with ALPN h2 (tls is copied; its ctx is
 * referenced until the call closes).  A failed handshake ends the call with
 * WF_GRPC_UNAVAILABLE and the TLS reason as message.  The ctx must offer
 * ALPN "h2" (refused otherwise); without verify_name, SNI is addr's host
 * when it is a name. */
wf_grpc_call *wf_grpc_client_call_tls(uv_loop_t *loop, const char *addr, const char *path,
                                      const char *authority, const wf_grpc_tls *tls,
                                      const wf_grpc_client_handlers *h, char *err, size_t errlen);
/* Client: adds a request header (metadata such as "authorization"; name in
 * lower case, not a pseudo-header), copied.  Only before on_open.  Returns
 * 0, or -1 when too late or the name or value is not valid. */
int wf_grpc_add_header(wf_grpc_call *c, const char *name, const char *value);

/* Both sides. */
/* Queues one message (copied); sent as flow control allows.  Returns 0, or
 * -1 if the call is closing or the message is larger than
 * WF_GRPC_MAX_MESSAGE. */
int wf_grpc_send(wf_grpc_call *c, const uint8_t *msg, size_t len);
/* Queues one message made of body, which is not copied, then tail (copied):
 * for a message many calls send alike.  body must stay valid until
 * release(arg) is called, once its bytes are written or dropped (from the
 * loop, possibly after the call's on_close).  Returns 0; -1 as
 * wf_grpc_send, and then release is not called: the caller still owns
 * its reference. */
int wf_grpc_send_shared(wf_grpc_call *c, const uint8_t *body, size_t body_len, const uint8_t *tail,
                        size_t tail_len, void (*release)(void *), void *arg);
/* Bytes queued and not yet handed to the socket (for spotting slow peers). */
size_t wf_grpc_queued(const wf_grpc_call *c);
/* Server: ends the call with trailers (after the queued messages; message
 * may be NULL, it is percent-encoded here).  Called inside on_call, it
 * also gives the message sent with on_call's refusal.  Client: half-closes
 * (END_STREAM; status and message are ignored).  The call stays valid
 * until its on_close. */
void wf_grpc_finish(wf_grpc_call *c, int status, const char *message);
/* Resets the call and closes its connection (client) or stream (server);
 * on_close follows. */
void wf_grpc_cancel(wf_grpc_call *c);
void wf_grpc_set_data(wf_grpc_call *c, void *data);
void *wf_grpc_data(const wf_grpc_call *c);
/* "ip:port" of the peer (a client call shows addr until it connects). */
const char *wf_grpc_peer(const wf_grpc_call *c);
/* A request header of a server-side call (lower-case name, pseudo-headers
 * such as ":authority" included), or NULL.  On a client call: a response
 * header or trailer. */
const char *wf_grpc_header(const wf_grpc_call *c, const char *name);
/* Server: the verified identity (URI SAN, a SPIFFE ID) of the client's TLS
 * certificate, or NULL (plaintext, or no certificate sent).  On a client
 * call: the server's. */
const char *wf_grpc_peer_id(const wf_grpc_call *c);

#endif
