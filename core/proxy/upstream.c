/*
 * upstream.c: connections from the proxy to endpoints, pooled per endpoint
 * on each worker.  A stream borrows a connection for one exchange: the
 * request head and body go out as they arrive from the client, the
 * response (parsed by llhttp) is handed back to downstream.c.  A
 * connection that ends its exchange cleanly and may be kept alive goes
 * back to the pool.
 *
 * Endpoints that speak HTTP/2 (ep->h2) are served by upstream_h2.c: the
 * entry points below branch to it once the pool and the attempt's
 * bookkeeping, common to both, are settled.
 */
#include "proxy/proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"

#define POOL_IDLE_MAX 1024 /* per endpoint and worker: below the streams in flight, the surplus churns connections */

static llhttp_settings_t settings;

static void uc_close(wf_uconn *uc);
static void uc_send_head(wf_uconn *uc);

wf_pool *wf_pool_get(wf_worker *w, const struct sockaddr_in *addr, const char *hostport)
{
    size_t len = strlen(hostport);
    wf_pool *p = wf_map_get(&w->pools, hostport, len);

    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->addr = *addr;
    p->gen = w->gen;
    snprintf(p->hostport, sizeof(p->hostport), "%s", hostport);
    if (wf_map_put(&w->pools, p->hostport, strlen(p->hostport), p) < 0) {
        free(p);
        return NULL;
    }
    return p;
}

static void idle_remove(wf_uconn *uc)
{
    wf_pool *p = uc->pool;

    for (wf_uconn **pp = &p->idle; *pp; pp = &(*pp)->next_idle)
        if (*pp == uc) {
            *pp = uc->next_idle;
            p->n_idle--;
            uc->next_idle = NULL;
            return;
        }
}

static void uc_closed(uv_handle_t *h)
{
    wf_uconn *uc = h->data;

    wf_stat_add(uc->w, WF_ST_UPSTREAM_CX_ACTIVE, -1);
    wf_tls_conn_free(uc->tls);
    free(uc);
}

static void timer_closed(uv_handle_t *h)
{
    wf_uconn *uc = h->data;

    uv_close((uv_handle_t *)&uc->tcp, uc_closed);
}

static void uc_close(wf_uconn *uc)
{
    if (uc->closing)
        return;
    uc->closing = 1;
    if (!uc->s)
        idle_remove(uc);
    uv_timer_stop(&uc->timer);
    uv_close((uv_handle_t *)&uc->timer, timer_closed);
}

/* ---- writing ---- */

static void uc_write(wf_uconn *uc, const uv_buf_t *b, unsigned n)
{
    if (uc->closing)
        return;
    if ((uc->tls ? wf_tls_write(uc->tls, b, n) : wf_write((uv_stream_t *)&uc->tcp, &uc->wq, b, n)) <
        0)
        uc->wq.failed = 1;
}

static void uc_drained(void *owner)
{
    wf_uconn *uc = owner;

    if (uc->s)
        wf_stream_upstream_writable(uc->s);
}

static void write_body(wf_uconn *uc, const char *data, size_t len, int end)
{
    wf_stream *s = uc->s;

    if (s->req_chunked) {
        char hdr[24];
        uv_buf_t b[4];
        unsigned n = 0;
        if (len) {
            int k = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
            b[n++] = uv_buf_init(hdr, (unsigned)k);
            b[n++] = uv_buf_init((char *)data, (unsigned)len);
            b[n++] = uv_buf_init("\r\n", 2);
        }
        if (end)
            b[n++] = uv_buf_init("0\r\n\r\n", 5);
        if (n)
            uc_write(uc, b, n);
    } else if (len) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        uc_write(uc, &b, 1);
    }
}

void wf_upstream_body(wf_stream *s, const char *data, size_t len, int end)
{
    wf_uconn *uc = s->uc;

    if (s->h2u) {
        wf_h2u_body(s, data, len, end);
        return;
    }
    if (!uc || uc->closing)
        return;
    write_body(uc, data, len, end);
    if (uc->wq.queued > WF_WRITE_HIGH_WATER)
        wf_stream_request_flow(s, 0); /* resumed by uc_drained */
}

int wf_upstream_ready(const wf_stream *s)
{
    if (s->h2u)
        return wf_h2u_ready(s);
    return s->uc && s->uc->head_sent;
}

/* "te: trailers" is the one te an endpoint gets (gRPC needs it). */
static int is_te_trailers(const wf_hdr *x)
{
    return x->name.len == 2 && strncasecmp(x->name.p, "te", 2) == 0 && x->value.len == 8 &&
           strncasecmp(x->value.p, "trailers", 8) == 0;
}

/* Body bytes that arrived while connecting go out first. */
static void flush_pending(wf_uconn *uc)
{
    wf_stream *s = uc->s;

    for (wf_chunk *c = s->pending, *n; c; c = n) {
        n = c->next;
        write_body(uc, c->data, c->len, 0);
        free(c);
    }
    s->pending = NULL;
    s->pending_tail = &s->pending;
    s->pending_len = 0;
}

/* Serialises the request head (origin-form, Host from :authority). */
static void uc_send_head(wf_uconn *uc)
{
    wf_stream *s = uc->s;
    wf_hdrs *h = &s->req;
    wf_str method = {"GET", 3}, path = {"/", 1}, auth = {"", 0};
    size_t cap = 128, len = 0;
    char *p;

    if (s->tun) {
        /* A TCP tunnel: no head, the client's bytes so far, then raw. */
        uc->head_sent = 1;
        flush_pending(uc);
        wf_tunnel_up_ready(s);
        wf_stream_upstream_writable(s);
        return;
    }

    for (uint32_t i = 0; i < h->n; i++) {
        const wf_hdr *x = &h->v[i];
        cap += x->name.len + x->value.len + 4;
        if (x->name.p[0] != ':')
            continue;
        if (x->name.len == 7 && memcmp(x->name.p, ":method", 7) == 0)
            method = x->value;
        else if (x->name.len == 5 && memcmp(x->name.p, ":path", 5) == 0)
            path = x->value;
        else if (x->name.len == 10 && memcmp(x->name.p, ":authority", 10) == 0)
            auth = x->value;
    }
    p = wf_arena_alloc(&s->arena, cap + 64);
    if (!p) {
        wf_stream_local_reply(s, 500, "out of stream memory\n", 21, "DPE");
        return;
    }
#define PUT(str, l)                                                                                \
    do {                                                                                           \
        memcpy(p + len, str, l);                                                                   \
        len += l;                                                                                  \
    } while (0)
    PUT(method.p, method.len);
    PUT(" ", 1);
    PUT(path.p, path.len);
    PUT(" HTTP/1.1\r\nhost: ", 17);
    PUT(auth.p, auth.len);
    PUT("\r\n", 2);
    for (uint32_t i = 0; i < h->n; i++) {
        const wf_hdr *x = &h->v[i];
        /* Framing and connection headers are the proxy's own, even if a
         * filter added one. */
        if (x->name.p[0] == ':' || (wf_http_hop_by_hop(&x->name) && !is_te_trailers(x)))
            continue;
        PUT(x->name.p, x->name.len);
        PUT(": ", 2);
        PUT(x->value.p, x->value.len);
        PUT("\r\n", 2);
    }
    if (s->upgrade) {
        /* An allowed upgrade keeps its headers (downstream.c checked it). */
        wf_str up;
        if (wf_hdrs_get(h, "upgrade", 7, &up)) {
            PUT("upgrade: ", 9);
            PUT(up.p, up.len);
            PUT("\r\nconnection: upgrade\r\n", 23);
        }
    }
    if (s->req_chunked)
        PUT("transfer-encoding: chunked\r\n", 28);
    else if (s->req_cl >= 0)
        len += (size_t)snprintf(p + len, 40, "content-length: %lld\r\n", (long long)s->req_cl);
    PUT("\r\n", 2);
#undef PUT
    {
        uv_buf_t b = uv_buf_init(p, (unsigned)len);
        uc_write(uc, &b, 1);
    }
    uc->head_sent = 1;
    s->up_start_ms = uv_now(&uc->w->loop);
    flush_pending(uc);
    if (s->req_done)
        write_body(uc, NULL, 0, 1);
    wf_stream_upstream_writable(s);
}

/* ---- response parsing ---- */

#define UC(p) ((wf_uconn *)(p)->data)

static int on_message_begin(llhttp_t *p)
{
    wf_uconn *uc = UC(p);

    if (!uc->s)
        return HPE_USER;
    uc->s->resp.n = 0;
    uc->in_value = 0;
    return wf_hdrs_add(&uc->s->arena, &uc->s->resp, ":status", 7, "000", 3) < 0 ? HPE_USER : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    wf_uconn *uc = UC(p);
    wf_stream *s = uc->s;

    if (s->resp.n > WF_MAX_HEADERS)
        return HPE_USER;
    if (s->resp.n == 1)
        uc->in_value = 1; /* the first field starts a header after :status */
    return wf_hdrs_on_field(&s->arena, &s->resp, &uc->in_value, at, len) < 0 ? HPE_USER : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    wf_uconn *uc = UC(p);
    wf_stream *s = uc->s;

    return wf_hdrs_on_value(&s->arena, &s->resp, &uc->in_value, at, len) < 0 ? HPE_USER : 0;
}

static int on_headers_complete(llhttp_t *p)
{
    wf_uconn *uc = UC(p);
    wf_stream *s = uc->s;
    int status = p->status_code, head;
    wf_attempt a;

    if (status >= 100 && status < 200 && status != 101) {
        /* Interim responses (100 Continue, 103) are not passed on: the
         * proxy answered Expect itself. */
        s->resp.n = 0;
        return 0;
    }
    if (status == 101 && (!s->upgrade || !p->upgrade || wf_tunnel_upgrade(s) < 0)) {
        llhttp_set_error_reason(p, "101 Switching Protocols without an upgrade asked for");
        return HPE_USER;
    }
    uc->upgraded = status == 101;
    wf_status3((char *)s->resp.v[0].value.p, status);
    /* Drop the upstream's hop-by-hop headers; keep content-length so that
     * the client gets the same framing when no filter changes the body. */
    wf_hdrs_remove(&s->resp, "connection", 10);
    wf_hdrs_remove(&s->resp, "keep-alive", 10);
    wf_hdrs_remove(&s->resp, "transfer-encoding", 17);
    wf_hdrs_remove(&s->resp, "proxy-connection", 16);
    if (!uc->upgraded)
        wf_hdrs_remove(&s->resp, "upgrade", 7);
    if (p->flags & F_CHUNKED)
        wf_hdrs_remove(&s->resp, "content-length", 14);
    s->up_time_us = (uv_now(&uc->w->loop) - s->up_start_ms) * 1000;
    a = (wf_attempt){.size = sizeof(a), .number = s->attempts, .result = WF_ATTEMPT_RESPONSE,
                     .status = status};
    wf_chain_attempt_done(s, &a);
    head = s->head; /* the response head may end s (the client gone) */
    wf_stream_response_head(s);
    return uc->upgraded ? 2 : head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    wf_uconn *uc = UC(p);

    if (uc->s)
        wf_stream_response_body(uc->s, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    wf_uconn *uc = UC(p);
    wf_stream *s = uc->s;

    if (!s)
        return HPE_USER;
    if (s->resp.n == 0 || uc->upgraded)
        return 0; /* an interim response ended, or the tunnel begins */
    uc->keepalive = llhttp_should_keep_alive(p) && s->req_done;
    uc->done = 1;
    /* The end is delivered by read_cb once llhttp_execute has returned:
     * finishing the stream may hand this very connection to the client's
     * next pipelined request, which re-initialises the parser. */
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    wf_uconn *uc = h->data;

    buf->base = uc->w->rbuf;
    buf->len = WF_READ_BUF;
}

static void fail(wf_uconn *uc, wf_attempt_result why, const char *detail)
{
    wf_stream *s = uc->s;

    uc_close(uc);
    uc->s = NULL;
    if (s) {
        s->uc = NULL;
        if (s->pool) {
            s->pool->active--;
            s->pool = NULL;
        }
        wf_stream_upstream_failed(s, why, detail);
    }
}

/* The connection ended (EOF or error) while a stream may be attached. */
static void uc_read_end(wf_uconn *uc, ssize_t nread)
{
    wf_stream *s = uc->s;

    if (!s) {
        uc_close(uc);
        return;
    }
    uc->eof = 1;
    if (s->tun && wf_tunnel_open(s)) {
        if (nread == UV_EOF) {
            if (uc->reading) {
                uc->reading = 0;
                uv_read_stop((uv_stream_t *)&uc->tcp);
            }
            wf_tunnel_up_eof(s); /* half-close: the client's direction goes on */
        } else {
            s->flags = "UR";
            wf__dc_close(s->dc);
        }
        return;
    }
    if (uc->got_bytes && s->resp_started) {
        /* A close-delimited body ends at EOF; anything else is cut. */
        llhttp_finish(&uc->parser);
        if (uc->done) {
            uc->keepalive = 0;
            wf_stream_response_end(s);
            return;
        }
        uc_close(uc);
        s->uc = NULL;
        s->flags = "UPE";
        wf_stream_local_reply(s, 502, NULL, 0, "UPE"); /* closes the client */
        return;
    }
    if (uc->reused && !uc->got_bytes && !s->pending && s->req_done && s->req_bytes == 0) {
        /* A pooled connection the endpoint had already closed: try once
         * more on a fresh one, as nothing of the exchange happened. */
        wf_endpoint *ep = s->ep;
        uc_close(uc);
        s->uc = NULL;
        s->pool->active--;
        s->pool = NULL;
        s->attempts--;
        wf_upstream_start(s, ep);
        return;
    }
    fail(uc, WF_ATTEMPT_RESET, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
}

/* Response bytes (plaintext) of the attached stream. */
static void uc_on_bytes(wf_uconn *uc, const char *data, size_t len)
{
    wf_stream *s = uc->s;
    enum llhttp_errno e;

    uc->got_bytes = 1;
    if (s->tun && (uc->upgraded || !s->upgrade)) {
        wf_tunnel_up_bytes(s, data, len); /* raw: TCP, or after the 101 */
        return;
    }
    e = llhttp_execute(&uc->parser, data, len);
    if (uc->s != s)
        return; /* the stream went away while parsing (client closed) */
    if (e == HPE_PAUSED_UPGRADE && uc->upgraded) {
        /* What follows the 101's head is the tunnel's. */
        const char *pos = llhttp_get_error_pos(&uc->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (used < len && s->tun)
            wf_tunnel_up_bytes(s, data + used, len - used);
        return;
    }
    if (uc->done) {
        wf_stream_response_end(s);
        return;
    }
    if (e == HPE_OK)
        return;
    if (uc->s && !uc->s->resp_started) {
        char why[160];
        snprintf(why, sizeof(why), "bad response: %s", llhttp_get_error_reason(&uc->parser));
        fail(uc, WF_ATTEMPT_RESET, why);
    } else {
        uc_close(uc);
        if (s->uc == uc) {
            s->uc = NULL;
            wf_stream_local_reply(s, 502, NULL, 0, "UPE");
        }
    }
}

static int uc_tls_deliver(void *ud, const char *data, size_t len)
{
    wf_uconn *uc = ud;

    if (!uc->s) {
        uc_close(uc); /* bytes on an idle connection */
        return 1;
    }
    uc_on_bytes(uc, data, len);
    return uc->closing || !uc->s;
}

static void uc_tls_input(wf_uconn *uc, const char *data, size_t len)
{
    int was = wf_tls_established(uc->tls);
    int r = wf_tls_feed(uc->tls, data, len, uc_tls_deliver, uc);

    if (uc->closing)
        return;
    if (r == WF_TLS_EOF) {
        uc_read_end(uc, UV_EOF);
        return;
    }
    if (r < 0) {
        char why[600];
        wf_stat_add(uc->w, WF_ST_UPSTREAM_SSL_CONNECTION_ERROR, 1);
        snprintf(why, sizeof(why), "TLS: %s", wf_tls_error(uc->tls));
        if (!was) {
            static __thread wf_ratelimit rl;
            uint64_t skipped;
            if (wf_ratelimit_ok(&rl, uv_now(&uc->w->loop), 1000, &skipped))
                WF_WARN("upstream TLS to %s refused: %s%s", uc->pool->hostport,
                        wf_tls_error(uc->tls),
                        skipped ? " (more in the last second; see upstream_ssl.connection_error)"
                                : "");
        }
        fail(uc, was ? WF_ATTEMPT_RESET : WF_ATTEMPT_CONNECT_FAILURE, why);
        return;
    }
    if (!was && wf_tls_established(uc->tls)) {
        uv_timer_stop(&uc->timer);
        wf_stat_add(uc->w, WF_ST_UPSTREAM_SSL_HANDSHAKE, 1);
        if (wf_tls_resumed(uc->tls))
            wf_stat_add(uc->w, WF_ST_UPSTREAM_SSL_SESSION_REUSED, 1);
        if (uc->s && !uc->head_sent)
            uc_send_head(uc);
    }
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    wf_uconn *uc = st->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        uc_read_end(uc, nread);
        return;
    }
    if (uc->tls)
        uc_tls_input(uc, buf->base, (size_t)nread);
    else if (!uc->s)
        uc_close(uc); /* idle pooled connection: the endpoint closed it (or sent junk) */
    else
        uc_on_bytes(uc, buf->base, (size_t)nread);
}

void wf_upstream_read_control(wf_stream *s, int on)
{
    wf_uconn *uc = s->uc;

    if (s->h2u) {
        wf_h2u_read_control(s, on);
        return;
    }
    if (!uc || uc->closing || !uc->connected || uc->reading == on || (on && uc->eof))
        return;
    uc->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&uc->tcp, alloc_cb, read_cb);
    else
        uv_read_stop((uv_stream_t *)&uc->tcp);
}

/* ---- connecting ---- */

static void attach(wf_uconn *uc, wf_stream *s)
{
    uc->s = s;
    s->uc = uc;
    uc->n_requests++;
    uc->upgraded = 0;
    uc->got_bytes = 0;
    uc->head_sent = 0;
    uc->done = 0;
    uc->keepalive = 0;
    llhttp_init(&uc->parser, HTTP_RESPONSE, &settings);
    uc->parser.data = uc;
}

static void connect_timeout(uv_timer_t *t)
{
    wf_uconn *uc = t->data;

    wf_stat_add(uc->w, WF_ST_UPSTREAM_CX_CONNECT_FAIL, 1);
    if (uc->s && uc->s->cluster)
        wf_stat_add(uc->w, uc->s->cluster->st_cx_connect_fail, 1);
    fail(uc, WF_ATTEMPT_CONNECT_FAILURE,
         uc->connected ? "TLS handshake timeout" : "connect timeout");
}

static int uc_tls_send(void *ud, const char *data, size_t len)
{
    wf_uconn *uc = ud;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    return wf_write((uv_stream_t *)&uc->tcp, &uc->wq, &b, 1);
}

/* Starts the client handshake toward an endpoint with transport t. */
static int uc_tls_begin(wf_uconn *uc, const wf_up_tls *t, char *why, size_t whylen)
{
    wf_tls_conn_opts o = {.send = uc_tls_send,
                          .ud = uc,
                          .sni = t->sni,
                          .peer_ids = (const char *const *)t->sans,
                          .n_peer_ids = t->n_sans,
                          .session = &uc->pool->session};
    /* Between proxies: HTTP/2, except a TCP tunnel (no ALPN) and an
     * upgrade (HTTP/1.1). */
    int alpn = !uc->s ? WF_ALPN_H2 : uc->s->upgrade ? WF_ALPN_H1 : uc->s->tun ? WF_ALPN_NONE
                                                                              : WF_ALPN_H2;
    wf_tls_ctx *ctx = t->istio ? wf_ident_client_alpn(alpn) : t->ctx;
    char *e = NULL;

    if (!ctx) {
        snprintf(why, whylen, "TLS: no workload certificate yet (is the CA reachable? see /certs)");
        return -1;
    }
    uc->tls = wf_tls_conn_new(ctx, &o, &e);
    if (t->istio)
        wf_tls_ctx_unref(ctx); /* the connection holds its own reference */
    if (!uc->tls || wf_tls_start(uc->tls) < 0) {
        snprintf(why, whylen, "TLS: %s", uc->tls ? wf_tls_error(uc->tls) : e ? e : "cannot start");
        free(e);
        return -1;
    }
    return 0;
}

static void connected(uv_connect_t *req, int status)
{
    wf_uconn *uc = req->data;

    if (uc->closing)
        return;
    uv_timer_stop(&uc->timer);
    if (status < 0) {
        wf_stat_add(uc->w, WF_ST_UPSTREAM_CX_CONNECT_FAIL, 1);
        if (uc->s && uc->s->cluster)
            wf_stat_add(uc->w, uc->s->cluster->st_cx_connect_fail, 1);
        fail(uc, WF_ATTEMPT_CONNECT_FAILURE, uv_strerror(status));
        return;
    }
    uc->connected = 1;
    uv_tcp_nodelay(&uc->tcp, 1);
    if (!uc->s) {
        uc_close(uc);
        return;
    }
    uc->reading = 1;
    uv_read_start((uv_stream_t *)&uc->tcp, alloc_cb, read_cb);
    if (uc->s->ep && uc->s->ep->tls) {
        char why[300];
        if (uc_tls_begin(uc, uc->s->ep->tls, why, sizeof(why)) < 0) {
            wf_stat_add(uc->w, WF_ST_UPSTREAM_SSL_CONNECTION_ERROR, 1);
            fail(uc, WF_ATTEMPT_CONNECT_FAILURE, why);
            return;
        }
        /* The request goes out once the handshake is done; until then
         * the connect timer bounds the handshake too. */
        uv_timer_start(&uc->timer, connect_timeout, uc->s->cluster->connect_timeout_ms, 0);
        return;
    }
    uc_send_head(uc);
}

void wf_upstream_start(wf_stream *s, wf_endpoint *ep)
{
    wf_worker *w = s->w;
    int current = w->ep_pool && s->snap == w->snap;
    wf_pool *pool = current ? w->ep_pool[ep->gindex] : NULL;
    wf_uconn *uc;
    int r;

    if (!settings.on_headers_complete)
        settings_init();
    if (!pool && (pool = wf_pool_get(w, &ep->addr, ep->poolkey)) && current)
        w->ep_pool[ep->gindex] = pool;
    if (!pool) {
        wf_stream_local_reply(s, 503, "out of memory\n", 14, "UF");
        return;
    }
    s->ep = ep;
    s->pool = pool;
    s->attempts++;
    pool->active++;
    {
        size_t n = ep->hostport_len < sizeof(s->upstream_host) ? ep->hostport_len
                                                                : sizeof(s->upstream_host) - 1;
        memcpy(s->upstream_host, ep->poolkey, n); /* poolkey starts with "IP:PORT" */
        s->upstream_host[n] = 0;
    }
    wf_stat_add(w, WF_ST_UPSTREAM_RQ_TOTAL, 1);
    wf_stat_add(w, s->cluster->st_rq_total, 1);
    if (ep->h2 && !s->tun && !s->upgrade) {
        wf_h2u_start(s, ep, pool); /* multiplexed on the pool's HTTP/2 connection */
        return;
    }

    while (!s->tun && !s->upgrade && (uc = pool->idle)) {
        pool->idle = uc->next_idle;
        pool->n_idle--;
        uc->next_idle = NULL;
        if (uc->closing || uc->wq.failed)
            continue;
        attach(uc, s);
        uc->reused = 1;
        uc_send_head(uc);
        return;
    }
    uc = calloc(1, sizeof(*uc));
    if (!uc) {
        pool->active--;
        s->pool = NULL;
        wf_stream_local_reply(s, 503, "out of memory\n", 14, "UF");
        return;
    }
    uc->w = w;
    uc->pool = pool;
    uc->wq.owner = uc;
    uc->wq.drained = uc_drained;
    uv_tcp_init(&w->loop, &uc->tcp);
    uv_timer_init(&w->loop, &uc->timer);
    uc->tcp.data = uc;
    uc->timer.data = uc;
    uc->connect.data = uc;
    wf_stat_add(w, WF_ST_UPSTREAM_CX_TOTAL, 1);
    wf_stat_add(w, WF_ST_UPSTREAM_CX_ACTIVE, 1);
    wf_stat_add(w, s->cluster->st_cx_total, 1);
    attach(uc, s);
    r = uv_tcp_connect(&uc->connect, &uc->tcp, (const struct sockaddr *)&pool->addr, connected);
    if (r < 0) {
        fail(uc, WF_ATTEMPT_CONNECT_FAILURE, uv_strerror(r));
        return;
    }
    uv_timer_start(&uc->timer, connect_timeout, s->cluster->connect_timeout_ms, 0);
}

void wf_upstream_detach(wf_stream *s)
{
    wf_uconn *uc = s->uc;
    wf_pool *p = s->pool;

    if (p) {
        p->active--;
        s->pool = NULL;
    }
    if (s->h2u)
        wf_h2u_detach(s); /* cancels the HTTP/2 stream unless it finished */
    if (!uc)
        return;
    s->uc = NULL;
    uc->s = NULL;
    if (uc->closing)
        return;
    if (uc->done && uc->keepalive && !uc->wq.failed && uc->wq.queued == 0 &&
        !atomic_load(&uc->w->drain) && uc->pool->n_idle < POOL_IDLE_MAX &&
        !(s->cluster && s->cluster->max_rq_per_cx && uc->n_requests >= s->cluster->max_rq_per_cx)) {
        /* Back to the pool; keep reading to notice the endpoint closing. */
        uint64_t idle = s->cluster ? s->cluster->idle_timeout_ms : 3600 * 1000;
        uc->idle_deadline = idle ? uv_now(&uc->w->loop) + idle : UINT64_MAX; /* 0s: never */
        uc->next_idle = uc->pool->idle;
        uc->pool->idle = uc;
        uc->pool->n_idle++;
        if (!uc->reading) {
            uc->reading = 1;
            uv_read_start((uv_stream_t *)&uc->tcp, alloc_cb, read_cb);
        }
        return;
    }
    uc_close(uc);
}

static void uc_shut_done(void *data, int status)
{
    wf_uconn *uc = data;

    if (uc->closing || !uc->s)
        return;
    if (status < 0)
        wf__dc_close(uc->s->dc); /* the endpoint is gone: end the tunnel */
    else
        wf_tunnel_shut_done(uc->s, 1);
}

void wf_upstream_shutdown(wf_stream *s)
{
    wf_uconn *uc = s->uc;

    if (!uc || uc->closing || uc->shut)
        return;
    uc->shut = 1;
    if (uc->tls)
        wf_tls_close_notify(uc->tls); /* TLS's end of data, ahead of TCP's */
    if (wf_shutdown((uv_stream_t *)&uc->tcp, uc_shut_done, uc) < 0)
        wf__dc_close(s->dc);
}

void wf_pools_sweep(wf_worker *w, uint64_t now)
{
    for (size_t i = 0; i < w->pools.cap; i++) {
        wf_pool *p = w->pools.e && w->pools.e[i].key ? w->pools.e[i].value : NULL;
        for (wf_uconn *uc = p ? p->idle : NULL, *next; uc; uc = next) {
            next = uc->next_idle;
            if (now >= uc->idle_deadline)
                uc_close(uc); /* removes itself from the list */
        }
    }
}

void wf_pools_close(wf_worker *w)
{
    wf_pools_retire(w, w->gen + 1); /* no pool has that generation */
}

void wf_pools_retire(wf_worker *w, uint32_t gen)
{
    for (size_t i = 0; i < w->pools.cap; i++) {
        wf_pool *p = w->pools.e && w->pools.e[i].key ? w->pools.e[i].value : NULL;
        if (!p || p->gen == gen)
            continue;
        while (p->idle)
            uc_close(p->idle); /* removes itself from the list */
        wf_h2u_pool_idle_close(p);
    }
}
