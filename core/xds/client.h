/*
 * client.h: the proxy's ADS client (Envoy's Aggregated Discovery Service,
 * state of the world), over the gRPC transport (grpc/grpc.h) to istiod.
 *
 * Two layers, like the server (xds/server.h):
 *   - The bookkeeping (wf_xdsc_*): what the client holds per type, what it
 *     has applied, which requests it owes after each response (ACK, NACK,
 *     EDS names), whether a complete bundle is ready to build, and what it
 *     sends again after a reconnect.  Pure functions of the state and their
 *     arguments, with no sockets and no clock, so they are unit-tested
 *     directly (tests/unit/xds_client_test.c).
 *   - The client (wf_xds_client_*): one ADS stream on a libuv loop,
 *     reconnected with exponential backoff and jitter while the owner keeps
 *     serving its last configuration.
 *
 * The protocol as the proxy plays it (shared/XDS.md, notes/xds-contract.md):
 * the first request of a stream carries the node; CDS and LDS are
 * subscribed with no names (wildcard), EDS with the names of the EDS
 * clusters held (eds_cluster_config.service_name, else the cluster name).
 * Every request carries, for its type, the version last applied and the
 * nonce last received on this stream.  A push is applied atomically: only
 * when listeners, clusters and the endpoints of every EDS cluster are all
 * held is the bundle {version_info, listeners, clusters, endpoints} handed
 * to the owner (the same bundle static mode builds from the translator).
 * Success ACKs every response not yet ACKed; failure NACKs the ones that
 * arrived since (error_detail = the owner's reason) and the owner keeps
 * serving the previous bundle.  What was received stays held (it is the
 * server's current view), so the next response of any type retries the
 * build with everything new and, if that is refused too, without the types
 * refused before (their applied content instead), so that a listener the
 * proxy cannot load does not hold back endpoint updates.  A new stream
 * starts again from what was applied.
 */
#ifndef WF_XDS_CLIENT_H
#define WF_XDS_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tls/tls.h"
#include "xds/codec.h"

#define WF_ADS_METHOD                                                                              \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

/* The types a proxy subscribes to, in the order a stream asks for them. */
typedef enum wf_xdsc_type {
    WF_XDSC_CDS = 0,
    WF_XDSC_EDS = 1,
    WF_XDSC_LDS = 2,
    WF_XDSC_NTYPES = 3,
} wf_xdsc_type;

/* WF_XDSC_* for a type URL, or -1. */
int wf_xdsc_type_of(const char *type_url);
const char *wf_xdsc_type_url(int type);
/* "CDS", "EDS", "LDS". */
const char *wf_xdsc_type_name(int type);

/* What became of the last response of a type on this stream. */
typedef enum wf_xdsc_status {
    WF_XDSC_NONE = 0,     /* no response on this stream yet */
    WF_XDSC_PENDING = 1,  /* held, waiting for a complete bundle: not answered yet */
    WF_XDSC_ACKED = 2,    /* part of the applied bundle, ACKed */
    WF_XDSC_NACKED = 3,   /* the bundle built with it was refused; NACKed (ACKed later if a
                             bundle that holds it is applied) */
    WF_XDSC_REJECTED = 4, /* could not be decoded: NACKed, never held */
} wf_xdsc_status;

typedef struct wf_xdsc_tstate {
    /* On the current stream. */
    char *nonce;            /* of the last response received; NULL before one */
    char *received_version; /* of the last response received */
    wf_xdsc_status status;
    int subscribed; /* a request for this type went out on this stream */
    /* Across streams. */
    json_t *held;          /* CDS/LDS: the array last received; EDS: object cluster_name ->
                              ClusterLoadAssignment, merged; NULL before any.  Resources are
                              held packed (util/jpack.h): a thousand
                              clusters take a tenth of the memory of their tree */
    char *held_version;    /* version of what is held */
    json_t *applied_held;  /* what was held when the applied bundle was built */
    char *applied_version; /* version of this type in the applied bundle; NULL before */
    char **names;          /* EDS: the names last requested, sorted; malloc'd */
    size_t n_names;
    int names_resend; /* EDS: names changed since the last response: the request may
                         have carried a nonce already stale, so it is sent again */
    char *last_nack;  /* reason of the last NACK, cleared by an ACK */
    uint64_t n_responses, n_acks, n_nacks;
} wf_xdsc_tstate;

typedef struct wf_xdsc {
    json_t *node;     /* sent in the first request of each stream (owned) */
    int node_sent;    /* on this stream */
    uint64_t streams; /* streams started */
    wf_xdsc_tstate t[WF_XDSC_NTYPES];
    json_t *applied;    /* what the last bundle the owner applied was made of (owned),
                           NULL before: version_info, listeners and clusters packed,
                           assignments (cluster_name -> packed assignment) */
    uint64_t n_applied; /* bundles applied (the owner was called and succeeded) */
    char *last_nack;    /* "LDS: reason" of the last NACK of any type */
    /* Requests owed, in order: the caller sends them (wf_xdsc_take). */
    wf_xds_request *out;
    size_t n_out, cap_out;
} wf_xdsc;

/* The owner's side of applying a bundle {version_info, listeners,
 * clusters, endpoints}.  bundle is a new object made for this call (the
 * owner may replace its members); the resources in it are trees unpacked
 * for this call only, in the JSON region (util/jarena.h): the owner keeps
 * nothing of them past the call (it copies what it keeps; JSON it makes
 * during the call comes from malloc), and must not modify them.  The
 * member "packed" ({clusters, endpoints}, packed) is shared with the
 * client's state and may be kept.  Returns 0 when applied, or -1 with a
 * one-line reason in err (sent as the NACK's error_detail). */
typedef int (*wf_xds_apply_fn)(json_t *bundle, void *ud, char *err, size_t errlen);

/* node: a new reference is taken.  Returns 0, -1 out of memory. */
int wf_xdsc_init(wf_xdsc *st, json_t *node);
void wf_xdsc_free(wf_xdsc *st);

/*
 * A new stream is up: forgets the last stream's nonces and unsent requests,
 * and what was received but never applied (the server sends it all again);
 * then queues the subscription: CDS and LDS (wildcard) and, when EDS
 * clusters are held, EDS with their names, each with the version applied
 * (empty before the first), the first with the node.  Returns 0 or -1.
 */
int wf_xdsc_stream_start(wf_xdsc *st);

/*
 * A decoded response.  Holds its resources (LDS/CDS replace, EDS merges by
 * cluster_name), queues an EDS request when a CDS response changed the EDS
 * names, and NACKs at once what cannot be held (an EDS resource without
 * cluster_name).  An EDS response that leaves a name without endpoints, or
 * that follows a change of names, is answered at once with the names again
 * (version applied, its nonce): a names request sent while that response
 * was on its way carried a stale nonce and was ignored by the server, and
 * holding the response back waiting for a complete bundle would wait
 * forever.  Returns 1 when a complete bundle with something new is
 * ready (call wf_xdsc_apply), 0 when not (or a type not subscribed to: it is
 * ignored), -1 out of memory.  r is only read.
 */
int wf_xdsc_response(wf_xdsc *st, const wf_xds_response *r);

/* A response that could not be decoded: NACKs it (nonce, err) at once and
 * keeps holding what was held.  type_url is the envelope's.  Returns 0, or
 * -1 (out of memory, or a type this client does not subscribe to). */
int wf_xdsc_reject(wf_xdsc *st, const char *type_url, const char *nonce, const char *err);

/* 1 when listeners and clusters are held and so are the endpoints of every
 * EDS cluster. */
int wf_xdsc_complete(const wf_xdsc *st);
/* 1 when complete and some response has not been answered yet. */
int wf_xdsc_due(const wf_xdsc *st);

/* The bundle of what is held: a new reference, NULL when incomplete or out
 * of memory.  Endpoints: the EDS assignment of each EDS cluster (renamed to
 * the cluster when its service_name differs) and the load_assignment of
 * the others; version_info "LDS/CDS/EDS versions". */
json_t *wf_xdsc_bundle(const wf_xdsc *st);

/*
 * When wf_xdsc_due: builds the bundle and calls apply (skipped, as a
 * success, when it equals the bundle applied last).  Refused while a type
 * NACKed earlier is held, it tries once more with that type's applied
 * content.  Success: each type used from what is held is applied at the
 * held version, and each of its responses not ACKed yet gets its ACK.
 * Failure: each pending response gets a NACK with apply's reason; the
 * previous bundle stays applied.  Returns 1 applied, 0 nothing due or
 * skipped as unchanged, -2 refused, -1 out of memory.
 */
int wf_xdsc_apply(wf_xdsc *st, wf_xds_apply_fn apply, void *ud);

/* The EDS names of clusters (a JSON array of Cluster): service_name or
 * name of each cluster of type EDS, sorted, unique.  *names and its strings
 * are malloc'd (free with wf_xdsc_names_free).  Returns the count, or -1. */
long wf_xdsc_eds_names(const json_t *clusters, char ***names);
void wf_xdsc_names_free(char **names, size_t n);

/* Takes the oldest queued request into *r (the caller frees it with
 * wf_xds_request_free).  Returns 1, or 0 when none is queued. */
int wf_xdsc_take(wf_xdsc *st, wf_xds_request *r);

/* The per-type part of /config_dump's "xds": {"LDS": {version, nonce,
 * acked, ...}, ..., "last_nack"}.  New reference. */
json_t *wf_xdsc_dump(const wf_xdsc *st);

/* Reconnect delay before attempt n (0-based): 100 ms doubling up to 10 s,
 * times a jitter factor in [0.75, 1.25] taken from rnd. */
uint64_t wf_xds_backoff_ms(unsigned attempt, uint32_t rnd);

/* ---- the node ---------------------------------------------------------- */

typedef struct wf_xds_node_info {
    const char *namespace_;      /* NULL = "default" */
    const char *service_account; /* NULL = "default" */
    const json_t *labels;        /* object of strings; NULL = none */
    const char *name;            /* NULL = <app label, first service name or "proxy">-<pid> */
    const char *instance_ips;    /* comma-separated IPs; NULL or "" = "127.0.0.1" */
    const char *outbound;        /* --outbound as given */
    const char *inbound;         /* --inbound as given */
    int app_port;                /* 0 = none */
    const char *app_protocol;    /* "http" (NULL), "http2", "grpc" */
    const char *const *services; /* "NAME:PORT" each (--service) */
    size_t n_services;
    long pid;
} wf_xds_node_info;

/* The Node of the contract (notes/xds-contract.md): id
 * sidecar~IP~NAME.NS~NS.svc.cluster.local, cluster, user agent and the
 * metadata istiod registers and translates from.  New reference, or NULL
 * with a reason in err (a bad --service or address). */
json_t *wf_xds_node(const wf_xds_node_info *ni, char *err, size_t errlen);

/* Parses "NAME:PORT" (NAME a DNS name: letters, digits, '-', '.'; PORT in
 * 1..65535).  Returns 0, or -1 with a reason in err. */
int wf_xds_parse_service(const char *s, char *name, size_t namelen, int *port, char *err,
                         size_t errlen);

/* ---- the client ------------------------------------------------------- */

typedef struct wf_xds_client wf_xds_client;

/* Starts the client on loop: it connects to server ("host:port") at once
 * and keeps a stream up until stopped.  node: a new reference is taken.
 * apply runs on the loop's thread.  NULL with a reason in err. */
wf_xds_client *wf_xds_client_start(uv_loop_t *loop, const char *server, json_t *node,
                                   wf_xds_apply_fn apply, void *ud, char *err, size_t errlen);
/* The same over mTLS: each connection presents the context tls_ctx returns
 * (a new reference, or NULL while there is no certificate yet: the attempt
 * is retried later) and requires istiod's certificate to carry tls_name
 * (e.g. "istiod.istio-system.svc"). */
wf_xds_client *wf_xds_client_start_tls(uv_loop_t *loop, const char *server, json_t *node,
                                       wf_tls_ctx *(*tls_ctx)(void), const char *tls_name,
                                       wf_xds_apply_fn apply, void *ud, char *err, size_t errlen);
/* Ends the stream and stops reconnecting; safe inside apply.  The client
 * frees itself once its handles are closed (keep running the loop). */
void wf_xds_client_stop(wf_xds_client *c);
/* /config_dump's "xds": server, connected, per type {version, nonce, acked,
 * ...}, last_nack.  New reference. */
json_t *wf_xds_client_dump(const wf_xds_client *c);
int wf_xds_client_connected(const wf_xds_client *c);

#endif
