/*
 * resources-t.h: the typed form of every configuration kind weft reads.
 *
 * The loader (core/config/) fills these from YAML; the translator reads them.
 * Conventions, so that a reader never has to guess:
 *   - Every string is a NUL-terminated char * owned by the wf_config and
 *     freed with it (wf_config_free); NULL means "not set".
 *   - Lists are a pointer and a count: `T *v; size_t n_v;`.
 *   - Optional sub-messages are pointers, NULL when absent in the YAML.
 *   - Durations are int64 milliseconds, -1 when unset.  A non-zero duration
 *     below one millisecond ("500us") is rounded up to 1 so it stays
 *     distinguishable from zero.
 *   - Percentages are doubles in [0, 100]; a `_set` flag says whether the
 *     field was written.
 *   - Booleans are ints (0/1); where Istio distinguishes "unset" (a
 *     google.protobuf.BoolValue) there is a `_set` flag next to them.
 *   - uint32 protobuf wrappers (UInt32Value) are int64, -1 when unset.
 *   - Port numbers are uint32_t, 0 when unset.
 *   - Enums keep Istio's proto numbering so 0 is always the proto default.
 *   - Hosts are resolved as Istio does (a name without a dot becomes
 *     name.<ns>.svc.cluster.local); the string as written is kept in a
 *     parallel `*_raw` field.
 *   - wf_pos.file points at a path interned in the wf_config.
 *
 * Types only; functions are in config/config.h.
 */
#ifndef WF_CONFIG_RESOURCES_T_H
#define WF_CONFIG_RESOURCES_T_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Where a node was written; line and col are 1-based, 0 when unknown. */
typedef struct wf_pos {
    const char *file;
    int line, col;
} wf_pos;

/* One entry of a string map (labels, annotations, header sets...). */
typedef struct wf_kv {
    char *key;
    char *value;
    wf_pos pos; /* of the key */
} wf_kv;

/* metadata: common to every resource. */
typedef struct wf_meta {
    char *name;
    char *namespace_; /* "default" when not written */
    wf_kv *labels;
    size_t n_labels;
    wf_kv *annotations;
    size_t n_annotations;
    wf_pos pos;        /* of the document (its top-level mapping) */
    wf_pos name_pos;   /* of metadata.name (or of the document) */
    char *api_version; /* as written, e.g. "networking.istio.io/v1beta1" */
    wf_pos spec_pos;   /* of spec (or of the document when spec is absent) */
} wf_meta;

/* {matchLabels: {...}} as used by workloadSelector and selector. */
typedef struct wf_selector {
    wf_kv *match_labels;
    size_t n_match_labels;
    wf_pos pos;
} wf_selector;

/* ---- StringMatch ------------------------------------------------------ */

typedef enum wf_sm_kind {
    WF_SM_NONE = 0, /* not set (for a header map entry: presence match, "{}") */
    WF_SM_EXACT = 1,
    WF_SM_PREFIX = 2,
    WF_SM_REGEX = 3, /* RE2 syntax; checked with PCRE2 at load */
} wf_sm_kind;

typedef struct wf_string_match {
    wf_sm_kind kind;
    char *value;
    wf_pos pos;
} wf_string_match;

/* A map entry name -> StringMatch (headers, withoutHeaders, queryParams). */
typedef struct wf_named_match {
    char *name;
    wf_string_match match;
    wf_pos pos; /* of the key */
} wf_named_match;

/* ---- VirtualService ---------------------------------------------------- */

typedef struct wf_destination {
    char *host;     /* resolved FQDN (or as written when it has a dot / is "*") */
    char *host_raw; /* as written */
    char *subset;   /* NULL when none */
    uint32_t port;  /* port.number; 0 when unset */
    wf_pos pos, host_pos, subset_pos, port_pos;
} wf_destination;

typedef struct wf_header_ops {
    wf_kv *set;
    size_t n_set;
    wf_kv *add;
    size_t n_add;
    char **remove;
    size_t n_remove;
} wf_header_ops;

typedef struct wf_headers {
    wf_header_ops request, response;
    wf_pos pos;
} wf_headers;

typedef struct wf_http_match {
    char *name;
    wf_string_match uri, scheme, method, authority;
    wf_named_match *headers;
    size_t n_headers;
    wf_named_match *without_headers;
    size_t n_without_headers;
    wf_named_match *query_params;
    size_t n_query_params;
    uint32_t port; /* 0 when unset */
    wf_kv *source_labels;
    size_t n_source_labels;
    char **gateways; /* resolved to "ns/name" (or "mesh") */
    size_t n_gateways;
    char *source_namespace;
    int ignore_uri_case;
    char *stat_prefix;
    wf_pos pos;
} wf_http_match;

typedef struct wf_http_route_destination {
    wf_destination destination;
    int weight; /* 0 when unset (proto3); Istio: a lone destination gets 100 */
    wf_headers *headers;
    wf_pos pos, weight_pos;
} wf_http_route_destination;

typedef enum wf_redirect_port_sel {
    WF_REDIRECT_PORT_FROM_PROTOCOL_DEFAULT = 0,
    WF_REDIRECT_PORT_FROM_REQUEST_PORT = 1,
} wf_redirect_port_sel;

typedef struct wf_http_redirect {
    char *uri;
    char *authority;
    uint32_t port; /* 0 when unset */
    int derive_port_set;
    wf_redirect_port_sel derive_port;
    char *scheme;
    uint32_t redirect_code; /* 301 when unset */
    wf_pos pos;
} wf_http_redirect;

typedef struct wf_http_direct_response {
    uint32_t status;
    int has_body;
    char *body_string; /* body.string, or NULL */
    char *body_bytes;  /* body.bytes as written (base64), or NULL */
    wf_pos pos;
} wf_http_direct_response;

typedef struct wf_delegate {
    char *name;
    char *namespace_; /* the VirtualService's namespace when not written */
    wf_pos pos;
} wf_delegate;

typedef struct wf_http_rewrite {
    char *uri;
    char *authority;
    char *uri_regex_match;   /* uriRegexRewrite.match */
    char *uri_regex_rewrite; /* uriRegexRewrite.rewrite */
    wf_pos pos;
} wf_http_rewrite;

typedef struct wf_http_retry {
    int attempts;
    int64_t per_try_timeout_ms;
    char *retry_on;
    int retry_remote_localities, retry_remote_localities_set;
    wf_pos pos;
} wf_http_retry;

typedef struct wf_fault_delay {
    int64_t fixed_delay_ms;
    double percentage;
    int percentage_set;
    int percent; /* deprecated integer percent; -1 when unset */
    wf_pos pos;
} wf_fault_delay;

typedef struct wf_fault_abort {
    int http_status; /* 0 when unset */
    char *grpc_status;
    char *http2_error;
    double percentage;
    int percentage_set;
    wf_pos pos;
} wf_fault_abort;

typedef struct wf_http_fault {
    wf_fault_delay *delay;
    wf_fault_abort *abort;
    wf_pos pos;
} wf_http_fault;

typedef struct wf_http_mirror {
    wf_destination destination;
    double percentage;
    int percentage_set;
    wf_pos pos;
} wf_http_mirror;

typedef enum wf_cors_preflight {
    WF_CORS_PREFLIGHT_UNSPECIFIED = 0,
    WF_CORS_PREFLIGHT_FORWARD = 1,
    WF_CORS_PREFLIGHT_IGNORE = 2,
} wf_cors_preflight;

typedef struct wf_cors_policy {
    wf_string_match *allow_origins;
    size_t n_allow_origins;
    char **allow_methods;
    size_t n_allow_methods;
    char **allow_headers;
    size_t n_allow_headers;
    char **expose_headers;
    size_t n_expose_headers;
    int64_t max_age_ms;
    int allow_credentials, allow_credentials_set;
    wf_cors_preflight unmatched_preflights;
    wf_pos pos;
} wf_cors_policy;

typedef struct wf_http_route {
    char *name;
    wf_http_match *match;
    size_t n_match;
    wf_http_route_destination *route;
    size_t n_route;
    wf_http_redirect *redirect;
    wf_http_direct_response *direct_response;
    wf_delegate *delegate;
    wf_http_rewrite *rewrite;
    int64_t timeout_ms;
    wf_http_retry *retries;
    wf_http_fault *fault;
    wf_destination *mirror;
    wf_http_mirror *mirrors;
    size_t n_mirrors;
    double mirror_percentage;
    int mirror_percentage_set;
    wf_cors_policy *cors_policy;
    wf_headers *headers;
    wf_pos pos;
} wf_http_route;

/* RouteDestination (TLS and TCP routes). */
typedef struct wf_route_destination {
    wf_destination destination;
    int weight;
    wf_pos pos, weight_pos;
} wf_route_destination;

typedef struct wf_tls_match {
    char **sni_hosts;
    size_t n_sni_hosts;
    char **destination_subnets;
    size_t n_destination_subnets;
    uint32_t port;
    wf_kv *source_labels;
    size_t n_source_labels;
    char **gateways;
    size_t n_gateways;
    char *source_namespace;
    wf_pos pos;
} wf_tls_match;

typedef struct wf_tls_route {
    wf_tls_match *match;
    size_t n_match;
    wf_route_destination *route;
    size_t n_route;
    wf_pos pos;
} wf_tls_route;

typedef struct wf_l4_match {
    char **destination_subnets;
    size_t n_destination_subnets;
    uint32_t port;
    char *source_subnet;
    wf_kv *source_labels;
    size_t n_source_labels;
    char **gateways;
    size_t n_gateways;
    char *source_namespace;
    wf_pos pos;
} wf_l4_match;

typedef struct wf_tcp_route {
    wf_l4_match *match;
    size_t n_match;
    wf_route_destination *route;
    size_t n_route;
    wf_pos pos;
} wf_tcp_route;

typedef struct wf_virtual_service {
    wf_meta meta;
    char **hosts; /* resolved */
    char **hosts_raw;
    size_t n_hosts;
    wf_pos hosts_pos; /* line 0 when hosts was left out (or empty) */
    char **gateways;  /* resolved to "ns/name", "mesh" kept */
    char **gateways_raw;
    size_t n_gateways;
    wf_http_route *http;
    size_t n_http;
    wf_tls_route *tls;
    size_t n_tls;
    wf_tcp_route *tcp;
    size_t n_tcp;
    char **export_to;
    size_t n_export_to;
} wf_virtual_service;

/* ---- DestinationRule --------------------------------------------------- */

typedef enum wf_lb_simple {
    WF_LB_UNSPECIFIED = 0,
    WF_LB_LEAST_CONN = 1, /* deprecated alias of LEAST_REQUEST in Istio */
    WF_LB_RANDOM = 2,
    WF_LB_PASSTHROUGH = 3,
    WF_LB_ROUND_ROBIN = 4,
    WF_LB_LEAST_REQUEST = 5,
} wf_lb_simple;

typedef enum wf_hash_kind {
    WF_HASH_NONE = 0,
    WF_HASH_HEADER = 1,    /* httpHeaderName */
    WF_HASH_COOKIE = 2,    /* httpCookie */
    WF_HASH_SOURCE_IP = 3, /* useSourceIp */
    WF_HASH_QUERY = 4,     /* httpQueryParameterName */
} wf_hash_kind;

typedef struct wf_consistent_hash {
    wf_hash_kind kind;
    char *header_name;
    char *cookie_name;
    char *cookie_path;
    int64_t cookie_ttl_ms;
    char *query_parameter_name;
    int use_ring_hash;         /* ringHash written */
    int64_t minimum_ring_size; /* ringHash.minimumRingSize or the deprecated field; -1 unset */
    int use_maglev;            /* maglev written */
    int use_source_ip;         /* useSourceIp as written */
    int64_t maglev_table_size; /* -1 unset */
    wf_pos pos;
} wf_consistent_hash;

typedef struct wf_locality_distribute {
    char *from;
    wf_kv *to;            /* locality -> weight as written (decimal string) */
    uint32_t *to_weights; /* parallel to `to` */
    size_t n_to;
    wf_pos pos;
} wf_locality_distribute;

typedef struct wf_locality_failover {
    char *from;
    char *to;
    wf_pos pos;
} wf_locality_failover;

typedef struct wf_locality_lb {
    wf_locality_distribute *distribute;
    size_t n_distribute;
    wf_locality_failover *failover;
    size_t n_failover;
    char **failover_priority;
    size_t n_failover_priority;
    int enabled, enabled_set;
    wf_pos pos;
} wf_locality_lb;

typedef struct wf_load_balancer {
    int simple_set;
    wf_lb_simple simple;
    wf_consistent_hash *consistent_hash;
    wf_locality_lb *locality_lb_setting;
    int64_t warmup_duration_ms; /* warmupDurationSecs; -1 unset */
    wf_pos pos;
} wf_load_balancer;

typedef struct wf_tcp_keepalive {
    int64_t probes;      /* -1 unset */
    int64_t time_ms;     /* -1 unset */
    int64_t interval_ms; /* -1 unset */
    wf_pos pos;
} wf_tcp_keepalive;

typedef struct wf_tcp_pool {
    int64_t max_connections; /* -1 unset */
    int64_t connect_timeout_ms;
    wf_tcp_keepalive *tcp_keepalive;
    int64_t max_connection_duration_ms;
    int64_t idle_timeout_ms;
    wf_pos pos;
} wf_tcp_pool;

typedef enum wf_h2_upgrade {
    WF_H2_UPGRADE_DEFAULT = 0,
    WF_H2_DO_NOT_UPGRADE = 1,
    WF_H2_UPGRADE = 2,
} wf_h2_upgrade;

typedef struct wf_http_pool {
    int64_t http1_max_pending_requests;  /* -1 unset */
    int64_t http2_max_requests;          /* -1 unset */
    int64_t max_requests_per_connection; /* -1 unset */
    int64_t max_retries;                 /* -1 unset */
    int64_t idle_timeout_ms;
    wf_h2_upgrade h2_upgrade_policy;
    int use_client_protocol;
    int64_t max_concurrent_streams; /* -1 unset */
    wf_pos pos;
} wf_http_pool;

typedef struct wf_connection_pool {
    wf_tcp_pool *tcp;
    wf_http_pool *http;
    wf_pos pos;
} wf_connection_pool;

typedef struct wf_outlier_detection {
    int split_external_local_origin_errors;
    int64_t consecutive_local_origin_failures; /* -1 unset */
    int64_t consecutive_gateway_errors;        /* -1 unset */
    int64_t consecutive_5xx_errors;            /* -1 unset */
    int64_t consecutive_errors;                /* deprecated; -1 unset */
    int64_t interval_ms;
    int64_t base_ejection_time_ms;
    int64_t max_ejection_percent; /* -1 unset (Istio default 10) */
    int64_t min_health_percent;   /* -1 unset (Istio default 0) */
    wf_pos pos;
} wf_outlier_detection;

typedef enum wf_client_tls_mode {
    WF_CLIENT_TLS_DISABLE = 0,
    WF_CLIENT_TLS_SIMPLE = 1,
    WF_CLIENT_TLS_MUTUAL = 2,
    WF_CLIENT_TLS_ISTIO_MUTUAL = 3,
} wf_client_tls_mode;

typedef struct wf_client_tls {
    wf_client_tls_mode mode;
    char *client_certificate;
    char *private_key;
    char *ca_certificates;
    char *credential_name;
    char **subject_alt_names;
    size_t n_subject_alt_names;
    char *sni;
    int insecure_skip_verify, insecure_skip_verify_set;
    char *ca_crl;
    wf_pos pos;
} wf_client_tls;

typedef struct wf_tunnel {
    char *protocol; /* "CONNECT" (default) or "POST" */
    char *target_host;
    uint32_t target_port;
    wf_pos pos;
} wf_tunnel;

typedef enum wf_proxy_protocol_version {
    WF_PROXY_PROTOCOL_V1 = 0,
    WF_PROXY_PROTOCOL_V2 = 1,
} wf_proxy_protocol_version;

typedef struct wf_proxy_protocol {
    wf_proxy_protocol_version version;
    wf_pos pos;
} wf_proxy_protocol;

typedef struct wf_port_traffic_policy {
    uint32_t port; /* port.number */
    wf_load_balancer *load_balancer;
    wf_connection_pool *connection_pool;
    wf_outlier_detection *outlier_detection;
    wf_client_tls *tls;
    wf_pos pos;
} wf_port_traffic_policy;

typedef struct wf_traffic_policy {
    wf_load_balancer *load_balancer;
    wf_connection_pool *connection_pool;
    wf_outlier_detection *outlier_detection;
    wf_client_tls *tls;
    wf_port_traffic_policy *port_level_settings;
    size_t n_port_level_settings;
    wf_tunnel *tunnel;
    wf_proxy_protocol *proxy_protocol;
    wf_pos pos;
} wf_traffic_policy;

typedef struct wf_subset {
    char *name;
    wf_kv *labels;
    size_t n_labels;
    wf_traffic_policy *traffic_policy;
    wf_pos pos, name_pos;
} wf_subset;

typedef struct wf_destination_rule {
    wf_meta meta;
    char *host; /* resolved */
    char *host_raw;
    wf_pos host_pos;
    wf_traffic_policy *traffic_policy;
    wf_subset *subsets;
    size_t n_subsets;
    char **export_to;
    size_t n_export_to;
    wf_selector *workload_selector;
} wf_destination_rule;

/* ---- WorkloadEntry / ServiceEntry ------------------------------------- */

/* The spec of a WorkloadEntry; also the shape of ServiceEntry endpoints. */
typedef struct wf_workload_entry_spec {
    char *address;
    wf_kv *ports;           /* name -> number as written (decimal) */
    uint32_t *port_numbers; /* parallel to `ports` */
    size_t n_ports;
    wf_kv *labels;
    size_t n_labels;
    char *network;
    char *locality;
    uint32_t weight; /* 0 = unset, meaning 1 */
    char *service_account;
    wf_pos pos;
} wf_workload_entry_spec;

typedef struct wf_workload_entry {
    wf_meta meta;
    wf_workload_entry_spec spec;
} wf_workload_entry;

typedef struct wf_port {
    uint32_t number;
    char *protocol; /* upper-case as written: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS */
    char *name;
    uint32_t target_port; /* 0 when unset */
    wf_pos pos;
} wf_port;

typedef enum wf_se_location {
    WF_SE_MESH_EXTERNAL = 0,
    WF_SE_MESH_INTERNAL = 1,
} wf_se_location;

typedef enum wf_se_resolution {
    WF_SE_RESOLUTION_NONE = 0,
    WF_SE_RESOLUTION_STATIC = 1,
    WF_SE_RESOLUTION_DNS = 2,
    WF_SE_RESOLUTION_DNS_ROUND_ROBIN = 3,
} wf_se_resolution;

typedef struct wf_service_entry {
    wf_meta meta;
    char **hosts; /* as written (Istio does not resolve ServiceEntry hosts) */
    size_t n_hosts;
    char **addresses;
    size_t n_addresses;
    wf_port *ports;
    size_t n_ports;
    wf_se_location location;
    wf_se_resolution resolution;
    wf_workload_entry_spec *endpoints;
    size_t n_endpoints;
    wf_selector *workload_selector; /* workloadSelector.labels in Istio's SE */
    char **export_to;
    size_t n_export_to;
    char **subject_alt_names;
    size_t n_subject_alt_names;
} wf_service_entry;

/* ---- Gateway ---------------------------------------------------------- */

typedef enum wf_server_tls_mode {
    WF_SERVER_TLS_PASSTHROUGH = 0,
    WF_SERVER_TLS_SIMPLE = 1,
    WF_SERVER_TLS_MUTUAL = 2,
    WF_SERVER_TLS_AUTO_PASSTHROUGH = 3,
    WF_SERVER_TLS_ISTIO_MUTUAL = 4,
    WF_SERVER_TLS_OPTIONAL_MUTUAL = 5,
} wf_server_tls_mode;

typedef enum wf_tls_version {
    WF_TLS_AUTO = 0,
    WF_TLSV1_0 = 1,
    WF_TLSV1_1 = 2,
    WF_TLSV1_2 = 3,
    WF_TLSV1_3 = 4,
} wf_tls_version;

typedef struct wf_server_tls {
    int https_redirect;
    wf_server_tls_mode mode;
    char *server_certificate;
    char *private_key;
    char *ca_certificates;
    char *ca_crl;
    char *credential_name;
    char **credential_names;
    size_t n_credential_names;
    char **subject_alt_names;
    size_t n_subject_alt_names;
    char **verify_certificate_spki;
    size_t n_verify_certificate_spki;
    char **verify_certificate_hash;
    size_t n_verify_certificate_hash;
    wf_tls_version min_protocol_version;
    wf_tls_version max_protocol_version;
    char **cipher_suites;
    size_t n_cipher_suites;
    wf_pos pos;
} wf_server_tls;

typedef struct wf_server {
    wf_port port;
    char *bind;
    char **hosts; /* "ns/host" or "host" as written */
    size_t n_hosts;
    wf_server_tls *tls;
    char *default_endpoint;
    char *name;
    wf_pos pos;
} wf_server;

typedef struct wf_gateway {
    wf_meta meta;
    wf_kv *selector; /* plain map, not matchLabels */
    size_t n_selector;
    wf_server *servers;
    size_t n_servers;
} wf_gateway;

/* ---- security.istio.io ----------------------------------------------- */

typedef struct wf_policy_target_ref {
    char *group;
    char *kind;
    char *name;
    char *namespace_;
    wf_pos pos;
} wf_policy_target_ref;

typedef enum wf_mtls_mode {
    WF_MTLS_UNSET = 0,
    WF_MTLS_DISABLE = 1,
    WF_MTLS_PERMISSIVE = 2,
    WF_MTLS_STRICT = 3,
} wf_mtls_mode;

typedef struct wf_port_mtls {
    uint32_t port;
    wf_mtls_mode mode;
    wf_pos pos;
} wf_port_mtls;

typedef struct wf_peer_authentication {
    wf_meta meta;
    wf_selector *selector;
    int mtls_set;
    wf_mtls_mode mtls_mode;
    wf_port_mtls *port_level_mtls;
    size_t n_port_level_mtls;
} wf_peer_authentication;

typedef struct wf_authz_source {
    char **principals;
    size_t n_principals;
    char **not_principals;
    size_t n_not_principals;
    char **request_principals;
    size_t n_request_principals;
    char **not_request_principals;
    size_t n_not_request_principals;
    char **namespaces;
    size_t n_namespaces;
    char **not_namespaces;
    size_t n_not_namespaces;
    char **ip_blocks;
    size_t n_ip_blocks;
    char **not_ip_blocks;
    size_t n_not_ip_blocks;
    char **remote_ip_blocks;
    size_t n_remote_ip_blocks;
    char **not_remote_ip_blocks;
    size_t n_not_remote_ip_blocks;
    char **service_accounts;
    size_t n_service_accounts;
    char **not_service_accounts;
    size_t n_not_service_accounts;
    wf_pos pos;
} wf_authz_source;

typedef struct wf_authz_operation {
    char **hosts;
    size_t n_hosts;
    char **not_hosts;
    size_t n_not_hosts;
    char **ports;
    size_t n_ports;
    char **not_ports;
    size_t n_not_ports;
    char **methods;
    size_t n_methods;
    char **not_methods;
    size_t n_not_methods;
    char **paths;
    size_t n_paths;
    char **not_paths;
    size_t n_not_paths;
    wf_pos pos;
} wf_authz_operation;

typedef struct wf_authz_condition {
    char *key;
    char **values;
    size_t n_values;
    char **not_values;
    size_t n_not_values;
    wf_pos pos;
} wf_authz_condition;

typedef struct wf_authz_rule {
    wf_authz_source *from; /* each is rules[].from[].source */
    size_t n_from;
    wf_authz_operation *to; /* each is rules[].to[].operation */
    size_t n_to;
    wf_authz_condition *when;
    size_t n_when;
    wf_pos pos;
} wf_authz_rule;

typedef enum wf_authz_action {
    WF_AUTHZ_ALLOW = 0,
    WF_AUTHZ_DENY = 1,
    WF_AUTHZ_AUDIT = 2,
    WF_AUTHZ_CUSTOM = 3,
} wf_authz_action;

typedef struct wf_authorization_policy {
    wf_meta meta;
    wf_selector *selector;
    wf_policy_target_ref *target_refs; /* targetRef and targetRefs together */
    size_t n_target_refs;
    wf_authz_rule *rules;
    size_t n_rules;
    wf_authz_action action;
    char *provider_name; /* provider.name, CUSTOM only */
} wf_authorization_policy;

typedef struct wf_jwt_header {
    char *name;
    char *prefix;
    wf_pos pos;
} wf_jwt_header;

typedef struct wf_claim_to_header {
    char *header;
    char *claim;
    wf_pos pos;
} wf_claim_to_header;

typedef struct wf_jwt_rule {
    char *issuer;
    char **audiences;
    size_t n_audiences;
    char *jwks_uri;
    char *jwks;
    wf_jwt_header *from_headers;
    size_t n_from_headers;
    char **from_params;
    size_t n_from_params;
    char **from_cookies;
    size_t n_from_cookies;
    char *output_payload_to_header;
    int forward_original_token;
    wf_claim_to_header *output_claim_to_headers;
    size_t n_output_claim_to_headers;
    int64_t timeout_ms;
    wf_pos pos;
} wf_jwt_rule;

typedef struct wf_request_authentication {
    wf_meta meta;
    wf_selector *selector;
    wf_policy_target_ref *target_refs;
    size_t n_target_refs;
    wf_jwt_rule *jwt_rules;
    size_t n_jwt_rules;
} wf_request_authentication;

/* ---- weft.io/v1alpha1 -------------------------------------------------- */

typedef enum wf_access_log_encoding {
    WF_ACCESS_LOG_TEXT = 0,
    WF_ACCESS_LOG_JSON = 1,
} wf_access_log_encoding;

typedef enum wf_outbound_mode {
    WF_OUTBOUND_ALLOW_ANY = 0,
    WF_OUTBOUND_REGISTRY_ONLY = 1,
} wf_outbound_mode;

typedef enum wf_custom_tag_kind {
    WF_TAG_LITERAL = 0,     /* literal.value */
    WF_TAG_ENVIRONMENT = 1, /* environment.name, environment.defaultValue */
    WF_TAG_HEADER = 2,      /* header.name, header.defaultValue */
} wf_custom_tag_kind;

typedef struct wf_custom_tag {
    char *tag;
    wf_custom_tag_kind kind;
    char *value;         /* literal value, or the env var / header name */
    char *default_value; /* environment/header defaultValue, or NULL */
    wf_pos pos;
} wf_custom_tag;

typedef struct wf_mesh_config {
    wf_meta meta;          /* name "" and namespace "" when no MeshConfig was given */
    int present;           /* a MeshConfig document was loaded */
    char *trust_domain;    /* "cluster.local" */
    char *root_namespace;  /* "istio-system" */
    char *access_log_file; /* "" = off, "/dev/stdout" etc. */
    wf_access_log_encoding access_log_encoding;
    char *access_log_format;     /* NULL = built-in default */
    int enable_tracing;          /* 0 */
    double tracing_sampling;     /* defaultConfig.tracing.sampling, percent; 1.0 */
    char *zipkin_address;        /* defaultConfig.tracing.zipkin.address, NULL */
    int64_t max_path_tag_length; /* -1 unset (Istio default 256) */
    wf_custom_tag *custom_tags;
    size_t n_custom_tags;
    wf_outbound_mode outbound_mode; /* outboundTrafficPolicy.mode; ALLOW_ANY */
    char **filter_chain;            /* built-in module names in order; ["router"] */
    size_t n_filter_chain;
    wf_pos filter_chain_pos;
} wf_mesh_config;

typedef enum wf_plugin_phase {
    WF_PHASE_UNSPECIFIED = 0, /* just before the router */
    WF_PHASE_AUTHN = 1,
    WF_PHASE_AUTHZ = 2,
    WF_PHASE_STATS = 3,
} wf_plugin_phase;

typedef struct wf_filter_plugin {
    wf_meta meta;
    wf_selector *selector;
    char *module; /* built-in module name, or a path to a .so */
    wf_pos module_pos;
    wf_plugin_phase phase;
    int priority;          /* 0 */
    json_t *plugin_config; /* owned (one reference); NULL when absent */
} wf_filter_plugin;

/* ---- The whole configuration ----------------------------------------- */

typedef struct wf_config {
    wf_virtual_service *virtual_services;
    size_t n_virtual_services;
    wf_destination_rule *destination_rules;
    size_t n_destination_rules;
    wf_service_entry *service_entries;
    size_t n_service_entries;
    wf_workload_entry *workload_entries;
    size_t n_workload_entries;
    wf_gateway *gateways;
    size_t n_gateways;
    wf_peer_authentication *peer_authentications;
    size_t n_peer_authentications;
    wf_authorization_policy *authorization_policies;
    size_t n_authorization_policies;
    wf_request_authentication *request_authentications;
    size_t n_request_authentications;
    wf_filter_plugin *filter_plugins;
    size_t n_filter_plugins;
    wf_mesh_config mesh; /* always present, defaults filled */
    char **files;        /* every file read, interned; wf_pos.file points here */
    size_t n_files;
    size_t n_resources; /* documents that held a resource, MeshConfig included */
} wf_config;

#endif /* WF_CONFIG_RESOURCES_T_H */
/* resources-t.h: complete */
