/*
 * proxy.h: functions of the proxy's data path, by file.
 *
 *   proxy.c       the role: flags, start-up, workers, signals, drain
 *   snapshot.c    Envoy-shaped resources (JSON) -> immutable snapshot
 *   module.c      loading filter modules (dlopen, ABI checks)
 *   host.c        the wf_host function table given to modules
 *   chain.c       running a stream through its filter chain
 *   downstream.c  HTTP/1.1 connections from clients: parse, route, reply
 *   upstream.c    pools and HTTP/1.1 connections to endpoints
 *   downstream_h2.c  HTTP/2 connections from clients (nghttp2 server sessions)
 *   upstream_h2.c    HTTP/2 connections to endpoints (nghttp2 client sessions),
 *                 multiplexed: one per pool, shared by its streams
 *   lb.c          load balancers
 *   ident.c       the workload certificate as TLS contexts (mTLS)
 *   stats.c       counters: per-worker shards merged when read
 *   admin.c       the admin endpoints
 */
#ifndef WF_PROXY_PROXY_H
#define WF_PROXY_PROXY_H

#include "proxy/proxy-t.h"

/* Writes a 3-digit status into p[0..3). */
static inline void wf_status3(char *p, int status)
{
    p[0] = (char)('0' + (status / 100) % 10);
    p[1] = (char)('0' + (status / 10) % 10);
    p[2] = (char)('0' + status % 10);
}

/* ---- ident.c ---- */
/* Main thread: a new certificate (chain leaf first, its key, the roots). */
int wf_ident_set(const char *chain_pem, const char *key_pem, const char *roots, char *err,
                 size_t errlen);
/* Any thread: a new reference to the current context, or NULL before the
 * first certificate. */
wf_tls_ctx *wf_ident_server(void);
/* The client context offering ALPN h2 (between proxies, and xDS). */
wf_tls_ctx *wf_ident_client(void);
/* The client context by what it offers: WebSocket goes over HTTP/1.1, an
 * opaque TCP stream offers nothing. */
enum { WF_ALPN_H2 = 0, WF_ALPN_H1 = 1, WF_ALPN_NONE = 2, WF_ALPN_COUNT = 3 };
wf_tls_ctx *wf_ident_client_alpn(int alpn);
int wf_ident_ready(void);
/* The SPIFFE ID of the current certificate, or NULL (main thread). */
const char *wf_ident_id(void);
/* /certs: identity, serial, validity, root fingerprint (main thread). */
json_t *wf_ident_dump(void);
void wf_ident_shutdown(void);

/* ---- stats.c ---- */
enum {
    WF_ST_DOWNSTREAM_CX_TOTAL = 0,
    WF_ST_DOWNSTREAM_CX_ACTIVE,
    WF_ST_DOWNSTREAM_RQ_TOTAL,
    WF_ST_DOWNSTREAM_RQ_1XX,
    WF_ST_DOWNSTREAM_RQ_2XX,
    WF_ST_DOWNSTREAM_RQ_3XX,
    WF_ST_DOWNSTREAM_RQ_4XX,
    WF_ST_DOWNSTREAM_RQ_5XX,
    WF_ST_DOWNSTREAM_RQ_ACTIVE,
    WF_ST_UPSTREAM_RQ_TOTAL,
    WF_ST_UPSTREAM_CX_TOTAL,
    WF_ST_UPSTREAM_CX_ACTIVE,
    WF_ST_UPSTREAM_CX_CONNECT_FAIL,
    WF_ST_NO_ROUTE,
    WF_ST_NO_HEALTHY_UPSTREAM,
    WF_ST_SSL_HANDSHAKE,
    WF_ST_SSL_SESSION_REUSED,
    WF_ST_SSL_CONNECTION_ERROR,
    WF_ST_UPSTREAM_SSL_HANDSHAKE,
    WF_ST_UPSTREAM_SSL_SESSION_REUSED,
    WF_ST_UPSTREAM_SSL_CONNECTION_ERROR,
    WF_ST_FIXED_COUNT
};
/* Main thread: finds or creates a counter; returns its id or -1 when full. */
int wf_stat_id(const char *name);
/* Any worker thread: its shard of counter id. */
static inline void wf_stat_add(wf_worker *w, int id, int64_t n)
{
    if (id >= 0)
        w->stats[id] += (uint64_t)n;
}
void wf_stats_init(void);
/* Registers a worker's shard so reads include it. */
void wf_stats_attach(wf_worker *w);
/* Appends "name: value\n" for every counter (sorted) to out. */
char *wf_stats_text(void);

/* ---- module.c ---- */
/* Finds and loads a module by name (module dir, then plugin dirs) or by
 * path (contains '/' or ends in ".so"). Modules are never unloaded.  On
 * failure returns NULL and writes a reason naming the module and path. */
wf_module_ref *wf_module_load(const char *name_or_path, char *err, size_t errlen);
const wf_module *wf_module_table(const wf_module_ref *r);
const char *wf_module_path(const wf_module_ref *r);
void wf_modules_set_dirs(const char *module_dir, const char *const *plugin_dirs, size_t n);

/* ---- host.c ---- */
extern const wf_host wf_host_table;
/* Sets the worker the calling thread runs (for counters and random). */
void wf_host_set_worker(wf_worker *w);

/* ---- snapshot.c ---- */
typedef struct wf_workload_info {
    const char *role, *namespace_, *service_account, *trust_domain;
    json_t *labels; /* object */
    uint32_t workers;
} wf_workload_info;
/* Builds a snapshot from a resource bundle (takes a reference to it).
 * Returns NULL with a one-line reason on any error, creating nothing. */
wf_snapshot *wf_snapshot_build(json_t *bundle, const wf_workload_info *wl, char *err, size_t errlen);
void wf_snapshot_ref(wf_snapshot *s);
void wf_snapshot_unref(wf_snapshot *s);
wf_cluster *wf_snapshot_cluster(const wf_snapshot *s, const char *name);
/* The JSON for /config_dump (new reference). */
json_t *wf_snapshot_dump(const wf_snapshot *s);
/* The snapshot's listeners as the bundle had them (a new reference), or NULL. */
json_t *wf_snapshot_listeners(const wf_snapshot *s);

/* ---- lb.c ---- */
/* Picks an endpoint of c for worker w; NULL when the cluster has none. */
wf_endpoint *wf_lb_pick(wf_worker *w, wf_cluster *c);
/* Builds the weighted round-robin schedule of c (snapshot build). */
int wf_lb_prepare(wf_cluster *c);
uint64_t wf_rand(uint64_t *state);

/* ---- chain.c ---- */
/* Starts the chain for a stream whose request headers are complete. */
void wf_chain_request_headers(wf_stream *s);
/* Continues a paused chain from the next filter. */
void wf_chain_resume(wf_stream *s);
/* Response headers arrived (or a local reply): runs response hooks in
 * reverse order, then sends the head downstream. */
void wf_chain_response_headers(wf_stream *s, int end_stream);
void wf_chain_complete(wf_stream *s);
void wf_chain_stream_create(wf_stream *s);
void wf_chain_stream_destroy(wf_stream *s);
wf_attempt_action wf_chain_attempt_done(wf_stream *s, wf_attempt *a);

/* ---- downstream.c ---- */
void wf_downstream_accept(uv_stream_t *server, int status);
/* Sends a reply generated by the proxy (status, body, response flag). */
void wf_stream_local_reply(wf_stream *s, int status, const char *body, size_t len, const char *flags);
/* Upstream side calls these as the response arrives. */
void wf_stream_response_head(wf_stream *s);
/* After the response hooks: writes the response head downstream. */
void wf_stream_write_head(wf_stream *s);
void wf_stream_response_body(wf_stream *s, const char *data, size_t len);
void wf_stream_response_end(wf_stream *s);
/* The upstream attempt failed before response headers. */
void wf_stream_upstream_failed(wf_stream *s, wf_attempt_result why, const char *detail);
/* Stream finished its request hooks: route it upstream. */
void wf_stream_forward(wf_stream *s);
/* The upstream write queue drained: resume reading the client. */
void wf_stream_upstream_writable(wf_stream *s);
/* The upstream's write queue for s is above WF_WRITE_HIGH_WATER (on = 0):
 * stop taking request body from the client for s; on = 1: resume.  An
 * HTTP/1.1 client's connection stops being read; an HTTP/2 stream stops
 * getting window updates (the connection's other streams go on). */
void wf_stream_request_flow(wf_stream *s, int on);
/* Downstream write queue size for s, for upstream backpressure (HTTP/2:
 * the stream's own buffered response bytes). */
size_t wf_stream_downstream_queued(wf_stream *s);
/* Request body and end from the downstream codec (HTTP/1.1 parser or
 * HTTP/2 session): forwarded when the upstream is ready, else queued. */
void wf_stream_request_body(wf_stream *s, const char *data, size_t len);
void wf_stream_request_end(wf_stream *s);
/* Response trailers arrived (in s->trailers); the end follows with
 * wf_stream_response_end.  HTTP/1.1 clients do not get them. */
/* The exchange broke after the response head went out: the client sees
 * the stream reset (HTTP/2 RST_STREAM) or its connection closed (HTTP/1.1). */
void wf_stream_abort(wf_stream *s);
void wf_downstream_close_all(wf_worker *w, int only_idle);
wf_hdrs *wf_stream_hdrs(wf_stream *s, wf_part part);

/* ---- upstream.c ---- */
/* Sends s to endpoint ep of its cluster (new or pooled connection). */
void wf_upstream_start(wf_stream *s, wf_endpoint *ep);
/* More request body for the attached upstream (copied when not written
 * at once); end marks the end of the request. */
void wf_upstream_body(wf_stream *s, const char *data, size_t len, int end);
/* The stream is going away: detach, closing the connection if it is
 * mid-exchange. */
void wf_upstream_detach(wf_stream *s);
void wf_upstream_read_control(wf_stream *s, int on);
/* 1 when the upstream took the request head, so body may follow now
 * (wf_upstream_body); 0 while connecting (the body is queued meanwhile
 * in s->pending and sent by the upstream once ready). */
int wf_upstream_ready(const wf_stream *s);
wf_pool *wf_pool_get(wf_worker *w, const struct sockaddr_in *addr, const char *hostport);
void wf_pools_close(wf_worker *w);
/* Closes the idle connections of pools not marked with generation gen. */
void wf_pools_retire(wf_worker *w, uint32_t gen);

/* Internal to downstream*.c: a stream on dc (NULL when out of memory),
 * freeing one, routing one whose request head is complete, and the
 * lower-case authority copy. */
wf_stream *wf__stream_new(wf_dconn *dc);
void wf__stream_free(wf_stream *s);
/* Counts a finished stream: active down, its status class up (and its cluster's). */
void wf__stream_count(wf_stream *s);
void wf__stream_route(wf_stream *s);
int wf__stream_lower_authority(wf_stream *s);
/* downstream_h2.c: the finished wf_stream s leaves its HTTP/2 stream. */
void wf__h2d_unlink(wf_stream *s);
/* downstream.c: bytes to the client's connection (TLS or plain). */
void wf__dc_write(wf_dconn *dc, const uv_buf_t *b, unsigned n);
/* What a loop turn's I/O left to send goes out once that I/O is done, so
 * that a response's head and the body the same turn brought leave in one
 * write, and an HTTP/2 session's frames of the turn in few: the worker's
 * flush (proxy.c) runs wf__dc_flush_heads and wf__h2d_flush. */
void wf__worker_flush_soon(wf_worker *w);
void wf__dc_flush_heads(wf_worker *w);
void wf__h2d_flush(wf_worker *w);
/* Closes a downstream connection (its streams end first). */
void wf__dc_close(wf_dconn *dc);

/* ---- upstream_h2.c (entered from upstream.c when ep->h2) ---- */
void wf_h2u_start(wf_stream *s, wf_endpoint *ep, wf_pool *pool);
void wf_h2u_body(wf_stream *s, const char *data, size_t len, int end);
void wf_h2u_detach(wf_stream *s);
void wf_h2u_read_control(wf_stream *s, int on);
int wf_h2u_ready(const wf_stream *s);
/* Closes the pool's HTTP/2 connection when it has no stream (retire, drain). */
void wf_h2u_pool_idle_close(wf_pool *p);
void wf_h2u_pool_free(wf_pool *p);

/* ---- downstream_h2.c ---- */
/* HTTP/2 on an accepted connection (after the preface or ALPN h2):
 * the bytes already read are fed in. */
int wf_h2d_start(wf_dconn *dc, const char *data, size_t len);
/* Ciphertext-free bytes from the connection (plain or decrypted). */
void wf_h2d_feed(wf_dconn *dc, const char *data, size_t len);
void wf_h2d_write_head(wf_stream *s);
void wf_h2d_body(wf_stream *s, const char *data, size_t len);
void wf_h2d_end(wf_stream *s);
void wf_h2d_abort(wf_stream *s);
void wf_h2d_request_flow(wf_stream *s, int on);
size_t wf_h2d_queued(const wf_stream *s);
/* Drain: GOAWAY, then close once the streams are done. */
void wf_h2d_goaway(wf_dconn *dc);
/* 1 when the session has no stream (for the idle timeout). */
int wf_h2d_idle(const wf_dconn *dc);
/* The connection is closing: its streams end now ... */
void wf_h2d_close_streams(wf_dconn *dc);
/* ... and the session is freed from the handle's close callback. */
void wf_h2d_free(wf_dconn *dc);

/* ---- tunnel.c: opaque byte streams (TCP listeners, upgrades) ---- */
/* A connection on an opaque listener is ready (plaintext accepted, or its
 * TLS handshake done): connects at once unless the listener routes by SNI. */
void wf_tunnel_ready(wf_dconn *dc);
/* Client bytes of an opaque listener's connection or of an open tunnel. */
void wf_tunnel_down_bytes(wf_dconn *dc, const char *data, size_t len);
/* Endpoint bytes of a tunnel. */
void wf_tunnel_up_bytes(wf_stream *s, const char *data, size_t len);
/* Each side's end of input (EOF or close_notify): shuts the other side's
 * writing once its queue is out. */
void wf_tunnel_down_eof(wf_stream *s);
void wf_tunnel_up_eof(wf_stream *s);
/* A shutdown asked by wf__dc_shutdown (upstream 0) or wf_upstream_shutdown
 * (upstream 1) completed. */
void wf_tunnel_shut_done(wf_stream *s, int upstream);
/* upstream.c: a TCP tunnel's endpoint is connected and its TLS done. */
void wf_tunnel_up_ready(wf_stream *s);
/* An allowed upgrade got its 101: prepares the tunnel (-1: out of memory) ... */
int wf_tunnel_upgrade(wf_stream *s);
/* ... which opens once the 101 went out to the client. */
void wf_tunnel_begin(wf_stream *s);
/* 1 when s relays raw bytes now. */
int wf_tunnel_open(const wf_stream *s);
/* The stream is being freed. */
void wf__tunnel_free(wf_stream *s);
/* downstream.c: shuts the client connection's writing after its queue
 * (TLS: close_notify first). */
void wf__dc_shutdown(wf_dconn *dc);
/* upstream.c: the same toward the endpoint. */
void wf_upstream_shutdown(wf_stream *s);
/* Idle connections: closes client connections without a stream past their
 * listener's idle timeout, and pooled endpoint connections past their
 * cluster's (the worker's tick). */
void wf_downstream_sweep(wf_worker *w, uint64_t now_ms);
void wf_pools_sweep(wf_worker *w, uint64_t now_ms);

/* ---- admin.c ---- */
int wf_admin_start(uv_loop_t *loop, const char *addr, char *err, size_t errlen);
void wf_admin_stop(void);

/* ---- proxy.c ---- */
int wf_proxy_run(const wf_proxy_opts *o);
/* Runs the proxy with its configuration from istiod: the admin port comes
 * up at once, the listeners with the first configuration applied. */
int wf_proxy_run_xds(const wf_proxy_opts *o, const wf_proxy_xds_opts *x);
/* The admin's "xds" section, or NULL in static mode.  New reference. */
json_t *wf_proxy_xds_dump(void);
/* Worker: stops its loop once draining and no connection is left. */
void wf_worker_maybe_stop(wf_worker *w);
/* The current snapshot (main thread). */
wf_snapshot *wf_proxy_current(void);
int wf_proxy_ready(void);
void wf_proxy_quit(void);
json_t *wf_proxy_filter_chain_dump(void);
/* /certs: the workload certificate and the CA client's state.  New reference. */
json_t *wf_proxy_certs_dump(void);
uint64_t wf_now_us(void);

#endif
