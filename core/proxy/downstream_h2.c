/*
 * downstream_h2.c: HTTP/2 connections from clients (nghttp2 server
 * sessions): h2c with prior knowledge on plaintext listeners and h2 over
 * TLS (a peer proxy's mTLS, ALPN h2).  Each HTTP/2 stream is a wf_stream
 * that goes through the same filter chain and upstream code as an HTTP/1.1
 * request; only the framing differs.
 *
 * Memory and flow control: request DATA is acknowledged to the client
 * (WINDOW_UPDATE) only once the upstream took it, so a stream whose
 * upstream is slow stops at its window while the others go on.  Response
 * bytes wait in the stream's own queue (a wf_chunkq) until the client's
 * window lets nghttp2 send them; above WF_WRITE_HIGH_WATER the upstream
 * stops being read for that stream.  What nghttp2 produces is written to
 * the socket only while the connection's write queue is below the same
 * mark.
 *
 * Request trailers (HEADERS after the body, with END_STREAM) go to
 * s->req_trailers before the request ends; an HTTP/2 upstream sends them
 * on, an HTTP/1.1 one drops them.
 *
 * Lifetimes: a wf_h2s (this file's stream) lives from the client's
 * HEADERS to nghttp2's stream close; its wf_stream ends earlier, when the
 * request was read and the whole response queued (wf__h2d_unlink).  The
 * session is never freed inside an nghttp2 callback.
 *
 * Sending: what the stream functions queue (response head, body, end) is
 * sent from the worker's check phase, right after the loop's I/O
 * callbacks, never from inside them: sending may close an HTTP/2 stream,
 * which ends its wf_stream, and the caller may still be using it.  Only
 * the connection's own entry points (bytes read, socket drained) send
 * directly.
 */
#include "proxy/proxy.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/chunkq.h"
#include "util/log.h"

#define H2_MAX_CONCURRENT 256
#define H2_STREAM_WINDOW (1 << 20)
#define H2_CONN_WINDOW (16 << 20)
#define H2_SEND_CHUNK 16384
#define H2_SEND_BUF (64 * 1024) /* frames gathered per write */
/* Response bytes a connection may hold for a client that does not read:
 * each stream holds up to WF_WRITE_HIGH_WATER, but 256 of them must not
 * add up to 256 MiB.  Above this every stream adding bytes pauses its
 * upstream; below half of it they resume. */
#define H2_CONN_QUEUE_MAX (8u << 20)

typedef struct wf_h2s {
    struct wf_h2conn *c;
    int32_t id;
    wf_stream *s;  /* NULL once the wf_stream has finished */
    wf_chunkq out; /* response body for nghttp2 to take (limit: WF_WRITE_HIGH_WATER) */
    int out_end;   /* the response is complete once out drains */
    int deferred;  /* the data provider is waiting for bytes */
    int submitted; /* response HEADERS submitted */
    nghttp2_nv *trailers;
    size_t n_trailers;
    char *trailer_mem;
    size_t unconsumed; /* request bytes not acknowledged yet (paused) */
    int flow_paused;
    int conn_paused; /* its upstream paused for the connection's total */
    size_t hdr_bytes;
    struct wf_h2s *prev, *next;
} wf_h2s;

typedef struct wf_h2conn {
    wf_dconn *dc;
    nghttp2_session *ng;
    wf_h2s *streams;
    size_t n_streams;
    size_t queued;  /* response bytes in all its streams' queues */
    int n_conn_paused;
    int busy;       /* inside nghttp2: do not free */
    int want_close; /* close once out of nghttp2 */
    int goaway;     /* drain: GOAWAY sent, close when the streams are done */
    int dirty;      /* on the worker's list of sessions to flush */
    struct wf_h2conn *next_dirty;
} wf_h2conn;

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;

static void conn_flush(wf_h2conn *c);
static void schedule_flush(wf_h2conn *c);

/* ---- streams ---- */

static void h2s_free(wf_h2s *h)
{
    h->c->queued -= wf_chunkq_len(&h->out);
    h->c->n_conn_paused -= h->conn_paused;
    wf_chunkq_free(&h->out);
    free(h->trailers);
    free(h->trailer_mem);
    if (h->prev)
        h->prev->next = h->next;
    else
        h->c->streams = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->c->n_streams--;
    free(h);
}

/* The wf_stream goes away (finished, or its connection closes). */
void wf__h2d_unlink(wf_stream *s)
{
    wf_h2s *h = s->h2d;

    if (h)
        h->s = NULL;
    s->h2d = NULL;
}

/* Ends a stream's wf_stream early (reset or connection gone). */
static void end_wf_stream(wf_h2s *h, const char *flags)
{
    wf_stream *s = h->s;

    if (!s)
        return;
    if (!s->resp_done && flags)
        s->flags = flags;
    s->req_done = s->resp_done = 1;
    h->s = NULL;
    s->h2d = NULL;
    wf__stream_count(s);
    wf_chain_complete(s);
    wf_upstream_detach(s);
    wf__stream_free(s);
}

/* ---- response side (called by downstream.c) ---- */

/* The connection's queues drained below half their cap: the streams paused
 * for it go on (those whose own queue is below its mark). */
static void conn_resume(wf_h2conn *c)
{
    for (wf_h2s *h = c->streams; h && c->n_conn_paused; h = h->next) {
        if (!h->conn_paused)
            continue;
        h->conn_paused = 0;
        c->n_conn_paused--;
        if (h->s && !wf_chunkq_full(&h->out))
            wf_upstream_read_control(h->s, 1);
    }
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    wf_h2s *h = src->ptr;
    size_t n = wf_chunkq_pull(&h->out, buf, length);

    h->c->queued -= n;
    if (h->c->n_conn_paused && h->c->queued < H2_CONN_QUEUE_MAX / 2)
        conn_resume(h->c);

    if (wf_chunkq_empty(&h->out) && h->out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (h->n_trailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(ng, id, h->trailers, h->n_trailers) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        h->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    /* Room again below the mark: the upstream may go on. */
    if (h->s && !h->conn_paused && wf_chunkq_low(&h->out))
        wf_upstream_read_control(h->s, 1);
    return (ssize_t)n;
}

static int is_connection_header(const wf_str *n)
{
    static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding",
                                       "upgrade", "proxy-connection"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (n->len == strlen(drop[i]) && strncasecmp(n->p, drop[i], n->len) == 0)
            return 1;
    return 0;
}

/* nghttp2 wants lower-case names: the stream's arena holds the copies. */
static int make_nva(wf_stream *s, const wf_hdrs *h, int with_status, nghttp2_nv **out, size_t *n)
{
    nghttp2_nv *nv = wf_arena_alloc(&s->arena, (h->n + 1) * sizeof(*nv));
    size_t k = 0;

    if (!nv)
        return -1;
    for (uint32_t i = 0; i < h->n; i++) {
        const wf_hdr *x = &h->v[i];
        char *name;
        if (x->name.p[0] == ':' && !(with_status && x->name.len == 7 &&
                                     memcmp(x->name.p, ":status", 7) == 0))
            continue;
        if (is_connection_header(&x->name))
            continue;
        if (!(name = wf_arena_strndup(&s->arena, x->name.p, x->name.len)))
            return -1;
        for (size_t j = 0; j < x->name.len; j++)
            if (name[j] >= 'A' && name[j] <= 'Z')
                name[j] = (char)(name[j] + 32);
        /* nghttp2 copies them: the frame may leave after the stream's
         * arena is gone. */
        nv[k++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)x->value.p, x->name.len, x->value.len,
                               NGHTTP2_NV_FLAG_NONE};
    }
    *out = nv;
    *n = k;
    return 0;
}

void wf_h2d_write_head(wf_stream *s)
{
    wf_h2s *h = s->h2d;
    nghttp2_nv *nv;
    size_t n;
    nghttp2_data_provider dp = {.source.ptr = h, .read_callback = read_body};
    int bodyless = s->head || s->status == 204 || s->status == 304 ||
                   (s->local_reply && s->grpc) || s->resp_headers_only;
    int r;

    if (make_nva(s, &s->resp, 1, &nv, &n) < 0) {
        wf_h2d_abort(s);
        return;
    }
    /* A bodyless response is one HEADERS frame with END_STREAM (gRPC's
     * trailers-only form when the proxy answers a gRPC call itself). */
    r = nghttp2_submit_response(h->c->ng, h->id, nv, n, bodyless ? NULL : &dp);
    if (r != 0) {
        WF_DEBUG("h2: submit response on stream %d: %s", h->id, nghttp2_strerror(r));
        wf_h2d_abort(s);
        return;
    }
    h->submitted = 1;
    if (bodyless)
        h->out_end = 1;
    schedule_flush(h->c);
}

void wf_h2d_body(wf_stream *s, const char *data, size_t len)
{
    wf_h2s *h = s->h2d;

    if (!h || h->out_end)
        return;
    if (wf_chunkq_push(&h->out, data, len) < 0) {
        wf_h2d_abort(s);
        return;
    }
    h->c->queued += len;
    if (h->c->queued > H2_CONN_QUEUE_MAX && !h->conn_paused) {
        h->conn_paused = 1;
        h->c->n_conn_paused++;
        wf_upstream_read_control(s, 0);
    }
    if (h->deferred && h->submitted) {
        h->deferred = 0;
        nghttp2_session_resume_data(h->c->ng, h->id);
    }
    schedule_flush(h->c);
}

void wf_h2d_end(wf_stream *s)
{
    wf_h2s *h = s->h2d;

    if (!h || h->out_end)
        return;
    h->out_end = 1;
    if (s->trailers.n && !s->head) {
        nghttp2_nv *nv;
        size_t n, total = 0;
        char *mem, *p;
        if (make_nva(s, &s->trailers, 0, &nv, &n) == 0 &&
            (h->trailers = malloc(n * sizeof(*nv) + 1))) {
            /* The stream's arena goes before nghttp2 sends the trailers:
             * keep a copy. */
            for (size_t i = 0; i < n; i++)
                total += nv[i].namelen + nv[i].valuelen;
            if ((mem = p = malloc(total + 1))) {
                for (size_t i = 0; i < n; i++) {
                    h->trailers[i] = nv[i];
                    memcpy(p, nv[i].name, nv[i].namelen);
                    h->trailers[i].name = (uint8_t *)p;
                    p += nv[i].namelen;
                    memcpy(p, nv[i].value, nv[i].valuelen);
                    h->trailers[i].value = (uint8_t *)p;
                    p += nv[i].valuelen;
                }
                h->trailer_mem = mem;
                h->n_trailers = n;
            }
        }
    }
    if (h->deferred && h->submitted) {
        h->deferred = 0;
        nghttp2_session_resume_data(h->c->ng, h->id);
    }
    schedule_flush(h->c);
}

void wf_h2d_abort(wf_stream *s)
{
    wf_h2s *h = s->h2d;
    wf_h2conn *c;

    if (!h)
        return;
    c = h->c;
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_INTERNAL_ERROR);
    end_wf_stream(h, "UPE");
    schedule_flush(c);
}

size_t wf_h2d_queued(const wf_stream *s)
{
    return s->h2d ? wf_chunkq_len(&s->h2d->out) : 0;
}

void wf_h2d_request_flow(wf_stream *s, int on)
{
    wf_h2s *h = s->h2d;

    if (!h)
        return;
    h->flow_paused = !on;
    if (on && h->unconsumed) {
        nghttp2_session_consume(h->c->ng, h->id, h->unconsumed);
        h->unconsumed = 0;
        schedule_flush(h->c);
    }
}

/* ---- request side: nghttp2 callbacks ---- */

static wf_h2s *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    wf_h2conn *c = ud;
    wf_h2s *h;
    wf_stream *s;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (c->goaway) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    s = NULL;
    if (!(h = calloc(1, sizeof(*h))) || !(s = wf__stream_new(c->dc)) || !s->l) {
        if (s)
            wf__stream_free(s);
        free(h);
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h->c = c;
    h->id = f->hd.stream_id;
    h->s = s;
    wf_chunkq_init(&h->out, WF_WRITE_HIGH_WATER);
    s->h2d = h;
    s->http_minor = 1;
    s->req_cl = -1;
    h->next = c->streams;
    if (c->streams)
        c->streams->prev = h;
    c->streams = h;
    c->n_streams++;
    nghttp2_session_set_stream_user_data(ng, h->id, h);
    wf_stat_add(c->dc->w, WF_ST_DOWNSTREAM_RQ_TOTAL, 1);
    wf_stat_add(c->dc->w, WF_ST_DOWNSTREAM_RQ_ACTIVE, 1);
    return 0;
}

/* A field of the request's trailers (HEADERS after the body; nghttp2 lets
 * them through only with END_STREAM and without pseudo-headers).  They go
 * to s->req_trailers for an HTTP/2 upstream, which sends them on after the
 * body; an HTTP/1.1 upstream drops them. */
static int on_trailer(wf_h2s *h, wf_stream *s, const wf_str *n, const uint8_t *value,
                      size_t valuelen)
{
    if (s->req_done || s->local_reply || s->resp_done)
        return 0; /* nobody will send them */
    if (h->hdr_bytes > WF_MAX_HEADER_BYTES || s->req_trailers.n >= WF_MAX_HEADERS)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    if (wf_http_hop_by_hop(n))
        return 0;
    if (wf_hdrs_add(&s->arena, &s->req_trailers, n->p, n->len, (const char *)value, valuelen) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    wf_h2s *h = stream_of(ng, f->hd.stream_id);
    wf_stream *s = h ? h->s : NULL;
    wf_str n = {(const char *)name, namelen};

    if (!s || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* Head and trailers share one budget: the stream's header memory. */
    h->hdr_bytes += namelen + valuelen + 32;
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return on_trailer(h, s, &n, value, valuelen);
    if (h->hdr_bytes > WF_MAX_HEADER_BYTES || s->req.n >= WF_MAX_HEADERS)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    /* Only this proxy may say who the client is (as on HTTP/1.1). */
    if (h->c->dc->xfcc_mode && namelen == 23 &&
        memcmp(name, "x-forwarded-client-cert", 23) == 0)
        return 0;
    if (namelen == 4 && memcmp(name, "host", 4) == 0) {
        if (!s->authority.len)
            s->authority = (wf_str){wf_arena_strndup(&s->arena, (const char *)value, valuelen),
                                    valuelen};
        return 0;
    }
    if (wf_http_hop_by_hop(&n) && !(namelen == 2 && memcmp(name, "te", 2) == 0))
        return 0;
    if (wf_hdrs_add(&s->arena, &s->req, (const char *)name, namelen, (const char *)value,
                    valuelen) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    {
        const wf_hdr *x = &s->req.v[s->req.n - 1];
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            s->method = x->value;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            s->path = x->value;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            s->authority = x->value;
        else if (namelen == 7 && memcmp(name, ":scheme", 7) == 0)
            s->scheme = x->value;
        else if (namelen == 14 && memcmp(name, "content-length", 14) == 0)
            s->req_cl = strtoll(x->value.p, NULL, 10);
    }
    return 0;
}

/* The request head is complete: put the pseudo-headers first (as the
 * HTTP/1.1 side does) and route the stream. */
static void request_head_done(wf_h2s *h, int end_stream)
{
    wf_stream *s = h->s;
    wf_hdrs in = s->req;
    wf_dconn *dc = h->c->dc;
    static const struct {
        const char *n;
        size_t l;
    } pseudo[] = {{":method", 7}, {":path", 5}, {":authority", 10}, {":scheme", 7}};

    if (!s->method.len || !s->path.len || !s->authority.len) {
        s->req_done = end_stream;
        wf_chain_stream_create(s);
        wf_stream_local_reply(s, 400,
                              "bad request: an HTTP/2 request needs :method, :path and :authority\n",
                              67, "DPE");
        return;
    }
    if (wf__stream_lower_authority(s) < 0)
        goto oom;
    s->head = s->method.len == 4 && memcmp(s->method.p, "HEAD", 4) == 0;
    s->req.v = NULL;
    s->req.n = s->req.cap = 0;
    for (size_t k = 0; k < 4; k++) {
        wf_str v = k == 0 ? s->method : k == 1 ? s->path : k == 2 ? s->authority : s->scheme;
        if (k == 3 && !v.len)
            v = (wf_str){"http", 4};
        if (wf_hdrs_add(&s->arena, &s->req, pseudo[k].n, pseudo[k].l, v.p, v.len) < 0)
            goto oom;
    }
    for (uint32_t i = 0; i < in.n; i++)
        if (in.v[i].name.p[0] != ':' &&
            wf_hdrs_add(&s->arena, &s->req, in.v[i].name.p, in.v[i].name.len, in.v[i].value.p,
                        in.v[i].value.len) < 0)
            goto oom;
    if (dc->xfcc && wf_hdrs_add(&s->arena, &s->req, "x-forwarded-client-cert", 23, dc->xfcc,
                                strlen(dc->xfcc)) < 0)
        goto oom;
    s->method = s->req.v[0].value;
    s->path = s->req.v[1].value;
    s->authority = s->req.v[2].value;
    /* HTTP/2 frames the body itself: upstream HTTP/1.1 needs a length or
     * chunks. */
    s->req_chunked = !end_stream && s->req_cl < 0;
    if (end_stream)
        s->req_done = 1;
    wf__stream_route(s);
    return;
oom:
    wf_chain_stream_create(s);
    wf_stream_local_reply(s, 503, "out of stream memory\n", 21, "DPE");
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    wf_h2s *h = f->hd.stream_id ? stream_of(ng, f->hd.stream_id) : NULL;
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    if (!h || !h->s)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        request_head_done(h, end);
        return 0;
    }
    if (end && (f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS)) {
        wf_stream *s = h->s;
        if (s->req_done)
            return 0;
        wf_stream_request_end(s);
        if (s->resp_done && h->s == s) {
            /* Answered before the request ended: finish now. */
            wf_stream_response_end(s);
        }
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    wf_h2s *h = stream_of(ng, id);
    wf_stream *s = h ? h->s : NULL;

    if (!s) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    wf_stream_request_body(s, (const char *)data, len);
    if (h->s != s || !h->flow_paused)
        nghttp2_session_consume(ng, id, len);
    else
        h->unconsumed += len;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    wf_h2s *h = stream_of(ng, id);

    if (!h)
        return 0;
    if (h->s)
        end_wf_stream(h, error_code ? "DR" : NULL); /* the client reset it */
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    h2s_free(h);
    return 0;
}

/* ---- the connection ---- */

void wf__h2d_flush(wf_worker *w)
{
    while (w->h2_dirty) {
        wf_h2conn *c = w->h2_dirty;
        w->h2_dirty = c->next_dirty;
        c->dirty = 0;
        conn_flush(c);
    }
}

static void schedule_flush(wf_h2conn *c)
{
    wf_worker *w = c->dc->w;

    if (c->dirty || c->dc->closing)
        return;
    c->dirty = 1;
    c->next_dirty = w->h2_dirty;
    w->h2_dirty = c;
    wf__worker_flush_soon(w);
}

/* The connection closes: every stream still running ends (the client is
 * gone).  The session itself is freed later (wf_h2d_free), outside any
 * nghttp2 call that may be on the stack. */
void wf_h2d_close_streams(wf_dconn *dc)
{
    wf_h2conn *c = dc->h2;

    if (!c)
        return;
    for (wf_h2s *h = c->streams; h; h = h->next)
        end_wf_stream(h, "DC");
}

/* Sends what nghttp2 has, as far as the socket keeps up, then closes the
 * connection if that is due. */
static void conn_flush(wf_h2conn *c)
{
    static __thread void *outbuf;
    char *out = wf_thread_buffer(&outbuf, H2_SEND_BUF);
    size_t cap = out ? H2_SEND_BUF : 0; /* none: each frame written as it comes */
    wf_dconn *dc = c->dc;
    size_t n = 0;

    if (c->busy || dc->closing)
        return;
    c->busy = 1;
    /* Frames are gathered into one buffer so that a response (HEADERS,
     * DATA, trailers) leaves in one write. */
    while (dc->wq.queued + n < WF_WRITE_HIGH_WATER) {
        const uint8_t *p;
        ssize_t len = nghttp2_session_mem_send(c->ng, &p);
        if (len < 0) {
            WF_DEBUG("h2: %s: send: %s", dc->peer, nghttp2_strerror((int)len));
            c->want_close = 1;
            break;
        }
        if (len == 0)
            break;
        if (n + (size_t)len > cap && n) {
            uv_buf_t b = uv_buf_init(out, (unsigned)n);
            wf__dc_write(dc, &b, 1);
            n = 0;
            if (dc->closing)
                break;
        }
        if ((size_t)len > cap) {
            uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
            wf__dc_write(dc, &b, 1);
        } else {
            memcpy(out + n, p, (size_t)len);
            n += (size_t)len;
        }
        if (dc->closing)
            break;
    }
    if (n && !dc->closing) {
        uv_buf_t b = uv_buf_init(out, (unsigned)n);
        wf__dc_write(dc, &b, 1);
    }
    c->busy = 0;
    if (dc->closing)
        return;
    if (c->want_close ||
        (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) ||
        (c->goaway && c->n_streams == 0 && !nghttp2_session_want_write(c->ng)))
        wf__dc_close(dc);
}

/* nghttp2's callback table and options, made once for all workers. */
static uv_once_t setup_once = UV_ONCE_INIT;

static void setup(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_option_new(&options);
    nghttp2_option_set_no_auto_window_update(options, 1);
    nghttp2_option_set_max_send_header_block_length(options, 256 * 1024);
}

int wf_h2d_start(wf_dconn *dc, const char *data, size_t len)
{
    wf_h2conn *c;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_CONCURRENT},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, WF_MAX_HEADER_BYTES},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };

    uv_once(&setup_once, setup);
    if (!(c = calloc(1, sizeof(*c))))
        return -1;
    c->dc = dc;
    if (nghttp2_session_server_new2(&c->ng, callbacks, c, options) != 0) {
        free(c);
        return -1;
    }
    dc->h2 = c;
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    wf_h2d_feed(dc, data, len);
    return 0;
}

void wf_h2d_feed(wf_dconn *dc, const char *data, size_t len)
{
    wf_h2conn *c = dc->h2;
    ssize_t r;

    if (!c || dc->closing)
        return;
    if (len) {
        c->busy = 1;
        r = nghttp2_session_mem_recv(c->ng, (const uint8_t *)data, len);
        c->busy = 0;
        if (dc->closing)
            return;
        if (r < 0) {
            WF_DEBUG("h2: %s: %s", dc->peer, nghttp2_strerror((int)r));
            if (r == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
                wf__dc_close(dc);
                return;
            }
            /* nghttp2 queued a GOAWAY for protocol errors: send it. */
            c->want_close = 1;
        }
    }
    conn_flush(c);
}

void wf_h2d_goaway(wf_dconn *dc)
{
    wf_h2conn *c = dc->h2;

    if (!c || c->goaway)
        return;
    c->goaway = 1;
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                          NULL, 0);
    conn_flush(c);
}

int wf_h2d_idle(const wf_dconn *dc)
{
    return dc->h2 && dc->h2->n_streams == 0 && !dc->h2->goaway;
}

void wf_h2d_free(wf_dconn *dc)
{
    wf_h2conn *c = dc->h2;

    if (!c)
        return;
    wf_h2d_close_streams(dc);
    while (c->streams)
        h2s_free(c->streams);
    if (c->dirty)
        for (wf_h2conn **pp = &dc->w->h2_dirty; *pp; pp = &(*pp)->next_dirty)
            if (*pp == c) {
                *pp = c->next_dirty;
                break;
            }
    nghttp2_session_del(c->ng);
    dc->h2 = NULL;
    free(c);
}
