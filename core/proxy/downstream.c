/*
 * downstream.c: HTTP/1.1 connections from clients (apps on the outbound
 * listener, peer proxies on the inbound one).  This is where a request is
 * parsed (llhttp), turned into a stream, sent through the filter chain
 * (chain.c), forwarded (upstream.c) and answered.
 *
 * One stream at a time per connection: a pipelined request is parsed only
 * after the previous response is complete (the parser pauses at the end
 * of each message and keeps the unparsed bytes), so responses stay in
 * order.  Body bytes are streamed, never buffered whole: when the other
 * side's write queue is above the high-water mark, reading stops.
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"

static llhttp_settings_t settings;
static uint64_t next_stream_id;

static void dc_close(wf_dconn *dc);
static void stream_maybe_finish(wf_stream *s);
static void dc_feed(wf_dconn *dc, const char *data, size_t len);
static void dc_tls_input(wf_dconn *dc, const char *data, size_t len);
static void start_reading(wf_dconn *dc);
static int keep_te(const wf_hdrs *in, wf_arena *a, wf_hdrs *out);
static int upgrade_check(wf_stream *s, const wf_hdrs *in);

/* ---- header lists ---- */

wf_hdrs *wf_stream_hdrs(wf_stream *s, wf_part part)
{
    switch (part) {
    case WF_REQUEST:
        return &s->req;
    case WF_RESPONSE:
        return &s->resp;
    default:
        return NULL; /* trailers arrive with HTTP/2 */
    }
}

/* ---- streams ---- */

wf_stream *wf__stream_new(wf_dconn *dc)
{
    wf_arena a;
    wf_stream *s;
    wf_worker *w = dc->w;

    wf_arena_init(&a, WF_STREAM_MEM_LIMIT);
    s = wf_arena_alloc(&a, sizeof(*s));
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->arena = a;
    s->w = w;
    s->dc = dc;
    s->id = ++next_stream_id;
    s->snap = w->snap;
    wf_snapshot_ref(s->snap);
    s->l = dc->lindex < s->snap->n_ls ? &s->snap->ls[dc->lindex] : NULL;
    s->req_cl = -1;
    s->flags = "-";
    s->pending_tail = &s->pending;
    s->start_us = wf_now_us();
    s->start_ms = uv_now(&w->loop);
    memcpy(s->peer, dc->peer, sizeof(s->peer));
    w->n_streams++;
    return s;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void wf__stream_free(wf_stream *s)
{
    wf_arena a;
    wf_worker *w = s->w;

    wf_chain_stream_destroy(s);
    wf__tunnel_free(s);
    for (wf_timer *t = s->timers; t; t = t->next) {
        uv_timer_stop(&t->t);
        uv_close((uv_handle_t *)&t->t, timer_closed);
    }
    for (wf_chunk *c = s->pending, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    wf_snapshot_unref(s->snap);
    w->n_streams--;
    a = s->arena; /* the stream lives in its own arena */
    wf_arena_reset(&a);
}

void wf__stream_count(wf_stream *s)
{
    wf_worker *w = s->w;

    int cls = s->status / 100;

    if (s->l && s->l->n_l4)
        return; /* a TCP connection: counted by its tcp.* stats */
    wf_stat_add(w, WF_ST_DOWNSTREAM_RQ_ACTIVE, -1);
    if (cls >= 1 && cls <= 5)
        wf_stat_add(w, WF_ST_DOWNSTREAM_RQ_1XX + cls - 1, 1);
    if (s->cluster) {
        wf_cluster *c = s->cluster;
        if (cls == 2)
            wf_stat_add(w, c->st_rq_2xx, 1);
        else if (cls == 4)
            wf_stat_add(w, c->st_rq_4xx, 1);
        else if (cls == 5)
            wf_stat_add(w, c->st_rq_5xx, 1);
    }
}

/* Ends the stream once both the request was read and the response sent. */
static void stream_maybe_finish(wf_stream *s)
{
    wf_dconn *dc = s->dc;

    if (!s->req_done || !s->resp_done)
        return;
    wf__stream_count(s);
    wf_chain_complete(s);
    wf_upstream_detach(s);
    if (s->h2d) {
        /* The HTTP/2 stream keeps what it still has to send. */
        wf__h2d_unlink(s);
        wf__stream_free(s);
        return;
    }
    dc->s = NULL;
    dc->last_ms = uv_now(&dc->w->loop);
    if (s->want_close || atomic_load(&s->w->drain)) {
        wf__stream_free(s);
        dc_close(dc);
        return;
    }
    wf__stream_free(s);
    if (dc->paused) {
        /* Parse what the client pipelined behind this request. */
        char *held = dc->held;
        size_t n = dc->held_len;
        dc->held = NULL;
        dc->held_len = 0;
        dc->paused = 0;
        llhttp_resume(&dc->parser);
        if (n)
            dc_feed(dc, held, n);
        free(held);
        if (!dc->paused && !dc->closing && dc->tls && wf_tls_pending(dc->tls))
            dc_tls_input(dc, NULL, 0); /* records decrypted behind the held bytes */
        if (!dc->paused && !dc->closing && !dc->reading)
            start_reading(dc);
    }
}

/* ---- writing downstream ---- */

/* Writes b[0..n) after the pending response head, if any, in one call:
 * head and first body bytes leave in one write (one syscall, one TLS
 * record). */
static void dc_write(wf_dconn *dc, const uv_buf_t *b, unsigned n)
{
    uv_buf_t all[8];

    if (dc->closing)
        return;
    if (dc->head_out.len && n < 8) {
        all[0] = dc->head_out;
        if (n)
            memcpy(all + 1, b, n * sizeof(*b));
        dc->head_out.len = 0;
        b = all;
        n++;
    }
    if ((dc->tls ? wf_tls_write(dc->tls, b, n) : wf_write((uv_stream_t *)&dc->tcp, &dc->wq, b, n)) <
        0)
        dc_close(dc);
}

static void dc_flush_head(wf_dconn *dc)
{
    if (dc->head_out.len)
        dc_write(dc, NULL, 0);
}

void wf__dc_flush_heads(wf_worker *w)
{
    while (w->head_dirty) {
        wf_dconn *dc = w->head_dirty;
        w->head_dirty = dc->next_head;
        dc->head_listed = 0;
        dc_flush_head(dc);
    }
}

/* The head waits for the body this loop turn may bring. */
static void dc_hold_head(wf_dconn *dc, char *p, size_t len)
{
    wf_worker *w = dc->w;

    dc->head_out = uv_buf_init(p, (unsigned)len);
    if (dc->head_listed)
        return;
    dc->head_listed = 1;
    dc->next_head = w->head_dirty;
    w->head_dirty = dc;
    wf__worker_flush_soon(w);
}

void wf__dc_write(wf_dconn *dc, const uv_buf_t *b, unsigned n)
{
    dc_write(dc, b, n);
}

void wf__dc_close(wf_dconn *dc)
{
    dc_close(dc);
}

static void dc_shut_done(void *data, int status)
{
    wf_dconn *dc = data;

    if (status < 0)
        dc_close(dc);
    else if (!dc->closing && dc->s)
        wf_tunnel_shut_done(dc->s, 0);
}

void wf__dc_shutdown(wf_dconn *dc)
{
    if (dc->closing || dc->shut)
        return;
    dc->shut = 1;
    if (dc->tls)
        wf_tls_close_notify(dc->tls); /* TLS's end of data, ahead of TCP's */
    if (wf_shutdown((uv_stream_t *)&dc->tcp, dc_shut_done, dc) < 0)
        dc_close(dc);
}

size_t wf_stream_downstream_queued(wf_stream *s)
{
    return s->h2d ? wf_h2d_queued(s) : s->dc->wq.queued;
}

void wf_stream_abort(wf_stream *s)
{
    if (s->h2d)
        wf_h2d_abort(s);
    else
        dc_close(s->dc);
}

void wf_stream_request_flow(wf_stream *s, int on)
{
    wf_dconn *dc = s->dc;

    if (s->h2d) {
        wf_h2d_request_flow(s, on);
    } else if (!on && dc->reading) {
        dc->reading = 0;
        uv_read_stop((uv_stream_t *)&dc->tcp);
    } else if (on && !dc->reading && !dc->paused && !dc->closing && !dc->eof) {
        start_reading(dc);
    }
}

void wf_stream_request_body(wf_stream *s, const char *data, size_t len)
{
    wf_chunk *c;

    s->req_bytes += len;
    if (s->local_reply || s->resp_done)
        return; /* answered already: drain and drop */
    if (wf_upstream_ready(s)) {
        wf_upstream_body(s, data, len, 0);
        return;
    }
    if (!(c = malloc(sizeof(*c) + len))) {
        wf_stream_local_reply(s, 503, "out of memory\n", 14, "DPE");
        return;
    }
    c->next = NULL;
    c->len = len;
    memcpy(c->data, data, len);
    *s->pending_tail = c;
    s->pending_tail = &c->next;
    s->pending_len += len;
    if (s->pending_len > WF_WRITE_HIGH_WATER)
        wf_stream_request_flow(s, 0);
}

void wf_stream_request_end(wf_stream *s)
{
    s->req_done = 1;
    if (!s->local_reply && wf_upstream_ready(s))
        wf_upstream_body(s, NULL, 0, 1);
}

/* Called by the chain after the response hooks: serialises the head. */
void wf_stream_write_head(wf_stream *s)
{
    wf_hdrs *h = &s->resp;
    size_t cap = 600, len;
    char *p;
    int no_body = s->head || s->status == 204 || s->status == 304 || s->status < 200;
    wf_str cl;
    int has_cl = wf_hdrs_get(h, "content-length", 14, &cl);

    if (s->h2d) {
        s->resp_started = 1;
        wf_h2d_write_head(s);
        return;
    }
    for (uint32_t i = 0; i < h->n; i++)
        cap += h->v[i].name.len + h->v[i].value.len + 4;
    p = wf_arena_alloc(&s->arena, cap);
    if (!p) {
        dc_close(s->dc);
        return;
    }
    len = (size_t)snprintf(p, cap, "HTTP/1.1 %d %s\r\n", s->status, wf_http_reason(s->status));
    for (uint32_t i = 0; i < h->n; i++) {
        const wf_hdr *x = &h->v[i];
        if (x->name.p[0] == ':')
            continue;
        if (wf_http_hop_by_hop(&x->name) &&
            !(x->name.len == 14 && strncasecmp(x->name.p, "content-length", 14) == 0))
            continue;
        memcpy(p + len, x->name.p, x->name.len);
        len += x->name.len;
        p[len++] = ':';
        p[len++] = ' ';
        memcpy(p + len, x->value.p, x->value.len);
        len += x->value.len;
        p[len++] = '\r';
        p[len++] = '\n';
    }
    if (!has_cl && !no_body) {
        if (s->http_minor >= 1) {
            s->resp_chunked_out = 1;
            memcpy(p + len, "transfer-encoding: chunked\r\n", 28);
            len += 28;
        } else {
            s->want_close = 1;
        }
    }
    if (s->upgrade && s->status == 101) {
        /* Switching protocols: the endpoint's upgrade header went through. */
        wf_str up;
        if (wf_hdrs_get(h, "upgrade", 7, &up) && up.len < 256)
            len += (size_t)snprintf(p + len, cap - len, "upgrade: %.*s\r\n", (int)up.len, up.p);
        memcpy(p + len, "connection: upgrade\r\n", 21);
        len += 21;
    } else if (s->want_close || atomic_load(&s->w->drain)) {
        memcpy(p + len, "connection: close\r\n", 19);
        len += 19;
    }
    p[len++] = '\r';
    p[len++] = '\n';
    s->resp_started = 1;
    if (s->upgrade && s->status == 101) {
        uv_buf_t b = uv_buf_init(p, (unsigned)len);
        dc_write(s->dc, &b, 1);
        if (!s->dc->closing)
            wf_tunnel_begin(s);
        return;
    }
    dc_hold_head(s->dc, p, len);
}

void wf_stream_response_body(wf_stream *s, const char *data, size_t len)
{
    if (!len || s->head)
        return;
    s->resp_bytes += len;
    if (s->h2d) {
        wf_h2d_body(s, data, len);
        if (wf_h2d_queued(s) > WF_WRITE_HIGH_WATER)
            wf_upstream_read_control(s, 0);
        return;
    }
    if (s->resp_chunked_out) {
        char hdr[24];
        uv_buf_t b[3];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        b[0] = uv_buf_init(hdr, (unsigned)n);
        b[1] = uv_buf_init((char *)data, (unsigned)len);
        b[2] = uv_buf_init("\r\n", 2);
        dc_write(s->dc, b, 3);
    } else {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        dc_write(s->dc, &b, 1);
    }
    if (s->dc->wq.queued > WF_WRITE_HIGH_WATER)
        wf_upstream_read_control(s, 0);
}

void wf_stream_response_end(wf_stream *s)
{
    if (s->h2d) {
        s->resp_done = 1;
        wf_h2d_end(s);
        stream_maybe_finish(s);
        return;
    }
    wf_dconn *dc = s->dc;

    if (s->resp_chunked_out && !s->head) {
        uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
        dc_write(dc, &b, 1);
    }
    dc_flush_head(dc);
    /* A failed write closed the connection, which freed s. */
    if (dc->closing)
        return;
    s->resp_done = 1;
    if (!s->req_done && !s->dc->reading && !s->dc->paused && !s->dc->closing)
        start_reading(s->dc); /* answered early: read (and drop) the rest */
    stream_maybe_finish(s);
}

void wf_stream_response_head(wf_stream *s)
{
    wf_chain_response_headers(s, 0);
}

/* Envoy's mapping of an HTTP status the proxy answers with to the gRPC
 * status a gRPC client gets instead. */
static int grpc_status_of(int http)
{
    switch (http) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

/* A gRPC client gets the proxy's own answers as a trailers-only response:
 * HTTP 200, grpc-status and a percent-encoded grpc-message, no body. */
static void grpc_local_reply(wf_stream *s, int status, const char *body, size_t len,
                             const char *flags)
{
    wf_dconn *dc = s->dc;
    char code[8], *msg;
    size_t n = 0;

    s->local_reply = 1;
    s->flags = flags ? wf_arena_strndup(&s->arena, flags, strlen(flags)) : "-";
    s->status = 200;
    while (len && (body[len - 1] == '\n' || body[len - 1] == '\r'))
        len--;
    if (!(msg = wf_arena_alloc(&s->arena, 3 * len + 1))) {
        wf_stream_abort(s);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c >= 0x20 && c < 0x7f && c != '%') {
            msg[n++] = (char)c;
        } else {
            snprintf(msg + n, 4, "%%%02X", c);
            n += 3;
        }
    }
    msg[n] = 0;
    /* The proxy's own deadline is the caller's: DEADLINE_EXCEEDED. */
    snprintf(code, sizeof(code), "%d",
             status == 504 && flags && strcmp(flags, "UT") == 0 ? 4 : grpc_status_of(status));
    s->resp.v = NULL;
    s->resp.n = s->resp.cap = 0;
    if (wf_hdrs_add(&s->arena, &s->resp, ":status", 7, "200", 3) < 0 ||
        wf_hdrs_add(&s->arena, &s->resp, "content-type", 12, "application/grpc", 16) < 0 ||
        wf_hdrs_add(&s->arena, &s->resp, "grpc-status", 11, code, strlen(code)) < 0 ||
        wf_hdrs_add(&s->arena, &s->resp, "grpc-message", 12, msg, n) < 0 ||
        wf_hdrs_add(&s->arena, &s->resp, "content-length", 14, "0", 1) < 0) {
        wf_stream_abort(s);
        return;
    }
    wf_chain_response_headers(s, 1);
    if (dc->closing)
        return;
    wf_stream_response_end(s);
}

void wf_stream_local_reply(wf_stream *s, int status, const char *body, size_t len, const char *flags)
{
    wf_dconn *dc = s->dc;
    char cl[24];
    char *copy;
    wf_hdrs pre;
    wf_str ct;

    if (s->resp_started) {
        /* Too late for a reply: the client already has a head. */
        wf_stream_abort(s);
        return;
    }
    wf_upstream_detach(s);
    if (s->grpc) {
        grpc_local_reply(s, status, body, len, flags);
        return;
    }
    s->local_reply = 1;
    s->flags = flags ? wf_arena_strndup(&s->arena, flags, strlen(flags)) : "-";
    s->status = status;
    /* Headers a filter put on the response before replying (a redirect's
     * location) go out with the reply. */
    pre = s->resp;
    s->resp.v = NULL;
    s->resp.n = s->resp.cap = 0;
    copy = wf_arena_strndup(&s->arena, body ? body : "", len);
    snprintf(cl, sizeof(cl), "%zu", len);
    if (!copy || wf_hdrs_add(&s->arena, &s->resp, ":status", 7, "000", 3) < 0 ||
        (!wf_hdrs_get(&pre, "content-type", 12, &ct) &&
         wf_hdrs_add(&s->arena, &s->resp, "content-type", 12, "text/plain", 10) < 0) ||
        wf_hdrs_add(&s->arena, &s->resp, "content-length", 14, cl, strlen(cl)) < 0) {
        dc_close(s->dc);
        return;
    }
    for (uint32_t i = 0; i < pre.n; i++) {
        const wf_hdr *x = &pre.v[i];
        if (x->name.p[0] == ':' || (x->name.len == 14 && strncasecmp(x->name.p, "content-length", 14) == 0))
            continue;
        if (wf_hdrs_add(&s->arena, &s->resp, x->name.p, x->name.len, x->value.p, x->value.len) < 0) {
            dc_close(s->dc);
            return;
        }
    }
    wf_status3((char *)s->resp.v[0].value.p, status);
    wf_chain_response_headers(s, len == 0);
    /* A failed write closes the connection, which frees s: look at dc. */
    if (dc->closing)
        return;
    wf_stream_response_body(s, copy, len);
    if (dc->closing)
        return;
    wf_stream_response_end(s);
}

/* ---- forwarding ---- */

void wf_stream_forward(wf_stream *s)
{
    wf_endpoint *ep;
    char body[400];
    int n;

    if (!s->cluster_name) {
        n = snprintf(body, sizeof(body), "no route: no router in the filter chain (NR)\n");
        wf_stream_local_reply(s, 404, body, (size_t)n, "NR");
        return;
    }
    s->cluster = wf_snapshot_cluster(s->snap, s->cluster_name);
    if (!s->cluster) {
        n = snprintf(body, sizeof(body), "cluster \"%s\" not found (NC)\n", s->cluster_name);
        wf_stream_local_reply(s, 503, body, (size_t)n, "NC");
        return;
    }
    ep = wf_lb_pick(s->w, s->cluster);
    if (!ep) {
        wf_stat_add(s->w, WF_ST_NO_HEALTHY_UPSTREAM, 1);
        n = snprintf(body, sizeof(body), "no healthy upstream for %s (UH)\n", s->cluster_name);
        wf_stream_local_reply(s, 503, body, (size_t)n, "UH");
        return;
    }
    wf_upstream_start(s, ep);
}

void wf_stream_upstream_failed(wf_stream *s, wf_attempt_result why, const char *detail)
{
    char body[512];
    int n, status = 503;
    const char *flag = "UF";
    wf_attempt a = {.size = sizeof(a), .number = s->attempts, .result = why};

    wf_chain_attempt_done(s, &a);
    if (why == WF_ATTEMPT_TIMEOUT) {
        status = 504;
        flag = "UT";
        n = snprintf(body, sizeof(body), "upstream request timeout to %s (UT)\n", s->upstream_host);
    } else if (why == WF_ATTEMPT_CONNECT_FAILURE) {
        n = snprintf(body, sizeof(body), "upstream connect error to %s (UF): %s\n", s->upstream_host,
                     detail);
    } else {
        flag = "UC";
        n = snprintf(body, sizeof(body),
                     "upstream connection to %s reset before response headers (UC): %s\n",
                     s->upstream_host, detail);
    }
    wf_stream_local_reply(s, status, body, (size_t)n, flag);
}

void wf_stream_upstream_writable(wf_stream *s)
{
    wf_stream_request_flow(s, 1);
}

/* ---- llhttp callbacks ---- */

#define DC(p) ((wf_dconn *)(p)->data)

static int on_message_begin(llhttp_t *p)
{
    wf_dconn *dc = DC(p);

    dc->s = wf__stream_new(dc);
    dc->hdr_bytes = 0;
    dc->in_value = 0;
    if (!dc->s || !dc->s->l)
        return -1;
    wf_stat_add(dc->w, WF_ST_DOWNSTREAM_RQ_TOTAL, 1);
    wf_stat_add(dc->w, WF_ST_DOWNSTREAM_RQ_ACTIVE, 1);
    return 0;
}

static int too_big(wf_dconn *dc, size_t len)
{
    dc->hdr_bytes += len;
    if (dc->hdr_bytes > WF_MAX_HEADER_BYTES) {
        llhttp_set_error_reason(&dc->parser, "WF_HEADERS_TOO_LARGE");
        return 1;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    wf_dconn *dc = DC(p);

    if (too_big(dc, len))
        return HPE_USER;
    return wf_str_append(&dc->s->arena, &dc->s->url, at, len) < 0 ? HPE_USER : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    wf_dconn *dc = DC(p);
    wf_stream *s = dc->s;

    if (too_big(dc, len))
        return HPE_USER;
    if ((dc->in_value || s->req.n == 0) && s->req.n >= WF_MAX_HEADERS) {
        llhttp_set_error_reason(p, "WF_HEADERS_TOO_LARGE");
        return HPE_USER;
    }
    return wf_hdrs_on_field(&s->arena, &s->req, &dc->in_value, at, len) < 0 ? HPE_USER : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    wf_dconn *dc = DC(p);
    wf_stream *s = dc->s;

    if (too_big(dc, len))
        return HPE_USER;
    return wf_hdrs_on_value(&s->arena, &s->req, &dc->in_value, at, len) < 0 ? HPE_USER : 0;
}

/* Splits the request target: absolute-form ("http://host:port/path", as
 * sent to an HTTP proxy) gives the authority; origin-form keeps Host. */
static int parse_target(wf_stream *s)
{
    wf_str u = s->url;
    wf_str host;
    int has_host = wf_hdrs_get(&s->req, "host", 4, &host);

    if (u.len > 7 && strncasecmp(u.p, "http://", 7) == 0) {
        const char *a = u.p + 7, *end = u.p + u.len, *slash = memchr(a, '/', (size_t)(end - a));
        const char *q = memchr(a, '?', (size_t)(end - a));
        if (q && (!slash || q < slash))
            slash = q;
        s->authority.p = a;
        s->authority.len = (size_t)((slash ? slash : end) - a);
        if (slash) {
            s->path.p = slash;
            s->path.len = (size_t)(end - slash);
            if (*slash == '?') {
                char *pp = wf_arena_alloc(&s->arena, s->path.len + 2);
                if (!pp)
                    return -1;
                pp[0] = '/';
                memcpy(pp + 1, slash, s->path.len);
                s->path.p = pp;
                s->path.len++;
            }
        } else {
            s->path.p = "/";
            s->path.len = 1;
        }
    } else if (u.len && u.p[0] == '/') {
        s->path = u;
        if (!has_host)
            return -1; /* HTTP/1.1 requires Host; 1.0 without one cannot be routed */
        s->authority = host;
    } else {
        return -1; /* authority-form (CONNECT) or asterisk-form */
    }
    if (s->authority.len == 0)
        return -1;
    return wf__stream_lower_authority(s);
}

static int on_headers_complete(llhttp_t *p)
{
    wf_dconn *dc = DC(p);
    wf_stream *s = dc->s;
    wf_hdrs in = s->req;
    const char *m = llhttp_method_name((llhttp_method_t)p->method);
    wf_str expect;
    int cont = 0;

    s->http_minor = p->http_major == 1 ? p->http_minor : 1;
    s->head = p->method == HTTP_HEAD;
    s->want_close = !llhttp_should_keep_alive(p);
    s->req_chunked = (p->flags & F_CHUNKED) != 0;
    s->req_cl = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    cont = wf_hdrs_get(&in, "expect", 6, &expect) && expect.len == 12 &&
           strncasecmp(expect.p, "100-continue", 12) == 0;
    if (parse_target(s) < 0) {
        wf_stream_local_reply(s, 400, "bad request: no routable host (need Host or an absolute URL)\n",
                              60, "DPE");
        s->want_close = 1;
        return 0;
    }
    /* Rebuild the list: pseudo-headers first, hop-by-hop headers dropped. */
    s->req.v = NULL;
    s->req.n = s->req.cap = 0;
    if (wf_hdrs_add(&s->arena, &s->req, ":method", 7, m, strlen(m)) < 0 ||
        wf_hdrs_add(&s->arena, &s->req, ":path", 5, s->path.p, s->path.len) < 0 ||
        wf_hdrs_add(&s->arena, &s->req, ":authority", 10, s->authority.p, s->authority.len) < 0 ||
        wf_hdrs_add(&s->arena, &s->req, ":scheme", 7, "http", 4) < 0)
        return HPE_USER;
    for (uint32_t i = 0; i < in.n; i++) {
        if (wf_http_hop_by_hop(&in.v[i].name))
            continue;
        /* Only this proxy may say who the client is (sanitize, as Envoy's
         * SANITIZE_SET): a forged header never reaches the app. */
        if (dc->xfcc_mode && in.v[i].name.len == 23 &&
            strncasecmp(in.v[i].name.p, "x-forwarded-client-cert", 23) == 0)
            continue;
        if (wf_hdrs_add(&s->arena, &s->req, in.v[i].name.p, in.v[i].name.len, in.v[i].value.p,
                        in.v[i].value.len) < 0)
            return HPE_USER;
    }
    if (dc->xfcc && wf_hdrs_add(&s->arena, &s->req, "x-forwarded-client-cert", 23, dc->xfcc,
                                strlen(dc->xfcc)) < 0)
        return HPE_USER;
    if (keep_te(&in, &s->arena, &s->req) < 0)
        return HPE_USER;
    s->method = s->req.v[0].value;
    /* After an upgrade request the connection is the tunnel's, or closes. */
    if (p->upgrade)
        s->want_close = 1;
    if (p->upgrade && upgrade_check(s, &in) < 0)
        return 0; /* refused with 403; the connection closes after it */
    if (cont && !s->req_done) {
        /* Like Envoy, answer 100-continue ourselves rather than proxying it. */
        uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
        dc_write(dc, &b, 1);
    }
    wf__stream_route(s);
    return 0;
}

/* te is hop-by-hop, but "te: trailers" says the client takes trailers and
 * gRPC servers insist on it: it goes on, as in Envoy. */
static int keep_te(const wf_hdrs *in, wf_arena *a, wf_hdrs *out)
{
    wf_str te;

    if (!wf_hdrs_get(in, "te", 2, &te))
        return 0;
    for (size_t i = 0; i + 8 <= te.len; i++)
        if (strncasecmp(te.p + i, "trailers", 8) == 0 && (i == 0 || te.p[i - 1] == ' ' ||
                                                         te.p[i - 1] == ','))
            return wf_hdrs_add(a, out, "te", 2, "trailers", 8);
    return 0;
}

/* An HTTP/1.1 Upgrade: allowed when the listener's connection manager
 * lists its type (upgrade_configs; Istio allows websocket), and then
 * relayed over HTTP/1.1 with its upgrade headers; refused with 403
 * otherwise, as Envoy does.  "h2c" is not an upgrade a proxy relays: the
 * request goes on as plain HTTP/1.1.  Returns -1 when refused. */
static int upgrade_check(wf_stream *s, const wf_hdrs *in)
{
    wf_str up;
    char body[400];
    int n;

    if (!wf_hdrs_get(in, "upgrade", 7, &up) || (up.len == 3 && strncasecmp(up.p, "h2c", 3) == 0))
        return 0;
    for (size_t i = 0; s->l && i < s->l->n_upgrades; i++)
        if (strlen(s->l->upgrades[i]) == up.len &&
            strncasecmp(s->l->upgrades[i], up.p, up.len) == 0) {
            s->upgrade = 1;
            return wf_hdrs_add(&s->arena, &s->req, "upgrade", 7, up.p, up.len);
        }
    n = snprintf(body, sizeof(body),
                 "upgrade to \"%.*s\" is not allowed on listener %s (its upgrade_configs allow "
                 "%s)\n",
                 (int)(up.len > 64 ? 64 : up.len), up.p, s->l ? s->l->name : "?",
                 s->l && s->l->n_upgrades ? s->l->upgrades[0] : "none");
    s->want_close = 1;
    wf_stream_local_reply(s, 403, body, (size_t)n, NULL);
    return -1;
}

/* gRPC's deadline (grpc-timeout: digits and a unit H M S m u n), in ms;
 * -1 without a valid one. */
static int64_t grpc_timeout_ms(const wf_str *v)
{
    int64_t n = 0;
    size_t i = 0;

    if (v->len < 2 || v->len > 9)
        return -1;
    for (; i + 1 < v->len; i++) {
        if (v->p[i] < '0' || v->p[i] > '9')
            return -1;
        n = n * 10 + (v->p[i] - '0');
    }
    switch (v->p[i]) {
    case 'H':
        return n * 3600000;
    case 'M':
        return n * 60000;
    case 'S':
        return n * 1000;
    case 'm':
        return n;
    case 'u':
        return (n + 999) / 1000;
    case 'n':
        return (n + 999999) / 1000000;
    default:
        return -1;
    }
}

static void grpc_deadline(wf_stream *s, void *arg)
{
    if (s->resp_done)
        return;
    if (s->resp_started) {
        wf_stream_abort(s);
        return;
    }
    wf_stream_local_reply(s, 504, "gRPC deadline (grpc-timeout) exceeded in the proxy\n", 51, "UT");
}

/* The request head is complete (either codec): into the filter chain. */
void wf__stream_route(wf_stream *s)
{
    wf_str ct, to;
    int64_t ms;

    s->grpc = wf_hdrs_get(&s->req, "content-type", 12, &ct) && ct.len >= 16 &&
              strncasecmp(ct.p, "application/grpc", 16) == 0;
    /* Like Envoy with grpc_timeout_header_max: the caller's deadline bounds
     * the whole exchange, and ends it with DEADLINE_EXCEEDED. */
    if (s->grpc && wf_hdrs_get(&s->req, "grpc-timeout", 12, &to) &&
        (ms = grpc_timeout_ms(&to)) >= 0)
        wf_host_table.timer_start(s, (uint64_t)ms, grpc_deadline, NULL);
    wf_chain_stream_create(s);
    wf_chain_request_headers(s);
}

/* Lower-cases s->authority into an arena copy (authorities compare
 * case-insensitively).  Returns 0 or -1. */
int wf__stream_lower_authority(wf_stream *s)
{
    char *a = wf_arena_strndup(&s->arena, s->authority.p, s->authority.len);

    if (!a)
        return -1;
    for (size_t i = 0; i < s->authority.len; i++)
        if (a[i] >= 'A' && a[i] <= 'Z')
            a[i] = (char)(a[i] + 32);
    s->authority.p = a;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    wf_dconn *dc = DC(p);

    wf_stream_request_body(dc->s, at, len);
    return dc->closing ? HPE_USER : 0;
}

static int on_message_complete(llhttp_t *p)
{
    wf_dconn *dc = DC(p);
    wf_stream *s = dc->s;

    wf_stream_request_end(s);
    if (s->resp_done) {
        stream_maybe_finish(s);
        if (!dc->s && !dc->closing)
            return 0; /* keep parsing pipelined requests */
    }
    dc->paused = 1;
    return HPE_PAUSED;
}

/* ---- connection ---- */

static void dc_closed(uv_handle_t *h)
{
    wf_dconn *dc = h->data;
    wf_worker *w = dc->w;

    free(dc->held);
    free(dc->hello);
    wf_h2d_free(dc);
    if (dc->head_listed)
        for (wf_dconn **pp = &w->head_dirty; *pp; pp = &(*pp)->next_head)
            if (*pp == dc) {
                *pp = dc->next_head;
                break;
            }
    free(dc->xfcc);
    wf_tls_conn_free(dc->tls);
    if (dc->prev)
        dc->prev->next = dc->next;
    else
        w->dconns = dc->next;
    if (dc->next)
        dc->next->prev = dc->prev;
    w->n_dconns--;
    wf_stat_add(w, WF_ST_DOWNSTREAM_CX_ACTIVE, -1);
    free(dc);
    if (atomic_load(&w->drain) && w->n_dconns == 0)
        wf_worker_maybe_stop(w);
}

static void dc_shutdown_done(uv_shutdown_t *req, int status)
{
    wf_dconn *dc = req->data;

    free(req);
    uv_close((uv_handle_t *)&dc->tcp, dc_closed);
}

static void dc_close(wf_dconn *dc)
{
    uv_shutdown_t *sd;

    if (dc->closing)
        return;
    dc->closing = 1;
    if (dc->h2)
        wf_h2d_close_streams(dc);
    if (dc->s) {
        wf_stream *s = dc->s;
        dc->s = NULL;
        if (s->status == 0)
            s->status = 0;
        wf__stream_count(s);
        wf_chain_complete(s);
        wf_upstream_detach(s);
        wf__stream_free(s);
    }
    uv_read_stop((uv_stream_t *)&dc->tcp);
    /* Let queued bytes (a final reply) reach the client before closing. */
    sd = malloc(sizeof(*sd));
    if (sd && dc->wq.queued && !dc->wq.failed) {
        sd->data = dc;
        if (uv_shutdown(sd, (uv_stream_t *)&dc->tcp, dc_shutdown_done) == 0)
            return;
    }
    free(sd);
    uv_close((uv_handle_t *)&dc->tcp, dc_closed);
}

static void dc_parse_error(wf_dconn *dc, enum llhttp_errno e)
{
    wf_stream *s = dc->s;
    const char *why = llhttp_get_error_reason(&dc->parser);
    char body[300];
    int n;

    if (!s) {
        if (!(s = dc->s = wf__stream_new(dc)) || !s->l) {
            dc_close(dc);
            return;
        }
        wf_stat_add(dc->w, WF_ST_DOWNSTREAM_RQ_TOTAL, 1);
        wf_stat_add(dc->w, WF_ST_DOWNSTREAM_RQ_ACTIVE, 1);
    }
    s->want_close = 1;
    s->req_done = 1;
    if (s->resp_started || s->local_reply) {
        dc_close(dc);
        return;
    }
    if (why && strcmp(why, "WF_HEADERS_TOO_LARGE") == 0) {
        n = snprintf(body, sizeof(body), "request headers too large (limit %d KiB, %d headers)\n",
                     WF_MAX_HEADER_BYTES / 1024, WF_MAX_HEADERS);
        wf_stream_local_reply(s, 431, body, (size_t)n, "DPE");
    } else {
        n = snprintf(body, sizeof(body), "bad request: %s\n", why ? why : llhttp_errno_name(e));
        wf_stream_local_reply(s, 400, body, (size_t)n, "DPE");
    }
    if (dc->s) /* the reply finished the stream unless something failed */
        dc_close(dc);
}

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24

/* A connection's first bytes: the HTTP/2 connection preface (h2c with
 * prior knowledge, or h2 over TLS) starts an HTTP/2 session; anything else
 * is HTTP/1.1.  Returns 1 when the bytes were taken (HTTP/2, or held until
 * enough arrived to tell). */
static int dc_sniff_h2(wf_dconn *dc, const char **data, size_t *len)
{
    size_t have = dc->pre_len + *len, cmp = have < H2_PREFACE_LEN ? have : H2_PREFACE_LEN;
    char buf[H2_PREFACE_LEN];
    size_t take = cmp - dc->pre_len;

    memcpy(buf, dc->pre, dc->pre_len);
    memcpy(buf + dc->pre_len, *data, cmp > dc->pre_len ? take : 0);
    if (memcmp(buf, H2_PREFACE, cmp) != 0) {
        /* HTTP/1.1: replay what was held, then go on with the rest. */
        dc->proto_known = 1;
        if (dc->pre_len) {
            char held[H2_PREFACE_LEN];
            size_t n = dc->pre_len;
            memcpy(held, dc->pre, n);
            dc->pre_len = 0;
            dc_feed(dc, held, n);
        }
        return 0;
    }
    if (cmp < H2_PREFACE_LEN) {
        memcpy(dc->pre + dc->pre_len, *data, *len);
        dc->pre_len += *len;
        return 1;
    }
    dc->proto_known = 1;
    if (wf_h2d_start(dc, H2_PREFACE, H2_PREFACE_LEN) < 0) {
        dc_close(dc);
        return 1;
    }
    dc->pre_len = 0;
    if (*len > take)
        wf_h2d_feed(dc, *data + take, *len - take);
    return 1;
}

static void dc_feed(wf_dconn *dc, const char *data, size_t len)
{
    enum llhttp_errno e;

    if (dc->l4 || (dc->s && wf_tunnel_open(dc->s))) {
        wf_tunnel_down_bytes(dc, data, len);
        return;
    }
    if (dc->h2) {
        wf_h2d_feed(dc, data, len);
        return;
    }
    if (!dc->proto_known && dc_sniff_h2(dc, &data, &len))
        return;
    if (dc->paused) {
        /* Pipelined behind a pending response: held, and reading stops. */
        char *h = realloc(dc->held, dc->held_len + len);
        if (!h) {
            dc_close(dc);
            return;
        }
        memcpy(h + dc->held_len, data, len);
        dc->held = h;
        dc->held_len += len;
        if (dc->reading) {
            dc->reading = 0;
            uv_read_stop((uv_stream_t *)&dc->tcp);
        }
        return;
    }
    e = llhttp_execute(&dc->parser, data, len);

    if (e == HPE_OK || dc->closing)
        return;
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        const char *pos = llhttp_get_error_pos(&dc->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        WF_DEBUG("conn %p: parser paused after %zu of %zu bytes", (void *)dc, used, len);
        if (e == HPE_PAUSED_UPGRADE && dc->s)
            dc->s->want_close = 1; /* the rest is the tunnel's, or nobody's */
        if (used < len) {
            char *h = malloc(len - used);
            if (!h) {
                dc_close(dc);
                return;
            }
            memcpy(h, data + used, len - used);
            free(dc->held);
            dc->held = h;
            dc->held_len = len - used;
        }
        if (!dc->paused) {
            /* Paused by an upgrade: resume once the stream ends. */
            dc->paused = 1;
        }
        /* Reading goes on while the response is pending (stopping and
         * starting it costs two epoll_ctl calls a request); bytes that
         * arrive meanwhile are held, and only then does reading stop. */
        if (dc->reading && (used < len || e == HPE_PAUSED_UPGRADE)) {
            dc->reading = 0;
            uv_read_stop((uv_stream_t *)&dc->tcp);
        }
        return;
    }
    dc_parse_error(dc, e);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    wf_dconn *dc = h->data;

    buf->base = dc->w->rbuf;
    buf->len = WF_READ_BUF;
}

/* ---- TLS (mTLS from peer proxies on the inbound listener) ---- */

/* One line a second per worker at most: a peer retrying in a loop must not
 * flood the log (ssl.connection_error counts them all). */
static void tls_refused(wf_dconn *dc, const char *why)
{
    static __thread wf_ratelimit rl;
    uint64_t skipped;

    if (wf_ratelimit_ok(&rl, uv_now(&dc->w->loop), 1000, &skipped))
        WF_WARN("inbound TLS connection from %s refused: %s%s", dc->peer, why,
                skipped ? " (more refusals in the last second; see ssl.connection_error)" : "");
}

static int dc_tls_send(void *ud, const char *data, size_t len)
{
    wf_dconn *dc = ud;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    return wf_write((uv_stream_t *)&dc->tcp, &dc->wq, &b, 1);
}

/* The handshake is done and the peer verified (once per connection). */
static void dc_tls_up(wf_dconn *dc)
{
    const char *peer = wf_tls_peer_id(dc->tls);
    wf_tls_cert_info own;
    char v[1100];

    dc->xfcc_done = 1;
    wf_stat_add(dc->w, WF_ST_SSL_HANDSHAKE, 1);
    if (wf_tls_resumed(dc->tls))
        wf_stat_add(dc->w, WF_ST_SSL_SESSION_REUSED, 1);
    if (peer && dc->tls_ctx && wf_tls_ctx_info(dc->tls_ctx, &own) == 0) {
        snprintf(v, sizeof(v), "By=%s;URI=%s", own.identity, peer);
        dc->xfcc = strdup(v);
    }
}

static int dc_tls_deliver(void *ud, const char *data, size_t len)
{
    wf_dconn *dc = ud;

    if (!dc->xfcc_done)
        dc_tls_up(dc);
    dc_feed(dc, data, len);
    return dc->paused || dc->closing;
}

/* The client's input ended: EOF (UV_EOF, or TLS close_notify) or an error. */
static void dc_read_end(wf_dconn *dc, ssize_t why)
{
    dc->eof = 1;
    if (why == UV_EOF && dc->s && wf_tunnel_open(dc->s)) {
        /* Half-close: the other direction goes on. */
        if (dc->reading) {
            dc->reading = 0;
            uv_read_stop((uv_stream_t *)&dc->tcp);
        }
        wf_tunnel_down_eof(dc->s);
        return;
    }
    if (why == UV_EOF && !dc->h2 && dc->s && dc->s->req_done && !dc->s->resp_done &&
        !dc->l4) {
        /* The client finished its request and its writing: the answer
         * still goes out, then the connection closes. */
        dc->s->want_close = 1;
        if (dc->reading) {
            dc->reading = 0;
            uv_read_stop((uv_stream_t *)&dc->tcp);
        }
        return;
    }
    if (why == UV_EOF && dc->l4 && dc->s && !dc->s->resp_done) {
        wf_tunnel_down_eof(dc->s); /* still connecting: the end follows the bytes */
        return;
    }
    /* A request cut short is a client reset (DC). */
    if (dc->s && !dc->s->resp_done)
        dc->s->flags = "DC";
    dc_close(dc);
}

static void dc_tls_input(wf_dconn *dc, const char *data, size_t len)
{
    int r = wf_tls_feed(dc->tls, data, len, dc_tls_deliver, dc);

    if (r == 0 && dc->l4 && !dc->s && !dc->closing && wf_tls_established(dc->tls)) {
        /* A TCP app may speak first: connect once the peer is verified. */
        if (!dc->xfcc_done)
            dc_tls_up(dc);
        wf_tunnel_ready(dc);
    }
    if (r == 0 || dc->closing)
        return;
    if (r == WF_TLS_EOF) {
        dc_read_end(dc, UV_EOF);
        return;
    }
    wf_stat_add(dc->w, WF_ST_SSL_CONNECTION_ERROR, 1);
    tls_refused(dc, wf_tls_error(dc->tls));
    dc_close(dc);
}

/* Starts TLS on dc with the workload certificate; -1 when there is none. */
static int dc_tls_begin(wf_dconn *dc)
{
    wf_tls_conn_opts o = {.send = dc_tls_send, .ud = dc};
    char *e = NULL;

    dc->xfcc_mode = 1;
    if (!(dc->tls_ctx = wf_ident_server())) {
        tls_refused(dc, "no workload certificate yet (is the CA reachable? see /certs on the "
                        "admin port)");
        wf_stat_add(dc->w, WF_ST_SSL_CONNECTION_ERROR, 1);
        return -1;
    }
    dc->tls = wf_tls_conn_new(dc->tls_ctx, &o, &e);
    wf_tls_ctx_unref(dc->tls_ctx); /* the connection holds its own reference */
    if (!dc->tls) {
        WF_WARN("inbound TLS connection from %s: %s", dc->peer, e ? e : "cannot start TLS");
        free(e);
        return -1;
    }
    return 0;
}

/* PERMISSIVE: a TLS ClientHello or plaintext HTTP, told by the first bytes. */
static void dc_sniff(wf_dconn *dc, const char *data, size_t len)
{
    char *joined = NULL;
    int t;

    if (dc->sniff_len) {
        if (!(joined = malloc(dc->sniff_len + len))) {
            dc_close(dc);
            return;
        }
        memcpy(joined, dc->sniff, dc->sniff_len);
        memcpy(joined + dc->sniff_len, data, len);
        data = joined;
        len += dc->sniff_len;
        dc->sniff_len = 0;
    }
    t = wf_tls_sniff(data, len);
    if (t < 0) {
        memcpy(dc->sniff, data, len); /* len < WF_SNIFF_BYTES */
        dc->sniff_len = len;
    } else {
        dc->sniffing = 0;
        dc->xfcc_mode = 1;
        if (t == 0)
            dc_feed(dc, data, len);
        else if (dc_tls_begin(dc) < 0)
            dc_close(dc);
        else
            dc_tls_input(dc, data, len);
    }
    free(joined);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    wf_dconn *dc = st->data;

    if (nread > 0) {
        dc->last_ms = uv_now(&dc->w->loop);
        if (dc->tls)
            dc_tls_input(dc, buf->base, (size_t)nread);
        else if (dc->sniffing)
            dc_sniff(dc, buf->base, (size_t)nread);
        else
            dc_feed(dc, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    dc_read_end(dc, nread);
}

static void start_reading(wf_dconn *dc)
{
    if (dc->eof)
        return;
    dc->reading = 1;
    uv_read_start((uv_stream_t *)&dc->tcp, alloc_cb, read_cb);
}

static void dc_drained(void *owner)
{
    wf_dconn *dc = owner;

    if (dc->h2 && !dc->closing)
        wf_h2d_feed(dc, NULL, 0); /* sends what waited for the socket */
    else if (dc->s && !dc->closing)
        wf_upstream_read_control(dc->s, 1);
}

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

void wf_downstream_accept(uv_stream_t *server, int status)
{
    wf_worker *w = server->loop->data;
    wf_dconn *dc;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);

    if (status < 0 || atomic_load(&w->drain))
        return;
    if (!settings.on_url)
        settings_init();
    dc = calloc(1, sizeof(*dc));
    if (!dc)
        return;
    dc->w = w;
    dc->lindex = (size_t)(uintptr_t)server->data;
    uv_tcp_init(&w->loop, &dc->tcp);
    dc->tcp.data = dc;
    dc->wq.owner = dc;
    dc->wq.drained = dc_drained;
    if (uv_accept(server, (uv_stream_t *)&dc->tcp) < 0) {
        uv_close((uv_handle_t *)&dc->tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(&dc->tcp, 1);
    if (uv_tcp_getpeername(&dc->tcp, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        char ip[32];
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(dc->peer, sizeof(dc->peer), "%s:%u", ip, ntohs(in->sin_port));
    }
    llhttp_init(&dc->parser, HTTP_REQUEST, &settings);
    dc->parser.data = dc;
    {
        const wf_listener *l = dc->lindex < w->snap->n_ls ? &w->snap->ls[dc->lindex] : NULL;
        int mode = l ? l->tls : WF_LTLS_PLAIN;
        if (l && l->inbound)
            dc->xfcc_mode = 1;
        dc->l4 = l && l->n_l4;
        if (mode == WF_LTLS_PERMISSIVE) {
            dc->sniffing = 1;
        } else if (mode == WF_LTLS_STRICT && dc_tls_begin(dc) < 0) {
            uv_close((uv_handle_t *)&dc->tcp, (uv_close_cb)free);
            return;
        }
    }
    dc->next = w->dconns;
    if (w->dconns)
        w->dconns->prev = dc;
    w->dconns = dc;
    w->n_dconns++;
    wf_stat_add(w, WF_ST_DOWNSTREAM_CX_TOTAL, 1);
    wf_stat_add(w, WF_ST_DOWNSTREAM_CX_ACTIVE, 1);
    dc->last_ms = uv_now(&w->loop);
    start_reading(dc);
    if (dc->l4 && !dc->tls && !dc->sniffing)
        wf_tunnel_ready(dc); /* plaintext TCP: connect now, the app may speak first */
}

void wf_downstream_sweep(wf_worker *w, uint64_t now)
{
    for (wf_dconn *dc = w->dconns, *next; dc; dc = next) {
        const wf_listener *l =
            dc->lindex < w->snap->n_ls ? &w->snap->ls[dc->lindex] : NULL;
        next = dc->next;
        /* Connections between requests: HTTP/1.1 without a stream, HTTP/2
         * without streams (GOAWAY, then closed); tunnels have their own. */
        if (dc->s || dc->l4 || dc->closing || !l || !l->idle_timeout_ms ||
            (dc->h2 && !wf_h2d_idle(dc)) || now - dc->last_ms < l->idle_timeout_ms)
            continue;
        if (dc->h2)
            wf_h2d_goaway(dc);
        else
            dc_close(dc);
    }
}

/* Drain: close connections that have no stream (all of them when
 * only_idle is 0); the rest close when their stream ends. */
void wf_downstream_close_all(wf_worker *w, int only_idle)
{
    for (wf_dconn *dc = w->dconns, *next; dc; dc = next) {
        next = dc->next;
        if (dc->h2 && only_idle)
            wf_h2d_goaway(dc); /* closes once its streams are done */
        else if (!only_idle || !dc->s)
            dc_close(dc);
    }
}
