/*
 * upstream_h2.c: HTTP/2 toward endpoints (nghttp2 client sessions), for
 * clusters with http2_protocol_options and for peer proxies reached over
 * mTLS.  Plaintext is h2c with prior knowledge; over TLS the handshake
 * must agree on ALPN h2.
 *
 * Connections: one per pool (endpoint and transport) on each worker
 * carries every stream toward that endpoint.  Another one opens only when
 * the first is at the peer's SETTINGS_MAX_CONCURRENT_STREAMS or can take
 * no new stream (GOAWAY received, or it started the cluster's
 * max_requests_per_connection streams); the old one finishes its streams
 * and closes.  A connection without streams stays pooled and closes after
 * H2U_IDLE_MS, when its pool is retired, or when the worker drains.
 *
 * Memory and flow control, per stream:
 *  - request body: bytes from the client wait in the stream's own buffer
 *    (a wf_chunkq) until nghttp2 pulls them (the peer's windows and the
 *    socket allow); above WF_WRITE_HIGH_WATER the client side stops
 *    (wf_stream_request_flow) and it resumes below half of that.  An
 *    HTTP/2 client's request trailers follow the body as a HEADERS frame
 *    that ends the stream.
 *  - response body: handed to the downstream at once; the stream's window
 *    is given back (WINDOW_UPDATE) only while the downstream keeps up, so
 *    a slow client holds at most its own queue plus one stream window.  The
 *    connection's window is given back at once: one slow stream never
 *    stalls the others.
 *  - the socket: nghttp2 is asked for frames only while less than
 *    WF_WRITE_HIGH_WATER waits in the connection's write queue.
 *
 * Failures: a request the peer did not process is sent again on another
 * stream while its body is whole (the session could not start the stream
 * after a GOAWAY, or the peer refused it with REFUSED_STREAM, as for
 * streams above a GOAWAY's last stream id: RFC 9113 8.7).  Other resets,
 * and the connection's end, fail the attempt before the response head
 * (wf_stream_upstream_failed) and cut the client after it
 * (wf_stream_abort).
 *
 * Lifetimes: a wf_h2us lives from the request's submission to nghttp2's
 * stream close (or the connection's end); its wf_stream may leave earlier
 * (wf_h2u_detach cancels an unfinished exchange with RST_STREAM).  A
 * connection and its session are freed only from the handles' close
 * callbacks, never inside an nghttp2 call.
 *
 * Sending: the entry points the downstream calls (start, body, detach,
 * read control) only queue and mark the connection; frames go out from
 * the loop's check phase right after its I/O, never under the caller,
 * because sending may close streams and call back into the downstream.
 * The connection's own events (bytes read, socket drained, timers) send
 * directly.
 *
 * Every call into the downstream may end and free the wf_stream: after
 * one, a stream is used again only if it is still attached (h->s == s).
 */
#include "proxy/proxy.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/chunkq.h"
#include "util/log.h"

#define H2U_STREAM_WINDOW (1 << 20)
#define H2U_CONN_WINDOW (16 << 20)
#define H2U_MAX_HEADER_LIST (64 * 1024)
#define H2U_IDLE_MS 60000
#define H2U_MAX_CONNS 8      /* per pool and worker; beyond, streams queue in nghttp2 */
#define H2U_MAX_REDISPATCH 3 /* replays of an unprocessed request on another stream */
#define H2U_SEND_BUF (64 * 1024)
#define H2U_MAX_SEND_HEADERS (128 * 1024)

typedef struct wf_h2us wf_h2us;
typedef struct wf_h2uconn wf_h2uconn;

struct wf_h2us {
    wf_h2uconn *c;
    wf_stream *s; /* NULL once the wf_stream left */
    int32_t id;
    wf_chunkq body;    /* request body not yet taken by nghttp2 */
    int body_end;      /* the request ends after the buffer */
    int deferred;      /* the data provider waits for bytes */
    int flow_off;      /* the client side was told to stop */
    int abandoned;     /* the request is dropped (response over, or stream gone) */
    int sent;          /* the request HEADERS left: the peer may have it */
    int body_pulled;   /* nghttp2 took request body bytes: no replay */
    int head_seen;     /* the final response head was delivered */
    int in_trailers;   /* the header block being received is the trailers */
    int ended;         /* the response's END_STREAM was delivered */
    int read_off;      /* the downstream is full: the stream window is held */
    size_t unconsumed; /* response bytes delivered, window not yet given back */
    size_t hdr_bytes;
    int redispatched;
    /* The request's trailers (one allocation: the fields, then their
     * bytes), sent after the body in place of END_STREAM on its last DATA. */
    nghttp2_nv *trailers;
    size_t n_trailers;
    char why[96];         /* why this side reset the stream, or "" */
    wf_h2us *prev, *next; /* on c->streams */
};

struct wf_h2uconn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_timer_t timer; /* connect and TLS handshake timeout, then the idle timeout */
    uv_check_t check; /* sends what the entry points queued, after the loop's I/O */
    uv_idle_t idle;   /* keeps that loop turn from blocking in poll meanwhile */
    wf_worker *w;
    wf_pool *pool;
    wf_h2uconn *next; /* the pool's connections (pool->h2) */
    nghttp2_session *ng;
    wf_tls_conn *tls;
    wf_wq wq;
    wf_h2us *streams;
    uint32_t n_streams;  /* in the list: attached, or still open in nghttp2 */
    uint32_t n_attached; /* with a wf_stream */
    uint32_t n_started;  /* streams submitted, for max_requests_per_connection */
    uint64_t id;
    uint64_t connect_timeout_ms;
    int st_connect_fail; /* the cluster's counter */
    int started;         /* connect requested */
    int connected;       /* TCP is up */
    int ready;           /* and TLS established: frames may go */
    int closing;         /* handles closing; freed from their callbacks */
    int failing;         /* failing its streams, about to close */
    int busy;            /* inside nghttp2_session_mem_recv/mem_send */
    int want_close;      /* fail once out of nghttp2 (why, why_kind) */
    int goaway;          /* takes no new stream */
    int got_settings;    /* the peer's SETTINGS arrived: its stream limit is known */
    int proto_error;     /* a GOAWAY with an error went out: why says what */
    int dirty;           /* sending is scheduled */
    int handles;         /* open handles */
    wf_attempt_result why_kind;
    char why[300];
    char last_error[160]; /* nghttp2's last complaint (error callback) */
};

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;
static uv_once_t init_once = UV_ONCE_INIT;
static __thread uint64_t next_conn_id;

static void conn_flush(wf_h2uconn *c);
static void conn_settle(wf_h2uconn *c);
static void conn_close(wf_h2uconn *c, int polite);
static void conn_fail(wf_h2uconn *c, wf_attempt_result kind, const char *detail);
static void schedule_flush(wf_h2uconn *c);
static void stream_launch(wf_h2us *h, wf_pool *pool);
static void idle_timeout(uv_timer_t *t);
static void warn_protocol(wf_h2uconn *c);

#define CONN_FMT "h2 upstream %s#%llu"
#define CONN_ARGS(c) (c)->pool->hostport, (unsigned long long)(c)->id

/* ---- streams ---- */

/* The request will not be sent (further): its buffered rest goes. */
static void body_free(wf_h2us *h)
{
    wf_chunkq_free(&h->body);
    free(h->trailers);
    h->trailers = NULL;
    h->n_trailers = 0;
}

static void stream_free(wf_h2us *h)
{
    body_free(h);
    free(h);
}

static void stream_link(wf_h2uconn *c, wf_h2us *h)
{
    h->c = c;
    h->prev = NULL;
    h->next = c->streams;
    if (c->streams)
        c->streams->prev = h;
    c->streams = h;
    c->n_streams++;
    if (h->s)
        c->n_attached++;
    if (c->ready)
        uv_timer_stop(&c->timer); /* the idle timeout */
}

static void stream_unlink(wf_h2uconn *c, wf_h2us *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        c->streams = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    c->n_streams--;
}

/* Parts h from its wf_stream (both directions), leaving h on its
 * connection. */
static wf_stream *stream_part(wf_h2us *h)
{
    wf_stream *s = h->s;

    if (!s)
        return NULL;
    h->s = NULL;
    s->h2u = NULL;
    h->c->n_attached--;
    return s;
}

/* The attempt failed before the response head. */
static void report_failed(wf_stream *s, wf_attempt_result kind, const char *detail)
{
    if (s->pool) {
        s->pool->active--;
        s->pool = NULL;
    }
    wf_stream_upstream_failed(s, kind, detail);
}

/* The exchange broke after the response head went downstream. */
static void report_cut(wf_stream *s)
{
    s->flags = "UPE";
    wf_stream_abort(s);
}

/* Moves a request the peer did not process to a fresh stream on a
 * connection of the pool with room (maybe a new one); h keeps nothing of
 * it.  s is parted from h. */
static void redispatch(wf_h2us *h, wf_stream *s)
{
    wf_h2us *n = calloc(1, sizeof(*n));
    wf_pool *pool = s->pool;

    WF_DEBUG(CONN_FMT ": stream %d was not processed; sending it again", CONN_ARGS(h->c), h->id);
    if (!n || !pool) {
        free(n);
        report_failed(s, WF_ATTEMPT_RESET, "out of memory");
        return;
    }
    wf_chunkq_init(&n->body, WF_WRITE_HIGH_WATER);
    wf_chunkq_move(&n->body, &h->body);
    n->body_end = h->body_end;
    n->trailers = h->trailers;
    n->n_trailers = h->n_trailers;
    h->trailers = NULL;
    h->n_trailers = 0;
    n->flow_off = h->flow_off;
    n->redispatched = h->redispatched + 1;
    n->s = s;
    s->h2u = n;
    stream_launch(n, pool);
}

/* The response is complete.  A request still going is dropped: the peer
 * said all it had to say, and a cut body must not look whole. */
static void response_end(wf_h2us *h)
{
    wf_stream *s = h->s;

    h->ended = 1;
    if (!h->body_end) {
        h->abandoned = 1;
        body_free(h);
        nghttp2_submit_rst_stream(h->c->ng, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_NO_ERROR);
        if (h->flow_off) {
            /* The client side must read (and drop) the rest of its request. */
            h->flow_off = 0;
            wf_stream_upstream_writable(s);
            if (h->s != s)
                return;
        }
    }
    wf_stream_response_end(s);
}

/* ---- the request ---- */

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    wf_h2us *h = src->ptr;
    size_t n = wf_chunkq_pull(&h->body, buf, length);

    if (n)
        h->body_pulled = 1;
    if (wf_chunkq_empty(&h->body) && h->body_end && !h->abandoned) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (h->n_trailers) {
            /* The trailers end the stream (nghttp2 copies them; ours stay
             * for a replay of the request on another stream). */
            int r = nghttp2_submit_trailer(ng, id, h->trailers, h->n_trailers);
            if (r != 0) {
                snprintf(h->why, sizeof(h->why), "cannot send the request trailers: %s",
                         nghttp2_strerror(r));
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
            }
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        h->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (h->flow_off && h->s && wf_chunkq_low(&h->body)) {
        /* Room again: the client side may go on (this only re-arms its
         * reading; nothing is delivered from under nghttp2). */
        h->flow_off = 0;
        wf_stream_upstream_writable(h->s);
    }
    return (ssize_t)n;
}

static int name_is(const wf_str *n, const char *lit)
{
    size_t l = strlen(lit);

    return n->len == l && strncasecmp(n->p, lit, l) == 0;
}

/* Connection-specific headers HTTP/2 forbids (RFC 9113 8.2.2), and Host,
 * which :authority replaces. */
static int not_forwarded(const wf_hdr *x)
{
    static const char *const drop[] = {"connection",        "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade",    "host"};

    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (name_is(&x->name, drop[i]))
            return 1;
    /* TE may only say "trailers" (gRPC needs it). */
    return name_is(&x->name, "te") &&
           !(x->value.len == 8 && strncasecmp(x->value.p, "trailers", 8) == 0);
}

/* Submits the request of h->s on c.  Returns the stream id, or a negative
 * nghttp2 error. */
static int32_t submit(wf_h2uconn *c, wf_h2us *h)
{
    wf_stream *s = h->s;
    const wf_hdrs *q = &s->req;
    wf_str method = {"GET", 3}, path = {"/", 1}, auth = {"", 0};
    wf_str scheme = s->ep && s->ep->tls ? (wf_str){"https", 5} : (wf_str){"http", 4};
    size_t names = 0, n = 0;
    nghttp2_nv *nv;
    char *p, cl[24];
    int has_cl = 0, bodyless;
    nghttp2_data_provider dp = {.source.ptr = h, .read_callback = read_body};
    int32_t id;

    for (uint32_t i = 0; i < q->n; i++) {
        const wf_hdr *x = &q->v[i];
        names += x->name.len;
        if (name_is(&x->name, ":method"))
            method = x->value;
        else if (name_is(&x->name, ":path"))
            path = x->value;
        else if (name_is(&x->name, ":authority"))
            auth = x->value;
    }
    nv = malloc((q->n + 5) * sizeof(*nv) + names + 1);
    if (!nv)
        return NGHTTP2_ERR_NOMEM;
    p = (char *)(nv + q->n + 5);
#define NV(name, nl, value, vl)                                                                    \
    nv[n++] = (nghttp2_nv){(uint8_t *)(name), (uint8_t *)(value), (nl), (vl), NGHTTP2_NV_FLAG_NONE}
    NV(":method", 7, method.p, method.len);
    NV(":scheme", 7, scheme.p, scheme.len);
    NV(":authority", 10, auth.p, auth.len);
    NV(":path", 5, path.p, path.len);
    for (uint32_t i = 0; i < q->n; i++) {
        const wf_hdr *x = &q->v[i];
        if (!x->name.len || x->name.p[0] == ':' || not_forwarded(x))
            continue;
        if (name_is(&x->name, "content-length"))
            has_cl = 1; /* a filter set one */
        for (size_t j = 0; j < x->name.len; j++) {
            char ch = x->name.p[j];
            p[j] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        NV(p, x->name.len, x->value.p, x->value.len);
        p += x->name.len;
    }
    /* The client's Content-Length is framing and was dropped with the
     * hop-by-hop headers; HTTP/2 servers still want to know it. */
    if (!has_cl && s->req_cl >= 0) {
        int k = snprintf(cl, sizeof(cl), "%lld", (long long)s->req_cl);
        NV("content-length", 14, cl, (size_t)k);
    }
#undef NV
    /* nghttp2 copies the header block; a request known to be bodyless
     * (and without trailers) is one HEADERS frame with END_STREAM. */
    bodyless = h->body_end && wf_chunkq_empty(&h->body) && !h->n_trailers;
    id = nghttp2_submit_request(c->ng, NULL, nv, n, bodyless ? NULL : &dp, h);
    free(nv);
    return id;
}

/* ---- nghttp2 callbacks ---- */

static wf_h2us *stream_of(nghttp2_session *ng, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(ng, id) : NULL;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    wf_h2us *h = stream_of(ng, f->hd.stream_id);

    if (!h || !h->s || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    h->hdr_bytes = 0;
    h->in_trailers = h->head_seen;
    if (!h->in_trailers)
        h->s->resp.n = 0; /* a final head after an interim one starts afresh */
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    wf_h2us *h = stream_of(ng, f->hd.stream_id);
    wf_stream *s = h ? h->s : NULL;
    wf_hdrs *dst;
    wf_hdr x = {{(const char *)name, namelen}, {(const char *)value, valuelen}};

    if (!s || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    dst = h->in_trailers ? &s->trailers : &s->resp;
    h->hdr_bytes += namelen + valuelen + 32;
    if (h->hdr_bytes > H2U_MAX_HEADER_LIST || dst->n >= WF_MAX_HEADERS) {
        snprintf(h->why, sizeof(h->why), "response %s too large (limit %d KiB, %d headers)",
                 h->in_trailers ? "trailers" : "headers", H2U_MAX_HEADER_LIST / 1024,
                 WF_MAX_HEADERS);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    /* nghttp2 already refuses these in a response; kept out regardless. */
    if (not_forwarded(&x) && !name_is(&x.name, "te"))
        return 0;
    if (wf_hdrs_add(&s->arena, dst, (const char *)name, namelen, (const char *)value, valuelen) <
        0) {
        snprintf(h->why, sizeof(h->why), "out of stream memory for the response headers");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int status_of(const wf_hdrs *h)
{
    wf_str v;
    int st = 0;

    if (!wf_hdrs_get(h, ":status", 7, &v) || v.len != 3)
        return 0;
    for (size_t i = 0; i < 3; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return 0;
        st = st * 10 + (v.p[i] - '0');
    }
    return st;
}

/* The final response head arrived: the attempt is done. */
static void response_head(wf_h2uconn *c, wf_h2us *h, int status)
{
    wf_stream *s = h->s;
    wf_attempt a = {
        .size = sizeof(a), .number = s->attempts, .result = WF_ATTEMPT_RESPONSE, .status = status};

    h->head_seen = 1;
    s->up_time_us = (uv_now(&c->w->loop) - s->up_start_ms) * 1000;
    wf_chain_attempt_done(s, &a);
    if (h->s != s)
        return;
    wf_stream_response_head(s);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    wf_h2uconn *c = ud;
    wf_h2us *h;
    wf_stream *s;
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->got_settings = 1;
        return 0;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        /* Streams above last_stream_id are closed (REFUSED_STREAM) right
         * after this; the others finish.  New streams go elsewhere. */
        c->goaway = 1;
        WF_DEBUG(CONN_FMT ": GOAWAY from the endpoint (%s, last stream %d)", CONN_ARGS(c),
                 nghttp2_http2_strerror(f->goaway.error_code), f->goaway.last_stream_id);
        return 0;
    }
    if (!(h = stream_of(ng, f->hd.stream_id)) || !(s = h->s))
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (!h->head_seen) {
            int status = status_of(&s->resp);
            if (status >= 100 && status < 200) {
                /* Interim responses (100 Continue, 103) are not passed on. */
                s->resp.n = 0;
                return 0;
            }
            /* gRPC's trailers-only answer: the client gets one frame too. */
            if (end)
                s->resp_headers_only = 1;
            response_head(c, h, status);
            if (h->s != s)
                return 0;
        }
        if (end)
            response_end(h);
        return 0;
    }
    if (f->hd.type == NGHTTP2_DATA && end)
        response_end(h);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    wf_h2us *h = stream_of(ng, id);
    wf_stream *s = h ? h->s : NULL;

    /* The connection window comes back at once: a stream whose client is
     * slow holds only its own window. */
    nghttp2_session_consume_connection(ng, len);
    if (!s || h->ended) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    wf_stream_response_body(s, (const char *)data, len);
    if (h->s != s)
        return 0;
    if (!h->read_off && wf_stream_downstream_queued(s) > WF_WRITE_HIGH_WATER)
        h->read_off = 1;
    if (h->read_off)
        h->unconsumed += len; /* given back by wf_h2u_read_control(s, 1) */
    else
        nghttp2_session_consume_stream(ng, id, len);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    wf_h2uconn *c = ud;
    wf_h2us *h;

    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR &&
        !c->proto_error) {
        /* nghttp2 ended the session over a protocol error of the peer:
         * the connection fails with that reason once the GOAWAY is out. */
        c->proto_error = 1;
        snprintf(c->why, sizeof(c->why), "HTTP/2 protocol error (%s): %s",
                 nghttp2_http2_strerror(f->goaway.error_code),
                 c->last_error[0] ? c->last_error : "refused by nghttp2");
        return 0;
    }

    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST &&
        (h = stream_of(ng, f->hd.stream_id))) {
        h->sent = 1;
        if (h->s)
            h->s->up_start_ms = uv_now(&c->w->loop);
    }
    return 0;
}

/* A request may go again when the peer never saw it (the session could
 * not start the stream: GOAWAY received), or refused it unprocessed
 * (REFUSED_STREAM, also for streams above a GOAWAY's last stream id: RFC
 * 9113 8.7) while its whole body is still here.  Refusals happen when a
 * new connection sends more streams than the peer's limit before its
 * SETTINGS arrive. */
static int replayable(const wf_h2us *h, uint32_t error_code)
{
    if (h->redispatched >= H2U_MAX_REDISPATCH || h->head_seen || h->why[0])
        return 0;
    return !h->sent || (error_code == NGHTTP2_REFUSED_STREAM && !h->body_pulled);
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    wf_h2uconn *c = ud;
    wf_h2us *h = stream_of(ng, id);
    wf_stream *s;

    if (!h)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if ((s = stream_part(h)) && !h->ended) {
        if (!h->sent)
            c->goaway = 1; /* this session refused to start a stream: it takes no more */
        if (replayable(h, error_code)) {
            redispatch(h, s);
        } else if (h->head_seen) {
            WF_DEBUG(CONN_FMT ": stream %d reset after the response head: %s", CONN_ARGS(c), id,
                     h->why[0] ? h->why : nghttp2_http2_strerror(error_code));
            report_cut(s);
        } else {
            char detail[160];
            if (h->why[0])
                snprintf(detail, sizeof(detail), "%s", h->why);
            else
                snprintf(detail, sizeof(detail), "stream reset: %s",
                         nghttp2_http2_strerror(error_code));
            report_failed(s, WF_ATTEMPT_RESET, detail);
        }
    }
    stream_unlink(c, h);
    stream_free(h);
    return 0;
}

/* nghttp2 says what it refused; the text is kept in case the refusal
 * ends the connection. */
static int on_error(nghttp2_session *ng, int code, const char *msg, size_t len, void *ud)
{
    wf_h2uconn *c = ud;

    WF_DEBUG(CONN_FMT ": %.*s", CONN_ARGS(c), (int)len, msg);
    while (len && (msg[len - 1] == '.' || msg[len - 1] == ' '))
        len--; /* it goes inside sentences of ours */
    snprintf(c->last_error, sizeof(c->last_error), "%.*s", (int)len, msg);
    return 0;
}

/* One line a second at most: an endpoint that does not speak HTTP/2 (or
 * speaks it badly) is a configuration problem the operator must see. */
static void warn_protocol(wf_h2uconn *c)
{
    static __thread wf_ratelimit rl;
    uint64_t skipped;

    if (wf_ratelimit_ok(&rl, uv_now(&c->w->loop), 1000, &skipped))
        WF_WARN("upstream %s: %s; its connection is closed (does the endpoint speak HTTP/2 on "
                "this port? the cluster says so: port protocol HTTP2/GRPC, or a peer proxy)%s",
                c->pool->hostport, c->why, skipped ? " (more in the last second)" : "");
}

static void init_callbacks(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(callbacks, on_error);
    nghttp2_option_new(&options);
    nghttp2_option_set_no_auto_window_update(options, 1);
    nghttp2_option_set_max_send_header_block_length(options, H2U_MAX_SEND_HEADERS);
}

/* ---- writing ---- */

static void conn_write(wf_h2uconn *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    if (c->wq.failed)
        return;
    if ((c->tls ? wf_tls_write(c->tls, &b, 1) : wf_write((uv_stream_t *)&c->tcp, &c->wq, &b, 1)) <
        0)
        c->wq.failed = 1;
}

/* Sends what nghttp2 has, as far as the socket keeps up.  Frames are
 * gathered so that a loop turn's frames leave in few writes. */
static void conn_flush(wf_h2uconn *c)
{
    static __thread void *outbuf;
    static __thread int out_busy;
    char *out = wf_thread_buffer(&outbuf, H2U_SEND_BUF);
    int gather = !out_busy && out;
    size_t n = 0;

    if (c->busy || c->closing || c->failing || !c->ready)
        return;
    c->busy = 1;
    out_busy = 1;
    while (c->wq.queued + n < WF_WRITE_HIGH_WATER && !c->wq.failed) {
        const uint8_t *p;
        ssize_t len = nghttp2_session_mem_send(c->ng, &p);
        if (len < 0) {
            c->want_close = 1;
            c->why_kind = WF_ATTEMPT_RESET;
            snprintf(c->why, sizeof(c->why), "HTTP/2 session failed: %s",
                     nghttp2_strerror((int)len));
            break;
        }
        if (len == 0)
            break;
        if (!gather) {
            conn_write(c, p, (size_t)len);
            continue;
        }
        if (n + (size_t)len > H2U_SEND_BUF && n) {
            conn_write(c, out, n);
            n = 0;
        }
        if ((size_t)len > H2U_SEND_BUF) {
            conn_write(c, p, (size_t)len);
        } else {
            memcpy(out + n, p, (size_t)len);
            n += (size_t)len;
        }
    }
    if (n)
        conn_write(c, out, n);
    if (gather)
        out_busy = 0;
    c->busy = 0;
}

static void check_cb(uv_check_t *ch)
{
    wf_h2uconn *c = ch->data;

    c->dirty = 0;
    uv_check_stop(&c->check);
    uv_idle_stop(&c->idle);
    conn_flush(c);
    conn_settle(c);
}

static void idle_cb(uv_idle_t *i)
{
    /* Nothing: being active keeps the poll that follows from blocking, so
     * the check phase sends what a timer callback queued. */
}

static void schedule_flush(wf_h2uconn *c)
{
    if (c->dirty || c->closing || c->failing)
        return;
    c->dirty = 1;
    uv_check_start(&c->check, check_cb);
    uv_idle_start(&c->idle, idle_cb);
}

static void conn_drained(void *owner)
{
    wf_h2uconn *c = owner;

    if (c->closing)
        return;
    conn_flush(c);
    conn_settle(c);
}

/* ---- the connection's life ---- */

static void conn_closed(uv_handle_t *hd)
{
    wf_h2uconn *c = hd->data;

    if (--c->handles > 0)
        return;
    while (c->streams) {
        wf_h2us *h = c->streams;
        stream_unlink(c, h);
        stream_free(h);
    }
    nghttp2_session_del(c->ng);
    wf_tls_conn_free(c->tls);
    wf_stat_add(c->w, WF_ST_UPSTREAM_CX_ACTIVE, -1);
    free(c);
}

static void pool_unlink(wf_h2uconn *c)
{
    for (wf_h2uconn **pp = &c->pool->h2; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    c->next = NULL;
}

/* Closes a connection without streams (polite: GOAWAY first). */
static void conn_close(wf_h2uconn *c, int polite)
{
    if (c->closing)
        return;
    if (c->n_attached && !c->failing) {
        conn_fail(c, WF_ATTEMPT_RESET, "connection closed");
        return;
    }
    if (polite && c->ready && !c->busy && !c->failing && !c->wq.failed) {
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        conn_flush(c);
        if (c->tls)
            wf_tls_close_notify(c->tls);
    }
    WF_DEBUG(CONN_FMT ": closed", CONN_ARGS(c));
    c->closing = 1;
    pool_unlink(c);
    uv_check_stop(&c->check);
    uv_idle_stop(&c->idle);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
    uv_close((uv_handle_t *)&c->check, conn_closed);
    uv_close((uv_handle_t *)&c->idle, conn_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_closed); /* cancels a pending connect too */
}

/* The connection is unusable: every stream on it fails (before its
 * response head) or is cut (after), then it closes.  Requests no peer
 * has seen move to another connection when this one had been up. */
static void conn_fail(wf_h2uconn *c, wf_attempt_result kind, const char *detail)
{
    char why[300];

    if (c->closing || c->failing)
        return;
    c->failing = 1;
    pool_unlink(c); /* a retry started from a callback below must not pick it */
    snprintf(why, sizeof(why), "%s", detail);
    WF_DEBUG(CONN_FMT ": failed: %s (%u streams)", CONN_ARGS(c), why, c->n_attached);
    for (;;) {
        wf_h2us *h = c->streams;
        wf_stream *s;
        while (h && !h->s)
            h = h->next;
        if (!h)
            break;
        s = stream_part(h); /* before any callback: h stays on c, never reported twice */
        if (h->ended)
            continue; /* its response is complete */
        if (h->head_seen)
            report_cut(s);
        else if (c->ready && replayable(h, 0))
            redispatch(h, s); /* never sent: no peer has seen it */
        else
            report_failed(s, kind, why);
    }
    conn_close(c, 0);
}

/* After the connection's own work: closes it when that is due, or arms
 * the idle timeout when it has no stream left. */
static void conn_settle(wf_h2uconn *c)
{
    wf_worker *w = c->w;

    if (c->closing || c->failing || c->busy)
        return;
    if (c->wq.failed && !c->want_close) {
        c->want_close = 1;
        c->why_kind = c->ready ? WF_ATTEMPT_RESET : WF_ATTEMPT_CONNECT_FAILURE;
        snprintf(c->why, sizeof(c->why), "write to the endpoint failed");
    }
    if (c->want_close) {
        conn_fail(c, c->why_kind, c->why);
        return;
    }
    if (c->ready && !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
        if (c->proto_error) {
            warn_protocol(c);
            conn_fail(c, WF_ATTEMPT_RESET, c->why);
        } else {
            conn_fail(c, WF_ATTEMPT_RESET, "the endpoint ended the HTTP/2 session");
        }
        return;
    }
    if (c->n_streams)
        return;
    /* No stream left: a connection that takes no new one, of a pool the
     * configuration dropped, or of a draining worker, goes now. */
    if (c->goaway || c->pool->gen != w->gen || atomic_load(&w->drain)) {
        conn_close(c, 1);
        return;
    }
    if (c->ready && !uv_is_active((uv_handle_t *)&c->timer))
        uv_timer_start(&c->timer, idle_timeout, H2U_IDLE_MS, 0);
}

static void idle_timeout(uv_timer_t *t)
{
    wf_h2uconn *c = t->data;

    if (!c->n_streams)
        conn_close(c, 1);
}

static void connect_timeout(uv_timer_t *t)
{
    wf_h2uconn *c = t->data;

    wf_stat_add(c->w, WF_ST_UPSTREAM_CX_CONNECT_FAIL, 1);
    wf_stat_add(c->w, c->st_connect_fail, 1);
    conn_fail(c, WF_ATTEMPT_CONNECT_FAILURE,
              c->connected ? "TLS handshake timeout" : "connect timeout");
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    wf_h2uconn *c = hd->data;

    buf->base = c->w->rbuf;
    buf->len = WF_READ_BUF;
}

/* Plaintext from the endpoint into the session. */
static void feed(wf_h2uconn *c, const char *data, size_t len)
{
    ssize_t r;

    if (c->want_close)
        return;
    c->busy = 1;
    r = nghttp2_session_mem_recv(c->ng, (const uint8_t *)data, len);
    c->busy = 0;
    if (r < 0) {
        /* The flush that follows sends what nghttp2 queued (a GOAWAY), then
         * the connection fails. */
        c->want_close = 1;
        c->why_kind = WF_ATTEMPT_RESET;
        snprintf(c->why, sizeof(c->why), "HTTP/2 protocol error: %s",
                 c->last_error[0] ? c->last_error : nghttp2_strerror((int)r));
        warn_protocol(c);
    }
}

/* The socket ended (EOF or error). */
static void conn_lost(wf_h2uconn *c, ssize_t nread)
{
    char why[200];

    if (c->want_close) {
        conn_fail(c, c->why_kind, c->why);
        return;
    }
    if (!c->ready)
        snprintf(why, sizeof(why), "%s",
                 nread == UV_EOF ? "connection closed during the TLS handshake"
                                 : uv_strerror((int)nread));
    else
        snprintf(why, sizeof(why), "%s",
                 nread == UV_EOF ? "connection closed by the endpoint" : uv_strerror((int)nread));
    WF_DEBUG(CONN_FMT ": %s", CONN_ARGS(c), why);
    conn_fail(c, c->ready ? WF_ATTEMPT_RESET : WF_ATTEMPT_CONNECT_FAILURE, why);
}

static void conn_ready(wf_h2uconn *c)
{
    c->ready = 1;
    conn_flush(c);
    conn_settle(c);
}

static int tls_deliver(void *ud, const char *data, size_t len)
{
    wf_h2uconn *c = ud;

    feed(c, data, len);
    return c->want_close;
}

static void tls_input(wf_h2uconn *c, const char *data, size_t len)
{
    int was = wf_tls_established(c->tls);
    int r = wf_tls_feed(c->tls, data, len, tls_deliver, c);
    static __thread wf_ratelimit rl;
    uint64_t skipped;

    if (c->closing || c->failing)
        return;
    if (r == WF_TLS_EOF) {
        conn_lost(c, UV_EOF);
        return;
    }
    if (r < 0) {
        char why[600];
        wf_stat_add(c->w, WF_ST_UPSTREAM_SSL_CONNECTION_ERROR, 1);
        snprintf(why, sizeof(why), "TLS: %s", wf_tls_error(c->tls));
        if (!was && wf_ratelimit_ok(&rl, uv_now(&c->w->loop), 1000, &skipped))
            WF_WARN("upstream TLS to %s refused: %s%s", c->pool->hostport, wf_tls_error(c->tls),
                    skipped ? " (more in the last second; see upstream_ssl.connection_error)" : "");
        conn_fail(c, was ? WF_ATTEMPT_RESET : WF_ATTEMPT_CONNECT_FAILURE, why);
        return;
    }
    if (!was && wf_tls_established(c->tls)) {
        const char *alpn = wf_tls_alpn(c->tls);
        uv_timer_stop(&c->timer);
        wf_stat_add(c->w, WF_ST_UPSTREAM_SSL_HANDSHAKE, 1);
        if (wf_tls_resumed(c->tls))
            wf_stat_add(c->w, WF_ST_UPSTREAM_SSL_SESSION_REUSED, 1);
        /* A server without ALPN is taken at its word (the cluster says it
         * speaks HTTP/2); one that chose another protocol is not. */
        if (alpn && strcmp(alpn, "h2") != 0) {
            char why[200];
            if (wf_ratelimit_ok(&rl, uv_now(&c->w->loop), 1000, &skipped))
                WF_WARN("upstream %s chose ALPN \"%s\" where HTTP/2 (h2) was asked for: its "
                        "connection is refused; make the endpoint offer h2, or drop the "
                        "cluster's HTTP/2 setting (the port's protocol)%s",
                        c->pool->hostport, alpn, skipped ? " (more in the last second)" : "");
            snprintf(why, sizeof(why), "TLS: the endpoint chose ALPN \"%s\", not h2", alpn);
            wf_stat_add(c->w, WF_ST_UPSTREAM_CX_CONNECT_FAIL, 1);
            wf_stat_add(c->w, c->st_connect_fail, 1);
            conn_fail(c, WF_ATTEMPT_CONNECT_FAILURE, why);
            return;
        }
        conn_ready(c);
    }
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    wf_h2uconn *c = st->data;

    if (nread == 0 || c->closing || c->failing)
        return;
    if (nread < 0) {
        conn_lost(c, nread);
        return;
    }
    if (c->tls)
        tls_input(c, buf->base, (size_t)nread);
    else
        feed(c, buf->base, (size_t)nread);
    conn_flush(c);
    conn_settle(c);
}

/* ---- connecting ---- */

static int tls_send(void *ud, const char *data, size_t len)
{
    wf_h2uconn *c = ud;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    return wf_write((uv_stream_t *)&c->tcp, &c->wq, &b, 1);
}

/* Starts the client handshake with transport t (ALPN h2 comes with the
 * context: the workload's for ISTIO_MUTUAL, the cluster's own otherwise). */
static int tls_begin(wf_h2uconn *c, const wf_up_tls *t, char *why, size_t whylen)
{
    wf_tls_conn_opts o = {.send = tls_send,
                          .ud = c,
                          .sni = t->sni,
                          .peer_ids = (const char *const *)t->sans,
                          .n_peer_ids = t->n_sans,
                          .session = &c->pool->session};
    wf_tls_ctx *ctx = t->istio ? wf_ident_client() : t->ctx;
    char *e = NULL;

    if (!ctx) {
        snprintf(why, whylen, "TLS: no workload certificate yet (is the CA reachable? see /certs)");
        return -1;
    }
    c->tls = wf_tls_conn_new(ctx, &o, &e);
    if (t->istio)
        wf_tls_ctx_unref(ctx); /* the connection holds its own reference */
    if (!c->tls || wf_tls_start(c->tls) < 0) {
        snprintf(why, whylen, "TLS: %s", c->tls ? wf_tls_error(c->tls) : e ? e : "cannot start");
        free(e);
        return -1;
    }
    return 0;
}

static void on_connected(uv_connect_t *req, int status)
{
    wf_h2uconn *c = req->data;
    const wf_up_tls *t = NULL;

    if (c->closing || c->failing)
        return;
    uv_timer_stop(&c->timer);
    if (status < 0) {
        wf_stat_add(c->w, WF_ST_UPSTREAM_CX_CONNECT_FAIL, 1);
        wf_stat_add(c->w, c->st_connect_fail, 1);
        conn_fail(c, WF_ATTEMPT_CONNECT_FAILURE, uv_strerror(status));
        return;
    }
    c->connected = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    /* The transport comes from a waiting stream's endpoint (the pool key
     * includes it); with none left there is nothing to speak for. */
    for (wf_h2us *h = c->streams; h; h = h->next)
        if (h->s && h->s->ep) {
            t = h->s->ep->tls;
            break;
        }
    if (!c->n_attached) {
        conn_close(c, 0);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (t) {
        char why[300];
        if (tls_begin(c, t, why, sizeof(why)) < 0) {
            wf_stat_add(c->w, WF_ST_UPSTREAM_SSL_CONNECTION_ERROR, 1);
            conn_fail(c, WF_ATTEMPT_CONNECT_FAILURE, why);
            return;
        }
        /* The connect timer bounds the handshake too. */
        uv_timer_start(&c->timer, connect_timeout, c->connect_timeout_ms, 0);
        return;
    }
    conn_ready(c);
}

static wf_h2uconn *conn_new(wf_pool *pool, wf_stream *s)
{
    wf_worker *w = s->w;
    wf_h2uconn *c = calloc(1, sizeof(*c));
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2U_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2U_MAX_HEADER_LIST},
    };

    nghttp2_option *opt = NULL;
    int r;

    if (!c)
        return NULL;
    /* Until its SETTINGS arrive, a new connection assumes the stream limit
     * a sibling learned from the same peer (else nghttp2's 100): sending
     * more than the peer allows only gets streams refused. */
    for (wf_h2uconn *o = pool->h2; o; o = o->next)
        if (o->got_settings && !o->closing && nghttp2_option_new(&opt) == 0) {
            nghttp2_option_set_no_auto_window_update(opt, 1);
            nghttp2_option_set_max_send_header_block_length(opt, H2U_MAX_SEND_HEADERS);
            nghttp2_option_set_peer_max_concurrent_streams(
                opt, nghttp2_session_get_remote_settings(o->ng,
                                                         NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
            break;
        }
    r = nghttp2_session_client_new2(&c->ng, callbacks, c, opt ? opt : options);
    nghttp2_option_del(opt);
    if (r != 0) {
        free(c);
        return NULL;
    }
    /* The preface and SETTINGS leave with the first flush. */
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, H2U_CONN_WINDOW);
    c->w = w;
    c->pool = pool;
    c->id = ++next_conn_id;
    c->connect_timeout_ms = s->cluster->connect_timeout_ms;
    c->st_connect_fail = s->cluster->st_cx_connect_fail;
    c->wq.owner = c;
    c->wq.drained = conn_drained;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    uv_check_init(&w->loop, &c->check);
    uv_idle_init(&w->loop, &c->idle);
    uv_unref((uv_handle_t *)&c->check);
    uv_unref((uv_handle_t *)&c->idle);
    c->handles = 4;
    c->tcp.data = c->timer.data = c->check.data = c->idle.data = c->connect.data = c;
    c->next = pool->h2;
    pool->h2 = c;
    wf_stat_add(w, WF_ST_UPSTREAM_CX_TOTAL, 1);
    wf_stat_add(w, WF_ST_UPSTREAM_CX_ACTIVE, 1);
    wf_stat_add(w, s->cluster->st_cx_total, 1);
    WF_DEBUG(CONN_FMT ": connecting", CONN_ARGS(c));
    return c;
}

static void conn_connect(wf_h2uconn *c)
{
    int r;

    c->started = 1;
    r = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&c->pool->addr, on_connected);
    if (r < 0) {
        wf_stat_add(c->w, WF_ST_UPSTREAM_CX_CONNECT_FAIL, 1);
        wf_stat_add(c->w, c->st_connect_fail, 1);
        conn_fail(c, WF_ATTEMPT_CONNECT_FAILURE, uv_strerror(r));
        return;
    }
    uv_timer_start(&c->timer, connect_timeout, c->connect_timeout_ms, 0);
}

/* A connection of the pool with room for one more stream, or NULL when a
 * new one should open.  At H2U_MAX_CONNS the least loaded one is taken and
 * nghttp2 holds the stream until the peer allows it.  One that started
 * max_rq streams (the cluster's max_requests_per_connection, 0: no limit)
 * takes no more. */
static wf_h2uconn *conn_pick(wf_pool *pool, uint32_t max_rq)
{
    wf_h2uconn *best = NULL;
    uint32_t best_over = 0, n = 0;

    for (wf_h2uconn *c = pool->h2; c; c = c->next, n++) {
        uint32_t max;
        if (c->closing || c->failing || c->goaway || c->want_close || c->wq.failed ||
            (max_rq && c->n_started >= max_rq))
            continue;
        max = nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        if (c->n_streams < max)
            return c;
        if (!best || c->n_streams - max < best_over) {
            best = c;
            best_over = c->n_streams - max;
        }
    }
    return n < H2U_MAX_CONNS ? NULL : best;
}

/* Puts h (attached to its wf_stream) on a connection of pool and submits
 * its request.  On failure the stream is told (and h freed). */
static void stream_launch(wf_h2us *h, wf_pool *pool)
{
    wf_stream *s = h->s;
    uint32_t max_rq = s->cluster ? s->cluster->max_rq_per_cx : 0;
    wf_h2uconn *c = conn_pick(pool, max_rq);
    int32_t id;

    if (!c && !(c = conn_new(pool, s))) {
        s->h2u = NULL;
        stream_free(h);
        report_failed(s, WF_ATTEMPT_CONNECT_FAILURE, "out of memory");
        return;
    }
    stream_link(c, h);
    id = submit(c, h);
    if (id < 0) {
        char detail[160];
        snprintf(detail, sizeof(detail), "cannot start an HTTP/2 stream: %s", nghttp2_strerror(id));
        if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
            c->goaway = 1; /* stream ids exhausted: the next stream opens a new connection */
        stream_part(h);
        stream_unlink(c, h);
        stream_free(h);
        report_failed(s, WF_ATTEMPT_RESET, detail);
        if (!c->started)
            conn_close(c, 0);
        else
            conn_settle(c);
        return;
    }
    h->id = id;
    WF_DEBUG(CONN_FMT ": stream %d for %s %.*s", CONN_ARGS(c), id, s->upstream_host,
             (int)s->path.len, s->path.p ? s->path.p : "");
    if (max_rq && ++c->n_started >= max_rq) {
        /* Its last request: like after a GOAWAY, the connection finishes
         * its streams and closes (conn_settle), and the next stream opens
         * a new one. */
        WF_DEBUG(CONN_FMT ": %u requests, the cluster's max_requests_per_connection", CONN_ARGS(c),
                 c->n_started);
        c->goaway = 1;
    }
    if (!c->started)
        conn_connect(c); /* may fail the stream at once */
    else
        schedule_flush(c);
}

/* Moves the body the downstream queued before the stream started (the
 * request went through its filters meanwhile) into h's buffer.  Returns
 * 0, or -1 when out of memory (what is left stays in s->pending). */
static int adopt_pending(wf_h2us *h, wf_stream *s)
{
    while (s->pending) {
        wf_chunk *k = s->pending;
        if (wf_chunkq_push(&h->body, k->data, k->len) < 0)
            return -1;
        s->pending = k->next;
        s->pending_len -= k->len;
        free(k);
    }
    s->pending_tail = &s->pending;
    s->pending_len = 0;
    return 0;
}

/* Copies the request trailers of s (an HTTP/2 client's) for h: they go
 * out after the body, maybe after s and its arena are gone.  Names are
 * lower-cased; pseudo-headers and fields HTTP/2 forbids are left out.
 * Returns 0, or -1 when out of memory. */
static int take_trailers(wf_h2us *h, const wf_stream *s)
{
    const wf_hdrs *t = &s->req_trailers;
    size_t bytes = 0, n = 0;
    nghttp2_nv *nv;
    char *p;

    if (h->trailers || !t->n)
        return 0;
    for (uint32_t i = 0; i < t->n; i++)
        bytes += t->v[i].name.len + t->v[i].value.len;
    if (!(nv = malloc(t->n * sizeof(*nv) + bytes + 1)))
        return -1;
    p = (char *)(nv + t->n);
    for (uint32_t i = 0; i < t->n; i++) {
        const wf_hdr *x = &t->v[i];
        if (!x->name.len || x->name.p[0] == ':' || not_forwarded(x) || name_is(&x->name, "te"))
            continue;
        nv[n] = (nghttp2_nv){(uint8_t *)p, NULL, x->name.len, x->value.len, NGHTTP2_NV_FLAG_NONE};
        for (size_t j = 0; j < x->name.len; j++) {
            char ch = x->name.p[j];
            *p++ = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        nv[n].value = (uint8_t *)p;
        memcpy(p, x->value.p, x->value.len);
        p += x->value.len;
        n++;
    }
    if (!n) {
        free(nv);
        return 0;
    }
    h->trailers = nv;
    h->n_trailers = n;
    return 0;
}

/* ---- entry points (upstream.c) ---- */

void wf_h2u_start(wf_stream *s, wf_endpoint *ep, wf_pool *pool)
{
    wf_h2us *h;

    uv_once(&init_once, init_callbacks);
    if (!(h = calloc(1, sizeof(*h)))) {
        pool->active--;
        s->pool = NULL;
        wf_stream_local_reply(s, 503, "out of memory\n", 14, "UF");
        return;
    }
    wf_chunkq_init(&h->body, WF_WRITE_HIGH_WATER);
    /* A request known to have no body (HTTP/1.1 without Content-Length or
     * chunking, or Content-Length 0) ends with its HEADERS: the server
     * need not wait for an empty DATA frame.  The downstream's later end
     * is then a no-op. */
    h->body_end = s->req_done || (!s->pending_len && !s->req_chunked && s->req_cl <= 0);
    /* The body read while the stream went through its filters becomes
     * the start of this stream's buffer. */
    if (adopt_pending(h, s) < 0 || (h->body_end && s->req_trailers.n && take_trailers(h, s) < 0)) {
        stream_free(h);
        pool->active--;
        s->pool = NULL;
        wf_stream_local_reply(s, 503, "out of memory\n", 14, "UF");
        return;
    }
    h->flow_off = wf_chunkq_full(&h->body); /* the client side stopped itself */
    h->s = s;
    s->h2u = h;
    stream_launch(h, pool);
}

int wf_h2u_ready(const wf_stream *s)
{
    return s->h2u != NULL;
}

void wf_h2u_body(wf_stream *s, const char *data, size_t len, int end)
{
    wf_h2us *h = s->h2u;
    wf_h2uconn *c;
    const char *oom = NULL;

    if (!h || h->abandoned || h->body_end || h->c->closing || h->c->failing)
        return;
    c = h->c;
    if (wf_chunkq_push(&h->body, data, len) < 0)
        oom = "body";
    else if (end && s->req_trailers.n && take_trailers(h, s) < 0)
        oom = "trailers";
    if (oom) {
        snprintf(h->why, sizeof(h->why), "out of memory for the request %s", oom);
        h->abandoned = 1;
        body_free(h);
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_INTERNAL_ERROR);
        schedule_flush(c);
        return;
    }
    if (end)
        h->body_end = 1;
    if (h->deferred) {
        h->deferred = 0;
        nghttp2_session_resume_data(c->ng, h->id);
    }
    schedule_flush(c);
    if (wf_chunkq_full(&h->body) && !h->flow_off) {
        h->flow_off = 1;
        wf_stream_request_flow(s, 0);
    }
}

void wf_h2u_detach(wf_stream *s)
{
    wf_h2us *h = s->h2u;
    wf_h2uconn *c;

    if (!h)
        return;
    c = h->c;
    stream_part(h);
    if (c->closing || c->failing)
        return;
    /* A finished exchange needs nothing; one whose request is still on its
     * way out after a complete response may finish sending; anything else
     * is cancelled. */
    if (!(h->ended && h->body_end) && !h->abandoned) {
        h->abandoned = 1;
        body_free(h);
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_CANCEL);
    }
    schedule_flush(c);
}

void wf_h2u_read_control(wf_stream *s, int on)
{
    wf_h2us *h = s->h2u;

    if (!h)
        return;
    if (!on) {
        h->read_off = 1;
        return;
    }
    h->read_off = 0;
    if (h->unconsumed) {
        nghttp2_session_consume_stream(h->c->ng, h->id, h->unconsumed);
        h->unconsumed = 0;
        schedule_flush(h->c); /* the WINDOW_UPDATE */
    }
}

void wf_h2u_pool_idle_close(wf_pool *p)
{
    for (wf_h2uconn *c = p->h2, *n; c; c = n) {
        n = c->next;
        if (!c->n_attached)
            conn_close(c, 1);
    }
}

void wf_h2u_pool_free(wf_pool *p)
{
    /* Connections close before their worker's loop ends (drain closes the
     * idle ones, and none has a stream once no client is left); one still
     * here is closed and its callbacks run now. */
    if (!p->h2)
        return;
    WF_DEBUG("h2 upstream %s: connections still open at exit", p->hostport);
    uv_loop_t *loop = &p->h2->w->loop;
    while (p->h2)
        conn_close(p->h2, 0);
    uv_run(loop, UV_RUN_DEFAULT);
}
