/*
 * codec.h: Envoy xDS v3 messages on the wire (protobuf, via protoc-c from
 * our own trimmed .proto files in proto/) to and from the JSON form the
 * translator produces and the proxy consumes (docs/resources.md).  One
 * translator, one data path: istiod encodes what wf_translate made, the
 * proxy decodes it back into the same JSON and builds its snapshot from it
 * exactly as static mode does.
 */
#ifndef WF_XDS_CODEC_H
#define WF_XDS_CODEC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define WF_TYPE_PREFIX "type.googleapis.com/"
#define WF_TYPE_LISTENER WF_TYPE_PREFIX "envoy.config.listener.v3.Listener"
#define WF_TYPE_ROUTE WF_TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration"
#define WF_TYPE_CLUSTER WF_TYPE_PREFIX "envoy.config.cluster.v3.Cluster"
#define WF_TYPE_ENDPOINT WF_TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment"
#define WF_TYPE_SECRET WF_TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret"

/* The name of a resource in JSON form (Listener/Cluster/RouteConfiguration
 * "name", ClusterLoadAssignment "cluster_name"), or NULL. */
const char *wf_xds_resource_name(const char *type_url, const json_t *res);

/* One resource: JSON form <-> serialized protobuf bytes.
 * encode: *out is malloc'd (caller frees).  Returns 0 or -1 with err.
 * decode: returns a new JSON reference, or NULL with err (what field was
 * wrong), used as a NACK's error_detail. */
int wf_xds_encode(const char *type_url, const json_t *res, uint8_t **out, size_t *len, char *err,
                  size_t errlen);
json_t *wf_xds_decode(const char *type_url, const uint8_t *buf, size_t len, char *err,
                      size_t errlen);

/* DiscoveryRequest, in plain C. Strings malloc'd; free with
 * wf_xds_request_free. */
typedef struct wf_xds_request {
    char *version_info;
    json_t *node; /* {"id", "cluster", "metadata": {...}, "locality": {...},
                     "user_agent_name", "user_agent_version"}, or NULL */
    char **resource_names;
    size_t n_resource_names;
    char *type_url;
    char *response_nonce;
    int has_error; /* error_detail present: a NACK */
    int error_code;
    char *error_message;
} wf_xds_request;

int wf_xds_request_encode(const wf_xds_request *r, uint8_t **out, size_t *len);
int wf_xds_request_decode(const uint8_t *buf, size_t len, wf_xds_request *r, char *err,
                          size_t errlen);
void wf_xds_request_free(wf_xds_request *r);

/* DiscoveryResponse: resources is a JSON array of resources in JSON form
 * (encoded as Any of type_url). */
typedef struct wf_xds_response {
    char *version_info;
    char *type_url;
    char *nonce;
    json_t *resources;
    char *control_plane; /* identifier, or NULL */
} wf_xds_response;

int wf_xds_response_encode(const wf_xds_response *r, uint8_t **out, size_t *len, char *err,
                           size_t errlen);
/* Decodes the envelope and every resource; a bad resource fails the whole
 * response with err naming it. */
int wf_xds_response_decode(const uint8_t *buf, size_t len, wf_xds_response *r, char *err,
                           size_t errlen);
void wf_xds_response_free(wf_xds_response *r);

/*
 * The envelope of an encoded DiscoveryResponse, read without decoding (or
 * copying) its resources: what a client needs to ACK it.  The strings
 * point into buf (not NUL-terminated; length 0 when absent).  Returns 0,
 * or -1 when the framing is broken.
 */
typedef struct wf_xds_envelope {
    const char *version_info, *type_url, *nonce;
    size_t version_len, type_url_len, nonce_len;
    size_t n_resources;
} wf_xds_envelope;

int wf_xds_response_envelope(const uint8_t *buf, size_t len, wf_xds_envelope *env);

/*
 * What a server needs of an encoded DiscoveryRequest to recognise a plain
 * ACK, read without decoding it (an EDS ACK repeats every name it is
 * subscribed to: thousands of strings per request otherwise).  Strings
 * point into buf (not NUL-terminated); resource names are counted and
 * walked with wf_xds_request_name.  Returns 0, or -1 when the framing is
 * broken (the full decode then says what is wrong).
 */
typedef struct wf_xds_request_view {
    const char *version_info, *type_url, *response_nonce;
    size_t version_len, type_url_len, nonce_len;
    size_t n_resource_names;
    int has_node, has_error;
    const uint8_t *buf;
    size_t len;
} wf_xds_request_view;

int wf_xds_request_peek(const uint8_t *buf, size_t len, wf_xds_request_view *v);
/* The next resource name from *pos (start at 0): returns 1 with it in
 * *name and *len, 0 when there is none left. */
int wf_xds_request_name(const wf_xds_request_view *v, size_t *pos, const char **name, size_t *len);

/*
 * A response's last fields, nonce (5) and control_plane (6), as bytes.
 * Appended to the encoding of the same response without them, they make
 * exactly the bytes of encoding the whole (protobuf writes fields in
 * number order), so a response shared by many streams is encoded once and
 * each stream appends its own nonce.  Writes into out (cap bytes) and
 * returns the length, or 0 when it does not fit (WF_XDS_TAIL_MAX does for
 * a nonce and identifier of up to 100 bytes each).  NULL or "" omits a
 * field, as the encoder does.
 */
#define WF_XDS_TAIL_MAX 210
size_t wf_xds_response_tail(const char *nonce, const char *control_plane, uint8_t *out, size_t cap);

/*
 * A DiscoveryResponse without nonce and control_plane (see
 * wf_xds_response_tail) from resources already encoded (wf_xds_encode):
 * version_info, each resource as an Any of type_url, type_url; the bytes
 * wf_xds_response_encode makes for the same resources.  res[i] and lens[i]
 * for i < n.  *out is malloc'd; offsets (n entries, or NULL) receives where
 * each resource's bytes start in it, so that parts of the response can be
 * sent again without encoding them again.  Returns 0, or -1 (out of
 * memory).
 */
int wf_xds_response_assemble(const char *version, const char *type_url, const uint8_t *const *res,
                             const size_t *lens, size_t n, uint8_t **out, size_t *len,
                             size_t *offsets);

#endif
