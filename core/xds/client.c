/*
 * client.c: the proxy's ADS client; see client.h.
 *
 * The bookkeeping (wf_xdsc_*) comes first: it owns what was received and
 * what was applied, and queues the requests the protocol owes.  The client
 * (wf_xds_client_*) below it only moves bytes: it connects, hands decoded
 * responses to the bookkeeping, runs the owner's apply from a 0 ms timer
 * (so a push of CDS, EDS and LDS read together is built once),
 * sends what is queued, and reconnects with backoff when the stream ends.
 */
#include "xds/client.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "grpc/grpc.h"
#include "util/flags.h"
#include "util/jarena.h"
#include "util/jpack.h"
#include "util/log.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 10000

static const char *const type_urls[WF_XDSC_NTYPES] = {WF_TYPE_CLUSTER, WF_TYPE_ENDPOINT,
                                                      WF_TYPE_LISTENER};
static const char *const type_names[WF_XDSC_NTYPES] = {"CDS", "EDS", "LDS"};
static const char *const status_names[] = {"NONE", "PENDING", "ACKED", "NACKED", "REJECTED"};

int wf_xdsc_type_of(const char *type_url)
{
    for (int i = 0; type_url && i < WF_XDSC_NTYPES; i++)
        if (strcmp(type_url, type_urls[i]) == 0)
            return i;
    return -1;
}

const char *wf_xdsc_type_url(int type)
{
    return type >= 0 && type < WF_XDSC_NTYPES ? type_urls[type] : "";
}

const char *wf_xdsc_type_name(int type)
{
    return type >= 0 && type < WF_XDSC_NTYPES ? type_names[type] : "?";
}

/* ---- small helpers ------------------------------------------------------------------------- */

static int set_str(char **dst, const char *src)
{
    char *c = src ? strdup(src) : NULL;

    if (src && !c)
        return -1;
    free(*dst);
    *dst = c;
    return 0;
}

void wf_xdsc_names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_eds(const json_t *cluster)
{
    const json_t *t = json_object_get(cluster, "type");

    /* The codec gives enum names; a number is EDS's own (3). */
    return (json_is_string(t) && strcmp(json_string_value(t), "EDS") == 0) ||
           (json_is_integer(t) && json_integer_value(t) == 3);
}

/* The name an EDS cluster's endpoints are asked for and delivered under. */
static const char *eds_name(const json_t *cluster)
{
    const char *sn = json_string_value(
        json_object_get(json_object_get(cluster, "eds_cluster_config"), "service_name"));

    return sn && *sn ? sn : json_string_value(json_object_get(cluster, "name"));
}

long wf_xdsc_eds_names(const json_t *clusters, char ***names)
{
    size_t n = 0, k = 0, i;
    const json_t *c;
    char **v;

    *names = NULL;
    json_array_foreach((json_t *)clusters, i, c)
    {
        n += is_eds(c) && eds_name(c);
    }
    if (!(v = calloc(n ? n : 1, sizeof(*v))))
        return -1;
    json_array_foreach((json_t *)clusters, i, c)
    {
        if (is_eds(c) && eds_name(c) && !(v[k++] = strdup(eds_name(c)))) {
            wf_xdsc_names_free(v, k);
            return -1;
        }
    }
    qsort(v, k, sizeof(*v), cmp_str);
    /* Several clusters may share one service_name: ask for it once. */
    n = 0;
    for (i = 0; i < k; i++) {
        if (n && strcmp(v[n - 1], v[i]) == 0)
            free(v[i]);
        else
            v[n++] = v[i];
    }
    *names = v;
    return (long)n;
}

/* ---- the request queue --------------------------------------------------------------------- */

/* Queues the request type owes now: version applied, nonce last received on
 * this stream, the EDS names; the node when it is the stream's first.
 * Returns the request (to add an error) or NULL when out of memory. */
static wf_xds_request *queue(wf_xdsc *st, int type)
{
    wf_xdsc_tstate *ts = &st->t[type];
    wf_xds_request *r;

    if (st->n_out == st->cap_out) {
        size_t cap = st->cap_out ? st->cap_out * 2 : 8;
        wf_xds_request *nv = realloc(st->out, cap * sizeof(*nv));
        if (!nv)
            return NULL;
        st->out = nv;
        st->cap_out = cap;
    }
    r = &st->out[st->n_out];
    memset(r, 0, sizeof(*r));
    if (!(r->type_url = strdup(type_urls[type])) ||
        !(r->version_info = strdup(ts->applied_version ? ts->applied_version : "")) ||
        !(r->response_nonce = strdup(ts->nonce ? ts->nonce : "")))
        goto oom;
    if (type == WF_XDSC_EDS && ts->n_names) {
        if (!(r->resource_names = calloc(ts->n_names, sizeof(char *))))
            goto oom;
        for (size_t i = 0; i < ts->n_names; i++) {
            if (!(r->resource_names[i] = strdup(ts->names[i])))
                goto oom;
            r->n_resource_names++;
        }
    }
    if (!st->node_sent) {
        r->node = json_incref(st->node);
        st->node_sent = 1;
    }
    ts->subscribed = 1;
    st->n_out++;
    return r;
oom:
    wf_xds_request_free(r);
    return NULL;
}

static int queue_nack(wf_xdsc *st, int type, const char *why)
{
    wf_xds_request *r = queue(st, type);

    if (!r)
        return -1;
    r->has_error = 1;
    r->error_code = WF_GRPC_INVALID_ARGUMENT;
    return (r->error_message = strdup(why ? why : "")) ? 0 : -1;
}

int wf_xdsc_take(wf_xdsc *st, wf_xds_request *r)
{
    if (!st->n_out)
        return 0;
    *r = st->out[0];
    memmove(&st->out[0], &st->out[1], (st->n_out - 1) * sizeof(*st->out));
    st->n_out--;
    return 1;
}

static void queue_clear(wf_xdsc *st)
{
    for (size_t i = 0; i < st->n_out; i++)
        wf_xds_request_free(&st->out[i]);
    st->n_out = 0;
}

/* ---- bookkeeping --------------------------------------------------------------------------- */

int wf_xdsc_init(wf_xdsc *st, json_t *node)
{
    memset(st, 0, sizeof(*st));
    st->node = json_incref(node);
    return st->node ? 0 : -1;
}

void wf_xdsc_free(wf_xdsc *st)
{
    for (int i = 0; i < WF_XDSC_NTYPES; i++) {
        wf_xdsc_tstate *ts = &st->t[i];
        free(ts->nonce);
        free(ts->received_version);
        json_decref(ts->held);
        free(ts->held_version);
        json_decref(ts->applied_held);
        free(ts->applied_version);
        wf_xdsc_names_free(ts->names, ts->n_names);
        free(ts->last_nack);
    }
    queue_clear(st);
    free(st->out);
    json_decref(st->node);
    json_decref(st->applied);
    free(st->last_nack);
    memset(st, 0, sizeof(*st));
}

/* Recomputes the EDS names from clusters (those held, unpacked).  When they changed:
 * forgets the endpoints of clusters no longer there and, if send, queues
 * the EDS request that tells the server (an empty list unsubscribes, so
 * it is sent only when EDS was subscribed on this stream). */
static int update_eds_names(wf_xdsc *st, const json_t *clusters, int send)
{
    wf_xdsc_tstate *e = &st->t[WF_XDSC_EDS];
    char **names = NULL;
    long n = 0;
    int same;

    if (clusters && (n = wf_xdsc_eds_names(clusters, &names)) < 0)
        return -1;
    same = (size_t)n == e->n_names;
    for (long i = 0; same && i < n; i++)
        same = strcmp(names[i], e->names[i]) == 0;
    if (same) {
        wf_xdsc_names_free(names, (size_t)n);
        return 0;
    }
    wf_xdsc_names_free(e->names, e->n_names);
    e->names = names;
    e->n_names = (size_t)n;
    if (e->held) {
        json_t *v, *keep = json_object();
        if (!keep)
            return -1;
        for (long i = 0; i < n; i++)
            if ((v = json_object_get(e->held, names[i])) &&
                json_object_set(keep, names[i], v) < 0) {
                json_decref(keep);
                return -1;
            }
        json_decref(e->held);
        e->held = keep;
    }
    if (send && (n || e->subscribed)) {
        if (!queue(st, WF_XDSC_EDS))
            return -1;
        e->names_resend = 1;
    }
    return 0;
}

/* Every EDS name has its assignment held. */
static int eds_covered(const wf_xdsc *st)
{
    const wf_xdsc_tstate *e = &st->t[WF_XDSC_EDS];

    for (size_t i = 0; i < e->n_names; i++)
        if (!e->held || !json_object_get(e->held, e->names[i]))
            return 0;
    return 1;
}

int wf_xdsc_stream_start(wf_xdsc *st)
{
    queue_clear(st);
    st->node_sent = 0;
    st->streams++;
    for (int i = 0; i < WF_XDSC_NTYPES; i++) {
        wf_xdsc_tstate *ts = &st->t[i];
        free(ts->nonce);
        ts->nonce = NULL;
        free(ts->received_version);
        ts->received_version = NULL;
        ts->status = WF_XDSC_NONE;
        ts->subscribed = 0;
        ts->names_resend = 0;
        /* Back to what is applied: what the versions sent say we hold. */
        if (ts->held != ts->applied_held) {
            json_decref(ts->held);
            ts->held = json_incref(ts->applied_held);
            if (set_str(&ts->held_version, ts->applied_version) < 0)
                return -1;
        }
    }
    {
        json_t *clusters = wf_junpack(st->t[WF_XDSC_CDS].held);
        int r = st->t[WF_XDSC_CDS].held && !clusters ? -1 : update_eds_names(st, clusters, 0);

        json_decref(clusters);
        if (r < 0)
            return -1;
    }
    if (!queue(st, WF_XDSC_CDS) || (st->t[WF_XDSC_EDS].n_names && !queue(st, WF_XDSC_EDS)) ||
        !queue(st, WF_XDSC_LDS))
        return -1;
    return 0;
}

int wf_xdsc_complete(const wf_xdsc *st)
{
    return st->t[WF_XDSC_LDS].held && st->t[WF_XDSC_CDS].held && eds_covered(st);
}

int wf_xdsc_due(const wf_xdsc *st)
{
    for (int i = 0; i < WF_XDSC_NTYPES; i++)
        if (st->t[i].status == WF_XDSC_PENDING)
            return wf_xdsc_complete(st);
    return 0;
}

static int note_nack(wf_xdsc *st, const char *types, const char *why)
{
    size_t len = strlen(types) + strlen(why) + 3;
    char *m = malloc(len);

    if (!m)
        return -1;
    snprintf(m, len, "%s: %s", types, why);
    free(st->last_nack);
    st->last_nack = m;
    return 0;
}

int wf_xdsc_reject(wf_xdsc *st, const char *type_url, const char *nonce, const char *err)
{
    int type = wf_xdsc_type_of(type_url);
    wf_xdsc_tstate *ts;

    if (type < 0 || !st->t[type].subscribed)
        return -1;
    ts = &st->t[type];
    if (set_str(&ts->nonce, nonce ? nonce : "") < 0 || set_str(&ts->last_nack, err) < 0 ||
        note_nack(st, type_names[type], err) < 0)
        return -1;
    ts->status = WF_XDSC_REJECTED;
    ts->n_responses++;
    ts->n_nacks++;
    return queue_nack(st, type, err);
}

int wf_xdsc_response(wf_xdsc *st, const wf_xds_response *r)
{
    int type = wf_xdsc_type_of(r->type_url);
    wf_xdsc_tstate *ts;
    json_t *held;
    size_t i;
    json_t *res;

    if (type < 0 || !st->t[type].subscribed)
        return 0;
    ts = &st->t[type];
    if (!json_is_array(r->resources))
        return wf_xdsc_reject(st, r->type_url, r->nonce, "resources is not a list") < 0 ? -1 : 0;
    if (type == WF_XDSC_EDS) {
        /* EDS may carry a subset of the names: merge. */
        held = ts->held ? json_copy(ts->held) : json_object();
        if (!held)
            return -1;
        json_array_foreach(r->resources, i, res)
        {
            const char *name = json_string_value(json_object_get(res, "cluster_name"));
            char why[128];
            if (!name || !*name) {
                json_decref(held);
                snprintf(why, sizeof(why),
                         "ClusterLoadAssignment resources[%zu] has no cluster_name", i);
                return wf_xdsc_reject(st, r->type_url, r->nonce, why) < 0 ? -1 : 0;
            }
            if (json_object_set_new(held, name, wf_jpack(res)) < 0) {
                json_decref(held);
                return -1;
            }
        }
    } else if (!(held = wf_jpack(r->resources))) {
        return -1;
    }
    json_decref(ts->held);
    ts->held = held;
    if (set_str(&ts->held_version, r->version_info ? r->version_info : "") < 0 ||
        set_str(&ts->received_version, r->version_info ? r->version_info : "") < 0 ||
        set_str(&ts->nonce, r->nonce ? r->nonce : "") < 0)
        return -1;
    ts->status = WF_XDSC_PENDING;
    ts->n_responses++;
    if (type == WF_XDSC_CDS && update_eds_names(st, r->resources, 1) < 0)
        return -1;
    if (type == WF_XDSC_EDS && (ts->names_resend || !eds_covered(st))) {
        ts->names_resend = 0;
        if (!queue(st, WF_XDSC_EDS))
            return -1;
    }
    return wf_xdsc_due(st);
}

static const char *vstr(const char *s)
{
    return s ? s : "";
}

/* What one build uses of each type: what is held or, in a fallback build,
 * the applied content of a type whose held content was refused. */
typedef struct pick {
    const json_t *res[WF_XDSC_NTYPES]; /* packed */
    const char *ver[WF_XDSC_NTYPES];
    int reverted[WF_XDSC_NTYPES];
    json_t *listeners, *clusters; /* unpacked (owned) */
    json_t *eds;        /* cluster_name -> assignment for every EDS cluster used (owned) */
    json_t *eds_packed; /* the same, packed (owned) */
    int region;         /* the unpacked trees go to the JSON region (util/jarena.h) */
} pick;

/* A packed value's tree; in the JSON region when the pick has one open
 * (the trees live only while the bundle is applied, and as malloc's they
 * would leave the pages of what the snapshot keeps full of holes). */
static json_t *unpack(const pick *p, const json_t *packed)
{
    json_t *v;

    if (p->region)
        wf_jarena_resume();
    v = wf_junpack(packed);
    if (p->region)
        wf_jarena_pause();
    return v;
}

static void pick_free(pick *p)
{
    json_decref(p->listeners);
    json_decref(p->clusters);
    json_decref(p->eds);
    json_decref(p->eds_packed);
    p->listeners = p->clusters = p->eds = p->eds_packed = NULL;
}

/* Fills p; returns 1 when every part is there, 0 when not, -1 out of
 * memory. */
static int make_pick(const wf_xdsc *st, int fallback, int region, pick *p)
{
    const json_t *primary, *secondary;
    char **names = NULL;
    long n = -1;
    int ok = 1;

    memset(p, 0, sizeof(*p));
    p->region = region;
    for (int t = 0; t < WF_XDSC_NTYPES; t++) {
        const wf_xdsc_tstate *ts = &st->t[t];
        p->reverted[t] = fallback && ts->status == WF_XDSC_NACKED && ts->applied_held;
        p->res[t] = p->reverted[t] ? ts->applied_held : ts->held;
        p->ver[t] = p->reverted[t] ? ts->applied_version : ts->held_version;
    }
    if (!p->res[WF_XDSC_LDS] || !p->res[WF_XDSC_CDS])
        return 0;
    /* A fallback build may use clusters the held endpoints no longer
     * cover: those come from what was applied. */
    primary = p->reverted[WF_XDSC_EDS] ? st->t[WF_XDSC_EDS].applied_held : st->t[WF_XDSC_EDS].held;
    secondary = !fallback                  ? NULL
                : p->reverted[WF_XDSC_EDS] ? st->t[WF_XDSC_EDS].held
                                           : st->t[WF_XDSC_EDS].applied_held;
    if (!(p->listeners = unpack(p, p->res[WF_XDSC_LDS])) ||
        !(p->clusters = unpack(p, p->res[WF_XDSC_CDS])) ||
        (n = wf_xdsc_eds_names(p->clusters, &names)) < 0 || !(p->eds = json_object()) ||
        !(p->eds_packed = json_object())) {
        if (n > 0)
            wf_xdsc_names_free(names, (size_t)n);
        pick_free(p);
        return -1;
    }
    for (long i = 0; ok == 1 && i < n; i++) {
        json_t *v = json_object_get(primary, names[i]);
        if (!v)
            v = json_object_get(secondary, names[i]);
        if (!v)
            ok = 0;
        else if (json_object_set(p->eds_packed, names[i], v) < 0 ||
                 json_object_set_new(p->eds, names[i], unpack(p, v)) < 0)
            ok = -1;
    }
    wf_xdsc_names_free(names, (size_t)n);
    if (ok != 1)
        pick_free(p);
    return ok;
}

static json_t *pick_bundle(const pick *p)
{
    const json_t *c;
    json_t *endpoints = json_array(), *b;
    size_t i, vlen;
    char *version;

    if (!endpoints)
        return NULL;
    json_array_foreach(p->clusters, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *cla = is_eds(c) ? json_object_get(p->eds, eds_name(c))
                                : json_object_get(c, "load_assignment");
        const char *cn = json_string_value(json_object_get(cla, "cluster_name"));

        if (!cla || !name)
            continue; /* no endpoints: the snapshot's cluster answers UH */
        if (!cn || strcmp(cn, name) != 0) {
            /* The snapshot finds endpoints by cluster name. */
            json_t *copy = json_copy(cla);
            if (!copy || json_object_set_new(copy, "cluster_name", json_string(name)) < 0 ||
                json_array_append_new(endpoints, copy) < 0) {
                json_decref(endpoints);
                return NULL;
            }
        } else if (json_array_append(endpoints, cla) < 0) {
            json_decref(endpoints);
            return NULL;
        }
    }
    vlen = strlen(vstr(p->ver[WF_XDSC_LDS])) + strlen(vstr(p->ver[WF_XDSC_CDS])) +
           strlen(vstr(p->ver[WF_XDSC_EDS])) + 3;
    if (!(version = malloc(vlen))) {
        json_decref(endpoints);
        return NULL;
    }
    snprintf(version, vlen, "%s/%s/%s", vstr(p->ver[WF_XDSC_LDS]), vstr(p->ver[WF_XDSC_CDS]),
             vstr(p->ver[WF_XDSC_EDS]));
    /* packed: what /config_dump shows of clusters and endpoints, shared
     * with what the client holds (core/proxy/snapshot.c). */
    b = json_pack("{s:s, s:O, s:O, s:o, s:{s:O, s:O}}", "version_info", version, "listeners",
                  p->listeners, "clusters", p->clusters, "endpoints", endpoints, "packed",
                  "clusters", p->res[WF_XDSC_CDS], "endpoints", p->eds_packed);
    free(version);
    return b;
}

json_t *wf_xdsc_bundle(const wf_xdsc *st)
{
    pick p;
    json_t *b;

    if (make_pick(st, 0, 0, &p) != 1)
        return NULL;
    b = pick_bundle(&p);
    pick_free(&p);
    return b;
}

static int same_resources(const json_t *a, const json_t *b)
{
    static const char *const keys[] = {"listeners", "clusters", "assignments"};

    for (size_t i = 0; i < 3; i++)
        if (!json_equal(json_object_get(a, keys[i]), json_object_get(b, keys[i])))
            return 0;
    return 1;
}

/* One build: 1 applied, 0 the same as applied (skipped), -2 refused (err),
 * -3 nothing to build from, -1 out of memory.  On success the applied
 * state and the ACKs are done. */
static int build_apply(wf_xdsc *st, int fallback, int region, wf_xds_apply_fn apply, void *ud,
                       char *err, size_t errlen)
{
    json_t *bundle, *raw;
    int unchanged, rc;
    pick p;

    if ((rc = make_pick(st, fallback, region, &p)) != 1)
        return rc < 0 ? -1 : -3;
    /* raw: what the bundle is made of, packed (the endpoints follow from
     * the clusters and the assignments), taken before the owner may
     * replace the bundle's members. */
    if (!(bundle = pick_bundle(&p)) ||
        !(raw = json_pack("{s:O, s:O, s:O, s:O}", "version_info",
                          json_object_get(bundle, "version_info"), "listeners",
                          p.res[WF_XDSC_LDS], "clusters", p.res[WF_XDSC_CDS], "assignments",
                          p.eds_packed))) {
        json_decref(bundle);
        pick_free(&p);
        return -1;
    }
    unchanged = st->applied && same_resources(raw, st->applied);
    rc = unchanged ? 0 : apply(bundle, ud, err, errlen);
    json_decref(bundle);
    if (rc != 0) {
        json_decref(raw);
        pick_free(&p);
        return -2;
    }
    if (!unchanged) {
        json_decref(st->applied);
        st->applied = raw;
        st->n_applied++;
    } else {
        json_decref(raw);
    }
    for (int i = 0; i < WF_XDSC_NTYPES; i++) {
        wf_xdsc_tstate *ts = &st->t[i];
        if (p.reverted[i] || !p.res[i])
            continue;
        if (set_str(&ts->applied_version, vstr(ts->held_version)) < 0) {
            pick_free(&p);
            return -1;
        }
        json_decref(ts->applied_held);
        ts->applied_held = json_incref(i == WF_XDSC_EDS ? p.eds_packed : ts->held);
    }
    pick_free(&p);
    /* Every response the applied bundle holds gets its ACK; one refused
     * and left out of a fallback build stays NACKed. */
    for (int i = 0; i < WF_XDSC_NTYPES; i++) {
        wf_xdsc_tstate *ts = &st->t[i];
        if (ts->status != WF_XDSC_PENDING && (ts->status != WF_XDSC_NACKED || p.reverted[i]))
            continue;
        ts->status = WF_XDSC_ACKED;
        ts->n_acks++;
        free(ts->last_nack);
        ts->last_nack = NULL;
        if (!queue(st, i))
            return -1;
    }
    return unchanged ? 0 : 1;
}

static int try_apply(wf_xdsc *st, int fallback, wf_xds_apply_fn apply, void *ud, char *err,
                     size_t errlen)
{
    /* The trees unpacked for the build live in the JSON region, emptied
     * once it is applied; everything else (what the client and the
     * snapshot keep) comes from malloc as usual. */
    int region = wf_jarena_begin() == 0, rc;

    if (region)
        wf_jarena_pause();
    rc = build_apply(st, fallback, region, apply, ud, err, errlen);
    if (region)
        wf_jarena_end();
    return rc;
}

int wf_xdsc_apply(wf_xdsc *st, wf_xds_apply_fn apply, void *ud)
{
    char err[1024] = "", types[32] = "";
    int rc, nacked = 0;

    if (!wf_xdsc_due(st))
        return 0;
    rc = try_apply(st, 0, apply, ud, err, sizeof(err));
    for (int i = 0; i < WF_XDSC_NTYPES; i++)
        nacked |= st->t[i].status == WF_XDSC_NACKED && st->t[i].applied_held;
    if (rc == -2 && nacked) {
        /* Refused again while a type refused before is still held: that
         * one may be the cause, so try the new responses without it, so a
         * bad listener does not hold back endpoint updates. */
        char err2[1024] = "";
        int rc2 = try_apply(st, 1, apply, ud, err2, sizeof(err2));
        if (rc2 != -3)
            rc = rc2;
        if (rc2 == -2)
            snprintf(err, sizeof(err), "%s", err2);
    }
    if (rc != -2)
        return rc == -3 ? 0 : rc;
    if (!err[0])
        snprintf(err, sizeof(err), "the proxy could not apply the configuration (no reason given)");
    for (int i = 0; i < WF_XDSC_NTYPES; i++)
        if (st->t[i].status == WF_XDSC_PENDING)
            snprintf(types + strlen(types), sizeof(types) - strlen(types), "%s%s",
                     types[0] ? "+" : "", type_names[i]);
    if (note_nack(st, types, err) < 0)
        return -1;
    for (int i = 0; i < WF_XDSC_NTYPES; i++) {
        wf_xdsc_tstate *ts = &st->t[i];
        if (ts->status != WF_XDSC_PENDING)
            continue;
        ts->status = WF_XDSC_NACKED;
        ts->n_nacks++;
        if (set_str(&ts->last_nack, err) < 0 || queue_nack(st, i, err) < 0)
            return -1;
    }
    return -2;
}

json_t *wf_xdsc_dump(const wf_xdsc *st)
{
    static const int order[] = {WF_XDSC_LDS, WF_XDSC_CDS, WF_XDSC_EDS};
    json_t *d = json_object();

    for (size_t k = 0; d && k < 3; k++) {
        const wf_xdsc_tstate *ts = &st->t[order[k]];
        json_t *t = json_pack("{s:s, s:s?, s:s?, s:b, s:s, s:s?, s:I, s:I, s:I}", "version",
                              vstr(ts->applied_version), "received_version", ts->received_version,
                              "nonce", ts->nonce, "acked", ts->status == WF_XDSC_ACKED, "status",
                              status_names[ts->status], "last_nack", ts->last_nack, "responses",
                              (json_int_t)ts->n_responses, "acks", (json_int_t)ts->n_acks, "nacks",
                              (json_int_t)ts->n_nacks);
        if (t && order[k] == WF_XDSC_EDS) {
            json_t *names = json_array();
            for (size_t i = 0; names && i < ts->n_names; i++)
                json_array_append_new(names, json_string(ts->names[i]));
            json_object_set_new(t, "resource_names", names ? names : json_null());
        }
        json_object_set_new(d, type_names[order[k]], t ? t : json_null());
    }
    if (d) {
        json_object_set_new(d, "last_nack",
                            st->last_nack ? json_string(st->last_nack) : json_null());
        json_object_set_new(d, "applied", json_integer((json_int_t)st->n_applied));
        json_object_set_new(d, "streams", json_integer((json_int_t)st->streams));
    }
    return d;
}

uint64_t wf_xds_backoff_ms(unsigned attempt, uint32_t rnd)
{
    uint64_t base = BACKOFF_BASE_MS;

    for (unsigned i = 0; i < attempt && base < BACKOFF_MAX_MS; i++)
        base *= 2;
    if (base > BACKOFF_MAX_MS)
        base = BACKOFF_MAX_MS;
    /* Jitter so that proxies cut off together do not come back together. */
    return base * (75 + rnd % 51) / 100;
}

/* ---- the node ------------------------------------------------------------------------------ */

int wf_xds_parse_service(const char *s, char *name, size_t namelen, int *port, char *err,
                         size_t errlen)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    size_t nl = colon ? (size_t)(colon - s) : 0;
    char *end;
    long p;

    if (!colon || !nl || !colon[1]) {
        snprintf(err, errlen, "--service \"%s\" is not NAME:PORT (e.g. reviews:9080)", s ? s : "");
        return -1;
    }
    if (nl >= namelen || nl > 253 ||
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != nl ||
        s[0] == '.' || s[0] == '-' || s[nl - 1] == '.') {
        snprintf(err, errlen,
                 "--service \"%s\": \"%.*s\" is not a service name (letters, digits, '-' and '.')",
                 s, (int)(nl > 64 ? 64 : nl), s);
        return -1;
    }
    p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535 || colon[1] == '+' || colon[1] == '-' || colon[1] == ' ') {
        snprintf(err, errlen, "--service \"%s\": the port must be a number in 1..65535", s);
        return -1;
    }
    memcpy(name, s, nl);
    name[nl] = 0;
    *port = (int)p;
    return 0;
}

/* "host:port", with brackets for an IPv6 host. */
static void join_hostport(char *out, size_t len, const char *host, int port)
{
    snprintf(out, len, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

json_t *wf_xds_node(const wf_xds_node_info *ni, char *err, size_t errlen)
{
    const char *ns = ni->namespace_ && *ni->namespace_ ? ni->namespace_ : "default";
    const char *sa = ni->service_account && *ni->service_account ? ni->service_account : "default";
    const char *ips = ni->instance_ips && *ni->instance_ips ? ni->instance_ips : "127.0.0.1";
    const char *app = json_string_value(json_object_get(ni->labels, "app"));
    char ip[64], name[300], svc[256], id[1024], cluster[600], inb[300], host[256];
    json_t *services = json_array(), *md = NULL, *node = NULL, *labels = NULL;
    int port = 0;
    size_t n = strcspn(ips, ",");

    if (!services)
        goto oom;
    if (n == 0 || n >= sizeof(ip)) {
        snprintf(err, errlen, "instance IPs \"%s\": the first is not an IP address", ips);
        json_decref(services);
        return NULL;
    }
    snprintf(ip, sizeof(ip), "%.*s", (int)n, ips);
    for (size_t i = 0; i < ni->n_services; i++) {
        if (wf_xds_parse_service(ni->services[i], svc, sizeof(svc), &port, err, errlen) < 0) {
            json_decref(services);
            return NULL;
        }
        if (json_array_append_new(services, json_pack("{s:s, s:i}", "name", svc, "port", port)) < 0)
            goto oom;
    }
    if (ni->name && *ni->name) {
        snprintf(name, sizeof(name), "%s", ni->name);
    } else {
        const char *base = app && *app ? app : "proxy";
        if ((!app || !*app) && ni->n_services &&
            wf_xds_parse_service(ni->services[0], svc, sizeof(svc), &port, err, errlen) == 0)
            base = svc;
        snprintf(name, sizeof(name), "%s-%ld", base, ni->pid);
    }
    /* Where peers reach the inbound listener: its own host, or the first
     * instance IP when it listens on every address. */
    if (wf_addr_split(ni->inbound ? ni->inbound : ":15006", host, sizeof(host), &port) < 0) {
        snprintf(err, errlen, "inbound address \"%s\" is not HOST:PORT", ni->inbound);
        json_decref(services);
        return NULL;
    }
    join_hostport(inb, sizeof(inb),
                  !host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ? ip : host,
                  port);
    snprintf(id, sizeof(id), "sidecar~%s~%s.%s~%s.svc.cluster.local", ip, name, ns, ns);
    snprintf(cluster, sizeof(cluster), "%s.%s", app && *app ? app : name, ns);
    labels = json_is_object(ni->labels) ? json_deep_copy(ni->labels) : json_object();
    md = json_object();
    node = json_object();
    if (!labels || !md || !node)
        goto oom;
    /* Each set_new takes its value's reference even when it fails. */
    if (json_object_set_new(md, "NAMESPACE", json_string(ns)) < 0 ||
        json_object_set_new(md, "SERVICE_ACCOUNT", json_string(sa)) < 0 ||
        json_object_set_new(md, "LABELS", labels) < 0 ||
        json_object_set_new(md, "INSTANCE_IPS", json_string(ips)) < 0 ||
        json_object_set_new(md, "CLUSTER_ID", json_string("Kubernetes")) < 0 ||
        json_object_set_new(md, "ISTIO_VERSION", json_string("weft-" WF_VERSION)) < 0 ||
        json_object_set_new(md, "WORKLOAD_NAME", json_string(name)) < 0 ||
        json_object_set_new(md, "WEFT_OUTBOUND_LISTEN",
                            json_string(ni->outbound ? ni->outbound : "127.0.0.1:15001")) < 0 ||
        json_object_set_new(md, "WEFT_INBOUND_LISTEN",
                            json_string(ni->inbound ? ni->inbound : ":15006")) < 0 ||
        json_object_set_new(md, "WEFT_INBOUND_ADDR", json_string(inb)) < 0 ||
        json_object_set_new(md, "WEFT_APP_PORT", json_integer(ni->app_port)) < 0 ||
        (ni->app_protocol &&
         json_object_set_new(md, "WEFT_APP_PROTOCOL", json_string(ni->app_protocol)) < 0) ||
        json_object_set_new(md, "WEFT_SERVICES", services) < 0)
        goto oom_md;
    services = NULL;
    if (json_object_set_new(node, "id", json_string(id)) < 0 ||
        json_object_set_new(node, "cluster", json_string(cluster)) < 0 ||
        json_object_set_new(node, "metadata", md) < 0 ||
        json_object_set_new(node, "user_agent_name", json_string("weft")) < 0 ||
        json_object_set_new(node, "user_agent_version", json_string(WF_VERSION)) < 0) {
        md = NULL;
        goto oom_md;
    }
    return node;
oom:
    json_decref(labels);
oom_md:
    json_decref(services);
    json_decref(md);
    json_decref(node);
    snprintf(err, errlen, "out of memory");
    return NULL;
}

/* ---- the client ---------------------------------------------------------------------------- */

struct wf_xds_client {
    uv_loop_t *loop;
    char *server;
    wf_xdsc st;
    wf_xds_apply_fn apply;
    void *ud;
    wf_grpc_call *call; /* the current stream, NULL between attempts */
    int open;           /* the current stream's request went out */
    int answered;       /* the current stream has brought a response */
    unsigned attempt;   /* failed attempts since the last working stream */
    uint64_t reconnects;
    uint64_t connected_ms; /* uv_now when the current stream opened */
    uint64_t rng;
    char last_error[300];
    uv_timer_t retry;
    uv_timer_t build; /* 0 ms: builds once for all the responses read together */
    wf_tls_ctx *(*tls_ctx)(void); /* mTLS: the current client context, or NULL */
    char *tls_name;               /* the name istiod's certificate must carry */
    int stopping;
    int handles; /* libuv handles not closed yet */
};

static void connect_now(wf_xds_client *c);

static uint32_t next_rand(wf_xds_client *c)
{
    /* xorshift64*: jitter needs no more. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return (uint32_t)((c->rng * 2685821657736338717ULL) >> 32);
}

static void maybe_free(wf_xds_client *c)
{
    if (!c->stopping || c->handles || c->call)
        return;
    wf_xdsc_free(&c->st);
    free(c->server);
    free(c->tls_name);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    wf_xds_client *c = h->data;

    c->handles--;
    maybe_free(c);
}

/* Sends every queued request. */
static void flush(wf_xds_client *c)
{
    wf_xds_request r;

    while (wf_xdsc_take(&c->st, &r)) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (c->call && c->open && wf_xds_request_encode(&r, &buf, &len) == 0) {
            if (wf_grpc_send(c->call, buf, len) < 0)
                WF_DEBUG("xds: %s request not sent: the stream is closing",
                         wf_xdsc_type_name(wf_xdsc_type_of(r.type_url)));
            else
                WF_DEBUG("xds: sent %s request: version \"%s\" nonce \"%s\" %zu names%s%s",
                         wf_xdsc_type_name(wf_xdsc_type_of(r.type_url)), r.version_info,
                         r.response_nonce, r.n_resource_names, r.has_error ? " NACK: " : "",
                         r.has_error ? r.error_message : "");
        }
        free(buf);
        wf_xds_request_free(&r);
    }
}

static const char *applied_versions(const wf_xdsc *st, char *buf, size_t len)
{
    snprintf(buf, len, "LDS %s, CDS %s, EDS %s",
             st->t[WF_XDSC_LDS].applied_version ? st->t[WF_XDSC_LDS].applied_version : "(none)",
             st->t[WF_XDSC_CDS].applied_version ? st->t[WF_XDSC_CDS].applied_version : "(none)",
             st->t[WF_XDSC_EDS].applied_version ? st->t[WF_XDSC_EDS].applied_version : "(none)");
    return buf;
}

static void build_cb(uv_timer_t *h)
{
    wf_xds_client *c = h->data;
    char vb[300];
    int rc;

    if (c->stopping)
        return;
    rc = wf_xdsc_apply(&c->st, c->apply, c->ud);
    if (rc == 1) {
        char left[256] = "";
        for (int i = 0; i < WF_XDSC_NTYPES; i++)
            if (c->st.t[i].status == WF_XDSC_NACKED)
                snprintf(left + strlen(left), sizeof(left) - strlen(left),
                         "; the %s refused "
                         "earlier (version %s) stays out",
                         type_names[i], vstr(c->st.t[i].received_version));
        WF_INFO("xds: applied configuration from %s: %s%s", c->server,
                applied_versions(&c->st, vb, sizeof(vb)), left);
    } else if (rc == -2 && c->st.applied)
        WF_WARN("xds: refused the configuration from %s (%s); NACKed it and kept serving %s",
                c->server, c->st.last_nack ? c->st.last_nack : "",
                applied_versions(&c->st, vb, sizeof(vb)));
    else if (rc == -2)
        WF_WARN("xds: refused the first configuration from %s (%s); NACKed it; not ready until "
                "istiod sends one this proxy can apply",
                c->server, c->st.last_nack ? c->st.last_nack : "");
    else if (rc == -1)
        WF_ERROR("xds: out of memory applying the configuration from %s", c->server);
    flush(c);
}

/* A response the codec refused: NACK it if its envelope says what it is,
 * else the stream is beyond repair. */
static void undecodable(wf_xds_client *c, const uint8_t *msg, size_t len, const char *err)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *p =
        envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
    int type = p ? wf_xdsc_type_of(p->type_url) : -1;

    if (type < 0 || wf_xdsc_reject(&c->st, p->type_url, p->nonce, err) < 0) {
        WF_WARN("xds: %s sent a message that is not a DiscoveryResponse for a type this proxy "
                "asked for (%s); ending the stream",
                c->server, err);
        if (p)
            envoy__service__discovery__v3__discovery_response__free_unpacked(p, NULL);
        wf_grpc_cancel(c->call);
        return;
    }
    WF_WARN("xds: cannot decode the %s response (version %s, nonce %s) from %s: %s; NACKed it",
            wf_xdsc_type_name(type), p->version_info ? p->version_info : "",
            p->nonce ? p->nonce : "", c->server, err);
    envoy__service__discovery__v3__discovery_response__free_unpacked(p, NULL);
    flush(c);
}

static void on_open(wf_grpc_call *call, void *ud)
{
    wf_xds_client *c = ud;

    if (c->stopping || call != c->call)
        return;
    c->open = 1;
    c->connected_ms = uv_now(c->loop);
    if (wf_xdsc_stream_start(&c->st) < 0) {
        WF_ERROR("xds: out of memory starting a stream to %s", c->server);
        wf_grpc_cancel(call);
        return;
    }
    WF_DEBUG("xds: stream %llu to %s open; subscribing", (unsigned long long)c->st.streams,
             c->server);
    flush(c);
}

static void on_message(wf_grpc_call *call, const uint8_t *msg, size_t len, void *ud)
{
    wf_xds_client *c = ud;
    wf_xds_response r;
    char err[1024];
    int rc;

    if (c->stopping || call != c->call)
        return;
    if (wf_xds_response_decode(msg, len, &r, err, sizeof(err)) < 0) {
        undecodable(c, msg, len, err);
        return;
    }
    if (!c->answered) {
        c->answered = 1;
        if (c->attempt || c->st.streams > 1)
            WF_INFO("xds: connected to %s (stream %llu)", c->server,
                    (unsigned long long)c->st.streams);
        else
            WF_INFO("xds: connected to %s", c->server);
    }
    c->attempt = 0;
    WF_DEBUG("xds: received %s version \"%s\" nonce \"%s\": %zu resources",
             wf_xdsc_type_name(wf_xdsc_type_of(r.type_url)), r.version_info, r.nonce,
             json_array_size(r.resources));
    rc = wf_xdsc_response(&c->st, &r);
    wf_xds_response_free(&r);
    if (rc < 0)
        WF_ERROR("xds: out of memory holding a response from %s", c->server);
    else if (rc == 1 && !uv_is_active((uv_handle_t *)&c->build))
        uv_timer_start(&c->build, build_cb, 0, 0);
    flush(c);
}

static void retry_cb(uv_timer_t *t)
{
    connect_now(t->data);
}

static void schedule_retry(wf_xds_client *c, const char *why)
{
    uint64_t delay = wf_xds_backoff_ms(c->attempt, next_rand(c));
    char vb[300];

    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    /* Loud for the first failure and then at growing intervals, so a long
     * outage does not flood the log. */
    if ((c->attempt & (c->attempt - 1)) == 0 || c->attempt % 30 == 0)
        WF_WARN("xds: no stream to %s: %s; %s%s; retrying in %llu ms", c->server, why,
                c->st.applied ? "still serving " : "",
                c->st.applied ? applied_versions(&c->st, vb, sizeof(vb)) : "no configuration yet",
                (unsigned long long)delay);
    else
        WF_DEBUG("xds: no stream to %s: %s; retrying in %llu ms", c->server, why,
                 (unsigned long long)delay);
    if (c->attempt < 1000)
        c->attempt++;
    uv_timer_start(&c->retry, retry_cb, delay, 0);
}

static void on_close(wf_grpc_call *call, int status, const char *message, void *ud)
{
    wf_xds_client *c = ud;
    char why[300];

    if (call != c->call)
        return;
    c->call = NULL;
    c->open = 0;
    if (c->stopping) {
        maybe_free(c);
        return;
    }
    c->reconnects++;
    if (c->answered)
        snprintf(why, sizeof(why), "the stream ended (gRPC status %d%s%s)", status,
                 message && *message ? ": " : "", message ? message : "");
    else
        snprintf(why, sizeof(why), "%s (gRPC status %d)",
                 message && *message ? message : "the stream ended", status);
    c->answered = 0;
    schedule_retry(c, why);
}

static void connect_now(wf_xds_client *c)
{
    static const wf_grpc_client_handlers h = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close};
    wf_grpc_client_handlers hh = h;
    char err[300];

    if (c->stopping || c->call)
        return;
    hh.ud = c;
    c->open = 0;
    c->answered = 0;
    if (c->tls_ctx) {
        /* Each connection takes the newest certificate: rotation needs no
         * reconnect, the next one just uses it. */
        wf_grpc_tls t = {.ctx = c->tls_ctx(), .verify_name = c->tls_name};
        if (!t.ctx) {
            schedule_retry(c, "no workload certificate yet");
            return;
        }
        c->call = wf_grpc_client_call_tls(c->loop, c->server, WF_ADS_METHOD, NULL, &t, &hh, err,
                                          sizeof(err));
        wf_tls_ctx_unref(t.ctx);
    } else {
        c->call =
            wf_grpc_client_call(c->loop, c->server, WF_ADS_METHOD, NULL, &hh, err, sizeof(err));
    }
    if (!c->call)
        schedule_retry(c, err);
}

wf_xds_client *wf_xds_client_start(uv_loop_t *loop, const char *server, json_t *node,
                                   wf_xds_apply_fn apply, void *ud, char *err, size_t errlen)
{
    return wf_xds_client_start_tls(loop, server, node, NULL, NULL, apply, ud, err, errlen);
}

wf_xds_client *wf_xds_client_start_tls(uv_loop_t *loop, const char *server, json_t *node,
                                       wf_tls_ctx *(*tls_ctx)(void), const char *tls_name,
                                       wf_xds_apply_fn apply, void *ud, char *err, size_t errlen)
{
    wf_xds_client *c = calloc(1, sizeof(*c));
    char host[256];
    int port;

    if (!server || wf_addr_split(server, host, sizeof(host), &port) < 0 || port <= 0) {
        snprintf(err, errlen, "xDS server \"%s\" is not HOST:PORT", server ? server : "");
        free(c);
        return NULL;
    }
    if (!c || !(c->server = strdup(server)) || wf_xdsc_init(&c->st, node) < 0) {
        snprintf(err, errlen, "out of memory");
        if (c) {
            wf_xdsc_free(&c->st);
            free(c->server);
        }
        free(c);
        return NULL;
    }
    c->loop = loop;
    c->apply = apply;
    c->ud = ud;
    c->tls_ctx = tls_ctx;
    if (tls_name && !(c->tls_name = strdup(tls_name))) {
        snprintf(err, errlen, "out of memory");
        wf_xdsc_free(&c->st);
        free(c->server);
        free(c);
        return NULL;
    }
    c->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)c << 16) ^ 0x9E3779B97F4A7C15ULL;
    if (!c->rng)
        c->rng = 1;
    uv_timer_init(loop, &c->retry);
    c->retry.data = c;
    uv_timer_init(loop, &c->build);
    c->build.data = c;
    c->handles = 2;
    connect_now(c);
    return c;
}

void wf_xds_client_stop(wf_xds_client *c)
{
    if (!c || c->stopping)
        return;
    c->stopping = 1;
    uv_timer_stop(&c->retry);
    uv_timer_stop(&c->build);
    uv_close((uv_handle_t *)&c->retry, handle_closed);
    uv_close((uv_handle_t *)&c->build, handle_closed);
    if (c->call)
        wf_grpc_cancel(c->call); /* on_close follows, then the client is freed */
}

int wf_xds_client_connected(const wf_xds_client *c)
{
    return c && c->call && c->open;
}

json_t *wf_xds_client_dump(const wf_xds_client *c)
{
    json_t *d = wf_xdsc_dump(&c->st);

    if (!d)
        return NULL;
    json_object_set_new(d, "server", json_string(c->server));
    json_object_set_new(d, "connected", json_boolean(wf_xds_client_connected(c)));
    json_object_set_new(d, "connected_for_ms",
                        wf_xds_client_connected(c)
                            ? json_integer((json_int_t)(uv_now(c->loop) - c->connected_ms))
                            : json_null());
    json_object_set_new(d, "reconnects", json_integer((json_int_t)c->reconnects));
    json_object_set_new(d, "last_error",
                        c->last_error[0] ? json_string(c->last_error) : json_null());
    return d;
}
