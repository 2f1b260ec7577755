/*
 * grpc.c: gRPC over HTTP/2 (nghttp2) on libuv; see grpc.h.
 *
 * One `conn` per TCP connection, holding an nghttp2 session.  A server
 * connection carries any number of calls (streams); a client connection
 * carries exactly one.  The pieces:
 *
 *   bytes in:  read_cb -> nghttp2_session_mem_recv -> callbacks (headers,
 *              DATA chunks reassembled into messages, stream close)
 *   bytes out: each call keeps a queue of framed messages (chunks, copied
 *              or shared with the caller); an nghttp2 data provider drains
 *              it (deferring when empty) without copying (NO_COPY), and
 *              flush() gathers what nghttp2 serialises (frame headers,
 *              other frames) and the message bytes of each DATA frame, in
 *              place, into one uv_write, with at most one in flight; so a
 *              slow peer holds its bytes in its own call queues
 *              (wf_grpc_queued) and never blocks anyone else.  A chunk the
 *              data provider is done with is kept (cn->spent) until no
 *              write can point into it.
 *
 * Lifetime: nothing is freed inside an nghttp2 or user callback except a
 * server call, right after its stream closed.  A connection is freed in the
 * close callback of its last libuv handle (conn_finalize), which also gives
 * every call still open its on_close.  User callbacks may call any function
 * of grpc.h, including the ones that end calls, connections or the server.
 *
 * Functions of grpc.h never call a user callback before they return: they
 * only submit to nghttp2 and ask for a flush on the next loop turn (an idle
 * handle), which also gathers several sends into one write.  Sending is
 * what can close a stream, and so call on_close.
 *
 * TLS (core/tls) sits between the socket and nghttp2 when the server or
 * the client call was given a context: read_cb -> wf_tls_feed -> (plaintext)
 * nghttp2_session_mem_recv; flush() gathers frames as above and
 * wf_tls_write turns them into ciphertext in tbuf, which goes out as the
 * single uv_write (tbuf and wbuf swap).  Nothing is pulled from nghttp2
 * until the handshake is done; the handshake's own records go out through
 * tbuf too.  The connect/SETTINGS deadline covers the handshake.
 */
#include "grpc/grpc.h"
#include "grpc/testing.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "util/arena.h"
#include "util/flags.h"
#include "util/log.h"

#define STREAM_WINDOW (1 << 20)     /* per stream: an xDS push fits in a few windows */
#define CONN_WINDOW (16 << 20)      /* per connection */
#define MAX_STREAMS 1000            /* concurrent calls per connection */
#define HEADER_LIST_MAX (16 << 10)  /* advertised SETTINGS_MAX_HEADER_LIST_SIZE */
#define HEADER_BYTES_MAX (32 << 10) /* enforced per call: headers and trailers */
#define RX_BUDGET (64u << 20)       /* partial messages buffered per connection */
#define WRITE_BATCH (256 << 10)     /* bytes gathered per uv_write */
#define WRITE_PIECES 256            /* pieces gathered per uv_write (well under IOV_MAX) */
#define DRAIN_MS 1000               /* GOAWAY/RST_STREAM flush before closing */
#define GRPC_MESSAGE_MAX 1024       /* grpc-message kept (before encoding) */
#define USER_AGENT "weft/" WF_VERSION

typedef struct chunk {
    struct chunk *next;
    const uint8_t *p;        /* its bytes: data[] below, or the sender's */
    size_t len, off;         /* off: bytes already handed to nghttp2 */
    void (*release)(void *); /* the sender's bytes: called once they are not needed */
    void *arg;
    unsigned first : 1; /* the first chunk of a message */
    uint8_t data[];
} chunk;

/* A piece of the write being gathered: bytes of fbuf (p NULL, at off) or
 * message bytes in a chunk. */
typedef struct piece {
    const uint8_t *p;
    size_t off, len;
} piece;

typedef struct conn conn;

struct wf_grpc_call {
    conn *cn;
    wf_grpc_call *prev, *next; /* in cn->calls */
    int32_t sid;               /* 0 until the stream exists */
    unsigned client : 1;
    unsigned in_on_call : 1;   /* server: on_call is running */
    unsigned accepted : 1;     /* server: on_call said OK */
    unsigned refused : 1;      /* server: on_call refused; no on_close */
    unsigned headers_sent : 1; /* server: response HEADERS submitted */
    unsigned deferred : 1;     /* the data provider returned DEFERRED */
    unsigned fin : 1;          /* wf_grpc_finish was called (or implied) */
    unsigned fin_sent : 1;     /* END_STREAM / trailers handed to nghttp2 */
    unsigned cancelled : 1;
    unsigned rx_done : 1; /* deliver no more messages */
    unsigned remote_closed : 1;
    unsigned done : 1;   /* client: the final status is known */
    unsigned closed : 1; /* on_close called (or due right now) */
    int status;          /* server: trailers status; client: final status */
    char *message;       /* server: percent-encoded; client: decoded */
    /* Send queue: framed messages. */
    chunk *qhead, *qtail;
    size_t queued;
    /* Receive: a message being reassembled. */
    uint8_t pfx[5];
    size_t pfx_have;
    uint8_t *rbuf;
    size_t rlen, rhave, rcap;
    /* Headers received ("name\0value\0" pairs) and their HTTP/2 size. */
    char *hdrs;
    size_t hlen, hcap, hsize;
    /* Client: extra request headers (same format), path, authority. */
    char *xhdrs;
    size_t xlen, xcap;
    char *path, *authority;
    int http_status, grpc_status; /* client: from the response; -1 = none */
    void *data;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake, then drain deadline */
    uv_idle_t idle;   /* a flush asked for from outside libuv callbacks */
    uv_connect_t connect;
    uv_getaddrinfo_t gai;
    uv_write_t wr;
    uv_loop_t *loop;
    nghttp2_session *ng;
    wf_grpc_server *srv; /* NULL for a client connection */
    conn *prev, *next;   /* in srv->conns */
    wf_grpc_call *calls; /* server: open calls */
    wf_grpc_call *ccall; /* client: its call */
    wf_grpc_client_handlers ch;
    unsigned long long id;
    char peer[64];
    uint8_t *fbuf; /* what nghttp2 serialised for the write being gathered */
    size_t flen, fcap;
    piece *pieces; /* the write being gathered, in order */
    size_t npieces, piececap, gathered;
    uv_buf_t *iov; /* the write in flight (h2c) */
    size_t iovcap;
    chunk *spent;  /* drained chunks the write in flight may point into */
    uint8_t *wbuf; /* TLS: the ciphertext in flight */
    size_t wlen, wcap;
    wf_tls_conn *tls; /* NULL: h2c */
    uint8_t *tbuf;    /* TLS: ciphertext waiting for the next uv_write */
    size_t tlen, tcap;
    size_t rx_buffered; /* bytes of partial messages, all calls */
    int in_ng;          /* nghttp2 calls on the stack: no mem_send now */
    int refs;           /* libuv handles open + getaddrinfo pending */
    unsigned connected : 1;
    unsigned resolving : 1;
    unsigned wbusy : 1;   /* a uv_write is in flight */
    unsigned closing : 1; /* no more user activity; draining or closed */
    unsigned draining : 1;
    unsigned hclosed : 1; /* uv_close called */
    unsigned settings_seen : 1;
    unsigned tls_ok : 1; /* handshake done and checked */
    char reason[256];    /* why it ended, for logs and the client's on_close */
};

struct wf_grpc_server {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    wf_grpc_server_handlers h;
    conn *conns;
    size_t nconns;
    int port;
    unsigned stopping : 1, lclosed : 1;
    wf_tls_ctx *tls; /* for connections accepted from now on; NULL: h2c */
    char addr[64];
};

static unsigned long long conn_ids;

/* Connect + preface + SETTINGS must take less than this (testing.h). */
unsigned wf__grpc_handshake_ms = 10000;

static void flush(conn *cn);
static void want_flush(conn *cn);
static int cb_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud);
static void conn_close(conn *cn, const char *reason);

/* ---------------------------------------------------------------------- */
/* small helpers */

static const char *frame_name(uint8_t t)
{
    static const char *const n[] = {"DATA",          "HEADERS",      "PRIORITY", "RST_STREAM",
                                    "SETTINGS",      "PUSH_PROMISE", "PING",     "GOAWAY",
                                    "WINDOW_UPDATE", "CONTINUATION"};
    return t < sizeof(n) / sizeof(n[0]) ? n[t] : "EXTENSION";
}

static const char *h2_error_name(uint32_t e)
{
    static const char *const n[] = {"NO_ERROR",
                                    "PROTOCOL_ERROR",
                                    "INTERNAL_ERROR",
                                    "FLOW_CONTROL_ERROR",
                                    "SETTINGS_TIMEOUT",
                                    "STREAM_CLOSED",
                                    "FRAME_SIZE_ERROR",
                                    "REFUSED_STREAM",
                                    "CANCEL",
                                    "COMPRESSION_ERROR",
                                    "CONNECT_ERROR",
                                    "ENHANCE_YOUR_CALM",
                                    "INADEQUATE_SECURITY",
                                    "HTTP_1_1_REQUIRED"};
    return e < sizeof(n) / sizeof(n[0]) ? n[e] : "UNKNOWN_ERROR";
}

/* grpc-message is percent-encoded: everything outside printable ASCII, and
 * '%' itself.  Returns malloc'ed text, NULL on OOM. */
static char *pct_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strnlen(s, GRPC_MESSAGE_MAX);
    char *o = malloc(3 * n + 1), *p = o;

    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || ch == '%') {
            *p++ = '%';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        } else {
            *p++ = (char)ch;
        }
    }
    *p = 0;
    return o;
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* Decodes in place; a '%' not followed by two hex digits stays as it is. */
static void pct_decode(char *s)
{
    char *o = s;

    for (; *s; s++) {
        int hi, lo;
        if (*s == '%' && (hi = hexval(s[1])) >= 0 && (lo = hexval(s[2])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
}

/* HTTP status of a response that is not gRPC -> gRPC status (the mapping
 * of gRPC's http-grpc-status-mapping.md). */
static int http_to_grpc(int st)
{
    switch (st) {
    case 400:
        return WF_GRPC_INTERNAL;
    case 401:
        return WF_GRPC_UNAUTHENTICATED;
    case 403:
        return WF_GRPC_PERMISSION_DENIED;
    case 404:
        return WF_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return WF_GRPC_UNAVAILABLE;
    default:
        return WF_GRPC_UNKNOWN;
    }
}

/* RST_STREAM error code -> gRPC status, for a client stream reset. */
static int rst_to_grpc(uint32_t e)
{
    switch (e) {
    case NGHTTP2_REFUSED_STREAM:
        return WF_GRPC_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        return WF_GRPC_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return WF_GRPC_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return WF_GRPC_PERMISSION_DENIED;
    default:
        return WF_GRPC_INTERNAL;
    }
}

static void sockaddr_text(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        uv_ip6_name(s6, ip, sizeof(ip));
        snprintf(out, outlen, "[%s]:%d", ip, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const void *)sa;
        uv_ip4_name(s4, ip, sizeof(ip));
        snprintf(out, outlen, "%s:%d", ip, ntohs(s4->sin_port));
    }
}

/* Appends "name\0value\0" to a growable list; -1 on OOM. */
static int kv_append(char **buf, size_t *len, size_t *cap, const char *n, size_t nl, const char *v,
                     size_t vl)
{
    size_t need = *len + nl + vl + 2;

    if (need > *cap) {
        size_t ncap = *cap ? *cap * 2 : 512;
        char *nb;
        while (ncap < need)
            ncap *= 2;
        if (!(nb = realloc(*buf, ncap)))
            return -1;
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, n, nl);
    (*buf)[*len + nl] = 0;
    memcpy(*buf + *len + nl + 1, v, vl);
    (*buf)[*len + nl + 1 + vl] = 0;
    *len = need;
    return 0;
}

static const char *kv_get(const char *buf, size_t len, const char *name)
{
    const char *found = NULL;

    /* The last occurrence wins, so a trailer overrides a header. */
    for (size_t i = 0; i < len;) {
        const char *n = buf + i, *v = n + strlen(n) + 1;
        if (strcmp(n, name) == 0)
            found = v;
        i = (size_t)(v - buf) + strlen(v) + 1;
    }
    return found;
}

/* ---------------------------------------------------------------------- */
/* calls */

static wf_grpc_call *call_new(conn *cn, int client)
{
    wf_grpc_call *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->cn = cn;
    c->client = client;
    c->http_status = -1;
    c->grpc_status = -1;
    return c;
}

static void chunk_free(chunk *k)
{
    if (k->release)
        k->release(k->arg);
    free(k);
}

static void spent_free(conn *cn)
{
    while (cn->spent) {
        chunk *n = cn->spent->next;
        chunk_free(cn->spent);
        cn->spent = n;
    }
}

/* A chunk off its queue: freed now, unless a write (in flight, or being
 * gathered) may point into it. */
static void chunk_drop(conn *cn, chunk *k)
{
    if (!cn->wbusy && !cn->in_ng && !cn->npieces) {
        chunk_free(k);
        return;
    }
    k->next = cn->spent;
    cn->spent = k;
}

static void queue_clear(wf_grpc_call *c, int keep_started)
{
    chunk *keep = NULL, **tail = &keep;
    size_t kept = 0;

    /* A message nghttp2 has started to send must be finished, or the peer
     * would read the next bytes as the rest of it. */
    if (keep_started && c->qhead && (c->qhead->off || !c->qhead->first)) {
        do {
            chunk *k = c->qhead;
            c->qhead = k->next;
            k->next = NULL;
            kept += k->len - k->off;
            *tail = k;
            tail = &k->next;
        } while (c->qhead && !c->qhead->first);
    }
    while (c->qhead) {
        chunk *n = c->qhead->next;
        chunk_drop(c->cn, c->qhead);
        c->qhead = n;
    }
    c->qhead = keep;
    c->qtail = NULL;
    for (chunk *k = keep; k; k = k->next)
        c->qtail = k;
    c->queued = kept;
}

static void rx_reset(wf_grpc_call *c)
{
    c->cn->rx_buffered -= c->rhave;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rhave = c->rcap = 0;
    c->pfx_have = 0;
}

static void call_free(wf_grpc_call *c)
{
    rx_reset(c);
    queue_clear(c, 0);
    free(c->message);
    free(c->hdrs);
    free(c->xhdrs);
    free(c->path);
    free(c->authority);
    free(c);
}

static void call_link(conn *cn, wf_grpc_call *c)
{
    c->next = cn->calls;
    if (cn->calls)
        cn->calls->prev = c;
    cn->calls = c;
}

static void call_unlink(wf_grpc_call *c)
{
    conn *cn = c->cn;

    if (c->prev)
        c->prev->next = c->next;
    else if (cn->calls == c)
        cn->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* A chunk of a copy of pfx then msg, or (shared, with release) of msg
 * itself. */
static chunk *chunk_new(const uint8_t *pfx, size_t pl, const uint8_t *msg, size_t len,
                        void (*release)(void *), void *arg)
{
    chunk *k = malloc(sizeof(*k) + (release ? 0 : pl + len));

    if (!k)
        return NULL;
    k->next = NULL;
    k->len = release ? len : pl + len;
    k->off = 0;
    k->release = release;
    k->arg = arg;
    k->first = 0;
    if (release) {
        k->p = msg;
        return k;
    }
    k->p = k->data;
    if (pl)
        memcpy(k->data, pfx, pl);
    if (len)
        memcpy(k->data + pl, msg, len);
    return k;
}

/* Appends the chunks of one message (a list). */
static void enqueue(wf_grpc_call *c, chunk *msg)
{
    msg->first = 1;
    if (c->qtail)
        c->qtail->next = msg;
    else
        c->qhead = msg;
    for (; msg; msg = msg->next) {
        c->queued += msg->len;
        c->qtail = msg;
    }
}

/* ---------------------------------------------------------------------- */
/* nghttp2 data provider: drains a call's queue */

/* Says how much of the queue the next DATA frame carries; cb_send_data
 * (in the same nghttp2 call) takes it off the queue. */
static ssize_t data_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    wf_grpc_call *c = src->ptr;
    size_t n = c->queued < length ? c->queued : length;

    (void)buf;
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == c->queued && c->fin) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!c->client) {
            char st[16];
            nghttp2_nv nv[2] = {
                {(uint8_t *)"grpc-status", (uint8_t *)st, 11, 0, NGHTTP2_NV_FLAG_NONE},
                {(uint8_t *)"grpc-message", (uint8_t *)c->message, 12,
                 c->message ? strlen(c->message) : 0, NGHTTP2_NV_FLAG_NONE},
            };
            nv[0].valuelen = (size_t)snprintf(st, sizeof(st), "%d", c->status);
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(ng, sid, nv, c->message && *c->message ? 2 : 1) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        c->fin_sent = 1;
        return (ssize_t)n;
    }
    if (n == 0) {
        c->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* ---------------------------------------------------------------------- */
/* server-side call handling */

static void nv_set(nghttp2_nv *nv, const char *n, const char *v)
{
    nv->name = (uint8_t *)n;
    nv->namelen = strlen(n);
    nv->value = (uint8_t *)v;
    nv->valuelen = strlen(v);
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

/* Submits the response HEADERS: trailers-only when the call is finished
 * with nothing queued, else headers followed by the data provider. */
static void start_response(wf_grpc_call *c)
{
    conn *cn = c->cn;
    nghttp2_nv nv[5];
    size_t n = 0;
    char st[16];
    int rv;

    if (c->headers_sent || c->cancelled)
        return;
    c->headers_sent = 1;
    nv_set(&nv[n++], ":status", "200");
    nv_set(&nv[n++], "content-type", "application/grpc");
    if (c->fin && !c->qhead) {
        snprintf(st, sizeof(st), "%d", c->status);
        nv_set(&nv[n++], "grpc-status", st);
        if (c->message && *c->message)
            nv_set(&nv[n++], "grpc-message", c->message);
        c->fin_sent = 1;
        rv = nghttp2_submit_response(cn->ng, c->sid, nv, n, NULL);
    } else {
        nghttp2_data_provider dp = {.source.ptr = c, .read_callback = data_read};
        nv_set(&nv[n++], "grpc-accept-encoding", "identity");
        rv = nghttp2_submit_response(cn->ng, c->sid, nv, n, &dp);
    }
    if (rv != 0) {
        WF_WARN("grpc: connection %llu from %s: cannot respond on stream %d: %s", cn->id, cn->peer,
                c->sid, nghttp2_strerror(rv));
        nghttp2_submit_rst_stream(cn->ng, NGHTTP2_FLAG_NONE, c->sid, NGHTTP2_INTERNAL_ERROR);
    }
}

/* Makes nghttp2 look at the call's queue again, then writes. */
static void call_kick(wf_grpc_call *c)
{
    conn *cn = c->cn;

    if (!c->client) {
        if (!c->accepted || c->in_on_call)
            return; /* dispatch() starts the response after on_call */
        if (!c->headers_sent) {
            start_response(c);
        } else if (c->deferred) {
            c->deferred = 0;
            nghttp2_session_resume_data(cn->ng, c->sid);
        }
    } else if (c->sid && c->deferred) {
        c->deferred = 0;
        nghttp2_session_resume_data(cn->ng, c->sid);
    }
    want_flush(cn);
}

static void set_message(wf_grpc_call *c, const char *message)
{
    free(c->message);
    c->message = message && *message ? pct_encode(message) : NULL;
}

/* The server ends a call because of what the peer sent: drop what is
 * queued and send the error. */
static void server_fail(wf_grpc_call *c, int status, const char *msg)
{
    conn *cn = c->cn;

    WF_WARN("grpc: connection %llu from %s: stream %d (%s): %s", cn->id, cn->peer, c->sid,
            c->path ? c->path : "?", msg);
    c->rx_done = 1;
    rx_reset(c);
    if (c->fin_sent || c->cancelled || !c->accepted)
        return;
    queue_clear(c, 1);
    c->fin = 1;
    c->status = status;
    set_message(c, msg);
    call_kick(c);
}

static void respond_http_error(wf_grpc_call *c, const char *http_status, int status,
                               const char *msg)
{
    nghttp2_nv nv[4];
    char st[16];

    WF_WARN("grpc: connection %llu from %s: stream %d refused: %s", c->cn->id, c->cn->peer, c->sid,
            msg);
    snprintf(st, sizeof(st), "%d", status);
    nv_set(&nv[0], ":status", http_status);
    nv_set(&nv[1], "content-type", "application/grpc");
    nv_set(&nv[2], "grpc-status", st);
    nv_set(&nv[3], "grpc-message", msg);
    c->refused = 1;
    c->headers_sent = c->fin = c->fin_sent = 1;
    nghttp2_submit_response(c->cn->ng, c->sid, nv, 4, NULL);
}

/* Request headers are complete: check them and ask on_call. */
static void dispatch(wf_grpc_call *c)
{
    conn *cn = c->cn;
    wf_grpc_server *srv = cn->srv;
    const char *method = kv_get(c->hdrs, c->hlen, ":method");
    const char *path = kv_get(c->hdrs, c->hlen, ":path");
    const char *ct = kv_get(c->hdrs, c->hlen, "content-type");
    int st;

    if (!method || strcmp(method, "POST") != 0) {
        respond_http_error(c, "405", WF_GRPC_INTERNAL, "gRPC requires method POST");
        return;
    }
    if (!ct || strncmp(ct, "application/grpc", 16) != 0 ||
        (ct[16] && ct[16] != '+' && ct[16] != ';')) {
        respond_http_error(c, "415", WF_GRPC_INTERNAL,
                           "content-type must be application/grpc (is this a gRPC client?)");
        return;
    }
    if (!path || !(c->path = strdup(path))) {
        respond_http_error(c, "400", WF_GRPC_INTERNAL, "no :path");
        return;
    }
    path = c->path;
    WF_DEBUG("grpc: connection %llu from %s: stream %d: call %s", cn->id, cn->peer, c->sid, path);
    c->in_on_call = 1;
    st = cn->closing ? WF_GRPC_UNAVAILABLE : srv->h.on_call(c, path, srv->h.ud);
    c->in_on_call = 0;
    if (st != WF_GRPC_OK) {
        char msg[300];
        c->refused = 1;
        queue_clear(c, 0);
        if (c->cancelled)
            return;
        if (!c->fin || c->status != st || !c->message) {
            snprintf(msg, sizeof(msg), "%s: %s", path,
                     st == WF_GRPC_UNIMPLEMENTED ? "no such method here"
                     : st == WF_GRPC_UNAVAILABLE ? "the server is shutting down"
                                                 : "call refused");
            set_message(c, msg);
        }
        c->fin = 1;
        c->status = st;
        start_response(c);
        return;
    }
    c->accepted = 1;
    if (c->qhead || c->fin)
        start_response(c);
}

static void server_half_close(wf_grpc_call *c)
{
    wf_grpc_server *srv = c->cn->srv;

    c->remote_closed = 1;
    if (!c->rx_done && (c->pfx_have || c->rhave)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the request ended inside a message (%zu of %zu bytes)",
                 c->pfx_have < 5 ? c->pfx_have : c->rhave + 5,
                 c->pfx_have < 5 ? (size_t)5 : c->rlen + 5);
        server_fail(c, WF_GRPC_INTERNAL, msg);
        return;
    }
    if (!c->accepted || c->fin || c->closed || c->cancelled || c->cn->closing)
        return;
    if (srv->h.on_half_close)
        srv->h.on_half_close(c, srv->h.ud);
    else
        wf_grpc_finish(c, WF_GRPC_OK, NULL);
}

/* ---------------------------------------------------------------------- */
/* client-side call handling */

static void client_done(wf_grpc_call *c, int status, const char *msg)
{
    if (c->done)
        return;
    c->done = 1;
    c->status = status;
    free(c->message);
    c->message = strdup(msg ? msg : "");
}

/* The response ended (END_STREAM): the status is in the trailers. */
static void client_end(wf_grpc_call *c)
{
    conn *cn = c->cn;
    char msg[300];

    if (c->grpc_status >= 0) {
        const char *m = kv_get(c->hdrs, c->hlen, "grpc-message");
        char *d = strdup(m ? m : "");
        if (d)
            pct_decode(d);
        client_done(c, c->grpc_status, d ? d : "");
        free(d);
    } else if (c->http_status != 200) {
        snprintf(msg, sizeof(msg), "%s answered HTTP status %d, not gRPC", cn->peer,
                 c->http_status);
        client_done(c, http_to_grpc(c->http_status), msg);
    } else {
        snprintf(msg, sizeof(msg), "%s ended the call without grpc-status", cn->peer);
        client_done(c, WF_GRPC_UNKNOWN, msg);
    }
    conn_close(cn, NULL);
}

/* The client gives up on the call: reset the stream, then close. */
static void conn_drain(conn *cn, const char *reason);

static void client_fail(wf_grpc_call *c, int status, const char *msg)
{
    conn *cn = c->cn;

    WF_WARN("grpc: call %s to %s: %s", c->path, cn->peer, msg);
    client_done(c, status, msg);
    c->rx_done = 1;
    if (c->sid)
        nghttp2_submit_rst_stream(cn->ng, NGHTTP2_FLAG_NONE, c->sid, NGHTTP2_CANCEL);
    conn_drain(cn, msg);
}

/* ---------------------------------------------------------------------- */
/* message reassembly */

static void deliver(wf_grpc_call *c, const uint8_t *msg, size_t len)
{
    conn *cn = c->cn;

    if (c->client) {
        if (!c->done)
            cn->ch.on_message(c, msg, len, cn->ch.ud);
    } else if (c->accepted && !c->fin && !c->cancelled) {
        cn->srv->h.on_message(c, msg, len, cn->srv->h.ud);
    }
}

static void rx_fail(wf_grpc_call *c, int status, const char *msg)
{
    if (c->client)
        client_fail(c, status, msg);
    else
        server_fail(c, status, msg);
}

static void on_bytes(wf_grpc_call *c, const uint8_t *p, size_t len)
{
    conn *cn = c->cn;
    char msg[200];

    while (len && !c->rx_done && !cn->closing) {
        if (c->pfx_have < 5) {
            size_t take = 5 - c->pfx_have < len ? 5 - c->pfx_have : len;
            memcpy(c->pfx + c->pfx_have, p, take);
            c->pfx_have += take;
            p += take;
            len -= take;
            if (c->pfx_have < 5)
                return;
            c->rlen = (size_t)c->pfx[1] << 24 | (size_t)c->pfx[2] << 16 | (size_t)c->pfx[3] << 8 |
                      c->pfx[4];
            c->rhave = 0;
            if (c->pfx[0] != 0) {
                snprintf(msg, sizeof(msg),
                         "compressed message (flag %u) received; only grpc-encoding identity "
                         "is supported",
                         c->pfx[0]);
                rx_fail(c, c->pfx[0] == 1 ? WF_GRPC_UNIMPLEMENTED : WF_GRPC_INTERNAL, msg);
                return;
            }
            if (c->rlen > WF_GRPC_MAX_MESSAGE) {
                snprintf(msg, sizeof(msg),
                         "message of %zu bytes is larger than the limit of %d bytes", c->rlen,
                         WF_GRPC_MAX_MESSAGE);
                rx_fail(c, WF_GRPC_RESOURCE_EXHAUSTED, msg);
                return;
            }
            if (c->rlen <= len) {
                /* Whole message in this chunk: no copy. */
                const uint8_t *m = p;
                size_t ml = c->rlen;
                p += ml;
                len -= ml;
                c->pfx_have = 0;
                deliver(c, m, ml);
                continue;
            }
        }
        size_t take = c->rlen - c->rhave < len ? c->rlen - c->rhave : len;
        if (c->rhave + take > c->rcap) {
            /* Grow with what arrives, not with what the prefix claims, so a
             * peer cannot make us allocate by announcing. */
            size_t ncap = c->rcap ? c->rcap : 16384;
            uint8_t *nb;
            while (ncap < c->rhave + take)
                ncap *= 2;
            if (ncap > c->rlen)
                ncap = c->rlen;
            if (cn->rx_buffered + take > RX_BUDGET) {
                rx_fail(c, WF_GRPC_RESOURCE_EXHAUSTED,
                        "too many partial messages buffered on this connection");
                return;
            }
            if (!(nb = realloc(c->rbuf, ncap))) {
                rx_fail(c, WF_GRPC_RESOURCE_EXHAUSTED, "out of memory for a message");
                return;
            }
            c->rbuf = nb;
            c->rcap = ncap;
        }
        memcpy(c->rbuf + c->rhave, p, take);
        c->rhave += take;
        cn->rx_buffered += take;
        p += take;
        len -= take;
        if (c->rhave == c->rlen) {
            cn->rx_buffered -= c->rhave;
            c->rhave = 0;
            c->pfx_have = 0;
            deliver(c, c->rbuf, c->rlen);
            /* Keep a small buffer for the next message; give big ones back. */
            if (c->rcap > 65536) {
                free(c->rbuf);
                c->rbuf = NULL;
                c->rcap = 0;
            }
        }
    }
}

/* ---------------------------------------------------------------------- */
/* nghttp2 callbacks */

static wf_grpc_call *stream_call(nghttp2_session *ng, int32_t sid)
{
    return sid ? nghttp2_session_get_stream_user_data(ng, sid) : NULL;
}

static int cb_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    conn *cn = ud;
    wf_grpc_call *c;

    if (!cn->srv || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (!(c = call_new(cn, 0)))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    c->sid = f->hd.stream_id;
    if (nghttp2_session_set_stream_user_data(ng, c->sid, c) != 0) {
        call_free(c);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    call_link(cn, c);
    return 0;
}

static int cb_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    conn *cn = ud;
    wf_grpc_call *c = stream_call(ng, f->hd.stream_id);

    if (!c || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    c->hsize += namelen + valuelen + 32;
    if (c->hsize > HEADER_BYTES_MAX) {
        char msg[120];
        snprintf(msg, sizeof(msg), "headers larger than %d bytes", HEADER_BYTES_MAX);
        WF_WARN("grpc: connection %llu with %s: stream %d: %s; resetting it", cn->id, cn->peer,
                c->sid, msg);
        if (c->client)
            client_done(c, WF_GRPC_INTERNAL, msg);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (kv_append(&c->hdrs, &c->hlen, &c->hcap, (const char *)name, namelen, (const char *)value,
                  valuelen) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (c->client) {
        if (namelen == 7 && memcmp(name, ":status", 7) == 0)
            c->http_status = atoi((const char *)value);
        else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
            c->grpc_status = atoi((const char *)value);
    }
    return 0;
}

static void log_frame(conn *cn, const char *dir, const nghttp2_frame *f)
{
    if (f->hd.type == NGHTTP2_GOAWAY)
        WF_DEBUG("grpc: connection %llu with %s: %s GOAWAY %s last stream %d%s%.*s", cn->id,
                 cn->peer, dir, h2_error_name(f->goaway.error_code), f->goaway.last_stream_id,
                 f->goaway.opaque_data_len ? ": " : "", (int)f->goaway.opaque_data_len,
                 f->goaway.opaque_data ? (const char *)f->goaway.opaque_data : "");
    else if (f->hd.type == NGHTTP2_RST_STREAM)
        WF_DEBUG("grpc: connection %llu with %s: %s RST_STREAM stream %d %s", cn->id, cn->peer, dir,
                 f->hd.stream_id, h2_error_name(f->rst_stream.error_code));
    else
        WF_DEBUG("grpc: connection %llu with %s: %s %s stream %d length %zu flags 0x%02x", cn->id,
                 cn->peer, dir, frame_name(f->hd.type), f->hd.stream_id, f->hd.length, f->hd.flags);
}

static int cb_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    conn *cn = ud;
    wf_grpc_call *c = stream_call(ng, f->hd.stream_id);
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    if (wf_log_threshold <= WF_LDEBUG)
        log_frame(cn, "recv", f);
    switch (f->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && !cn->settings_seen) {
            cn->settings_seen = 1;
            if (!cn->draining)
                uv_timer_stop(&cn->timer);
        }
        break;
    case NGHTTP2_GOAWAY:
        if (f->goaway.error_code != NGHTTP2_NO_ERROR)
            WF_WARN("grpc: connection %llu with %s: peer sent GOAWAY %s%s%.*s", cn->id, cn->peer,
                    h2_error_name(f->goaway.error_code), f->goaway.opaque_data_len ? ": " : "",
                    (int)f->goaway.opaque_data_len,
                    f->goaway.opaque_data ? (const char *)f->goaway.opaque_data : "");
        if (!cn->reason[0])
            snprintf(cn->reason, sizeof(cn->reason), "%s sent GOAWAY %s%s%.*s", cn->peer,
                     h2_error_name(f->goaway.error_code), f->goaway.opaque_data_len ? ": " : "",
                     (int)f->goaway.opaque_data_len,
                     f->goaway.opaque_data ? (const char *)f->goaway.opaque_data : "");
        break;
    case NGHTTP2_HEADERS:
        if (!c || cn->closing)
            break;
        if (!c->client) {
            if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
                dispatch(c);
            if (end)
                server_half_close(c);
        } else {
            if (f->headers.cat == NGHTTP2_HCAT_RESPONSE && !end && c->http_status != 200) {
                char msg[160];
                snprintf(msg, sizeof(msg), "%s answered HTTP status %d, not gRPC", cn->peer,
                         c->http_status);
                client_fail(c, http_to_grpc(c->http_status), msg);
            } else if (end) {
                client_end(c);
            }
        }
        break;
    case NGHTTP2_DATA:
        if (!c || !end || cn->closing)
            break;
        if (!c->client)
            server_half_close(c);
        else if (c->pfx_have || c->rhave)
            client_fail(c, WF_GRPC_INTERNAL, "the response ended inside a message");
        else
            client_end(c);
        break;
    default:
        break;
    }
    return 0;
}

static int cb_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud)
{
    wf_grpc_call *c = stream_call(ng, sid);

    if (c && !c->refused)
        on_bytes(c, data, len);
    return 0;
}

static int cb_stream_close(nghttp2_session *ng, int32_t sid, uint32_t code, void *ud)
{
    conn *cn = ud;
    wf_grpc_call *c = stream_call(ng, sid);
    char msg[160];

    if (!c)
        return 0;
    nghttp2_session_set_stream_user_data(ng, sid, NULL);
    if (c->client) {
        snprintf(msg, sizeof(msg), "%s reset the stream (%s)", cn->peer, h2_error_name(code));
        client_done(c, rst_to_grpc(code), msg);
        conn_close(cn, NULL);
        return 0;
    }
    if (code != NGHTTP2_NO_ERROR && !c->cancelled)
        WF_DEBUG("grpc: connection %llu from %s: stream %d (%s) reset: %s", cn->id, cn->peer, sid,
                 c->path ? c->path : "?", h2_error_name(code));
    call_unlink(c);
    if (c->accepted && !c->closed) {
        c->closed = 1;
        cn->srv->h.on_close(c, cn->srv->h.ud);
    }
    call_free(c);
    return 0;
}

static int cb_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    conn *cn = ud;

    if (wf_log_threshold <= WF_LDEBUG)
        log_frame(cn, "send", f);
    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR) {
        /* nghttp2 found the peer broke the protocol and ends the connection. */
        WF_WARN("grpc: connection %llu with %s: closing it for %s%s%.*s", cn->id, cn->peer,
                h2_error_name(f->goaway.error_code), f->goaway.opaque_data_len ? ": " : "",
                (int)f->goaway.opaque_data_len,
                f->goaway.opaque_data ? (const char *)f->goaway.opaque_data : "");
        if (!cn->reason[0])
            snprintf(cn->reason, sizeof(cn->reason), "HTTP/2 %s from %s%s%.*s",
                     h2_error_name(f->goaway.error_code), cn->peer,
                     f->goaway.opaque_data_len ? ": " : "", (int)f->goaway.opaque_data_len,
                     f->goaway.opaque_data ? (const char *)f->goaway.opaque_data : "");
    }
    /* After its trailers the server is done; reset a stream the client
     * still holds open so it does not count against its limit (what gRPC
     * servers do). */
    if (cn->srv && f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(ng, f->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int cb_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
    conn *cn = ud;

    WF_DEBUG("grpc: connection %llu with %s: %s on stream %d not sent: %s", cn->id, cn->peer,
             frame_name(f->hd.type), f->hd.stream_id, nghttp2_strerror(err));
    return 0;
}

static int cb_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
    conn *cn = ud;

    WF_WARN("grpc: connection %llu with %s: invalid %s frame on stream %d: %s", cn->id, cn->peer,
            frame_name(f->hd.type), f->hd.stream_id, nghttp2_strerror(err));
    return 0;
}

static int cb_error(nghttp2_session *ng, int err, const char *msg, size_t len, void *ud)
{
    conn *cn = ud;

    WF_WARN("grpc: connection %llu with %s: HTTP/2 error: %.*s", cn->id, cn->peer, (int)len, msg);
    if (!cn->reason[0])
        snprintf(cn->reason, sizeof(cn->reason), "HTTP/2 error from %s: %.*s", cn->peer, (int)len,
                 msg);
    return 0;
}

static int session_new(conn *cn, int server)
{
    nghttp2_session_callbacks *cbs;
    int rv;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, cb_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cb_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, cb_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, cb_frame_not_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, cb_invalid_frame);
    nghttp2_session_callbacks_set_send_data_callback(cbs, cb_send_data);
    nghttp2_session_callbacks_set_error_callback2(cbs, cb_error);
    rv = server ? nghttp2_session_server_new(&cn->ng, cbs, cn)
                : nghttp2_session_client_new(&cn->ng, cbs, cn);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {server ? NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS : NGHTTP2_SETTINGS_ENABLE_PUSH,
         server ? MAX_STREAMS : 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HEADER_LIST_MAX},
    };
    if (nghttp2_submit_settings(cn->ng, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
        nghttp2_session_set_local_window_size(cn->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* connections: I/O and lifetime */

static conn *conn_new(uv_loop_t *loop)
{
    conn *cn = calloc(1, sizeof(*cn));

    if (!cn)
        return NULL;
    cn->loop = loop;
    cn->id = __atomic_add_fetch(&conn_ids, 1, __ATOMIC_RELAXED);
    uv_tcp_init(loop, &cn->tcp);
    uv_timer_init(loop, &cn->timer);
    uv_idle_init(loop, &cn->idle);
    cn->tcp.data = cn->timer.data = cn->idle.data = cn;
    cn->connect.data = cn->gai.data = cn->wr.data = cn;
    cn->refs = 3;
    return cn;
}

static void server_maybe_free(wf_grpc_server *s)
{
    if (s->stopping && s->lclosed && s->nconns == 0) {
        wf_tls_ctx_unref(s->tls);
        free(s);
    }
}

/* Every handle is closed: end the calls still open, then free. */
static void conn_finalize(conn *cn)
{
    wf_grpc_server *srv = cn->srv;
    wf_grpc_call *c;

    if (srv) {
        while ((c = cn->calls)) {
            call_unlink(c);
            if (c->accepted && !c->closed) {
                c->closed = 1;
                srv->h.on_close(c, srv->h.ud);
            }
            call_free(c);
        }
        if (cn->prev)
            cn->prev->next = cn->next;
        else
            srv->conns = cn->next;
        if (cn->next)
            cn->next->prev = cn->prev;
    } else if ((c = cn->ccall)) {
        char msg[300];
        if (!c->done) {
            snprintf(msg, sizeof(msg), "%s",
                     cn->reason[0] ? cn->reason : "the connection closed before the call ended");
            client_done(c, WF_GRPC_UNAVAILABLE, msg);
        }
        c->closed = 1;
        cn->ch.on_close(c, c->status, c->message ? c->message : "", cn->ch.ud);
        call_free(c);
    }
    nghttp2_session_del(cn->ng);
    wf_tls_conn_free(cn->tls);
    spent_free(cn);
    free(cn->fbuf);
    free(cn->pieces);
    free(cn->iov);
    free(cn->wbuf);
    free(cn->tbuf);
    free(cn);
    if (srv) {
        srv->nconns--;
        server_maybe_free(srv);
    }
}

static void conn_unref(conn *cn)
{
    if (--cn->refs == 0)
        conn_finalize(cn);
}

static void handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void tls_last_words(conn *cn);

static void conn_close(conn *cn, const char *reason)
{
    if (cn->hclosed)
        return;
    if (reason && !cn->reason[0])
        snprintf(cn->reason, sizeof(cn->reason), "%s", reason);
    if (cn->tls)
        tls_last_words(cn);
    WF_DEBUG("grpc: connection %llu with %s closed: %s", cn->id, cn->peer,
             cn->reason[0] ? cn->reason : "done");
    cn->closing = 1;
    cn->hclosed = 1;
    if (cn->resolving)
        uv_cancel((uv_req_t *)&cn->gai);
    uv_close((uv_handle_t *)&cn->tcp, handle_closed);
    uv_close((uv_handle_t *)&cn->timer, handle_closed);
    uv_close((uv_handle_t *)&cn->idle, handle_closed);
}

static void timer_fired(uv_timer_t *t)
{
    conn *cn = t->data;
    char msg[256];

    if (cn->draining) {
        conn_close(cn, NULL);
        return;
    }
    if (cn->srv && cn->tls && !wf_tls_established(cn->tls)) {
        snprintf(msg, sizeof(msg), "%s did not complete the TLS handshake within %g s", cn->peer,
                 wf__grpc_handshake_ms / 1000.0);
        WF_WARN("grpc: connection %llu: %s; closing it", cn->id, msg);
    } else if (cn->srv) {
        snprintf(msg, sizeof(msg), "%s sent no HTTP/2 preface and SETTINGS within %g s", cn->peer,
                 wf__grpc_handshake_ms / 1000.0);
        WF_WARN("grpc: connection %llu: %s; closing it", cn->id, msg);
    } else if (!cn->connected) {
        snprintf(msg, sizeof(msg),
                 "connecting to %s timed out after %g s (is the address right and reachable?)",
                 cn->peer, wf__grpc_handshake_ms / 1000.0);
    } else if (cn->tls && !wf_tls_established(cn->tls)) {
        snprintf(msg, sizeof(msg),
                 "TLS: %s did not complete the handshake within %g s (is it a TLS server?)",
                 cn->peer, wf__grpc_handshake_ms / 1000.0);
    } else if (cn->tls) {
        snprintf(msg, sizeof(msg), "%s sent no HTTP/2 SETTINGS within %g s (is it a gRPC server?)",
                 cn->peer, wf__grpc_handshake_ms / 1000.0);
    } else {
        snprintf(msg, sizeof(msg),
                 "%s sent no HTTP/2 SETTINGS within %g s (is it a gRPC server speaking h2c, "
                 "not TLS or HTTP/1.1?)",
                 cn->peer, wf__grpc_handshake_ms / 1000.0);
    }
    conn_close(cn, msg);
}

/* Stops reading, lets what nghttp2 has queued (GOAWAY, RST_STREAM) go out,
 * then closes; DRAIN_MS at most, whatever the peer does. */
static void conn_drain(conn *cn, const char *reason)
{
    if (cn->hclosed || cn->draining)
        return;
    if (reason && !cn->reason[0])
        snprintf(cn->reason, sizeof(cn->reason), "%s", reason);
    if (!cn->connected) {
        conn_close(cn, NULL);
        return;
    }
    cn->draining = 1;
    cn->closing = 1;
    uv_read_stop((uv_stream_t *)&cn->tcp);
    uv_timer_start(&cn->timer, timer_fired, DRAIN_MS, 0);
    want_flush(cn);
}

static void written(uv_write_t *w, int status)
{
    conn *cn = w->data;

    cn->wbusy = 0;
    spent_free(cn);
    if (cn->hclosed)
        return;
    if (status < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "writing to %s failed: %s", cn->peer, uv_strerror(status));
        conn_close(cn, msg);
        return;
    }
    flush(cn);
}

/* Appends n bytes to a growing buffer.  -1 on out of memory. */
static int buf_append(uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        uint8_t *nb;
        while (ncap < *len + n)
            ncap *= 2;
        if (!(nb = realloc(*buf, ncap)))
            return -1;
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

/* Adds n bytes to the write being gathered: a copy in fbuf, or (ref) the
 * bytes in place.  -1 on out of memory. */
static int gather(conn *cn, const uint8_t *p, size_t n, int ref)
{
    piece *last = cn->npieces ? &cn->pieces[cn->npieces - 1] : NULL;

    if (!n)
        return 0;
    if (!ref) {
        if (buf_append(&cn->fbuf, &cn->flen, &cn->fcap, p, n) < 0)
            return -1;
        if (last && !last->p) {
            last->len += n;
            cn->gathered += n;
            return 0;
        }
        p = NULL;
    }
    cn->gathered += n;
    if (cn->npieces == cn->piececap) {
        size_t ncap = cn->piececap ? cn->piececap * 2 : 16;
        piece *np = realloc(cn->pieces, ncap * sizeof(*np));
        if (!np)
            return -1;
        cn->pieces = np;
        cn->piececap = ncap;
    }
    cn->pieces[cn->npieces++] = (piece){p, p ? 0 : cn->flen - n, n};
    return 0;
}

/* nghttp2 sends a DATA frame of the call's queue (data_read said NO_COPY):
 * its header is copied, its bytes are gathered where they are. */
static int cb_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud)
{
    static const uint8_t zeros[256];
    conn *cn = ud;
    wf_grpc_call *c = src->ptr;
    size_t pad = f->data.padlen;
    uint8_t padlen = (uint8_t)(pad ? pad - 1 : 0);

    (void)ng;
    if (gather(cn, framehd, 9, 0) < 0 || (pad && gather(cn, &padlen, 1, 0) < 0))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    while (length) {
        chunk *k = c->qhead;
        size_t take;
        if (!k)
            return NGHTTP2_ERR_CALLBACK_FAILURE; /* data_read promised more */
        take = k->len - k->off < length ? k->len - k->off : length;
        if (gather(cn, k->p + k->off, take, 1) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        k->off += take;
        c->queued -= take;
        length -= take;
        if (k->off == k->len) {
            c->qhead = k->next;
            if (!c->qhead)
                c->qtail = NULL;
            k->next = cn->spent;
            cn->spent = k;
        }
    }
    if (pad > 1 && gather(cn, zeros, pad - 1, 0) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* Gathers frames from nghttp2 (about WRITE_BATCH bytes at most) into
 * cn->pieces.  Returns -1 when the connection was closed meanwhile. */
static int pull_frames(conn *cn)
{
    cn->flen = cn->npieces = cn->gathered = 0;
    while (cn->gathered < WRITE_BATCH && cn->npieces < WRITE_PIECES) {
        const uint8_t *p;
        ssize_t n;
        cn->in_ng++;
        n = nghttp2_session_mem_send(cn->ng, &p);
        cn->in_ng--;
        if (cn->hclosed)
            return -1;
        if (n < 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "HTTP/2 session with %s failed: %s", cn->peer,
                     nghttp2_strerror((int)n));
            WF_WARN("grpc: connection %llu: %s", cn->id, msg);
            conn_close(cn, msg);
            return -1;
        }
        if (n == 0)
            break;
        if (gather(cn, p, (size_t)n, 0) < 0) {
            conn_close(cn, "out of memory for the write buffer");
            return -1;
        }
    }
    return 0;
}

/* The gathered pieces as buffers (valid until the next pull). */
static uv_buf_t *gathered_bufs(conn *cn)
{
    if (cn->npieces > cn->iovcap) {
        uv_buf_t *nb = realloc(cn->iov, cn->npieces * sizeof(*nb));
        if (!nb)
            return NULL;
        cn->iov = nb;
        cn->iovcap = cn->npieces;
    }
    for (size_t i = 0; i < cn->npieces; i++) {
        const piece *pc = &cn->pieces[i];
        cn->iov[i] = uv_buf_init((char *)(pc->p ? pc->p : cn->fbuf + pc->off), (unsigned)pc->len);
    }
    return cn->iov;
}

/* The one uv_write in flight. */
static void start_write(conn *cn, const uv_buf_t *bufs, size_t n)
{
    int rv;

    if ((rv = uv_write(&cn->wr, (uv_stream_t *)&cn->tcp, bufs, (unsigned)n, written)) < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "writing to %s failed: %s", cn->peer, uv_strerror(rv));
        conn_close(cn, msg);
        return;
    }
    cn->wbusy = 1;
}

static void tls_failed(conn *cn);

/* Write buffers are kept while a connection has more to write and let go
 * once it has nothing: istiod holds thousands of connections, mostly quiet,
 * and each would otherwise keep the largest push it ever sent for its
 * life. */
static void release_write_buffers(conn *cn)
{
    free(cn->fbuf);
    free(cn->pieces);
    free(cn->iov);
    free(cn->wbuf);
    cn->fbuf = cn->wbuf = NULL;
    cn->pieces = NULL;
    cn->iov = NULL;
    cn->fcap = cn->flen = cn->piececap = cn->npieces = cn->iovcap = cn->wcap = 0;
}

/* TLS: frames are encrypted into tbuf, which then becomes the write. */
static void tls_flush(conn *cn)
{
    int est = cn->tls_ok;
    size_t gathered = 0;

    if (est) {
        if (pull_frames(cn) < 0)
            return;
        if ((gathered = cn->npieces)) {
            uv_buf_t *b = gathered_bufs(cn);
            int rv = b ? wf_tls_write(cn->tls, b, cn->npieces) : -1;
            cn->npieces = 0;
            spent_free(cn); /* encrypted: nothing points into them */
            if (rv < 0) {
                tls_failed(cn);
                return;
            }
        }
    }
    if (cn->tlen) {
        uint8_t *t = cn->wbuf;
        size_t tc = cn->wcap;
        uv_buf_t b;
        cn->wbuf = cn->tbuf;
        cn->wcap = cn->tcap;
        cn->wlen = cn->tlen;
        cn->tbuf = t;
        cn->tcap = tc;
        cn->tlen = 0;
        b = uv_buf_init((char *)cn->wbuf, (unsigned)cn->wlen);
        start_write(cn, &b, 1);
        return;
    }
    if (est && !gathered)
        release_write_buffers(cn);
    if (cn->draining ||
        (est && !nghttp2_session_want_read(cn->ng) && !nghttp2_session_want_write(cn->ng)))
        conn_close(cn, NULL);
}

/* Gathers frames from nghttp2 and writes them, one uv_write at a time. */
static void flush(conn *cn)
{
    if (cn->in_ng || cn->wbusy || cn->hclosed || !cn->connected)
        return;
    spent_free(cn);
    if (cn->tls) {
        tls_flush(cn);
        return;
    }
    if (pull_frames(cn) < 0)
        return;
    if (cn->npieces) {
        uv_buf_t *b = gathered_bufs(cn);
        size_t n = cn->npieces;
        cn->npieces = 0;
        if (!b) {
            conn_close(cn, "out of memory for the write buffer");
            return;
        }
        start_write(cn, b, n);
        return;
    }
    release_write_buffers(cn);
    if (cn->draining || (!nghttp2_session_want_read(cn->ng) && !nghttp2_session_want_write(cn->ng)))
        conn_close(cn, NULL);
}

static void idle_cb(uv_idle_t *h)
{
    conn *cn = h->data;

    uv_idle_stop(h);
    flush(cn);
}

static void want_flush(conn *cn)
{
    if (!cn->hclosed && cn->connected && !uv_is_active((uv_handle_t *)&cn->idle))
        uv_idle_start(&cn->idle, idle_cb);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    /* nghttp2 consumes all it is given, so one buffer per thread serves
     * every connection on it. */
    static __thread void *rbuf;

    b->base = wf_thread_buffer(&rbuf, 65536);
    b->len = b->base ? 65536 : 0; /* libuv reports ENOBUFS */
}

/* Hands received HTTP/2 bytes to nghttp2 (the caller counts in_ng).
 * Returns -1 when the connection is closed. */
static int h2_recv(conn *cn, const char *data, size_t len)
{
    ssize_t rv = nghttp2_session_mem_recv(cn->ng, (const uint8_t *)data, len);
    char msg[200];

    if (cn->hclosed)
        return -1;
    if (rv < 0) {
        if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            unsigned char c0 = (unsigned char)data[0];
            snprintf(msg, sizeof(msg), "%s did not send the HTTP/2 preface%s", cn->peer,
                     c0 == 0x16 && !cn->tls   ? " (it speaks TLS; this port is plaintext h2c)"
                     : c0 >= 'A' && c0 <= 'Z' ? " (it speaks HTTP/1.1; gRPC needs HTTP/2)"
                                              : "");
        } else {
            snprintf(msg, sizeof(msg), "HTTP/2 error from %s: %s", cn->peer,
                     nghttp2_strerror((int)rv));
        }
        WF_WARN("grpc: connection %llu: %s", cn->id, msg);
        conn_close(cn, msg);
        return -1;
    }
    return 0;
}

/* The handshake is over: check ALPN once, before any HTTP/2 byte counts. */
static int tls_ready(conn *cn)
{
    const char *alpn;
    char msg[200];

    if (cn->tls_ok)
        return 0;
    alpn = wf_tls_alpn(cn->tls);
    if (alpn && strcmp(alpn, "h2") != 0) {
        snprintf(msg, sizeof(msg), "TLS: %s negotiated ALPN \"%s\", but gRPC needs h2", cn->peer,
                 alpn);
        WF_WARN("grpc: connection %llu: %s", cn->id, msg);
        conn_close(cn, msg);
        return -1;
    }
    cn->tls_ok = 1;
    WF_DEBUG("grpc: connection %llu with %s: TLS %s%s, ALPN %s, peer %s", cn->id, cn->peer,
             wf_tls_cipher(cn->tls), wf_tls_resumed(cn->tls) ? " (resumed)" : "",
             alpn ? alpn : "none",
             wf_tls_peer_id(cn->tls) ? wf_tls_peer_id(cn->tls) : "without a verified identity");
    return 0;
}

static int tls_deliver(void *ud, const char *data, size_t len)
{
    conn *cn = ud;

    if (cn->hclosed || cn->closing || tls_ready(cn) < 0)
        return 1;
    return h2_recv(cn, data, len) < 0 ? 1 : 0;
}

/* The TLS layer failed (handshake, record, identity): close with its reason,
 * which a client call reports as UNAVAILABLE. */
static void tls_failed(conn *cn)
{
    char msg[sizeof(cn->reason)];

    snprintf(msg, sizeof(msg), "TLS: %s", wf_tls_error(cn->tls));
    if (cn->srv)
        WF_WARN("grpc: connection %llu from %s: %s", cn->id, cn->peer, msg);
    else
        WF_WARN("grpc: call %s to %s: %s", cn->ccall ? cn->ccall->path : "?", cn->peer, msg);
    conn_close(cn, msg);
}

/* Ciphertext from the TLS layer: kept for the next write. */
static int tls_send(void *ud, const char *data, size_t len)
{
    conn *cn = ud;

    return buf_append(&cn->tbuf, &cn->tlen, &cn->tcap, data, len);
}

/* Before the handles close: close_notify (or the alert already made), if
 * the socket takes it now; nothing waits for it. */
static void tls_last_words(conn *cn)
{
    if (!cn->connected || cn->wbusy)
        return;
    if (cn->tls_ok)
        wf_tls_close_notify(cn->tls);
    if (cn->tlen) {
        uv_buf_t b = uv_buf_init((char *)cn->tbuf, (unsigned)cn->tlen);
        uv_try_write((uv_stream_t *)&cn->tcp, &b, 1);
        cn->tlen = 0;
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn *cn = s->data;
    char msg[200];
    int rc;

    if (nread == 0 || cn->hclosed)
        return;
    if (nread < 0) {
        if (cn->tls && !wf_tls_established(cn->tls))
            snprintf(msg, sizeof(msg), "TLS: %s %s during the handshake (%s)", cn->peer,
                     nread == UV_EOF ? "closed the connection" : uv_strerror((int)nread),
                     cn->srv ? "did it refuse our certificate?"
                             : "does it want a client certificate we do not have, or not speak "
                               "TLS?");
        else if (nread == UV_EOF)
            snprintf(msg, sizeof(msg), "%s closed the connection", cn->peer);
        else
            snprintf(msg, sizeof(msg), "reading from %s failed: %s", cn->peer,
                     uv_strerror((int)nread));
        conn_close(cn, msg);
        return;
    }
    if (cn->closing)
        return;
    cn->in_ng++;
    if (cn->tls)
        rc = wf_tls_feed(cn->tls, b->base, (size_t)nread, tls_deliver, cn);
    else
        rc = h2_recv(cn, b->base, (size_t)nread);
    cn->in_ng--;
    if (cn->hclosed)
        return;
    if (cn->tls) {
        if (rc == WF_TLS_EOF) {
            snprintf(msg, sizeof(msg), "%s ended the TLS session", cn->peer);
            conn_close(cn, msg);
            return;
        }
        if (rc < 0) {
            tls_failed(cn);
            return;
        }
        if (wf_tls_established(cn->tls) && tls_ready(cn) < 0)
            return;
    }
    flush(cn);
}

static void conn_started(conn *cn)
{
    uv_os_fd_t fd;

    uv_tcp_nodelay(&cn->tcp, 1);
    /* A peer that vanished (host gone, no RST) is noticed by TCP keepalive,
     * about a minute and a half after the last byte; an idle xDS stream
     * would otherwise hold it forever.  libuv sets only the idle time. */
    uv_tcp_keepalive(&cn->tcp, 1, 30);
#if defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
    if (uv_fileno((uv_handle_t *)&cn->tcp, &fd) == 0) {
        int intvl = 10, cnt = 6;
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
#else
    (void)fd;
#endif
    uv_read_start((uv_stream_t *)&cn->tcp, alloc_cb, read_cb);
}

/* ---------------------------------------------------------------------- */
/* server */

static void on_accept(uv_stream_t *l, int status)
{
    wf_grpc_server *s = l->data;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    conn *cn;

    if (status < 0) {
        WF_WARN("grpc: accepting on %s failed: %s", s->addr, uv_strerror(status));
        return;
    }
    if (!(cn = conn_new(s->loop))) {
        WF_ERROR("grpc: out of memory accepting a connection on %s", s->addr);
        return;
    }
    cn->srv = s;
    cn->next = s->conns;
    if (s->conns)
        s->conns->prev = cn;
    s->conns = cn;
    s->nconns++;
    snprintf(cn->peer, sizeof(cn->peer), "?");
    if (uv_accept(l, (uv_stream_t *)&cn->tcp) < 0) {
        conn_close(cn, "accept failed");
        return;
    }
    if (uv_tcp_getpeername(&cn->tcp, (struct sockaddr *)&ss, &sl) == 0)
        sockaddr_text((struct sockaddr *)&ss, cn->peer, sizeof(cn->peer));
    WF_DEBUG("grpc: connection %llu from %s", cn->id, cn->peer);
    if (session_new(cn, 1) < 0) {
        WF_ERROR("grpc: cannot set up HTTP/2 for %s (out of memory)", cn->peer);
        conn_close(cn, "out of memory");
        return;
    }
    if (s->tls) {
        wf_tls_conn_opts o = {.send = tls_send, .ud = cn};
        char *err = NULL;
        if (!(cn->tls = wf_tls_conn_new(s->tls, &o, &err))) {
            WF_ERROR("grpc: cannot set up TLS for %s: %s", cn->peer, err ? err : "out of memory");
            free(err);
            conn_close(cn, "TLS set-up failed");
            return;
        }
    }
    cn->connected = 1;
    uv_timer_start(&cn->timer, timer_fired, wf__grpc_handshake_ms, 0);
    conn_started(cn);
    flush(cn);
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss, char *host, size_t hostlen,
                      int *port)
{
    if (wf_addr_split(addr, host, hostlen, port) < 0 || *port < 0 || *port > 65535)
        return -1;
    if (uv_ip4_addr(host, *port, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(host, *port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return 1; /* a name */
}

static void free_data(uv_handle_t *h)
{
    free(h->data);
}

static int has_h2(const wf_tls_ctx *tls)
{
    const char *const *a = wf_tls_ctx_alpn(tls);

    for (; a && *a; a++)
        if (strcmp(*a, "h2") == 0)
            return 1;
    return 0;
}

static wf_grpc_server *server_start(uv_loop_t *loop, const char *addr,
                                    const wf_grpc_server_handlers *h, wf_tls_ctx *tls, char *err,
                                    size_t errlen)
{
    struct sockaddr_storage ss;
    char host[256];
    int port, r, sl = sizeof(ss);
    wf_grpc_server *s;

    if (parse_addr(addr, &ss, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "gRPC listen address \"%s\" is not IP:PORT", addr ? addr : "");
        return NULL;
    }
    if (!h || !h->on_call || !h->on_message || !h->on_close) {
        snprintf(err, errlen, "gRPC server on %s: on_call, on_message and on_close are required",
                 addr);
        return NULL;
    }
    if (!(s = calloc(1, sizeof(*s)))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->h = *h;
    if ((s->tls = tls))
        wf_tls_ctx_ref(tls);
    snprintf(s->addr, sizeof(s->addr), "%s", addr);
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    if ((r = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0)) < 0 ||
        (r = uv_listen((uv_stream_t *)&s->tcp, 511, on_accept)) < 0) {
        snprintf(err, errlen, "cannot listen for gRPC on %s: %s", addr, uv_strerror(r));
        wf_tls_ctx_unref(s->tls);
        s->tls = NULL;
        uv_close((uv_handle_t *)&s->tcp, free_data);
        return NULL;
    }
    if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    WF_DEBUG("grpc: listening on %s (port %d%s)", addr, s->port, tls ? ", TLS" : "");
    return s;
}

wf_grpc_server *wf_grpc_server_start(uv_loop_t *loop, const char *addr,
                                     const wf_grpc_server_handlers *h, char *err, size_t errlen)
{
    return server_start(loop, addr, h, NULL, err, errlen);
}

wf_grpc_server *wf_grpc_server_start_tls(uv_loop_t *loop, const char *addr,
                                         const wf_grpc_server_handlers *h, wf_tls_ctx *tls,
                                         char *err, size_t errlen)
{
    if (!tls) {
        snprintf(err, errlen, "gRPC server on %s: no TLS context given", addr ? addr : "");
        return NULL;
    }
    if (!has_h2(tls)) {
        snprintf(err, errlen,
                 "gRPC server on %s: its TLS context must offer ALPN \"h2\" (gRPC clients "
                 "refuse a server that does not)",
                 addr ? addr : "");
        return NULL;
    }
    return server_start(loop, addr, h, tls, err, errlen);
}

void wf_grpc_server_set_tls(wf_grpc_server *s, wf_tls_ctx *tls)
{
    if (!s || !tls || s->tls == tls)
        return;
    if (!s->tls) {
        WF_ERROR("grpc: server on %s is plaintext; it cannot switch to TLS", s->addr);
        return;
    }
    if (!has_h2(tls)) {
        WF_ERROR("grpc: server on %s: new TLS context does not offer ALPN h2; keeping the old one",
                 s->addr);
        return;
    }
    /* Connections hold their own reference (through their wf_tls_conn). */
    wf_tls_ctx_ref(tls);
    wf_tls_ctx_unref(s->tls);
    s->tls = tls;
}

int wf_grpc_server_port(const wf_grpc_server *s)
{
    return s ? s->port : -1;
}

static void listener_closed(uv_handle_t *h)
{
    wf_grpc_server *s = h->data;

    s->lclosed = 1;
    server_maybe_free(s);
}

void wf_grpc_server_stop(wf_grpc_server *s)
{
    conn *cn, *next;

    if (!s || s->stopping)
        return;
    s->stopping = 1;
    uv_close((uv_handle_t *)&s->tcp, listener_closed);
    for (cn = s->conns; cn; cn = next) {
        next = cn->next;
        if (cn->hclosed || cn->draining)
            continue;
        nghttp2_submit_goaway(cn->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(cn->ng), NGHTTP2_NO_ERROR,
                              (const uint8_t *)"server stopping", 15);
        conn_drain(cn, "the server is stopping");
    }
}

/* ---------------------------------------------------------------------- */
/* client */

static void on_connect(uv_connect_t *req, int status)
{
    conn *cn = req->data;
    wf_grpc_call *c = cn->ccall;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char msg[300];

    if (status == UV_ECANCELED || cn->hclosed)
        return;
    if (status < 0) {
        snprintf(msg, sizeof(msg), "cannot connect to %s: %s", cn->peer, uv_strerror(status));
        conn_close(cn, msg);
        return;
    }
    if (uv_tcp_getpeername(&cn->tcp, (struct sockaddr *)&ss, &sl) == 0)
        sockaddr_text((struct sockaddr *)&ss, cn->peer, sizeof(cn->peer));
    cn->connected = 1;
    conn_started(cn);
    if (cn->tls && wf_tls_start(cn->tls) < 0) {
        tls_failed(cn);
        return;
    }

    nghttp2_nv nv[64];
    size_t n = 0;
    nv_set(&nv[n++], ":method", "POST");
    nv_set(&nv[n++], ":scheme", cn->tls ? "https" : "http");
    nv_set(&nv[n++], ":path", c->path);
    nv_set(&nv[n++], ":authority", c->authority);
    nv_set(&nv[n++], "te", "trailers");
    nv_set(&nv[n++], "content-type", "application/grpc");
    nv_set(&nv[n++], "user-agent", USER_AGENT);
    nv_set(&nv[n++], "grpc-accept-encoding", "identity");
    for (size_t i = 0; i < c->xlen && n < sizeof(nv) / sizeof(nv[0]);) {
        const char *hn = c->xhdrs + i, *hv = hn + strlen(hn) + 1;
        nv_set(&nv[n++], hn, hv);
        i = (size_t)(hv - c->xhdrs) + strlen(hv) + 1;
    }
    nghttp2_data_provider dp = {.source.ptr = c, .read_callback = data_read};
    int32_t sid = nghttp2_submit_request(cn->ng, NULL, nv, n, &dp, c);
    if (sid < 0) {
        snprintf(msg, sizeof(msg), "cannot send the request to %s: %s", cn->peer,
                 nghttp2_strerror(sid));
        conn_close(cn, msg);
        return;
    }
    c->sid = sid;
    WF_DEBUG("grpc: connection %llu to %s: call %s on stream %d", cn->id, cn->peer, c->path, sid);
    if (cn->ch.on_open)
        cn->ch.on_open(c, cn->ch.ud);
    flush(cn);
}

static void start_connect(conn *cn, const struct sockaddr *sa)
{
    char msg[300];
    int rv = uv_tcp_connect(&cn->connect, &cn->tcp, sa, on_connect);

    if (rv < 0) {
        snprintf(msg, sizeof(msg), "cannot connect to %s: %s", cn->peer, uv_strerror(rv));
        conn_close(cn, msg);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn *cn = req->data;
    char msg[300];

    cn->resolving = 0;
    if (!cn->hclosed) {
        if (status < 0 || !res) {
            snprintf(msg, sizeof(msg), "cannot resolve %s: %s", cn->peer,
                     status < 0 ? uv_strerror(status) : "no address");
            conn_close(cn, msg);
        } else {
            start_connect(cn, res->ai_addr);
        }
    }
    uv_freeaddrinfo(res);
    conn_unref(cn);
}

static wf_grpc_call *client_call(uv_loop_t *loop, const char *addr, const char *path,
                                 const char *authority, const wf_grpc_tls *tls,
                                 const wf_grpc_client_handlers *h, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    char host[256], portstr[16];
    int port, kind;
    conn *cn;
    wf_grpc_call *c;

    if (!addr || (kind = parse_addr(addr, &ss, host, sizeof(host), &port)) < 0 || port == 0) {
        snprintf(err, errlen, "gRPC server address \"%s\" is not HOST:PORT", addr ? addr : "");
        return NULL;
    }
    if (!path || path[0] != '/') {
        snprintf(err, errlen, "gRPC method \"%s\" must look like /package.Service/Method",
                 path ? path : "");
        return NULL;
    }
    if (!h || !h->on_message || !h->on_close) {
        snprintf(err, errlen, "gRPC call %s: on_message and on_close are required", path);
        return NULL;
    }
    if (!(cn = conn_new(loop)) || !(c = call_new(cn, 1))) {
        if (cn)
            conn_close(cn, NULL); /* no call yet: finalize only frees */
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cn->ccall = c;
    cn->ch = *h;
    snprintf(cn->peer, sizeof(cn->peer), "%s", addr);
    c->path = strdup(path);
    c->authority = strdup(authority ? authority : addr);
    if (!c->path || !c->authority || session_new(cn, 0) < 0) {
        cn->ccall = NULL;
        call_free(c);
        conn_close(cn, NULL);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (tls) {
        /* SNI: the name to verify (the TLS layer sends it), else the host
         * dialled when it is a name. */
        wf_tls_conn_opts o = {.send = tls_send,
                              .ud = cn,
                              .sni = !tls->verify_name && kind == 1 ? host : NULL,
                              .verify_name = tls->verify_name,
                              .peer_ids = tls->peer_ids,
                              .n_peer_ids = tls->n_peer_ids};
        char *terr = NULL;
        if (!(cn->tls = wf_tls_conn_new(tls->ctx, &o, &terr))) {
            snprintf(err, errlen, "gRPC call %s to %s: %s", path, addr,
                     terr ? terr : "out of memory");
            free(terr);
            cn->ccall = NULL;
            call_free(c);
            conn_close(cn, NULL);
            return NULL;
        }
    }
    uv_timer_start(&cn->timer, timer_fired, wf__grpc_handshake_ms, 0);
    if (kind == 0) {
        start_connect(cn, (struct sockaddr *)&ss);
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        int rv;
        snprintf(portstr, sizeof(portstr), "%d", port);
        cn->resolving = 1;
        cn->refs++;
        if ((rv = uv_getaddrinfo(loop, &cn->gai, on_resolved, host, portstr, &hints)) < 0) {
            char msg[300];
            cn->resolving = 0;
            cn->refs--;
            snprintf(msg, sizeof(msg), "cannot resolve %s: %s", addr, uv_strerror(rv));
            conn_close(cn, msg);
        }
    }
    return c;
}

wf_grpc_call *wf_grpc_client_call(uv_loop_t *loop, const char *addr, const char *path,
                                  const char *authority, const wf_grpc_client_handlers *h,
                                  char *err, size_t errlen)
{
    return client_call(loop, addr, path, authority, NULL, h, err, errlen);
}

wf_grpc_call *wf_grpc_client_call_tls(uv_loop_t *loop, const char *addr, const char *path,
                                      const char *authority, const wf_grpc_tls *tls,
                                      const wf_grpc_client_handlers *h, char *err, size_t errlen)
{
    if (!tls || !tls->ctx) {
        snprintf(err, errlen, "gRPC call %s: no TLS context given", path ? path : "");
        return NULL;
    }
    if (!has_h2(tls->ctx)) {
        snprintf(err, errlen,
                 "gRPC call %s: its TLS context must offer ALPN \"h2\" (gRPC servers refuse a "
                 "client that does not)",
                 path ? path : "");
        return NULL;
    }
    return client_call(loop, addr, path, authority, tls, h, err, errlen);
}

int wf_grpc_add_header(wf_grpc_call *c, const char *name, const char *value)
{
    if (!c || !c->client || c->sid || c->cn->closing || !name || !*name || name[0] == ':' || !value)
        return -1;
    for (const char *p = name; *p; p++)
        if ((*p >= 'A' && *p <= 'Z') || *p <= ' ' || *p == 0x7f || *p == ':')
            return -1;
    for (const char *p = value; *p; p++)
        if (*p == '\r' || *p == '\n')
            return -1;
    return kv_append(&c->xhdrs, &c->xlen, &c->xcap, name, strlen(name), value, strlen(value));
}

/* ---------------------------------------------------------------------- */
/* both sides */

static int can_send(const wf_grpc_call *c)
{
    return c && !c->closed && !c->fin && !c->cancelled && !c->refused && !c->done &&
           !c->cn->closing;
}

/* The 5-byte gRPC message prefix (uncompressed) of a len-byte message. */
static void message_prefix(uint8_t pfx[5], size_t len)
{
    pfx[0] = 0;
    pfx[1] = (uint8_t)(len >> 24);
    pfx[2] = (uint8_t)(len >> 16);
    pfx[3] = (uint8_t)(len >> 8);
    pfx[4] = (uint8_t)len;
}

int wf_grpc_send(wf_grpc_call *c, const uint8_t *msg, size_t len)
{
    uint8_t pfx[5];
    chunk *k;

    if (!can_send(c) || len > WF_GRPC_MAX_MESSAGE || (len && !msg))
        return -1;
    message_prefix(pfx, len);
    if (!(k = chunk_new(pfx, 5, msg, len, NULL, NULL)))
        return -1;
    enqueue(c, k);
    call_kick(c);
    return 0;
}

int wf_grpc_send_shared(wf_grpc_call *c, const uint8_t *body, size_t body_len, const uint8_t *tail,
                        size_t tail_len, void (*release)(void *), void *arg)
{
    size_t len = body_len + tail_len;
    uint8_t pfx[5];
    chunk *head, *mid, *end;

    if (!can_send(c) || len > WF_GRPC_MAX_MESSAGE || !body || !release || (tail_len && !tail))
        return -1;
    message_prefix(pfx, len);
    head = chunk_new(NULL, 0, pfx, 5, NULL, NULL);
    mid = chunk_new(NULL, 0, body, body_len, release, arg);
    end = tail_len ? chunk_new(NULL, 0, tail, tail_len, NULL, NULL) : NULL;
    if (!head || !mid || (tail_len && !end)) {
        free(head);
        free(mid); /* not chunk_free: the caller keeps its reference on failure */
        free(end);
        return -1;
    }
    head->next = mid;
    mid->next = end;
    enqueue(c, head);
    call_kick(c);
    return 0;
}

int wf__grpc_send_raw(wf_grpc_call *c, const uint8_t *bytes, size_t len)
{
    chunk *k;

    if (!can_send(c) || !(k = chunk_new(NULL, 0, bytes, len, NULL, NULL)))
        return -1;
    enqueue(c, k);
    call_kick(c);
    return 0;
}

size_t wf_grpc_queued(const wf_grpc_call *c)
{
    return c ? c->queued : 0;
}

void wf_grpc_finish(wf_grpc_call *c, int status, const char *message)
{
    if (!c || c->closed || c->fin || c->cancelled || c->done)
        return;
    c->fin = 1;
    if (!c->client) {
        c->status = status;
        set_message(c, message);
    }
    if (!c->cn->closing)
        call_kick(c);
}

void wf_grpc_cancel(wf_grpc_call *c)
{
    conn *cn;

    if (!c || c->closed || c->cancelled)
        return;
    cn = c->cn;
    c->cancelled = 1;
    c->rx_done = 1;
    if (c->client) {
        client_done(c, WF_GRPC_CANCELLED, "the call was cancelled by the client");
        if (c->sid && cn->connected)
            nghttp2_submit_rst_stream(cn->ng, NGHTTP2_FLAG_NONE, c->sid, NGHTTP2_CANCEL);
        conn_drain(cn, "the call was cancelled");
        return;
    }
    if (c->fin_sent && c->remote_closed)
        return; /* already over; the stream closes by itself */
    queue_clear(c, 0);
    nghttp2_submit_rst_stream(cn->ng, NGHTTP2_FLAG_NONE, c->sid, NGHTTP2_CANCEL);
    want_flush(cn);
}

void wf_grpc_set_data(wf_grpc_call *c, void *data)
{
    if (c)
        c->data = data;
}

void *wf_grpc_data(const wf_grpc_call *c)
{
    return c ? c->data : NULL;
}

const char *wf_grpc_peer(const wf_grpc_call *c)
{
    return c ? c->cn->peer : "";
}

const char *wf_grpc_header(const wf_grpc_call *c, const char *name)
{
    return c && name ? kv_get(c->hdrs, c->hlen, name) : NULL;
}

const char *wf_grpc_peer_id(const wf_grpc_call *c)
{
    return c && c->cn->tls ? wf_tls_peer_id(c->cn->tls) : NULL;
}
