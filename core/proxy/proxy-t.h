/*
 * proxy-t.h: the types of the proxy's data path.
 *
 * Lifetimes: a wf_snapshot (listeners, chains, clusters) is immutable and
 * refcounted; a stream holds a reference to the snapshot it started with.
 * Workers own everything else here: connections, pools, per-worker
 * balancer state and stat shards, touched only by their own thread.
 */
#ifndef WF_PROXY_PROXY_T_H
#define WF_PROXY_PROXY_T_H

#include <jansson.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include <weft/filter.h>

#include "http1/headers.h"
#include "tls/tls.h"
#include "util/arena.h"
#include "util/map.h"
#include "proxy/io.h"

#define WF_MAX_WORKERS 64
#define WF_MAX_LISTENERS 1024 /* per proxy, over its life */
/* Counters over the proxy's life: six per cluster, so room for several
 * thousand services.  Each worker's shard is calloc'd at this size; pages no
 * counter uses are never touched and cost no memory. */
#define WF_MAX_STATS 65536
#define WF_MAX_HEADERS 100
#define WF_MAX_HEADER_BYTES (60 * 1024)
#define WF_STREAM_MEM_LIMIT (1024 * 1024)
#define WF_WRITE_HIGH_WATER (1024 * 1024) /* pause the other side above this */
#define WF_READ_BUF 65536

enum wf_lb_policy { WF_LBP_ROUND_ROBIN = 0, WF_LBP_LEAST_REQUEST = 1, WF_LBP_RANDOM = 2 };

/* ---- configuration snapshot ---- */

/* How the proxy talks TLS to an endpoint (a cluster's transport socket). */
typedef struct wf_up_tls {
    int istio;          /* ISTIO_MUTUAL: the workload's own certificate and root */
    wf_tls_ctx *ctx;    /* SIMPLE/MUTUAL: a context of its own (owned) */
    char **sans;        /* the server must present one of these (owned), or none */
    size_t n_sans;
    char *sni;          /* or NULL */
} wf_up_tls;

typedef struct wf_endpoint {
    struct sockaddr_in addr;
    /* "IP\0IP:PORT[|tls|SNI][|h2]" (owned): ip is the IP; poolkey is
     * hostport ("IP:PORT", hostport_len bytes) plus the transport:
     * connections are pooled by it. */
    char *ip, *poolkey;
    uint32_t hostport_len;
    const wf_up_tls *tls; /* NULL: plaintext */
    int h2;            /* speak HTTP/2 to it: the cluster says so (http2_protocol_options),
                        * or it is a peer proxy reached over mTLS */
    uint32_t port;
    uint32_t weight;
    uint32_t gindex; /* index among all endpoints of the snapshot */
} wf_endpoint;

typedef struct wf_cluster {
    char *name;
    int lb;
    uint64_t connect_timeout_ms;
    wf_endpoint *eps;
    size_t n_eps;
    uint32_t *sched; /* weighted round-robin schedule: endpoint indexes */
    size_t n_sched;
    uint32_t index;
    int st_rq_total, st_rq_2xx, st_rq_4xx, st_rq_5xx, st_cx_total, st_cx_connect_fail;
    wf_host_info *infos;       /* one per endpoint, for modules */
    wf_up_tls *tls_match;      /* for endpoints with tlsMode istio (auto mTLS), or NULL */
    wf_up_tls *tls_default;    /* for the other endpoints; NULL: plaintext */
    int h2;                    /* http2_protocol_options: the endpoints speak HTTP/2 (h2c or h2) */
    uint32_t max_rq_per_cx;    /* common_http_protocol_options.max_requests_per_connection:
                                * a connection that carried this many is not used again
                                * (0: no limit) */
    uint64_t idle_timeout_ms;  /* common_http_protocol_options.idle_timeout: an upstream
                                * connection with no request for this long is closed */
} wf_cluster;

typedef struct wf_module_ref wf_module_ref; /* a loaded .so (module.c) */

/* One filter in one chain: the ABI's wf_filter handle. */
struct wf_filter {
    const wf_module *m;
    wf_module_ref *ref;
    char *name;
    char *module; /* name or path as configured */
    void *cfg;
    size_t index;
    wf_value *config; /* owned (util/ctree.h) */
};

typedef struct wf_chain {
    wf_filter *f;
    size_t n;
    int any_request_body, any_response_body, any_stream_create, any_complete;
    /* route node (a wf_value of the route table) -> void *[n] per-filter
     * route configs */
    wf_map route_cfgs;
} wf_chain;

/* Which transports a listener accepts (PeerAuthentication's mode). */
enum wf_listener_tls {
    WF_LTLS_PLAIN = 0,      /* plaintext only (no TLS filter chain; DISABLE) */
    WF_LTLS_STRICT = 1,     /* mTLS only */
    WF_LTLS_PERMISSIVE = 2, /* both, told apart by the first bytes */
};

/* One tcp_proxy filter chain: where an opaque byte stream goes. */
typedef struct wf_l4_dest {
    char *cluster_name;
    wf_cluster *cluster; /* NULL when the snapshot has no such cluster */
    uint32_t weight;
} wf_l4_dest;

typedef struct wf_l4_route {
    char *name;
    char **server_names; /* SNI ("*.example.com" matches a suffix); none: any */
    size_t n_server_names;
    wf_l4_dest *dests;
    size_t n_dests;
    uint32_t total_weight;
    uint64_t idle_timeout_ms; /* 0: none */
    int st_cx_total, st_rx_bytes, st_tx_bytes, st_idle_timeout;
} wf_l4_route;

typedef struct wf_listener {
    char *name;
    char host[64];
    int port;
    int inbound;
    int tls; /* enum wf_listener_tls */
    wf_value *route_table; /* owned (util/ctree.h); NULL for none */
    wf_chain chain;
    /* Opaque listeners (tcp_proxy filter chains): n_l4 > 0 and no HTTP. */
    wf_l4_route *l4;
    size_t n_l4;
    int sni; /* some chain matches server names: the ClientHello picks */
    int optional; /* a port of its own per TCP service: failing to bind it is a warning */
    /* HTTP connection manager options. */
    char **upgrades; /* upgrade types allowed (upgrade_configs), lower case */
    size_t n_upgrades;
    uint64_t idle_timeout_ms;        /* a connection with no stream this long is closed */
    uint64_t stream_idle_timeout_ms; /* an upgraded (tunnelled) stream quiet this long ends */
} wf_listener;

typedef struct wf_snapshot {
    atomic_int refs;
    json_t *listeners; /* the bundle's listeners, packed (util/jpack.h): the compiled
                          structures and ctrees are what the proxy reads */
    json_t *dump_rest; /* {clusters, endpoints} packed (util/jpack.h), for /config_dump
                          only: the data path reads the compiled structures */
    wf_value *labels; /* the workload's (util/ctree.h), for the modules */
    char *version;
    wf_listener *ls;
    size_t n_ls;
    wf_cluster *cls;
    size_t n_cls;
    wf_map cluster_by_name;
    size_t n_eps; /* all endpoints of all clusters */
    uint64_t built_ms;
} wf_snapshot;

/* ---- per-worker runtime ---- */

typedef struct wf_uconn wf_uconn;
typedef struct wf_dconn wf_dconn;

/* Idle and active upstream connections to one endpoint, on one worker. */
typedef struct wf_pool {
    struct sockaddr_in addr;
    char hostport[96];       /* the endpoint's poolkey */
    wf_tls_session *session; /* TLS resumption toward this endpoint */
    struct wf_h2uconn *h2;   /* the shared HTTP/2 connection (upstream_h2.c), or NULL */
    wf_uconn *idle;  /* singly linked through uc->next_idle */
    uint32_t n_idle;
    uint32_t active; /* requests in flight on this worker */
    uint32_t gen;    /* last snapshot adoption that referenced it */
} wf_pool;

typedef struct wf_worker {
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wake;            /* new snapshot or drain */
    uv_mutex_t wake_lock;       /* wake_closed against the main thread's sends */
    int wake_closed;
    uv_timer_t tick;            /* the same checks, periodically */
    uint64_t swept_ms;          /* idle connections last looked at */
    wf_snapshot *snap;          /* current; worker's own reference */
    wf_snapshot *_Atomic next;  /* published by the main thread */
    atomic_int drain;
    uv_tcp_t *listeners;        /* one per snapshot listener */
    int *listener_fds;
    size_t n_listeners;
    wf_map pools;               /* "ip:port" -> wf_pool */
    wf_pool **ep_pool;          /* by endpoint gindex, for snap */
    uint32_t *rr;               /* by cluster index, for snap */
    uint32_t gen;               /* snapshot adoptions so far */
    uint64_t rng;
    uint64_t *stats;            /* WF_MAX_STATS counters */
    uint32_t n_dconns;
    uint32_t n_streams;
    wf_dconn *dconns;           /* all open downstream connections */
    char *rbuf;                 /* shared read buffer */
    uv_check_t flush_check;     /* after each loop's I/O: what waited to be sent (below) */
    int flush_check_init;
    struct wf_h2conn *h2_dirty; /* HTTP/2 sessions with frames to send */
    wf_dconn *head_dirty;       /* HTTP/1.1 response heads no body joined */
    int rbuf_busy;
    int stopped;
} wf_worker;

typedef struct wf_kvstate {
    struct wf_kvstate *next;
    const char *key;
    wf_str value;
} wf_kvstate;

/* A chunk of body bytes waiting to be written or replayed. */
typedef struct wf_chunk {
    struct wf_chunk *next;
    size_t len;
    char data[];
} wf_chunk;

struct wf_buffer {
    char *data;
    size_t len, cap;
    wf_stream *s;
};

struct wf_timer {
    uv_timer_t t;
    wf_stream *s;
    void (*cb)(wf_stream *s, void *arg);
    void *arg;
    struct wf_timer *next;
    int active;
};

enum wf_stream_phase {
    WF_PH_REQUEST_HEADERS = 0,
    WF_PH_UPSTREAM,
    WF_PH_RESPONSE_HEADERS,
    WF_PH_DONE,
};

struct wf_stream {
    wf_arena arena;
    wf_worker *w;
    wf_dconn *dc;
    wf_snapshot *snap;
    wf_listener *l;
    uint64_t id;

    /* request */
    wf_hdrs req, resp;
    wf_str method, path, authority, scheme, url;
    int http_minor;
    int req_chunked;   /* downstream framing */
    int64_t req_cl;    /* -1 when none */
    int req_done;      /* whole request read */
    int head;          /* HEAD request: no response body */
    int want_close;    /* downstream asked for close / HTTP/1.0 */

    /* chain */
    void **fstate;
    size_t pos;
    int phase;
    int paused;
    int local_reply;
    const wf_value *route;
    const char *route_name;
    const char *cluster_name;
    wf_cluster *cluster;
    void **route_cfgs;

    /* HTTP/2 and gRPC */
    struct wf_h2s *h2d;  /* downstream HTTP/2 stream (downstream_h2.c), or NULL: HTTP/1.1 */
    struct wf_h2us *h2u; /* upstream HTTP/2 stream (upstream_h2.c), or NULL */
    wf_hdrs trailers;    /* response trailers (grpc-status ...) */
    wf_hdrs req_trailers; /* request trailers from an HTTP/2 client (n = 0: none); set
                           * before wf_stream_request_end, sent by an HTTP/2 upstream */
    int grpc;            /* content-type application/grpc: local replies are gRPC statuses */
    int resp_headers_only; /* the upstream ended the response with its head (gRPC's
                            * trailers-only form): an HTTP/2 client gets one HEADERS
                            * frame with END_STREAM too */

    /* opaque bytes (tunnel.c): a TCP listener's connection, or an upgrade */
    int upgrade;         /* an allowed Upgrade request: HTTP/1.1 upstream, headers kept */
    struct wf_tun *tun;  /* relaying raw bytes both ways, or NULL */

    /* upstream */
    wf_uconn *uc;
    wf_endpoint *ep;
    wf_pool *pool;
    uint32_t attempts;
    wf_chunk *pending, **pending_tail; /* request body read before upstream is ready */
    size_t pending_len;

    /* response */
    int status;
    int resp_chunked_out; /* we chunk toward downstream */
    int resp_close_delim;
    int resp_started;     /* head written downstream */
    int resp_done;

    /* bookkeeping */
    wf_kvstate *kv;
    struct wf_timer *timers;
    uint64_t start_us, start_ms, up_start_ms, up_time_us;
    uint64_t req_bytes, resp_bytes;
    const char *flags;
    char upstream_host[64];
    char peer[64];
};

/* Before a downstream connection knows whether it speaks TLS (PERMISSIVE). */
#define WF_SNIFF_BYTES 3

struct wf_dconn {
    uv_tcp_t tcp;
    wf_worker *w;
    wf_listener *l; /* only its index is stable across snapshots */
    size_t lindex;
    llhttp_t parser;
    llhttp_settings_t *settings;
    wf_stream *s;       /* current stream */
    char *held;         /* unparsed bytes kept while a response is pending */
    size_t held_len;
    /* header accumulation */
    size_t hdr_bytes;
    int in_value;
    int closing;
    int reading;
    wf_wq wq;
    int paused;         /* parser paused after a message, waiting for its response */
    wf_dconn *prev, *next;
    char peer[64];
    wf_tls_conn *tls;   /* mTLS from a peer proxy, or NULL */
    wf_tls_ctx *tls_ctx; /* the server context it started on (borrowed from tls) */
    char *xfcc;         /* x-forwarded-client-cert for the app: By=own;URI=peer */
    int xfcc_mode;      /* inbound: drop any x-forwarded-client-cert the client sent */
    int xfcc_done;
    int sniffing;       /* PERMISSIVE: the first bytes decide */
    char sniff[WF_SNIFF_BYTES];
    size_t sniff_len;
    struct wf_h2conn *h2; /* HTTP/2 session (downstream_h2.c), or NULL: HTTP/1.1 */
    int proto_known;      /* the first bytes told HTTP/1.1 from the HTTP/2 preface */
    char pre[24];         /* the preface's first bytes while too few arrived to tell */
    size_t pre_len;
    int l4;               /* on an opaque (TCP) listener: bytes go to tunnel.c */
    char *hello;          /* SNI listener: the ClientHello's bytes while they arrive */
    size_t hello_len;
    uint64_t last_ms;     /* last read or response end, for the idle timeout */
    int shut;             /* our writing was shut (a tunnel's half-close) */
    int eof;              /* the client's input ended */
    uv_buf_t head_out;    /* a response head not written yet: it goes out with the
                           * first body bytes, or from the worker's check phase */
    struct wf_dconn *next_head; /* on the worker's list of pending heads */
    int head_listed;
};

struct wf_uconn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_timer_t timer;   /* connect timeout */
    wf_worker *w;
    wf_pool *pool;
    wf_stream *s;       /* attached stream, or NULL when idle */
    llhttp_t parser;
    wf_uconn *next_idle;
    int connected;
    int closing;
    int reading;
    wf_wq wq;
    int in_value;
    int reused;
    int done;           /* response complete */
    int keepalive;      /* the endpoint allows reuse */
    int got_bytes;      /* any response bytes on this exchange */
    int head_sent;      /* request head written */
    wf_tls_conn *tls;   /* or NULL */
    uint32_t n_requests; /* exchanges carried, for max_requests_per_connection */
    uint64_t idle_deadline; /* in the pool: closed at this time (ms), the cluster's idle timeout */
    int shut;            /* our writing was shut (a tunnel's half-close) */
    int eof;             /* the endpoint's input ended */
    int upgraded;        /* answered 101 to an upgrade: the rest is the tunnel's */
};

/* Options of the proxy role. */
typedef struct wf_proxy_opts {
    const char *config_dir;
    const char *namespace_;
    const char *service_account;
    const char *labels;
    const char *outbound;
    const char *inbound;
    long app_port;
    const char *app_protocol; /* http (NULL), http2, grpc */
    const char *admin;
    long concurrency;
    const char *module_dir;
    const char *plugin_dirs[34];
    size_t n_plugin_dirs;
    long seed;
    long drain_timeout_ms;
    /* identity (--ca ...): the workload certificate from the CA */
    const char *ca;
    const char *ca_name;
    const char *token_file;
    const char *root_cert;
    long cert_ttl_s;
} wf_proxy_opts;

/* Options of the proxy in xDS mode. */
typedef struct wf_proxy_xds_opts {
    const char *server;          /* --xds */
    const char *name;            /* --name, or NULL */
    const char *instance_ips;    /* --instance-ip values joined with ',', or NULL */
    const char *const *services; /* --service values */
    size_t n_services;
} wf_proxy_xds_opts;

#endif
