/*
 * translate.c: Istio resources plus one workload -> Envoy v3 resources as
 * JSON (docs/resources.md, "Translation rules").
 *
 * Order of work: build the service registry (ServiceEntry hosts x ports,
 * their endpoints, the identities they may present), pick the
 * DestinationRule and VirtualService of each service, then emit clusters
 * with their ClusterLoadAssignments and transport (auto mTLS, or the
 * rule's tls), the outbound listener (one virtual host per service host
 * and HTTP port), the inbound listener (one filter chain per transport the
 * workload's PeerAuthentication allows, peer_auth.c), and finally
 * version_info, a hash of everything else (unless p->no_version).
 *
 * For a proxyless gRPC client (role "grpc") the listeners are different:
 * one api_listener per service host and HTTP port, named "HOST:PORT" as
 * gRPC asks for it, whose inline route configuration holds that service's
 * routes only, written in the subset of the Envoy API gRPC C-core 1.51
 * accepts (no weft modules, gRPC's header matcher fields, clusters that
 * fetch their endpoints over ADS).  Services, clusters and endpoints are
 * computed by the same code as for sidecars.
 *
 * Memory: every scratch allocation of one translation is recorded in the
 * context and freed at the end; every JSON value is attached to the bundle
 * as soon as it is created.  A failure anywhere (out of memory, bad proxy
 * info) longjmps back to wf_translate, which then only has to free the
 * scratch list and the bundle.  Nothing survives the call but the bundle.
 */
#include "translate/translate.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "util/arena.h"
#include "util/log.h"

#define SVC_SUFFIX ".svc.cluster.local"
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define MODULE_TYPE_PREFIX "weft.io/module/"
#define TYPED_STRUCT "type.googleapis.com/xds.type.v3.TypedStruct"
#define HCM_NAME "envoy.filters.network.http_connection_manager"
#define HCM_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."             \
    "HttpConnectionManager"
/* The Envoy filters proxyless gRPC understands (by name and type). */
#define ROUTER_NAME "envoy.filters.http.router"
#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define FAULT_NAME "envoy.filters.http.fault"
#define FAULT_TYPE "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
/* Istio's retryOn when a VirtualService sets attempts without it; gRPC
 * acts on the gRPC status names in it (cancelled, unavailable). */
#define DEFAULT_RETRY_ON                                                                           \
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
/* mTLS (docs/resources.md, "TLS"). */
#define TLS_INSPECTOR_NAME "envoy.filters.listener.tls_inspector"
#define TLS_INSPECTOR_TYPE                                                                         \
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
#define TLS_SOCKET_NAME "envoy.transport_sockets.tls"
#define DOWNSTREAM_TLS_TYPE                                                                        \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define UPSTREAM_TLS_TYPE                                                                          \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
/* Opaque TCP and TLS passthrough (docs/resources.md, "TCP"). */
#define TCP_PROXY_NAME "envoy.filters.network.tcp_proxy"
#define TCP_PROXY_TYPE "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define DEFAULT_TCP_IDLE_MS (3600 * 1000)   /* Envoy's and Istio's: one hour */
#define DEFAULT_HTTP_IDLE_MS (3600 * 1000)  /* a connection without a request */
#define DEFAULT_STREAM_IDLE_MS (300 * 1000) /* an upgraded stream without a byte */
#define RAW_BUFFER_NAME "envoy.transport_sockets.raw_buffer"
#define RAW_BUFFER_TYPE                                                                            \
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
/* SDS names the proxy fills itself, as Istio's agent does: the workload's
 * certificate and the mesh's roots. */
#define SDS_CERT "default"
#define SDS_ROOTS "ROOTCA"
/* Where TLS origination finds trusted roots when caCertificates is unset. */
#define SYSTEM_ROOTS "/etc/ssl/certs/ca-certificates.crt"
/* The label Istio's injector puts on pods with a sidecar, and the endpoint
 * metadata key Envoy matches transport_socket_matches against. */
#define TLS_MODE_LABEL "security.istio.io/tlsMode"
#define TLS_MODE_ISTIO "istio"
#define SOCKET_MATCH_KEY "envoy.transport_socket_match"
#define DEFAULT_TRUST_DOMAIN "cluster.local"

/* ---- context -------------------------------------------------------------------------------- */

/* A list of IP literals (canonical form). */
typedef struct tr_addrs {
    char **v;
    size_t n;
} tr_addrs;

/* One place endpoints come from, its addresses already resolved. */
typedef struct tr_src {
    const wf_workload_entry_spec *spec; /* NULL: the service host itself (DNS) */
    tr_addrs ips;
} tr_src;

enum {
    PR_TCP,
    PR_HTTP,
    PR_HTTP2,
    PR_GRPC,
    PR_GRPC_WEB,
    PR_HTTP_PROXY,
    PR_HTTPS,
    PR_TLS,
    PR_OTHER, /* mongo, redis, mysql, thrift: plain clusters, relayed as TCP */
    PR_UDP,   /* a cluster, but nothing weft relays */
};

typedef struct tr_port {
    const wf_port *port;
    int proto;
} tr_port;

/* One service: a host of a ServiceEntry with all of the entry's ports. */
typedef struct tr_svc {
    const wf_service_entry *se;
    char *key; /* lower-cased host: order, lookups, names */
    tr_port *ports;
    size_t n_ports;
    size_t n_http;
    tr_src *srcs;
    size_t n_srcs;
    const wf_destination_rule *dr;
    const wf_virtual_service *vs;
    char **sans; /* ISTIO_MUTUAL: the identities its endpoints may present, sorted */
    size_t n_sans;
    int auto_mtls; /* without DestinationRule tls: mTLS to endpoints with a sidecar */
} tr_svc;

/* A name resolved once per translation. */
typedef struct tr_dns {
    char *name;
    tr_addrs ips;
} tr_dns;

typedef struct tr {
    jmp_buf jb;
    char *err;
    size_t errlen;
    const wf_config *cfg;
    const wf_proxy_info *p;
    int grpc;            /* role "grpc": a proxyless gRPC client */
    const char *ns;      /* the proxy's namespace */
    const char *root_ns; /* MeshConfig.rootNamespace */
    const char *td;      /* MeshConfig.trustDomain */
    const char *const *labels;
    size_t n_labels; /* pairs */
    wf_arena scratch; /* tr_alloc's: freed whole with the translation */
    tr_svc *svcs; /* sorted by key, unique keys */
    size_t n_svcs;
    tr_dns *dns;
    size_t n_dns, cap_dns;
    json_t *bundle;
    json_t *domains; /* set: domains already claimed by a virtual host */
    json_t *seen;    /* set: "ip:port" already in the current ClusterLoadAssignment */
    json_t *warned;  /* set: warnings already given in this translation */
    json_t *l4;      /* the TCP/TLS ports' listeners and claims (emit_l4_listeners) */
} tr;

static void fail(tr *t, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(tr *t, const char *fmt, ...)
{
    va_list ap;

    if (t->err && t->errlen) {
        va_start(ap, fmt);
        vsnprintf(t->err, t->errlen, fmt, ap);
        va_end(ap);
    }
    longjmp(t->jb, 1);
}

#define OOM(t) fail((t), "translate: out of memory")

void wf__translate_warn(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    wf_vlog(WF_LWARN, "translate", fmt, ap);
    va_end(ap);
}
#define warn wf__translate_warn

/* ---- scratch memory ------------------------------------------------------------------------- */

/* Returns n zeroed bytes that live until the end of the translation. */
static void *tr_alloc(tr *t, size_t n)
{
    void *p = wf_arena_alloc(&t->scratch, n ? n : 1);

    if (!p)
        OOM(t);
    return memset(p, 0, n ? n : 1);
}

static void *tr_array(tr *t, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        OOM(t);
    return tr_alloc(t, n * size);
}

/* Makes room for element n of array v (capacity *cap); the old array stays
 * in the scratch list, which costs at most twice the final size. */
static void *tr_grow(tr *t, void *v, size_t *cap, size_t n, size_t size)
{
    void *nv;
    size_t nc;

    if (n < *cap)
        return v;
    nc = *cap ? *cap * 2 : 8;
    nv = tr_array(t, nc, size);
    if (n)
        memcpy(nv, v, n * size);
    *cap = nc;
    return nv;
}

static char *tr_printf(tr *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *tr_printf(tr *t, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *s;

    char buf[256];

    /* Formatted once when it fits (names and keys nearly always do). */
    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        OOM(t);
    if ((size_t)n < sizeof(buf))
        return memcpy(tr_alloc(t, (size_t)n + 1), buf, (size_t)n + 1);
    s = tr_alloc(t, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static char *tr_lower(tr *t, const char *s)
{
    size_t n = strlen(s);
    char *r = tr_alloc(t, n + 1);

    for (size_t i = 0; i < n; i++)
        r[i] = (char)tolower((unsigned char)s[i]);
    return r;
}

/* ---- JSON: every value is attached to its parent as it is created ---------------------------- */

static json_t *put(tr *t, json_t *o, const char *k, json_t *v)
{
    if (!v || json_object_set_new(o, k, v) != 0)
        OOM(t);
    return v;
}

static json_t *push(tr *t, json_t *a, json_t *v)
{
    if (!v || json_array_append_new(a, v) != 0)
        OOM(t);
    return v;
}

static json_t *jstr(tr *t, const char *s)
{
    json_t *v = json_string(s);

    /* libyaml only hands out valid UTF-8, so this is out of memory in practice. */
    if (!v)
        fail(t,
             "translate: cannot encode \"%.60s\" as a JSON string (invalid UTF-8 or out of "
             "memory)",
             s);
    return v;
}

static json_t *put_obj(tr *t, json_t *o, const char *k)
{
    return put(t, o, k, json_object());
}

static json_t *put_arr(tr *t, json_t *o, const char *k)
{
    return put(t, o, k, json_array());
}

static void put_str(tr *t, json_t *o, const char *k, const char *s)
{
    put(t, o, k, jstr(t, s));
}

static void put_int(tr *t, json_t *o, const char *k, json_int_t v)
{
    put(t, o, k, json_integer(v));
}

static void put_bool(tr *t, json_t *o, const char *k, int v)
{
    put(t, o, k, json_boolean(v));
}

static void put_real(tr *t, json_t *o, const char *k, double v)
{
    put(t, o, k, json_real(v));
}

static json_t *push_obj(tr *t, json_t *a)
{
    return push(t, a, json_object());
}

static void push_str(tr *t, json_t *a, const char *s)
{
    push(t, a, jstr(t, s));
}

/* The object under key k of o, created when absent. */
static json_t *sub(tr *t, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return v ? v : put_obj(t, o, k);
}

/* ---- small helpers -------------------------------------------------------------------------- */

static int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* Istio's exportTo: unset or "*" everywhere, "." the resource's own
 * namespace, otherwise the namespaces listed ("~" matches nothing). */
static int exported_to(char *const *to, size_t n, const char *res_ns, const char *ns)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if (streq(to[i], "*") || streq(to[i], ns))
            return 1;
        if (streq(to[i], ".") && streq(res_ns, ns))
            return 1;
    }
    return 0;
}

/* How specifically configured host pattern p matches host h: 0 no match, an
 * exact match beats every wildcard, a longer wildcard beats a shorter. */
static size_t host_match(const char *p, const char *h)
{
    size_t pl, hl;

    if (!p || !h)
        return 0;
    if (strcasecmp(p, h) == 0)
        return SIZE_MAX;
    if (p[0] != '*')
        return 0;
    pl = strlen(p + 1); /* ".example.com", or "" for "*" */
    hl = strlen(h);
    if (hl > pl && strcasecmp(h + hl - pl, p + 1) == 0)
        return pl + 1;
    return 0;
}

/* Every selector label present with the same value in labels. */
static int kv_subset(const wf_kv *sel, size_t n_sel, const wf_kv *labels, size_t n_labels)
{
    for (size_t i = 0; i < n_sel; i++) {
        size_t j;
        for (j = 0; j < n_labels; j++)
            if (streq(sel[i].key, labels[j].key) && streq(sel[i].value, labels[j].value))
                break;
        if (j == n_labels)
            return 0;
    }
    return 1;
}

static const char *proxy_label(const tr *t, const char *k)
{
    for (size_t i = 0; i < t->n_labels; i++)
        if (streq(t->labels[2 * i], k))
            return t->labels[2 * i + 1];
    return NULL;
}

/* Every label of sel is a label of this workload with the same value. */
static int proxy_has_labels(const tr *t, const wf_kv *sel, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!streq(proxy_label(t, sel[i].key), sel[i].value))
            return 0;
    return 1;
}

/* Envoy's proto3 JSON duration: "10s", "2.5s", "0.001s". */
static char *fmt_duration(tr *t, int64_t ms)
{
    char *s;
    size_t n;

    if (ms < 0)
        ms = 0;
    if (ms % 1000 == 0)
        return tr_printf(t, "%llds", (long long)(ms / 1000));
    s = tr_printf(t, "%lld.%03llds", (long long)(ms / 1000), (long long)(ms % 1000));
    n = strlen(s) - 1; /* at the 's' */
    while (s[n - 1] == '0')
        n--;
    s[n] = 's';
    s[n + 1] = 0;
    return s;
}

/* ---- protocols ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int proto;
} protocols[] = {
    {"http", PR_HTTP},
    {"http2", PR_HTTP2},
    {"grpc", PR_GRPC},
    {"grpc-web", PR_GRPC_WEB},
    {"http_proxy", PR_HTTP_PROXY},
    {"https", PR_HTTPS},
    {"tls", PR_TLS},
    {"tcp", PR_TCP},
    {"mongo", PR_OTHER},
    {"redis", PR_OTHER},
    {"mysql", PR_OTHER},
    {"thrift", PR_OTHER},
    {"udp", PR_UDP},
};

static int proto_parse(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++)
        if (strlen(protocols[i].name) == len && strncasecmp(protocols[i].name, s, len) == 0)
            return protocols[i].proto;
    return -1;
}

/* Istio's protocol selection: the protocol field, else the port name's
 * prefix before the first '-' ("http-api" is HTTP); unknown is TCP. */
static int port_proto(const wf_port *p)
{
    int pr;

    if (p->protocol && p->protocol[0]) {
        pr = proto_parse(p->protocol, strlen(p->protocol));
        return pr < 0 ? PR_TCP : pr;
    }
    if (p->name) {
        pr = proto_parse(p->name, strcspn(p->name, "-"));
        if (pr >= 0)
            return pr;
    }
    return PR_TCP;
}

static int proto_is_http(int pr)
{
    return pr == PR_HTTP || pr == PR_HTTP2 || pr == PR_GRPC || pr == PR_GRPC_WEB ||
           pr == PR_HTTP_PROXY;
}

/* ---- addresses ------------------------------------------------------------------------------ */

/* Writes the canonical form of an IP literal into out; returns 4, 6 or 0. */
static int ip_literal(const char *s, char out[INET6_ADDRSTRLEN])
{
    struct in_addr a4;
    struct in6_addr a6;

    if (inet_pton(AF_INET, s, &a4) == 1) {
        inet_ntop(AF_INET, &a4, out, INET6_ADDRSTRLEN);
        return 4;
    }
    if (inet_pton(AF_INET6, s, &a6) == 1) {
        inet_ntop(AF_INET6, &a6, out, INET6_ADDRSTRLEN);
        return 6;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* getaddrinfo, IPv4 preferred as Envoy's V4_PREFERRED: the IPv4 addresses
 * when there are any, else the IPv6 ones; sorted so that a DNS server
 * rotating its answers does not change the output (and its version). */
static tr_addrs dns_lookup(tr *t, const char *name, const wf_service_entry *se)
{
    struct addrinfo hints, *res = NULL, *ai;
    char **v4 = NULL, **v6 = NULL;
    size_t n4 = 0, n6 = 0, c4 = 0, c6 = 0;
    tr_addrs r = {0};
    int rc;

    for (size_t i = 0; i < t->n_dns; i++)
        if (strcasecmp(t->dns[i].name, name) == 0)
            return t->dns[i].ips;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        warn("ServiceEntry %s/%s: cannot resolve \"%s\" (%s); it gives no endpoint "
             "until it resolves (checked again at the next translation)",
             se->meta.namespace_, se->meta.name, name, gai_strerror(rc));
    } else {
        for (ai = res; ai; ai = ai->ai_next) {
            char buf[INET6_ADDRSTRLEN];
            if (ai->ai_family == AF_INET) {
                inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, buf,
                          sizeof(buf));
                v4 = tr_grow(t, v4, &c4, n4, sizeof(*v4));
                v4[n4++] = tr_printf(t, "%s", buf);
            } else if (ai->ai_family == AF_INET6) {
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, buf,
                          sizeof(buf));
                v6 = tr_grow(t, v6, &c6, n6, sizeof(*v6));
                v6[n6++] = tr_printf(t, "%s", buf);
            }
        }
        freeaddrinfo(res);
        r.v = n4 ? v4 : v6;
        r.n = n4 ? n4 : n6;
        if (r.n)
            qsort(r.v, r.n, sizeof(*r.v), cmp_str);
        /* getaddrinfo repeats an address once per protocol; keep one. */
        size_t k = 0;
        for (size_t i = 0; i < r.n; i++)
            if (k == 0 || strcmp(r.v[k - 1], r.v[i]) != 0)
                r.v[k++] = r.v[i];
        r.n = k;
    }
    t->dns = tr_grow(t, t->dns, &t->cap_dns, t->n_dns, sizeof(*t->dns));
    t->dns[t->n_dns].name = tr_printf(t, "%s", name);
    t->dns[t->n_dns++].ips = r;
    return r;
}

/* The IP addresses of one endpoint address: IP literals as they are,
 * "localhost" as 127.0.0.1 (never looked up, so static mode stays
 * deterministic), other names through DNS when the ServiceEntry resolves
 * with DNS, else nothing. */
static tr_addrs resolve(tr *t, const wf_service_entry *se, const char *name)
{
    char buf[INET6_ADDRSTRLEN];
    tr_addrs r = {0};
    int dns = se->resolution == WF_SE_RESOLUTION_DNS ||
              se->resolution == WF_SE_RESOLUTION_DNS_ROUND_ROBIN;

    if (!name || !name[0])
        return r;
    if (ip_literal(name, buf) || strcasecmp(name, "localhost") == 0) {
        r.v = tr_array(t, 1, sizeof(*r.v));
        r.v[0] = tr_printf(t, "%s", ip_literal(name, buf) ? buf : "127.0.0.1");
        r.n = 1;
        return r;
    }
    if (strncmp(name, "unix://", 7) == 0) {
        warn("ServiceEntry %s/%s: endpoint \"%s\": unix domain socket endpoints are not "
             "supported; skipped",
             se->meta.namespace_, se->meta.name, name);
        return r;
    }
    if (!dns) {
        warn("ServiceEntry %s/%s: endpoint address \"%s\" is not an IP address and resolution "
             "is not DNS; skipped (use an IP literal or resolution: DNS)",
             se->meta.namespace_, se->meta.name, name);
        return r;
    }
    r = dns_lookup(t, name, se);
    /* DNS_ROUND_ROBIN is Envoy's LOGICAL_DNS: one address at a time. */
    if (se->resolution == WF_SE_RESOLUTION_DNS_ROUND_ROBIN && r.n > 1)
        r.n = 1;
    return r;
}

/* ---- the service registry ------------------------------------------------------------------- */

typedef struct tr_cand {
    const wf_service_entry *se;
    char *key;
    int rank; /* 0: in the proxy's namespace */
} tr_cand;

static int cmp_cand(const void *a, const void *b)
{
    const tr_cand *x = a, *y = b;
    int c = strcmp(x->key, y->key);

    if (c)
        return c;
    if (x->rank != y->rank)
        return x->rank - y->rank;
    c = strcmp(x->se->meta.namespace_, y->se->meta.namespace_);
    return c ? c : strcmp(x->se->meta.name, y->se->meta.name);
}

static int cmp_port(const void *a, const void *b)
{
    const tr_port *x = a, *y = b;

    return x->port->number < y->port->number ? -1 : x->port->number > y->port->number;
}

static void add_src(tr *t, tr_svc *s, size_t *cap, const wf_workload_entry_spec *spec, tr_addrs ips)
{
    s->srcs = tr_grow(t, s->srcs, cap, s->n_srcs, sizeof(*s->srcs));
    s->srcs[s->n_srcs].spec = spec;
    s->srcs[s->n_srcs++].ips = ips;
}

/* The endpoints of one service host: the ServiceEntry's inline endpoints,
 * then the WorkloadEntries its workloadSelector selects in its namespace;
 * with DNS resolution and none of those, the host itself. */
static void build_sources(tr *t, tr_svc *s)
{
    const wf_service_entry *se = s->se;
    const wf_config *cfg = t->cfg;
    size_t cap = 0;

    for (size_t i = 0; i < se->n_endpoints; i++)
        add_src(t, s, &cap, &se->endpoints[i], resolve(t, se, se->endpoints[i].address));
    if (se->workload_selector) {
        for (size_t i = 0; i < cfg->n_workload_entries; i++) {
            const wf_workload_entry *we = &cfg->workload_entries[i];
            if (!streq(we->meta.namespace_, se->meta.namespace_) ||
                !kv_subset(se->workload_selector->match_labels,
                           se->workload_selector->n_match_labels, we->spec.labels,
                           we->spec.n_labels))
                continue;
            add_src(t, s, &cap, &we->spec, resolve(t, se, we->spec.address));
        }
    }
    if (s->n_srcs == 0 && s->key[0] != '*' &&
        (se->resolution == WF_SE_RESOLUTION_DNS ||
         se->resolution == WF_SE_RESOLUTION_DNS_ROUND_ROBIN))
        add_src(t, s, &cap, NULL, resolve(t, se, s->key));
}

static const wf_destination_rule *find_dr(tr *t, const tr_svc *s);
enum { VS_HTTP, VS_TCP, VS_TLS };
static const wf_virtual_service *find_vs(tr *t, const tr_svc *s, int kind);

/*
 * Who may answer for a service over ISTIO_MUTUAL, as Istio lists its
 * service accounts: the SPIFFE ID of every endpoint's service account (a
 * WorkloadEntry's serviceAccount, or the one a registered proxy announced;
 * "default" when none is given, the account a Kubernetes pod runs as
 * without one), in the entry's namespace, plus the ServiceEntry's
 * subjectAltNames; sorted, each once.  Every port of a ServiceEntry has the
 * same endpoints, so the list is the service's, not a cluster's.
 */
static void build_sans(tr *t, tr_svc *s)
{
    const wf_service_entry *se = s->se;
    char **v = tr_array(t, s->n_srcs + se->n_subject_alt_names, sizeof(*v));
    size_t n = 0, k = 0;

    for (size_t i = 0; i < s->n_srcs; i++) {
        const wf_workload_entry_spec *spec = s->srcs[i].spec;
        if (!spec) /* the host itself (DNS): nobody in particular */
            continue;
        const char *sa =
            spec->service_account && spec->service_account[0] ? spec->service_account : "default";
        v[n++] = tr_printf(t, "spiffe://%s/ns/%s/sa/%s", t->td, se->meta.namespace_, sa);
    }
    for (size_t i = 0; i < se->n_subject_alt_names; i++)
        if (se->subject_alt_names[i] && se->subject_alt_names[i][0])
            v[n++] = se->subject_alt_names[i];
    if (n)
        qsort(v, n, sizeof(*v), cmp_str);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
            v[k++] = v[i];
    s->sans = v;
    s->n_sans = k;
    /* Istio's auto mTLS leaves out mesh-external services and namespaces
     * whose PeerAuthentication (namespace-wide, or mesh-wide) is DISABLE:
     * their servers only speak plaintext. */
    s->auto_mtls = se->location == WF_SE_MESH_INTERNAL &&
                   wf__peer_auth_mode(t->cfg, se->meta.namespace_, NULL, 0, 1) != WF_MTLS_DISABLE;
}

/* Services visible to this proxy, one per host (the first ServiceEntry in
 * the order "proxy's namespace, then namespace/name" wins a host that
 * several define), sorted by host; ports sorted by number. */
static void build_registry(tr *t)
{
    const wf_config *cfg = t->cfg;
    tr_cand *c = NULL;
    size_t n = 0, cap = 0;

    for (size_t i = 0; i < cfg->n_service_entries; i++) {
        const wf_service_entry *se = &cfg->service_entries[i];
        if (!exported_to(se->export_to, se->n_export_to, se->meta.namespace_, t->ns))
            continue;
        for (size_t h = 0; h < se->n_hosts; h++) {
            if (!se->hosts[h] || !se->hosts[h][0])
                continue;
            c = tr_grow(t, c, &cap, n, sizeof(*c));
            c[n].se = se;
            c[n].key = tr_lower(t, se->hosts[h]);
            c[n].rank = streq(se->meta.namespace_, t->ns) ? 0 : 1;
            n++;
        }
    }
    if (n)
        qsort(c, n, sizeof(*c), cmp_cand);
    t->svcs = tr_array(t, n, sizeof(*t->svcs));
    for (size_t i = 0; i < n; i++) {
        tr_svc *s;
        const wf_service_entry *se = c[i].se;

        if (t->n_svcs && strcmp(t->svcs[t->n_svcs - 1].key, c[i].key) == 0) {
            const wf_service_entry *w = t->svcs[t->n_svcs - 1].se;
            if (w != se)
                warn("host %s is defined by ServiceEntry %s/%s and %s/%s; using %s/%s for "
                     "namespace %s",
                     c[i].key, w->meta.namespace_, w->meta.name, se->meta.namespace_, se->meta.name,
                     w->meta.namespace_, w->meta.name, t->ns);
            continue;
        }
        s = &t->svcs[t->n_svcs++];
        s->se = se;
        s->key = c[i].key;
        s->ports = tr_array(t, se->n_ports, sizeof(*s->ports));
        for (size_t k = 0; k < se->n_ports; k++) {
            s->ports[s->n_ports].port = &se->ports[k];
            s->ports[s->n_ports++].proto = port_proto(&se->ports[k]);
        }
        if (s->n_ports)
            qsort(s->ports, s->n_ports, sizeof(*s->ports), cmp_port);
        /* A port number written twice: the first wins. */
        size_t k2 = 0;
        for (size_t k = 0; k < s->n_ports; k++)
            if (k2 == 0 || s->ports[k2 - 1].port->number != s->ports[k].port->number)
                s->ports[k2++] = s->ports[k];
        s->n_ports = k2;
        for (size_t k = 0; k < s->n_ports; k++)
            s->n_http += proto_is_http(s->ports[k].proto);
        build_sources(t, s);
    }
    for (size_t i = 0; i < t->n_svcs; i++) {
        t->svcs[i].dr = find_dr(t, &t->svcs[i]);
        t->svcs[i].vs = find_vs(t, &t->svcs[i], VS_HTTP);
        build_sans(t, &t->svcs[i]);
    }
}

static int cmp_svc_key(const void *k, const void *s)
{
    return strcmp(k, ((const tr_svc *)s)->key);
}

static const tr_svc *find_svc(tr *t, const char *host)
{
    char *k;

    if (!host || !t->n_svcs)
        return NULL;
    k = tr_lower(t, host);
    return bsearch(k, t->svcs, t->n_svcs, sizeof(*t->svcs), cmp_svc_key);
}

/* ---- DestinationRule and VirtualService selection ------------------------------------------- */

static int dr_applies(tr *t, const wf_destination_rule *dr)
{
    if (dr->workload_selector) {
        /* Istio: a DestinationRule with a workloadSelector only applies to
         * the selected workloads of its own namespace. */
        return streq(dr->meta.namespace_, t->ns) &&
               proxy_has_labels(t, dr->workload_selector->match_labels,
                                dr->workload_selector->n_match_labels);
    }
    return exported_to(dr->export_to, dr->n_export_to, dr->meta.namespace_, t->ns);
}

/* Istio's lookup: the most specific rule for the host in the proxy's
 * namespace, else in the service's namespace, else in the root namespace;
 * a tie between rules of one namespace goes to the first name. */
static const wf_destination_rule *find_dr(tr *t, const tr_svc *s)
{
    const char *order[3] = {t->ns, s->se->meta.namespace_, t->root_ns};

    for (int k = 0; k < 3; k++) {
        const wf_destination_rule *best = NULL;
        size_t best_score = 0;

        if (!order[k] || (k >= 1 && streq(order[k], order[0])) ||
            (k == 2 && streq(order[2], order[1])))
            continue;
        for (size_t i = 0; i < t->cfg->n_destination_rules; i++) {
            const wf_destination_rule *dr = &t->cfg->destination_rules[i];
            size_t score;
            if (!streq(dr->meta.namespace_, order[k]) || !dr_applies(t, dr))
                continue;
            score = host_match(dr->host, s->key);
            if (!score)
                continue;
            if (score > best_score ||
                (score == best_score && strcmp(dr->meta.name, best->meta.name) < 0)) {
                best = dr;
                best_score = score;
            }
        }
        if (best)
            return best;
    }
    return NULL;
}

static int has_mesh(char *const *gw, size_t n)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (streq(gw[i], "mesh"))
            return 1;
    return 0;
}

/* The VirtualService that routes a host: visible to the proxy, bound to
 * "mesh", with http routes; the most specific host match wins, then one in
 * the proxy's namespace, then in the service's namespace, then
 * namespace/name order. */
/* The VirtualService that routes service s's traffic of one kind (its
 * http, tcp or tls routes): the most specific host match, then the
 * client's namespace, then the service's, then by name. */
static const wf_virtual_service *find_vs(tr *t, const tr_svc *s, int kind)
{
    const wf_virtual_service *best = NULL;
    size_t best_score = 0;
    int best_rank = 0;

    for (size_t i = 0; i < t->cfg->n_virtual_services; i++) {
        const wf_virtual_service *vs = &t->cfg->virtual_services[i];
        size_t score = 0;
        int rank, better;

        size_t n = kind == VS_HTTP ? vs->n_http : kind == VS_TCP ? vs->n_tcp : vs->n_tls;
        if (n == 0 || !has_mesh(vs->gateways, vs->n_gateways) ||
            !exported_to(vs->export_to, vs->n_export_to, vs->meta.namespace_, t->ns))
            continue;
        for (size_t h = 0; h < vs->n_hosts; h++) {
            size_t sc = host_match(vs->hosts[h], s->key);
            if (sc > score)
                score = sc;
        }
        if (!score)
            continue;
        rank = streq(vs->meta.namespace_, t->ns)                    ? 0
               : streq(vs->meta.namespace_, s->se->meta.namespace_) ? 1
                                                                    : 2;
        if (!best || score > best_score)
            better = 1;
        else if (score < best_score)
            better = 0;
        else if (rank != best_rank)
            better = rank < best_rank;
        else {
            int c = strcmp(vs->meta.namespace_, best->meta.namespace_);
            better = c < 0 || (c == 0 && strcmp(vs->meta.name, best->meta.name) < 0);
        }
        if (better) {
            best = vs;
            best_score = score;
            best_rank = rank;
        }
    }
    return best;
}

/* ---- clusters and endpoints ----------------------------------------------------------------- */

typedef struct tr_policy {
    const wf_load_balancer *lb;
    const wf_connection_pool *cp;
    const wf_client_tls *tls;
} tr_policy;

static const wf_port_traffic_policy *port_level(const wf_traffic_policy *tp, uint32_t port)
{
    for (size_t i = 0; i < tp->n_port_level_settings; i++)
        if (tp->port_level_settings[i].port == port)
            return &tp->port_level_settings[i];
    return NULL;
}

/*
 * Istio's merge (MergeSubsetTrafficPolicy): the rule's policy, replaced
 * wholesale by its portLevelSettings for this port; then each part the
 * subset's policy sets overrides; then the subset's portLevelSettings for
 * this port replace wholesale.  "Wholesale" because Istio documents that
 * port-level settings do not inherit: a part they omit takes its default.
 */
static tr_policy merge_policy(const wf_destination_rule *dr, const wf_subset *ss, uint32_t port)
{
    tr_policy r = {0};
    const wf_traffic_policy *tp = dr ? dr->traffic_policy : NULL;
    const wf_port_traffic_policy *pl;

    if (tp) {
        r.lb = tp->load_balancer;
        r.cp = tp->connection_pool;
        r.tls = tp->tls;
        if ((pl = port_level(tp, port))) {
            r.lb = pl->load_balancer;
            r.cp = pl->connection_pool;
            r.tls = pl->tls;
        }
    }
    tp = ss ? ss->traffic_policy : NULL;
    if (tp) {
        if (tp->load_balancer)
            r.lb = tp->load_balancer;
        if (tp->connection_pool)
            r.cp = tp->connection_pool;
        if (tp->tls)
            r.tls = tp->tls;
        if ((pl = port_level(tp, port))) {
            r.lb = pl->load_balancer;
            r.cp = pl->connection_pool;
            r.tls = pl->tls;
        }
    }
    return r;
}

static const char *lb_policy(const wf_load_balancer *lb, const char **note)
{
    *note = NULL;
    if (!lb)
        return "ROUND_ROBIN";
    if (lb->consistent_hash) {
        *note = "loadBalancer.consistentHash is not implemented yet; using ROUND_ROBIN";
        return "ROUND_ROBIN";
    }
    if (!lb->simple_set)
        return "ROUND_ROBIN";
    switch (lb->simple) {
    case WF_LB_LEAST_CONN:
    case WF_LB_LEAST_REQUEST:
        return "LEAST_REQUEST";
    case WF_LB_RANDOM:
        return "RANDOM";
    case WF_LB_PASSTHROUGH:
        *note = "loadBalancer.simple PASSTHROUGH is not implemented yet; using ROUND_ROBIN";
        return "ROUND_ROBIN";
    case WF_LB_UNSPECIFIED:
    case WF_LB_ROUND_ROBIN:
    default:
        return "ROUND_ROBIN";
    }
}

/* The endpoint's port for a service port: its ports[portName], else the
 * port's targetPort, else the port number. */
static uint32_t ep_port(const wf_workload_entry_spec *spec, const wf_port *pt)
{
    if (spec && pt->name)
        for (size_t i = 0; i < spec->n_ports; i++)
            if (streq(spec->ports[i].key, pt->name) && spec->port_numbers[i])
                return spec->port_numbers[i];
    return pt->target_port ? pt->target_port : pt->number;
}

static const char *svc_short_name(tr *t, const char *key)
{
    size_t kl = strlen(key), sl = strlen(SVC_SUFFIX);

    if (kl > sl && strcmp(key + kl - sl, SVC_SUFFIX) == 0)
        return tr_printf(t, "%.*s", (int)strcspn(key, "."), key);
    return key;
}

/* An endpoint with a sidecar: labelled security.istio.io/tlsMode=istio, as
 * Istio's injector labels pods (a registered proxy with a workload
 * certificate announces the label in its node LABELS). */
static int has_sidecar(const wf_workload_entry_spec *spec)
{
    for (size_t i = 0; spec && i < spec->n_labels; i++)
        if (streq(spec->labels[i].key, TLS_MODE_LABEL))
            return streq(spec->labels[i].value, TLS_MODE_ISTIO);
    return 0;
}

static void emit_lb_endpoint(tr *t, json_t *lbes, const char *ip, uint32_t port,
                             const wf_workload_entry_spec *spec)
{
    json_t *e = push_obj(t, lbes), *sa, *fm, *istio;
    uint32_t w = spec && spec->weight ? spec->weight : 1;

    sa = put_obj(t, put_obj(t, put_obj(t, e, "endpoint"), "address"), "socket_address");
    put_str(t, sa, "address", ip);
    put_int(t, sa, "port_value", port);
    put_str(t, e, "health_status", "HEALTHY");
    put_int(t, e, "load_balancing_weight", w);
    if (!spec || (!spec->n_labels && !spec->service_account))
        return;
    fm = put_obj(t, put_obj(t, e, "metadata"), "filter_metadata");
    istio = put_obj(t, fm, "istio");
    if (spec->n_labels) {
        json_t *l = put_obj(t, istio, "labels");
        for (size_t i = 0; i < spec->n_labels; i++)
            put_str(t, l, spec->labels[i].key, spec->labels[i].value);
    }
    if (spec->service_account)
        put_str(t, istio, "service_account", spec->service_account);
    /* What the cluster's transport_socket_matches look at (auto mTLS). */
    if (has_sidecar(spec))
        put_str(t, put_obj(t, fm, SOCKET_MATCH_KEY), "tlsMode", TLS_MODE_ISTIO);
}

/* ---- TLS toward upstreams ------------------------------------------------------------------- */

/* A warning about one configuration object, once per translation. */
static int first_warning(tr *t, const void *obj, const char *what)
{
    const char *k = tr_printf(t, "%p/%s", obj, what);

    if (json_object_get(t->warned, k))
        return 0;
    put(t, t->warned, k, json_true());
    return 1;
}

/* "tls_certificate_sds_secret_configs": the workload's own certificate. */
static void emit_sds_cert(tr *t, json_t *ctx)
{
    put_str(t, push_obj(t, put_arr(t, ctx, "tls_certificate_sds_secret_configs")), "name",
            SDS_CERT);
}

/* The mesh's roots from SDS, and the peer identities accepted (none: any
 * certificate the roots signed). */
static void emit_mesh_validation(tr *t, json_t *ctx, char *const *sans, size_t n)
{
    json_t *comb = put_obj(t, ctx, "combined_validation_context");
    json_t *vc = put_obj(t, comb, "default_validation_context");

    if (n) {
        json_t *arr = put_arr(t, vc, "match_subject_alt_names");
        for (size_t i = 0; i < n; i++)
            put_str(t, push_obj(t, arr), "exact", sans[i]);
    }
    put_str(t, put_obj(t, comb, "validation_context_sds_secret_config"), "name", SDS_ROOTS);
}

/* parent.transport_socket: Istio mutual TLS with the workload certificate. */
static void emit_istio_mutual(tr *t, json_t *parent, char *const *sans, size_t n, const char *sni)
{
    json_t *ts = put_obj(t, parent, "transport_socket"), *tc, *ctx;

    put_str(t, ts, "name", TLS_SOCKET_NAME);
    tc = put_obj(t, ts, "typed_config");
    put_str(t, tc, "@type", UPSTREAM_TLS_TYPE);
    ctx = put_obj(t, tc, "common_tls_context");
    emit_sds_cert(t, ctx);
    emit_mesh_validation(t, ctx, sans, n);
    put_str(t, tc, "sni", sni);
}

/* c.transport_socket for DestinationRule tls SIMPLE or MUTUAL: TLS
 * origination with files the proxy reads itself. */
static void emit_origination(tr *t, json_t *c, const wf_client_tls *tls, const tr_svc *s)
{
    json_t *ts = put_obj(t, c, "transport_socket"), *tc, *ctx;
    int verify = !(tls->insecure_skip_verify_set && tls->insecure_skip_verify);
    /* Without an sni the host itself, which is what Istio's auto SNI sends
     * for a request to the service's own name. */
    const char *sni = tls->sni && tls->sni[0] ? tls->sni : s->key[0] != '*' ? s->key : NULL;

    put_str(t, ts, "name", TLS_SOCKET_NAME);
    tc = put_obj(t, ts, "typed_config");
    put_str(t, tc, "@type", UPSTREAM_TLS_TYPE);
    ctx = put_obj(t, tc, "common_tls_context");
    if (tls->mode == WF_CLIENT_TLS_MUTUAL && tls->client_certificate && tls->private_key) {
        json_t *cert = push_obj(t, put_arr(t, ctx, "tls_certificates"));
        put_str(t, put_obj(t, cert, "certificate_chain"), "filename", tls->client_certificate);
        put_str(t, put_obj(t, cert, "private_key"), "filename", tls->private_key);
    }
    if (verify) {
        json_t *vc = put_obj(t, ctx, "validation_context");
        put_str(t, put_obj(t, vc, "trusted_ca"), "filename",
                tls->ca_certificates && tls->ca_certificates[0] ? tls->ca_certificates
                                                                : SYSTEM_ROOTS);
        if (tls->n_subject_alt_names) {
            json_t *arr = put_arr(t, vc, "match_subject_alt_names");
            for (size_t i = 0; i < tls->n_subject_alt_names; i++)
                put_str(t, push_obj(t, arr), "exact", tls->subject_alt_names[i]);
        }
    }
    if (sni)
        put_str(t, tc, "sni", sni);
}

/*
 * The transport of one cluster (sidecars only: proxyless gRPC would need
 * certificate providers).  Without DestinationRule tls, Istio's auto mTLS:
 * endpoints with a sidecar get ISTIO_MUTUAL, the others plaintext, chosen
 * by transport_socket_matches on the endpoints' metadata.  With it, what
 * its mode says, for every endpoint.
 */
static void emit_cluster_tls(tr *t, json_t *c, const tr_svc *s, const tr_port *pt,
                             const wf_subset *ss, const wf_client_tls *tls)
{
    /* Istio's SNI for mesh traffic: outbound_.PORT_.SUBSET_.HOST. */
    const char *sni =
        tr_printf(t, "outbound_.%u_.%s_.%s", pt->port->number, ss ? ss->name : "", s->key);
    const wf_destination_rule *dr = s->dr;

    if (t->grpc)
        return;
    if (!tls) {
        json_t *ms, *m;
        if (!s->auto_mtls)
            return;
        ms = put_arr(t, c, "transport_socket_matches");
        m = push_obj(t, ms);
        put_str(t, m, "name", "tlsMode-istio");
        put_str(t, put_obj(t, m, "match"), "tlsMode", TLS_MODE_ISTIO);
        emit_istio_mutual(t, m, s->sans, s->n_sans, sni);
        m = push_obj(t, ms);
        put_str(t, m, "name", "tlsMode-disabled");
        put_obj(t, m, "match");
        json_t *raw = put_obj(t, m, "transport_socket");
        put_str(t, raw, "name", RAW_BUFFER_NAME);
        put_str(t, put_obj(t, raw, "typed_config"), "@type", RAW_BUFFER_TYPE);
        return;
    }
    if (tls->credential_name && first_warning(t, tls, "credentialName"))
        warn("DestinationRule %s/%s: trafficPolicy.tls.credentialName \"%s\" is for gateways; "
             "a sidecar does not read Kubernetes secrets, so it is ignored%s (give "
             "clientCertificate, privateKey and caCertificates files instead)",
             dr->meta.namespace_, dr->meta.name, tls->credential_name,
             tls->mode == WF_CLIENT_TLS_MUTUAL && (!tls->client_certificate || !tls->private_key)
                 ? " and no client certificate is presented"
                 : "");
    if (tls->ca_crl && first_warning(t, tls, "caCrl"))
        warn("DestinationRule %s/%s: trafficPolicy.tls.caCrl is not supported yet; ignored "
             "(revoked certificates are not refused)",
             dr->meta.namespace_, dr->meta.name);
    switch (tls->mode) {
    case WF_CLIENT_TLS_ISTIO_MUTUAL:
        /* Istio: the rule's sni and subjectAltNames, when given, win. */
        if (tls->n_subject_alt_names)
            emit_istio_mutual(t, c, tls->subject_alt_names, tls->n_subject_alt_names,
                              tls->sni && tls->sni[0] ? tls->sni : sni);
        else
            emit_istio_mutual(t, c, s->sans, s->n_sans, tls->sni && tls->sni[0] ? tls->sni : sni);
        break;
    case WF_CLIENT_TLS_SIMPLE:
    case WF_CLIENT_TLS_MUTUAL:
        emit_origination(t, c, tls, s);
        break;
    case WF_CLIENT_TLS_DISABLE:
    default:
        break; /* plaintext: no transport socket */
    }
}

/* One cluster (the service port's, or one subset's) and its endpoints. */
static void emit_cluster(tr *t, json_t *clusters, json_t *endpoints, const tr_svc *s,
                         const tr_port *pt, const wf_subset *ss)
{
    uint32_t port = pt->port->number;
    const char *name = tr_printf(t, "outbound|%u|%s|%s", port, ss ? ss->name : "", s->key);
    tr_policy pol = merge_policy(s->dr, ss, port);
    const char *note, *lb = lb_policy(pol.lb, &note);
    int64_t ct = DEFAULT_CONNECT_TIMEOUT_MS;
    json_t *c, *istio, *svc, *cla, *eps, *loc, *lbes, *eds;

    if (pol.cp && pol.cp->tcp && pol.cp->tcp->connect_timeout_ms > 0)
        ct = pol.cp->tcp->connect_timeout_ms;
    /* gRPC refuses a cluster whose lb_policy is not ROUND_ROBIN or
     * RING_HASH (and RING_HASH needs hash policies weft does not emit). */
    if (t->grpc && !streq(lb, "ROUND_ROBIN")) {
        note = tr_printf(t, "loadBalancer %s is not available to proxyless gRPC; using ROUND_ROBIN",
                         lb);
        lb = "ROUND_ROBIN";
    }
    c = push_obj(t, clusters);
    put_str(t, c, "name", name);
    put_str(t, c, "type", "EDS");
    eds = put_obj(t, c, "eds_cluster_config");
    if (t->grpc) {
        /* gRPC only takes endpoints from a config source it is told about:
         * the ADS stream it already has. */
        json_t *src = put_obj(t, eds, "eds_config");
        put_obj(t, src, "ads");
        put_str(t, src, "resource_api_version", "V3");
    }
    put_str(t, eds, "service_name", name);
    put_str(t, c, "lb_policy", lb);
    put_str(t, c, "connect_timeout", fmt_duration(t, ct));
    if (!t->grpc && (pt->proto == PR_HTTP2 || pt->proto == PR_GRPC || pt->proto == PR_GRPC_WEB))
        put_obj(t, c, "http2_protocol_options");
    /* connectionPool.http's limits on upstream connections, the ones set
     * (maxRequestsPerConnection 0 is Istio's "unlimited", Envoy's unset). */
    if (!t->grpc && pol.cp && pol.cp->http &&
        (pol.cp->http->idle_timeout_ms >= 0 || pol.cp->http->max_requests_per_connection > 0)) {
        json_t *hpo = put_obj(t, c, "common_http_protocol_options");
        if (pol.cp->http->idle_timeout_ms >= 0)
            put_str(t, hpo, "idle_timeout", fmt_duration(t, pol.cp->http->idle_timeout_ms));
        if (pol.cp->http->max_requests_per_connection > 0)
            put_int(t, hpo, "max_requests_per_connection",
                    pol.cp->http->max_requests_per_connection);
    }
    emit_cluster_tls(t, c, s, pt, ss, pol.tls);
    istio = put_obj(t, put_obj(t, put_obj(t, c, "metadata"), "filter_metadata"), "istio");
    svc = push_obj(t, put_arr(t, istio, "services"));
    put_str(t, svc, "host", s->key);
    put_str(t, svc, "name", svc_short_name(t, s->key));
    put_str(t, svc, "namespace", s->se->meta.namespace_);
    if (ss)
        put_str(t, istio, "subset", ss->name);
    if (s->dr)
        put_str(t, istio, "config",
                tr_printf(t, "/apis/networking.istio.io/v1/namespaces/%s/destination-rule/%s",
                          s->dr->meta.namespace_, s->dr->meta.name));
    if (note)
        put_str(t, istio, "lb_note", note);

    cla = push_obj(t, endpoints);
    put_str(t, cla, "cluster_name", name);
    eps = put_arr(t, cla, "endpoints");
    loc = push_obj(t, eps);
    put_obj(t, loc, "locality");
    put_int(t, loc, "load_balancing_weight", 1);
    lbes = put_arr(t, loc, "lb_endpoints");
    json_object_clear(t->seen);
    for (size_t i = 0; i < s->n_srcs; i++) {
        const tr_src *src = &s->srcs[i];
        uint32_t epp;

        if (ss && (!src->spec ||
                   !kv_subset(ss->labels, ss->n_labels, src->spec->labels, src->spec->n_labels)))
            continue;
        epp = ep_port(src->spec, pt->port);
        for (size_t k = 0; k < src->ips.n; k++) {
            /* Envoy refuses an assignment that lists one address twice. */
            const char *hp = tr_printf(t, "%s:%u", src->ips.v[k], epp);
            if (json_object_get(t->seen, hp))
                continue;
            put(t, t->seen, hp, json_true());
            emit_lb_endpoint(t, lbes, src->ips.v[k], epp, src->spec);
        }
    }
    if (json_array_size(lbes) == 0)
        json_array_clear(eps);
}

static void emit_clusters(tr *t, json_t *clusters, json_t *endpoints)
{
    for (size_t i = 0; i < t->n_svcs; i++) {
        const tr_svc *s = &t->svcs[i];
        for (size_t k = 0; k < s->n_ports; k++) {
            emit_cluster(t, clusters, endpoints, s, &s->ports[k], NULL);
            if (s->dr)
                for (size_t j = 0; j < s->dr->n_subsets; j++)
                    emit_cluster(t, clusters, endpoints, s, &s->ports[k], &s->dr->subsets[j]);
        }
    }
}

/* ---- routes --------------------------------------------------------------------------------- */

static void emit_string_match(tr *t, json_t *o, const wf_string_match *sm)
{
    switch (sm->kind) {
    case WF_SM_EXACT:
        put_str(t, o, "exact", sm->value ? sm->value : "");
        break;
    case WF_SM_PREFIX:
        put_str(t, o, "prefix", sm->value ? sm->value : "");
        break;
    case WF_SM_REGEX:
        put_str(t, put_obj(t, o, "safe_regex"), "regex", sm->value ? sm->value : "");
        break;
    case WF_SM_NONE:
    default:
        break;
    }
}

/* gRPC 1.51's HeaderMatcher: the older one-field-per-kind form
 * (exact_match, prefix_match, safe_regex_match); it refuses string_match. */
static void emit_grpc_string_match(tr *t, json_t *m, const wf_string_match *sm)
{
    const char *v = sm->value ? sm->value : "";

    if (sm->kind == WF_SM_EXACT)
        put_str(t, m, "exact_match", v);
    else if (sm->kind == WF_SM_PREFIX)
        put_str(t, m, "prefix_match", v);
    else if (sm->kind == WF_SM_REGEX)
        put_str(t, put_obj(t, m, "safe_regex_match"), "regex", v);
}

/* A HeaderMatcher (or QueryParameterMatcher): Istio's "{}" (and an empty
 * prefix) means "present"; invert turns it into "absent" (withoutHeaders). */
static void emit_matcher(tr *t, json_t *arr, const char *name, const wf_string_match *sm,
                         int invert)
{
    json_t *m = push_obj(t, arr);

    put_str(t, m, "name", name);
    if (sm->kind == WF_SM_NONE || (sm->kind == WF_SM_PREFIX && (!sm->value || !sm->value[0])))
        put_bool(t, m, "present_match", 1);
    else if (t->grpc)
        emit_grpc_string_match(t, m, sm);
    else
        emit_string_match(t, put_obj(t, m, "string_match"), sm);
    if (invert)
        put_bool(t, m, "invert_match", 1);
}

static void emit_match(tr *t, json_t *r, const wf_http_match *m)
{
    json_t *mj = put_obj(t, r, "match"), *hs = NULL, *qs;

    if (!m || m->uri.kind == WF_SM_NONE)
        put_str(t, mj, "prefix", "/");
    else if (m->uri.kind == WF_SM_EXACT)
        put_str(t, mj, "path", m->uri.value ? m->uri.value : "");
    else if (m->uri.kind == WF_SM_PREFIX)
        put_str(t, mj, "prefix", m->uri.value ? m->uri.value : "");
    else
        put_str(t, put_obj(t, mj, "safe_regex"), "regex", m->uri.value ? m->uri.value : "");
    if (!m)
        return;
    if (m->ignore_uri_case)
        put_bool(t, mj, "case_sensitive", 0);
    if (m->method.kind || m->authority.kind || m->scheme.kind || m->n_headers ||
        m->n_without_headers)
        hs = put_arr(t, mj, "headers");
    if (m->method.kind)
        emit_matcher(t, hs, ":method", &m->method, 0);
    if (m->authority.kind)
        emit_matcher(t, hs, ":authority", &m->authority, 0);
    if (m->scheme.kind)
        emit_matcher(t, hs, ":scheme", &m->scheme, 0);
    for (size_t i = 0; i < m->n_headers; i++)
        emit_matcher(t, hs, tr_lower(t, m->headers[i].name), &m->headers[i].match, 0);
    for (size_t i = 0; i < m->n_without_headers; i++)
        emit_matcher(t, hs, tr_lower(t, m->without_headers[i].name), &m->without_headers[i].match,
                     1);
    if (m->n_query_params) {
        qs = put_arr(t, mj, "query_parameters");
        for (size_t i = 0; i < m->n_query_params; i++)
            emit_matcher(t, qs, m->query_params[i].name, &m->query_params[i].match, 0);
    }
}

/* Whether a match block can apply to this workload on port: its port, the
 * client's labels and namespace, the mesh among its gateways.  HTTP, TLS
 * and TCP matches share these fields (SOURCE_APPLIES); the translator
 * resolves them so the router never sees them. */
static int source_applies(tr *t, uint32_t port, uint32_t m_port, const wf_kv *labels,
                          size_t n_labels, const char *ns, char *const *gateways, size_t n_gateways)
{
    if (m_port && m_port != port)
        return 0;
    if (!proxy_has_labels(t, labels, n_labels))
        return 0;
    if (ns && !streq(ns, t->ns))
        return 0;
    if (n_gateways && !has_mesh(gateways, n_gateways))
        return 0;
    return 1;
}

#define SOURCE_APPLIES(t, m, port)                                                                 \
    source_applies((t), (port), (m)->port, (m)->source_labels, (m)->n_source_labels,               \
                   (m)->source_namespace, (m)->gateways, (m)->n_gateways)

/* Port of a destination: its own, else the only port of its service, else
 * (several ports, or an unknown service) the virtual host's port. */
static uint32_t dest_port(tr *t, const wf_destination *d, uint32_t vh_port)
{
    const tr_svc *ds;

    if (d->port)
        return d->port;
    ds = find_svc(t, d->host);
    if (ds && ds->n_ports == 1)
        return ds->ports[0].port->number;
    return vh_port;
}

static char *dest_cluster(tr *t, const wf_destination *d, uint32_t vh_port)
{
    return tr_printf(t, "outbound|%u|%s|%s", dest_port(t, d, vh_port), d->subset ? d->subset : "",
                     tr_lower(t, d->host ? d->host : ""));
}

static void emit_kv_map(tr *t, json_t *o, const char *k, const wf_kv *kv, size_t n)
{
    json_t *m;

    if (!n)
        return;
    m = put_obj(t, o, k);
    for (size_t i = 0; i < n; i++)
        put_str(t, m, kv[i].key, kv[i].value);
}

static void emit_header_ops(tr *t, json_t *o, const char *k, const wf_header_ops *h)
{
    json_t *ops;

    if (!h->n_set && !h->n_add && !h->n_remove)
        return;
    ops = put_obj(t, o, k);
    emit_kv_map(t, ops, "set", h->set, h->n_set);
    emit_kv_map(t, ops, "add", h->add, h->n_add);
    if (h->n_remove) {
        json_t *r = put_arr(t, ops, "remove");
        for (size_t i = 0; i < h->n_remove; i++)
            push_str(t, r, h->remove[i]);
    }
}

static void emit_headers(tr *t, json_t *o, const char *k, const wf_headers *h)
{
    json_t *hj = put_obj(t, o, k);

    emit_header_ops(t, hj, "request", &h->request);
    emit_header_ops(t, hj, "response", &h->response);
}

/* A whole percentage is written as an integer: xDS carries free-form
 * numbers as doubles, so this keeps static and xDS mode identical. */
static void emit_percentage(tr *t, json_t *o, const char *k, double v)
{
    if (v == (double)(long long)v)
        put_int(t, put_obj(t, o, k), "value", (long long)v);
    else
        put_real(t, put_obj(t, o, k), "value", v);
}

/* An Istio Destination plus the cluster it names. */
static void emit_destination(tr *t, json_t *o, const wf_destination *d, uint32_t vh_port)
{
    put_str(t, o, "host", d->host ? d->host : "");
    if (d->subset)
        put_str(t, o, "subset", d->subset);
    if (d->port)
        put_int(t, put_obj(t, o, "port"), "number", d->port);
    put_str(t, o, "cluster", dest_cluster(t, d, vh_port));
}

static void emit_fault(tr *t, json_t *o, const wf_http_fault *f)
{
    if (f->delay) {
        json_t *d = put_obj(t, o, "delay");
        if (f->delay->fixed_delay_ms >= 0)
            put_str(t, d, "fixedDelay", fmt_duration(t, f->delay->fixed_delay_ms));
        if (f->delay->percentage_set)
            emit_percentage(t, d, "percentage", f->delay->percentage);
        if (f->delay->percent >= 0)
            put_int(t, d, "percent", f->delay->percent);
    }
    if (f->abort) {
        json_t *a = put_obj(t, o, "abort");
        if (f->abort->http_status)
            put_int(t, a, "httpStatus", f->abort->http_status);
        if (f->abort->grpc_status)
            put_str(t, a, "grpcStatus", f->abort->grpc_status);
        if (f->abort->http2_error)
            put_str(t, a, "http2Error", f->abort->http2_error);
        if (f->abort->percentage_set)
            emit_percentage(t, a, "percentage", f->abort->percentage);
    }
}

static void emit_retry(tr *t, json_t *o, const wf_http_retry *r)
{
    put_int(t, o, "attempts", r->attempts);
    if (r->per_try_timeout_ms >= 0)
        put_str(t, o, "perTryTimeout", fmt_duration(t, r->per_try_timeout_ms));
    if (r->retry_on)
        put_str(t, o, "retryOn", r->retry_on);
    if (r->retry_remote_localities_set)
        put_bool(t, o, "retryRemoteLocalities", r->retry_remote_localities);
}

static void emit_cors(tr *t, json_t *o, const wf_cors_policy *c)
{
    static const char *const preflight[] = {"UNSPECIFIED", "FORWARD", "IGNORE"};
    struct {
        const char *k;
        char **v;
        size_t n;
    } lists[] = {{"allowMethods", c->allow_methods, c->n_allow_methods},
                 {"allowHeaders", c->allow_headers, c->n_allow_headers},
                 {"exposeHeaders", c->expose_headers, c->n_expose_headers}};

    if (c->n_allow_origins) {
        json_t *a = put_arr(t, o, "allowOrigins");
        for (size_t i = 0; i < c->n_allow_origins; i++) {
            json_t *m = push_obj(t, a);
            const wf_string_match *sm = &c->allow_origins[i];
            const char *v = sm->value ? sm->value : "";
            if (sm->kind == WF_SM_EXACT)
                put_str(t, m, "exact", v);
            else if (sm->kind == WF_SM_PREFIX)
                put_str(t, m, "prefix", v);
            else if (sm->kind == WF_SM_REGEX)
                put_str(t, m, "regex", v);
        }
    }
    for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
        json_t *a;
        if (!lists[l].n)
            continue;
        a = put_arr(t, o, lists[l].k);
        for (size_t i = 0; i < lists[l].n; i++)
            push_str(t, a, lists[l].v[i]);
    }
    if (c->max_age_ms >= 0)
        put_str(t, o, "maxAge", fmt_duration(t, c->max_age_ms));
    if (c->allow_credentials_set)
        put_bool(t, o, "allowCredentials", c->allow_credentials);
    if (c->unmatched_preflights > 0 && (unsigned)c->unmatched_preflights < 3)
        put_str(t, o, "unmatchedPreflights", preflight[c->unmatched_preflights]);
}

/* The router's per-route config: Istio's fields, under Istio's names. */
static void emit_router_config(tr *t, json_t *tpf, const wf_http_route *h, uint32_t vh_port)
{
    json_t *rc;

    if (h->timeout_ms < 0 && !h->rewrite && !h->headers && !h->redirect && !h->direct_response &&
        !h->mirror && !h->n_mirrors)
        return;
    rc = sub(t, tpf, "router");
    if (h->timeout_ms >= 0)
        put_str(t, rc, "timeout", fmt_duration(t, h->timeout_ms));
    if (h->rewrite) {
        json_t *rw = put_obj(t, rc, "rewrite");
        if (h->rewrite->uri)
            put_str(t, rw, "uri", h->rewrite->uri);
        if (h->rewrite->authority)
            put_str(t, rw, "authority", h->rewrite->authority);
        if (h->rewrite->uri_regex_match || h->rewrite->uri_regex_rewrite) {
            json_t *rx = put_obj(t, rw, "uriRegexRewrite");
            put_str(t, rx, "match", h->rewrite->uri_regex_match ? h->rewrite->uri_regex_match : "");
            put_str(t, rx, "rewrite",
                    h->rewrite->uri_regex_rewrite ? h->rewrite->uri_regex_rewrite : "");
        }
    }
    if (h->headers)
        emit_headers(t, rc, "headers", h->headers);
    if (h->redirect) {
        json_t *rd = put_obj(t, rc, "redirect");
        const wf_http_redirect *r = h->redirect;
        if (r->uri)
            put_str(t, rd, "uri", r->uri);
        if (r->authority)
            put_str(t, rd, "authority", r->authority);
        if (r->port)
            put_int(t, rd, "port", r->port);
        if (r->derive_port_set)
            put_str(t, rd, "derivePort",
                    r->derive_port == WF_REDIRECT_PORT_FROM_REQUEST_PORT ? "FROM_REQUEST_PORT"
                                                                         : "FROM_PROTOCOL_DEFAULT");
        if (r->scheme)
            put_str(t, rd, "scheme", r->scheme);
        put_int(t, rd, "redirectCode", r->redirect_code ? r->redirect_code : 301);
    }
    if (h->direct_response) {
        json_t *dr = put_obj(t, rc, "directResponse");
        put_int(t, dr, "status", h->direct_response->status);
        if (h->direct_response->body_string)
            put_str(t, put_obj(t, dr, "body"), "string", h->direct_response->body_string);
        else if (h->direct_response->body_bytes)
            put_str(t, put_obj(t, dr, "body"), "bytes", h->direct_response->body_bytes);
    }
    if (h->mirror) {
        emit_destination(t, put_obj(t, rc, "mirror"), h->mirror, vh_port);
        if (h->mirror_percentage_set)
            emit_percentage(t, rc, "mirrorPercentage", h->mirror_percentage);
    }
    if (h->n_mirrors) {
        json_t *a = put_arr(t, rc, "mirrors");
        for (size_t i = 0; i < h->n_mirrors; i++) {
            json_t *m = push_obj(t, a);
            emit_destination(t, put_obj(t, m, "destination"), &h->mirrors[i].destination, vh_port);
            if (h->mirrors[i].percentage_set)
                emit_percentage(t, m, "percentage", h->mirrors[i].percentage);
        }
    }
}

/* "route": one cluster, or weighted_clusters with Istio's weights.
 * Returns the RouteAction, or NULL when the route has no destination.  The
 * per-destination headers are weft router configs: not for gRPC. */
static json_t *emit_action(tr *t, json_t *r, const wf_http_route *h, uint32_t vh_port, json_t **tpf)
{
    const wf_http_route_destination *only = NULL;
    json_t *ra, *wc, *arr;
    long long sum = 0;
    size_t nonzero = 0;
    int equal = 0;

    if (h->n_route == 0)
        return NULL; /* redirect or directResponse: the router config says what to do */
    if (h->n_route == 1) {
        only = &h->route[0];
    } else {
        for (size_t i = 0; i < h->n_route; i++)
            if (h->route[i].weight > 0) {
                sum += h->route[i].weight;
                nonzero++;
                only = &h->route[i];
            }
        if (nonzero == 0) {
            /* Istio's validation refuses this; spread evenly rather than send nothing. */
            equal = 1;
            sum = (long long)h->n_route;
            only = NULL;
        } else if (nonzero > 1) {
            only = NULL;
        }
    }
    ra = put_obj(t, r, "route");
    if (only) {
        put_str(t, ra, "cluster", dest_cluster(t, &only->destination, vh_port));
        if (only->headers && !t->grpc) {
            if (!*tpf)
                *tpf = put_obj(t, r, "typed_per_filter_config");
            emit_headers(t, sub(t, *tpf, "router"), "destinationHeaders", only->headers);
        }
        return ra;
    }
    wc = put_obj(t, ra, "weighted_clusters");
    arr = put_arr(t, wc, "clusters");
    for (size_t i = 0; i < h->n_route; i++) {
        const wf_http_route_destination *d = &h->route[i];
        json_t *c;
        if (!equal && d->weight <= 0)
            continue;
        c = push_obj(t, arr);
        put_str(t, c, "name", dest_cluster(t, &d->destination, vh_port));
        put_int(t, c, "weight", equal ? 1 : d->weight);
        if (d->headers && !t->grpc)
            emit_headers(t, put_obj(t, put_obj(t, c, "typed_per_filter_config"), "router"),
                         "headers", d->headers);
    }
    /* Always written: gRPC 1.51 takes an absent total_weight as 100. */
    put_int(t, wc, "total_weight", sum);
    return ra;
}

/* ---- routes for proxyless gRPC -------------------------------------------------------------- */

static const char *const grpc_codes[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

/* Istio's abort.grpcStatus ("UNAVAILABLE", or a number) as a code; -1 if
 * it is neither. */
static int grpc_code(const char *s)
{
    char *end;
    long v;

    for (size_t i = 0; i < sizeof(grpc_codes) / sizeof(grpc_codes[0]); i++)
        if (strcasecmp(s, grpc_codes[i]) == 0)
            return (int)i;
    v = strtol(s, &end, 10);
    if (end != s && !*end && v >= 0 && v <= 16)
        return (int)v;
    return -1;
}

/* Envoy's FractionalPercent from Istio's percentage (a double percent, kept
 * to a millionth) or its deprecated integer percent; neither: nothing, which
 * gRPC reads as 0%, as Istio documents for an unset percentage. */
static void emit_fraction(tr *t, json_t *o, int set, double pct, int ipct)
{
    json_t *f;

    if (set) {
        double v = pct < 0 ? 0 : pct > 100 ? 100 : pct;
        f = put_obj(t, o, "percentage");
        put_int(t, f, "numerator", (json_int_t)(v * 10000 + 0.5));
        put_str(t, f, "denominator", "MILLION");
    } else if (ipct >= 0) {
        f = put_obj(t, o, "percentage");
        put_int(t, f, "numerator", ipct > 100 ? 100 : ipct);
        put_str(t, f, "denominator", "HUNDRED");
    }
}

/* Istio's fault as an Envoy HTTPFault (gRPC's fault filter, A33). */
static void emit_grpc_fault(tr *t, json_t *o, const wf_virtual_service *vs, size_t hi,
                            const wf_http_fault *f)
{
    put_str(t, o, "@type", FAULT_TYPE);
    if (f->delay) {
        json_t *d = put_obj(t, o, "delay");
        put_str(t, d, "fixed_delay",
                fmt_duration(t, f->delay->fixed_delay_ms >= 0 ? f->delay->fixed_delay_ms : 0));
        emit_fraction(t, d, f->delay->percentage_set, f->delay->percentage, f->delay->percent);
    }
    if (f->abort) {
        json_t *a = put_obj(t, o, "abort");
        int code = f->abort->grpc_status ? grpc_code(f->abort->grpc_status) : -1;
        if (code >= 0)
            put_int(t, a, "grpc_status", code);
        else if (f->abort->http_status)
            put_int(t, a, "http_status", f->abort->http_status);
        else {
            warn("VirtualService %s/%s: http[%zu]: fault.abort: grpcStatus \"%s\" is not a "
                 "gRPC status name or code and there is no httpStatus; proxyless gRPC clients "
                 "are aborted with UNAVAILABLE instead",
                 vs->meta.namespace_, vs->meta.name, hi,
                 f->abort->grpc_status ? f->abort->grpc_status : "");
            put_int(t, a, "grpc_status", 14);
        }
        emit_fraction(t, a, f->abort->percentage_set, f->abort->percentage, -1);
    }
}

/* What a gRPC client takes of a route besides match and destination:
 * timeout as max_stream_duration (gRPC ignores RouteAction.timeout), retries
 * (A44) and faults (A33).  Everything else Istio can say (rewrites, header
 * edits, mirrors, CORS, redirects) has no meaning for a gRPC client. */
static void emit_grpc_extras(tr *t, json_t *r, json_t *ra, const wf_virtual_service *vs, size_t hi)
{
    const wf_http_route *h = &vs->http[hi];

    /* Istio's timeout 0 means "no timeout", which is gRPC's default. */
    if (ra && h->timeout_ms > 0)
        put_str(t, put_obj(t, ra, "max_stream_duration"), "max_stream_duration",
                fmt_duration(t, h->timeout_ms));
    /* gRPC refuses num_retries 0; attempts 0 is Istio's "no retries". */
    if (ra && h->retries && h->retries->attempts > 0) {
        json_t *rp = put_obj(t, ra, "retry_policy");
        put_str(t, rp, "retry_on",
                h->retries->retry_on && h->retries->retry_on[0] ? h->retries->retry_on
                                                                : DEFAULT_RETRY_ON);
        put_int(t, rp, "num_retries", h->retries->attempts);
    }
    if (h->fault && (h->fault->delay || h->fault->abort))
        emit_grpc_fault(t, put_obj(t, put_obj(t, r, "typed_per_filter_config"), FAULT_NAME), vs, hi,
                        h->fault);
}

static void emit_route(tr *t, json_t *routes, const wf_virtual_service *vs, size_t hi,
                       const wf_http_match *m, size_t mi, uint32_t vh_port)
{
    const wf_http_route *h = &vs->http[hi];
    json_t *r = push_obj(t, routes), *tpf = NULL, *ra;

    if (h->name)
        put_str(t, r, "name", h->name);
    else if (h->n_match > 1)
        put_str(t, r, "name",
                tr_printf(t, "%s/%s.%zu.%zu", vs->meta.namespace_, vs->meta.name, hi, mi));
    else
        put_str(t, r, "name", tr_printf(t, "%s/%s.%zu", vs->meta.namespace_, vs->meta.name, hi));
    emit_match(t, r, m);
    ra = emit_action(t, r, h, vh_port, &tpf);
    if (t->grpc) {
        emit_grpc_extras(t, r, ra, vs, hi);
        return;
    }
    if (h->fault || h->retries || h->cors_policy || h->timeout_ms >= 0 || h->rewrite ||
        h->headers || h->redirect || h->direct_response || h->mirror || h->n_mirrors) {
        if (!tpf)
            tpf = put_obj(t, r, "typed_per_filter_config");
        if (h->fault)
            emit_fault(t, put_obj(t, tpf, "fault"), h->fault);
        if (h->retries)
            emit_retry(t, put_obj(t, tpf, "retry"), h->retries);
        if (h->cors_policy)
            emit_cors(t, put_obj(t, tpf, "cors"), h->cors_policy);
        emit_router_config(t, tpf, h, vh_port);
    }
}

static void emit_vs_routes(tr *t, json_t *routes, const tr_svc *s, const tr_port *pt)
{
    const wf_virtual_service *vs = s->vs;
    uint32_t port = pt->port->number;

    for (size_t i = 0; i < vs->n_http; i++) {
        const wf_http_route *h = &vs->http[i];
        if (h->delegate) {
            warn("VirtualService %s/%s: http[%zu]: delegate is not supported for sidecars; "
                 "route skipped",
                 vs->meta.namespace_, vs->meta.name, i);
            continue;
        }
        if (h->n_match == 0) {
            emit_route(t, routes, vs, i, NULL, 0, port);
            continue;
        }
        for (size_t j = 0; j < h->n_match; j++) {
            if (!SOURCE_APPLIES(t, &h->match[j], port))
                continue;
            /* gRPC has no query string: such a block never matches (gRPC
             * itself would ignore the route). */
            if (t->grpc && h->match[j].n_query_params)
                continue;
            emit_route(t, routes, vs, i, &h->match[j], j, port);
        }
    }
}

/* ---- virtual hosts -------------------------------------------------------------------------- */

/* Adds domain d unless an earlier virtual host claimed it (Envoy refuses a
 * route configuration with one domain in two virtual hosts). */
static void add_domain(tr *t, json_t *arr, const char *d, const tr_svc *s)
{
    if (json_object_get(t->domains, d)) {
        WF_DEBUG("translate: domain %s of %s already taken by another virtual host", d, s->key);
        return;
    }
    put(t, t->domains, d, json_true());
    push_str(t, arr, d);
}

/* Istio's aliases of a host: the host itself; for name.ns.svc.cluster.local
 * also name (same namespace only), name.ns and name.ns.svc; and the
 * ServiceEntry's addresses (VIPs, not CIDR ranges). */
static void emit_domains(tr *t, json_t *arr, const tr_svc *s, const tr_port *pt)
{
    const char *al[8];
    size_t n = 0, kl = strlen(s->key), sl = strlen(SVC_SUFFIX);
    uint32_t port = pt->port->number;
    char *const *addrs = s->se->addresses;

    al[n++] = s->key;
    if (kl > sl && strcmp(s->key + kl - sl, SVC_SUFFIX) == 0) {
        size_t l1 = strcspn(s->key, ".");
        size_t l2 = l1 < kl - sl ? strcspn(s->key + l1 + 1, ".") : 0;
        if (l1 && l2 && l1 + 1 + l2 == kl - sl) {
            const char *svc_ns = s->key + l1 + 1;
            if (strncmp(svc_ns, t->ns, l2) == 0 && t->ns[l2] == 0)
                al[n++] = tr_printf(t, "%.*s", (int)l1, s->key);
            al[n++] = tr_printf(t, "%.*s", (int)(l1 + 1 + l2), s->key);
            al[n++] = tr_printf(t, "%.*s.svc", (int)(l1 + 1 + l2), s->key);
        }
    }
    for (int bare = 0; bare < 2; bare++) {
        /* A gRPC api_listener holds one service port, and the server sends
         * its lowest port's listener for a target without a port, whose
         * authority is then the bare name: always list the bare forms. */
        if (bare && !(port == 80 || s->n_http == 1 || t->grpc))
            break;
        for (size_t i = 0; i < n; i++)
            add_domain(t, arr, bare ? al[i] : tr_printf(t, "%s:%u", al[i], port), s);
        for (size_t i = 0; i < s->se->n_addresses; i++) {
            char buf[INET6_ADDRSTRLEN];
            int v = addrs[i] ? ip_literal(addrs[i], buf) : 0;
            if (!v)
                continue; /* a CIDR range or a name: nothing a Host header carries */
            if (bare)
                add_domain(t, arr, v == 6 ? tr_printf(t, "[%s]", buf) : buf, s);
            else
                add_domain(t, arr, tr_printf(t, v == 6 ? "[%s]:%u" : "%s:%u", buf, port), s);
        }
    }
}

/* The virtual host of one service host and HTTP port. */
static json_t *emit_vhost(tr *t, json_t *vhs, const tr_svc *s, const tr_port *pt)
{
    json_t *vh = push_obj(t, vhs), *routes;

    put_str(t, vh, "name", tr_printf(t, "%s:%u", s->key, pt->port->number));
    emit_domains(t, put_arr(t, vh, "domains"), s, pt);
    routes = put_arr(t, vh, "routes");
    if (s->vs) {
        emit_vs_routes(t, routes, s, pt);
    } else {
        json_t *r = push_obj(t, routes);
        put_str(t, r, "name", "default");
        put_str(t, put_obj(t, r, "match"), "prefix", "/");
        put_str(t, put_obj(t, r, "route"), "cluster",
                tr_printf(t, "outbound|%u||%s", pt->port->number, s->key));
    }
    return vh;
}

static json_t *emit_outbound_routes(tr *t, json_t *hcm)
{
    json_t *rc = put_obj(t, hcm, "route_config"), *vhs;

    put_str(t, rc, "name", "outbound");
    vhs = put_arr(t, rc, "virtual_hosts");
    for (size_t i = 0; i < t->n_svcs; i++) {
        const tr_svc *s = &t->svcs[i];
        for (size_t k = 0; k < s->n_ports; k++)
            if (proto_is_http(s->ports[k].proto))
                emit_vhost(t, vhs, s, &s->ports[k]);
    }
    return rc;
}

/* Whether any route of virtual host vh carries a fault for gRPC. */
static int vhost_has_fault(json_t *vh)
{
    size_t i;
    json_t *r, *routes = json_object_get(vh, "routes");

    json_array_foreach(routes, i, r)
    {
        if (json_object_get(json_object_get(r, "typed_per_filter_config"), FAULT_NAME))
            return 1;
    }
    return 0;
}

/*
 * Proxyless gRPC: per service host and HTTP port, the Listener gRPC asks for
 * when dialled at xds:///HOST:PORT, an api_listener whose connection manager
 * carries the route configuration inline (no RDS round trip) with that one
 * virtual host.  gRPC wants the router as the last filter and knows the fault
 * filter, which is only added where a route uses it, so that a listener
 * without faults depends on nothing but the router.  The aliases a client
 * may dial ("reviews:9080") are served by istiod as this listener renamed,
 * so the virtual host's domains list them all.
 */
static void emit_api_listeners(tr *t, json_t *listeners)
{
    for (size_t i = 0; i < t->n_svcs; i++) {
        const tr_svc *s = &t->svcs[i];
        if (s->key[0] == '*')
            continue; /* a wildcard host is nothing a client can dial */
        for (size_t k = 0; k < s->n_ports; k++) {
            const tr_port *pt = &s->ports[k];
            const char *name;
            json_t *l, *hcm, *rc, *vh, *filters, *f;
            if (!proto_is_http(pt->proto))
                continue;
            name = tr_printf(t, "%s:%u", s->key, pt->port->number);
            l = push_obj(t, listeners);
            put_str(t, l, "name", name);
            hcm = put_obj(t, put_obj(t, l, "api_listener"), "api_listener");
            put_str(t, hcm, "@type", HCM_TYPE);
            rc = put_obj(t, hcm, "route_config");
            put_str(t, rc, "name", name);
            json_object_clear(t->domains); /* one route configuration per listener */
            vh = emit_vhost(t, put_arr(t, rc, "virtual_hosts"), s, pt);
            filters = put_arr(t, hcm, "http_filters");
            if (vhost_has_fault(vh)) {
                f = push_obj(t, filters);
                put_str(t, f, "name", FAULT_NAME);
                put_str(t, put_obj(t, f, "typed_config"), "@type", FAULT_TYPE);
            }
            f = push_obj(t, filters);
            put_str(t, f, "name", ROUTER_NAME);
            put_str(t, put_obj(t, f, "typed_config"), "@type", ROUTER_TYPE);
        }
    }
}

/* ---- http filters --------------------------------------------------------------------------- */

typedef struct tr_plugin {
    const wf_filter_plugin *fp;
    size_t anchor; /* goes right before chain[anchor]; n_chain = at the end */
    int phase_rank;
} tr_plugin;

static int cmp_plugin(const void *a, const void *b)
{
    const tr_plugin *x = a, *y = b;
    int c;

    if (x->anchor != y->anchor)
        return x->anchor < y->anchor ? -1 : 1;
    if (x->phase_rank != y->phase_rank)
        return x->phase_rank - y->phase_rank;
    if (x->fp->priority != y->fp->priority)
        return x->fp->priority > y->fp->priority ? -1 : 1;
    c = strcmp(x->fp->meta.namespace_, y->fp->meta.namespace_);
    return c ? c : strcmp(x->fp->meta.name, y->fp->meta.name);
}

static size_t chain_find(const wf_mesh_config *mc, const char *name)
{
    for (size_t i = 0; i < mc->n_filter_chain; i++)
        if (streq(mc->filter_chain[i], name))
            return i;
    return SIZE_MAX;
}

static void emit_filter(tr *t, json_t *arr, const char *name, const char *module, json_t *value)
{
    json_t *f = push_obj(t, arr), *tc;

    put_str(t, f, "name", name);
    tc = put_obj(t, f, "typed_config");
    put_str(t, tc, "@type", TYPED_STRUCT);
    put_str(t, tc, "type_url", tr_printf(t, MODULE_TYPE_PREFIX "%s", module));
    put(t, tc, "value", value);
}

/* MeshConfig.filterChain with this workload's FilterPlugins placed by
 * phase: AUTHN before the first of authn/authz, AUTHZ before authz, STATS
 * before metrics, others before router; a missing anchor means before
 * router, or the end.  At one place: phase order, then higher priority,
 * then namespace/name. */
static void emit_http_filters(tr *t, json_t *hcm)
{
    const wf_mesh_config *mc = &t->cfg->mesh;
    size_t n = mc->n_filter_chain, np = 0, router = chain_find(mc, "router");
    tr_plugin *pl = tr_array(t, t->cfg->n_filter_plugins, sizeof(*pl));
    json_t *arr = put_arr(t, hcm, "http_filters");

    if (router == SIZE_MAX)
        router = n;
    for (size_t i = 0; i < t->cfg->n_filter_plugins; i++) {
        const wf_filter_plugin *fp = &t->cfg->filter_plugins[i];
        size_t a = SIZE_MAX;

        if (!streq(fp->meta.namespace_, t->ns) && !streq(fp->meta.namespace_, t->root_ns))
            continue;
        if (fp->selector &&
            !proxy_has_labels(t, fp->selector->match_labels, fp->selector->n_match_labels))
            continue;
        switch (fp->phase) {
        case WF_PHASE_AUTHN: {
            size_t an = chain_find(mc, "authn"), az = chain_find(mc, "authz");
            a = an < az ? an : az;
            pl[np].phase_rank = 0;
            break;
        }
        case WF_PHASE_AUTHZ:
            a = chain_find(mc, "authz");
            pl[np].phase_rank = 1;
            break;
        case WF_PHASE_STATS:
            a = chain_find(mc, "metrics");
            pl[np].phase_rank = 2;
            break;
        case WF_PHASE_UNSPECIFIED:
        default:
            a = router;
            pl[np].phase_rank = 3;
            break;
        }
        pl[np].fp = fp;
        pl[np++].anchor = a == SIZE_MAX ? router : a;
    }
    if (np)
        qsort(pl, np, sizeof(*pl), cmp_plugin);
    for (size_t i = 0, j = 0; i <= n; i++) {
        for (; j < np && pl[j].anchor == i; j++) {
            const wf_filter_plugin *fp = pl[j].fp;
            json_t *v = fp->plugin_config ? json_deep_copy(fp->plugin_config) : json_object();
            if (!v)
                OOM(t);
            emit_filter(t, arr, tr_printf(t, "%s.%s", fp->meta.namespace_, fp->meta.name),
                        fp->module ? fp->module : "", v);
        }
        if (i < n)
            emit_filter(t, arr, mc->filter_chain[i], mc->filter_chain[i], json_object());
    }
}

/* ---- listeners ------------------------------------------------------------------------------ */

/* A listener without filter chains yet. */
static json_t *emit_listener(tr *t, json_t *listeners, const char *name, const char *addr, int port,
                             const char *direction)
{
    json_t *l = push_obj(t, listeners), *sa;

    put_str(t, l, "name", name);
    sa = put_obj(t, put_obj(t, l, "address"), "socket_address");
    put_str(t, sa, "address", addr);
    put_int(t, sa, "port_value", port);
    put_str(t, l, "traffic_direction", direction);
    return l;
}

/* chain.filters: one http_connection_manager; returns its typed_config. */
static json_t *emit_hcm(tr *t, json_t *chain, const char *stat, const char *addr, int port)
{
    json_t *f = push_obj(t, put_arr(t, chain, "filters")), *hcm;

    put_str(t, f, "name", HCM_NAME);
    hcm = put_obj(t, f, "typed_config");
    put_str(t, hcm, "@type", HCM_TYPE);
    put_str(t, hcm, "stat_prefix", tr_printf(t, "%s_%s_%d", stat, addr, port));
    /* Istio's: WebSocket allowed, idle connections and upgraded streams
     * closed after Envoy's default times. */
    put_str(t, push_obj(t, put_arr(t, hcm, "upgrade_configs")), "upgrade_type", "websocket");
    put_str(t, put_obj(t, hcm, "common_http_protocol_options"), "idle_timeout",
            fmt_duration(t, DEFAULT_HTTP_IDLE_MS));
    put_str(t, hcm, "stream_idle_timeout", fmt_duration(t, DEFAULT_STREAM_IDLE_MS));
    return hcm;
}

/* ---- opaque TCP and TLS passthrough --------------------------------------------------------- */

/* Where a tcp or tls route (or a port without one) sends connections. */
typedef struct tr_dests {
    char **cluster;
    int *weight; /* used when n > 1 */
    size_t n;
    int64_t idle_ms; /* tcp_proxy idle_timeout */
} tr_dests;

/* The idle timeout of connections to a service port (and subset): the
 * DestinationRule's connectionPool.tcp.idleTimeout, merged as for the
 * cluster ("0s", Envoy's "never", when the rule says 0), else Istio's and
 * Envoy's hour. */
static int64_t tcp_idle(tr *t, const tr_svc *s, const char *subset, uint32_t port)
{
    const wf_subset *ss = NULL;
    tr_policy pol;

    if (!s)
        return DEFAULT_TCP_IDLE_MS;
    for (size_t i = 0; s->dr && subset && i < s->dr->n_subsets; i++)
        if (streq(s->dr->subsets[i].name, subset))
            ss = &s->dr->subsets[i];
    pol = merge_policy(s->dr, ss, port);
    if (pol.cp && pol.cp->tcp && pol.cp->tcp->idle_timeout_ms >= 0)
        return pol.cp->tcp->idle_timeout_ms;
    return DEFAULT_TCP_IDLE_MS;
}

/* A port's own service and nothing else. */
static tr_dests own_dests(tr *t, const tr_svc *s, uint32_t port)
{
    tr_dests d = {0};

    d.cluster = tr_array(t, 1, sizeof(*d.cluster));
    d.weight = tr_array(t, 1, sizeof(*d.weight));
    d.cluster[0] = tr_printf(t, "outbound|%u||%s", port, s->key);
    d.weight[0] = 1;
    d.n = 1;
    d.idle_ms = tcp_idle(t, s, NULL, port);
    return d;
}

/*
 * The destinations of a tcp/tls route of service s on a port, weighted as
 * HTTP routes are (emit_action): one destination, or only one with a
 * weight, is a cluster; several with weights are weighted_clusters; none
 * with a weight (Istio's validation refuses it) spreads evenly.  The idle
 * timeout is the single destination's (its service, subset and port), or,
 * with several, that of s on the port.
 */
static tr_dests route_dests(tr *t, const tr_svc *s, const wf_route_destination *rd, size_t n,
                            uint32_t port)
{
    tr_dests d = {0};
    const wf_destination *one = NULL;
    size_t nonzero = 0;

    for (size_t i = 0; i < n; i++)
        nonzero += rd[i].weight > 0;
    d.cluster = tr_array(t, n + 1, sizeof(*d.cluster));
    d.weight = tr_array(t, n + 1, sizeof(*d.weight));
    for (size_t i = 0; i < n; i++) {
        if (n > 1 && nonzero && rd[i].weight <= 0)
            continue; /* weight 0: no traffic */
        one = &rd[i].destination;
        d.cluster[d.n] = dest_cluster(t, one, port);
        d.weight[d.n++] = nonzero ? rd[i].weight : 1;
    }
    if (d.n == 1)
        d.idle_ms = tcp_idle(t, find_svc(t, one->host), one->subset, dest_port(t, one, port));
    else
        d.idle_ms = tcp_idle(t, s, NULL, port);
    return d;
}

/* chain.filters: one tcp_proxy to d's destinations. */
static void emit_tcp_proxy(tr *t, json_t *chain, const char *stat, const tr_dests *d)
{
    json_t *f = push_obj(t, put_arr(t, chain, "filters")), *tp;

    put_str(t, f, "name", TCP_PROXY_NAME);
    tp = put_obj(t, f, "typed_config");
    put_str(t, tp, "@type", TCP_PROXY_TYPE);
    put_str(t, tp, "stat_prefix", stat);
    if (d->n == 1) {
        put_str(t, tp, "cluster", d->cluster[0]);
    } else {
        json_t *arr = put_arr(t, put_obj(t, tp, "weighted_clusters"), "clusters");
        for (size_t i = 0; i < d->n; i++) {
            json_t *o = push_obj(t, arr);
            put_str(t, o, "name", d->cluster[i]);
            put_int(t, o, "weight", d->weight[i]);
        }
    }
    put_str(t, tp, "idle_timeout", fmt_duration(t, d->idle_ms));
}

/* A tcp/tls match block naming subnets, which weft cannot match on yet:
 * warned about once, and the block is skipped rather than widened to
 * every client and destination.  Returns 1 to skip. */
static int l4_subnets(tr *t, const wf_virtual_service *vs, const char *kind, size_t ri,
                      const void *m, size_t n_dest, const char *source)
{
    if (!n_dest && !source)
        return 0;
    if (first_warning(t, m, "subnets"))
        warn("VirtualService %s/%s: %s[%zu]: match.%s is not supported; that match block is "
             "skipped (match on port, sourceLabels or sourceNamespace instead)",
             vs->meta.namespace_, vs->meta.name, kind, ri,
             n_dest ? "destinationSubnets" : "sourceSubnet");
    return 1;
}

/*
 * A new filter chain named name on the outbound listener of a TCP or TLS
 * port, the listener made on first use (with a TLS inspector once a chain
 * matches server names).  t->l4 keeps, per port, the listener ("P"), the
 * TCP service that took the port ("P tcp") and the server names claimed
 * ("P sni NAME").
 */
static json_t *l4_chain(tr *t, json_t *listeners, const char *oa, uint32_t port, const char *name,
                        char *const *sni, size_t n_sni)
{
    const char *key = tr_printf(t, "%u", port);
    json_t *l = json_object_get(t->l4, key), *fc, *lf, *arr;

    if (!l) {
        l = push_obj(t, listeners);
        put(t, t->l4, key, json_incref(l));
        put_str(t, l, "name", tr_printf(t, "%s_%u", oa, port));
        lf = put_obj(t, put_obj(t, l, "address"), "socket_address");
        put_str(t, lf, "address", oa);
        put_int(t, lf, "port_value", port);
        put_str(t, l, "traffic_direction", "OUTBOUND");
        put_arr(t, l, "filter_chains");
    }
    if (n_sni && !json_object_get(l, "listener_filters")) {
        lf = push_obj(t, put_arr(t, l, "listener_filters"));
        put_str(t, lf, "name", TLS_INSPECTOR_NAME);
        put_str(t, put_obj(t, lf, "typed_config"), "@type", TLS_INSPECTOR_TYPE);
    }
    fc = push_obj(t, json_object_get(l, "filter_chains"));
    put_str(t, fc, "name", name);
    if (n_sni) {
        arr = put_arr(t, put_obj(t, fc, "filter_chain_match"), "server_names");
        for (size_t i = 0; i < n_sni; i++)
            push_str(t, arr, sni[i]);
    }
    return fc;
}

/*
 * Claims server name sni on port for chain name; 0 when an earlier chain
 * has it (Envoy refuses a listener whose chains match alike, so the first
 * keeps it: services in host order, routes in order).
 */
static int claim_sni(tr *t, uint32_t port, const char *sni, const char *name)
{
    const char *key = tr_printf(t, "%u sni %s", port, tr_lower(t, sni));
    json_t *had = json_object_get(t->l4, key);

    if (had) {
        WF_DEBUG("translate: server name %s on port %u already goes to %s; not to %s", sni, port,
                 json_string_value(had), name);
        return 0;
    }
    put_str(t, t->l4, key, name);
    return 1;
}

/* A TCP port of service s: one chain for the whole port, the first
 * service by host name taking it, routed by s's VirtualService tcp routes. */
static void emit_tcp_port(tr *t, json_t *listeners, const char *oa, const tr_svc *s, uint32_t port)
{
    const char *name = tr_printf(t, "outbound|%u||%s", port, s->key);
    const char *key = tr_printf(t, "%u tcp", port);
    const char *winner = json_string_value(json_object_get(t->l4, key));
    const wf_virtual_service *vs;
    tr_dests d = own_dests(t, s, port);

    if (winner) {
        if (first_warning(t, s, key))
            warn("service %s: TCP port %u is also a port of %s; without service VIPs nothing "
                 "tells TCP services on one port apart, so %s:%u relays to %s only (the first "
                 "by host name); give the services different ports",
                 s->key, port, winner, oa, port, winner);
        return;
    }
    put_str(t, t->l4, key, s->key);
    vs = find_vs(t, s, VS_TCP);
    for (size_t r = 0; vs && r < vs->n_tcp; r++) {
        const wf_tcp_route *rt = &vs->tcp[r];
        int ok = rt->n_match == 0;
        for (size_t m = 0; m < rt->n_match && !ok; m++) {
            const wf_l4_match *lm = &rt->match[m];
            ok = !l4_subnets(t, vs, "tcp", r, lm, lm->n_destination_subnets, lm->source_subnet) &&
                 SOURCE_APPLIES(t, lm, port);
        }
        if (!ok)
            continue;
        if (rt->n_route)
            d = route_dests(t, s, rt->route, rt->n_route, port);
        break;
    }
    emit_tcp_proxy(t, l4_chain(t, listeners, oa, port, name, NULL, 0), name, &d);
}

/* A TLS port of service s: a chain per tls route of its VirtualService
 * that applies (its sniHosts as server names); with none, one chain for
 * the service's own host.  Several services share a TLS port by SNI. */
static void emit_tls_port(tr *t, json_t *listeners, const char *oa, const tr_svc *s, uint32_t port)
{
    const char *own = tr_printf(t, "outbound|%u||%s", port, s->key);
    const wf_virtual_service *vs = find_vs(t, s, VS_TLS);
    int routed = 0;
    tr_dests d;

    for (size_t r = 0; vs && r < vs->n_tls; r++) {
        const wf_tls_route *rt = &vs->tls[r];
        const char *name = tr_printf(t, "%s/tls.%zu", own, r);
        size_t n = 0, cap = 0;
        char **sni = NULL;

        for (size_t m = 0; m < rt->n_match; m++) {
            const wf_tls_match *tm = &rt->match[m];
            if (l4_subnets(t, vs, "tls", r, tm, tm->n_destination_subnets, NULL) ||
                !SOURCE_APPLIES(t, tm, port))
                continue;
            routed = 1;
            for (size_t h = 0; h < tm->n_sni_hosts; h++) {
                if (!tm->sni_hosts[h] || !tm->sni_hosts[h][0] ||
                    !claim_sni(t, port, tm->sni_hosts[h], name))
                    continue;
                sni = tr_grow(t, sni, &cap, n, sizeof(*sni));
                sni[n++] = tm->sni_hosts[h];
            }
        }
        if (!n || !rt->n_route)
            continue;
        d = route_dests(t, s, rt->route, rt->n_route, port);
        emit_tcp_proxy(t, l4_chain(t, listeners, oa, port, name, sni, n), own, &d);
    }
    if (routed || !claim_sni(t, port, s->key, own))
        return;
    d = own_dests(t, s, port);
    emit_tcp_proxy(t, l4_chain(t, listeners, oa, port, own, &s->key, 1), own, &d);
}

/* Explicit mode's counterpart of Istio's capture: every TCP and TLS service
 * port gets a listener of its own on the outbound address, except a port
 * the proxy's own listeners use (ip < 0: no inbound listener). */
static void emit_l4_listeners(tr *t, json_t *listeners, const char *oa, int op, int ip)
{
    for (size_t i = 0; i < t->n_svcs; i++) {
        const tr_svc *s = &t->svcs[i];
        if (s->key[0] == '*')
            continue; /* a wildcard host has no port a client could dial */
        for (size_t k = 0; k < s->n_ports; k++) {
            const tr_port *pt = &s->ports[k];
            uint32_t port = pt->port->number;
            if (proto_is_http(pt->proto) || pt->proto == PR_UDP)
                continue;
            if ((int)port == op || (int)port == ip) {
                if (first_warning(t, s, tr_printf(t, "port%u", port)))
                    warn("service %s: %s port %u is the port of the proxy's own %s listener, "
                         "so it is not served; move the listener (flag --%s) or the service "
                         "to another port",
                         s->key, pt->proto == PR_TLS || pt->proto == PR_HTTPS ? "TLS" : "TCP", port,
                         (int)port == op ? "outbound" : "inbound",
                         (int)port == op ? "outbound" : "inbound");
                continue;
            }
            if (pt->proto == PR_TLS || pt->proto == PR_HTTPS)
                emit_tls_port(t, listeners, oa, s, port);
            else
                emit_tcp_port(t, listeners, oa, s, port);
        }
    }
}

/* The inbound side of mTLS: the workload certificate, a peer certificate
 * the mesh's roots signed required (any identity: authorization is not
 * the transport's job), HTTP/2 or HTTP/1.1. */
static void emit_inbound_tls(tr *t, json_t *chain)
{
    json_t *ts = put_obj(t, chain, "transport_socket"), *tc, *ctx, *alpn;

    put_str(t, ts, "name", TLS_SOCKET_NAME);
    tc = put_obj(t, ts, "typed_config");
    put_str(t, tc, "@type", DOWNSTREAM_TLS_TYPE);
    ctx = put_obj(t, tc, "common_tls_context");
    emit_sds_cert(t, ctx);
    emit_mesh_validation(t, ctx, NULL, 0);
    alpn = put_arr(t, ctx, "alpn_protocols");
    push_str(t, alpn, "h2");
    push_str(t, alpn, "http/1.1");
    put_bool(t, tc, "require_client_certificate", 1);
}

static void emit_inbound(tr *t, json_t *listeners, json_t *clusters, json_t *endpoints)
{
    const wf_proxy_info *p = t->p;
    int port = p->inbound_port ? p->inbound_port : 15006;
    const char *addr = p->inbound_addr ? p->inbound_addr : "0.0.0.0";
    char *cname = tr_printf(t, "inbound|%d||", p->app_port);
    json_t *l, *lf, *chains, *chain[2] = {NULL, NULL}, *hcm, *rc, *vh, *r, *c, *la, *lbes;
    /* STRICT: mTLS only; PERMISSIVE: either, told apart by the TLS
     * inspector; DISABLE: plaintext only. */
    wf_mtls_mode mode = wf__peer_auth_mode(t->cfg, t->ns, t->labels, p->app_port, 0);
    int app_tcp = p->app_protocol && strcasecmp(p->app_protocol, "tcp") == 0;
    int want[2] = {mode != WF_MTLS_DISABLE, mode != WF_MTLS_STRICT};

    l = emit_listener(t, listeners, "virtualInbound", addr, port, "INBOUND");
    lf = push_obj(t, put_arr(t, l, "listener_filters"));
    put_str(t, lf, "name", TLS_INSPECTOR_NAME);
    put_str(t, put_obj(t, lf, "typed_config"), "@type", TLS_INSPECTOR_TYPE);
    chains = put_arr(t, l, "filter_chains");
    for (int k = 0; k < 2; k++) {
        if (!want[k])
            continue;
        chain[k] = push_obj(t, chains);
        put_str(t, chain[k], "name", k == 0 ? "virtualInbound-tls" : "virtualInbound-plaintext");
        put_str(t, put_obj(t, chain[k], "filter_chain_match"), "transport_protocol",
                k == 0 ? "tls" : "raw_buffer");
        if (k == 0)
            emit_inbound_tls(t, chain[k]);
    }
    if (app_tcp) {
        /* An app that speaks TCP: each chain relays the bytes as they come. */
        int one = 1;
        tr_dests d = {&cname, &one, 1, DEFAULT_TCP_IDLE_MS};
        for (int k = 0; k < 2; k++)
            if (chain[k])
                emit_tcp_proxy(t, chain[k], cname, &d);
    } else {
        hcm = emit_hcm(t, chain[0] ? chain[0] : chain[1], "inbound", addr, port);
        rc = put_obj(t, hcm, "route_config");
        put_str(t, rc, "name", "inbound");
        vh = push_obj(t, put_arr(t, rc, "virtual_hosts"));
        put_str(t, vh, "name", tr_printf(t, "inbound|http|%d", p->app_port));
        push_str(t, put_arr(t, vh, "domains"), "*");
        r = push_obj(t, put_arr(t, vh, "routes"));
        put_str(t, r, "name", "default");
        put_str(t, put_obj(t, r, "match"), "prefix", "/");
        put_str(t, put_obj(t, r, "route"), "cluster", cname);
        emit_http_filters(t, hcm);
        /* The same connection manager behind either transport. */
        if (chain[0] && chain[1])
            put(t, chain[1], "filters", json_deep_copy(json_object_get(chain[0], "filters")));
    }

    c = push_obj(t, clusters);
    put_str(t, c, "name", cname);
    put_str(t, c, "type", "STATIC");
    put_str(t, c, "lb_policy", "ROUND_ROBIN");
    put_str(t, c, "connect_timeout", fmt_duration(t, DEFAULT_CONNECT_TIMEOUT_MS));
    /* The app's own protocol: HTTP/2 apps (gRPC) get h2c with prior knowledge. */
    if (p->app_protocol &&
        (strcasecmp(p->app_protocol, "http2") == 0 || strcasecmp(p->app_protocol, "grpc") == 0))
        put_obj(t, c, "http2_protocol_options");
    /* Envoy reads a STATIC cluster's endpoints from load_assignment; weft's
     * snapshot reads every cluster's from "endpoints".  Both are given. */
    la = put_obj(t, c, "load_assignment");
    for (int k = 0; k < 2; k++) {
        json_t *loc, *e, *sa;
        if (k == 1)
            la = push_obj(t, endpoints);
        put_str(t, la, "cluster_name", cname);
        loc = push_obj(t, put_arr(t, la, "endpoints"));
        put_obj(t, loc, "locality");
        put_int(t, loc, "load_balancing_weight", 1);
        lbes = put_arr(t, loc, "lb_endpoints");
        e = push_obj(t, lbes);
        sa = put_obj(t, put_obj(t, put_obj(t, e, "endpoint"), "address"), "socket_address");
        put_str(t, sa, "address", "127.0.0.1");
        put_int(t, sa, "port_value", p->app_port);
        put_str(t, e, "health_status", "HEALTHY");
        put_int(t, e, "load_balancing_weight", 1);
    }
}

/* ---- the whole translation ------------------------------------------------------------------ */

/* FNV-1a, 64 bits: stable across runs and machines, which is all a
 * version needs. */
/* json_dump_callback's sink: FNV-1a over the text, never held whole. */
static int fnv1a_cb(const char *buf, size_t size, void *data)
{
    uint64_t *h = data;

    for (size_t i = 0; i < size; i++) {
        *h ^= (unsigned char)buf[i];
        *h *= 1099511628211ULL;
    }
    return 0;
}

static void check_proxy(tr *t)
{
    const wf_proxy_info *p = t->p;

    t->grpc = streq(p->role, "grpc");
    if (p->role && !streq(p->role, "proxy") && !t->grpc)
        fail(t,
             "translate: role \"%s\" is not supported yet (only \"proxy\" and \"grpc\"): "
             "Gateway listeners are not translated yet",
             p->role);
    if (!p->namespace_ || !p->namespace_[0])
        fail(t, "translate: the workload has no namespace (set --namespace)");
    if (p->app_protocol && strcasecmp(p->app_protocol, "http") != 0 &&
        strcasecmp(p->app_protocol, "http2") != 0 && strcasecmp(p->app_protocol, "grpc") != 0 &&
        strcasecmp(p->app_protocol, "tcp") != 0)
        fail(t, "translate: app protocol \"%s\" is not http, http2, grpc or tcp", p->app_protocol);
    if (p->app_port < 0 || p->app_port > 65535 || p->outbound_port < 0 ||
        p->outbound_port > 65535 || p->inbound_port < 0 || p->inbound_port > 65535)
        fail(t, "translate: port out of range (outbound %d, inbound %d, app %d)", p->outbound_port,
             p->inbound_port, p->app_port);
    t->ns = p->namespace_;
    t->labels = p->labels;
    if (p->labels)
        while (p->labels[2 * t->n_labels]) {
            if (!p->labels[2 * t->n_labels + 1])
                fail(t, "translate: workload label \"%s\" has no value",
                     p->labels[2 * t->n_labels]);
            t->n_labels++;
        }
}

static void translate_all(tr *t)
{
    const wf_proxy_info *p = t->p;
    json_t *listeners, *clusters, *endpoints, *hcm;
    uint64_t h;

    check_proxy(t);
    t->root_ns = t->cfg->mesh.root_namespace ? t->cfg->mesh.root_namespace : "istio-system";
    t->td = t->cfg->mesh.trust_domain && t->cfg->mesh.trust_domain[0] ? t->cfg->mesh.trust_domain
                                                                      : DEFAULT_TRUST_DOMAIN;
    if (!(t->bundle = json_object()) || !(t->domains = json_object()) ||
        !(t->seen = json_object()) || !(t->warned = json_object()) || !(t->l4 = json_object()))
        OOM(t);
    put_str(t, t->bundle, "version_info", "");
    listeners = put_arr(t, t->bundle, "listeners");
    clusters = put_arr(t, t->bundle, "clusters");
    endpoints = put_arr(t, t->bundle, "endpoints");

    build_registry(t);
    emit_clusters(t, clusters, endpoints);

    if (t->grpc) {
        /* A proxyless client has no listening sockets and no inbound side. */
        emit_api_listeners(t, listeners);
    } else {
        const char *oa = p->outbound_addr ? p->outbound_addr : "127.0.0.1";
        int op = p->outbound_port ? p->outbound_port : 15001;
        json_t *l = emit_listener(t, listeners, "virtualOutbound", oa, op, "OUTBOUND");
        hcm = emit_hcm(t, push_obj(t, put_arr(t, l, "filter_chains")), "outbound", oa, op);
        emit_outbound_routes(t, hcm);
        emit_http_filters(t, hcm);
        emit_l4_listeners(t, listeners, oa, op,
                          p->app_port > 0 ? (p->inbound_port ? p->inbound_port : 15006) : -1);
        if (p->app_port > 0)
            emit_inbound(t, listeners, clusters, endpoints);
    }
    /* The version: a hash of the bundle's text, streamed.  Keys are not
     * sorted: the translation builds every object in the same order from
     * the same configuration, and sorting was a third of istiod's time
     * for an endpoint change. */
    if (p->no_version)
        return;
    h = 14695981039346656037ULL;
    if (json_dump_callback(t->bundle, fnv1a_cb, &h, JSON_COMPACT) < 0)
        OOM(t);
    put_str(t, t->bundle, "version_info", tr_printf(t, "%016llx", (unsigned long long)h));
}

static void cleanup(tr *t)
{
    wf_arena_reset(&t->scratch);
    wf_arena_thread_release(); /* translations are rare: keep no blocks for them */
    json_decref(t->bundle);
    json_decref(t->domains);
    json_decref(t->seen);
    json_decref(t->warned);
    json_decref(t->l4);
}

json_t *wf_translate(const wf_config *cfg, const wf_proxy_info *p, char *err, size_t errlen)
{
    tr t;
    json_t *out;

    if (err && errlen)
        err[0] = 0;
    if (!cfg || !p) {
        if (err && errlen)
            snprintf(err, errlen, "translate: no %s given", cfg ? "workload" : "configuration");
        return NULL;
    }
    memset(&t, 0, sizeof(t));
    wf_arena_init(&t.scratch, SIZE_MAX / 2);
    t.err = err;
    t.errlen = errlen;
    t.cfg = cfg;
    t.p = p;
    if (setjmp(t.jb) != 0) {
        cleanup(&t);
        return NULL;
    }
    translate_all(&t);
    out = t.bundle;
    t.bundle = NULL;
    cleanup(&t);
    return out;
}
