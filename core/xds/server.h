/*
 * server.h: the ADS server (Envoy's Aggregated Discovery Service, state of
 * the world) that istiod runs over the gRPC transport.
 *
 * Two layers:
 *   - The per-stream state machine (wf_xds_state_*): what a
 *     DiscoveryRequest means (new subscription, ACK, NACK, stale nonce)
 *     and which DiscoveryResponse a stream is owed.  Pure functions of the
 *     state and their arguments, with no sockets and no clock of their own,
 *     so the bookkeeping is unit-tested directly
 *     (tests/unit/xds_server_test.c).
 *   - The server (wf_xds_server_*): gRPC streams on a libuv loop, pushes,
 *     metrics, /debug/syncz.  The owner (istiod) supplies each stream's
 *     resources through a hook; the server never translates anything.
 *
 * Protocol rules applied (shared/XDS.md): the node comes in the first
 * request of a stream; per type URL the server keeps the names subscribed
 * (LDS and CDS with no names are wildcard subscriptions), the version and
 * nonce of the last response, the version the client ACKed and its last
 * NACK.  A request whose nonce is not the last one sent for its type is
 * stale and ignored; one with error_detail is a NACK (the client keeps its
 * previous config, so does the server's notion of what was ACKed).  A
 * type's version is a hash of the resources sent, so it changes only when
 * their content does, and a push goes out only when it changed.
 *
 * Thousands of proxies share a few translations (istiod caches them per
 * proxy shape), so what a stream is sent is worked out per translation,
 * not per stream: a snapshot (wf_xds_snapshot) holds a translation and,
 * filled in as streams are pushed, the response each subscription gets
 * from it, selected, hashed and encoded once; a stream only appends its
 * nonce.  Named subscriptions are interned, so identical ones share one
 * list and one cache entry.  EDS, which the protocol lets carry a subset
 * (XDS.md), goes out as only the assignments that changed when the stream
 * ACKed the whole set before: an endpoint move is a few hundred bytes per
 * proxy, not every assignment of the mesh.
 */
#ifndef WF_XDS_SERVER_H
#define WF_XDS_SERVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "grpc/grpc.h"
#include "tls/tls.h"
#include "xds/codec.h"

/* The types served, in the order a push sends them: clusters before their
 * endpoints before the listeners that route to them. */
typedef enum wf_xds_type {
    WF_XDS_CDS = 0,
    WF_XDS_EDS = 1,
    WF_XDS_LDS = 2,
    WF_XDS_NTYPES = 3,
} wf_xds_type;

/* WF_XDS_* for a type URL, or -1 for a type this server does not serve. */
int wf_xds_type_of(const char *type_url);
const char *wf_xds_type_url(int type);
/* "CDS", "EDS", "LDS". */
const char *wf_xds_type_name(int type);
/* The bundle member holding the type's resources: "clusters", "endpoints",
 * "listeners". */
const char *wf_xds_bundle_key(int type);

/* ---- per-stream state machine ---------------------------------------- */

/* A list of resource names, sorted and unique, interned: every stream
 * subscribed to the same names holds the same list (refcounted). */
typedef struct wf_xds_names wf_xds_names;
/* What a stream was last sent of EDS, resource by resource (refcounted). */
typedef struct wf_xds_digest wf_xds_digest;

typedef struct wf_xds_type_state {
    int subscribed; /* the client asked for this type on this stream */
    int wildcard;   /* LDS/CDS first asked with no names (or "*"): everything */
    wf_xds_names *set; /* named subscription (a reference), NULL when none */
    char **names;      /* its names, sorted and unique; owned by set */
    size_t n_names;
    wf_xds_digest *sent_digest; /* EDS: what the last response left the client holding */
    char *sent_version;  /* of the last response; NULL before the first */
    char *sent_nonce;    /* of the last response */
    char *acked_version; /* last version the client ACKed; NULL before */
    char *last_nack;     /* error_detail message of the last NACK; cleared by an ACK */
    uint64_t n_sent, n_acks, n_nacks;
    int owed;             /* a response is due whatever its version */
    uint64_t trigger_ms;  /* when the change behind the last response happened */
    int measured;         /* convergence of the last response already counted */
} wf_xds_type_state;

typedef struct wf_xds_stream_state {
    json_t *node;    /* the first request's node (owned reference), NULL before */
    uint64_t nonces; /* nonce counter */
    wf_xds_type_state t[WF_XDS_NTYPES];
} wf_xds_stream_state;

typedef enum wf_xds_verdict {
    WF_XDS_IGNORE = 0,    /* a type this server does not serve */
    WF_XDS_SUBSCRIBE = 1, /* a new or changed subscription: a response is owed */
    WF_XDS_ACK = 2,
    WF_XDS_NACK = 3,
    WF_XDS_STALE = 4, /* a nonce that is not the last one sent: ignored */
    WF_XDS_BAD = 5,   /* protocol error: the stream should end (err says why) */
} wf_xds_verdict;

typedef struct wf_xds_outcome {
    wf_xds_verdict verdict;
    int type;          /* WF_XDS_*, or -1 */
    int first;         /* this request carried the stream's node */
    int respond;       /* a response is owed now (new subscription, or names changed) */
    int64_t converged; /* ACK: ms from the change to this ACK, -1 when not measured */
} wf_xds_outcome;

void wf_xds_state_init(wf_xds_stream_state *st);
void wf_xds_state_free(wf_xds_stream_state *st);

/*
 * Applies one request to st.  now_ms is the caller's clock (for
 * convergence).  Returns 0 with *out filled, or -1 on out of memory.  A
 * protocol error (no node in the first request) is verdict WF_XDS_BAD with
 * the reason in err.  req is only read.
 */
int wf_xds_state_request(wf_xds_stream_state *st, const wf_xds_request *req, uint64_t now_ms,
                         wf_xds_outcome *out, char *err, size_t errlen);

/*
 * The same for a request read without decoding it (wf_xds_request_peek),
 * when it is a plain ACK: no node, no error, the nonce of the last
 * response of its type and the names subscribed already, in the same
 * order.  Returns 1 with *out filled (verdict WF_XDS_ACK) as
 * wf_xds_state_request would, 0 when the request is something else (decode
 * it and call wf_xds_state_request), -1 on out of memory.
 */
int wf_xds_state_plain_ack(wf_xds_stream_state *st, const wf_xds_request_view *v, uint64_t now_ms,
                           wf_xds_outcome *out);

/* ---- snapshots: one translation, encoded once for all its streams ---- */

typedef struct wf_xds_snapshot wf_xds_snapshot;

/* A snapshot of bundle {listeners, clusters, endpoints} (JSON arrays, only
 * read): every resource is encoded here, once, and the snapshot keeps the
 * bytes, not the JSON, so the caller may free the bundle at once.  A
 * resource whose JSON a live snapshot had already is not encoded again (a
 * 128-bit hash of its JSON finds the bytes).  A type whose resources
 * cannot be encoded is kept as the reason, which pushes of that type then
 * report.  NULL on out of memory.  Snapshots and the stream states pushed
 * from them share process-wide tables without a lock: make, use and free
 * them on one thread at a time. */
wf_xds_snapshot *wf_xds_snapshot_new(const json_t *bundle);
wf_xds_snapshot *wf_xds_snapshot_ref(wf_xds_snapshot *sn);
void wf_xds_snapshot_unref(wf_xds_snapshot *sn);
/* Bytes of encoded responses held, and how many named subscriptions and
 * EDS deltas have their own (for tests and debugging). */
size_t wf_xds_snapshot_bytes(const wf_xds_snapshot *sn);
size_t wf_xds_snapshot_encodings(const wf_xds_snapshot *sn);

/* One response as sent: the part shared by every stream (owned by the
 * snapshot) and the stream's own tail (nonce and control plane). */
typedef struct wf_xds_push {
    const uint8_t *body; /* DiscoveryResponse without nonce and control_plane */
    size_t body_len;
    uint8_t tail[WF_XDS_TAIL_MAX];
    size_t tail_len;
    char version[17];
    char nonce[24];
    size_t n_resources;
    int delta; /* EDS: only the assignments that changed */
} wf_xds_push;

/*
 * The response st is owed for type from a snapshot, as bytes (body then
 * tail; body is valid while sn is).  The selection, version and encoding
 * are made once per snapshot and
 * subscription and shared by every stream that has the same.  An EDS
 * stream that ACKed the last whole set it was sent, with the same names,
 * gets only the assignments whose bytes changed (delta set), unless one
 * it held is gone.  Returns 1 with *out filled and the response recorded
 * as sent; 0 when nothing is owed; -1 with err when the resources cannot
 * be encoded (or memory ran out), -2 for the same failure already
 * reported for this snapshot (so a caller logs it once, not per stream).
 * A wildcard subscription gets the snapshot's response for the type as
 * is; named ones get the resources named that exist, in name order.  A
 * Listener asked for by a short alias ("reviews:9080",
 * "reviews.default:9080", "reviews.default.svc:9080", or a host without a
 * port: the service's lowest port) is the FQDN listener ("<FQDN>:<port>",
 * FQDN resolved in ns) renamed to the name asked.
 */
int wf_xds_state_respond(wf_xds_stream_state *st, int type, wf_xds_snapshot *sn, const char *ns,
                         uint64_t trigger_ms, wf_xds_push *out, char *err, size_t errlen);

/* ---- the server ----------------------------------------------------- */

typedef struct wf_xds_server wf_xds_server;
typedef struct wf_xds_conn wf_xds_conn; /* one ADS stream */

typedef struct wf_xds_hooks {
    /* The first request of a stream arrived (its node is in the state).
     * Return 0 to serve it, or -1 with a reason to end it. */
    int (*on_join)(wf_xds_conn *c, void *ud, char *err, size_t errlen);
    /* The resources for c's proxy: a new reference to a snapshot of its
     * bundle, or NULL with err.  Streams of proxies that translate alike
     * should get the same snapshot: their pushes are then encoded once. */
    wf_xds_snapshot *(*resources)(wf_xds_conn *c, void *ud, char *err, size_t errlen);
    /* A joined stream ended (on_join had returned 0). */
    void (*on_leave)(wf_xds_conn *c, void *ud);
    void *ud;
} wf_xds_hooks;

/* Convergence histogram buckets (seconds), as Istio's. */
#define WF_XDS_CONV_BUCKETS 8
extern const double wf_xds_conv_bounds[WF_XDS_CONV_BUCKETS];

typedef struct wf_xds_metrics {
    uint64_t connected; /* joined streams now (pilot_xds) */
    uint64_t pushes[WF_XDS_NTYPES];
    uint64_t rejects[WF_XDS_NTYPES]; /* NACKs */
    uint64_t expired_nonce[WF_XDS_NTYPES];
    uint64_t deferred;      /* pushes put off because a client was slow */
    uint64_t push_errors;   /* resources could not be computed or encoded */
    uint64_t conv_buckets[WF_XDS_CONV_BUCKETS]; /* cumulative counts */
    uint64_t conv_count;
    double conv_sum; /* seconds */
} wf_xds_metrics;

/* Listens on addr for ADS streams.  hooks is copied.  NULL with a reason
 * in err on failure. */
wf_xds_server *wf_xds_server_start(uv_loop_t *loop, const char *addr, const wf_xds_hooks *hooks,
                                   char *err, size_t errlen);
/* Stops listening and ends every stream (each joined one gets on_leave).
 * The server stays allocated until wf_xds_server_free, to be called once
 * the loop has run its close callbacks. */
void wf_xds_server_stop(wf_xds_server *s);
void wf_xds_server_free(wf_xds_server *s);

/* Recomputes every stream's resources (hooks->resources) and sends each
 * subscribed type whose version changed.  trigger_ms (uv_now of the loop)
 * is when the change behind it happened, for pilot_proxy_convergence_time.
 * The streams are served in turn, as many at once as keep the bytes
 * queued under a budget (the rest as those are written), so a change is
 * not copied into every stream's queue before the first byte goes out.  A
 * stream whose client has too much queued is skipped and retried later. */
void wf_xds_server_push_all(wf_xds_server *s, uint64_t trigger_ms);

/* 1 while pushes wait for their turn or their bytes are not all written
 * (work that can wait for the pushes, such as freeing, checks this). */
int wf_xds_server_pushing(wf_xds_server *s);

/* Right after a restart, proxies that come back to it hold a working
 * config, and the registry fills up only as they reconnect one by one.
 * Until uv_now reaches until_ms, a stream that resumes (asks for a type
 * with the version_info it already holds) gets no response, so that no
 * proxy is pushed a half-filled registry; then every stream is pushed.
 * Streams of new clients (empty version_info) are served at once. */
void wf_xds_server_hold(wf_xds_server *s, uint64_t until_ms);

/* /debug/syncz: a new JSON array, one object per joined stream. */
json_t *wf_xds_server_syncz(const wf_xds_server *s);
const wf_xds_metrics *wf_xds_server_metrics(const wf_xds_server *s);

const wf_xds_stream_state *wf_xds_conn_state(const wf_xds_conn *c);
const char *wf_xds_conn_peer(const wf_xds_conn *c);
/* The SPIFFE ID of the stream's client certificate (secure port), or NULL
 * on the plaintext port.  Valid while the stream lives. */
const char *wf_xds_conn_peer_id(const wf_xds_conn *c);

/*
 * Also serves ADS over mTLS on addr (istiod's secure port): the same
 * streams, pushes and hooks, but an ADS call without a verified client
 * certificate is refused (UNAUTHENTICATED), and calls to other paths go to
 * other (the CA's CreateCertificate), whose handlers see the calls as a
 * wf_grpc_server's would.  tls: a server context (referenced).
 */
int wf_xds_server_listen_tls(wf_xds_server *s, const char *addr, wf_tls_ctx *tls,
                             const wf_grpc_server_handlers *other, char *err, size_t errlen);
/* istiod's own certificate rotated: new connections use tls. */
void wf_xds_server_set_tls(wf_xds_server *s, wf_tls_ctx *tls);
int wf_xds_server_secure_port(const wf_xds_server *s);
/* The owner's data for a stream (set in on_join). */
void wf_xds_conn_set_data(wf_xds_conn *c, void *data);
void *wf_xds_conn_data(const wf_xds_conn *c);

#endif
