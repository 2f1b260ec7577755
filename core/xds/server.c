/*
 * server.c: the ADS server; see server.h.  The first half is the pure
 * per-stream state machine, the second the gRPC streams that drive it.
 */
#include "xds/server.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "grpc/grpc.h"
#include "util/log.h"
#include "util/map.h"

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
/* A client with this much still queued gets no more pushes until it has
 * read some: pushing more would only grow our memory, never its config. */
#define SLOW_BYTES (1024 * 1024)
#define RETRY_MS 100
#define CONTROL_PLANE "weft-istiod"

static const char *const type_urls[WF_XDS_NTYPES] = {WF_TYPE_CLUSTER, WF_TYPE_ENDPOINT,
                                                     WF_TYPE_LISTENER};
static const char *const type_names[WF_XDS_NTYPES] = {"CDS", "EDS", "LDS"};
static const char *const bundle_keys[WF_XDS_NTYPES] = {"clusters", "endpoints", "listeners"};

const double wf_xds_conv_bounds[WF_XDS_CONV_BUCKETS] = {0.1, 0.5, 1, 3, 5, 10, 20, 30};

int wf_xds_type_of(const char *type_url)
{
    for (int i = 0; type_url && i < WF_XDS_NTYPES; i++)
        if (strcmp(type_url, type_urls[i]) == 0)
            return i;
    return -1;
}

const char *wf_xds_type_url(int type)
{
    return type >= 0 && type < WF_XDS_NTYPES ? type_urls[type] : "";
}

const char *wf_xds_type_name(int type)
{
    return type >= 0 && type < WF_XDS_NTYPES ? type_names[type] : "?";
}

const char *wf_xds_bundle_key(int type)
{
    return type >= 0 && type < WF_XDS_NTYPES ? bundle_keys[type] : "";
}

/* ---- state machine ----------------------------------------------------------------------- */

void wf_xds_state_init(wf_xds_stream_state *st)
{
    memset(st, 0, sizeof(*st));
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void type_free(wf_xds_type_state *ts)
{
    free_names(ts->names, ts->n_names);
    free(ts->sent_version);
    free(ts->sent_nonce);
    free(ts->acked_version);
    free(ts->last_nack);
    memset(ts, 0, sizeof(*ts));
}

void wf_xds_state_free(wf_xds_stream_state *st)
{
    for (int i = 0; i < WF_XDS_NTYPES; i++)
        type_free(&st->t[i]);
    json_decref(st->node);
    st->node = NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The request's names as a sorted, unique, malloc'd list.  Returns 0 or -1
 * (out of memory). */
static int names_from(const wf_xds_request *req, char ***out, size_t *n_out, int *has_star)
{
    char **v = NULL;
    size_t n = 0;

    *has_star = 0;
    if (req->n_resource_names) {
        v = calloc(req->n_resource_names, sizeof(*v));
        if (!v)
            return -1;
    }
    for (size_t i = 0; i < req->n_resource_names; i++) {
        const char *name = req->resource_names[i] ? req->resource_names[i] : "";
        if (strcmp(name, "*") == 0) {
            *has_star = 1;
            continue;
        }
        if (!(v[n] = strdup(name))) {
            free_names(v, n);
            return -1;
        }
        n++;
    }
    if (n > 1) {
        size_t k = 1;
        qsort(v, n, sizeof(*v), cmp_str);
        for (size_t i = 1; i < n; i++) {
            if (strcmp(v[i], v[k - 1]) == 0)
                free(v[i]);
            else
                v[k++] = v[i];
        }
        n = k;
    }
    *out = v;
    *n_out = n;
    return 0;
}

/* Replaces ts's subscription by the request's.  Returns 1 when it changed,
 * 0 when it is the same, -1 on out of memory. */
static int set_names(wf_xds_type_state *ts, int type, const wf_xds_request *req)
{
    char **v;
    size_t n;
    int star, wildcard, same;

    if (names_from(req, &v, &n, &star) < 0)
        return -1;
    /* Only LDS and CDS know a wildcard; an EDS request without names asks
     * for nothing. */
    wildcard = type != WF_XDS_EDS && (star || n == 0);
    same = ts->subscribed && wildcard == ts->wildcard && n == ts->n_names;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(v[i], ts->names[i]) == 0;
    free_names(ts->names, ts->n_names);
    ts->names = v;
    ts->n_names = n;
    ts->wildcard = wildcard;
    ts->subscribed = 1;
    return !same;
}

static int replace(char **dst, const char *src)
{
    char *c = src ? strdup(src) : NULL;

    if (src && !c)
        return -1;
    free(*dst);
    *dst = c;
    return 0;
}

int wf_xds_state_request(wf_xds_stream_state *st, const wf_xds_request *req, uint64_t now_ms,
                         wf_xds_outcome *out, char *err, size_t errlen)
{
    wf_xds_type_state *ts;
    const char *nonce = req->response_nonce ? req->response_nonce : "";
    int type, changed;

    memset(out, 0, sizeof(*out));
    out->type = -1;
    out->converged = -1;
    if (!st->node) {
        const json_t *id = req->node ? json_object_get(req->node, "id") : NULL;
        if (!json_is_string(id) || !json_string_length(id)) {
            snprintf(err, errlen, "the first DiscoveryRequest of a stream must carry node.id");
            out->verdict = WF_XDS_BAD;
            return 0;
        }
        st->node = json_incref(req->node);
        out->first = 1;
    }
    type = wf_xds_type_of(req->type_url);
    out->type = type;
    if (type < 0) {
        out->verdict = WF_XDS_IGNORE;
        return 0;
    }
    ts = &st->t[type];

    /* A nonce on a type this stream never answered is a client carrying
     * it over from an earlier stream (istiod restarted): a new
     * subscription, as Istio treats it. */
    if (nonce[0] && ts->sent_nonce) {
        if (strcmp(nonce, ts->sent_nonce) != 0) {
            out->verdict = WF_XDS_STALE;
            return 0;
        }
        if ((changed = set_names(ts, type, req)) < 0)
            return -1;
        if (changed) {
            ts->owed = 1;
            out->respond = 1;
        }
        if (req->has_error) {
            char msg[64];
            const char *m = req->error_message && req->error_message[0] ? req->error_message : NULL;
            if (!m) {
                snprintf(msg, sizeof(msg), "rejected with code %d and no message", req->error_code);
                m = msg;
            }
            if (replace(&ts->last_nack, m) < 0)
                return -1;
            ts->n_nacks++;
            out->verdict = WF_XDS_NACK;
            return 0;
        }
        if (replace(&ts->acked_version,
                    req->version_info && req->version_info[0] ? req->version_info
                                                              : ts->sent_version) < 0)
            return -1;
        free(ts->last_nack);
        ts->last_nack = NULL;
        ts->n_acks++;
        if (!ts->measured) {
            ts->measured = 1;
            out->converged = now_ms >= ts->trigger_ms ? (int64_t)(now_ms - ts->trigger_ms) : 0;
        }
        out->verdict = WF_XDS_ACK;
        return 0;
    }
    if (set_names(ts, type, req) < 0)
        return -1;
    ts->owed = 1;
    out->respond = 1;
    out->verdict = WF_XDS_SUBSCRIBE;
    return 0;
}

void wf_xds_version(const json_t *resources, char buf[17])
{
    char *dump = json_dumps(resources, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    uint64_t h = dump ? wf_hash(dump, strlen(dump)) : 0;

    snprintf(buf, 17, "%016" PRIx64, h);
    free(dump);
}

static const char *res_name(int type, const json_t *r)
{
    return json_string_value(json_object_get(r, type == WF_XDS_EDS ? "cluster_name" : "name"));
}

/* "reviews" / "reviews.default" / "reviews.default.svc" -> the FQDN in
 * namespace ns; anything with more dots is taken as written. */
static void alias_fqdn(const char *host, size_t hl, const char *ns, char *out, size_t len)
{
    size_t dots = 0;

    for (size_t i = 0; i < hl; i++)
        dots += host[i] == '.';
    if (dots == 0)
        snprintf(out, len, "%.*s.%s.svc.cluster.local", (int)hl, host, ns ? ns : "default");
    else if (dots == 1)
        snprintf(out, len, "%.*s.svc.cluster.local", (int)hl, host);
    else if (hl > 4 && memcmp(host + hl - 4, ".svc", 4) == 0)
        snprintf(out, len, "%.*s.cluster.local", (int)hl, host);
    else
        snprintf(out, len, "%.*s", (int)hl, host);
}

/* The FQDN listener an alias stands for, or NULL. */
static json_t *find_alias(const json_t *all, const wf_map *byname, const char *name,
                          const char *ns)
{
    const char *colon = strrchr(name, ':');
    char fqdn[1024], key[1100];
    size_t hl = strlen(name);
    json_t *best = NULL, *r;
    long best_port = 0;
    size_t i;

    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1))
        hl = (size_t)(colon - name);
    else
        colon = NULL;
    alias_fqdn(name, hl, ns, fqdn, sizeof(fqdn));
    if (colon) {
        snprintf(key, sizeof(key), "%s%s", fqdn, colon);
        return wf_map_get(byname, key, strlen(key));
    }
    /* No port asked: the service's listener with the lowest port. */
    json_array_foreach (all, i, r) {
        const char *n = res_name(WF_XDS_LDS, r);
        size_t fl = strlen(fqdn);
        if (n && strncmp(n, fqdn, fl) == 0 && n[fl] == ':') {
            long p = strtol(n + fl + 1, NULL, 10);
            if (!best || p < best_port) {
                best = r;
                best_port = p;
            }
        }
    }
    return best;
}

json_t *wf_xds_select(int type, const json_t *all, const wf_xds_type_state *ts, const char *ns)
{
    json_t *out = json_array(), *r;
    wf_map byname;
    size_t i;

    if (!out)
        return NULL;
    if (!json_is_array(all))
        return out;
    if (ts->wildcard) {
        json_array_foreach (all, i, r)
            if (json_array_append(out, r) < 0)
                goto oom;
        return out;
    }
    wf_map_init(&byname);
    json_array_foreach (all, i, r) {
        const char *n = res_name(type, r);
        if (n && !wf_map_get(&byname, n, strlen(n)) && wf_map_put(&byname, n, strlen(n), r) < 0) {
            wf_map_free(&byname);
            goto oom;
        }
    }
    for (i = 0; i < ts->n_names; i++) {
        const char *want = ts->names[i];
        json_t *found = wf_map_get(&byname, want, strlen(want));
        if (found) {
            if (json_array_append(out, found) < 0)
                break;
        } else if (type == WF_XDS_LDS && (found = find_alias(all, &byname, want, ns))) {
            json_t *copy = json_deep_copy(found);
            if (!copy || json_object_set_new(copy, "name", json_string(want)) < 0 ||
                json_array_append_new(out, copy) < 0)
                break;
        }
    }
    wf_map_free(&byname);
    if (i == ts->n_names)
        return out;
oom:
    json_decref(out);
    return NULL;
}

int wf_xds_state_prepare(wf_xds_stream_state *st, int type, const json_t *all, const char *ns,
                         uint64_t trigger_ms, wf_xds_response *out)
{
    wf_xds_type_state *ts;
    json_t *sel;
    char version[17], nonce[24];

    memset(out, 0, sizeof(*out));
    if (type < 0 || type >= WF_XDS_NTYPES || !st->t[type].subscribed)
        return 0;
    ts = &st->t[type];
    if (!(sel = wf_xds_select(type, all, ts, ns)))
        return -1;
    wf_xds_version(sel, version);
    if (!ts->owed && ts->sent_version && strcmp(version, ts->sent_version) == 0) {
        json_decref(sel);
        return 0;
    }
    snprintf(nonce, sizeof(nonce), "%" PRIu64, ++st->nonces);
    out->version_info = strdup(version);
    out->type_url = strdup(type_urls[type]);
    out->nonce = strdup(nonce);
    out->control_plane = strdup(CONTROL_PLANE);
    out->resources = sel;
    if (!out->version_info || !out->type_url || !out->nonce || !out->control_plane ||
        replace(&ts->sent_version, version) < 0 || replace(&ts->sent_nonce, nonce) < 0) {
        free(out->version_info);
        free(out->type_url);
        free(out->nonce);
        free(out->control_plane);
        json_decref(sel);
        memset(out, 0, sizeof(*out));
        return -1;
    }
    ts->owed = 0;
    ts->n_sent++;
    ts->trigger_ms = trigger_ms;
    ts->measured = 0;
    return 1;
}

/* ---- server ------------------------------------------------------------------------------ */

struct wf_xds_conn {
    wf_xds_server *s;
    wf_grpc_call *call;
    wf_xds_conn *prev, *next;
    wf_xds_stream_state st;
    int joined, ending;
    int resumed;          /* came back with a version it already holds */
    int deferred;         /* a push was put off (slow client) */
    uint64_t deferred_ms; /* its trigger */
    int64_t since_s;      /* wall clock, for connected_since */
    char peer[64];
    char id[256]; /* node id, for logs */
    char *peer_id; /* secure port: the client certificate's SPIFFE ID */
    void *data;
};

struct wf_xds_server {
    uv_loop_t *loop;
    wf_grpc_server *grpc;
    wf_grpc_server *secure;        /* mTLS port, or NULL */
    wf_grpc_server_handlers other; /* other services on the secure port (the CA) */
    wf_xds_hooks h;
    wf_xds_conn *conns;
    wf_xds_metrics m;
    uv_timer_t retry, hold;
    int retry_on, stopped;
    uint64_t hold_until; /* see wf_xds_server_hold; 0 = none */
};

const wf_xds_stream_state *wf_xds_conn_state(const wf_xds_conn *c)
{
    return &c->st;
}

const char *wf_xds_conn_peer(const wf_xds_conn *c)
{
    return c->peer;
}

const char *wf_xds_conn_peer_id(const wf_xds_conn *c)
{
    return c->peer_id;
}

void wf_xds_conn_set_data(wf_xds_conn *c, void *data)
{
    c->data = data;
}

void *wf_xds_conn_data(const wf_xds_conn *c)
{
    return c->data;
}

const wf_xds_metrics *wf_xds_server_metrics(const wf_xds_server *s)
{
    return &s->m;
}

static const char *node_md_str(const json_t *node, const char *key)
{
    return json_string_value(json_object_get(json_object_get(node, "metadata"), key));
}

static void end_conn(wf_xds_conn *c, int status, const char *msg)
{
    if (c->ending)
        return;
    c->ending = 1;
    wf_grpc_finish(c->call, status, msg);
}

static void retry_cb(uv_timer_t *t);

static void defer(wf_xds_conn *c, uint64_t trigger_ms)
{
    wf_xds_server *s = c->s;

    if (!c->deferred || trigger_ms < c->deferred_ms)
        c->deferred_ms = trigger_ms;
    if (!c->deferred) {
        c->deferred = 1;
        s->m.deferred++;
        WF_DEBUG("ADS %s: client has %zu bytes unread; push put off", c->id,
                 wf_grpc_queued(c->call));
    }
    if (!s->retry_on && !s->stopped) {
        s->retry_on = 1;
        uv_timer_start(&s->retry, retry_cb, RETRY_MS, RETRY_MS);
    }
}

/* Sends c every subscribed type whose resources changed (or that is owed a
 * response), clusters first. */
static void push_conn(wf_xds_conn *c, uint64_t trigger_ms)
{
    wf_xds_server *s = c->s;
    const char *ns;
    char err[512];
    json_t *bundle;

    if (c->ending || !c->joined)
        return;
    if (c->resumed && s->hold_until)
        return; /* pushed when the hold ends */
    if (wf_grpc_queued(c->call) >= SLOW_BYTES) {
        defer(c, trigger_ms);
        return;
    }
    if (c->deferred && c->deferred_ms < trigger_ms)
        trigger_ms = c->deferred_ms;
    c->deferred = 0;
    if (!(bundle = s->h.resources(c, s->h.ud, err, sizeof(err)))) {
        s->m.push_errors++;
        WF_ERROR("ADS %s: cannot compute its resources: %s; it keeps its current config", c->id,
                 err);
        return;
    }
    ns = node_md_str(c->st.node, "NAMESPACE");
    for (int t = 0; t < WF_XDS_NTYPES; t++) {
        wf_xds_response resp;
        uint8_t *buf = NULL;
        size_t len = 0;
        int r = wf_xds_state_prepare(&c->st, t, json_object_get(bundle, bundle_keys[t]), ns,
                                     trigger_ms, &resp);
        if (r == 0)
            continue;
        if (r < 0 || wf_xds_response_encode(&resp, &buf, &len, err, sizeof(err)) < 0) {
            s->m.push_errors++;
            WF_ERROR("ADS %s: cannot encode %s: %s", c->id, type_names[t],
                     r < 0 ? "out of memory" : err);
            wf_xds_response_free(&resp);
            continue;
        }
        WF_DEBUG("ADS %s: push %s version %s nonce %s (%zu resources, %zu bytes)", c->id,
                 type_names[t], resp.version_info, resp.nonce, json_array_size(resp.resources),
                 len);
        if (wf_grpc_send(c->call, buf, len) < 0) {
            WF_WARN("ADS %s: %s push of %zu bytes not sent (stream closing, or over the %d-byte "
                    "gRPC message limit)",
                    c->id, type_names[t], len, WF_GRPC_MAX_MESSAGE);
            s->m.push_errors++;
        } else {
            s->m.pushes[t]++;
        }
        free(buf);
        wf_xds_response_free(&resp);
    }
    json_decref(bundle);
}

static void retry_cb(uv_timer_t *t)
{
    wf_xds_server *s = t->data;
    int left = 0;

    for (wf_xds_conn *c = s->conns; c; c = c->next) {
        if (!c->deferred)
            continue;
        push_conn(c, c->deferred_ms);
        left |= c->deferred;
    }
    if (!left) {
        uv_timer_stop(&s->retry);
        s->retry_on = 0;
    }
}

static void hold_cb(uv_timer_t *t)
{
    wf_xds_server *s = t->data;

    s->hold_until = 0;
    for (wf_xds_conn *c = s->conns; c; c = c->next)
        c->resumed = 0;
    if (s->conns)
        WF_INFO("ADS: restart hold over: pushing to every proxy");
    wf_xds_server_push_all(s, uv_now(s->loop));
}

void wf_xds_server_hold(wf_xds_server *s, uint64_t until_ms)
{
    uint64_t now = uv_now(s->loop);

    if (s->stopped || until_ms <= now)
        return;
    s->hold_until = until_ms;
    uv_timer_start(&s->hold, hold_cb, until_ms - now, 0);
}

void wf_xds_server_push_all(wf_xds_server *s, uint64_t trigger_ms)
{
    for (wf_xds_conn *c = s->conns; c; c = c->next)
        push_conn(c, trigger_ms);
}

static void observe(wf_xds_server *s, int64_t ms)
{
    double sec = (double)ms / 1000.0;

    for (int i = 0; i < WF_XDS_CONV_BUCKETS; i++)
        if (sec <= wf_xds_conv_bounds[i])
            s->m.conv_buckets[i]++;
    s->m.conv_count++;
    s->m.conv_sum += sec;
}

static int on_call(wf_grpc_call *call, const char *path, void *ud)
{
    wf_xds_server *s = ud;
    wf_xds_conn *c;
    const char *peer;

    if (strcmp(path, ADS_PATH) != 0)
        return WF_GRPC_UNIMPLEMENTED;
    if (s->stopped)
        return WF_GRPC_UNAVAILABLE;
    if (!(c = calloc(1, sizeof(*c))))
        return WF_GRPC_RESOURCE_EXHAUSTED;
    if (wf_grpc_peer_id(call) && !(c->peer_id = strdup(wf_grpc_peer_id(call)))) {
        free(c);
        return WF_GRPC_RESOURCE_EXHAUSTED;
    }
    c->s = s;
    c->call = call;
    wf_xds_state_init(&c->st);
    peer = wf_grpc_peer(call);
    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "?");
    snprintf(c->id, sizeof(c->id), "%s", c->peer);
    c->since_s = (int64_t)time(NULL);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    wf_grpc_set_data(call, c);
    return WF_GRPC_OK;
}

static void on_message(wf_grpc_call *call, const uint8_t *msg, size_t len, void *ud)
{
    wf_xds_server *s = ud;
    wf_xds_conn *c = wf_grpc_data(call);
    wf_xds_request req;
    wf_xds_outcome o;
    char err[512];
    uint64_t now = uv_now(s->loop);

    if (!c || c->ending)
        return;
    memset(&req, 0, sizeof(req));
    if (wf_xds_request_decode(msg, len, &req, err, sizeof(err)) < 0) {
        WF_WARN("ADS %s: undecodable DiscoveryRequest (%s); ending the stream", c->id, err);
        wf_xds_request_free(&req);
        end_conn(c, WF_GRPC_INVALID_ARGUMENT, err);
        return;
    }
    if (wf_xds_state_request(&c->st, &req, now, &o, err, sizeof(err)) < 0) {
        wf_xds_request_free(&req);
        end_conn(c, WF_GRPC_RESOURCE_EXHAUSTED, "istiod is out of memory");
        return;
    }
    if (o.verdict == WF_XDS_BAD) {
        WF_WARN("ADS %s: %s; ending the stream", c->id, err);
        wf_xds_request_free(&req);
        end_conn(c, WF_GRPC_INVALID_ARGUMENT, err);
        return;
    }
    if (o.first) {
        const char *id = json_string_value(json_object_get(c->st.node, "id"));
        snprintf(c->id, sizeof(c->id), "%s", id);
        if (s->h.on_join && s->h.on_join(c, s->h.ud, err, sizeof(err)) < 0) {
            WF_WARN("ADS %s (%s): refused: %s", c->id, c->peer, err);
            wf_xds_request_free(&req);
            end_conn(c, WF_GRPC_INVALID_ARGUMENT, err);
            return;
        }
        c->joined = 1;
        s->m.connected++;
        WF_INFO("ADS %s connected from %s", c->id, c->peer);
    }
    if (o.verdict == WF_XDS_SUBSCRIBE && req.version_info && req.version_info[0] && !c->resumed &&
        s->hold_until) {
        c->resumed = 1;
        WF_DEBUG("ADS %s resumes at %s version %s: held until the registry has refilled", c->id,
                 type_names[o.type], req.version_info);
    }
    switch (o.verdict) {
    case WF_XDS_IGNORE:
        WF_DEBUG("ADS %s: type %s is not served; ignored", c->id,
                 req.type_url ? req.type_url : "(none)");
        break;
    case WF_XDS_STALE:
        s->m.expired_nonce[o.type]++;
        WF_DEBUG("ADS %s: %s request with stale nonce %s ignored", c->id, type_names[o.type],
                 req.response_nonce);
        break;
    case WF_XDS_NACK:
        s->m.rejects[o.type]++;
        WF_WARN("ADS %s rejected %s version %s (nonce %s): %s; it keeps version %s", c->id,
                type_names[o.type], c->st.t[o.type].sent_version, req.response_nonce,
                c->st.t[o.type].last_nack,
                c->st.t[o.type].acked_version ? c->st.t[o.type].acked_version : "(none)");
        break;
    case WF_XDS_ACK:
        if (o.converged >= 0)
            observe(s, o.converged);
        WF_DEBUG("ADS %s: ACK %s version %s", c->id, type_names[o.type],
                 c->st.t[o.type].acked_version);
        break;
    default:
        break;
    }
    wf_xds_request_free(&req);
    if (o.respond)
        push_conn(c, now);
}

static void on_close(wf_grpc_call *call, void *ud)
{
    wf_xds_server *s = ud;
    wf_xds_conn *c = wf_grpc_data(call);

    if (!c)
        return;
    if (c->joined) {
        s->m.connected--;
        WF_INFO("ADS %s (%s) disconnected", c->id, c->peer);
        if (s->h.on_leave)
            s->h.on_leave(c, s->h.ud);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    wf_xds_state_free(&c->st);
    free(c->peer_id);
    free(c);
}

/* ---- the secure port: ADS over mTLS, and other services (the CA) ---- */

static int is_ads(const wf_grpc_call *call)
{
    const char *p = wf_grpc_header(call, ":path");
    return p && strcmp(p, ADS_PATH) == 0;
}

static int secure_on_call(wf_grpc_call *call, const char *path, void *ud)
{
    wf_xds_server *s = ud;

    if (strcmp(path, ADS_PATH) != 0)
        return s->other.on_call ? s->other.on_call(call, path, s->other.ud)
                                : WF_GRPC_UNIMPLEMENTED;
    if (!wf_grpc_peer_id(call)) {
        wf_grpc_finish(call, WF_GRPC_UNAUTHENTICATED,
                       "xDS on the secure port needs the workload certificate as TLS client "
                       "certificate (start the proxy with --ca)");
        return WF_GRPC_UNAUTHENTICATED;
    }
    return on_call(call, path, ud);
}

static void secure_on_message(wf_grpc_call *call, const uint8_t *msg, size_t len, void *ud)
{
    wf_xds_server *s = ud;

    if (is_ads(call))
        on_message(call, msg, len, ud);
    else if (s->other.on_message)
        s->other.on_message(call, msg, len, s->other.ud);
}

static void secure_on_close(wf_grpc_call *call, void *ud)
{
    wf_xds_server *s = ud;

    if (is_ads(call))
        on_close(call, ud);
    else if (s->other.on_close)
        s->other.on_close(call, s->other.ud);
}

static void secure_on_half_close(wf_grpc_call *call, void *ud)
{
    wf_xds_server *s = ud;

    if (!is_ads(call) && s->other.on_half_close)
        s->other.on_half_close(call, s->other.ud);
    else
        wf_grpc_finish(call, WF_GRPC_OK, NULL);
}

int wf_xds_server_listen_tls(wf_xds_server *s, const char *addr, wf_tls_ctx *tls,
                             const wf_grpc_server_handlers *other, char *err, size_t errlen)
{
    wf_grpc_server_handlers gh = {.on_call = secure_on_call,
                                  .on_message = secure_on_message,
                                  .on_close = secure_on_close,
                                  .on_half_close = secure_on_half_close,
                                  .ud = s};

    if (other)
        s->other = *other;
    s->secure = wf_grpc_server_start_tls(s->loop, addr, &gh, tls, err, errlen);
    return s->secure ? 0 : -1;
}

void wf_xds_server_set_tls(wf_xds_server *s, wf_tls_ctx *tls)
{
    if (s->secure)
        wf_grpc_server_set_tls(s->secure, tls);
}

int wf_xds_server_secure_port(const wf_xds_server *s)
{
    return s->secure ? wf_grpc_server_port(s->secure) : 0;
}

wf_xds_server *wf_xds_server_start(uv_loop_t *loop, const char *addr, const wf_xds_hooks *hooks,
                                   char *err, size_t errlen)
{
    wf_xds_server *s = calloc(1, sizeof(*s));
    wf_grpc_server_handlers gh = {
        .on_call = on_call, .on_message = on_message, .on_close = on_close};

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->h = *hooks;
    gh.ud = s;
    if (!(s->grpc = wf_grpc_server_start(loop, addr, &gh, err, errlen))) {
        free(s);
        return NULL;
    }
    uv_timer_init(loop, &s->retry);
    uv_timer_init(loop, &s->hold);
    s->retry.data = s->hold.data = s;
    return s;
}

void wf_xds_server_stop(wf_xds_server *s)
{
    if (!s || s->stopped)
        return;
    s->stopped = 1;
    uv_timer_stop(&s->retry);
    uv_close((uv_handle_t *)&s->retry, NULL);
    uv_close((uv_handle_t *)&s->hold, NULL);
    wf_grpc_server_stop(s->grpc);
    if (s->secure)
        wf_grpc_server_stop(s->secure);
}

void wf_xds_server_free(wf_xds_server *s)
{
    if (!s)
        return;
    /* Streams the transport has not closed yet (it should have). */
    while (s->conns) {
        wf_xds_conn *c = s->conns;
        s->conns = c->next;
        wf_xds_state_free(&c->st);
        free(c->peer_id);
        free(c);
    }
    free(s);
}

/* ---- /debug/syncz ------------------------------------------------------------------------ */

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *type_json(const wf_xds_type_state *ts)
{
    json_t *o = json_object(), *names;

    if (!o)
        return NULL;
    json_object_set_new(o, "subscribed", json_boolean(ts->subscribed));
    json_object_set_new(o, "sent", str_or_null(ts->sent_version));
    json_object_set_new(o, "acked", str_or_null(ts->acked_version));
    json_object_set_new(o, "last_nack", str_or_null(ts->last_nack));
    json_object_set_new(o, "nonce", str_or_null(ts->sent_nonce));
    json_object_set_new(o, "pushes", json_integer((json_int_t)ts->n_sent));
    json_object_set_new(o, "acks", json_integer((json_int_t)ts->n_acks));
    json_object_set_new(o, "nacks", json_integer((json_int_t)ts->n_nacks));
    if (ts->subscribed && ts->wildcard) {
        json_object_set_new(o, "names", json_string("*"));
    } else if (ts->subscribed && (names = json_array())) {
        for (size_t i = 0; i < ts->n_names; i++)
            json_array_append_new(names, json_string(ts->names[i]));
        json_object_set_new(o, "names", names);
    }
    return o;
}

json_t *wf_xds_server_syncz(const wf_xds_server *s)
{
    static const char *const istio_keys[WF_XDS_NTYPES] = {"cluster", "endpoint", "listener"};
    json_t *arr = json_array();
    char host[256] = "istiod";

    if (!arr)
        return NULL;
    gethostname(host, sizeof(host) - 1);
    for (const wf_xds_conn *c = s->conns; c; c = c->next) {
        const json_t *node = c->st.node, *md = json_object_get(node, "metadata");
        json_t *o, *labels;
        char since[32], key[32];
        struct tm tm;
        time_t t = (time_t)c->since_s;

        if (!c->joined || !(o = json_object()))
            continue;
        gmtime_r(&t, &tm);
        strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
        labels = json_object_get(md, "LABELS");
        json_object_set_new(o, "id", json_string(c->id));
        json_object_set_new(o, "proxy", json_string(c->id));
        json_object_set_new(o, "cluster", str_or_null(json_string_value(
                                              json_object_get(node, "cluster"))));
        json_object_set_new(o, "namespace", str_or_null(node_md_str(node, "NAMESPACE")));
        json_object_set_new(o, "labels", json_is_object(labels) ? json_deep_copy(labels)
                                                                : json_object());
        json_object_set_new(o, "generator", str_or_null(node_md_str(node, "GENERATOR")));
        json_object_set_new(o, "istio_version", str_or_null(node_md_str(node, "ISTIO_VERSION")));
        json_object_set_new(o, "cluster_id", str_or_null(node_md_str(node, "CLUSTER_ID")));
        json_object_set_new(o, "peer", json_string(c->peer));
        if (c->peer_id)
            json_object_set_new(o, "peer_id", json_string(c->peer_id));
        json_object_set_new(o, "istiod", json_string(host));
        json_object_set_new(o, "connected_since", json_string(since));
        for (int i = 0; i < WF_XDS_NTYPES; i++) {
            const wf_xds_type_state *ts = &c->st.t[i];
            json_object_set_new(o, type_names[i], type_json(ts));
            /* Istio's SyncStatus names, for tools that read those. */
            snprintf(key, sizeof(key), "%s_sent", istio_keys[i]);
            json_object_set_new(o, key, str_or_null(ts->sent_version));
            snprintf(key, sizeof(key), "%s_acked", istio_keys[i]);
            json_object_set_new(o, key, str_or_null(ts->acked_version));
        }
        json_array_append_new(arr, o);
    }
    return arr;
}
