/*
 * server.c: the ADS server; see server.h.  The first half is the pure
 * per-stream state machine, the second the gRPC streams that drive it.
 */
#include "xds/server.h"

#include <inttypes.h>
#include <malloc.h>
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
/* Pushes queued and not yet written, all streams together.  A change is
 * pushed to every stream; queued to all at once (the bytes are shared, not
 * copied), every connection's writes would compete from the start, and
 * the last streams would finish with the first.  Within this budget the
 * streams are served oldest first as their bytes leave, and most of them
 * converge sooner: 99 % of 2000 proxies in about 450 ms instead of 480
 * for a VirtualService change (./dev bench, case 6). */
#define PUSH_BUDGET (16 << 20)
/* A stream whose pushed bytes are not written after this long is a slow
 * reader: it stops counting against the budget, so that a few stuck
 * clients cannot hold back the pushes of every other (SLOW_BYTES keeps
 * what is queued for it bounded). */
#define STALL_MS 1000
/* After a burst of pushes, give the allocator's free pages back (glibc
 * keeps what the connections' write buffers and HTTP/2 frames used), at
 * most this often. */
#define TRIM_MS 1000
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

/* ---- interned name lists ------------------------------------------------------------------ */

struct wf_xds_names {
    size_t refs;
    uint64_t hash;
    size_t n, bytes;           /* names, and bytes of their text with NULs */
    struct wf_xds_names *next; /* in its hash chain */
    char *names[];             /* n pointers, then the text */
};

/* Every list in use, by hash.  The ADS server runs on one loop, so this
 * needs no lock. */
static struct {
    wf_xds_names **b;
    size_t cap, n;
} interned;

static uint64_t names_hash(char *const *v, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++)
        for (const unsigned char *p = (const unsigned char *)v[i];; p++) {
            h ^= *p;
            h *= 1099511628211ULL;
            if (!*p)
                break;
        }
    return h;
}

static int same_names(const wf_xds_names *a, char *const *v, size_t n)
{
    if (a->n != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->names[i], v[i]) != 0)
            return 0;
    return 1;
}

static void names_unref(wf_xds_names *set)
{
    wf_xds_names **pp;

    if (!set || --set->refs)
        return;
    for (pp = &interned.b[set->hash & (interned.cap - 1)]; *pp != set; pp = &(*pp)->next)
        ;
    *pp = set->next;
    free(set);
    if (!--interned.n) {
        free(interned.b);
        memset(&interned, 0, sizeof(interned));
    }
}

static int interned_grow(void)
{
    size_t cap = interned.cap ? interned.cap * 2 : 64;
    wf_xds_names **b = calloc(cap, sizeof(*b));

    if (!b)
        return -1;
    for (size_t i = 0; i < interned.cap; i++)
        for (wf_xds_names *e = interned.b[i], *nx; e; e = nx) {
            nx = e->next;
            e->next = b[e->hash & (cap - 1)];
            b[e->hash & (cap - 1)] = e;
        }
    free(interned.b);
    interned.b = b;
    interned.cap = cap;
    return 0;
}

/* The interned list of v (n names, sorted and unique, borrowed): a new
 * reference, or NULL on out of memory. */
static wf_xds_names *names_intern(char *const *v, size_t n)
{
    uint64_t h = names_hash(v, n);
    size_t bytes = 0;
    wf_xds_names *set;
    char *p;

    for (set = interned.cap ? interned.b[h & (interned.cap - 1)] : NULL; set; set = set->next)
        if (set->hash == h && same_names(set, v, n)) {
            set->refs++;
            return set;
        }
    if (interned.n >= interned.cap && interned_grow() < 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        bytes += strlen(v[i]) + 1;
    if (!(set = malloc(sizeof(*set) + n * sizeof(char *) + bytes)))
        return NULL;
    set->refs = 1;
    set->hash = h;
    set->n = n;
    set->bytes = bytes;
    p = (char *)(set->names + n);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]) + 1;
        set->names[i] = memcpy(p, v[i], l);
        p += l;
    }
    set->next = interned.b[h & (interned.cap - 1)];
    interned.b[h & (interned.cap - 1)] = set;
    interned.n++;
    return set;
}

/* ---- digests: EDS as the client holds it, assignment by assignment ------------------------ */

struct wf_xds_digest {
    size_t refs;
    wf_xds_names *names; /* the subscription (a reference) */
    uint64_t h[];        /* per name: hash of its assignment's bytes, 0 when absent */
};

static void digest_unref(wf_xds_digest *d)
{
    if (!d || --d->refs)
        return;
    names_unref(d->names);
    free(d);
}

static void type_free(wf_xds_type_state *ts)
{
    names_unref(ts->set);
    digest_unref(ts->sent_digest);
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

/* A request with n names could repeat ts's subscription: ts has one of n
 * names, and a wildcard exactly when that is none (LDS, CDS). */
static int may_repeat(const wf_xds_type_state *ts, int type, size_t n)
{
    size_t have = ts->set ? ts->set->n : 0;

    return ts->subscribed && n == have && ts->wildcard == (type != WF_XDS_EDS && have == 0);
}

/* Replaces ts's subscription by the request's.  Returns 1 when it changed,
 * 0 when it is the same, -1 on out of memory. */
static int set_names(wf_xds_type_state *ts, int type, const wf_xds_request *req)
{
    char **v = NULL;
    size_t n = 0, have = ts->set ? ts->set->n : 0;
    int star = 0, wildcard, same;
    wf_xds_names *set = NULL;

    /* The common case, an ACK that repeats the names in the order they
     * were interned in, costs a comparison and no allocation. */
    if (may_repeat(ts, type, req->n_resource_names)) {
        size_t i = 0;
        while (i < have && req->resource_names[i] &&
               strcmp(req->resource_names[i], ts->set->names[i]) == 0)
            i++;
        if (i == have)
            return 0;
    }
    if (req->n_resource_names && !(v = calloc(req->n_resource_names, sizeof(*v))))
        return -1;
    for (size_t i = 0; i < req->n_resource_names; i++) {
        char *name = req->resource_names[i] ? req->resource_names[i] : "";
        if (strcmp(name, "*") == 0)
            star = 1;
        else
            v[n++] = name;
    }
    if (n > 1) {
        size_t k = 1;
        qsort(v, n, sizeof(*v), cmp_str);
        for (size_t i = 1; i < n; i++)
            if (strcmp(v[i], v[k - 1]) != 0)
                v[k++] = v[i];
        n = k;
    }
    if (n && !(set = names_intern(v, n))) {
        free(v);
        return -1;
    }
    free(v);
    /* Only LDS and CDS know a wildcard; an EDS request without names asks
     * for nothing. */
    wildcard = type != WF_XDS_EDS && (star || n == 0);
    same = ts->subscribed && wildcard == ts->wildcard && set == ts->set;
    names_unref(ts->set);
    ts->set = set;
    ts->names = set ? set->names : NULL;
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

/* The client ACKed the last response of ts (version: what it says it
 * holds now, "" for what was sent). */
static int ack(wf_xds_type_state *ts, const char *version, uint64_t now_ms, wf_xds_outcome *out)
{
    if (replace(&ts->acked_version, version[0] ? version : ts->sent_version) < 0)
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
        return ack(ts, req->version_info ? req->version_info : "", now_ms, out);
    }
    if (set_names(ts, type, req) < 0)
        return -1;
    ts->owed = 1;
    out->respond = 1;
    out->verdict = WF_XDS_SUBSCRIBE;
    return 0;
}

/* p[0..n) (not NUL-terminated, NULL when n is 0) is the string s. */
static int slice_is(const char *p, size_t n, const char *s)
{
    return s && strlen(s) == n && (!n || memcmp(p, s, n) == 0);
}

int wf_xds_state_plain_ack(wf_xds_stream_state *st, const wf_xds_request_view *v, uint64_t now_ms,
                           wf_xds_outcome *out)
{
    wf_xds_type_state *ts;
    size_t have, pos = 0, len, i = 0;
    const char *name;
    char version[128];
    int type;

    memset(out, 0, sizeof(*out));
    out->type = -1;
    out->converged = -1;
    if (!st->node || v->has_node || v->has_error || !v->nonce_len ||
        v->version_len >= sizeof(version) ||
        (v->version_len && memchr(v->version_info, 0, v->version_len)))
        return 0;
    for (type = 0; type < WF_XDS_NTYPES; type++)
        if (slice_is(v->type_url, v->type_url_len, type_urls[type]))
            break;
    if (type == WF_XDS_NTYPES)
        return 0;
    ts = &st->t[type];
    have = ts->set ? ts->set->n : 0;
    if (!may_repeat(ts, type, v->n_resource_names) ||
        !slice_is(v->response_nonce, v->nonce_len, ts->sent_nonce))
        return 0;
    while (wf_xds_request_name(v, &pos, &name, &len))
        if (i >= have || !slice_is(name, len, ts->set->names[i++]))
            return 0;
    if (i != have)
        return 0;
    if (v->version_len)
        memcpy(version, v->version_info, v->version_len);
    version[v->version_len] = 0;
    out->type = type;
    return ack(ts, version, now_ms, out) < 0 ? -1 : 1;
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

/* The index in names[0..n) of the FQDN listener an alias stands for, or
 * -1.  byname maps each name to its index + 1. */
static long find_alias(char *const *names, size_t n, const wf_map *byname, const char *name,
                       const char *ns)
{
    const char *colon = strrchr(name, ':');
    char fqdn[1024], key[1100];
    size_t hl = strlen(name), fl;
    long best = -1, best_port = 0;

    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1))
        hl = (size_t)(colon - name);
    else
        colon = NULL;
    alias_fqdn(name, hl, ns, fqdn, sizeof(fqdn));
    if (colon) {
        snprintf(key, sizeof(key), "%s%s", fqdn, colon);
        return (long)(uintptr_t)wf_map_get(byname, key, strlen(key)) - 1;
    }
    /* No port asked: the service's listener with the lowest port. */
    fl = strlen(fqdn);
    for (size_t i = 0; i < n; i++) {
        const char *nm = names[i];
        if (nm && strncmp(nm, fqdn, fl) == 0 && nm[fl] == ':') {
            long p = strtol(nm + fl + 1, NULL, 10);
            if (best < 0 || p < best_port) {
                best = (long)i;
                best_port = p;
            }
        }
    }
    return best;
}

/* Records a response of version as sent on ts: its nonce into nonce[24].
 * Returns 0, or -1 on out of memory (nothing recorded). */
static int record_sent(wf_xds_stream_state *st, wf_xds_type_state *ts, const char *version,
                       uint64_t trigger_ms, char nonce[24])
{
    snprintf(nonce, 24, "%" PRIu64, st->nonces + 1);
    if (replace(&ts->sent_version, version) < 0 || replace(&ts->sent_nonce, nonce) < 0)
        return -1;
    st->nonces++;
    ts->owed = 0;
    ts->n_sent++;
    ts->trigger_ms = trigger_ms;
    ts->measured = 0;
    return 0;
}

/* A response is due: owed, or a version the stream was not sent last. */
static int due(const wf_xds_type_state *ts, const char *version)
{
    return ts->owed || !ts->sent_version || strcmp(version, ts->sent_version) != 0;
}

/* ---- snapshots ----------------------------------------------------------------------------- */

/* A response body (without nonce and control_plane) and its version. */
typedef struct encoded {
    char version[17];
    const uint8_t *body; /* owned, or a table's full response */
    uint8_t *own;        /* what to free */
    size_t len, n_resources;
} encoded;

/* One type of a snapshot: every resource encoded, as the wildcard
 * response, and where each one is in it. */
typedef struct res_table {
    encoded full;
    size_t n;
    char **names; /* per resource; "" for one without a name */
    size_t *off, *len;
    uint64_t *hash;      /* of each resource's bytes; never 0 */
    wf_map byname;       /* name -> index + 1, the first of a name */
    struct res_key *key; /* of each resource's JSON ("resources encoded before") */
    char *error;         /* the resources could not be encoded: why */
    int reported;        /* error was returned once already */
} res_table;

/* ---- resources encoded before ---------------------------------------------------------------- */

/*
 * Most of a translation is what the last one was (a VirtualService change
 * leaves every cluster and assignment as it was), and proxies of different
 * shapes share most of theirs, so a resource is encoded only when no live
 * snapshot has it already: each resource's JSON is hashed (128 bits, far
 * cheaper than encoding it) and the index finds the bytes in the snapshot
 * that has them.  The hash follows the JSON as the encoder does (object
 * members in their order), so the same hash means the same bytes.  The
 * index holds no memory of its own per resource: it points into tables,
 * and a table that goes removes its entries.  Snapshots are made on
 * istiod's translation thread and freed on its loop thread, one at a time
 * (the loop waits while a translation runs), so the index needs no lock.
 */
typedef struct res_key {
    uint64_t a, b;
} res_key;

typedef struct idx_slot {
    res_key k;
    const res_table *tb; /* NULL: empty; &tomb: deleted */
    size_t i;
} idx_slot;

static const res_table tomb;
static struct {
    idx_slot *s;
    size_t cap, used, live; /* used: live and deleted slots */
} enc_index;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Two lanes of one multiply per word each (json_key mixes them at the
 * end): hashing a translation must stay well below encoding it. */
static inline void feed(res_key *k, uint64_t w)
{
    uint64_t a = k->a ^ w;

    k->a = (a << 29 | a >> 35) * 0x9e3779b97f4a7c15ULL;
    k->b = (k->b + w) * 0xc2b2ae3d27d4eb4fULL;
    k->b ^= k->b >> 31;
}

static void feed_bytes(res_key *k, const char *p, size_t n)
{
    uint64_t w;

    feed(k, n);
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        feed(k, w);
    }
    if (n) {
        w = 0;
        memcpy(&w, p, n);
        feed(k, w);
    }
}

static void hash_json(res_key *k, const json_t *v)
{
    const char *key;
    json_t *x;
    size_t i;
    double d;
    uint64_t u;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        feed(k, 'o' << 8 | json_object_size(v));
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            key = json_object_iter_key(it);
            feed_bytes(k, key, json_object_iter_key_len(it));
            hash_json(k, json_object_iter_value(it));
        }
        break;
    case JSON_ARRAY:
        feed(k, 'a' << 8 | json_array_size(v));
        json_array_foreach (v, i, x)
            hash_json(k, x);
        break;
    case JSON_STRING:
        feed(k, 's');
        feed_bytes(k, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        feed(k, 'i');
        feed(k, (uint64_t)json_integer_value(v));
        break;
    case JSON_REAL:
        d = json_real_value(v);
        memcpy(&u, &d, sizeof(u));
        feed(k, 'r');
        feed(k, u);
        break;
    default:
        feed(k, (uint64_t)json_typeof(v) << 8 | 'k');
        break;
    }
}

static res_key json_key(int type, const json_t *r)
{
    res_key k = {0x243f6a8885a308d3ULL ^ (uint64_t)type, 0x13198a2e03707344ULL};

    hash_json(&k, r);
    k.a = mix64(k.a);
    k.b = mix64(k.b ^ k.a);
    return k;
}

static idx_slot *idx_find(res_key k)
{
    size_t m = enc_index.cap - 1;

    if (!enc_index.cap)
        return NULL;
    for (size_t h = k.a & m;; h = (h + 1) & m) {
        idx_slot *sl = &enc_index.s[h];
        if (!sl->tb)
            return NULL;
        if (sl->tb != &tomb && sl->k.a == k.a && sl->k.b == k.b)
            return sl;
    }
}

static int idx_put(res_key k, const res_table *tb, size_t i);

static int idx_grow(void)
{
    idx_slot *old = enc_index.s;
    size_t oldcap = enc_index.cap, cap = oldcap ? oldcap : 1024;

    /* Double unless most of the used slots are deleted ones. */
    if (enc_index.live > oldcap / 4)
        cap = oldcap * 2;
    if (!(enc_index.s = calloc(cap, sizeof(*enc_index.s)))) {
        enc_index.s = old;
        return -1;
    }
    enc_index.cap = cap;
    enc_index.used = enc_index.live = 0;
    for (size_t j = 0; j < oldcap; j++)
        if (old[j].tb && old[j].tb != &tomb)
            idx_put(old[j].k, old[j].tb, old[j].i);
    free(old);
    return 0;
}

/* Records that tb's resource i has key k.  A key known already moves to
 * tb: the newest table is the one likely to stay. */
static int idx_put(res_key k, const res_table *tb, size_t i)
{
    idx_slot *sl;
    size_t m;

    if ((sl = idx_find(k))) {
        sl->tb = tb;
        sl->i = i;
        return 0;
    }
    if ((enc_index.used + 1) * 4 > enc_index.cap * 3 && idx_grow() < 0)
        return -1;
    m = enc_index.cap - 1;
    for (size_t h = k.a & m;; h = (h + 1) & m) {
        sl = &enc_index.s[h];
        if (!sl->tb || sl->tb == &tomb) {
            enc_index.used += !sl->tb;
            enc_index.live++;
            sl->k = k;
            sl->tb = tb;
            sl->i = i;
            return 0;
        }
    }
}

/* tb is going: its entries go too. */
static void idx_forget(const res_table *tb)
{
    for (size_t i = 0; tb->key && i < tb->n; i++) {
        idx_slot *sl = idx_find(tb->key[i]);
        if (sl && sl->tb == tb && sl->i == i) {
            sl->tb = &tomb;
            enc_index.live--;
        }
    }
    if (enc_index.cap && !enc_index.live) {
        free(enc_index.s);
        memset(&enc_index, 0, sizeof(enc_index));
    }
}

/* An EDS delta: what a stream that holds from gets. */
typedef struct enc_delta {
    wf_xds_digest *from; /* a reference */
    encoded e;
    struct enc_delta *next;
} enc_delta;

/* What one named subscription gets from the snapshot. */
typedef struct enc_entry {
    int type;
    wf_xds_names *names; /* a reference */
    char *ns;            /* LDS: the namespace aliases resolve in */
    encoded e;
    uint8_t **renamed; /* LDS: listeners asked for by an alias, re-encoded */
    size_t n_renamed;
    wf_xds_digest *digest; /* EDS: per name, for deltas */
    size_t *off, *rlen;    /* EDS: where each name's assignment is in e.body */
    enc_delta *deltas;
    struct enc_entry *next;
} enc_entry;

struct wf_xds_snapshot {
    size_t refs;
    res_table t[WF_XDS_NTYPES];
    enc_entry *entries;
};

static void table_free(res_table *tb)
{
    idx_forget(tb);
    free(tb->key);
    free(tb->names);
    free(tb->off);
    free(tb->len);
    free(tb->hash);
    free(tb->full.own);
    free(tb->error);
    wf_map_free(&tb->byname);
}

static uint64_t hashes_hash(const uint64_t *h, size_t n)
{
    return wf_hash(h, n * sizeof(*h));
}

/* Encodes all (a JSON array of resources of type) into tb.  Returns 0
 * (with tb->error set when a resource cannot be encoded), -1 on out of
 * memory.  What the table keeps is a few blocks, not one per resource:
 * they are made among the encoder's many small temporaries, and each small
 * block left among them once they are freed would keep a page resident. */
static int table_build(res_table *tb, int type, const json_t *all)
{
    size_t n = json_array_size(all), m = n ? n : 1, text = 0;
    uint8_t **bytes = calloc(m, sizeof(*bytes)); /* encoded here, to free */
    const uint8_t **res = calloc(m, sizeof(*res));
    char err[512], *p;
    int rc = -1;

    wf_map_init(&tb->byname);
    for (size_t i = 0; i < n; i++) {
        const char *name = res_name(type, json_array_get(all, i));
        text += (name ? strlen(name) : 0) + 1;
    }
    tb->names = malloc(m * sizeof(*tb->names) + text);
    tb->off = calloc(m, sizeof(*tb->off));
    tb->len = calloc(m, sizeof(*tb->len));
    tb->hash = calloc(m, sizeof(*tb->hash));
    tb->key = calloc(m, sizeof(*tb->key));
    if (!bytes || !res || !tb->names || !tb->off || !tb->len || !tb->hash || !tb->key)
        goto out;
    p = (char *)(tb->names + m);
    for (size_t i = 0; i < n; i++) {
        const char *name = res_name(type, json_array_get(all, i));
        size_t l = (name ? strlen(name) : 0) + 1;
        tb->names[i] = memcpy(p, name ? name : "", l);
        p += l;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(all, i);
        const char *name = tb->names[i];
        idx_slot *sl;
        tb->key[i] = json_key(type, r);
        if ((sl = idx_find(tb->key[i]))) {
            res[i] = sl->tb->full.body + sl->tb->off[sl->i];
            tb->len[i] = sl->tb->len[sl->i];
            tb->hash[i] = sl->tb->hash[sl->i];
        } else if (wf_xds_encode(type_urls[type], r, &bytes[i], &tb->len[i], err, sizeof(err)) <
                   0) {
            if (strcmp(err, "out of memory") == 0 || !(tb->error = strdup(err)))
                goto out;
            rc = 0;
            goto out;
        } else {
            res[i] = bytes[i];
            tb->hash[i] = wf_hash(bytes[i], tb->len[i]) | 1; /* never 0, which means absent */
        }
        if (*name && !wf_map_get(&tb->byname, name, strlen(name)) &&
            wf_map_put(&tb->byname, name, strlen(name), (void *)(uintptr_t)(i + 1)) < 0)
            goto out;
    }
    snprintf(tb->full.version, sizeof(tb->full.version), "%016" PRIx64, hashes_hash(tb->hash, n));
    if (wf_xds_response_assemble(tb->full.version, type_urls[type], res, tb->len, n, &tb->full.own,
                                 &tb->full.len, tb->off) < 0)
        goto out;
    tb->full.body = tb->full.own;
    tb->full.n_resources = n;
    tb->n = n;
    /* Only now: the index points into the body. */
    for (size_t i = 0; i < n; i++)
        if (idx_put(tb->key[i], tb, i) < 0)
            break; /* a smaller index costs encodings, not correctness */
    rc = 0;
out:
    for (size_t i = 0; bytes && i < n; i++)
        free(bytes[i]);
    free(bytes);
    free(res);
    return rc;
}

wf_xds_snapshot *wf_xds_snapshot_new(const json_t *bundle)
{
    wf_xds_snapshot *sn = calloc(1, sizeof(*sn));

    if (!sn)
        return NULL;
    sn->refs = 1;
    for (int t = 0; t < WF_XDS_NTYPES; t++)
        if (table_build(&sn->t[t], t, json_object_get(bundle, bundle_keys[t])) < 0) {
            wf_xds_snapshot_unref(sn);
            return NULL;
        }
    return sn;
}

wf_xds_snapshot *wf_xds_snapshot_ref(wf_xds_snapshot *sn)
{
    if (sn)
        sn->refs++;
    return sn;
}

static void entry_free(enc_entry *e)
{
    for (enc_delta *d = e->deltas, *nx; d; d = nx) {
        nx = d->next;
        digest_unref(d->from);
        free(d->e.own);
        free(d);
    }
    for (size_t i = 0; i < e->n_renamed; i++)
        free(e->renamed[i]);
    free(e->renamed);
    names_unref(e->names);
    digest_unref(e->digest);
    free(e->ns);
    free(e->e.own);
    free(e->off);
    free(e->rlen);
    free(e);
}

void wf_xds_snapshot_unref(wf_xds_snapshot *sn)
{
    if (!sn || --sn->refs)
        return;
    for (enc_entry *e = sn->entries, *nx; e; e = nx) {
        nx = e->next;
        entry_free(e);
    }
    for (int t = 0; t < WF_XDS_NTYPES; t++)
        table_free(&sn->t[t]);
    free(sn);
}

size_t wf_xds_snapshot_bytes(const wf_xds_snapshot *sn)
{
    size_t n = 0;

    for (int t = 0; t < WF_XDS_NTYPES; t++)
        n += sn->t[t].full.len;
    for (const enc_entry *e = sn->entries; e; e = e->next) {
        n += e->e.own ? e->e.len : 0;
        for (const enc_delta *d = e->deltas; d; d = d->next)
            n += d->e.len;
    }
    return n;
}

size_t wf_xds_snapshot_encodings(const wf_xds_snapshot *sn)
{
    size_t n = 0;

    for (const enc_entry *e = sn->entries; e; e = e->next) {
        n++;
        for (const enc_delta *d = e->deltas; d; d = d->next)
            n++;
    }
    return n;
}

/* The listener alias asks for, from tb, renamed to alias (its bytes, new,
 * into *out); -1 when there is none or it cannot be re-encoded. */
static int alias_listener(const res_table *tb, const char *alias, const char *ns, uint8_t **out,
                          size_t *len)
{
    long i = find_alias(tb->names, tb->n, &tb->byname, alias, ns);
    char err[512];
    json_t *l;
    int rc;

    if (i < 0 || !(l = wf_xds_decode(WF_TYPE_LISTENER, tb->full.body + tb->off[i], tb->len[i], err,
                                     sizeof(err))))
        return -1;
    rc = json_object_set_new(l, "name", json_string(alias)) < 0
             ? -1
             : wf_xds_encode(WF_TYPE_LISTENER, l, out, len, err, sizeof(err));
    json_decref(l);
    return rc;
}

/* Builds what a named subscription (ts->set) of type gets from sn: the
 * resources it names that exist, in name order (listener aliases renamed).
 * One that names every resource shares the table's response.  NULL on out
 * of memory. */
static enc_entry *entry_build(wf_xds_snapshot *sn, int type, const wf_xds_type_state *ts,
                              const char *ns)
{
    const res_table *tb = &sn->t[type];
    size_t n = ts->set ? ts->set->n : 0, k = 0;
    enc_entry *e = calloc(1, sizeof(*e));
    const uint8_t **res = calloc(n ? n : 1, sizeof(*res));
    size_t *lens = calloc(n ? n : 1, sizeof(*lens)), *offs = calloc(n ? n : 1, sizeof(*offs));
    uint64_t *hs = calloc(n ? n : 1, sizeof(*hs));
    long *idx = calloc(n ? n : 1, sizeof(*idx));

    if (!e || !res || !lens || !offs || !hs || !idx)
        goto fail;
    e->type = type;
    if ((e->names = ts->set))
        ts->set->refs++;
    if (type == WF_XDS_LDS && !(e->ns = strdup(ns ? ns : "")))
        goto fail;
    if (type == WF_XDS_EDS && n) {
        e->digest = calloc(1, sizeof(*e->digest) + n * sizeof(uint64_t));
        e->off = calloc(n ? n : 1, sizeof(*e->off));
        e->rlen = calloc(n ? n : 1, sizeof(*e->rlen));
        if (!e->digest || !e->off || !e->rlen)
            goto fail;
        e->digest->refs = 1;
        e->digest->names = ts->set;
        ts->set->refs++;
    }
    for (size_t i = 0; i < n; i++) {
        const char *want = ts->set->names[i];
        uintptr_t j = (uintptr_t)wf_map_get(&tb->byname, want, strlen(want));
        idx[i] = -1;
        if (j) {
            idx[i] = (long)(j - 1);
            res[k] = tb->full.body + tb->off[j - 1];
            lens[k] = tb->len[j - 1];
            hs[k++] = tb->hash[j - 1];
        } else if (type == WF_XDS_LDS) {
            uint8_t *b = NULL, **nv;
            size_t bl = 0;
            if (alias_listener(tb, want, ns, &b, &bl) < 0)
                continue;
            if (!(nv = realloc(e->renamed, (e->n_renamed + 1) * sizeof(*nv)))) {
                free(b);
                goto fail;
            }
            e->renamed = nv;
            e->renamed[e->n_renamed++] = b;
            res[k] = b;
            lens[k] = bl;
            hs[k++] = wf_hash(b, bl) | 1;
        }
    }
    if (k == tb->n && !e->n_renamed) {
        /* Every resource once: the wildcard response is this one too. */
        e->e = tb->full;
        e->e.own = NULL;
        for (size_t i = 0; e->off && i < n; i++)
            if (idx[i] >= 0) {
                e->off[i] = tb->off[idx[i]];
                e->rlen[i] = tb->len[idx[i]];
                e->digest->h[i] = tb->hash[idx[i]];
            }
    } else {
        snprintf(e->e.version, sizeof(e->e.version), "%016" PRIx64, hashes_hash(hs, k));
        if (wf_xds_response_assemble(e->e.version, type_urls[type], res, lens, k, &e->e.own,
                                     &e->e.len, offs) < 0)
            goto fail;
        e->e.body = e->e.own;
        e->e.n_resources = k;
        for (size_t i = 0, j = 0; e->off && i < n; i++)
            if (idx[i] >= 0) {
                e->off[i] = offs[j];
                e->rlen[i] = lens[j];
                e->digest->h[i] = hs[j++];
            }
    }
    free(res);
    free(lens);
    free(offs);
    free(hs);
    free(idx);
    return e;
fail:
    free(res);
    free(lens);
    free(offs);
    free(hs);
    free(idx);
    if (e)
        entry_free(e);
    return NULL;
}

/* The response subscription ts gets from sn (and for a named one its
 * entry, into *entry), or NULL on out of memory. */
static const encoded *sub_get(wf_xds_snapshot *sn, int type, const wf_xds_type_state *ts,
                              const char *ns, enc_entry **entry)
{
    enc_entry *e;

    *entry = NULL;
    if (ts->wildcard)
        return &sn->t[type].full;
    for (e = sn->entries; e; e = e->next)
        if (e->type == type && e->names == ts->set && (!e->ns || strcmp(e->ns, ns ? ns : "") == 0))
            break;
    if (!e) {
        if (!(e = entry_build(sn, type, ts, ns)))
            return NULL;
        e->next = sn->entries;
        sn->entries = e;
    }
    *entry = e;
    return &e->e;
}

/* What a client that holds from gets of e: the assignments whose bytes
 * changed.  NULL when it must get the whole set (an assignment it holds
 * is gone, or memory ran out). */
static const encoded *delta_get(enc_entry *e, wf_xds_digest *from)
{
    size_t n = e->digest->names->n, k = 0;
    const uint8_t **res;
    size_t *lens;
    enc_delta *d;

    for (d = e->deltas; d; d = d->next)
        if (d->from == from)
            return &d->e;
    for (size_t i = 0; i < n; i++)
        if (from->h[i] && !e->digest->h[i])
            return NULL;
    res = calloc(n, sizeof(*res));
    lens = calloc(n, sizeof(*lens));
    d = calloc(1, sizeof(*d));
    if (!res || !lens || !d)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (e->digest->h[i] && e->digest->h[i] != from->h[i]) {
            res[k] = e->e.body + e->off[i];
            lens[k++] = e->rlen[i];
        }
    memcpy(d->e.version, e->e.version, sizeof(d->e.version));
    if (wf_xds_response_assemble(d->e.version, type_urls[e->type], res, lens, k, &d->e.own,
                                 &d->e.len, NULL) < 0)
        goto fail;
    d->e.body = d->e.own;
    d->e.n_resources = k;
    d->from = from;
    from->refs++;
    d->next = e->deltas;
    e->deltas = d;
    free(res);
    free(lens);
    return &d->e;
fail:
    free(res);
    free(lens);
    free(d);
    return NULL;
}

int wf_xds_state_respond(wf_xds_stream_state *st, int type, wf_xds_snapshot *sn, const char *ns,
                         uint64_t trigger_ms, wf_xds_push *out, char *err, size_t errlen)
{
    wf_xds_type_state *ts;
    res_table *tb;
    enc_entry *e;
    const encoded *enc;
    int delta = 0;

    memset(out, 0, sizeof(*out));
    if (type < 0 || type >= WF_XDS_NTYPES || !st->t[type].subscribed)
        return 0;
    ts = &st->t[type];
    tb = &sn->t[type];
    if (tb->error) {
        snprintf(err, errlen, "%s", tb->error);
        if (tb->reported)
            return -2;
        tb->reported = 1;
        return -1;
    }
    if (!(enc = sub_get(sn, type, ts, ns, &e))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!due(ts, enc->version))
        return 0;
    /* A delta only on top of a whole set the client said it holds. */
    if (e && e->digest && !ts->owed && ts->sent_digest &&
        ts->sent_digest->names == e->digest->names && ts->acked_version && ts->sent_version &&
        strcmp(ts->acked_version, ts->sent_version) == 0 && !ts->last_nack) {
        const encoded *d = delta_get(e, ts->sent_digest);
        if (d) {
            enc = d;
            delta = 1;
        }
    }
    if (record_sent(st, ts, enc->version, trigger_ms, out->nonce) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    digest_unref(ts->sent_digest);
    if ((ts->sent_digest = e ? e->digest : NULL))
        ts->sent_digest->refs++;
    out->body = enc->body;
    out->body_len = enc->len;
    out->tail_len = wf_xds_response_tail(out->nonce, CONTROL_PLANE, out->tail, sizeof(out->tail));
    memcpy(out->version, enc->version, sizeof(out->version));
    out->n_resources = enc->n_resources;
    out->delta = delta;
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
    /* Pacing (see PUSH_BUDGET): waiting for a push, and holding queued bytes. */
    int pending;
    uint64_t pending_ms; /* its trigger */
    wf_xds_conn *pprev, *pnext;
    int sending;
    uint64_t sending_ms; /* when it was last pushed */
    wf_xds_conn *sprev, *snext;
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
    wf_xds_conn *pend_head, *pend_tail; /* streams a push is due to, in order */
    wf_xds_conn *sending;               /* streams with pushed bytes still queued */
    uv_check_t pump;                    /* serves pend_head as the budget allows */
    uv_timer_t trim;
    int pumping;
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

static void snapshot_release(void *sn)
{
    wf_xds_snapshot_unref(sn);
}

/* Queues one response on c: the snapshot's body, shared by every stream
 * sent the same (the queue holds a reference to the snapshot, not a
 * copy), then c's own tail. */
static int send_push(wf_xds_conn *c, wf_xds_snapshot *sn, const wf_xds_push *p)
{
    wf_xds_snapshot_ref(sn);
    if (wf_grpc_send_shared(c->call, p->body, p->body_len, p->tail, p->tail_len, snapshot_release,
                            sn) < 0) {
        wf_xds_snapshot_unref(sn);
        return -1;
    }
    return 0;
}

/* Sends c every subscribed type whose resources changed (or that is owed a
 * response), clusters first. */
static void push_conn(wf_xds_conn *c, uint64_t trigger_ms)
{
    wf_xds_server *s = c->s;
    const char *ns;
    char err[512];
    wf_xds_snapshot *sn;

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
    if (!(sn = s->h.resources(c, s->h.ud, err, sizeof(err)))) {
        s->m.push_errors++;
        WF_ERROR("ADS %s: cannot compute its resources: %s; it keeps its current config", c->id,
                 err);
        return;
    }
    ns = node_md_str(c->st.node, "NAMESPACE");
    for (int t = 0; t < WF_XDS_NTYPES; t++) {
        wf_xds_push p;
        int r = wf_xds_state_respond(&c->st, t, sn, ns, trigger_ms, &p, err, sizeof(err));
        if (r == 0)
            continue;
        if (r < 0) {
            s->m.push_errors++;
            /* Every proxy of the same shape fails alike: one line for them. */
            if (r == -1)
                WF_ERROR("ADS %s: cannot encode %s: %s; it keeps its current config (and so "
                         "does every proxy that translates alike)",
                         c->id, type_names[t], err);
            continue;
        }
        WF_DEBUG("ADS %s: push %s version %s nonce %s (%zu resources%s, %zu bytes)", c->id,
                 type_names[t], p.version, p.nonce, p.n_resources, p.delta ? " changed" : "",
                 p.body_len + p.tail_len);
        if (send_push(c, sn, &p) < 0) {
            WF_WARN("ADS %s: %s push of %zu bytes not sent (stream closing, or over the %d-byte "
                    "gRPC message limit)",
                    c->id, type_names[t], p.body_len + p.tail_len, WF_GRPC_MAX_MESSAGE);
            s->m.push_errors++;
        } else {
            s->m.pushes[t]++;
        }
    }
    wf_xds_snapshot_unref(sn);
}

static void pend_unlink(wf_xds_conn *c)
{
    wf_xds_server *s = c->s;

    if (!c->pending)
        return;
    if (c->pprev)
        c->pprev->pnext = c->pnext;
    else
        s->pend_head = c->pnext;
    if (c->pnext)
        c->pnext->pprev = c->pprev;
    else
        s->pend_tail = c->pprev;
    c->pprev = c->pnext = NULL;
    c->pending = 0;
}

static void sending_unlink(wf_xds_conn *c)
{
    if (!c->sending)
        return;
    if (c->sprev)
        c->sprev->snext = c->snext;
    else
        c->s->sending = c->snext;
    if (c->snext)
        c->snext->sprev = c->sprev;
    c->sprev = c->snext = NULL;
    c->sending = 0;
}

/* Drops the streams whose pushed bytes are all written (or that stalled);
 * returns the bytes the others still have queued. */
static size_t sending_bytes(wf_xds_server *s)
{
    uint64_t now = uv_now(s->loop);
    size_t q = 0;

    for (wf_xds_conn *c = s->sending, *nx; c; c = nx) {
        size_t k = wf_grpc_queued(c->call);
        nx = c->snext;
        if (k && now - c->sending_ms < STALL_MS)
            q += k;
        else
            sending_unlink(c);
    }
    return q;
}

static void trim_cb(uv_timer_t *t)
{
    wf_xds_server *s = t->data;

    if (s->pend_head || sending_bytes(s)) {
        uv_timer_start(t, trim_cb, TRIM_MS, 0);
        return;
    }
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void pump_cb(uv_check_t *h);

/* Pushes to the streams waiting, oldest first, while the bytes queued by
 * pushes stay under PUSH_BUDGET; the rest wait for those to be written. */
static void pump(wf_xds_server *s)
{
    size_t q;

    if (s->stopped)
        return;
    q = sending_bytes(s);
    while (s->pend_head && q < PUSH_BUDGET) {
        wf_xds_conn *c = s->pend_head;
        size_t k = wf_grpc_queued(c->call);
        pend_unlink(c);
        push_conn(c, c->pending_ms);
        /* Only a stream that was pushed something counts (a slow one is
         * deferred, see SLOW_BYTES). */
        if (wf_grpc_queued(c->call) > k) {
            k = wf_grpc_queued(c->call);
            c->sending_ms = uv_now(s->loop);
            if (!c->sending) {
                c->sending = 1;
                c->snext = s->sending;
                if (s->sending)
                    s->sending->sprev = c;
                s->sending = c;
            }
            q += k;
        }
    }
    if (s->pend_head && !s->pumping) {
        uv_check_start(&s->pump, pump_cb);
        s->pumping = 1;
    } else if (!s->pend_head && s->pumping) {
        uv_check_stop(&s->pump);
        s->pumping = 0;
    }
    if (!s->pend_head && !uv_is_active((uv_handle_t *)&s->trim))
        uv_timer_start(&s->trim, trim_cb, TRIM_MS, 0);
}

static void pump_cb(uv_check_t *h)
{
    pump(h->data);
}

int wf_xds_server_pushing(wf_xds_server *s)
{
    return s->pend_head || sending_bytes(s);
}

/* A push is due to c (trigger_ms: when the change behind it happened). */
static void schedule(wf_xds_conn *c, uint64_t trigger_ms)
{
    wf_xds_server *s = c->s;

    if (c->ending || !c->joined)
        return;
    if (c->pending) {
        if (trigger_ms < c->pending_ms)
            c->pending_ms = trigger_ms;
        return;
    }
    c->pending = 1;
    c->pending_ms = trigger_ms;
    c->pnext = NULL;
    c->pprev = s->pend_tail;
    if (s->pend_tail)
        s->pend_tail->pnext = c;
    else
        s->pend_head = c;
    s->pend_tail = c;
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
        schedule(c, trigger_ms);
    pump(s);
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
    wf_xds_request_view view;
    wf_xds_outcome o;
    char err[512];
    uint64_t now = uv_now(s->loop);
    int r;

    if (!c || c->ending)
        return;
    /* Most requests ACK the last response, with the same names. */
    if (wf_xds_request_peek(msg, len, &view) == 0 &&
        (r = wf_xds_state_plain_ack(&c->st, &view, now, &o)) != 0) {
        if (r < 0) {
            end_conn(c, WF_GRPC_RESOURCE_EXHAUSTED, "istiod is out of memory");
            return;
        }
        if (o.converged >= 0)
            observe(s, o.converged);
        WF_DEBUG("ADS %s: ACK %s version %s", c->id, type_names[o.type],
                 c->st.t[o.type].acked_version);
        return;
    }
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
    if (o.respond) {
        schedule(c, now);
        pump(s);
    }
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
    pend_unlink(c);
    sending_unlink(c);
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
    uv_timer_init(loop, &s->trim);
    uv_check_init(loop, &s->pump);
    s->trim.data = s->pump.data = s;
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
    uv_close((uv_handle_t *)&s->trim, NULL);
    uv_close((uv_handle_t *)&s->pump, NULL);
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
