/*
 * snapshot.c: compiles a resource bundle (Envoy v3 resources as JSON, see
 * docs/resources.md) into an immutable snapshot: clusters with their
 * endpoints and balancer schedules, listeners with their filter chains and
 * each filter's module and per-route configuration.  Built on the main
 * thread; a failure anywhere refuses the whole bundle.
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "util/flags.h"
#include "util/ctree.h"
#include "util/jpack.h"
#include "util/log.h"

#define TYPE_PREFIX "weft.io/module/"

static uint64_t parse_duration_ms(const char *s, uint64_t dflt)
{
    char *end;
    double v;

    if (!s)
        return dflt;
    v = strtod(s, &end);
    if (end == s || v < 0)
        return dflt;
    if (strcmp(end, "s") == 0)
        return (uint64_t)(v * 1000.0);
    if (strcmp(end, "ms") == 0)
        return (uint64_t)v;
    return dflt;
}

static void chain_free(wf_chain *c)
{
    for (size_t i = 0; i < c->route_cfgs.cap; i++) {
        void **cfgs = c->route_cfgs.e ? c->route_cfgs.e[i].value : NULL;
        if (!c->route_cfgs.e || !c->route_cfgs.e[i].key)
            continue;
        for (size_t k = 0; k < c->n; k++)
            if (cfgs[k] && c->f[k].m->route_config_destroy)
                c->f[k].m->route_config_destroy(c->f[k].cfg, cfgs[k]);
        free(cfgs);
    }
    wf_map_free(&c->route_cfgs);
    for (size_t i = 0; i < c->n; i++) {
        if (c->f[i].cfg && c->f[i].m->config_destroy)
            c->f[i].m->config_destroy(c->f[i].cfg);
        free(c->f[i].name);
        free(c->f[i].module);
        wf_ctree_free(c->f[i].config);
    }
    free(c->f);
}

static void up_tls_free(wf_up_tls *t)
{
    if (!t)
        return;
    wf_tls_ctx_unref(t->ctx);
    for (size_t i = 0; i < t->n_sans; i++)
        free(t->sans[i]);
    free(t->sans);
    free(t->sni);
    free(t);
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void listener_free(wf_listener *l)
{
    chain_free(&l->chain);
    wf_ctree_free(l->route_table);
    free(l->name);
    for (size_t i = 0; i < l->n_l4; i++) {
        wf_l4_route *r = &l->l4[i];
        free(r->name);
        strv_free(r->server_names, r->n_server_names);
        for (size_t k = 0; k < r->n_dests; k++)
            free(r->dests[k].cluster_name);
        free(r->dests);
    }
    free(l->l4);
    strv_free(l->upgrades, l->n_upgrades);
}

static void free_eps(wf_cluster *cl)
{
    for (size_t i = 0; cl->eps && i < cl->n_eps; i++)
        free(cl->eps[i].ip);
    free(cl->eps);
    cl->eps = NULL;
}

static void snapshot_free(wf_snapshot *s)
{
    for (size_t i = 0; i < s->n_ls; i++)
        listener_free(&s->ls[i]);
    free(s->ls);
    for (size_t i = 0; i < s->n_cls; i++) {
        free(s->cls[i].name);
        free_eps(&s->cls[i]);
        free(s->cls[i].sched);
        free(s->cls[i].infos);
        up_tls_free(s->cls[i].tls_match);
        up_tls_free(s->cls[i].tls_default);
    }
    free(s->cls);
    wf_map_free(&s->cluster_by_name);
    json_decref(s->listeners);
    wf_ctree_free(s->labels);
    json_decref(s->dump_rest);
    free(s->version);
    free(s);
}

void wf_snapshot_ref(wf_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void wf_snapshot_unref(wf_snapshot *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        snapshot_free(s);
}

wf_cluster *wf_snapshot_cluster(const wf_snapshot *s, const char *name)
{
    void *v = wf_map_get(&s->cluster_by_name, name, strlen(name));
    return v ? &s->cls[(uintptr_t)v - 1] : NULL;
}

/* Reads a whole PEM file named by a DataSource ({"filename": ...}). */
static char *read_source(json_t *ds, const char *what, const char *cluster, char *err,
                         size_t errlen)
{
    const char *fn = json_string_value(json_object_get(ds, "filename"));
    const char *inl = json_string_value(json_object_get(ds, "inline_string"));
    char *buf;
    int r;

    if (inl)
        return strdup(inl);
    if (!fn) {
        snprintf(err, errlen, "cluster %s: %s has no filename", cluster, what);
        return NULL;
    }
    if ((r = wf_read_file(fn, 1 << 20, &buf, NULL)) < 0) {
        snprintf(err, errlen, "cluster %s: cannot read %s %s: %s", cluster, what, fn,
                 strerror(-r));
        return NULL;
    }
    return buf;
}

static int add_sans(wf_up_tls *t, json_t *matchers)
{
    size_t i;
    json_t *m;

    json_array_foreach(matchers, i, m)
    {
        const char *v = json_string_value(json_object_get(m, "exact"));
        char **n;
        if (!v)
            continue;
        n = realloc(t->sans, (t->n_sans + 1) * sizeof(*n));
        if (!n)
            return -1;
        t->sans = n;
        if (!(t->sans[t->n_sans] = strdup(v)))
            return -1;
        t->n_sans++;
    }
    return 0;
}

/*
 * A cluster's transport socket: NULL with *out NULL for raw_buffer (or
 * none); ISTIO_MUTUAL when the certificate comes from the SDS secret
 * "default" (the workload's own, filled by the proxy); otherwise SIMPLE or
 * MUTUAL toward an external server with files of its own.
 */
static int parse_up_tls(json_t *ts, const char *cluster, int h2, wf_up_tls **out, char *err,
                        size_t errlen)
{
    const char *name = json_string_value(json_object_get(ts, "name"));
    json_t *tc = json_object_get(ts, "typed_config");
    json_t *common = json_object_get(tc, "common_tls_context");
    json_t *sds = json_object_get(common, "tls_certificate_sds_secret_configs");
    json_t *combined = json_object_get(common, "combined_validation_context");
    json_t *vc = json_object_get(common, "validation_context");
    json_t *certs = json_array_get(json_object_get(common, "tls_certificates"), 0);
    wf_up_tls *t;
    char *roots = NULL, *chain = NULL, *key = NULL;
    int r = -1;

    *out = NULL;
    if (!ts || !name || strcmp(name, "envoy.transport_sockets.raw_buffer") == 0)
        return 0;
    if (strcmp(name, "envoy.transport_sockets.tls") != 0) {
        snprintf(err, errlen, "cluster %s: unsupported transport socket %s", cluster, name);
        return -1;
    }
    if (!(t = calloc(1, sizeof(*t))))
        return -1;
    if (json_string_value(json_object_get(tc, "sni")))
        t->sni = strdup(json_string_value(json_object_get(tc, "sni")));
    if (json_array_size(sds) > 0) {
        const char *sn = json_string_value(json_object_get(json_array_get(sds, 0), "name"));
        if (!sn || strcmp(sn, "default") != 0) {
            snprintf(err, errlen,
                     "cluster %s: only the SDS secret \"default\" (the workload certificate) is "
                     "supported, not %s",
                     cluster, sn ? sn : "(unnamed)");
            goto out;
        }
        t->istio = 1;
        if (add_sans(t, json_object_get(json_object_get(combined, "default_validation_context"),
                                        "match_subject_alt_names")) < 0)
            goto out;
    } else {
        static const char *const alpn[] = {"http/1.1", NULL};
        static const char *const alpn_h2[] = {"h2", NULL};
        wf_tls_ctx_opts o = {.server = 0, .alpn = h2 ? alpn_h2 : alpn};
        char *e = NULL;

        if (add_sans(t, json_object_get(vc, "match_subject_alt_names")) < 0)
            goto out;
        if (vc && !(roots = read_source(json_object_get(vc, "trusted_ca"), "trusted_ca", cluster,
                                        err, errlen)))
            goto out;
        if (certs &&
            (!(chain = read_source(json_object_get(certs, "certificate_chain"),
                                   "certificate_chain", cluster, err, errlen)) ||
             !(key = read_source(json_object_get(certs, "private_key"), "private_key", cluster,
                                 err, errlen))))
            goto out;
        o.roots_pem = roots;
        o.cert_chain_pem = chain;
        o.key_pem = key;
        if (wf_tls_ctx_new(&o, &t->ctx, &e) < 0) {
            snprintf(err, errlen, "cluster %s: TLS settings refused: %s", cluster,
                     e ? e : "unknown error");
            free(e);
            goto out;
        }
    }
    r = 0;
out:
    free(roots);
    free(chain);
    free(key);
    if (r < 0)
        up_tls_free(t);
    else
        *out = t;
    return r;
}

static int build_cluster_tls(wf_cluster *cl, json_t *c, char *err, size_t errlen)
{
    size_t i;
    json_t *m;

    if (parse_up_tls(json_object_get(c, "transport_socket"), cl->name, cl->h2, &cl->tls_default,
                     err, errlen) < 0)
        return -1;
    json_array_foreach(json_object_get(c, "transport_socket_matches"), i, m)
    {
        json_t *match = json_object_get(m, "match");
        const char *mode = json_string_value(json_object_get(match, "tlsMode"));
        wf_up_tls *t;

        if (parse_up_tls(json_object_get(m, "transport_socket"), cl->name, cl->h2, &t, err,
                         errlen) < 0)
            return -1;
        if (json_object_size(match) == 0 && !cl->tls_default) {
            cl->tls_default = t;
        } else if (mode && strcmp(mode, "istio") == 0 && json_object_size(match) == 1 &&
                   !cl->tls_match) {
            cl->tls_match = t;
        } else {
            WF_WARN("cluster %s: transport socket match %s ignored: only {tlsMode: istio} and {} "
                    "are supported",
                    cl->name, json_string_value(json_object_get(m, "name")) ?: "(unnamed)");
            up_tls_free(t);
        }
    }
    return 0;
}

static int build_clusters(wf_snapshot *s, json_t *arr, char *err, size_t errlen)
{
    size_t i;
    json_t *c;

    s->n_cls = json_array_size(arr);
    s->cls = calloc(s->n_cls ? s->n_cls : 1, sizeof(*s->cls));
    if (!s->cls)
        return -1;
    json_array_foreach(arr, i, c)
    {
        wf_cluster *cl = &s->cls[i];
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *lb = json_string_value(json_object_get(c, "lb_policy"));
        char id[600];

        if (!name) {
            snprintf(err, errlen, "cluster %zu has no name", i);
            return -1;
        }
        cl->name = strdup(name);
        cl->index = (uint32_t)i;
        cl->lb = !lb || strcmp(lb, "ROUND_ROBIN") == 0 ? WF_LBP_ROUND_ROBIN
                 : strcmp(lb, "LEAST_REQUEST") == 0    ? WF_LBP_LEAST_REQUEST
                 : strcmp(lb, "RANDOM") == 0           ? WF_LBP_RANDOM
                                                       : -1;
        if (cl->lb < 0) {
            snprintf(err, errlen, "cluster %s: unsupported lb_policy %s", name, lb);
            return -1;
        }
        cl->connect_timeout_ms =
            parse_duration_ms(json_string_value(json_object_get(c, "connect_timeout")), 10000);
        if (wf_map_put(&s->cluster_by_name, cl->name, strlen(cl->name), (void *)(uintptr_t)(i + 1)))
            return -1;
        cl->h2 = json_object_get(c, "http2_protocol_options") != NULL;
        {
            json_t *hpo = json_object_get(c, "common_http_protocol_options");
            json_t *mr = json_object_get(hpo, "max_requests_per_connection");
            cl->idle_timeout_ms = parse_duration_ms(
                json_string_value(json_object_get(hpo, "idle_timeout")), 3600 * 1000);
            cl->max_rq_per_cx = json_is_integer(mr) && json_integer_value(mr) > 0
                                    ? (uint32_t)json_integer_value(mr)
                                    : 0;
        }
        if (build_cluster_tls(cl, c, err, errlen) < 0)
            return -1;
#define CSTAT(field, suffix)                                                                       \
    snprintf(id, sizeof(id), "cluster.%s." suffix, name);                                         \
    cl->field = wf_stat_id(id);
        CSTAT(st_rq_total, "upstream_rq_total");
        CSTAT(st_rq_2xx, "upstream_rq_2xx");
        CSTAT(st_rq_4xx, "upstream_rq_4xx");
        CSTAT(st_rq_5xx, "upstream_rq_5xx");
        CSTAT(st_cx_total, "upstream_cx_total");
        CSTAT(st_cx_connect_fail, "upstream_cx_connect_fail");
#undef CSTAT
    }
    return 0;
}

/* ep->ip and ep->poolkey, in one allocation: the snapshot of a large mesh
 * holds many endpoints. */
static int endpoint_strings(wf_endpoint *ep, const char *ip)
{
    const char *sni = ep->tls && ep->tls->sni ? ep->tls->sni : "";
    size_t iplen = strlen(ip), n = 2 * iplen + strlen(sni) + 24;
    int hp;

    if (!(ep->ip = malloc(n)))
        return -1;
    memcpy(ep->ip, ip, iplen + 1);
    ep->poolkey = ep->ip + iplen + 1;
    hp = snprintf(ep->poolkey, n - iplen - 1, "%s:%u", ip, ep->port);
    ep->hostport_len = (uint32_t)hp;
    snprintf(ep->poolkey + hp, n - iplen - 1 - (size_t)hp, "%s%s%s", ep->tls ? "|tls|" : "",
             sni, ep->h2 ? "|h2" : "");
    return 0;
}

static int build_endpoints(wf_snapshot *s, json_t *arr, char *err, size_t errlen)
{
    size_t i, j, k;
    json_t *cla, *loc, *lbe;

    json_array_foreach(arr, i, cla)
    {
        const char *cname = json_string_value(json_object_get(cla, "cluster_name"));
        wf_cluster *cl = cname ? wf_snapshot_cluster(s, cname) : NULL;
        size_t n = 0;

        if (!cl) {
            snprintf(err, errlen, "endpoints for unknown cluster %s", cname ? cname : "(none)");
            return -1;
        }
        json_array_foreach(json_object_get(cla, "endpoints"), j, loc)
            n += json_array_size(json_object_get(loc, "lb_endpoints"));
        free_eps(cl);
        cl->eps = calloc(n ? n : 1, sizeof(*cl->eps));
        cl->n_eps = 0;
        if (!cl->eps)
            return -1;
        json_array_foreach(json_object_get(cla, "endpoints"), j, loc)
        {
            json_array_foreach(json_object_get(loc, "lb_endpoints"), k, lbe)
            {
                json_t *sa = json_object_get(
                    json_object_get(json_object_get(json_object_get(lbe, "endpoint"), "address"),
                                    "socket_address"),
                    "address");
                json_t *sp = json_object_get(
                    json_object_get(json_object_get(json_object_get(lbe, "endpoint"), "address"),
                                    "socket_address"),
                    "port_value");
                const char *health = json_string_value(json_object_get(lbe, "health_status"));
                json_t *wt = json_object_get(lbe, "load_balancing_weight");
                wf_endpoint *ep = &cl->eps[cl->n_eps];
                const char *ip = json_string_value(sa);

                if (health && strcmp(health, "HEALTHY") != 0 && strcmp(health, "UNKNOWN") != 0)
                    continue;
                if (!ip || !json_is_integer(sp) || json_integer_value(sp) <= 0 ||
                    json_integer_value(sp) > 65535) {
                    snprintf(err, errlen, "cluster %s: endpoint %zu has no address/port", cname, k);
                    return -1;
                }
                memset(&ep->addr, 0, sizeof(ep->addr));
                ep->addr.sin_family = AF_INET;
                ep->addr.sin_port = htons((uint16_t)json_integer_value(sp));
                if (inet_pton(AF_INET, ip, &ep->addr.sin_addr) != 1) {
                    /* IPv6 upstreams come later; skipping one endpoint must
                     * not refuse the whole configuration. */
                    WF_WARN("cluster %s: endpoint %s skipped: only IPv4 endpoints are supported",
                            cname, ip);
                    continue;
                }
                ep->port = (uint32_t)json_integer_value(sp);
                {
                    const char *tm = json_string_value(json_object_get(
                        json_object_get(json_object_get(json_object_get(lbe, "metadata"),
                                                        "filter_metadata"),
                                        "envoy.transport_socket_match"),
                        "tlsMode"));
                    ep->tls = tm && strcmp(tm, "istio") == 0 && cl->tls_match ? cl->tls_match
                                                                               : cl->tls_default;
                }
                /* Between proxies (mTLS) requests travel over HTTP/2, whatever
                 * the app speaks: one multiplexed connection per peer. */
                ep->h2 = cl->h2 || (ep->tls && ep->tls->istio);
                if (endpoint_strings(ep, ip) < 0)
                    return -1;
                ep->weight = json_is_integer(wt) && json_integer_value(wt) > 0
                                 ? (uint32_t)json_integer_value(wt)
                                 : 1;
                cl->n_eps++;
            }
        }
    }
    for (i = 0; i < s->n_cls; i++) {
        wf_cluster *cl = &s->cls[i];
        cl->infos = calloc(cl->n_eps ? cl->n_eps : 1, sizeof(*cl->infos));
        if (!cl->infos || wf_lb_prepare(cl) < 0)
            return -1;
        for (j = 0; j < cl->n_eps; j++) {
            cl->eps[j].gindex = (uint32_t)s->n_eps++;
            cl->infos[j] = (wf_host_info){.size = sizeof(wf_host_info),
                                          .cluster = cl->name,
                                          .address = cl->eps[j].ip,
                                          .port = cl->eps[j].port,
                                          .weight = cl->eps[j].weight,
                                          .healthy = 1};
        }
    }
    return 0;
}

/* Compiles each route's typed_per_filter_config entries for the filters of
 * chain c that take per-route config. */
static int build_route_cfgs(wf_chain *c, const wf_value *rt, char *err, size_t errlen)
{
    const wf_value *vhs = wf_ctree_get(rt, "virtual_hosts");

    for (size_t i = 0; i < wf_ctree_len(vhs); i++) {
        const wf_value *routes = wf_ctree_get(wf_ctree_at(vhs, i), "routes");
        for (size_t j = 0; j < wf_ctree_len(routes); j++) {
            const wf_value *r = wf_ctree_at(routes, j);
            const wf_value *pf = wf_ctree_get(r, "typed_per_filter_config");
            void **cfgs = NULL;

            if (wf_ctree_type(pf) != WF_VALUE_MAP)
                continue;
            for (size_t k = 0; k < c->n; k++) {
                const wf_value *v = wf_ctree_get(pf, c->f[k].name);
                char why[400] = "";
                if (!v || !c->f[k].m->route_config_create)
                    continue;
                if (!cfgs && !(cfgs = calloc(c->n, sizeof(void *))))
                    return -1;
                cfgs[k] = c->f[k].m->route_config_create(c->f[k].cfg, v, why, sizeof(why));
                if (!cfgs[k]) {
                    const char *rn = wf_ctree_string(wf_ctree_get(r, "name"), NULL);
                    snprintf(err, errlen, "filter %s refused the per-route config of route %s: %s",
                             c->f[k].name, rn ? rn : "(unnamed)", why);
                    wf_map_put_ptr(&c->route_cfgs, r, cfgs);
                    return -1;
                }
            }
            if (cfgs && wf_map_put_ptr(&c->route_cfgs, r, cfgs) < 0)
                return -1;
        }
    }
    return 0;
}

static int build_chain(wf_listener *l, json_t *filters, const wf_workload_info *wl,
                       const wf_value *labels, char *err, size_t errlen)
{
    wf_chain *c = &l->chain;
    size_t i;
    json_t *f;
    wf_workload w = {.size = sizeof(w),
                     .role = wl->role,
                     .namespace_ = wl->namespace_,
                     .service_account = wl->service_account,
                     .labels = labels,
                     .trust_domain = wl->trust_domain,
                     .workers = wl->workers};

    wf_map_init(&c->route_cfgs);
    c->f = calloc(json_array_size(filters) + 1, sizeof(*c->f));
    if (!c->f)
        return -1;
    json_array_foreach(filters, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *tc = json_object_get(f, "typed_config");
        const char *tu = json_string_value(json_object_get(tc, "type_url"));
        json_t *value = json_object_get(tc, "value");
        wf_filter *fl = &c->f[c->n];
        char why[512] = "";
        wf_config_args args;

        if (!name || !tu || strncmp(tu, TYPE_PREFIX, strlen(TYPE_PREFIX)) != 0) {
            snprintf(err, errlen, "listener %s: http filter %zu has no weft module type_url", l->name,
                     i);
            return -1;
        }
        fl->ref = wf_module_load(tu + strlen(TYPE_PREFIX), err, errlen);
        if (!fl->ref)
            return -1;
        fl->m = wf_module_table(fl->ref);
        fl->name = strdup(name);
        fl->module = strdup(tu + strlen(TYPE_PREFIX));
        fl->index = c->n;
        if (!(fl->config = wf_ctree_new(value)))
            return -1;
        args = (wf_config_args){.size = sizeof(args),
                                .name = fl->name,
                                .config = fl->config,
                                .route_table = l->route_table,
                                .workload = &w,
                                .direction = l->inbound ? "inbound" : "outbound",
                                .filter = fl};
        c->n++;
        fl->cfg = fl->m->config_create(&args, why, sizeof(why));
        if (!fl->cfg) {
            snprintf(err, errlen, "module \"%s\": %s: configuration refused: %s", fl->module,
                     wf_module_path(fl->ref), why[0] ? why : "(no reason given)");
            return -1;
        }
        c->any_request_body |= fl->m->request_body != NULL;
        c->any_response_body |= fl->m->response_body != NULL;
        c->any_stream_create |= fl->m->stream_create != NULL;
        c->any_complete |= fl->m->stream_complete != NULL;
    }
    return l->route_table ? build_route_cfgs(c, l->route_table, err, errlen) : 0;
}

/* An array of strings as an owned vector (lower case when lower). */
static int strv_dup(json_t *arr, int lower, char ***out, size_t *n)
{
    size_t i;
    json_t *v;

    *n = 0;
    if (!(*out = calloc(json_array_size(arr) + 1, sizeof(char *))))
        return -1;
    json_array_foreach(arr, i, v)
    {
        char *c;
        if (!json_is_string(v))
            continue;
        if (!(c = strdup(json_string_value(v))))
            return -1;
        for (char *q = c; lower && *q; q++)
            if (*q >= 'A' && *q <= 'Z')
                *q = (char)(*q + 32);
        (*out)[(*n)++] = c;
    }
    return 0;
}

#define TCP_PROXY_FILTER "envoy.filters.network.tcp_proxy"

/* A filter chain's tcp_proxy: its destinations, idle timeout and server
 * names.  The clusters are resolved now; a missing one is reported when a
 * connection needs it. */
static int build_l4_route(wf_snapshot *s, wf_listener *l, json_t *fc, json_t *tp, char *err,
                          size_t errlen)
{
    wf_l4_route *r = &l->l4[l->n_l4++];
    json_t *one = json_object_get(tp, "cluster"), *wc, *d;
    json_t *idle = json_object_get(tp, "idle_timeout");
    const char *sp = json_string_value(json_object_get(tp, "stat_prefix"));
    char id[600];
    size_t i;

    r->name = strdup(json_string_value(json_object_get(fc, "name")) ?: l->name);
    if (!r->name || strv_dup(json_object_get(json_object_get(fc, "filter_chain_match"),
                                             "server_names"),
                             1, &r->server_names, &r->n_server_names) < 0)
        return -1;
    l->sni |= r->n_server_names > 0;
    r->idle_timeout_ms = parse_duration_ms(json_string_value(idle), idle ? 0 : 3600 * 1000);
    wc = json_object_get(json_object_get(tp, "weighted_clusters"), "clusters");
    if (!(r->dests = calloc(json_array_size(wc) + 1, sizeof(*r->dests))))
        return -1;
    if (json_is_string(one)) {
        r->dests[0].cluster_name = strdup(json_string_value(one));
        r->dests[0].weight = 1;
        r->n_dests = 1;
    } else {
        json_array_foreach(wc, i, d)
        {
            const char *cn = json_string_value(json_object_get(d, "name"));
            json_int_t wt = json_integer_value(json_object_get(d, "weight"));
            if (!cn || wt <= 0)
                continue;
            r->dests[r->n_dests].cluster_name = strdup(cn);
            r->dests[r->n_dests++].weight = (uint32_t)wt;
        }
    }
    if (r->n_dests == 0) {
        snprintf(err, errlen,
                 "listener %s, filter chain %s: tcp_proxy has neither \"cluster\" nor "
                 "\"weighted_clusters\" with a positive weight",
                 l->name, r->name);
        return -1;
    }
    for (i = 0; i < r->n_dests; i++) {
        if (!r->dests[i].cluster_name)
            return -1;
        r->dests[i].cluster = wf_snapshot_cluster(s, r->dests[i].cluster_name);
        r->total_weight += r->dests[i].weight;
    }
#define TSTAT(field, suffix)                                                                       \
    snprintf(id, sizeof(id), "tcp.%s." suffix, sp ? sp : r->name);                                \
    r->field = wf_stat_id(id);
    TSTAT(st_cx_total, "downstream_cx_total");
    TSTAT(st_rx_bytes, "downstream_cx_rx_bytes_total");
    TSTAT(st_tx_bytes, "downstream_cx_tx_bytes_total");
    TSTAT(st_idle_timeout, "idle_timeout");
#undef TSTAT
    return 0;
}

/* The connection manager's options for upgrades and idle connections. */
static int build_hcm_opts(wf_listener *l, json_t *hcm)
{
    json_t *uc = json_object_get(hcm, "upgrade_configs"), *u, *types = json_array();
    json_t *hpo = json_object_get(hcm, "common_http_protocol_options");
    size_t i;
    int r;

    l->idle_timeout_ms =
        parse_duration_ms(json_string_value(json_object_get(hpo, "idle_timeout")), 3600 * 1000);
    l->stream_idle_timeout_ms = parse_duration_ms(
        json_string_value(json_object_get(hcm, "stream_idle_timeout")), 300 * 1000);
    if (!types)
        return -1;
    json_array_foreach(uc, i, u)
    {
        json_t *en = json_object_get(u, "enabled");
        if (en && json_is_false(en))
            continue;
        json_array_append(types, json_object_get(u, "upgrade_type"));
    }
    r = strv_dup(types, 1, &l->upgrades, &l->n_upgrades);
    json_decref(types);
    return r;
}

static int build_listeners(wf_snapshot *s, json_t *arr, const wf_workload_info *wl, char *err,
                           size_t errlen)
{
    size_t i;
    json_t *lj;

    s->n_ls = 0;
    s->ls = calloc(json_array_size(arr) + 1, sizeof(*s->ls));
    if (!s->ls)
        return -1;
    json_array_foreach(arr, i, lj)
    {
        wf_listener *l = &s->ls[s->n_ls];
        json_t *sa = json_object_get(json_object_get(lj, "address"), "socket_address");
        const char *host = json_string_value(json_object_get(sa, "address"));
        json_t *port = json_object_get(sa, "port_value");
        const char *dir = json_string_value(json_object_get(lj, "traffic_direction"));
        json_t *chains = json_object_get(lj, "filter_chains");
        json_t *hcm = json_object_get(
            json_array_get(json_object_get(json_array_get(chains, 0), "filters"), 0),
            "typed_config");
        int has_tls = 0, has_plain = 0;
        size_t k;
        json_t *fc, *rt;

        l->name = strdup(json_string_value(json_object_get(lj, "name")) ?: "listener");
        s->n_ls++;
        if (!host || !json_is_integer(port)) {
            snprintf(err, errlen, "listener %s has no socket address", l->name);
            return -1;
        }
        snprintf(l->host, sizeof(l->host), "%s", host);
        l->port = (int)json_integer_value(port);
        l->inbound = dir && strcmp(dir, "INBOUND") == 0;
        /* The chains differ only in their transport (the HCM is the same):
         * a TLS chain terminates mTLS with the workload certificate. */
        json_array_foreach(chains, k, fc)
        {
            json_t *ts = json_object_get(fc, "transport_socket");
            const char *tp = json_string_value(
                json_object_get(json_object_get(fc, "filter_chain_match"), "transport_protocol"));
            const char *tsn = json_string_value(json_object_get(ts, "name"));
            if ((tp && strcmp(tp, "tls") == 0) ||
                (tsn && strcmp(tsn, "envoy.transport_sockets.tls") == 0))
                has_tls = 1;
            else
                has_plain = 1;
        }
        l->tls = has_tls && has_plain ? WF_LTLS_PERMISSIVE : has_tls ? WF_LTLS_STRICT : WF_LTLS_PLAIN;
        /* Opaque listeners: every chain a tcp_proxy (the inbound side of
         * a TCP app has one per transport, the same route). */
        json_array_foreach(chains, k, fc)
        {
            json_t *f0 = json_array_get(json_object_get(fc, "filters"), 0);
            const char *fname = json_string_value(json_object_get(f0, "name"));
            if (!fname || strcmp(fname, TCP_PROXY_FILTER) != 0)
                continue;
            if (!l->l4 && !(l->l4 = calloc(json_array_size(chains), sizeof(*l->l4))))
                return -1;
            if (build_l4_route(s, l, fc, json_object_get(f0, "typed_config"), err, errlen) < 0)
                return -1;
        }
        if (l->n_l4) {
            if (l->n_l4 != json_array_size(chains)) {
                snprintf(err, errlen,
                         "listener %s mixes tcp_proxy and HTTP filter chains: weft serves a "
                         "listener either as opaque TCP or as HTTP",
                         l->name);
                return -1;
            }
            /* A port of its own per TCP service, bound on the outbound address. */
            l->optional = !l->inbound;
            continue;
        }
        if (build_hcm_opts(l, hcm) < 0)
            return -1;
        if ((rt = json_object_get(hcm, "route_config")) && !(l->route_table = wf_ctree_new(rt)))
            return -1;
        if (build_chain(l, json_object_get(hcm, "http_filters"), wl, s->labels, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* What /config_dump shows of the bundle's clusters and endpoints, packed:
 * the bundle's own "packed" member when the xDS client gives one (its
 * endpoints: cluster_name -> packed assignment, shared with what the client
 * holds), else made here. */
static json_t *dump_rest(const json_t *bundle)
{
    json_t *given = json_object_get(bundle, "packed");

    if (given)
        return json_incref(given);
    return json_pack("{s:o, s:o}", "clusters", wf_jpack(json_object_get(bundle, "clusters")),
                     "endpoints", wf_jpack(json_object_get(bundle, "endpoints")));
}

/* The tree of one member of dump_rest: packed text, or an object of packed
 * values (an array of their trees). */
static json_t *dump_member(const json_t *v)
{
    json_t *arr;
    const char *k;
    json_t *e;

    if (!json_is_object(v))
        return wf_junpack(v);
    arr = json_array();
    json_object_foreach((json_t *)v, k, e)
        json_array_append_new(arr, wf_junpack(e));
    return arr;
}

wf_snapshot *wf_snapshot_build(json_t *bundle, const wf_workload_info *wl, char *err, size_t errlen)
{
    wf_snapshot *s = calloc(1, sizeof(*s));

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->version = strdup(json_string_value(json_object_get(bundle, "version_info")) ?: "");
    wf_map_init(&s->cluster_by_name);
    err[0] = 0;
    /* The listeners are read here; what stays of them is compiled, ctrees
     * for the modules, and their text for /config_dump. */
    if (!(s->labels = wf_ctree_new(wl->labels)) ||
        build_clusters(s, json_object_get(bundle, "clusters"), err, errlen) < 0 ||
        build_endpoints(s, json_object_get(bundle, "endpoints"), err, errlen) < 0 ||
        build_listeners(s, json_object_get(bundle, "listeners"), wl, err, errlen) < 0 ||
        !(s->listeners = wf_jpack(json_object_get(bundle, "listeners"))) ||
        !(s->dump_rest = dump_rest(bundle))) {
        if (!err[0])
            snprintf(err, errlen, "out of memory building the configuration snapshot");
        snapshot_free(s);
        return NULL;
    }
    return s;
}

json_t *wf_snapshot_listeners(const wf_snapshot *s)
{
    return s ? wf_junpack(s->listeners) : NULL;
}

json_t *wf_snapshot_dump(const wf_snapshot *s)
{
    json_t *d = json_object(), *chains = json_object();

    json_object_set_new(d, "version_info", json_string(s->version));
    json_object_set_new(d, "listeners", wf_snapshot_listeners(s));
    json_object_set_new(d, "clusters", dump_member(json_object_get(s->dump_rest, "clusters")));
    json_object_set_new(d, "endpoints", dump_member(json_object_get(s->dump_rest, "endpoints")));
    for (size_t i = 0; i < s->n_ls; i++) {
        json_t *arr = json_array();
        for (size_t k = 0; k < s->ls[i].chain.n; k++) {
            const wf_filter *f = &s->ls[i].chain.f[k];
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "name", f->name, "module",
                                                 f->module, "path", wf_module_path(f->ref)));
        }
        if (i == 0)
            json_object_set(d, "filter_chain", arr);
        json_object_set_new(chains, s->ls[i].name, arr);
    }
    if (!json_object_get(d, "filter_chain"))
        json_object_set_new(d, "filter_chain", json_array());
    json_object_set_new(d, "filter_chains", chains);
    return d;
}
