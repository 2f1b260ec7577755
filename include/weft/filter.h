/*
 * weft/filter.h: the ABI between weft and its HTTP filter modules.
 *
 * This header is self-contained: a filter (a built-in module in modules/ or
 * a user's plugin) includes this file and nothing else of weft, and is
 * built as a shared object exporting one symbol, WF_MODULE_ENTRY.
 *
 * Versioning.  The host calls the entry with its ABI version.  A module
 * built for another major version must refuse (return NULL with a reason);
 * the host also refuses a module whose table reports another major.  Minor
 * versions only ever add: every table begins with its size and grows only
 * at its end, so a module built against an older minor still works, and a
 * hook or host function beyond the size the other side reports is treated
 * as absent (NULL).  Enum values are explicit integers and never reordered.
 *
 * Threads.  weft runs one main thread (configuration, admin, timers for
 * ticks) and N worker threads, each with its own event loop.  Every stream
 * hook runs on the worker that owns the stream, never concurrently with
 * another hook of the same stream.  Hooks must never block: no sleeping, no
 * blocking I/O, no locks held across calls.  Work that must wait uses
 * host->timer_start and returns WF_STOP, then host->resume.
 *
 * Scopes of state.
 *   module config  built by config_create on the main thread from the
 *                  filter's configuration, then read-only and shared by
 *                  every worker until config_destroy (after the last stream
 *                  that used it has finished).
 *   route config   built by route_config_create on the main thread from a
 *                  route's typed_per_filter_config entry for this filter;
 *                  read-only; found by host->route_config during a stream.
 *   stream state   created by stream_create on the worker; memory comes from
 *                  host->alloc (the stream arena) and is freed whole when
 *                  the stream ends, after stream_destroy.
 *
 * Ownership.  Strings and values the host passes in are borrowed: they stay
 * valid for the duration of the call (config values: until config_destroy
 * of the config they were given for).  Everything a module passes to a host
 * function is copied by the host unless the function says otherwise.
 */
#ifndef WEFT_FILTER_H
#define WEFT_FILTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WF_ABI_MAJOR 1
#define WF_ABI_MINOR 0

/* The one symbol a module exports, of type wf_module_entry_fn. */
#define WF_MODULE_ENTRY "wf_module_entry"

#if defined(__GNUC__)
#define WF_EXPORT __attribute__((visibility("default")))
#else
#define WF_EXPORT
#endif

typedef struct wf_stream wf_stream; /* one HTTP request/response exchange */
typedef struct wf_value wf_value;   /* a node of a configuration tree */
typedef struct wf_buffer wf_buffer; /* body bytes of one direction */
typedef struct wf_timer wf_timer;   /* a stream-scoped timer */
typedef struct wf_filter wf_filter; /* this filter's place in one chain */
typedef struct wf_metric wf_metric; /* a counter, gauge or histogram */

/* A length-delimited string; not NUL-terminated unless said so. */
typedef struct wf_str {
    const char *p;
    size_t len;
} wf_str;

/* What a stream hook asks the host to do next. */
typedef enum wf_status {
    WF_CONTINUE = 0,    /* pass to the next filter */
    WF_STOP = 1,        /* pause the chain here until host->resume(stream);
                         * also what a hook returns after send_local_reply */
    WF_STOP_BUFFER = 2, /* body hooks: keep the data buffered and call this
                         * hook again with more, up to the buffer limit */
} wf_status;

/* Which header map or body a host function addresses. */
typedef enum wf_part {
    WF_REQUEST = 0,
    WF_RESPONSE = 1,
    WF_REQUEST_TRAILERS = 2,
    WF_RESPONSE_TRAILERS = 3,
} wf_part;

typedef enum wf_value_type {
    WF_VALUE_NULL = 0,
    WF_VALUE_BOOL = 1,
    WF_VALUE_INT = 2,
    WF_VALUE_DOUBLE = 3,
    WF_VALUE_STRING = 4,
    WF_VALUE_LIST = 5,
    WF_VALUE_MAP = 6,
} wf_value_type;

typedef enum wf_log_level {
    WF_LOG_DEBUG = 0,
    WF_LOG_INFO = 1,
    WF_LOG_WARN = 2,
    WF_LOG_ERROR = 3,
} wf_log_level;

/* How one upstream attempt ended, passed to attempt_done and host_result. */
typedef enum wf_attempt_result {
    WF_ATTEMPT_RESPONSE = 0,       /* response headers arrived (see status) */
    WF_ATTEMPT_CONNECT_FAILURE = 1,
    WF_ATTEMPT_TIMEOUT = 2,        /* per-try timeout before headers */
    WF_ATTEMPT_RESET = 3,          /* reset or closed before headers */
} wf_attempt_result;

/* attempt_done's answer. */
typedef enum wf_attempt_action {
    WF_ATTEMPT_ACCEPT = 0, /* deliver this result downstream */
    WF_ATTEMPT_RETRY = 1,  /* discard it and try again (after retry_delay_ms) */
} wf_attempt_action;

/* One upstream host as modules see it. */
typedef struct wf_host_info {
    size_t size;
    const char *cluster; /* e.g. "outbound|8080|v1|reviews.default.svc.cluster.local" */
    const char *address; /* IP literal */
    uint32_t port;
    uint32_t weight;
    uint32_t active_requests; /* on this worker */
    int healthy;              /* 0 while ejected or unhealthy */
} wf_host_info;

/* One finished upstream attempt. */
typedef struct wf_attempt {
    size_t size;
    uint32_t number;          /* 1 for the first attempt */
    wf_attempt_result result;
    int status;               /* HTTP status when result == WF_ATTEMPT_RESPONSE */
    const wf_host_info *host; /* NULL when no host was chosen */
    /* Out: delay before the retry; the host applies it when attempt_done
     * returns WF_ATTEMPT_RETRY. */
    uint64_t retry_delay_ms;
} wf_attempt;

/* What is known about a stream when it completes (read-only). */
typedef struct wf_stream_info {
    size_t size;
    int status;                 /* final response status, 0 if none was sent */
    uint64_t request_bytes;     /* body bytes received from downstream */
    uint64_t response_bytes;    /* body bytes sent downstream */
    uint64_t start_us;          /* wall clock, microseconds since the epoch */
    uint64_t duration_us;       /* first byte in to last byte out */
    uint64_t upstream_time_us;  /* request sent to response headers, 0 if none */
    const char *response_flags; /* Envoy-style flags ("-", "NR", "UH", "UF", ...) */
    const char *route_name;     /* NULL when no route matched */
    const char *cluster;        /* NULL when no upstream was chosen */
    const char *upstream_host;  /* "ip:port" of the last attempt, or NULL */
    const char *downstream_peer;/* "ip:port" of the client */
    const char *direction;      /* "outbound" or "inbound" */
    uint32_t attempts;
} wf_stream_info;

/* The workload a chain is built for. */
typedef struct wf_workload {
    size_t size;
    const char *role;            /* "proxy" or "gateway" */
    const char *namespace_;      /* Kubernetes-style namespace */
    const char *service_account;
    const wf_value *labels;      /* map of string to string */
    const char *trust_domain;
    uint32_t workers;            /* number of worker threads */
} wf_workload;

/* Everything config_create receives. */
typedef struct wf_config_args {
    size_t size;
    const char *name;            /* the filter's name in the chain */
    const wf_value *config;      /* its configuration (never NULL; may be an
                                    empty map) */
    const wf_value *route_table; /* the listener's route table, an Envoy v3
                                    RouteConfiguration in proto3 JSON form
                                    (docs/resources.md), or NULL.  The router
                                    compiles it; others may ignore it. */
    const wf_workload *workload;
    const char *direction;       /* "outbound" or "inbound" */
    const wf_filter *filter;     /* handle for route_config() and metrics */
} wf_config_args;

typedef struct wf_host wf_host;

/*
 * The host function table.  Unless said otherwise a function may be called
 * only on the thread running the hook that received the stream, and only
 * while that stream is alive.
 */
struct wf_host {
    size_t size; /* sizeof(wf_host) the host was built with */
    uint32_t abi_major;
    uint32_t abi_minor;

    /* --- Logging (any thread) --- */
    /* Writes one log line tagged with the module's name; printf format. */
    void (*log)(wf_log_level level, const char *module, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    /* Non-zero if a line at this level would be written; check it before
     * formatting anything costly. */
    int (*log_enabled)(wf_log_level level);

    /* --- Configuration values (any thread; values are immutable) --- */
    wf_value_type (*value_type)(const wf_value *v); /* NULL is WF_VALUE_NULL */
    /* A string's bytes (NUL-terminated) and length; NULL if not a string. */
    const char *(*value_string)(const wf_value *v, size_t *len);
    int64_t (*value_int)(const wf_value *v);  /* 0 if not a number */
    double (*value_double)(const wf_value *v); /* ints convert; 0 otherwise */
    int (*value_bool)(const wf_value *v);      /* 0 if not true */
    size_t (*value_len)(const wf_value *v);    /* entries of a list or map */
    const wf_value *(*value_at)(const wf_value *v, size_t i); /* list or map */
    const char *(*value_key_at)(const wf_value *v, size_t i);  /* map keys */
    const wf_value *(*value_get)(const wf_value *map, const char *key);

    /* --- Stream memory --- */
    /* Memory from the stream arena, 16-byte aligned, freed whole when the
     * stream ends.  Returns NULL when the stream's memory limit is reached;
     * the hook should then reply 500 or fail the stream. */
    void *(*alloc)(wf_stream *s, size_t n);

    /* --- Headers ---
     * Names are matched case-insensitively.  The request's pseudo-headers
     * are ":method", ":path", ":authority" and ":scheme"; the response's is
     * ":status".  Changing ":path" or ":authority" after routing does not
     * re-route. */
    /* Finds the first value of name; returns 1 and fills *value if found. */
    int (*header_get)(wf_stream *s, wf_part part, wf_str name, wf_str *value);
    size_t (*header_count)(wf_stream *s, wf_part part);
    /* The i-th header (pseudo-headers first); returns 0 past the end. */
    int (*header_at)(wf_stream *s, wf_part part, size_t i, wf_str *name, wf_str *value);
    /* Replaces every value of name with one value (copied). */
    int (*header_set)(wf_stream *s, wf_part part, wf_str name, wf_str value);
    /* Adds one more value (copied). */
    int (*header_add)(wf_stream *s, wf_part part, wf_str name, wf_str value);
    /* Removes every value of name; returns how many were removed. */
    int (*header_remove)(wf_stream *s, wf_part part, wf_str name);

    /* --- Body buffers (valid during the body hook that received them) --- */
    size_t (*buffer_length)(const wf_buffer *b);
    /* The contiguous slice starting at offset off; returns its length
     * (0 past the end).  Bytes stay owned by the buffer. */
    size_t (*buffer_peek)(const wf_buffer *b, size_t off, const char **data);
    int (*buffer_append)(wf_buffer *b, const char *data, size_t len);
    void (*buffer_drain)(wf_buffer *b, size_t len);

    /* --- Control --- */
    /* Answers the stream from the proxy itself: status, optional body,
     * and a short detail for logs ("fault_filter_abort").  The hook then
     * returns WF_STOP.  Filters earlier in the chain see the reply in their
     * response hooks.  Headers the filter added to WF_RESPONSE before the
     * call (a redirect's location) are sent with the reply. */
    int (*send_local_reply)(wf_stream *s, int status, wf_str body, const char *details);
    /* Continues a chain paused with WF_STOP, from the next filter.  Call it
     * from a timer or another event on the stream's worker, not from inside
     * the paused hook. */
    void (*resume)(wf_stream *s);

    /* --- Routing --- */
    /* The router's decision: route is the matched route's node in the
     * route table it compiled (so the host can find per-route filter
     * configs), name a printable route name, cluster the chosen upstream
     * cluster.  Called from the route hook. */
    int (*set_route)(wf_stream *s, const wf_value *route, const char *name, const char *cluster);
    /* This filter's compiled per-route config for the stream's route (what
     * its route_config_create returned), or NULL. */
    void *(*route_config)(wf_stream *s, const wf_filter *f);
    /* Non-zero once a route was set. */
    int (*has_route)(wf_stream *s);

    /* --- Per-stream state shared between filters --- */
    int (*state_set)(wf_stream *s, const char *key, wf_str value);
    int (*state_get)(wf_stream *s, const char *key, wf_str *value);

    /* --- Timers on the stream's worker; cancelled when the stream ends --- */
    wf_timer *(*timer_start)(wf_stream *s, uint64_t ms, void (*cb)(wf_stream *s, void *arg), void *arg);
    void (*timer_cancel)(wf_stream *s, wf_timer *t);

    /* --- Randomness and time --- */
    /* A fast per-worker pseudo-random number (xorshift; seeded from
     * --seed when given, so tests can fix it). */
    uint64_t (*random)(wf_stream *s);
    uint64_t (*now_ms)(void); /* monotonic, cached per event-loop turn */

    /* --- Metrics (defined on the main thread, updated on workers) --- */
    /* Defines or finds a counter by name; call from config_create. */
    wf_metric *(*counter_define)(const char *name);
    /* Adds to the calling worker's shard of the counter; lock-free. */
    void (*counter_add)(wf_metric *m, uint64_t n);

    /* --- Upstream hosts (main thread, from tick) --- */
    /* Marks a host of a cluster ejected for ms milliseconds (0 restores). */
    int (*host_eject)(const char *cluster, const char *address, uint32_t port, uint64_t ms);
};

/*
 * The module's table, returned by the entry.  Every hook except
 * config_create is optional (NULL).  Unless noted, hooks run on a worker.
 */
typedef struct wf_module {
    size_t size; /* sizeof(wf_module) the module was built with */
    uint32_t abi_major; /* WF_ABI_MAJOR the module was built with */
    uint32_t abi_minor;
    const char *name;

    /* Main thread.  Builds the module config from args; returns NULL and
     * writes a one-line reason into err (errlen bytes) to refuse it, which
     * refuses the whole configuration it came with. */
    void *(*config_create)(const wf_config_args *args, char *err, size_t errlen);
    /* Main thread, after the last stream using cfg has finished. */
    void (*config_destroy)(void *cfg);

    /* Main thread.  Compiles one route's typed_per_filter_config entry for
     * this filter; NULL with err refuses the configuration. */
    void *(*route_config_create)(void *cfg, const wf_value *route_cfg, char *err, size_t errlen);
    void (*route_config_destroy)(void *cfg, void *route_cfg);

    /* Creates per-stream state (from host->alloc) when a stream starts. */
    void *(*stream_create)(void *cfg, wf_stream *s);
    /* Called once when the stream ends, before its arena is freed. */
    void (*stream_destroy)(void *cfg, void *st, wf_stream *s);

    /* Route resolution, once per request after the request headers, before
     * any request_headers hook: a router calls host->set_route or
     * host->send_local_reply (no route).  Run in chain order until a route
     * is set. */
    wf_status (*route)(void *cfg, void *st, wf_stream *s);

    /* Stream hooks, in chain order for requests and in reverse chain order
     * for responses.  end_stream is non-zero when no body follows. */
    wf_status (*request_headers)(void *cfg, void *st, wf_stream *s, int end_stream);
    wf_status (*request_body)(void *cfg, void *st, wf_stream *s, wf_buffer *data, int end_stream);
    wf_status (*request_trailers)(void *cfg, void *st, wf_stream *s);
    wf_status (*response_headers)(void *cfg, void *st, wf_stream *s, int end_stream);
    wf_status (*response_body)(void *cfg, void *st, wf_stream *s, wf_buffer *data, int end_stream);
    wf_status (*response_trailers)(void *cfg, void *st, wf_stream *s);

    /* Read-only, after the last byte was sent or the stream was reset: for
     * metrics, access logs and spans. */
    void (*stream_complete)(void *cfg, void *st, wf_stream *s, const wf_stream_info *info);

    /* Upstream hooks.
     * attempt_done: after each upstream attempt, in chain order; the first
     * filter to answer WF_ATTEMPT_RETRY gets another attempt (setting
     * a->retry_delay_ms), unless the request body can no longer be
     * replayed. */
    wf_attempt_action (*attempt_done)(void *cfg, void *st, wf_stream *s, wf_attempt *a);
    /* host_select: picks the host for an attempt from hosts[0..n) (healthy
     * ones, weights applied by the host); returns an index, or -1 to leave
     * the choice to the cluster's load balancer. */
    int (*host_select)(void *cfg, void *st, wf_stream *s, const wf_host_info *const *hosts, size_t n);
    /* host_result: after each attempt, for passive health (outlier
     * detection); runs on the worker, so keep per-worker counts. */
    void (*host_result)(void *cfg, uint32_t worker, const wf_host_info *host, const wf_attempt *a);
    /* tick: main thread, every tick_interval_ms; may call host->host_eject. */
    void (*tick)(void *cfg);
    uint32_t tick_interval_ms;
} wf_module;

/* The entry: given the host's ABI version and function table (valid for
 * the life of the process), returns the module's table (static storage),
 * or NULL with a reason in err. */
typedef const wf_module *(*wf_module_entry_fn)(uint32_t abi_major, uint32_t abi_minor,
                                               const wf_host *host, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_FILTER_H */
