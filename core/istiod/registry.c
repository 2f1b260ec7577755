/*
 * registry.c: workloads that register themselves through their proxy's
 * node metadata, and the view that merges them into the configuration;
 * see registry.h.
 */
#include "istiod/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/flags.h"

#define REG_FILE "(registry)"

void wf_registry_init(wf_registry *r, uint64_t grace_ms)
{
    memset(r, 0, sizeof(*r));
    r->grace_ms = grace_ms;
}

static void workload_free(wf_reg_workload *w)
{
    if (!w)
        return;
    free(w->id);
    free(w->namespace_);
    free(w->service_account);
    free(w->protocol);
    json_decref(w->labels);
    free(w->address);
    for (size_t i = 0; i < w->n_svcs; i++)
        free(w->svcs[i].host);
    free(w->svcs);
    free(w);
}

void wf_registry_free(wf_registry *r)
{
    while (r->list) {
        wf_reg_workload *w = r->list;
        r->list = w->next;
        workload_free(w);
    }
    r->n = 0;
}

/* ---- node metadata ------------------------------------------------------------------------ */

static const json_t *md_get(const json_t *node, const char *key)
{
    return json_object_get(json_object_get(node, "metadata"), key);
}

/* A port given as a number or a decimal string; 0 when neither. */
static uint32_t port_value(const json_t *v)
{
    double d = -1;

    if (json_is_number(v))
        d = json_number_value(v);
    else if (json_is_string(v) && strspn(json_string_value(v), "0123456789") ==
                                      strlen(json_string_value(v)))
        d = strtod(json_string_value(v), NULL);
    return d >= 1 && d <= 65535 && d == (double)(uint32_t)d ? (uint32_t)d : 0;
}

/* The namespace of a node: NAMESPACE, else the 4th part of an Istio node
 * id (sidecar~ip~pod.ns~ns.svc.cluster.local), else "default".  Written
 * into buf. */
static const char *node_namespace(const json_t *node, char *buf, size_t len)
{
    const char *ns = json_string_value(md_get(node, "NAMESPACE"));
    const char *id = json_string_value(json_object_get(node, "id")), *p = id;

    if (ns && *ns)
        return ns;
    for (int i = 0; p && i < 3; i++)
        if ((p = strchr(p, '~')))
            p++;
    if (p && *p && strcspn(p, ".~") < len) {
        snprintf(buf, len, "%.*s", (int)strcspn(p, ".~"), p);
        return buf;
    }
    return "default";
}

static int add_svc(wf_reg_workload *w, const char *name, uint32_t port, char *err, size_t errlen)
{
    wf_reg_service *nv;
    char *host;

    if (!name || !*name || !port) {
        snprintf(err, errlen,
                 "WEFT_SERVICES: entry %zu needs a name and a port in 1..65535 "
                 "(--service NAME:PORT)",
                 w->n_svcs + 1);
        return -1;
    }
    if (!(host = wf_config_resolve_host(name, w->namespace_)))
        return -1;
    for (char *p = host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    for (size_t i = 0; i < w->n_svcs; i++)
        if (w->svcs[i].port == port && strcmp(w->svcs[i].host, host) == 0) {
            free(host);
            return 0;
        }
    if (!(nv = realloc(w->svcs, (w->n_svcs + 1) * sizeof(*nv)))) {
        free(host);
        return -1;
    }
    w->svcs = nv;
    w->svcs[w->n_svcs].host = host;
    w->svcs[w->n_svcs++].port = port;
    return 0;
}

/* The registered service port's protocol, from what the proxy says its app
 * speaks (--app-protocol): HTTP unless http2, grpc or tcp. */
static const char *app_protocol(const json_t *node)
{
    const char *p = json_string_value(md_get(node, "WEFT_APP_PROTOCOL"));

    return !p                          ? "HTTP"
           : strcmp(p, "grpc") == 0  ? "GRPC"
           : strcmp(p, "http2") == 0 ? "HTTP2"
           : strcmp(p, "tcp") == 0   ? "TCP"
                                     : "HTTP";
}

/* A workload from node; NULL with *err empty when the node registers
 * nothing, NULL with a reason otherwise. */
static wf_reg_workload *parse_node(const json_t *node, char *err, size_t errlen)
{
    const json_t *svcs = md_get(node, "WEFT_SERVICES"), *labels = md_get(node, "LABELS"), *e;
    const char *inb = json_string_value(md_get(node, "WEFT_INBOUND_ADDR"));
    const char *sa = json_string_value(md_get(node, "SERVICE_ACCOUNT"));
    const char *ips = json_string_value(md_get(node, "INSTANCE_IPS"));
    char nsbuf[256], host[256];
    wf_reg_workload *w;
    int port;
    size_t i;

    err[0] = 0;
    if (!svcs || json_is_null(svcs) || (json_is_array(svcs) && !json_array_size(svcs)) ||
        (json_is_string(svcs) && !json_string_length(svcs)))
        return NULL;
    if (!(w = calloc(1, sizeof(*w))) ||
        !(w->id = strdup(json_string_value(json_object_get(node, "id")))) ||
        !(w->namespace_ = strdup(node_namespace(node, nsbuf, sizeof(nsbuf)))) ||
        (sa && *sa && !(w->service_account = strdup(sa))) ||
        !(w->protocol = strdup(app_protocol(node))) ||
        !(w->labels = json_is_object(labels) ? json_deep_copy(labels) : json_object()))
        goto oom;
    if (!inb || wf_addr_split(inb, host, sizeof(host), &port) < 0 || port < 1 || port > 65535) {
        snprintf(err, errlen,
                 "WEFT_INBOUND_ADDR \"%s\" is not HOST:PORT; a workload registering services "
                 "must say where its inbound listener is reached",
                 inb ? inb : "(missing)");
        goto fail;
    }
    if (!host[0] || strcmp(host, "0.0.0.0") == 0) {
        /* Listening on every address: peers reach it at its first
         * instance IP. */
        size_t n = ips ? strcspn(ips, ", ") : 0;
        snprintf(host, sizeof(host), "%.*s", (int)(n ? n : 9), n ? ips : "127.0.0.1");
    }
    if (!(w->address = strdup(host)))
        goto oom;
    w->port = (uint32_t)port;
    if (json_is_array(svcs)) {
        json_array_foreach (svcs, i, e)
            if (add_svc(w, json_string_value(json_object_get(e, "name")),
                        port_value(json_object_get(e, "port")), err, errlen) < 0)
                goto fail;
    } else if (json_is_string(svcs)) {
        /* Also accepted: "NAME:PORT,NAME:PORT", as the flags are written. */
        char *copy = strdup(json_string_value(svcs)), *save = NULL, *tok;
        if (!copy)
            goto oom;
        for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *colon = strrchr(tok, ':');
            json_t *pv;
            uint32_t p;
            if (colon)
                *colon = 0;
            pv = json_string(colon ? colon + 1 : "");
            p = port_value(pv);
            json_decref(pv);
            if (add_svc(w, tok, p, err, errlen) < 0) {
                free(copy);
                goto fail;
            }
        }
        free(copy);
    } else {
        snprintf(err, errlen, "WEFT_SERVICES must be a list of {name, port}");
        goto fail;
    }
    return w;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (!err[0])
        snprintf(err, errlen, "out of memory");
    workload_free(w);
    return NULL;
}

static int same_workload(const wf_reg_workload *a, const wf_reg_workload *b)
{
    if (strcmp(a->namespace_, b->namespace_) != 0 || strcmp(a->address, b->address) != 0 ||
        a->port != b->port || a->n_svcs != b->n_svcs || !json_equal(a->labels, b->labels))
        return 0;
    if ((a->service_account == NULL) != (b->service_account == NULL) ||
        (a->service_account && strcmp(a->service_account, b->service_account) != 0))
        return 0;
    for (size_t i = 0; i < a->n_svcs; i++)
        if (a->svcs[i].port != b->svcs[i].port || strcmp(a->svcs[i].host, b->svcs[i].host) != 0)
            return 0;
    return 1;
}

int wf_registry_join(wf_registry *r, const json_t *node, wf_reg_workload **out, int *changed,
                     char *err, size_t errlen)
{
    wf_reg_workload *w = parse_node(node, err, errlen), **pp;

    *out = NULL;
    *changed = 0;
    if (!w)
        return err[0] ? -1 : 0;
    for (pp = &r->list; *pp && strcmp((*pp)->id, w->id) < 0; pp = &(*pp)->next)
        ;
    if (*pp && strcmp((*pp)->id, w->id) == 0) {
        wf_reg_workload *old = *pp, tmp;
        /* A reconnect (or a second stream) of a known workload: the entry
         * stays where it is (other streams hold it); new metadata
         * replaces the old. */
        *changed = !same_workload(old, w);
        tmp = *old;
        *old = *w;
        old->streams = tmp.streams + 1;
        old->left_ms = 0;
        old->next = tmp.next;
        *w = tmp;
        w->next = NULL;
        workload_free(w);
        *out = old;
        return 0;
    } else {
        w->streams = 1;
        w->next = *pp;
        *pp = w;
        r->n++;
        *changed = 1;
    }
    *out = w;
    return 0;
}

void wf_registry_leave(wf_registry *r, wf_reg_workload *w, uint64_t now_ms)
{
    for (wf_reg_workload *x = r->list; x; x = x->next)
        if (x == w) {
            if (w->streams > 0 && --w->streams == 0)
                w->left_ms = now_ms;
            return;
        }
}

size_t wf_registry_expire(wf_registry *r, uint64_t now_ms, uint64_t *next_ms)
{
    size_t removed = 0;

    *next_ms = 0;
    for (wf_reg_workload **pp = &r->list; *pp;) {
        wf_reg_workload *w = *pp;
        if (w->streams == 0 && now_ms >= w->left_ms + r->grace_ms) {
            *pp = w->next;
            workload_free(w);
            r->n--;
            removed++;
            continue;
        }
        if (w->streams == 0 && (!*next_ms || w->left_ms + r->grace_ms < *next_ms))
            *next_ms = w->left_ms + r->grace_ms;
        pp = &w->next;
    }
    return removed;
}

json_t *wf_registry_json(const wf_registry *r)
{
    json_t *arr = json_array();

    for (const wf_reg_workload *w = r->list; arr && w; w = w->next) {
        json_t *o = json_object(), *svcs = json_array();
        for (size_t i = 0; svcs && i < w->n_svcs; i++) {
            json_t *s = json_object();
            json_object_set_new(s, "host", json_string(w->svcs[i].host));
            json_object_set_new(s, "port", json_integer(w->svcs[i].port));
            json_array_append_new(svcs, s);
        }
        json_object_set_new(o, "id", json_string(w->id));
        json_object_set_new(o, "namespace", json_string(w->namespace_));
        json_object_set_new(o, "service_account",
                            w->service_account ? json_string(w->service_account) : json_null());
        json_object_set_new(o, "labels", json_incref(w->labels));
        json_object_set_new(o, "address", json_string(w->address));
        json_object_set_new(o, "port", json_integer(w->port));
        json_object_set_new(o, "services", svcs);
        json_object_set_new(o, "connected", json_boolean(w->streams > 0));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* ---- the view -------------------------------------------------------------------------------- */

typedef struct view_ctx {
    wf_reg_view *v;
    int oom;
} view_ctx;

static void *v_alloc(view_ctx *x, size_t n)
{
    void *p;

    if (x->oom)
        return NULL;
    if (x->v->n_allocs == x->v->cap_allocs) {
        size_t cap = x->v->cap_allocs ? x->v->cap_allocs * 2 : 64;
        void **na = realloc(x->v->allocs, cap * sizeof(*na));
        if (!na) {
            x->oom = 1;
            return NULL;
        }
        x->v->allocs = na;
        x->v->cap_allocs = cap;
    }
    if (!(p = calloc(1, n ? n : 1))) {
        x->oom = 1;
        return NULL;
    }
    x->v->allocs[x->v->n_allocs++] = p;
    return p;
}

static char *v_strdup(view_ctx *x, const char *s)
{
    size_t l = strlen(s);
    char *p = v_alloc(x, l + 1);

    if (p)
        memcpy(p, s, l + 1);
    return p;
}

static char *v_printf(view_ctx *x, const char *fmt, unsigned v)
{
    char buf[64];

    snprintf(buf, sizeof(buf), fmt, v);
    return v_strdup(x, buf);
}

/* The endpoint of workload w in ServiceEntry se: every named port of se
 * maps to w's inbound port, since everything sent to a workload goes
 * through its inbound listener. */
static void fill_endpoint(view_ctx *x, wf_workload_entry_spec *sp, const wf_service_entry *se,
                          const wf_reg_workload *w)
{
    const char *k;
    json_t *val;
    size_t n = 0;

    memset(sp, 0, sizeof(*sp));
    sp->pos.file = REG_FILE;
    sp->address = v_strdup(x, w->address);
    sp->ports = v_alloc(x, se->n_ports * sizeof(*sp->ports));
    sp->port_numbers = v_alloc(x, se->n_ports * sizeof(*sp->port_numbers));
    for (size_t i = 0; !x->oom && i < se->n_ports; i++) {
        if (!se->ports[i].name)
            continue;
        sp->ports[n].key = v_strdup(x, se->ports[i].name);
        sp->ports[n].value = v_printf(x, "%u", w->port);
        sp->ports[n].pos.file = REG_FILE;
        sp->port_numbers[n++] = w->port;
    }
    sp->n_ports = n;
    sp->labels = v_alloc(x, json_object_size(w->labels) * sizeof(*sp->labels));
    n = 0;
    json_object_foreach ((json_t *)w->labels, k, val) {
        if (x->oom || !json_is_string(val))
            continue;
        sp->labels[n].key = v_strdup(x, k);
        sp->labels[n].value = v_strdup(x, json_string_value(val));
        sp->labels[n++].pos.file = REG_FILE;
    }
    sp->n_labels = n;
    if (w->service_account)
        sp->service_account = v_strdup(x, w->service_account);
}

/* One (host, workload) pair of the registry. */
typedef struct reg_ep {
    const char *host;
    const wf_reg_workload *w;
    uint32_t port;
    int claimed;
} reg_ep;

static int cmp_ep(const void *a, const void *b)
{
    const reg_ep *x = a, *y = b;
    int c = strcmp(x->host, y->host);

    if (c)
        return c;
    if ((c = strcmp(x->w->id, y->w->id)))
        return c;
    return x->port < y->port ? -1 : x->port > y->port;
}

static int se_names(const wf_service_entry *se, const char *host)
{
    for (size_t i = 0; i < se->n_hosts; i++)
        if (se->hosts[i] && strcasecmp(se->hosts[i], host) == 0)
            return 1;
    return 0;
}

/* Adds to se (a copy in the view) the endpoint of every registered
 * workload of a host it names, each workload once. */
static void extend_se(view_ctx *x, wf_service_entry *se, reg_ep *eps, size_t n)
{
    const wf_reg_workload **ws = NULL;
    size_t k = 0;
    wf_workload_entry_spec *nv;

    for (size_t i = 0; i < n; i++) {
        int dup = 0;
        if (!se_names(se, eps[i].host))
            continue;
        eps[i].claimed = 1;
        if (!ws && !(ws = v_alloc(x, n * sizeof(*ws))))
            return;
        for (size_t j = 0; j < k; j++)
            dup |= ws[j] == eps[i].w;
        if (!dup)
            ws[k++] = eps[i].w;
    }
    if (!k)
        return;
    if (!(nv = v_alloc(x, (se->n_endpoints + k) * sizeof(*nv))))
        return;
    if (se->n_endpoints)
        memcpy(nv, se->endpoints, se->n_endpoints * sizeof(*nv));
    for (size_t j = 0; j < k; j++)
        fill_endpoint(x, &nv[se->n_endpoints + j], se, ws[j]);
    se->endpoints = nv;
    se->n_endpoints += k;
}

/* A ServiceEntry for registry host eps[0..n) (all the same host). */
static void make_se(view_ctx *x, wf_service_entry *se, reg_ep *eps, size_t n)
{
    const wf_reg_workload *prev = NULL;
    size_t np = 0, ne = 0;

    memset(se, 0, sizeof(*se));
    {
        size_t l = strlen("weft-registry-") + strlen(eps[0].host) + 1;
        if ((se->meta.name = v_alloc(x, l)))
            snprintf(se->meta.name, l, "weft-registry-%s", eps[0].host);
    }
    se->meta.namespace_ = v_strdup(x, eps[0].w->namespace_);
    se->meta.pos.file = se->meta.name_pos.file = se->meta.spec_pos.file = REG_FILE;
    se->meta.api_version = v_strdup(x, "networking.istio.io/v1");
    se->hosts = v_alloc(x, sizeof(*se->hosts));
    if (se->hosts)
        se->hosts[0] = v_strdup(x, eps[0].host);
    se->n_hosts = 1;
    se->location = WF_SE_MESH_INTERNAL;
    se->resolution = WF_SE_RESOLUTION_STATIC;
    se->ports = v_alloc(x, n * sizeof(*se->ports));
    se->endpoints = v_alloc(x, n * sizeof(*se->endpoints));
    if (x->oom)
        return;
    /* Ports: the union of what the workloads serve, by number. */
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < np && se->ports[j].number < eps[i].port)
            j++;
        if (j < np && se->ports[j].number == eps[i].port)
            continue;
        memmove(&se->ports[j + 1], &se->ports[j], (np - j) * sizeof(*se->ports));
        memset(&se->ports[j], 0, sizeof(*se->ports));
        se->ports[j].number = eps[i].port;
        /* Named as Istio users name ports: the prefix is the protocol. */
        se->ports[j].protocol = v_strdup(x, eps[i].w->protocol);
        se->ports[j].name = v_printf(x, strcmp(eps[i].w->protocol, "GRPC") == 0    ? "grpc-%u"
                                        : strcmp(eps[i].w->protocol, "HTTP2") == 0 ? "http2-%u"
                                        : strcmp(eps[i].w->protocol, "TCP") == 0   ? "tcp-%u"
                                                                                   : "http-%u",
                                     eps[i].port);
        se->ports[j].pos.file = REG_FILE;
        np++;
    }
    se->n_ports = np;
    for (size_t i = 0; i < n; i++) {
        if (eps[i].w == prev)
            continue;
        prev = eps[i].w;
        fill_endpoint(x, &se->endpoints[ne++], se, eps[i].w);
    }
    se->n_endpoints = ne;
}

void wf_reg_view_free(wf_reg_view *v)
{
    for (size_t i = 0; i < v->n_allocs; i++)
        free(v->allocs[i]);
    free(v->allocs);
    memset(v, 0, sizeof(*v));
}

int wf_reg_view_build(wf_reg_view *v, const wf_config *base, const wf_registry *r)
{
    view_ctx x = {v, 0};
    reg_ep *eps = NULL;
    size_t n = 0, cap = 0, n_new = 0, nse;
    wf_service_entry *ses;

    memset(v, 0, sizeof(*v));
    v->cfg = *base;
    for (const wf_reg_workload *w = r->list; w; w = w->next)
        cap += w->n_svcs;
    if (cap && !(eps = v_alloc(&x, cap * sizeof(*eps))))
        goto oom;
    for (const wf_reg_workload *w = r->list; w; w = w->next)
        for (size_t i = 0; i < w->n_svcs; i++)
            eps[n++] = (reg_ep){w->svcs[i].host, w, w->svcs[i].port, 0};
    if (n)
        qsort(eps, n, sizeof(*eps), cmp_ep);
    for (size_t i = 0; i < n; i++)
        n_new += i == 0 || strcmp(eps[i].host, eps[i - 1].host) != 0;
    nse = base->n_service_entries;
    if (!(ses = v_alloc(&x, (nse + n_new) * sizeof(*ses))))
        goto oom;
    if (nse)
        memcpy(ses, base->service_entries, nse * sizeof(*ses));
    for (size_t i = 0; i < base->n_service_entries; i++)
        extend_se(&x, &ses[i], eps, n);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(eps[j].host, eps[i].host) == 0)
            j++;
        if (!eps[i].claimed)
            make_se(&x, &ses[nse++], eps + i, j - i);
        i = j;
    }
    if (x.oom)
        goto oom;
    v->cfg.service_entries = ses;
    v->cfg.n_service_entries = nse;
    for (size_t i = 0; i < nse; i++)
        v->n_services += ses[i].n_hosts;
    return 0;
oom:
    wf_reg_view_free(v);
    return -1;
}
