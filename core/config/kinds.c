/*
 * kinds.c: the field tables of every Istio and weft message (see parse.h
 * for the engine), and the checks that involve more than one field of one
 * resource.  Checks across resources (subsets, delegates, duplicates) are
 * in config/load.c.
 *
 * Field names, enum values and defaults follow Istio's API reference.
 * Short hosts and gateway names are resolved here, while the resource's
 * namespace is at hand.
 */
#include "config/kinds.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- table-writing shorthands ------------------------------------------- */

/* clang-format off */
#define F_(n, t, T, m) .name = n, .type = t, .off = offsetof(T, m)
#define S(n, T, m, ...) {F_(n, WF__F_STR, T, m), __VA_ARGS__}
#define SL(n, T, m, ...) {F_(n, WF__F_STRLIST, T, m), .aux = WF__OFF(T, n_##m), __VA_ARGS__}
#define SLC(n, T, m, cnt, ...) {F_(n, WF__F_STRLIST, T, m), .aux = WF__OFF(T, cnt), __VA_ARGS__}
#define KV(n, T, m, ...) {F_(n, WF__F_KV, T, m), .aux = WF__OFF(T, n_##m), __VA_ARGS__}
#define KVN(n, T, m, cnt, nums, ...)                                                             \
    {F_(n, WF__F_KVU32, T, m), .aux = WF__OFF(T, cnt), .aux2 = WF__OFF(T, nums), __VA_ARGS__}
#define I(n, T, m, ...) {F_(n, WF__F_INT, T, m), __VA_ARGS__}
#define U(n, T, m, ...) {F_(n, WF__F_U32, T, m), __VA_ARGS__}
#define I64(n, T, m, ...) {F_(n, WF__F_I64, T, m), __VA_ARGS__}
#define B(n, T, m, ...) {F_(n, WF__F_BOOL, T, m), __VA_ARGS__}
#define BS(n, T, m, ...) {F_(n, WF__F_BOOL, T, m), .aux = WF__OFF(T, m##_set), __VA_ARGS__}
#define DUR(n, T, m, ...) {F_(n, WF__F_DUR, T, m), __VA_ARGS__}
#define DBL(n, T, m, ...) {F_(n, WF__F_DOUBLE, T, m), __VA_ARGS__}
#define EN(n, T, m, tab, ...) {F_(n, WF__F_ENUM, T, m), .sub = tab, __VA_ARGS__}
#define MSG(n, T, m, d, ...) {F_(n, WF__F_MSG, T, m), .sub = &d, __VA_ARGS__}
#define INL(n, T, m, d, ...) {F_(n, WF__F_INLINE, T, m), .sub = &d, __VA_ARGS__}
#define FLAT(n, d, ...) {.name = n, .type = WF__F_INLINE, .off = 0, .sub = &d, __VA_ARGS__}
#define ML(n, T, m, d, ...)                                                                  \
    {F_(n, WF__F_MSGLIST, T, m), .aux = WF__OFF(T, n_##m), .sub = &d, __VA_ARGS__}
#define SM(n, T, m, ...) {F_(n, WF__F_SMATCH, T, m), __VA_ARGS__}
#define SML(n, T, m, ...) {F_(n, WF__F_SMATCHLIST, T, m), .aux = WF__OFF(T, n_##m), __VA_ARGS__}
#define NM(n, T, m, ...) {F_(n, WF__F_NMATCH, T, m), .aux = WF__OFF(T, n_##m), __VA_ARGS__}
#define IGN(n) {.name = n, .type = WF__F_IGNORE}
#define ISTR(T, m) {.name = "", .type = WF__F_ISTR, .off = offsetof(T, m)}
#define ISTRL(T, m, cnt)                                                                     \
    {.name = "", .type = WF__F_ISTRLIST, .off = offsetof(T, m), .aux = WF__OFF(T, cnt)}
#define END {.type = WF__F_END}
#define POS(T, m) .pos = WF__OFF(T, m)
#define REQ .flags = WF__REQ
/* clang-format on */

/* ---- helpers for checks ------------------------------------------------- */

/* Reports at the value of `key` in map n (or at n), with `key` appended to
 * the current path. */
static void errk(wf__pctx *c, const wf_yn *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void errk(wf__pctx *c, const wf_yn *n, const char *key, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    const wf_yn *at = wf__yn_get(n, key);
    size_t mark = wf__path_key(c, key);

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wf__err(c, at ? at : n, "%s", msg);
    wf__path_pop(c, mark);
}

static int has(const wf_yn *n, const char *key)
{
    return !wf__yn_is_null(wf__yn_get(n, key));
}

char *wf_config_resolve_host(const char *host, const char *ns)
{
    char *r;
    size_t l;

    if (!host)
        return NULL;
    if (strchr(host, '.') || strcmp(host, "*") == 0 || !*host)
        return strdup(host);
    l = strlen(host) + strlen(ns) + sizeof(".svc.cluster.local") + 2;
    r = malloc(l);
    if (r)
        snprintf(r, l, "%s.%s.svc.cluster.local", host, ns);
    return r;
}

/* "mesh" and "ns/name" stay; a bare gateway name is in the resource's
 * namespace, as Istio reads it. */
static char *resolve_gateway(const char *gw, const char *ns)
{
    char *r;
    size_t l;

    if (strcmp(gw, "mesh") == 0 || strchr(gw, '/') || strchr(gw, '.'))
        return strdup(gw);
    l = strlen(gw) + strlen(ns) + 2;
    r = malloc(l);
    if (r)
        snprintf(r, l, "%s/%s", ns, gw);
    return r;
}

static void resolve_gateways_inplace(wf__pctx *c, char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *r = resolve_gateway(v[i], c->ns);
        if (r) {
            free(v[i]);
            v[i] = r;
        }
    }
}

static void check_host_syntax(wf__pctx *c, const wf_yn *list, size_t i, const char *h)
{
    const wf_yn *n = list && list->type == WF_YN_SEQ && i < list->n ? list->kids[i] : list;
    size_t mark = list && list->type == WF_YN_SEQ ? wf__path_idx(c, i) : c->plen;

    if (!*h)
        wf__err(c, n, "host must not be empty");
    else if (strchr(h, '/') || strchr(h, ' ') || strchr(h, ':'))
        wf__err(c, n,
                "invalid host \"%.100s\": a host is a DNS name, optionally with a leading "
                "\"*.\" wildcard (no scheme, path or port)",
                h);
    else if (strchr(h + 1, '*'))
        wf__err(c, n, "invalid host \"%.100s\": a wildcard is allowed only as the leading \"*\"",
                h);
    wf__path_pop(c, mark);
}

/* ---- enums ---------------------------------------------------------------- */

static const wf__enum e_lb[] = {{"UNSPECIFIED", WF_LB_UNSPECIFIED},
                                {"LEAST_CONN", WF_LB_LEAST_CONN},
                                {"RANDOM", WF_LB_RANDOM},
                                {"PASSTHROUGH", WF_LB_PASSTHROUGH},
                                {"ROUND_ROBIN", WF_LB_ROUND_ROBIN},
                                {"LEAST_REQUEST", WF_LB_LEAST_REQUEST},
                                {NULL, 0}};
static const wf__enum e_h2[] = {{"DEFAULT", WF_H2_UPGRADE_DEFAULT},
                                {"DO_NOT_UPGRADE", WF_H2_DO_NOT_UPGRADE},
                                {"UPGRADE", WF_H2_UPGRADE},
                                {NULL, 0}};
static const wf__enum e_ctls[] = {{"DISABLE", WF_CLIENT_TLS_DISABLE},
                                  {"SIMPLE", WF_CLIENT_TLS_SIMPLE},
                                  {"MUTUAL", WF_CLIENT_TLS_MUTUAL},
                                  {"ISTIO_MUTUAL", WF_CLIENT_TLS_ISTIO_MUTUAL},
                                  {NULL, 0}};
static const wf__enum e_pp[] = {
    {"V1", WF_PROXY_PROTOCOL_V1}, {"V2", WF_PROXY_PROTOCOL_V2}, {NULL, 0}};
static const wf__enum e_derive[] = {
    {"FROM_PROTOCOL_DEFAULT", WF_REDIRECT_PORT_FROM_PROTOCOL_DEFAULT},
    {"FROM_REQUEST_PORT", WF_REDIRECT_PORT_FROM_REQUEST_PORT},
    {NULL, 0}};
static const wf__enum e_preflight[] = {{"UNSPECIFIED", WF_CORS_PREFLIGHT_UNSPECIFIED},
                                       {"FORWARD", WF_CORS_PREFLIGHT_FORWARD},
                                       {"IGNORE", WF_CORS_PREFLIGHT_IGNORE},
                                       {NULL, 0}};
static const wf__enum e_loc[] = {
    {"MESH_EXTERNAL", WF_SE_MESH_EXTERNAL}, {"MESH_INTERNAL", WF_SE_MESH_INTERNAL}, {NULL, 0}};
static const wf__enum e_res[] = {{"NONE", WF_SE_RESOLUTION_NONE},
                                 {"STATIC", WF_SE_RESOLUTION_STATIC},
                                 {"DNS", WF_SE_RESOLUTION_DNS},
                                 {"DNS_ROUND_ROBIN", WF_SE_RESOLUTION_DNS_ROUND_ROBIN},
                                 {NULL, 0}};
static const wf__enum e_stls[] = {{"PASSTHROUGH", WF_SERVER_TLS_PASSTHROUGH},
                                  {"SIMPLE", WF_SERVER_TLS_SIMPLE},
                                  {"MUTUAL", WF_SERVER_TLS_MUTUAL},
                                  {"AUTO_PASSTHROUGH", WF_SERVER_TLS_AUTO_PASSTHROUGH},
                                  {"ISTIO_MUTUAL", WF_SERVER_TLS_ISTIO_MUTUAL},
                                  {"OPTIONAL_MUTUAL", WF_SERVER_TLS_OPTIONAL_MUTUAL},
                                  {NULL, 0}};
static const wf__enum e_tlsv[] = {{"TLS_AUTO", WF_TLS_AUTO}, {"TLSV1_0", WF_TLSV1_0},
                                  {"TLSV1_1", WF_TLSV1_1},   {"TLSV1_2", WF_TLSV1_2},
                                  {"TLSV1_3", WF_TLSV1_3},   {NULL, 0}};
static const wf__enum e_mtls[] = {{"UNSET", WF_MTLS_UNSET},
                                  {"DISABLE", WF_MTLS_DISABLE},
                                  {"PERMISSIVE", WF_MTLS_PERMISSIVE},
                                  {"STRICT", WF_MTLS_STRICT},
                                  {NULL, 0}};
static const wf__enum e_action[] = {{"ALLOW", WF_AUTHZ_ALLOW},
                                    {"DENY", WF_AUTHZ_DENY},
                                    {"AUDIT", WF_AUTHZ_AUDIT},
                                    {"CUSTOM", WF_AUTHZ_CUSTOM},
                                    {NULL, 0}};
static const wf__enum e_enc[] = {
    {"TEXT", WF_ACCESS_LOG_TEXT}, {"JSON", WF_ACCESS_LOG_JSON}, {NULL, 0}};
static const wf__enum e_outbound[] = {
    {"ALLOW_ANY", WF_OUTBOUND_ALLOW_ANY}, {"REGISTRY_ONLY", WF_OUTBOUND_REGISTRY_ONLY}, {NULL, 0}};
static const wf__enum e_phase[] = {{"UNSPECIFIED_PHASE", WF_PHASE_UNSPECIFIED},
                                   {"AUTHN", WF_PHASE_AUTHN},
                                   {"AUTHZ", WF_PHASE_AUTHZ},
                                   {"STATS", WF_PHASE_STATS},
                                   {NULL, 0}};

/* ---- metadata and selectors ------------------------------------------------ */

static const wf__field f_meta[] = {
    S("name", wf_meta, name, POS(wf_meta, name_pos)),
    S("namespace", wf_meta, namespace_),
    KV("labels", wf_meta, labels),
    KV("annotations", wf_meta, annotations),
    ISTR(wf_meta, api_version),
    /* Kubernetes bookkeeping, present in `kubectl get -o yaml` output. */
    IGN("uid"),
    IGN("resourceVersion"),
    IGN("generation"),
    IGN("creationTimestamp"),
    IGN("managedFields"),
    IGN("ownerReferences"),
    IGN("finalizers"),
    IGN("generateName"),
    IGN("deletionTimestamp"),
    IGN("deletionGracePeriodSeconds"),
    IGN("selfLink"),
    END,
};
const wf__msg wf__meta_msg = {sizeof(wf_meta), 0, f_meta, NULL};

static const wf__field f_sel_match[] = {
    KV("matchLabels", wf_selector, match_labels),
    END,
};
static const wf__msg m_sel_match = {sizeof(wf_selector), WF__OFF(wf_selector, pos), f_sel_match,
                                    NULL};

/* ServiceEntry's workloadSelector says `labels`, not `matchLabels`. */
static const wf__field f_sel_labels[] = {
    KV("labels", wf_selector, match_labels),
    END,
};
static const wf__msg m_sel_labels = {sizeof(wf_selector), WF__OFF(wf_selector, pos), f_sel_labels,
                                     NULL};

/* ---- VirtualService ------------------------------------------------------- */

static const wf__field f_dest_port[] = {
    U("number", wf_destination, port, .flags = WF__PORT, POS(wf_destination, port_pos)),
    END,
};
static const wf__msg m_dest_port = {0, 0, f_dest_port, NULL};

static void check_destination(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_destination *d = obj;

    if (d->host_raw) {
        check_host_syntax(c, wf__yn_get(n, "host"), 0, d->host_raw);
        free(d->host);
        d->host = wf_config_resolve_host(d->host_raw, c->ns);
    }
    if (d->subset && !*d->subset)
        errk(c, n, "subset", "subset must not be empty (leave it out for all endpoints)");
}

static const wf__field f_dest[] = {
    S("host", wf_destination, host_raw, REQ, POS(wf_destination, host_pos)),
    ISTR(wf_destination, host),
    S("subset", wf_destination, subset, POS(wf_destination, subset_pos)),
    FLAT("port", m_dest_port),
    END,
};
static const wf__msg m_dest = {sizeof(wf_destination), WF__OFF(wf_destination, pos), f_dest,
                               check_destination};

static const wf__field f_hops[] = {
    KV("set", wf_header_ops, set),
    KV("add", wf_header_ops, add),
    SL("remove", wf_header_ops, remove),
    END,
};
static const wf__msg m_hops = {sizeof(wf_header_ops), 0, f_hops, NULL};

static const wf__field f_headers[] = {
    INL("request", wf_headers, request, m_hops),
    INL("response", wf_headers, response, m_hops),
    END,
};
static const wf__msg m_headers = {sizeof(wf_headers), WF__OFF(wf_headers, pos), f_headers, NULL};

static void check_http_match(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_http_match *m = obj;

    (void)n;
    resolve_gateways_inplace(c, m->gateways, m->n_gateways);
    /* Istio matches query parameters only exactly or by regex. */
    for (size_t i = 0; i < m->n_query_params; i++)
        if (m->query_params[i].match.kind == WF_SM_PREFIX) {
            size_t mark = wf__path_key(c, "queryParams");
            const wf_pos *p = &m->query_params[i].match.pos;
            wf__path_key(c, m->query_params[i].name);
            wf__path_key(c, "prefix");
            c->errors++;
            wf__report(c->d, c->file, p->line, p->col, c->res, c->path,
                       "prefix is not supported for query parameters; use exact or regex");
            wf__path_pop(c, mark);
        }
}

static const wf__field f_http_match[] = {
    S("name", wf_http_match, name),
    SM("uri", wf_http_match, uri),
    SM("scheme", wf_http_match, scheme),
    SM("method", wf_http_match, method),
    SM("authority", wf_http_match, authority),
    NM("headers", wf_http_match, headers),
    NM("withoutHeaders", wf_http_match, without_headers),
    NM("queryParams", wf_http_match, query_params),
    U("port", wf_http_match, port, .flags = WF__PORT),
    KV("sourceLabels", wf_http_match, source_labels),
    SL("gateways", wf_http_match, gateways),
    S("sourceNamespace", wf_http_match, source_namespace),
    B("ignoreUriCase", wf_http_match, ignore_uri_case),
    S("statPrefix", wf_http_match, stat_prefix),
    END,
};
static const wf__msg m_http_match = {sizeof(wf_http_match), WF__OFF(wf_http_match, pos),
                                     f_http_match, check_http_match};

static void check_weight(wf__pctx *c, const wf_yn *n, int weight)
{
    if (weight < 0)
        errk(c, n, "weight", "weight %d is negative; weights are percentages 0..100", weight);
    else if (weight > 100)
        errk(c, n, "weight", "weight %d is over 100; weights are percentages 0..100", weight);
}

static void check_http_route_dest(wf__pctx *c, const wf_yn *n, void *obj)
{
    check_weight(c, n, ((wf_http_route_destination *)obj)->weight);
}

static const wf__field f_http_route_dest[] = {
    INL("destination", wf_http_route_destination, destination, m_dest, REQ),
    I("weight", wf_http_route_destination, weight, POS(wf_http_route_destination, weight_pos)),
    MSG("headers", wf_http_route_destination, headers, m_headers),
    END,
};
static const wf__msg m_http_route_dest = {sizeof(wf_http_route_destination),
                                          WF__OFF(wf_http_route_destination, pos),
                                          f_http_route_dest, check_http_route_dest};

static void check_redirect(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_http_redirect *r = obj;

    if (r->redirect_code < 300 || r->redirect_code > 399)
        errk(c, n, "redirectCode", "redirect code %u is not a 3xx status", r->redirect_code);
    if (r->port && r->derive_port_set)
        errk(c, n, "derivePort", "only one of port or derivePort may be set");
}

static const wf__field f_redirect[] = {
    S("uri", wf_http_redirect, uri),
    S("authority", wf_http_redirect, authority),
    U("port", wf_http_redirect, port, .flags = WF__PORT),
    EN("derivePort", wf_http_redirect, derive_port, e_derive,
       .aux = WF__OFF(wf_http_redirect, derive_port_set)),
    S("scheme", wf_http_redirect, scheme),
    U("redirectCode", wf_http_redirect, redirect_code, .def = 301),
    END,
};
static const wf__msg m_redirect = {sizeof(wf_http_redirect), WF__OFF(wf_http_redirect, pos),
                                   f_redirect, check_redirect};

static const wf__field f_body[] = {
    S("string", wf_http_direct_response, body_string),
    S("bytes", wf_http_direct_response, body_bytes),
    END,
};
static const wf__msg m_body = {0, 0, f_body, NULL};

static void check_direct_response(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_http_direct_response *r = obj;

    r->has_body = r->body_string || r->body_bytes;
    if (r->body_string && r->body_bytes)
        errk(c, n, "body", "only one of string or bytes may be set");
}

static const wf__field f_direct[] = {
    U("status", wf_http_direct_response, status, .flags = WF__REQ | WF__HTTPCODE),
    FLAT("body", m_body),
    END,
};
static const wf__msg m_direct = {sizeof(wf_http_direct_response),
                                 WF__OFF(wf_http_direct_response, pos), f_direct,
                                 check_direct_response};

static void check_delegate(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_delegate *d = obj;

    (void)n;
    if (!d->namespace_)
        d->namespace_ = strdup(c->ns);
}

static const wf__field f_delegate[] = {
    S("name", wf_delegate, name, REQ),
    S("namespace", wf_delegate, namespace_),
    END,
};
static const wf__msg m_delegate = {sizeof(wf_delegate), WF__OFF(wf_delegate, pos), f_delegate,
                                   check_delegate};

static const wf__field f_uri_regex[] = {
    S("match", wf_http_rewrite, uri_regex_match, REQ),
    S("rewrite", wf_http_rewrite, uri_regex_rewrite, REQ),
    END,
};
static void check_uri_regex(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_http_rewrite *r = obj;

    if (r->uri_regex_match) {
        size_t mark = wf__path_key(c, "match");
        wf__check_regex(c, wf__yn_get(n, "match"), r->uri_regex_match);
        wf__path_pop(c, mark);
    }
}
static const wf__msg m_uri_regex = {0, 0, f_uri_regex, check_uri_regex};

static void check_rewrite(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_http_rewrite *r = obj;

    if (r->uri && r->uri_regex_match)
        errk(c, n, "uriRegexRewrite", "only one of uri or uriRegexRewrite may be set");
}

static const wf__field f_rewrite[] = {
    S("uri", wf_http_rewrite, uri),
    S("authority", wf_http_rewrite, authority),
    FLAT("uriRegexRewrite", m_uri_regex),
    END,
};
static const wf__msg m_rewrite = {sizeof(wf_http_rewrite), WF__OFF(wf_http_rewrite, pos), f_rewrite,
                                  check_rewrite};

static const wf__field f_retry[] = {
    I("attempts", wf_http_retry, attempts, .flags = WF__NONNEG),
    DUR("perTryTimeout", wf_http_retry, per_try_timeout_ms),
    S("retryOn", wf_http_retry, retry_on),
    BS("retryRemoteLocalities", wf_http_retry, retry_remote_localities),
    END,
};
static const wf__msg m_retry = {sizeof(wf_http_retry), WF__OFF(wf_http_retry, pos), f_retry, NULL};

static const wf__field f_delay_pct[] = {
    DBL("value", wf_fault_delay, percentage, .flags = WF__PERCENT,
        .aux = WF__OFF(wf_fault_delay, percentage_set)),
    END,
};
static const wf__msg m_delay_pct = {0, 0, f_delay_pct, NULL};

static const wf__field f_delay[] = {
    DUR("fixedDelay", wf_fault_delay, fixed_delay_ms, REQ),
    FLAT("percentage", m_delay_pct),
    I("percent", wf_fault_delay, percent, .flags = WF__PERCENT, .def = -1),
    END,
};
static const wf__msg m_delay = {sizeof(wf_fault_delay), WF__OFF(wf_fault_delay, pos), f_delay,
                                NULL};

static const wf__field f_abort_pct[] = {
    DBL("value", wf_fault_abort, percentage, .flags = WF__PERCENT,
        .aux = WF__OFF(wf_fault_abort, percentage_set)),
    END,
};
static const wf__msg m_abort_pct = {0, 0, f_abort_pct, NULL};

static void check_abort(wf__pctx *c, const wf_yn *n, void *obj)
{
    int k = has(n, "httpStatus") + has(n, "grpcStatus") + has(n, "http2Error");

    (void)obj;
    if (k == 0)
        wf__err(c, n, "one of httpStatus, grpcStatus or http2Error is required");
    else if (k > 1)
        wf__err(c, n, "only one of httpStatus, grpcStatus or http2Error may be set");
}

static const wf__field f_abort[] = {
    I("httpStatus", wf_fault_abort, http_status, .flags = WF__HTTPCODE),
    S("grpcStatus", wf_fault_abort, grpc_status),
    S("http2Error", wf_fault_abort, http2_error),
    FLAT("percentage", m_abort_pct),
    END,
};
static const wf__msg m_abort = {sizeof(wf_fault_abort), WF__OFF(wf_fault_abort, pos), f_abort,
                                check_abort};

static void check_fault(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_http_fault *f = obj;

    if (!f->delay && !f->abort && !has(n, "delay") && !has(n, "abort"))
        wf__err(c, n, "one of delay or abort is required");
}

static const wf__field f_fault[] = {
    MSG("delay", wf_http_fault, delay, m_delay),
    MSG("abort", wf_http_fault, abort, m_abort),
    END,
};
static const wf__msg m_fault = {sizeof(wf_http_fault), WF__OFF(wf_http_fault, pos), f_fault,
                                check_fault};

static const wf__field f_mirror_pct[] = {
    DBL("value", wf_http_mirror, percentage, .flags = WF__PERCENT,
        .aux = WF__OFF(wf_http_mirror, percentage_set)),
    END,
};
static const wf__msg m_mirror_pct = {0, 0, f_mirror_pct, NULL};

static const wf__field f_mirror[] = {
    INL("destination", wf_http_mirror, destination, m_dest, REQ),
    FLAT("percentage", m_mirror_pct),
    END,
};
static const wf__msg m_mirror = {sizeof(wf_http_mirror), WF__OFF(wf_http_mirror, pos), f_mirror,
                                 NULL};

static const wf__field f_cors[] = {
    SML("allowOrigins", wf_cors_policy, allow_origins),
    SL("allowMethods", wf_cors_policy, allow_methods),
    SL("allowHeaders", wf_cors_policy, allow_headers),
    SL("exposeHeaders", wf_cors_policy, expose_headers),
    DUR("maxAge", wf_cors_policy, max_age_ms),
    BS("allowCredentials", wf_cors_policy, allow_credentials),
    EN("unmatchedPreflights", wf_cors_policy, unmatched_preflights, e_preflight),
    END,
};
static const wf__msg m_cors = {sizeof(wf_cors_policy), WF__OFF(wf_cors_policy, pos), f_cors, NULL};

static const wf__field f_route_pct[] = {
    DBL("value", wf_http_route, mirror_percentage, .flags = WF__PERCENT,
        .aux = WF__OFF(wf_http_route, mirror_percentage_set)),
    END,
};
static const wf__msg m_route_pct = {0, 0, f_route_pct, NULL};

/* Istio's rule: with more than one weighted destination, the weights are
 * percentages and must add up to 100. */
static void check_weights(wf__pctx *c, const wf_yn *n, const int *weights, size_t count)
{
    long sum = 0;
    size_t weighted = 0;
    const wf_yn *list = wf__yn_get(n, "route");

    for (size_t i = 0; i < count; i++) {
        int w = weights[i];
        if (w != 0)
            weighted++;
        sum += w;
    }
    if (weighted > 1 && sum != 100) {
        size_t mark = wf__path_key(c, "route");
        wf__err(c, list,
                "weights add up to %ld; with more than one weighted destination they "
                "must add up to 100",
                sum);
        wf__path_pop(c, mark);
    }
}

static void check_http_route(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_http_route *r = obj;
    int *w;

    if (!r->n_route && !r->redirect && !r->direct_response && !r->delegate && !has(n, "route") &&
        !has(n, "redirect") && !has(n, "directResponse") && !has(n, "delegate"))
        wf__err(c, n, "one of route, redirect, directResponse or delegate is required");
    if (has(n, "route") && has(n, "redirect"))
        errk(c, n, "redirect", "route and redirect cannot both be set");
    if (has(n, "directResponse") && (has(n, "route") || has(n, "redirect")))
        errk(c, n, "directResponse", "directResponse cannot be combined with route or redirect");
    if (has(n, "delegate") && (has(n, "route") || has(n, "redirect") || has(n, "directResponse")))
        errk(c, n, "delegate",
             "delegate cannot be combined with route, redirect or directResponse");
    if (has(n, "mirror") && has(n, "mirrors"))
        errk(c, n, "mirrors", "only one of mirror or mirrors may be set");
    if (r->n_route) {
        w = calloc(r->n_route, sizeof(*w));
        if (w) {
            for (size_t i = 0; i < r->n_route; i++)
                w[i] = r->route[i].weight;
            check_weights(c, n, w, r->n_route);
            free(w);
        }
    }
}

static const wf__field f_http_route[] = {
    S("name", wf_http_route, name),
    ML("match", wf_http_route, match, m_http_match),
    ML("route", wf_http_route, route, m_http_route_dest),
    MSG("redirect", wf_http_route, redirect, m_redirect),
    MSG("directResponse", wf_http_route, direct_response, m_direct),
    MSG("delegate", wf_http_route, delegate, m_delegate),
    MSG("rewrite", wf_http_route, rewrite, m_rewrite),
    DUR("timeout", wf_http_route, timeout_ms),
    MSG("retries", wf_http_route, retries, m_retry),
    MSG("fault", wf_http_route, fault, m_fault),
    MSG("mirror", wf_http_route, mirror, m_dest),
    ML("mirrors", wf_http_route, mirrors, m_mirror),
    FLAT("mirrorPercentage", m_route_pct),
    MSG("corsPolicy", wf_http_route, cors_policy, m_cors),
    MSG("headers", wf_http_route, headers, m_headers),
    END,
};
static const wf__msg m_http_route = {sizeof(wf_http_route), WF__OFF(wf_http_route, pos),
                                     f_http_route, check_http_route};

static void check_route_dest(wf__pctx *c, const wf_yn *n, void *obj)
{
    check_weight(c, n, ((wf_route_destination *)obj)->weight);
}

static const wf__field f_route_dest[] = {
    INL("destination", wf_route_destination, destination, m_dest, REQ),
    I("weight", wf_route_destination, weight, POS(wf_route_destination, weight_pos)),
    END,
};
static const wf__msg m_route_dest = {sizeof(wf_route_destination),
                                     WF__OFF(wf_route_destination, pos), f_route_dest,
                                     check_route_dest};

static void check_tls_match(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_tls_match *m = obj;

    (void)n;
    resolve_gateways_inplace(c, m->gateways, m->n_gateways);
}

static const wf__field f_tls_match[] = {
    SL("sniHosts", wf_tls_match, sni_hosts, REQ),
    SL("destinationSubnets", wf_tls_match, destination_subnets),
    U("port", wf_tls_match, port, .flags = WF__PORT),
    KV("sourceLabels", wf_tls_match, source_labels),
    SL("gateways", wf_tls_match, gateways),
    S("sourceNamespace", wf_tls_match, source_namespace),
    END,
};
static const wf__msg m_tls_match = {sizeof(wf_tls_match), WF__OFF(wf_tls_match, pos), f_tls_match,
                                    check_tls_match};

static void check_tls_route(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_tls_route *r = obj;
    int *w = r->n_route ? calloc(r->n_route, sizeof(*w)) : NULL;

    if (w) {
        for (size_t i = 0; i < r->n_route; i++)
            w[i] = r->route[i].weight;
        check_weights(c, n, w, r->n_route);
        free(w);
    }
}

static const wf__field f_tls_route[] = {
    ML("match", wf_tls_route, match, m_tls_match, REQ),
    ML("route", wf_tls_route, route, m_route_dest, REQ),
    END,
};
static const wf__msg m_tls_route = {sizeof(wf_tls_route), WF__OFF(wf_tls_route, pos), f_tls_route,
                                    check_tls_route};

static void check_l4_match(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_l4_match *m = obj;

    (void)n;
    resolve_gateways_inplace(c, m->gateways, m->n_gateways);
}

static const wf__field f_l4_match[] = {
    SL("destinationSubnets", wf_l4_match, destination_subnets),
    U("port", wf_l4_match, port, .flags = WF__PORT),
    S("sourceSubnet", wf_l4_match, source_subnet),
    KV("sourceLabels", wf_l4_match, source_labels),
    SL("gateways", wf_l4_match, gateways),
    S("sourceNamespace", wf_l4_match, source_namespace),
    END,
};
static const wf__msg m_l4_match = {sizeof(wf_l4_match), WF__OFF(wf_l4_match, pos), f_l4_match,
                                   check_l4_match};

static void check_tcp_route(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_tcp_route *r = obj;
    int *w = r->n_route ? calloc(r->n_route, sizeof(*w)) : NULL;

    if (w) {
        for (size_t i = 0; i < r->n_route; i++)
            w[i] = r->route[i].weight;
        check_weights(c, n, w, r->n_route);
        free(w);
    }
}

static const wf__field f_tcp_route[] = {
    ML("match", wf_tcp_route, match, m_l4_match),
    ML("route", wf_tcp_route, route, m_route_dest, REQ),
    END,
};
static const wf__msg m_tcp_route = {sizeof(wf_tcp_route), WF__OFF(wf_tcp_route, pos), f_tcp_route,
                                    check_tcp_route};

static void check_vs(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_virtual_service *vs = obj;
    const wf_yn *hosts = wf__yn_get(n, "hosts");

    /* An empty list is the same as no hosts (a delegate, or an error
     * reported in load.c); a hosts field of the wrong type was reported
     * already and keeps its position so that it is not reported twice. */
    if (hosts && hosts->type == WF_YN_SEQ && hosts->n == 0)
        memset(&vs->hosts_pos, 0, sizeof(vs->hosts_pos));
    if (vs->n_hosts) {
        size_t mark = wf__path_key(c, "hosts");
        vs->hosts = calloc(vs->n_hosts, sizeof(char *));
        for (size_t i = 0; vs->hosts && i < vs->n_hosts; i++) {
            check_host_syntax(c, hosts, i, vs->hosts_raw[i]);
            vs->hosts[i] = wf_config_resolve_host(vs->hosts_raw[i], c->ns);
        }
        wf__path_pop(c, mark);
    }
    if (vs->n_gateways) {
        vs->gateways = calloc(vs->n_gateways, sizeof(char *));
        for (size_t i = 0; vs->gateways && i < vs->n_gateways; i++)
            vs->gateways[i] = resolve_gateway(vs->gateways_raw[i], c->ns);
    }
}

/* VirtualService: `hosts` is required except on a delegate, which is
 * checked across resources in load.c. */
static const wf__field f_vs[] = {
    SLC("hosts", wf_virtual_service, hosts_raw, n_hosts, POS(wf_virtual_service, hosts_pos)),
    ISTRL(wf_virtual_service, hosts, n_hosts),
    SLC("gateways", wf_virtual_service, gateways_raw, n_gateways),
    ISTRL(wf_virtual_service, gateways, n_gateways),
    ML("http", wf_virtual_service, http, m_http_route),
    ML("tls", wf_virtual_service, tls, m_tls_route),
    ML("tcp", wf_virtual_service, tcp, m_tcp_route),
    SL("exportTo", wf_virtual_service, export_to),
    END,
};
static const wf__msg m_vs = {sizeof(wf_virtual_service), 0, f_vs, check_vs};

/* ---- DestinationRule ----------------------------------------------------- */

static const wf__field f_cookie[] = {
    S("name", wf_consistent_hash, cookie_name, REQ),
    S("path", wf_consistent_hash, cookie_path),
    DUR("ttl", wf_consistent_hash, cookie_ttl_ms),
    END,
};
static const wf__msg m_cookie = {0, 0, f_cookie, NULL};

static const wf__field f_ring[] = {
    I64("minimumRingSize", wf_consistent_hash, minimum_ring_size),
    END,
};
static const wf__msg m_ring = {0, 0, f_ring, NULL};

static const wf__field f_maglev[] = {
    I64("tableSize", wf_consistent_hash, maglev_table_size),
    END,
};
static const wf__msg m_maglev = {0, 0, f_maglev, NULL};

static void check_chash(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_consistent_hash *h = obj;
    int k = 0;

    if (has(n, "httpHeaderName"))
        h->kind = WF_HASH_HEADER, k++;
    if (has(n, "httpCookie"))
        h->kind = WF_HASH_COOKIE, k++;
    if (has(n, "useSourceIp"))
        h->kind = WF_HASH_SOURCE_IP, k++;
    if (has(n, "httpQueryParameterName"))
        h->kind = WF_HASH_QUERY, k++;
    if (k == 0)
        wf__err(c, n,
                "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName "
                "is required");
    else if (k > 1)
        wf__err(c, n,
                "only one of httpHeaderName, httpCookie, useSourceIp or "
                "httpQueryParameterName may be set");
    h->use_ring_hash = has(n, "ringHash");
    h->use_maglev = has(n, "maglev");
    if (h->use_ring_hash && h->use_maglev)
        errk(c, n, "maglev", "only one of ringHash or maglev may be set");
}

static const wf__field f_chash[] = {
    S("httpHeaderName", wf_consistent_hash, header_name),
    FLAT("httpCookie", m_cookie),
    B("useSourceIp", wf_consistent_hash, use_source_ip),
    S("httpQueryParameterName", wf_consistent_hash, query_parameter_name),
    FLAT("ringHash", m_ring),
    FLAT("maglev", m_maglev),
    I64("minimumRingSize", wf_consistent_hash, minimum_ring_size),
    END,
};
static const wf__msg m_chash = {sizeof(wf_consistent_hash), WF__OFF(wf_consistent_hash, pos),
                                f_chash, check_chash};

static const wf__field f_distribute[] = {
    S("from", wf_locality_distribute, from),
    KVN("to", wf_locality_distribute, to, n_to, to_weights),
    END,
};
static const wf__msg m_distribute = {sizeof(wf_locality_distribute),
                                     WF__OFF(wf_locality_distribute, pos), f_distribute, NULL};

static const wf__field f_failover[] = {
    S("from", wf_locality_failover, from),
    S("to", wf_locality_failover, to),
    END,
};
static const wf__msg m_failover = {sizeof(wf_locality_failover), WF__OFF(wf_locality_failover, pos),
                                   f_failover, NULL};

static const wf__field f_locality[] = {
    ML("distribute", wf_locality_lb, distribute, m_distribute),
    ML("failover", wf_locality_lb, failover, m_failover),
    SL("failoverPriority", wf_locality_lb, failover_priority),
    BS("enabled", wf_locality_lb, enabled),
    END,
};
static const wf__msg m_locality = {sizeof(wf_locality_lb), WF__OFF(wf_locality_lb, pos), f_locality,
                                   NULL};

static void check_lb(wf__pctx *c, const wf_yn *n, void *obj)
{
    (void)obj;
    if (has(n, "simple") && has(n, "consistentHash"))
        errk(c, n, "consistentHash", "only one of simple or consistentHash may be set");
}

static const wf__field f_lb[] = {
    EN("simple", wf_load_balancer, simple, e_lb, .aux = WF__OFF(wf_load_balancer, simple_set)),
    MSG("consistentHash", wf_load_balancer, consistent_hash, m_chash),
    MSG("localityLbSetting", wf_load_balancer, locality_lb_setting, m_locality),
    DUR("warmupDurationSecs", wf_load_balancer, warmup_duration_ms),
    END,
};
static const wf__msg m_lb = {sizeof(wf_load_balancer), WF__OFF(wf_load_balancer, pos), f_lb,
                             check_lb};

static const wf__field f_keepalive[] = {
    I64("probes", wf_tcp_keepalive, probes),
    DUR("time", wf_tcp_keepalive, time_ms),
    DUR("interval", wf_tcp_keepalive, interval_ms),
    END,
};
static const wf__msg m_keepalive = {sizeof(wf_tcp_keepalive), WF__OFF(wf_tcp_keepalive, pos),
                                    f_keepalive, NULL};

static const wf__field f_tcp_pool[] = {
    I64("maxConnections", wf_tcp_pool, max_connections),
    DUR("connectTimeout", wf_tcp_pool, connect_timeout_ms),
    MSG("tcpKeepalive", wf_tcp_pool, tcp_keepalive, m_keepalive),
    DUR("maxConnectionDuration", wf_tcp_pool, max_connection_duration_ms),
    DUR("idleTimeout", wf_tcp_pool, idle_timeout_ms),
    END,
};
static const wf__msg m_tcp_pool = {sizeof(wf_tcp_pool), WF__OFF(wf_tcp_pool, pos), f_tcp_pool,
                                   NULL};

static const wf__field f_http_pool[] = {
    I64("http1MaxPendingRequests", wf_http_pool, http1_max_pending_requests),
    I64("http2MaxRequests", wf_http_pool, http2_max_requests),
    I64("maxRequestsPerConnection", wf_http_pool, max_requests_per_connection),
    I64("maxRetries", wf_http_pool, max_retries),
    DUR("idleTimeout", wf_http_pool, idle_timeout_ms),
    EN("h2UpgradePolicy", wf_http_pool, h2_upgrade_policy, e_h2),
    B("useClientProtocol", wf_http_pool, use_client_protocol),
    I64("maxConcurrentStreams", wf_http_pool, max_concurrent_streams),
    END,
};
static const wf__msg m_http_pool = {sizeof(wf_http_pool), WF__OFF(wf_http_pool, pos), f_http_pool,
                                    NULL};

static const wf__field f_pool[] = {
    MSG("tcp", wf_connection_pool, tcp, m_tcp_pool),
    MSG("http", wf_connection_pool, http, m_http_pool),
    END,
};
static const wf__msg m_pool = {sizeof(wf_connection_pool), WF__OFF(wf_connection_pool, pos), f_pool,
                               NULL};

static const wf__field f_outlier[] = {
    B("splitExternalLocalOriginErrors", wf_outlier_detection, split_external_local_origin_errors),
    I64("consecutiveLocalOriginFailures", wf_outlier_detection, consecutive_local_origin_failures),
    I64("consecutiveGatewayErrors", wf_outlier_detection, consecutive_gateway_errors),
    I64("consecutive5xxErrors", wf_outlier_detection, consecutive_5xx_errors),
    I64("consecutiveErrors", wf_outlier_detection, consecutive_errors),
    DUR("interval", wf_outlier_detection, interval_ms),
    DUR("baseEjectionTime", wf_outlier_detection, base_ejection_time_ms),
    I64("maxEjectionPercent", wf_outlier_detection, max_ejection_percent, .flags = WF__PERCENT),
    I64("minHealthPercent", wf_outlier_detection, min_health_percent, .flags = WF__PERCENT),
    END,
};
static const wf__msg m_outlier = {sizeof(wf_outlier_detection), WF__OFF(wf_outlier_detection, pos),
                                  f_outlier, NULL};

static void check_client_tls(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_client_tls *t = obj;

    if (t->mode == WF_CLIENT_TLS_MUTUAL && !t->credential_name &&
        (!t->client_certificate || !t->private_key))
        errk(c, n, "mode", "MUTUAL needs clientCertificate and privateKey, or credentialName");
}

static const wf__field f_client_tls[] = {
    EN("mode", wf_client_tls, mode, e_ctls),
    S("clientCertificate", wf_client_tls, client_certificate),
    S("privateKey", wf_client_tls, private_key),
    S("caCertificates", wf_client_tls, ca_certificates),
    S("credentialName", wf_client_tls, credential_name),
    SL("subjectAltNames", wf_client_tls, subject_alt_names),
    S("sni", wf_client_tls, sni),
    BS("insecureSkipVerify", wf_client_tls, insecure_skip_verify),
    S("caCrl", wf_client_tls, ca_crl),
    END,
};
static const wf__msg m_client_tls = {sizeof(wf_client_tls), WF__OFF(wf_client_tls, pos),
                                     f_client_tls, check_client_tls};

static const wf__field f_tunnel[] = {
    S("protocol", wf_tunnel, protocol),
    S("targetHost", wf_tunnel, target_host, REQ),
    U("targetPort", wf_tunnel, target_port, .flags = WF__REQ | WF__PORT),
    END,
};
static void check_tunnel(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_tunnel *t = obj;

    if (t->protocol && strcmp(t->protocol, "CONNECT") != 0 && strcmp(t->protocol, "POST") != 0)
        errk(c, n, "protocol", "invalid value \"%.64s\"; allowed values: CONNECT, POST",
             t->protocol);
}
static const wf__msg m_tunnel = {sizeof(wf_tunnel), WF__OFF(wf_tunnel, pos), f_tunnel,
                                 check_tunnel};

static const wf__field f_proxy_protocol[] = {
    EN("version", wf_proxy_protocol, version, e_pp),
    END,
};
static const wf__msg m_proxy_protocol = {sizeof(wf_proxy_protocol), WF__OFF(wf_proxy_protocol, pos),
                                         f_proxy_protocol, NULL};

static const wf__field f_ptp_port[] = {
    U("number", wf_port_traffic_policy, port, .flags = WF__REQ | WF__PORT),
    END,
};
static const wf__msg m_ptp_port = {0, 0, f_ptp_port, NULL};

static const wf__field f_ptp[] = {
    FLAT("port", m_ptp_port, REQ),
    MSG("loadBalancer", wf_port_traffic_policy, load_balancer, m_lb),
    MSG("connectionPool", wf_port_traffic_policy, connection_pool, m_pool),
    MSG("outlierDetection", wf_port_traffic_policy, outlier_detection, m_outlier),
    MSG("tls", wf_port_traffic_policy, tls, m_client_tls),
    END,
};
static const wf__msg m_ptp = {sizeof(wf_port_traffic_policy), WF__OFF(wf_port_traffic_policy, pos),
                              f_ptp, NULL};

static void check_tp(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_traffic_policy *tp = obj;
    const wf_yn *list = wf__yn_get(n, "portLevelSettings");

    uint32_t *ports;
    size_t *first;

    if (tp->n_port_level_settings < 2)
        return;
    ports = calloc(tp->n_port_level_settings, sizeof(*ports));
    for (size_t i = 0; ports && i < tp->n_port_level_settings; i++)
        ports[i] = tp->port_level_settings[i].port;
    first = ports ? wf__first_dups(NULL, ports, tp->n_port_level_settings) : NULL;
    for (size_t i = 0; first && i < tp->n_port_level_settings; i++) {
        size_t mark;
        if (first[i] == SIZE_MAX)
            continue;
        mark = wf__path_key(c, "portLevelSettings");
        wf__path_idx(c, i);
        wf__path_key(c, "port");
        wf__err(c, list && list->type == WF_YN_SEQ && i < list->n ? list->kids[i] : n,
                "port %u already has settings at portLevelSettings[%zu]", ports[i], first[i]);
        wf__path_pop(c, mark);
    }
    free(first);
    free(ports);
}

static const wf__field f_tp[] = {
    MSG("loadBalancer", wf_traffic_policy, load_balancer, m_lb),
    MSG("connectionPool", wf_traffic_policy, connection_pool, m_pool),
    MSG("outlierDetection", wf_traffic_policy, outlier_detection, m_outlier),
    MSG("tls", wf_traffic_policy, tls, m_client_tls),
    ML("portLevelSettings", wf_traffic_policy, port_level_settings, m_ptp),
    MSG("tunnel", wf_traffic_policy, tunnel, m_tunnel),
    MSG("proxyProtocol", wf_traffic_policy, proxy_protocol, m_proxy_protocol),
    END,
};
static const wf__msg m_tp = {sizeof(wf_traffic_policy), WF__OFF(wf_traffic_policy, pos), f_tp,
                             check_tp};

static const wf__field f_subset[] = {
    S("name", wf_subset, name, REQ, POS(wf_subset, name_pos)),
    KV("labels", wf_subset, labels),
    MSG("trafficPolicy", wf_subset, traffic_policy, m_tp),
    END,
};
static const wf__msg m_subset = {sizeof(wf_subset), WF__OFF(wf_subset, pos), f_subset, NULL};

static void check_dr(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_destination_rule *dr = obj;
    const char **names = dr->n_subsets > 1 ? calloc(dr->n_subsets, sizeof(*names)) : NULL;
    size_t *first;

    if (dr->host_raw) {
        check_host_syntax(c, wf__yn_get(n, "host"), 0, dr->host_raw);
        free(dr->host);
        dr->host = wf_config_resolve_host(dr->host_raw, c->ns);
    }
    for (size_t i = 0; names && i < dr->n_subsets; i++)
        names[i] = dr->subsets[i].name;
    first = names ? wf__first_dups(names, NULL, dr->n_subsets) : NULL;
    for (size_t i = 0; first && i < dr->n_subsets; i++) {
        const wf_subset *a, *b;
        size_t mark;
        if (first[i] == SIZE_MAX)
            continue;
        a = &dr->subsets[first[i]];
        b = &dr->subsets[i];
        mark = wf__path_key(c, "subsets");
        wf__path_idx(c, i);
        wf__path_key(c, "name");
        wf__err_pos(c, &b->name_pos,
                    "subset \"%.64s\" is defined twice (first at line %d column %d)", b->name,
                    a->name_pos.line, a->name_pos.col);
        wf__path_pop(c, mark);
    }
    free(first);
    free(names);
}

static const wf__field f_dr[] = {
    S("host", wf_destination_rule, host_raw, REQ, POS(wf_destination_rule, host_pos)),
    ISTR(wf_destination_rule, host),
    MSG("trafficPolicy", wf_destination_rule, traffic_policy, m_tp),
    ML("subsets", wf_destination_rule, subsets, m_subset),
    SL("exportTo", wf_destination_rule, export_to),
    MSG("workloadSelector", wf_destination_rule, workload_selector, m_sel_match),
    END,
};
static const wf__msg m_dr = {sizeof(wf_destination_rule), 0, f_dr, check_dr};

/* ---- WorkloadEntry and ServiceEntry --------------------------------------- */

static const wf__field f_we_spec[] = {
    S("address", wf_workload_entry_spec, address),
    KVN("ports", wf_workload_entry_spec, ports, n_ports, port_numbers, .flags = WF__PORT),
    KV("labels", wf_workload_entry_spec, labels),
    S("network", wf_workload_entry_spec, network),
    S("locality", wf_workload_entry_spec, locality),
    U("weight", wf_workload_entry_spec, weight),
    S("serviceAccount", wf_workload_entry_spec, service_account),
    END,
};
static const wf__msg m_we_spec = {sizeof(wf_workload_entry_spec),
                                  WF__OFF(wf_workload_entry_spec, pos), f_we_spec, NULL};

static const char *const protocols[] = {"HTTP",  "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO",
                                        "MYSQL", "REDIS", "TCP",  "TLS",      "UDP",   NULL};

static void check_protocol(wf__pctx *c, const wf_yn *n, const char *p)
{
    for (size_t i = 0; protocols[i]; i++)
        if (strcasecmp(p, protocols[i]) == 0)
            return;
    errk(c, n, "protocol",
         "invalid value \"%.64s\"; allowed values: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, "
         "MYSQL, REDIS, TCP, TLS, UDP",
         p);
}

static void check_port(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_port *p = obj;

    if (p->protocol)
        check_protocol(c, n, p->protocol);
}

static const wf__field f_se_port[] = {
    U("number", wf_port, number, .flags = WF__REQ | WF__PORT),
    S("protocol", wf_port, protocol),
    S("name", wf_port, name, REQ),
    U("targetPort", wf_port, target_port, .flags = WF__PORT),
    END,
};
static const wf__msg m_se_port = {sizeof(wf_port), WF__OFF(wf_port, pos), f_se_port, check_port};

/* Orders names with NULLs first, for qsort and bsearch. */
static int cmp_name(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;

    if (!x || !y)
        return (x != NULL) - (y != NULL);
    return strcmp(x, y);
}

static void check_se(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_service_entry *se = obj;
    const wf_yn *hosts = wf__yn_get(n, "hosts");
    const char **names;
    size_t *first;

    for (size_t i = 0; i < se->n_hosts; i++) {
        size_t mark = wf__path_key(c, "hosts");
        check_host_syntax(c, hosts, i, se->hosts[i]);
        wf__path_pop(c, mark);
    }
    names = se->n_ports ? calloc(se->n_ports, sizeof(*names)) : NULL;
    for (size_t i = 0; names && i < se->n_ports; i++)
        names[i] = se->ports[i].name;
    first = names ? wf__first_dups(names, NULL, se->n_ports) : NULL;
    for (size_t i = 0; first && i < se->n_ports; i++) {
        size_t mark;
        if (first[i] == SIZE_MAX)
            continue;
        mark = wf__path_key(c, "ports");
        wf__path_idx(c, i);
        wf__path_key(c, "name");
        wf__err_pos(c, &se->ports[i].pos, "port name \"%.64s\" is already used by ports[%zu]",
                    se->ports[i].name, first[i]);
        wf__path_pop(c, mark);
    }
    free(first);
    /* Sorted for the endpoint lookups below. */
    if (names)
        qsort(names, se->n_ports, sizeof(*names), cmp_name);
    if (se->n_endpoints && se->workload_selector)
        errk(c, n, "workloadSelector", "only one of endpoints or workloadSelector may be set");
    if (se->resolution == WF_SE_RESOLUTION_STATIC && !se->n_endpoints && !se->workload_selector)
        errk(c, n, "resolution",
             "resolution STATIC needs endpoints (or a workloadSelector) to send traffic to");
    for (size_t i = 0; names && i < se->n_endpoints; i++) {
        const wf_workload_entry_spec *ep = &se->endpoints[i];
        for (size_t k = 0; k < ep->n_ports; k++) {
            const char *key = ep->ports[k].key;
            size_t mark;
            if (bsearch(&key, names, se->n_ports, sizeof(*names), cmp_name))
                continue;
            mark = wf__path_key(c, "endpoints");
            wf__path_idx(c, i);
            wf__path_key(c, "ports");
            wf__path_key(c, key);
            wf__err_pos(c, &ep->ports[k].pos,
                        "endpoint port \"%.64s\" is not one of the ServiceEntry's port names", key);
            wf__path_pop(c, mark);
        }
    }
    free(names);
}

static const wf__field f_se[] = {
    SL("hosts", wf_service_entry, hosts, REQ),
    SL("addresses", wf_service_entry, addresses),
    ML("ports", wf_service_entry, ports, m_se_port, REQ),
    EN("location", wf_service_entry, location, e_loc),
    EN("resolution", wf_service_entry, resolution, e_res),
    ML("endpoints", wf_service_entry, endpoints, m_we_spec),
    MSG("workloadSelector", wf_service_entry, workload_selector, m_sel_labels),
    SL("exportTo", wf_service_entry, export_to),
    SL("subjectAltNames", wf_service_entry, subject_alt_names),
    END,
};
static const wf__msg m_se = {sizeof(wf_service_entry), 0, f_se, check_se};

/* ---- Gateway ------------------------------------------------------------- */

static const wf__field f_gw_port[] = {
    U("number", wf_port, number, .flags = WF__REQ | WF__PORT),
    S("protocol", wf_port, protocol, REQ),
    S("name", wf_port, name),
    U("targetPort", wf_port, target_port, .flags = WF__PORT),
    END,
};
static const wf__msg m_gw_port = {sizeof(wf_port), WF__OFF(wf_port, pos), f_gw_port, check_port};

static void check_server_tls(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_server_tls *t = obj;

    if ((t->mode == WF_SERVER_TLS_SIMPLE || t->mode == WF_SERVER_TLS_MUTUAL ||
         t->mode == WF_SERVER_TLS_OPTIONAL_MUTUAL) &&
        !t->credential_name && !t->n_credential_names &&
        (!t->server_certificate || !t->private_key) && !t->https_redirect)
        errk(c, n, "mode", "TLS mode %s needs credentialName, or serverCertificate and privateKey",
             e_stls[t->mode].name);
}

static const wf__field f_server_tls[] = {
    B("httpsRedirect", wf_server_tls, https_redirect),
    EN("mode", wf_server_tls, mode, e_stls),
    S("serverCertificate", wf_server_tls, server_certificate),
    S("privateKey", wf_server_tls, private_key),
    S("caCertificates", wf_server_tls, ca_certificates),
    S("caCrl", wf_server_tls, ca_crl),
    S("credentialName", wf_server_tls, credential_name),
    SL("credentialNames", wf_server_tls, credential_names),
    SL("subjectAltNames", wf_server_tls, subject_alt_names),
    SL("verifyCertificateSpki", wf_server_tls, verify_certificate_spki),
    SL("verifyCertificateHash", wf_server_tls, verify_certificate_hash),
    EN("minProtocolVersion", wf_server_tls, min_protocol_version, e_tlsv),
    EN("maxProtocolVersion", wf_server_tls, max_protocol_version, e_tlsv),
    SL("cipherSuites", wf_server_tls, cipher_suites),
    END,
};
static const wf__msg m_server_tls = {sizeof(wf_server_tls), WF__OFF(wf_server_tls, pos),
                                     f_server_tls, check_server_tls};

static const wf__field f_server[] = {
    INL("port", wf_server, port, m_gw_port, REQ),
    S("bind", wf_server, bind),
    SL("hosts", wf_server, hosts, REQ),
    MSG("tls", wf_server, tls, m_server_tls),
    S("defaultEndpoint", wf_server, default_endpoint),
    S("name", wf_server, name),
    END,
};
static const wf__msg m_server = {sizeof(wf_server), WF__OFF(wf_server, pos), f_server, NULL};

static const wf__field f_gw[] = {
    KV("selector", wf_gateway, selector),
    ML("servers", wf_gateway, servers, m_server, REQ),
    END,
};
static const wf__msg m_gw = {sizeof(wf_gateway), 0, f_gw, NULL};

/* ---- security.istio.io ------------------------------------------------------ */

static const wf__field f_target_ref[] = {
    S("group", wf_policy_target_ref, group),
    S("kind", wf_policy_target_ref, kind, REQ),
    S("name", wf_policy_target_ref, name, REQ),
    S("namespace", wf_policy_target_ref, namespace_),
    END,
};
static const wf__msg m_target_ref = {sizeof(wf_policy_target_ref),
                                     WF__OFF(wf_policy_target_ref, pos), f_target_ref, NULL};

static const wf__field f_mtls[] = {
    EN("mode", wf_peer_authentication, mtls_mode, e_mtls,
       .aux = WF__OFF(wf_peer_authentication, mtls_set)),
    END,
};
static const wf__msg m_mtls = {0, 0, f_mtls, NULL};

static const wf__field f_port_mtls[] = {
    EN("mode", wf_port_mtls, mode, e_mtls),
    END,
};
static const wf__msg m_port_mtls = {sizeof(wf_port_mtls), WF__OFF(wf_port_mtls, pos), f_port_mtls,
                                    NULL};

/* portLevelMtls is a map keyed by port number. */
static void parse_port_mtls(wf__pctx *c, const wf_yn *v, void *base, const wf__field *f)
{
    wf_peer_authentication *pa = base;

    (void)f;
    if (v->type != WF_YN_MAP) {
        wf__err(c, v, "expected a map of port numbers, got %s", wf__yn_kind(v));
        return;
    }
    for (size_t i = 0; i < wf__yn_pairs(v); i++) {
        const wf_yn *k = v->kids[2 * i], *val = v->kids[2 * i + 1];
        size_t mark;
        long port = 0;
        char *end = NULL;
        wf_port_mtls *slot;

        if (k->type != WF_YN_SCALAR || strlen(k->s) != k->len) {
            wf__err(c, k, "map keys must be port numbers, got %s", wf__yn_kind(k));
            continue;
        }
        mark = wf__path_key(c, k->s);
        if (k->s[0] >= '0' && k->s[0] <= '9')
            port = strtol(k->s, &end, 10);
        if (!end || *end || port < 1 || port > 65535) {
            wf__err(c, k, "\"%.64s\" is not a port number 1..65535", k->s);
            wf__path_pop(c, mark);
            continue;
        }
        slot = realloc(pa->port_level_mtls, (pa->n_port_level_mtls + 1) * sizeof(*slot));
        if (!slot) {
            wf__path_pop(c, mark);
            continue;
        }
        pa->port_level_mtls = slot;
        slot = &slot[pa->n_port_level_mtls++];
        memset(slot, 0, sizeof(*slot));
        wf__init_msg(&m_port_mtls, slot);
        slot->port = (uint32_t)port;
        wf__parse_msg(c, val, &m_port_mtls, slot);
        slot->pos = wf__pos(c, k);
        wf__path_pop(c, mark);
    }
}

static void free_port_mtls(void *base, const wf__field *f)
{
    wf_peer_authentication *pa = base;

    (void)f;
    free(pa->port_level_mtls);
    pa->port_level_mtls = NULL;
}

static const wf__custom c_port_mtls = {parse_port_mtls, free_port_mtls};

static void check_pa(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_peer_authentication *pa = obj;
    uint32_t *ports =
        pa->n_port_level_mtls > 1 ? calloc(pa->n_port_level_mtls, sizeof(*ports)) : NULL;
    size_t *first;

    for (size_t i = 0; ports && i < pa->n_port_level_mtls; i++)
        ports[i] = pa->port_level_mtls[i].port;
    first = ports ? wf__first_dups(NULL, ports, pa->n_port_level_mtls) : NULL;
    for (size_t i = 0; first && i < pa->n_port_level_mtls; i++) {
        size_t mark;
        char key[16];
        if (first[i] == SIZE_MAX)
            continue;
        mark = wf__path_key(c, "portLevelMtls");
        snprintf(key, sizeof(key), "%u", ports[i]);
        wf__path_key(c, key);
        wf__err_pos(c, &pa->port_level_mtls[i].pos, "port %u is listed twice", ports[i]);
        wf__path_pop(c, mark);
    }
    free(first);
    free(ports);
    if (pa->n_port_level_mtls && !pa->selector)
        errk(c, n, "portLevelMtls",
             "portLevelMtls needs a selector (it applies to workloads, "
             "not to a whole namespace)");
}

static const wf__field f_pa[] = {
    MSG("selector", wf_peer_authentication, selector, m_sel_match),
    FLAT("mtls", m_mtls),
    {.name = "portLevelMtls", .type = WF__F_CUSTOM, .sub = &c_port_mtls},
    END,
};
static const wf__msg m_pa = {sizeof(wf_peer_authentication), 0, f_pa, check_pa};

static const wf__field f_source[] = {
    SL("principals", wf_authz_source, principals),
    SL("notPrincipals", wf_authz_source, not_principals),
    SL("requestPrincipals", wf_authz_source, request_principals),
    SL("notRequestPrincipals", wf_authz_source, not_request_principals),
    SL("namespaces", wf_authz_source, namespaces),
    SL("notNamespaces", wf_authz_source, not_namespaces),
    SL("ipBlocks", wf_authz_source, ip_blocks),
    SL("notIpBlocks", wf_authz_source, not_ip_blocks),
    SL("remoteIpBlocks", wf_authz_source, remote_ip_blocks),
    SL("notRemoteIpBlocks", wf_authz_source, not_remote_ip_blocks),
    SL("serviceAccounts", wf_authz_source, service_accounts),
    SL("notServiceAccounts", wf_authz_source, not_service_accounts),
    END,
};
static const wf__msg m_source = {0, 0, f_source, NULL};
static const wf__field f_from[] = {
    FLAT("source", m_source, REQ),
    END,
};
static const wf__msg m_from = {sizeof(wf_authz_source), WF__OFF(wf_authz_source, pos), f_from,
                               NULL};

static const wf__field f_operation[] = {
    SL("hosts", wf_authz_operation, hosts),
    SL("notHosts", wf_authz_operation, not_hosts),
    SL("ports", wf_authz_operation, ports),
    SL("notPorts", wf_authz_operation, not_ports),
    SL("methods", wf_authz_operation, methods),
    SL("notMethods", wf_authz_operation, not_methods),
    SL("paths", wf_authz_operation, paths),
    SL("notPaths", wf_authz_operation, not_paths),
    END,
};
static const wf__msg m_operation = {0, 0, f_operation, NULL};
static const wf__field f_to[] = {
    FLAT("operation", m_operation, REQ),
    END,
};
static const wf__msg m_to = {sizeof(wf_authz_operation), WF__OFF(wf_authz_operation, pos), f_to,
                             NULL};

static const wf__field f_when[] = {
    S("key", wf_authz_condition, key, REQ),
    SL("values", wf_authz_condition, values),
    SL("notValues", wf_authz_condition, not_values),
    END,
};
static const wf__msg m_when = {sizeof(wf_authz_condition), WF__OFF(wf_authz_condition, pos), f_when,
                               NULL};

static const wf__field f_rule[] = {
    ML("from", wf_authz_rule, from, m_from),
    ML("to", wf_authz_rule, to, m_to),
    ML("when", wf_authz_rule, when, m_when),
    END,
};
static const wf__msg m_rule = {sizeof(wf_authz_rule), WF__OFF(wf_authz_rule, pos), f_rule, NULL};

static const wf__field f_provider[] = {
    S("name", wf_authorization_policy, provider_name, REQ),
    END,
};
static const wf__msg m_provider = {0, 0, f_provider, NULL};

static void check_ap(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_authorization_policy *ap = obj;

    if (ap->action == WF_AUTHZ_CUSTOM && !has(n, "provider"))
        errk(c, n, "provider", "action CUSTOM needs a provider");
    if (ap->action != WF_AUTHZ_CUSTOM && has(n, "provider"))
        errk(c, n, "provider", "provider is only allowed with action CUSTOM");
    if (ap->selector && ap->n_target_refs)
        errk(c, n, "selector", "only one of selector or targetRef(s) may be set");
}

static const wf__field f_ap[] = {
    MSG("selector", wf_authorization_policy, selector, m_sel_match),
    {F_(("targetRef"), WF__F_MSGONE, wf_authorization_policy, target_refs),
     .aux = WF__OFF(wf_authorization_policy, n_target_refs), .sub = &m_target_ref,
     .flags = WF__NOFREE},
    ML("targetRefs", wf_authorization_policy, target_refs, m_target_ref),
    ML("rules", wf_authorization_policy, rules, m_rule),
    EN("action", wf_authorization_policy, action, e_action),
    FLAT("provider", m_provider),
    END,
};
static const wf__msg m_ap = {sizeof(wf_authorization_policy), 0, f_ap, check_ap};

static const wf__field f_jwt_header[] = {
    S("name", wf_jwt_header, name, REQ),
    S("prefix", wf_jwt_header, prefix),
    END,
};
static const wf__msg m_jwt_header = {sizeof(wf_jwt_header), WF__OFF(wf_jwt_header, pos),
                                     f_jwt_header, NULL};

static const wf__field f_claim_header[] = {
    S("header", wf_claim_to_header, header, REQ),
    S("claim", wf_claim_to_header, claim, REQ),
    END,
};
static const wf__msg m_claim_header = {sizeof(wf_claim_to_header), WF__OFF(wf_claim_to_header, pos),
                                       f_claim_header, NULL};

static void check_jwt(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_jwt_rule *j = obj;

    if (j->jwks_uri && j->jwks)
        errk(c, n, "jwks", "only one of jwksUri or jwks may be set");
}

static const wf__field f_jwt[] = {
    S("issuer", wf_jwt_rule, issuer, REQ),
    SL("audiences", wf_jwt_rule, audiences),
    S("jwksUri", wf_jwt_rule, jwks_uri),
    S("jwks", wf_jwt_rule, jwks),
    ML("fromHeaders", wf_jwt_rule, from_headers, m_jwt_header),
    SL("fromParams", wf_jwt_rule, from_params),
    SL("fromCookies", wf_jwt_rule, from_cookies),
    S("outputPayloadToHeader", wf_jwt_rule, output_payload_to_header),
    B("forwardOriginalToken", wf_jwt_rule, forward_original_token),
    ML("outputClaimToHeaders", wf_jwt_rule, output_claim_to_headers, m_claim_header),
    DUR("timeout", wf_jwt_rule, timeout_ms),
    END,
};
static const wf__msg m_jwt = {sizeof(wf_jwt_rule), WF__OFF(wf_jwt_rule, pos), f_jwt, check_jwt};

static void check_ra(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_request_authentication *ra = obj;

    if (ra->selector && ra->n_target_refs)
        errk(c, n, "selector", "only one of selector or targetRef(s) may be set");
}

static const wf__field f_ra[] = {
    MSG("selector", wf_request_authentication, selector, m_sel_match),
    {F_(("targetRef"), WF__F_MSGONE, wf_request_authentication, target_refs),
     .aux = WF__OFF(wf_request_authentication, n_target_refs), .sub = &m_target_ref,
     .flags = WF__NOFREE},
    ML("targetRefs", wf_request_authentication, target_refs, m_target_ref),
    ML("jwtRules", wf_request_authentication, jwt_rules, m_jwt),
    END,
};
static const wf__msg m_ra = {sizeof(wf_request_authentication), 0, f_ra, check_ra};

/* ---- weft.io: MeshConfig and FilterPlugin ---------------------------------- */

static const wf__field f_tag_literal[] = {
    S("value", wf_custom_tag, value, REQ),
    END,
};
static const wf__msg m_tag_literal = {0, 0, f_tag_literal, NULL};
static const wf__field f_tag_named[] = {
    S("name", wf_custom_tag, value, REQ),
    S("defaultValue", wf_custom_tag, default_value),
    END,
};
static const wf__msg m_tag_named = {0, 0, f_tag_named, NULL};

static void check_tag(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_custom_tag *t = obj;
    int k = has(n, "literal") + has(n, "environment") + has(n, "header");

    if (has(n, "environment"))
        t->kind = WF_TAG_ENVIRONMENT;
    else if (has(n, "header"))
        t->kind = WF_TAG_HEADER;
    else
        t->kind = WF_TAG_LITERAL;
    if (k != 1)
        wf__err(c, n, "exactly one of literal, environment or header is required");
}

static const wf__field f_tag[] = {
    ISTR(wf_custom_tag, tag),
    FLAT("literal", m_tag_literal),
    FLAT("environment", m_tag_named),
    FLAT("header", m_tag_named),
    END,
};
static const wf__msg m_tag = {sizeof(wf_custom_tag), 0, f_tag, check_tag};

static void parse_custom_tags(wf__pctx *c, const wf_yn *v, void *base, const wf__field *f)
{
    wf_mesh_config *mc = base;
    unsigned char *dup;

    (void)f;
    if (v->type != WF_YN_MAP) {
        wf__err(c, v, "expected a map, got %s", wf__yn_kind(v));
        return;
    }
    dup = wf__dup_keys(c, v);
    for (size_t i = 0; i < wf__yn_pairs(v); i++) {
        const wf_yn *k = v->kids[2 * i], *val = v->kids[2 * i + 1];
        wf_custom_tag *slot;
        size_t mark;

        if (dup && dup[i])
            continue;
        if (k->type != WF_YN_SCALAR || strlen(k->s) != k->len) {
            wf__err(c, k, "map keys must be strings, got %s", wf__yn_kind(k));
            continue;
        }
        slot = realloc(mc->custom_tags, (mc->n_custom_tags + 1) * sizeof(*slot));
        if (!slot)
            continue;
        mc->custom_tags = slot;
        slot = &slot[mc->n_custom_tags++];
        memset(slot, 0, sizeof(*slot));
        slot->tag = strdup(k->s);
        slot->pos = wf__pos(c, k);
        mark = wf__path_key(c, k->s);
        if (wf__yn_is_null(val) || val->type != WF_YN_MAP)
            wf__err(c, val, "expected a map with literal, environment or header, got %s",
                    wf__yn_kind(val));
        else
            wf__parse_msg(c, val, &m_tag, slot);
        wf__path_pop(c, mark);
    }
    free(dup);
}

static void free_custom_tags(void *base, const wf__field *f)
{
    wf_mesh_config *mc = base;

    (void)f;
    for (size_t i = 0; i < mc->n_custom_tags; i++)
        wf__free_msg(&m_tag, &mc->custom_tags[i]);
    free(mc->custom_tags);
    mc->custom_tags = NULL;
}

static const wf__custom c_custom_tags = {parse_custom_tags, free_custom_tags};

static const wf__field f_zipkin[] = {
    S("address", wf_mesh_config, zipkin_address),
    END,
};
static const wf__msg m_zipkin = {0, 0, f_zipkin, NULL};

static const wf__field f_tracing[] = {
    DBL("sampling", wf_mesh_config, tracing_sampling, .flags = WF__PERCENT, .def = 1.0),
    FLAT("zipkin", m_zipkin),
    I64("maxPathTagLength", wf_mesh_config, max_path_tag_length),
    {.name = "customTags", .type = WF__F_CUSTOM, .sub = &c_custom_tags},
    END,
};
static const wf__msg m_tracing = {0, 0, f_tracing, NULL};

static const wf__field f_default_config[] = {
    FLAT("tracing", m_tracing),
    END,
};
static const wf__msg m_default_config = {0, 0, f_default_config, NULL};

static const wf__field f_outbound[] = {
    EN("mode", wf_mesh_config, outbound_mode, e_outbound),
    END,
};
static const wf__msg m_outbound = {0, 0, f_outbound, NULL};

static void check_mesh(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_mesh_config *mc = obj;
    const wf_yn *fc = wf__yn_get(n, "filterChain");

    if (fc && fc->type == WF_YN_SEQ && fc->n == 0)
        errk(c, n, "filterChain", "filterChain must name at least the router module");
    size_t *first = mc->n_filter_chain ? wf__first_dups((const char *const *)mc->filter_chain, NULL,
                                                        mc->n_filter_chain)
                                       : NULL;

    for (size_t i = 0; i < mc->n_filter_chain; i++) {
        size_t mark = wf__path_key(c, "filterChain");
        /* Items that were not strings are not in filter_chain: find the
         * node by counting only the string items. */
        const wf_yn *item = fc;
        for (size_t j = 0, k = 0; fc && fc->type == WF_YN_SEQ && j < fc->n; j++)
            if (fc->kids[j]->type == WF_YN_SCALAR && fc->kids[j]->vtype == WF_YV_STR && k++ == i) {
                item = fc->kids[j];
                wf__path_idx(c, j);
                break;
            }
        if (!*mc->filter_chain[i])
            wf__err(c, item, "module name must not be empty");
        if (first && first[i] != SIZE_MAX)
            wf__err(c, item, "module \"%.64s\" is listed twice (also at filterChain[%zu])",
                    mc->filter_chain[i], first[i]);
        wf__path_pop(c, mark);
    }
    free(first);
}

static const wf__field f_mesh[] = {
    S("trustDomain", wf_mesh_config, trust_domain),
    S("rootNamespace", wf_mesh_config, root_namespace),
    S("accessLogFile", wf_mesh_config, access_log_file),
    EN("accessLogEncoding", wf_mesh_config, access_log_encoding, e_enc),
    S("accessLogFormat", wf_mesh_config, access_log_format),
    B("enableTracing", wf_mesh_config, enable_tracing),
    FLAT("defaultConfig", m_default_config),
    FLAT("outboundTrafficPolicy", m_outbound),
    SL("filterChain", wf_mesh_config, filter_chain, POS(wf_mesh_config, filter_chain_pos)),
    END,
};
static const wf__msg m_mesh = {sizeof(wf_mesh_config), 0, f_mesh, check_mesh};

static void check_plugin(wf__pctx *c, const wf_yn *n, void *obj)
{
    wf_filter_plugin *p = obj;

    if (p->module && !*p->module)
        errk(c, n, "module", "module must not be empty");
}

static const wf__field f_plugin[] = {
    MSG("selector", wf_filter_plugin, selector, m_sel_match),
    S("module", wf_filter_plugin, module, REQ, POS(wf_filter_plugin, module_pos)),
    EN("phase", wf_filter_plugin, phase, e_phase),
    I("priority", wf_filter_plugin, priority),
    {F_("pluginConfig", WF__F_JSON, wf_filter_plugin, plugin_config)},
    END,
};
static const wf__msg m_plugin = {sizeof(wf_filter_plugin), 0, f_plugin, check_plugin};

/* ---- the kinds ----------------------------------------------------------- */

static const char *const v_net[] = {"v1", "v1beta1", "v1alpha3", NULL};
static const char *const v_sec[] = {"v1", "v1beta1", NULL};
static const char *const v_weft[] = {"v1alpha1", NULL};

#define KIND(name, grp, vers, spec, T, arr, cnt, specoff)                                          \
    {                                                                                              \
        name, grp, vers, &spec, sizeof(T), specoff, offsetof(wf_config, arr),                      \
            offsetof(wf_config, cnt), 0                                                            \
    }

const wf__kind wf__kinds[] = {
    KIND("VirtualService", "networking.istio.io", v_net, m_vs, wf_virtual_service, virtual_services,
         n_virtual_services, 0),
    KIND("DestinationRule", "networking.istio.io", v_net, m_dr, wf_destination_rule,
         destination_rules, n_destination_rules, 0),
    KIND("ServiceEntry", "networking.istio.io", v_net, m_se, wf_service_entry, service_entries,
         n_service_entries, 0),
    KIND("WorkloadEntry", "networking.istio.io", v_net, m_we_spec, wf_workload_entry,
         workload_entries, n_workload_entries, offsetof(wf_workload_entry, spec)),
    KIND("Gateway", "networking.istio.io", v_net, m_gw, wf_gateway, gateways, n_gateways, 0),
    KIND("PeerAuthentication", "security.istio.io", v_sec, m_pa, wf_peer_authentication,
         peer_authentications, n_peer_authentications, 0),
    KIND("AuthorizationPolicy", "security.istio.io", v_sec, m_ap, wf_authorization_policy,
         authorization_policies, n_authorization_policies, 0),
    KIND("RequestAuthentication", "security.istio.io", v_sec, m_ra, wf_request_authentication,
         request_authentications, n_request_authentications, 0),
    KIND("FilterPlugin", "weft.io", v_weft, m_plugin, wf_filter_plugin, filter_plugins,
         n_filter_plugins, 0),
    {"MeshConfig", "weft.io", v_weft, &m_mesh, sizeof(wf_mesh_config), 0, (size_t)-1, (size_t)-1,
     1},
};
const size_t wf__n_kinds = sizeof(wf__kinds) / sizeof(wf__kinds[0]);
