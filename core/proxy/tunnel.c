/*
 * tunnel.c: opaque byte streams.  A connection on a TCP listener
 * (tcp_proxy) and an HTTP/1.1 request upgraded by a 101 answer (WebSocket)
 * both become a stream whose bytes are relayed raw, both ways:
 *
 *   - what the client sends goes to the endpoint and back the other way,
 *     with the backpressure of HTTP bodies (a side whose peer's write queue
 *     is above the high-water mark stops being read);
 *   - each side's end (EOF, or TLS close_notify) shuts the other side's
 *     writing (half-close), and the stream ends once both directions are
 *     shut and flushed;
 *   - a reset or error on either side closes both;
 *   - a tunnel quiet for its idle timeout is closed.
 *
 * Between proxies the bytes go over mTLS like any request (no ALPN for TCP,
 * http/1.1 for an upgrade); the peer's inbound listener relays them to its
 * app the same way.  The stream keeps its connections: downstream.c and
 * upstream.c read and write them and call in here when a tunnel is open.
 */
#include "proxy/proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"

struct wf_tun {
    wf_stream *s;
    const wf_l4_route *route; /* TCP listeners; NULL for an upgrade */
    int open;                 /* relaying: connected, or the 101 went out */
    int down_eof, up_eof;     /* each side's read end seen */
    int down_shut, up_shut;   /* our writing to each side: 1 shut asked, 2 done */
    uint64_t idle_ms, last_ms;
    uv_timer_t idle;          /* closed with the stream; frees this struct */
    char *early;              /* upgrade: the endpoint's bytes right after its 101 */
    size_t early_len;
};

static void tun_closed(uv_handle_t *h)
{
    struct wf_tun *t = h->data;

    free(t->early);
    free(t);
}

static struct wf_tun *tun_new(wf_stream *s)
{
    struct wf_tun *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    uv_timer_init(&s->w->loop, &t->idle);
    t->idle.data = t;
    t->last_ms = uv_now(&s->w->loop);
    t->s = s;
    s->tun = t;
    return t;
}

void wf__tunnel_free(wf_stream *s)
{
    struct wf_tun *t = s->tun;

    if (!t)
        return;
    s->tun = NULL;
    uv_timer_stop(&t->idle);
    uv_close((uv_handle_t *)&t->idle, tun_closed);
}

int wf_tunnel_open(const wf_stream *s)
{
    return s->tun && s->tun->open;
}

/* ---- idle timeout ---- */

static void idle_cb(uv_timer_t *h)
{
    struct wf_tun *t = h->data;
    wf_stream *s = t->s; /* the timer stops before the stream goes */
    uint64_t now = uv_now(h->loop), quiet = now - t->last_ms;

    if (quiet < t->idle_ms) {
        uv_timer_start(h, idle_cb, t->idle_ms - quiet, 0);
        return;
    }
    if (t->route)
        wf_stat_add(s->w, t->route->st_idle_timeout, 1);
    s->flags = "SI"; /* Envoy's flag for a stream idle timeout */
    WF_DEBUG("tunnel %llu: idle for %llu ms, closing", (unsigned long long)s->id,
             (unsigned long long)quiet);
    wf__dc_close(s->dc);
}

static void activity(wf_stream *s)
{
    s->tun->last_ms = uv_now(&s->w->loop);
}

static void start_idle(wf_stream *s, uint64_t ms)
{
    s->tun->idle_ms = ms;
    if (ms)
        uv_timer_start(&s->tun->idle, idle_cb, ms, 0);
}

/* ---- ending ---- */

/* Both directions shut and flushed: the stream ends with its connection. */
static void maybe_finish(wf_stream *s)
{
    struct wf_tun *t = s->tun;

    if (t->down_eof && t->up_eof && t->down_shut == 2 && t->up_shut == 2)
        wf__dc_close(s->dc);
}

void wf_tunnel_shut_done(wf_stream *s, int upstream)
{
    if (!s->tun)
        return;
    if (upstream)
        s->tun->up_shut = 2;
    else
        s->tun->down_shut = 2;
    maybe_finish(s);
}

/* The client's side ended: no more bytes for the endpoint. */
void wf_tunnel_down_eof(wf_stream *s)
{
    struct wf_tun *t = s->tun;

    if (t->down_eof)
        return;
    t->down_eof = 1;
    WF_DEBUG("tunnel %llu: the client's end", (unsigned long long)s->id);
    s->req_done = 1;
    wf_stream_request_flow(s, 0);
    if (wf_upstream_ready(s) && !t->up_shut) {
        t->up_shut = 1;
        wf_upstream_shutdown(s); /* after what is queued; wf_tunnel_shut_done follows */
    }
    maybe_finish(s);
}

/* The endpoint's side ended: no more bytes for the client. */
void wf_tunnel_up_eof(wf_stream *s)
{
    struct wf_tun *t = s->tun;

    if (t->up_eof)
        return;
    t->up_eof = 1;
    WF_DEBUG("tunnel %llu: the endpoint's end", (unsigned long long)s->id);
    wf_upstream_read_control(s, 0);
    if (!t->down_shut) {
        t->down_shut = 1;
        wf__dc_shutdown(s->dc);
    }
    maybe_finish(s);
}

/* ---- bytes ---- */

void wf_tunnel_up_bytes(wf_stream *s, const char *data, size_t len)
{
    struct wf_tun *t = s->tun;

    if (!t->open) {
        /* Before the tunnel opens: behind a 101 whose head has not gone out
         * yet (a filter paused), or in the read that finished the
         * endpoint's TLS handshake. */
        char *e = realloc(t->early, t->early_len + len);
        if (!e) {
            wf__dc_close(s->dc);
            return;
        }
        memcpy(e + t->early_len, data, len);
        t->early = e;
        t->early_len += len;
        return;
    }
    activity(s);
    if (t->route)
        wf_stat_add(s->w, t->route->st_tx_bytes, (int64_t)len);
    wf_stream_response_body(s, data, len); /* pauses the endpoint above the high-water mark */
}

/* SNI: "*.example.com" matches one or more labels before ".example.com". */
static int sni_match(const char *pat, const char *sni)
{
    size_t pl = strlen(pat), sl = strlen(sni);

    if (pl > 1 && pat[0] == '*' && pat[1] == '.')
        return sl > pl - 1 && strcasecmp(sni + sl - (pl - 1), pat + 1) == 0;
    return strcasecmp(pat, sni) == 0;
}

/* As Envoy chooses: the chain naming sni exactly, else the one whose
 * wildcard matches the longest suffix, else one without server names. */
static const wf_l4_route *pick_route(const wf_listener *l, const char *sni)
{
    const wf_l4_route *any = NULL, *wild = NULL;
    size_t wild_len = 0;

    for (size_t i = 0; i < l->n_l4; i++) {
        const wf_l4_route *r = &l->l4[i];
        if (!r->n_server_names) {
            if (!any)
                any = r;
            continue;
        }
        for (size_t k = 0; sni && k < r->n_server_names; k++) {
            const char *pat = r->server_names[k];
            if (pat[0] != '*' && strcasecmp(pat, sni) == 0)
                return r;
            if (pat[0] == '*' && strlen(pat) > wild_len && sni_match(pat, sni)) {
                wild = r;
                wild_len = strlen(pat);
            }
        }
    }
    return wild ? wild : any;
}

/* Closes a connection the listener cannot route; fmt has three %s: the
 * listener's name, a and b.  One line a second per worker at most. */
static void refuse(wf_dconn *dc, const char *fmt, const char *a, const char *b)
{
    static __thread wf_ratelimit rl;
    uint64_t skipped;
    const wf_snapshot *snap = dc->w->snap;

    if (wf_ratelimit_ok(&rl, uv_now(&dc->w->loop), 1000, &skipped))
        WF_WARN(fmt, dc->lindex < snap->n_ls ? snap->ls[dc->lindex].name : "?", a, b);
    wf__dc_close(dc);
}

/*
 * A connection on an opaque listener is ready for its route: the transport
 * is plaintext or its TLS handshake is done, and sni is the server name of
 * the client's own TLS (SNI listeners) or NULL.  Picks the route and a
 * destination by weight, then connects; bytes the client sends meanwhile
 * wait in the stream.
 */
static void tunnel_accept(wf_dconn *dc, const char *sni)
{
    wf_worker *w = dc->w;
    const wf_listener *l = dc->lindex < w->snap->n_ls ? &w->snap->ls[dc->lindex] : NULL;
    const wf_l4_route *r;
    const wf_l4_dest *d = NULL;
    wf_stream *s;
    wf_endpoint *ep;
    uint32_t pick;

    dc->l = (wf_listener *)l;
    if (!l || !l->n_l4) {
        wf__dc_close(dc);
        return;
    }
    if (!(r = pick_route(l, sni))) {
        wf_stat_add(w, WF_ST_NO_ROUTE, 1);
        refuse(dc, "listener %s: no filter chain for server name \"%s\"%s; connection closed",
               sni ? sni : "", sni ? "" : " (the client sent no SNI)");
        return;
    }
    pick = r->n_dests > 1 ? (uint32_t)(wf_rand(&w->rng) % r->total_weight) : 0;
    for (size_t i = 0; i < r->n_dests; i++) {
        d = &r->dests[i];
        if (pick < d->weight)
            break;
        pick -= d->weight;
    }
    if (!d->cluster) {
        refuse(dc, "listener %s: cluster \"%s\" is not in the configuration%s", d->cluster_name,
               "; connection closed");
        return;
    }
    if (!(s = wf__stream_new(dc)) || !tun_new(s)) {
        if (s)
            wf__stream_free(s);
        wf__dc_close(dc);
        return;
    }
    dc->s = s;
    s->tun->route = r;
    s->cluster = d->cluster;
    s->cluster_name = d->cluster->name;
    s->resp_started = 1; /* nothing the proxy could answer in the client's protocol */
    wf_stat_add(w, r->st_cx_total, 1);
    WF_DEBUG("tunnel %llu: %s from %s to %s", (unsigned long long)s->id, l->name, dc->peer,
             d->cluster->name);
    if (!(ep = wf_lb_pick(w, d->cluster))) {
        wf_stat_add(w, WF_ST_NO_HEALTHY_UPSTREAM, 1);
        refuse(dc, "listener %s: no healthy endpoint in cluster %s%s", d->cluster->name,
               "; connection closed");
        return;
    }
    wf_upstream_start(s, ep); /* wf_tunnel_up_ready once connected */
}

/* The endpoint is connected (TLS done): bytes flow. */
void wf_tunnel_up_ready(wf_stream *s)
{
    struct wf_tun *t = s->tun;

    if (t->open)
        return;
    t->open = 1;
    WF_DEBUG("tunnel %llu: connected to %s", (unsigned long long)s->id, s->upstream_host);
    activity(s);
    start_idle(s, t->route ? t->route->idle_timeout_ms : 0);
    if (t->down_eof && !t->up_shut) {
        t->up_shut = 1;
        wf_upstream_shutdown(s);
    }
    if (t->early_len) {
        /* The endpoint spoke in the same read that finished the TLS
         * handshake, before the tunnel was open. */
        char *early = t->early;
        size_t n = t->early_len;
        t->early = NULL;
        t->early_len = 0;
        wf_tunnel_up_bytes(s, early, n);
        free(early);
    }
}

/* The client's TLS ClientHello (SNI listeners): 1 with the server name
 * copied into out (empty when the hello has none), 0 while more bytes are
 * needed, -1 when the bytes are not a ClientHello. */
static int client_hello_sni(const unsigned char *p, size_t n, char *out, size_t outlen)
{
    size_t rec, hs, i, end, ext_end;

    out[0] = 0;
    if (n < 5)
        return 0;
    if (p[0] != 0x16 || p[1] != 3)
        return -1;
    rec = (size_t)p[3] << 8 | p[4];
    if (n < 5 + rec)
        return rec > 16384 ? -1 : 0;
    p += 5;
    if (rec < 4 || p[0] != 1)
        return -1;
    hs = (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (hs + 4 > rec)
        return 1; /* a hello split over records: route without its name */
    end = 4 + hs;
    i = 4 + 2 + 32; /* version, random */
    if (i + 1 > end)
        return -1;
    i += 1 + p[i]; /* session id */
    if (i + 2 > end)
        return -1;
    i += 2 + ((size_t)p[i] << 8 | p[i + 1]); /* cipher suites */
    if (i + 1 > end)
        return -1;
    i += 1 + p[i]; /* compression methods */
    if (i + 2 > end)
        return 1; /* no extensions */
    ext_end = i + 2 + ((size_t)p[i] << 8 | p[i + 1]);
    i += 2;
    if (ext_end > end)
        return -1;
    while (i + 4 <= ext_end) {
        size_t type = (size_t)p[i] << 8 | p[i + 1], len = (size_t)p[i + 2] << 8 | p[i + 3];
        size_t j = i + 4;
        if (j + len > ext_end)
            return -1;
        if (type == 0 && len >= 5) {
            /* server_name_list: length, then (type, length, name)... */
            size_t k = j + 2;
            while (k + 3 <= j + len) {
                size_t nl = (size_t)p[k + 1] << 8 | p[k + 2];
                if (k + 3 + nl > j + len)
                    return -1;
                if (p[k] == 0) {
                    if (nl >= outlen)
                        return -1;
                    memcpy(out, p + k + 3, nl);
                    out[nl] = 0;
                    return 1;
                }
                k += 3 + nl;
            }
        }
        i = j + len;
    }
    return 1;
}

#define HELLO_MAX (16384 + 5)

/* An SNI listener's first bytes: held until the ClientHello is whole. */
static int hello_take(wf_dconn *dc, const char *data, size_t len)
{
    char sni[256];
    char *buf;
    int r;

    if (dc->hello_len + len > HELLO_MAX) {
        refuse(dc, "listener %s: the client's first %s bytes are not a TLS ClientHello%s", "16 KiB",
               "; connection closed");
        return -1;
    }
    if (!(buf = realloc(dc->hello, dc->hello_len + len))) {
        wf__dc_close(dc);
        return -1;
    }
    memcpy(buf + dc->hello_len, data, len);
    dc->hello = buf;
    dc->hello_len += len;
    r = client_hello_sni((const unsigned char *)buf, dc->hello_len, sni, sizeof(sni));
    if (r == 0)
        return 0;
    if (r < 0) {
        refuse(dc, "listener %s: %s%s", "the client did not start with a TLS ClientHello",
               " (this port routes TLS by server name); connection closed");
        return -1;
    }
    tunnel_accept(dc, sni[0] ? sni : NULL);
    return dc->s && !dc->closing ? 1 : -1;
}

/* Bytes from the client (plaintext, or decrypted) of a tunnel, or of a
 * connection on an opaque listener that has no stream yet. */
void wf_tunnel_down_bytes(wf_dconn *dc, const char *data, size_t len)
{
    wf_stream *s;

    if (!dc->s) {
        const wf_listener *l =
            dc->lindex < dc->w->snap->n_ls ? &dc->w->snap->ls[dc->lindex] : NULL;
        if (l && l->sni) {
            int r = hello_take(dc, data, len);
            if (r <= 0)
                return;
            data = dc->hello;
            len = dc->hello_len;
        } else {
            tunnel_accept(dc, NULL);
        }
        if (!dc->s || dc->closing)
            return;
    }
    s = dc->s;
    if (s->tun->down_eof || !len)
        return;
    activity(s);
    if (s->tun->route)
        wf_stat_add(s->w, s->tun->route->st_rx_bytes, (int64_t)len);
    wf_stream_request_body(s, data, len); /* queued until connected; backpressure */
    if (dc->hello && data == dc->hello) {
        free(dc->hello);
        dc->hello = NULL;
        dc->hello_len = 0;
    }
}

/* A connection on an opaque listener whose transport is ready (plaintext
 * at accept, or the TLS handshake just done): server-first protocols need
 * the endpoint connected before the client says anything. */
void wf_tunnel_ready(wf_dconn *dc)
{
    const wf_listener *l = dc->lindex < dc->w->snap->n_ls ? &dc->w->snap->ls[dc->lindex] : NULL;

    if (!dc->s && l && !l->sni)
        tunnel_accept(dc, NULL);
}

/* ---- upgrades ---- */

/* A 101 answered an allowed upgrade: the stream will be a tunnel once the
 * head is out (wf_tunnel_begin).  -1 when out of memory. */
int wf_tunnel_upgrade(wf_stream *s)
{
    return s->tun || tun_new(s) ? 0 : -1;
}

/* The 101 went out to the client: bytes flow both ways from now on. */
void wf_tunnel_begin(wf_stream *s)
{
    struct wf_tun *t = s->tun;
    wf_dconn *dc = s->dc;
    char *held = dc->held, *early = t->early;
    size_t n_held = dc->held_len, n_early = t->early_len;

    t->open = 1;
    /* The request's own timers (route timeout, gRPC deadline) ended with
     * the exchange; the tunnel has its idle timeout. */
    for (wf_timer *x = s->timers; x; x = x->next)
        if (x->active) {
            uv_timer_stop(&x->t);
            x->active = 0;
        }
    activity(s);
    start_idle(s, s->l ? s->l->stream_idle_timeout_ms : 0);
    dc->held = NULL;
    dc->held_len = 0;
    dc->paused = 0;
    t->early = NULL;
    t->early_len = 0;
    if (n_held)
        wf_tunnel_down_bytes(dc, held, n_held);
    free(held);
    if (n_early && !dc->closing)
        wf_tunnel_up_bytes(s, early, n_early);
    free(early);
    if (!dc->closing && dc->s == s)
        wf_stream_request_flow(s, 1);
}
