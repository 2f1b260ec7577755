/*
 * router_test.c: unit tests for the router module (modules/router.c) and
 * the example plugin (plugins/example/example.c).
 *
 * Both sources are compiled into this file so that their static functions
 * (vhost lookup, matchers, weighted choice) can be called directly.  A fake
 * wf_host backs the wf_value functions with jansson (a wf_value * is a
 * json_t *) and keeps mutable request and response header lists per fake
 * stream (set, add and remove behave as weft's host: set removes, then
 * appends); it records set_route, send_local_reply and state_set so the
 * hooks can be checked.
 */
#include "../../modules/router.c"

/* The example plugin also defines wf_module_entry; rename its copy. */
#define wf_module_entry example_wf_module_entry
#include "../../plugins/example/example.c"
#undef wf_module_entry

#include "test.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <strings.h>

/* ------------------------------------------------------------------------
 * Fake host
 * ------------------------------------------------------------------------ */

typedef struct fake_hdr {
    const char *name, *value; /* in hmem, NUL-terminated */
    size_t nlen, vlen;
} fake_hdr;

struct wf_stream {
    fake_hdr req[48], resp[48];
    size_t nreq, nresp;
    char hmem[16384]; /* header bytes (not counted in `used`) */
    size_t hused;
    int hdr_oom; /* header_add/set fail once hmem is full */

    char state_key[64];
    char state_value[64];
    int state_sets;

    const uint64_t *rand_seq; /* random() answers, in order, or NULL */
    size_t nrand, irand;
    uint64_t xs; /* xorshift64 state when rand_seq is NULL */

    int set_route_calls;
    const wf_value *route;
    char route_name[256];
    char cluster[256];

    int reply_status;
    char reply_body[1024];
    char reply_details[64];

    char added_name[64];
    char added_value[64];
    int added;

    _Alignas(16) char mem[8192];
    size_t used;
};

static char last_log[1024];

static void fake_log(wf_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_log, sizeof(last_log), fmt, ap);
    va_end(ap);
    if (getenv("ROUTER_TEST_VERBOSE"))
        fprintf(stderr, "[%d %s] %s\n", (int)level, module, last_log);
}

static int fake_log_enabled(wf_log_level level)
{
    return 1;
}

#define J(v) ((const json_t *)(const void *)(v))

static wf_value_type fake_value_type(const wf_value *v)
{
    if (!v)
        return WF_VALUE_NULL;
    switch (json_typeof(J(v))) {
    case JSON_OBJECT:
        return WF_VALUE_MAP;
    case JSON_ARRAY:
        return WF_VALUE_LIST;
    case JSON_STRING:
        return WF_VALUE_STRING;
    case JSON_INTEGER:
        return WF_VALUE_INT;
    case JSON_REAL:
        return WF_VALUE_DOUBLE;
    case JSON_TRUE:
    case JSON_FALSE:
        return WF_VALUE_BOOL;
    case JSON_NULL:
        return WF_VALUE_NULL;
    }
    return WF_VALUE_NULL;
}

static const char *fake_value_string(const wf_value *v, size_t *len)
{
    if (!v || !json_is_string(J(v)))
        return NULL;
    *len = json_string_length(J(v)); /* len is required, as a strict host may assume */
    return json_string_value(J(v));
}

static int64_t fake_value_int(const wf_value *v)
{
    if (v && json_is_integer(J(v)))
        return json_integer_value(J(v));
    if (v && json_is_real(J(v)))
        return (int64_t)json_real_value(J(v));
    return 0;
}

static double fake_value_double(const wf_value *v)
{
    return v ? json_number_value(J(v)) : 0;
}

static int fake_value_bool(const wf_value *v)
{
    return v && json_is_true(J(v));
}

static size_t fake_value_len(const wf_value *v)
{
    if (v && json_is_array(J(v)))
        return json_array_size(J(v));
    if (v && json_is_object(J(v)))
        return json_object_size(J(v));
    return 0;
}

/* The i-th entry of an object, in insertion order (jansson keeps it). */
static void *fake_object_iter_at(const json_t *o, size_t i)
{
    void *it = json_object_iter((json_t *)o);
    while (it && i--)
        it = json_object_iter_next((json_t *)o, it);
    return it;
}

static const wf_value *fake_value_at(const wf_value *v, size_t i)
{
    if (v && json_is_array(J(v)))
        return (const wf_value *)(const void *)json_array_get(J(v), i);
    if (v && json_is_object(J(v))) {
        void *it = fake_object_iter_at(J(v), i);
        return it ? (const wf_value *)(const void *)json_object_iter_value(it) : NULL;
    }
    return NULL;
}

static const char *fake_value_key_at(const wf_value *v, size_t i)
{
    if (!v || !json_is_object(J(v)))
        return NULL;
    void *it = fake_object_iter_at(J(v), i);
    return it ? json_object_iter_key(it) : NULL;
}

static const wf_value *fake_value_get(const wf_value *map, const char *key)
{
    if (!map || !json_is_object(J(map)))
        return NULL;
    return (const wf_value *)(const void *)json_object_get(J(map), key);
}

static void *fake_alloc(wf_stream *s, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n > sizeof(s->mem) - s->used)
        return NULL;
    void *p = s->mem + s->used;
    s->used += n;
    return p;
}

static fake_hdr *fake_list(wf_stream *s, wf_part part, size_t **n)
{
    if (part == WF_REQUEST) {
        *n = &s->nreq;
        return s->req;
    }
    if (part == WF_RESPONSE) {
        *n = &s->nresp;
        return s->resp;
    }
    return NULL;
}

static const char *fake_copy(wf_stream *s, const char *p, size_t n)
{
    if (n + 1 > sizeof(s->hmem) - s->hused)
        return NULL;
    char *d = s->hmem + s->hused;
    memcpy(d, p, n);
    d[n] = '\0';
    s->hused += n + 1;
    return d;
}

static int fake_header_get(wf_stream *s, wf_part part, wf_str name, wf_str *value)
{
    size_t *n;
    fake_hdr *h = fake_list(s, part, &n);
    for (size_t i = 0; h && i < *n; i++) {
        if (h[i].nlen == name.len && strncasecmp(h[i].name, name.p, name.len) == 0) {
            value->p = h[i].value;
            value->len = h[i].vlen;
            return 1;
        }
    }
    return 0;
}

static int fake_header_add(wf_stream *s, wf_part part, wf_str name, wf_str value)
{
    size_t *n;
    fake_hdr *h = fake_list(s, part, &n);
    if (!h || *n == 48 || s->hdr_oom)
        return -1;
    const char *cn = fake_copy(s, name.p, name.len), *cv = fake_copy(s, value.p, value.len);
    if (!cn || !cv)
        return -1;
    h[(*n)++] = (fake_hdr){cn, cv, name.len, value.len};
    if (part == WF_RESPONSE) {
        snprintf(s->added_name, sizeof(s->added_name), "%.*s", (int)name.len, name.p);
        snprintf(s->added_value, sizeof(s->added_value), "%.*s", (int)value.len, value.p);
        s->added++;
    }
    return 0;
}

static int fake_header_remove(wf_stream *s, wf_part part, wf_str name)
{
    size_t *n, j = 0;
    fake_hdr *h = fake_list(s, part, &n);
    int removed = 0;
    for (size_t i = 0; h && i < *n; i++) {
        if (h[i].nlen == name.len && strncasecmp(h[i].name, name.p, name.len) == 0)
            removed++;
        else
            h[j++] = h[i];
    }
    if (h)
        *n = j;
    return removed;
}

static int fake_header_set(wf_stream *s, wf_part part, wf_str name, wf_str value)
{
    fake_header_remove(s, part, name);
    return fake_header_add(s, part, name, value);
}

static int fake_state_set(wf_stream *s, const char *key, wf_str value)
{
    snprintf(s->state_key, sizeof(s->state_key), "%s", key);
    snprintf(s->state_value, sizeof(s->state_value), "%.*s", (int)value.len, value.p);
    s->state_sets++;
    return 0;
}

static int fake_send_local_reply(wf_stream *s, int status, wf_str body, const char *details)
{
    s->reply_status = status;
    snprintf(s->reply_body, sizeof(s->reply_body), "%.*s", (int)body.len, body.p);
    snprintf(s->reply_details, sizeof(s->reply_details), "%s", details ? details : "");
    return 0;
}

static int fake_set_route(wf_stream *s, const wf_value *route, const char *name,
                          const char *cluster)
{
    s->set_route_calls++;
    s->route = route;
    snprintf(s->route_name, sizeof(s->route_name), "%s", name ? name : "");
    snprintf(s->cluster, sizeof(s->cluster), "%s", cluster ? cluster : "");
    return 0;
}

static uint64_t xorshift64(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static uint64_t fake_random(wf_stream *s)
{
    if (s->rand_seq)
        return s->rand_seq[s->irand++ % s->nrand];
    return xorshift64(&s->xs);
}

static const wf_host fake_host = {
    .size = sizeof(wf_host),
    .abi_major = WF_ABI_MAJOR,
    .abi_minor = WF_ABI_MINOR,
    .log = fake_log,
    .log_enabled = fake_log_enabled,
    .value_type = fake_value_type,
    .value_string = fake_value_string,
    .value_int = fake_value_int,
    .value_double = fake_value_double,
    .value_bool = fake_value_bool,
    .value_len = fake_value_len,
    .value_at = fake_value_at,
    .value_key_at = fake_value_key_at,
    .value_get = fake_value_get,
    .alloc = fake_alloc,
    .header_get = fake_header_get,
    .header_set = fake_header_set,
    .header_add = fake_header_add,
    .header_remove = fake_header_remove,
    .send_local_reply = fake_send_local_reply,
    .set_route = fake_set_route,
    .state_set = fake_state_set,
    .random = fake_random,
};

/* ------------------------------------------------------------------------
 * Fixtures
 * ------------------------------------------------------------------------ */

static const wf_module *router_mod;

/* Parses JSON written with single quotes (to keep the C strings readable). */
static json_t *json_sq(const char *text)
{
    char buf[8192];
    size_t n = strlen(text);
    if (n >= sizeof(buf))
        return NULL;
    for (size_t i = 0; i <= n; i++)
        buf[i] = text[i] == '\'' ? '"' : text[i];
    json_error_t e;
    json_t *j = json_loads(buf, 0, &e);
    if (!j)
        fprintf(stderr, "bad test JSON at %d: %s\n%s\n", e.position, e.text, text);
    return j;
}

typedef struct fixture {
    json_t *json;
    rt_table *t;
    char err[512];
} fixture;

/* Compiles a route table through the module's config_create, with the
 * router's own config (NULL for {}). */
static void fx_build_cfg(fixture *f, const char *rc_json, const char *cfg_json)
{
    memset(f, 0, sizeof(*f));
    f->json = rc_json ? json_sq(rc_json) : NULL;
    json_t *empty = cfg_json ? json_sq(cfg_json) : json_object();
    wf_config_args args = {.size = sizeof(args),
                           .name = "router",
                           .config = (const wf_value *)(void *)empty,
                           .route_table = (const wf_value *)(void *)f->json,
                           .direction = "outbound"};
    f->t = router_mod->config_create(&args, f->err, sizeof(f->err));
    json_decref(empty);
}

static void fx_build(fixture *f, const char *rc_json)
{
    fx_build_cfg(f, rc_json, NULL);
}

static void fx_free(fixture *f)
{
    if (f->t)
        router_mod->config_destroy(f->t);
    json_decref(f->json);
    f->t = NULL;
    f->json = NULL;
}

/* Expects rc_json to be refused with a reason containing want. */
static int refused(const char *rc_json, const char *want)
{
    fixture f;
    fx_build(&f, rc_json);
    int ok = f.t == NULL && strstr(f.err, want) != NULL;
    if (!ok)
        fprintf(stderr, "expected refusal containing \"%s\", got %s: \"%s\"\n", want,
                f.t ? "a table" : "NULL", f.err);
    fx_free(&f);
    return ok;
}

/* Expects the router's own config to be refused with a reason containing want. */
static int refused_cfg(const char *cfg_json, const char *want)
{
    fixture f;
    fx_build_cfg(&f, "{'virtual_hosts':[]}", cfg_json);
    int ok = f.t == NULL && strstr(f.err, want) != NULL;
    if (!ok)
        fprintf(stderr, "expected refusal containing \"%s\", got %s: \"%s\"\n", want,
                f.t ? "a table" : "NULL", f.err);
    fx_free(&f);
    return ok;
}

static const char *vhost_of(const rt_table *t, const char *host)
{
    const rt_vhost *vh = rt_find_vhost(t, host, strlen(host));
    return vh ? vh->name : "(none)";
}

static void stream_init(wf_stream *s, const char *const *headers)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; headers && headers[i]; i += 2)
        fake_header_add(s, WF_REQUEST, (wf_str){headers[i], strlen(headers[i])},
                        (wf_str){headers[i + 1], strlen(headers[i + 1])});
    s->xs = 88172645463325252ull;
}

/* Every value of `name` in one part, joined with ", ", or "(absent)". */
static const char *hdr(wf_stream *s, wf_part part, const char *name)
{
    static char buf[2048];
    size_t *n, o = 0;
    fake_hdr *h = fake_list(s, part, &n);
    buf[0] = '\0';
    for (size_t i = 0; i < *n; i++)
        if (strcasecmp(h[i].name, name) == 0)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? ", " : "", h[i].value);
    return o ? buf : "(absent)";
}

/* The whole list of one part as "name: value\n" lines, in order. */
static const char *hdr_dump(wf_stream *s, wf_part part)
{
    static char buf[4096];
    size_t *n, o = 0;
    fake_hdr *h = fake_list(s, part, &n);
    buf[0] = '\0';
    for (size_t i = 0; i < *n; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s: %s\n", h[i].name, h[i].value);
    return buf;
}

/* rt_pick_index as a cluster name. */
#define rt_pick_weighted(r, rnd) ((r)->wc[rt_pick_index((r), (rnd))].name)

static rt_request request_of(wf_stream *s, const char *path)
{
    rt_request rq = {.s = s, .path = {path, strlen(path)}};
    rt_request_split(&rq);
    return rq;
}

/* The first route of the first virtual host. */
static const rt_route *route0(const fixture *f)
{
    return f->t && f->t->nvhosts && f->t->vhosts[0].nroutes ? &f->t->vhosts[0].routes[0] : NULL;
}

/* Whether route0 of a one-route table matches a request with these
 * headers (":path" among them). */
static int matches(const fixture *f, const char *const *headers)
{
    wf_stream s;
    stream_init(&s, headers);
    wf_str path = {"", 0};
    fake_header_get(&s, WF_REQUEST, RT_LIT(":path"), &path);
    rt_request rq = request_of(&s, path.p);
    const rt_route *r = route0(f);
    return r ? rt_route_matches(r, &rq) : -2;
}

#define HDRS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ------------------------------------------------------------------------
 * Module entry
 * ------------------------------------------------------------------------ */

TEST(entry_refuses_other_major)
{
    char err[256] = "";
    CHECK(wf_module_entry(WF_ABI_MAJOR + 1, 0, &fake_host, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "router") != NULL);
    CHECK(strstr(err, "ABI 1.0") != NULL);
    CHECK(strstr(err, "speaks 2.0") != NULL);

    wf_host small = fake_host;
    small.size = offsetof(wf_host, alloc);
    CHECK(wf_module_entry(WF_ABI_MAJOR, 0, &small, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "too small") != NULL);

    /* A newer minor is fine. */
    const wf_module *m =
        wf_module_entry(WF_ABI_MAJOR, WF_ABI_MINOR + 3, &fake_host, err, sizeof(err));
    CHECK(m != NULL);
    CHECK(m && m->route && m->config_create && m->config_destroy);
    CHECK_STR(m ? m->name : NULL, "router");
}

/* ------------------------------------------------------------------------
 * Virtual host lookup
 * ------------------------------------------------------------------------ */

TEST(strip_port)
{
    CHECK_INT(rt_strip_port("a:80", 4), 1);
    CHECK_INT(rt_strip_port("a", 1), 1);
    CHECK_INT(rt_strip_port("a:", 2), 2);
    CHECK_INT(rt_strip_port(":80", 3), 3);
    CHECK_INT(rt_strip_port("a:b", 3), 3);
    CHECK_INT(rt_strip_port("[::1]:8080", 10), 5);
    CHECK_INT(rt_strip_port("[::1]", 5), 5);
    CHECK_INT(rt_strip_port("::1", 3), 3);
    CHECK_INT(rt_strip_port("fe80::1:80", 10), 10);
}

static const char *const domains_rc =
    "{'name':'outbound','virtual_hosts':["
    " {'name':'reviews','domains':['reviews:9080','reviews.default.svc.cluster.local:9080'],"
    "  'routes':[]},"
    " {'name':'ratings','domains':['ratings','ratings:80','Ratings.Default:80'],'routes':[]},"
    " {'name':'wild-short','domains':['*.example.com'],'routes':[]},"
    " {'name':'wild-long','domains':['*.api.example.com','*.example.com:8443'],'routes':[]},"
    " {'name':'exact-api','domains':['exact.api.example.com'],'routes':[]},"
    " {'name':'prefix','domains':['www.*'],'routes':[]},"
    " {'name':'gateway','domains':['gw.example.org','gw.example.org:*'],'routes':[]},"
    " {'name':'any','domains':['*'],'routes':[]}"
    "]}";

TEST(vhost_exact_and_port)
{
    fixture f;
    fx_build(&f, domains_rc);
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    CHECK_STR(vhost_of(f.t, "reviews:9080"), "reviews");
    CHECK_STR(vhost_of(f.t, "REVIEWS.default.svc.cluster.local:9080"), "reviews");
    /* The port is part of the domain, as in Envoy: no port-less form is
     * listed for reviews, and another port is another host. */
    CHECK_STR(vhost_of(f.t, "reviews"), "any");
    CHECK_STR(vhost_of(f.t, "reviews:9081"), "any");
    CHECK_STR(vhost_of(f.t, "ratings"), "ratings");
    CHECK_STR(vhost_of(f.t, "ratings:80"), "ratings");
    CHECK_STR(vhost_of(f.t, "ratings:9999"), "any");
    /* Domains are lower-cased at compile time, authorities at lookup. */
    CHECK_STR(vhost_of(f.t, "ratings.default:80"), "ratings");
    CHECK_STR(vhost_of(f.t, "RATINGS.DEFAULT:80"), "ratings");
    CHECK_STR(vhost_of(f.t, "ratings.default"), "any");
    /* Istio's gateway form "host:*" is a prefix wildcard for any port. */
    CHECK_STR(vhost_of(f.t, "gw.example.org"), "gateway");
    CHECK_STR(vhost_of(f.t, "gw.example.org:8443"), "gateway");
    fx_free(&f);

    /* strip_any_host_port: after the authority as sent, try it without
     * its port. */
    fx_build_cfg(&f, domains_rc, "{'strip_any_host_port':true}");
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    CHECK_STR(vhost_of(f.t, "reviews:9080"), "reviews");
    CHECK_STR(vhost_of(f.t, "reviews"), "any");
    CHECK_STR(vhost_of(f.t, "ratings:9999"), "ratings");
    CHECK_STR(vhost_of(f.t, "ratings.default:8080"), "any");
    CHECK_STR(vhost_of(f.t, "[::1]:80"), "any");
    fx_free(&f);

    fx_build_cfg(&f, "{'virtual_hosts':[{'name':'v6','domains':['[::1]'],'routes':[]}]}",
                 "{'strip_any_host_port':true}");
    CHECK(f.t != NULL);
    if (f.t) {
        CHECK_STR(vhost_of(f.t, "[::1]:80"), "v6");
        CHECK_STR(vhost_of(f.t, "[::1]"), "v6");
        CHECK_STR(vhost_of(f.t, "[::2]:80"), "(none)");
    }
    fx_free(&f);

    CHECK(refused_cfg("{'strip_any_host_port':'yes'}",
                      "router config: \"strip_any_host_port\" must be true or false"));
    CHECK(refused_cfg("{'stripPort':true}",
                      "router config: unknown or unsupported field "
                      "\"stripPort\" (the router reads: strip_any_host_port)"));
    CHECK(refused_cfg("[]", "router config: must be an object"));
}

TEST(vhost_wildcards)
{
    fixture f;
    fx_build(&f, domains_rc);
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    /* Exact beats every wildcard. */
    CHECK_STR(vhost_of(f.t, "exact.api.example.com"), "exact-api");
    /* The longest suffix wins, whatever the config order. */
    CHECK_STR(vhost_of(f.t, "x.api.example.com"), "wild-long");
    CHECK_STR(vhost_of(f.t, "X.Example.COM"), "wild-short");
    CHECK_STR(vhost_of(f.t, "x.example.com:8443"), "wild-long");
    /* Without port stripping, "*.example.com" does not cover a port. */
    CHECK_STR(vhost_of(f.t, "x.example.com:80"), "any");
    /* '*' stands for at least one character. */
    CHECK_STR(vhost_of(f.t, ".example.com"), "any");
    CHECK_STR(vhost_of(f.t, "example.com"), "any");
    /* Suffix wildcards before prefix wildcards, as Envoy. */
    CHECK_STR(vhost_of(f.t, "www.foo.org"), "prefix");
    CHECK_STR(vhost_of(f.t, "www.example.com"), "wild-short");
    CHECK_STR(vhost_of(f.t, "www."), "any");
    CHECK_STR(vhost_of(f.t, "other"), "any");
    CHECK_STR(vhost_of(f.t, ""), "any");
    fx_free(&f);

    /* With stripping, a wildcard is tried as sent, then without the port. */
    fx_build_cfg(&f, domains_rc, "{'strip_any_host_port':true}");
    CHECK(f.t != NULL);
    if (f.t) {
        CHECK_STR(vhost_of(f.t, "x.example.com:8443"), "wild-long");
        CHECK_STR(vhost_of(f.t, "x.example.com:80"), "wild-short");
        CHECK_STR(vhost_of(f.t, "x.api.example.com:80"), "wild-long");
        CHECK_STR(vhost_of(f.t, "exact.api.example.com:80"), "exact-api");
    }
    fx_free(&f);

    /* No "*": an unknown host has no virtual host. */
    fx_build(&f, "{'virtual_hosts':[{'name':'a','domains':['a', '*.b'],'routes':[]}]}");
    CHECK(f.t != NULL);
    if (f.t) {
        CHECK_STR(vhost_of(f.t, "a"), "a");
        CHECK_STR(vhost_of(f.t, "a:1"), "(none)");
        CHECK_STR(vhost_of(f.t, "x.b"), "a");
        CHECK_STR(vhost_of(f.t, "c"), "(none)");
    }
    fx_free(&f);

    /* No route table at all: no virtual hosts. */
    fx_build(&f, NULL);
    CHECK(f.t != NULL);
    if (f.t)
        CHECK_STR(vhost_of(f.t, "anything"), "(none)");
    fx_free(&f);
}

TEST(vhost_many_domains)
{
    /* Enough domains to need several table sizes and probe chains. */
    char rc[8000];
    size_t o = 0;
    o += (size_t)snprintf(rc + o, sizeof(rc) - o, "{'virtual_hosts':[");
    for (int v = 0; v < 20; v++) {
        o += (size_t)snprintf(rc + o, sizeof(rc) - o, "%s{'name':'v%d','domains':[", v ? "," : "",
                              v);
        for (int d = 0; d < 10; d++)
            o += (size_t)snprintf(rc + o, sizeof(rc) - o, "%s'svc%d-%d:80'", d ? "," : "", v, d);
        o += (size_t)snprintf(rc + o, sizeof(rc) - o, "],'routes':[]}");
    }
    snprintf(rc + o, sizeof(rc) - o, "]}");
    fixture f;
    fx_build(&f, rc);
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    int wrong = 0;
    for (int v = 0; v < 20; v++)
        for (int d = 0; d < 10; d++) {
            char host[32], want[8];
            snprintf(host, sizeof(host), "svc%d-%d:80", v, d);
            snprintf(want, sizeof(want), "v%d", v);
            wrong += strcmp(vhost_of(f.t, host), want) != 0;
        }
    CHECK_INT(wrong, 0);
    CHECK_STR(vhost_of(f.t, "svc20-0:80"), "(none)");
    CHECK_STR(vhost_of(f.t, "svc3-4"), "(none)");
    fx_free(&f);
}

/* ------------------------------------------------------------------------
 * Path matching
 * ------------------------------------------------------------------------ */

/* One virtual host "v" (domain "*") with the given routes JSON. */
static void fx_routes(fixture *f, const char *routes)
{
    char rc[6000];
    snprintf(rc, sizeof(rc), "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[%s]}]}",
             routes);
    fx_build(f, rc);
    if (!f->t)
        fprintf(stderr, "route table refused: %s\n", f->err);
}

static int path_matches(const char *match_json, const char *path)
{
    char routes[2000];
    snprintf(routes, sizeof(routes), "{'match':%s,'route':{'cluster':'c'}}", match_json);
    fixture f;
    fx_routes(&f, routes);
    int m = -2;
    if (f.t) {
        wf_stream s;
        stream_init(&s, NULL);
        rt_request rq = request_of(&s, path);
        m = rt_path_matches(route0(&f), &rq);
    }
    fx_free(&f);
    return m;
}

TEST(path_prefix_exact)
{
    CHECK_INT(path_matches("{'prefix':'/'}", "/"), 1);
    CHECK_INT(path_matches("{'prefix':'/'}", "/anything?x=1"), 1);
    CHECK_INT(path_matches("{'prefix':'/api'}", "/api/v1"), 1);
    CHECK_INT(path_matches("{'prefix':'/api'}", "/apix"), 1);
    CHECK_INT(path_matches("{'prefix':'/api'}", "/ap"), 0);
    CHECK_INT(path_matches("{'prefix':'/api'}", "/API/v1"), 0);
    CHECK_INT(path_matches("{'prefix':'/API','case_sensitive':false}", "/api/v1"), 1);
    CHECK_INT(path_matches("{'prefix':'/api','case_sensitive':false}", "/Api/v1"), 1);
    CHECK_INT(path_matches("{'path':'/exact'}", "/exact"), 1);
    CHECK_INT(path_matches("{'path':'/exact'}", "/exact?q=1"), 1);
    CHECK_INT(path_matches("{'path':'/exact'}", "/exact#frag"), 1);
    CHECK_INT(path_matches("{'path':'/exact'}", "/exact/"), 0);
    CHECK_INT(path_matches("{'path':'/exact'}", "/Exact"), 0);
    CHECK_INT(path_matches("{'path':'/Exact','case_sensitive':false}", "/eXACT?q"), 1);
    CHECK_INT(path_matches("{'path':''}", ""), 1);
    CHECK_INT(path_matches("{'path_separated_prefix':'/api'}", "/api"), 1);
    CHECK_INT(path_matches("{'path_separated_prefix':'/api'}", "/api/x"), 1);
    CHECK_INT(path_matches("{'path_separated_prefix':'/api'}", "/api?x"), 1);
    CHECK_INT(path_matches("{'path_separated_prefix':'/api'}", "/apix"), 0);
}

TEST(path_regex)
{
    /* Full match, as Envoy's safe_regex: no implicit ".*" at either end. */
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/v[0-9]+/.*'}}", "/v12/items"), 1);
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/v[0-9]+/.*'}}", "/x/v12/items"), 0);
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/v[0-9]+'}}", "/v12/items"), 0);
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/a|/b'}}", "/b"), 1);
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/a|/b'}}", "/ab"), 0);
    /* The query string is not part of what a regex sees. */
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/items/\\\\d+'}}", "/items/42?x=1"), 1);
    /* '$' is end of text only (RE2), not before a final newline. */
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/a$'}}", "/a\n"), 0);
    /* case_sensitive does not apply to regexes (as Envoy); (?i) does. */
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/abc'},'case_sensitive':false}", "/ABC"), 0);
    CHECK_INT(path_matches("{'safe_regex':{'regex':'(?i)/abc'}}", "/ABC"), 1);
    /* UTF-8: '.' is one character. */
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/.'}}", "/\xc3\xa9"), 1);
    /* Invalid UTF-8 in a path does not match '.', and is not an error. */
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/.'}}", "/\xff"), 0);
    CHECK_INT(path_matches("{'safe_regex':{'regex':'/.*'}}", "/ok"), 1);
}

TEST(regex_pathological_is_bounded)
{
    /* (a+)+b against a long run of a's backtracks exponentially; the match
     * limit turns it into "no match", logged once. */
    char path[64];
    memset(path, 'a', 40);
    memcpy(path + 40, "bc", 3); /* a 'b' is there, so no quick rejection */
    fixture f;
    fx_routes(&f, "{'match':{'safe_regex':{'regex':'(a|aa)+b'}},'route':{'cluster':'c'}}");
    CHECK(f.t != NULL);
    if (f.t) {
        wf_stream s;
        stream_init(&s, NULL);
        rt_request rq = request_of(&s, path);
        last_log[0] = '\0';
        CHECK_INT(rt_path_matches(route0(&f), &rq), 0);
        CHECK(strstr(last_log, "gave up") != NULL);
        last_log[0] = '\0';
        CHECK_INT(rt_path_matches(route0(&f), &rq), 0);
        CHECK_STR(last_log, ""); /* only once */
    }
    fx_free(&f);
}

TEST(regex_scanner)
{
    static const char *const ok[] = {"abc",        "(?i)abc",      "(?i:a)b", "(?-i)a",
                                     "(?is-mU:x)", "(?P<n>a)",     "(?<n>a)", "(?:a|b)",
                                     "[(?=]",      "[]a]",         "[^]a]",   "[[:alpha:](?=]",
                                     "\\(?=a",     "\\Q(?=\\1\\E", "a{1,3}",  "\\d\\w",
                                     "[\\1]",      "\\0",          NULL};
    static const char *const bad[][2] = {{"(?=a)", "lookahead"},
                                         {"x(?!a)", "lookahead"},
                                         {"(?<=a)", "lookbehind"},
                                         {"(?<!a)", "lookbehind"},
                                         {"(a)\\1", "backreference"},
                                         {"(?P<n>a)(?P=n)", "backreference"},
                                         {"\\k<n>", "backreference"},
                                         {"\\g1", "backreference"},
                                         {"(?>a)", "atomic"},
                                         {"(?R)", "recursion"},
                                         {"(a)(?1)", "recursion"},
                                         {"(?-1)", "recursion"},
                                         {"(*SKIP)a", "verb"},
                                         {"(*pla:a)", "lookaround"},
                                         {"a\\Kb", "\\K"},
                                         {"(?(1)a|b)", "conditional"},
                                         {"(?#c)", "comment"},
                                         {"(?x)a", "RE2 does not have"},
                                         {"[a](?=b)", "lookahead"},
                                         {"\\Q(\\E(?=", "lookahead"}};
    for (size_t i = 0; ok[i]; i++) {
        size_t at = 0;
        const char *why = rt_regex_unsupported(ok[i], strlen(ok[i]), &at);
        if (why)
            fprintf(stderr, "pattern %s refused: %s\n", ok[i], why);
        CHECK(why == NULL);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t at = 0;
        const char *why = rt_regex_unsupported(bad[i][0], strlen(bad[i][0]), &at);
        if (!why || !strstr(why, bad[i][1]))
            fprintf(stderr, "pattern %s: expected \"%s\", got %s\n", bad[i][0], bad[i][1],
                    why ? why : "(accepted)");
        CHECK(why && strstr(why, bad[i][1]));
    }
    size_t at = 0;
    rt_regex_unsupported("abc(?=x)", 8, &at);
    CHECK_INT(at, 3);
}

/* ------------------------------------------------------------------------
 * Header matching
 * ------------------------------------------------------------------------ */

static int header_matches(const char *hm_json, const char *const *headers)
{
    char routes[2000];
    snprintf(routes, sizeof(routes),
             "{'match':{'prefix':'/','headers':[%s]},'route':{'cluster':'c'}}", hm_json);
    fixture f;
    fx_routes(&f, routes);
    int m = f.t ? matches(&f, headers) : -2;
    fx_free(&f);
    return m;
}

TEST(header_string_matchers)
{
    const char *const *h = HDRS(":method", "GET", ":path", "/", ":authority", "api.example.com",
                                ":scheme", "http", "x-user", "Jason-Smith");
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'exact':'Jason-Smith'}}", h), 1);
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'exact':'jason-smith'}}", h), 0);
    CHECK_INT(header_matches(
                  "{'name':'x-user','string_match':{'exact':'jason-smith','ignore_case':true}}", h),
              1);
    CHECK_INT(header_matches("{'name':'X-User','string_match':{'prefix':'Jason'}}", h), 1);
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'prefix':'Smith'}}", h), 0);
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'suffix':'Smith'}}", h), 1);
    CHECK_INT(
        header_matches("{'name':'x-user','string_match':{'suffix':'SMITH','ignore_case':true}}", h),
        1);
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'contains':'on-Sm'}}", h), 1);
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'contains':'ON-SM'}}", h), 0);
    CHECK_INT(header_matches(
                  "{'name':'x-user','string_match':{'contains':'ON-SM','ignore_case':true}}", h),
              1);
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'safe_regex':{'regex':'J.*h'}}}", h),
              1);
    /* Full match: a regex matching only part of the value does not match. */
    CHECK_INT(
        header_matches("{'name':'x-user','string_match':{'safe_regex':{'regex':'Jason'}}}", h), 0);
    CHECK_INT(header_matches("{'name':'x-user','string_match':{'exact':'Jason-Smith'},"
                             "'invert_match':true}",
                             h),
              0);
    CHECK_INT(
        header_matches("{'name':'x-user','string_match':{'exact':'other'},'invert_match':true}", h),
        1);
    /* Envoy's older one-field forms. */
    CHECK_INT(header_matches("{'name':'x-user','exact_match':'Jason-Smith'}", h), 1);
    CHECK_INT(header_matches("{'name':'x-user','safe_regex_match':{'regex':'[A-Z].*'}}", h), 1);
    /* Pseudo-headers go through header_get like any header. */
    CHECK_INT(header_matches("{'name':':method','string_match':{'exact':'GET'}}", h), 1);
    CHECK_INT(header_matches("{'name':':method','string_match':{'exact':'POST'}}", h), 0);
    CHECK_INT(header_matches("{'name':':authority','string_match':{'prefix':'api.'}}", h), 1);
    CHECK_INT(header_matches("{'name':':scheme','string_match':{'exact':'https'}}", h), 0);
    /* All headers of a route must match. */
    CHECK_INT(header_matches("{'name':':method','string_match':{'exact':'GET'}},"
                             "{'name':'x-user','string_match':{'prefix':'Bob'}}",
                             h),
              0);
}

TEST(header_presence_and_absence)
{
    const char *const *with = HDRS(":path", "/", "x-canary", "1", "x-empty", "");
    const char *const *without = HDRS(":path", "/");
    CHECK_INT(header_matches("{'name':'x-canary','present_match':true}", with), 1);
    CHECK_INT(header_matches("{'name':'x-canary','present_match':true}", without), 0);
    CHECK_INT(header_matches("{'name':'x-empty','present_match':true}", with), 1);
    /* Absence (Istio's withoutHeaders): present + invert. */
    CHECK_INT(header_matches("{'name':'x-canary','present_match':true,'invert_match':true}", with),
              0);
    CHECK_INT(
        header_matches("{'name':'x-canary','present_match':true,'invert_match':true}", without), 1);
    CHECK_INT(header_matches("{'name':'x-canary','present_match':false}", without), 1);
    CHECK_INT(header_matches("{'name':'x-canary','present_match':false}", with), 0);
    /* A name alone means "present", as in Envoy. */
    CHECK_INT(header_matches("{'name':'x-canary'}", with), 1);
    CHECK_INT(header_matches("{'name':'x-canary'}", without), 0);
    /* A missing header fails every string matcher ... */
    CHECK_INT(header_matches("{'name':'x-canary','string_match':{'exact':'1'}}", without), 0);
    CHECK_INT(
        header_matches("{'name':'x-canary','string_match':{'safe_regex':{'regex':'.*'}}}", without),
        0);
    /* ... except an inverted one, Istio's withoutHeaders ("absent, or present
     * with another value"), which the translator writes without
     * treat_missing_header_as_empty. */
    CHECK_INT(header_matches("{'name':'x-canary','string_match':{'exact':'2'},'invert_match':true}",
                             without),
              1);
    CHECK_INT(header_matches("{'name':'x-canary','string_match':{'safe_regex':{'regex':'.*'}},"
                             "'invert_match':true}",
                             without),
              1);
    /* Envoy's own rule when treat_missing_header_as_empty is given as false. */
    CHECK_INT(header_matches("{'name':'x-canary','string_match':{'exact':'2'},'invert_match':true,"
                             "'treat_missing_header_as_empty':false}",
                             without),
              0);
    /* treat_missing_header_as_empty: true matches "" instead. */
    CHECK_INT(header_matches("{'name':'x-canary','string_match':{'exact':'2'},'invert_match':true,"
                             "'treat_missing_header_as_empty':true}",
                             without),
              1);
    CHECK_INT(header_matches("{'name':'x-canary','string_match':{'safe_regex':{'regex':'.*'}},"
                             "'treat_missing_header_as_empty':true}",
                             without),
              1);
    CHECK_INT(header_matches("{'name':'x-empty','string_match':{'exact':''}}", with), 1);
}

/* ------------------------------------------------------------------------
 * Query parameters
 * ------------------------------------------------------------------------ */

static int query_matches(const char *qm_json, const char *path)
{
    char routes[2000];
    snprintf(routes, sizeof(routes),
             "{'match':{'prefix':'/','query_parameters':[%s]},'route':{'cluster':'c'}}", qm_json);
    fixture f;
    fx_routes(&f, routes);
    int m = f.t ? matches(&f, HDRS(":path", path)) : -2;
    fx_free(&f);
    return m;
}

TEST(query_parameters)
{
    const char *q_exact = "{'name':'q','string_match':{'exact':'a b'}}";
    CHECK_INT(query_matches(q_exact, "/s?q=a%20b"), 1);
    CHECK_INT(query_matches(q_exact, "/s?x=1&q=a%20b&y=2"), 1);
    CHECK_INT(query_matches(q_exact, "/s?q=a+b"), 0); /* '+' stays '+' */
    CHECK_INT(query_matches(q_exact, "/s?q=a%2"), 0);
    CHECK_INT(query_matches(q_exact, "/s"), 0);
    CHECK_INT(query_matches(q_exact, "/s#q=a%20b"), 0);
    CHECK_INT(query_matches(q_exact, "/s?z=1#&q=a%20b"), 0); /* fragment is not query */
    CHECK_INT(query_matches(q_exact, "/s?%71=a%20b"), 1);    /* names are decoded too */
    CHECK_INT(query_matches(q_exact, "/s?qq=a%20b"), 0);
    /* The first value counts, as in Envoy. */
    CHECK_INT(query_matches(q_exact, "/s?q=zz&q=a%20b"), 0);
    CHECK_INT(query_matches("{'name':'q','string_match':{'exact':'100%'}}", "/s?q=100%"), 1);
    CHECK_INT(query_matches("{'name':'q','string_match':{'exact':'%zz'}}", "/s?q=%zz"), 1);
    CHECK_INT(query_matches("{'name':'q','string_match':{'prefix':'ab'}}", "/s?q=abc"), 1);
    CHECK_INT(query_matches("{'name':'q','string_match':{'safe_regex':{'regex':'[0-9]+'}}}",
                            "/s?q=%31%32"),
              1);
    CHECK_INT(
        query_matches("{'name':'q','string_match':{'safe_regex':{'regex':'[0-9]+'}}}", "/s?q=12x"),
        0);
    CHECK_INT(query_matches("{'name':'debug','present_match':true}", "/s?debug"), 1);
    CHECK_INT(query_matches("{'name':'debug','present_match':true}", "/s?a=1&debug="), 1);
    CHECK_INT(query_matches("{'name':'debug','present_match':true}", "/s?a=debug"), 0);
    CHECK_INT(query_matches("{'name':'debug','present_match':true}", "/s?"), 0);
    CHECK_INT(query_matches("{'name':'debug'}", "/s?debug=0"), 1);
    CHECK_INT(query_matches("{'name':'q','string_match':{'exact':''}}", "/s?q"), 1);
    CHECK_INT(query_matches("{'name':'a','string_match':{'exact':'1'}},"
                            "{'name':'b','string_match':{'exact':'2'}}",
                            "/s?b=2&a=1"),
              1);
    CHECK_INT(query_matches("{'name':'a','string_match':{'exact':'1'}},"
                            "{'name':'b','string_match':{'exact':'2'}}",
                            "/s?b=3&a=1"),
              0);
}

TEST(percent_decoding)
{
    char out[32];
    CHECK_INT(rt_pct_decode("a%41%2fb%", 9, out), 5);
    CHECK(memcmp(out, "aA/b%", 5) == 0);
    CHECK_INT(rt_pct_decode("%4", 2, out), 2);
    CHECK(memcmp(out, "%4", 2) == 0);
    CHECK(rt_pct_equals("%61%62", 6, "ab", 2));
    CHECK(!rt_pct_equals("%61%62", 6, "a", 1));
    CHECK(!rt_pct_equals("%61", 3, "ab", 2));
    CHECK(rt_pct_equals("", 0, "", 0));
}

/* ------------------------------------------------------------------------
 * The route hook
 * ------------------------------------------------------------------------ */

static const char *const hook_rc =
    "{'virtual_hosts':["
    " {'name':'reviews','domains':['reviews:9080','reviews'],'routes':["
    "  {'name':'default/reviews.0','match':{'prefix':'/','headers':"
    "     [{'name':'end-user','string_match':{'exact':'jason'}}]},"
    "   'route':{'cluster':'outbound|9080|v2|reviews'}},"
    "  {'match':{'prefix':'/api'},'route':{'cluster':'outbound|9080|v3|reviews'}},"
    "  {'name':'catch-all','match':{'prefix':'/'},'route':{'cluster':'outbound|9080|v1|reviews'}},"
    "  {'name':'never','match':{'prefix':'/api/x'},'route':{'cluster':'unreachable'}}]},"
    " {'name':'split','domains':['split'],'routes':["
    "  {'name':'w','match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
    "     {'name':'a','weight':90},{'name':'zero','weight':0},{'name':'c','weight':10}]}}}]},"
    " {'name':'narrow','domains':['narrow:80'],'routes':["
    "  {'name':'only-get','match':{'path':'/x','headers':[{'name':':method','string_match':"
    "     {'exact':'GET'}}]},'route':{'cluster':'c'}},"
    "  {'name':'teapot','match':{'path':'/tea'},"
    "   'direct_response':{'status':418,'body':{'inline_string':'short and stout'}}},"
    "  {'name':'gone','match':{'path':'/gone'},'typed_per_filter_config':{'router':"
    "   {'directResponse':{'status':410,'body':{'string':'gone for good'}}}}},"
    "  {'name':'b64','match':{'path':'/b64'},'typed_per_filter_config':{'router':"
    "   {'directResponse':{'status':200,'body':{'bytes':'aGVsbG8='}}}}},"
    "  {'name':'b64e','match':{'path':'/b64e'},"
    "   'direct_response':{'status':503,'body':{'inline_bytes':'aGk'}}},"
    "  {'name':'empty','match':{'path':'/empty'},'direct_response':{'status':204}}]}"
    "]}";

static wf_status run_route(const fixture *f, wf_stream *s)
{
    return router_mod->route(f->t, NULL, s);
}

TEST(route_first_match_wins)
{
    fixture f;
    fx_build(&f, hook_rc);
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    wf_stream s;

    stream_init(&s, HDRS(":authority", "reviews:9080", ":path", "/api/x", ":method", "GET",
                         "end-user", "jason"));
    CHECK_INT(run_route(&f, &s), WF_CONTINUE);
    CHECK_INT(s.set_route_calls, 1);
    CHECK_STR(s.route_name, "default/reviews.0");
    CHECK_STR(s.cluster, "outbound|9080|v2|reviews");
    /* The node handed to set_route is the route's own node in the table. */
    json_t *routes0 =
        json_object_get(json_array_get(json_object_get(f.json, "virtual_hosts"), 0), "routes");
    CHECK(s.route == (const wf_value *)(void *)json_array_get(routes0, 0));

    /* Without the header the unnamed second route wins, named vhost/index. */
    stream_init(&s, HDRS(":authority", "Reviews", ":path", "/api/x", ":method", "GET"));
    CHECK_INT(run_route(&f, &s), WF_CONTINUE);
    CHECK_STR(s.route_name, "reviews/1");
    CHECK_STR(s.cluster, "outbound|9080|v3|reviews");
    CHECK(s.route == (const wf_value *)(void *)json_array_get(routes0, 1));

    stream_init(&s, HDRS(":authority", "reviews:9080", ":path", "/other", ":method", "GET"));
    CHECK_INT(run_route(&f, &s), WF_CONTINUE);
    CHECK_STR(s.route_name, "catch-all");
    CHECK_STR(s.cluster, "outbound|9080|v1|reviews");
    CHECK_INT(s.reply_status, 0);

    /* Routing needs no stream memory on the common path. */
    CHECK_INT(s.used, 0);

    /* direct_response answers locally. */
    stream_init(&s, HDRS(":authority", "narrow:80", ":path", "/tea", ":method", "GET"));
    CHECK_INT(run_route(&f, &s), WF_STOP);
    CHECK_INT(s.reply_status, 418);
    CHECK_STR(s.reply_body, "short and stout");
    CHECK_STR(s.reply_details, "direct_response");
    CHECK_INT(s.set_route_calls, 0);
    /* ... also in the translator's form, Istio's directResponse. */
    static const struct {
        const char *path;
        int status;
        const char *body;
    } direct[] = {{"/gone", 410, "gone for good"},
                  {"/b64", 200, "hello"},
                  {"/b64e", 503, "hi"},
                  {"/empty", 204, ""}};
    for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++) {
        stream_init(&s, HDRS(":authority", "narrow:80", ":path", direct[i].path, ":method", "GET"));
        CHECK_INT(run_route(&f, &s), WF_STOP);
        CHECK_INT(s.reply_status, direct[i].status);
        CHECK_STR(s.reply_body, direct[i].body);
    }
    fx_free(&f);
}

TEST(route_404)
{
    fixture f;
    fx_build(&f, hook_rc);
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    wf_stream s;

    stream_init(&s, HDRS(":authority", "foo.bar:80", ":path", "/x", ":method", "GET"));
    CHECK_INT(run_route(&f, &s), WF_STOP);
    CHECK_INT(s.reply_status, 404);
    CHECK_STR(s.reply_body, "no route for host \"foo.bar:80\" (NR)\n");
    CHECK_STR(s.reply_details, "NR");
    CHECK_INT(s.set_route_calls, 0);

    stream_init(&s, HDRS(":authority", "narrow:80", ":path", "/x", ":method", "POST"));
    CHECK_INT(run_route(&f, &s), WF_STOP);
    CHECK_INT(s.reply_status, 404);
    CHECK_STR(s.reply_body, "no route matched \"POST /x\" on host \"narrow:80\" (NR)\n");
    CHECK_STR(s.reply_details, "NR");
    CHECK_INT(s.set_route_calls, 0);

    /* No :authority at all. */
    stream_init(&s, HDRS(":path", "/x", ":method", "GET"));
    CHECK_INT(run_route(&f, &s), WF_STOP);
    CHECK_STR(s.reply_body, "no route for host \"\" (NR)\n");

    /* A long path is cut short in the body. */
    char longpath[1200];
    longpath[0] = '/';
    memset(longpath + 1, 'p', sizeof(longpath) - 2);
    longpath[sizeof(longpath) - 1] = '\0';
    stream_init(&s, HDRS(":authority", "narrow:80", ":path", longpath, ":method", "GET"));
    CHECK_INT(run_route(&f, &s), WF_STOP);
    CHECK_INT(s.reply_status, 404);
    CHECK(strlen(s.reply_body) < 700);
    CHECK(strstr(s.reply_body, "ppp...\" on host \"narrow:80\" (NR)\n") != NULL);
    fx_free(&f);

    /* No route table: every request is 404. */
    fx_build(&f, NULL);
    CHECK(f.t != NULL);
    if (f.t) {
        stream_init(&s, HDRS(":authority", "reviews:9080", ":path", "/", ":method", "GET"));
        CHECK_INT(run_route(&f, &s), WF_STOP);
        CHECK_INT(s.reply_status, 404);
        CHECK_STR(s.reply_body, "no route for host \"reviews:9080\" (NR)\n");
    }
    fx_free(&f);
}

/* ------------------------------------------------------------------------
 * Weighted clusters
 * ------------------------------------------------------------------------ */

TEST(weighted_boundaries)
{
    fixture f;
    fx_build(&f, hook_rc);
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    const rt_vhost *vh = rt_find_vhost(f.t, "split", 5);
    CHECK(vh && vh->nroutes == 1);
    if (!vh)
        return;
    const rt_route *r = &vh->routes[0];
    CHECK_INT(r->total, 100);
    CHECK_STR(rt_pick_weighted(r, 0), "a");
    CHECK_STR(rt_pick_weighted(r, 89), "a");
    CHECK_STR(rt_pick_weighted(r, 90), "c"); /* weight 0 is never picked */
    CHECK_STR(rt_pick_weighted(r, 99), "c");
    CHECK_STR(rt_pick_weighted(r, 100), "a");
    CHECK_STR(rt_pick_weighted(r, 189), "a");
    CHECK_STR(rt_pick_weighted(r, 190), "c");
    CHECK_STR(rt_pick_weighted(r, UINT64_MAX), "a"); /* 2^64-1 % 100 == 15 */

    /* Through the hook, with host->random answering a fixed sequence. */
    static const uint64_t seq[] = {89, 90, 199, 1000};
    static const char *const want[] = {"a", "c", "c", "a"};
    for (size_t i = 0; i < 4; i++) {
        wf_stream s;
        stream_init(&s, HDRS(":authority", "split", ":path", "/", ":method", "GET"));
        s.rand_seq = seq + i;
        s.nrand = 1;
        CHECK_INT(run_route(&f, &s), WF_CONTINUE);
        CHECK_STR(s.cluster, want[i]);
        CHECK_STR(s.route_name, "w");
        CHECK_INT(s.irand, 1); /* one draw per request */
    }
    fx_free(&f);

    /* total_weight given and equal to the sum is accepted. */
    fx_routes(&f, "{'match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
                  "{'name':'x','weight':'1'},{'name':'y','weight':3.0}],'total_weight':4}}}");
    CHECK(f.t != NULL);
    if (f.t) {
        CHECK_INT(route0(&f)->total, 4);
        CHECK_STR(rt_pick_weighted(route0(&f), 0), "x");
        CHECK_STR(rt_pick_weighted(route0(&f), 1), "y");
        CHECK_STR(rt_pick_weighted(route0(&f), 3), "y");
    }
    fx_free(&f);
}

TEST(weighted_distribution)
{
    fixture f;
    fx_routes(&f, "{'match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
                  "{'name':'a','weight':70},{'name':'b','weight':20},{'name':'c','weight':10}]}}}");
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    const int n = 100000;
    const double p[3] = {0.7, 0.2, 0.1};
    int count[3] = {0, 0, 0};
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < n; i++) {
        const char *c = rt_pick_weighted(route0(&f), xorshift64(&seed));
        count[c[0] - 'a']++;
    }
    for (int k = 0; k < 3; k++) {
        double mean = n * p[k], sd = sqrt(n * p[k] * (1 - p[k]));
        if (fabs(count[k] - mean) >= 5 * sd)
            fprintf(stderr, "cluster %c: %d draws, expected %.0f +- %.0f\n", 'a' + k, count[k],
                    mean, 5 * sd);
        CHECK(fabs(count[k] - mean) < 5 * sd);
    }
    fx_free(&f);
}

/* ------------------------------------------------------------------------
 * Config refusals
 * ------------------------------------------------------------------------ */

#define VH(routes) "{'virtual_hosts':[{'name':'v','domains':['v'],'routes':[" routes "]}]}"

TEST(config_refusals)
{
    CHECK(refused(VH("{'name':'default/reviews.0','match':{'prefix':'/'},'route':"
                     "{'weighted_clusters':{'clusters':[{'name':'a','weight':0}]}}}"),
                  "route \"default/reviews.0\": weighted_clusters total weight is 0"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'weighted_clusters':"
                     "{'clusters':[{'name':'a','weight':1},{'name':'b','weight':2}],"
                     "'total_weight':100}}}"),
                  "total_weight is 100 but the weights add up to 3"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'weighted_clusters':"
                     "{'clusters':[{'name':'a','weight':-1}]}}}"),
                  "\"weight\" must be a whole number"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'weighted_clusters':"
                     "{'clusters':[{'name':'a'}]}}}"),
                  "weighted_clusters.clusters[0] (\"a\"): needs a \"weight\""));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'weighted_clusters':"
                     "{'clusters':[]}}}"),
                  "non-empty \"clusters\" list"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'}}"), "route \"r\": has no route action"));
    CHECK(refused(VH("{'match':{'prefix':'/'},'route':{}}"),
                  "route \"v/0\": route action needs \"cluster\" or \"weighted_clusters\""));
    /* Envoy's own redirect form: nothing produces it; Istio's (in the
     * router's per-route config) is what the translator writes. */
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'redirect':{'path_redirect':'/x'}}"),
                  "route \"r\": Envoy's route-level \"redirect\" is not supported by the weft "
                  "router; give Istio's redirect in typed_per_filter_config.router.redirect"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'cluster':'c'},"
                     "'typed_per_filter_config':{'router':{'redirect':{'uri':'/x'}}}}"),
                  "route \"r\": give only one of \"route\", \"direct_response\", "
                  "typed_per_filter_config.router.directResponse or "
                  "typed_per_filter_config.router.redirect"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'cluster':'c'},"
                     "'direct_response':{'status':200}}"),
                  "give only one of"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'direct_response':{'status':99}}"),
                  "direct_response needs a \"status\" from 200 to 599"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'typed_per_filter_config':{'router':"
                     "{'directResponse':{'status':200,'body':{'bytes':'!!'}}}}}"),
                  "directResponse.body.bytes is not valid base64"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'cluster':'a',"
                     "'weighted_clusters':{'clusters':[{'name':'a','weight':1}]}}}"),
                  "both \"cluster\" and \"weighted_clusters\""));
    /* Regexes RE2 would not accept. */
    CHECK(refused(VH("{'name':'r','match':{'safe_regex':{'regex':'/a(?=b)'}},'route':"
                     "{'cluster':'c'}}"),
                  "route \"r\": match: regex \"/a(?=b)\" uses lookahead at offset 2"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','headers':[{'name':'x','string_match':"
                     "{'safe_regex':{'regex':'(?<!a)b'}}}]},'route':{'cluster':'c'}}"),
                  "match.headers[0] (\"x\"): regex \"(?<!a)b\" uses lookbehind"));
    CHECK(refused(VH("{'name':'r','match':{'safe_regex':{'regex':'/(a)\\\\1'}},'route':"
                     "{'cluster':'c'}}"),
                  "uses a backreference"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','query_parameters':[{'name':'q',"
                     "'string_match':{'safe_regex':{'regex':'(?P<x>a)(?P=x)'}}}]},'route':"
                     "{'cluster':'c'}}"),
                  "match.query_parameters[0]: regex"));
    CHECK(refused(VH("{'name':'r','match':{'safe_regex':{'regex':'/a('}},'route':{'cluster':'c'}}"),
                  "regex \"/a(\" does not compile at offset 3"));
    /* Matchers: exactly one path specifier; unknown fields refused. */
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','path':'/x'},'route':{'cluster':'c'}}"),
                  "needs exactly one of prefix, path, safe_regex"));
    CHECK(refused(VH("{'name':'r','match':{},'route':{'cluster':'c'}}"),
                  "needs exactly one of prefix, path, safe_regex"));
    CHECK(refused(VH("{'name':'r','route':{'cluster':'c'}}"), "route \"r\": has no \"match\""));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','grpc':{}},'route':{'cluster':'c'}}"),
                  "route \"r\": match: unknown or unsupported field \"grpc\""));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','headers':[{'name':'x',"
                     "'range_match':{'start':1,'end':2}}]},'route':{'cluster':'c'}}"),
                  "unsupported field \"range_match\""));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','headers':[{'name':'x',"
                     "'string_match':{'exact':'a','prefix':'b'}}]},'route':{'cluster':'c'}}"),
                  "string_match needs exactly one of"));
    CHECK(
        refused(VH("{'name':'r','match':{'prefix':'/','headers':[{'name':'x',"
                   "'string_match':{'exact':'a'},'present_match':true}]},'route':{'cluster':'c'}}"),
                "give only one of"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','headers':[{'string_match':"
                     "{'exact':'a'}}]},'route':{'cluster':'c'}}"),
                  "match.headers[0]: needs a header \"name\""));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/','case_sensitive':'no'},'route':"
                     "{'cluster':'c'}}"),
                  "\"case_sensitive\" must be true or false"));
    /* Virtual hosts and domains. */
    CHECK(refused("{'virtual_hosts':[{'name':'a','domains':['x:80'],'routes':[]},"
                  "{'name':'b','domains':['X:80'],'routes':[]}]}",
                  "virtual host \"b\": domain \"x:80\" is also listed by virtual host \"a\""));
    CHECK(refused("{'virtual_hosts':[{'name':'a','domains':['*'],'routes':[]},"
                  "{'name':'b','domains':['*'],'routes':[]}]}",
                  "domain \"*\" is also listed"));
    CHECK(refused("{'virtual_hosts':[{'name':'a','domains':['a.*.com'],'routes':[]}]}",
                  "domain \"a.*.com\": a wildcard '*' may only"));
    CHECK(refused("{'virtual_hosts':[{'name':'a','domains':[],'routes':[]}]}",
                  "virtual host \"a\": needs a non-empty \"domains\" list"));
    CHECK(refused("{'virtual_hosts':[{'name':'a','domains':['']}]}",
                  "domains[0] must be a non-empty string"));
    CHECK(refused("{'virtual_hosts':{}}", "virtual_hosts must be a list"));
    CHECK(refused("[]", "must be a RouteConfiguration object"));
}

/* ------------------------------------------------------------------------
 * Per-route features: typed_per_filter_config.router, in the shape
 * core/translate/translate.c writes it (Istio's names, no "route" for a
 * redirect, destinationHeaders for a lone destination, a weighted
 * cluster's headers in its own typed_per_filter_config.router).
 * ------------------------------------------------------------------------ */

/* Runs one request as the host does: stream_create, then the route hook. */
static wf_status route_req(const fixture *f, wf_stream *s, void **st, const char *const *headers)
{
    stream_init(s, headers);
    *st = router_mod->stream_create(f->t, s);
    return router_mod->route(f->t, *st, s);
}

#define RDR(name, prefix, redirect)                                                                \
    "{'name':'" name "','match':{'prefix':'" prefix "'},'typed_per_filter_config':{'router':"      \
    "{'redirect':" redirect "}}}"

static const char *const redirect_rc =
    "{'virtual_hosts':["
    " {'name':'reviews.default.svc.cluster.local:9080',"
    "  'domains':['reviews:9080','reviews','reviews:80'],'routes':["
    "  {'name':'uri','match':{'prefix':'/old'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'uri':'/new','redirectCode':301}}}},"
    "  {'name':'uriq','match':{'prefix':'/q'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'uri':'/new?b=2','redirectCode':302}}}},"
    "  {'name':'auth','match':{'prefix':'/auth'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'authority':'new.example.com','redirectCode':301}}}},"
    "  {'name':'https','match':{'prefix':'/secure'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'scheme':'https','redirectCode':308}}}},"
    "  {'name':'port','match':{'prefix':'/port'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'authority':'x.example.com:99','port':8443,'scheme':'HTTPS'"
    "    ,'redirectCode':307}}}},"
    "  {'name':'derive','match':{'prefix':'/derive'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'uri':'/d','derivePort':'FROM_REQUEST_PORT','redirectCode':301}}}},"
    "  {'name':'proto','match':{'prefix':'/proto'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'derivePort':'FROM_PROTOCOL_DEFAULT','scheme':'https','redirectCode':301}}}},"
    "  {'name':'nocode','match':{'prefix':'/nocode'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'uri':'rel'}}}},"
    "  {'name':'hdrs','match':{'prefix':'/hdrs'},'typed_per_filter_config':{'router':{"
    "   'redirect':{'uri':'/h','redirectCode':301},'headers':{"
    "    'response':{'set':{'Cache-Control':'no-store'},'add':{'x-why':'moved'}},"
    "    'request':{'set':{'x-ignored':'1'}}}}}}"
    " ]},"
    " {'name':'no-port-in-name','domains':['plain','plain:8080'],'routes':["
    "  {'name':'derive2','match':{'prefix':'/'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'derivePort':'FROM_REQUEST_PORT','redirectCode':301}}}}]},"
    " {'name':'v6','domains':['[::1]:8080'],'routes':["
    "  {'name':'v6','match':{'prefix':'/'},'typed_per_filter_config':{'router':"
    "   {'redirect':{'port':9000,'redirectCode':301}}}}]}"
    "]}";

/* The location of a redirect for authority and path (":scheme" http). */
static const char *redirect_for(const fixture *f, const char *authority, const char *path,
                                int *status)
{
    static wf_stream s;
    void *st;
    wf_status rc = route_req(
        f, &s, &st,
        HDRS(":method", "GET", ":path", path, ":authority", authority, ":scheme", "http"));
    *status = s.reply_status;
    if (rc != WF_STOP || s.set_route_calls != 0 || strcmp(s.reply_details, "redirect") != 0 ||
        s.reply_body[0] != '\0')
        return "(not a redirect)";
    return hdr(&s, WF_RESPONSE, "location");
}

TEST(redirect)
{
    fixture f;
    fx_build(&f, redirect_rc);
    CHECK(f.t != NULL);
    if (!f.t) {
        fprintf(stderr, "%s\n", f.err);
        return;
    }
    int st = 0;
    /* uri replaces the whole path; the request's query stays unless the
     * uri has its own. */
    CHECK_STR(redirect_for(&f, "reviews:9080", "/old/page?a=1", &st),
              "http://reviews:9080/new?a=1");
    CHECK_INT(st, 301);
    CHECK_STR(redirect_for(&f, "reviews:9080", "/q/x?a=1", &st), "http://reviews:9080/new?b=2");
    CHECK_INT(st, 302);
    /* authority replaces host and port; the path stays. */
    CHECK_STR(redirect_for(&f, "reviews:9080", "/auth/x?y", &st),
              "http://new.example.com/auth/x?y");
    /* A scheme change drops the old scheme's default port only. */
    CHECK_STR(redirect_for(&f, "reviews:80", "/secure", &st), "https://reviews/secure");
    CHECK_INT(st, 308);
    CHECK_STR(redirect_for(&f, "reviews:9080", "/secure", &st), "https://reviews:9080/secure");
    /* port swaps the port, also of a given authority; schemes are lower-cased. */
    CHECK_STR(redirect_for(&f, "reviews:9080", "/port/a", &st),
              "https://x.example.com:8443/port/a");
    CHECK_INT(st, 307);
    /* FROM_REQUEST_PORT: the service port, from the virtual host's name,
     * even when the client left the port out. */
    CHECK_STR(redirect_for(&f, "reviews", "/derive?z", &st), "http://reviews:9080/d?z");
    CHECK_STR(redirect_for(&f, "reviews:80", "/derive", &st), "http://reviews:9080/d");
    /* ... or from the request when the name has none. */
    CHECK_STR(redirect_for(&f, "plain:8080", "/p", &st), "http://plain:8080/p");
    CHECK_STR(redirect_for(&f, "plain", "/p", &st), "http://plain/p");
    /* FROM_PROTOCOL_DEFAULT: no port of its own. */
    CHECK_STR(redirect_for(&f, "reviews:80", "/proto", &st), "https://reviews/proto");
    CHECK_STR(redirect_for(&f, "reviews:9080", "/proto", &st), "https://reviews:9080/proto");
    /* No redirectCode: 301; a relative uri gets its slash. */
    CHECK_STR(redirect_for(&f, "reviews", "/nocode", &st), "http://reviews/rel");
    CHECK_INT(st, 301);
    /* IPv6 literals keep their brackets. */
    CHECK_STR(redirect_for(&f, "[::1]:8080", "/x", &st), "http://[::1]:9000/x");

    /* The request's scheme is kept; route response headers go out with
     * the redirect, request ones are moot. */
    wf_stream s;
    void *sp;
    CHECK_INT(route_req(&f, &s, &sp,
                        HDRS(":method", "GET", ":path", "/hdrs", ":authority", "reviews:9080",
                             ":scheme", "https")),
              WF_STOP);
    CHECK_INT(s.reply_status, 301);
    CHECK_STR(hdr_dump(&s, WF_RESPONSE),
              "location: https://reviews:9080/h\ncache-control: no-store\nx-why: moved\n");
    CHECK_STR(hdr(&s, WF_REQUEST, "x-ignored"), "(absent)");
    fx_free(&f);

    /* Accepted shapes; malformed values of what the router implements are
     * refused with the place named. */
    fx_routes(&f, RDR("r", "/", "{'uri':'/x','redirectCode':301,'futureField':1}"));
    CHECK(f.t != NULL);
    fx_free(&f);
    fx_routes(&f, RDR("r", "/", "{'derivePort':'SOMETHING_NEW','redirectCode':301}"));
    CHECK(f.t != NULL);
    fx_free(&f);
    CHECK(refused(VH(RDR("r", "/", "{'uri':'/x','redirectCode':200}")),
                  "route \"r\": typed_per_filter_config.router.redirect: redirectCode 200 is not "
                  "a 3xx status"));
    CHECK(refused(VH(RDR("r", "/", "{'uri':'/x','redirectCode':400}")),
                  "\"redirectCode\" must be a whole number from 0 to 399"));
    CHECK(refused(VH(RDR("r", "/", "{'scheme':'ht tp'}")),
                  "redirect: scheme \"ht tp\" is not a URL scheme"));
    CHECK(refused(VH(RDR("r", "/", "{'authority':'a/b'}")),
                  "redirect: authority \"a/b\" is not a host[:port]"));
    CHECK(refused(VH(RDR("r", "/", "{'uri':'/a\\r\\nx: y'}")),
                  "redirect: uri contains a space, line break or NUL byte"));
    CHECK(refused(VH(RDR("r", "/", "{'port':70000}")), "\"port\" must be a whole number"));
    CHECK(refused(VH(RDR("r", "/", "'/x'")),
                  "route \"r\": typed_per_filter_config.router.redirect: must be an object"));
}

static const char *const rewrite_rc =
    "{'virtual_hosts':[{'name':'rw','domains':['rw'],'routes':["
    " {'name':'prefix','match':{'prefix':'/api/v1'},'route':{'cluster':'c1'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uri':'/v2'}}}},"
    " {'name':'ci','match':{'prefix':'/CI/','case_sensitive':false},'route':{'cluster':'c2'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uri':'/lower/'}}}},"
    " {'name':'exact','match':{'path':'/login'},'route':{'cluster':'c3'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uri':'/signin',"
    "   'authority':'auth.internal:8443'}}}},"
    " {'name':'regex-uri','match':{'safe_regex':{'regex':'/item/[0-9]+'}},'route':{'cluster':'c4'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uri':'/item'}}}},"
    " {'name':'groups','match':{'prefix':'/service/'},'route':{'cluster':'c5'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uriRegexRewrite':"
    "   {'match':'^/service/([^/]+)(/.*)$','rewrite':'\\\\2/instance/\\\\1'}}}}},"
    " {'name':'global','match':{'prefix':'/g/'},'route':{'cluster':'c6'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uriRegexRewrite':"
    "   {'match':'one','rewrite':'two$\\\\\\\\'}}}}},"
    " {'name':'optional','match':{'prefix':'/opt'},'route':{'cluster':'c7'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uriRegexRewrite':"
    "   {'match':'^/opt(/x)?(.*)$','rewrite':'/o[\\\\1]\\\\2'}}}}},"
    " {'name':'whole','match':{'prefix':'/w/'},'route':{'cluster':'c11'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uriRegexRewrite':"
    "   {'match':'x+','rewrite':'[\\\\0]'}}}}},"
    " {'name':'empty-uri','match':{'prefix':'/keep'},'route':{'cluster':'c8'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uri':''}}}},"
    " {'name':'grow','match':{'prefix':'/grow/'},'route':{'cluster':'c10'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'uriRegexRewrite':"
    "   {'match':'(a{4})',"
    "    'rewrite':'[\\\\1-\\\\1-\\\\1-\\\\1-\\\\1-\\\\1-\\\\1-\\\\1-\\\\1-\\\\1-\\\\1-a]'}}}}},"
    " {'name':'auth-only','match':{'prefix':'/'},'route':{'cluster':'c9'},"
    "  'typed_per_filter_config':{'router':{'rewrite':{'authority':'other.svc'}}}}"
    "]}]}";

/* Routes path on host "rw"; fills the cluster and the rewritten
 * :path and :authority. */
static void rewrite_of(const fixture *f, const char *path, char *cluster, char *npath, char *nauth)
{
    wf_stream s;
    void *st;
    wf_status rc = route_req(f, &s, &st, HDRS(":method", "GET", ":path", path, ":authority", "rw"));
    snprintf(cluster, 512, "%.511s", rc == WF_CONTINUE ? s.cluster : "(stopped)");
    snprintf(npath, 512, "%.511s", hdr(&s, WF_REQUEST, ":path"));
    snprintf(nauth, 512, "%.511s", hdr(&s, WF_REQUEST, ":authority"));
}

TEST(rewrite)
{
    fixture f;
    fx_build(&f, rewrite_rc);
    CHECK(f.t != NULL);
    if (!f.t) {
        fprintf(stderr, "%s\n", f.err);
        return;
    }
    static const struct {
        const char *path, *cluster, *npath, *nauth;
    } cases[] = {
        /* uri replaces the matched prefix; the rest and the query stay. */
        {"/api/v1/users?x=1", "c1", "/v2/users?x=1", "rw"},
        {"/api/v1", "c1", "/v2", "rw"},
        {"/api/v1?q=/api/v1", "c1", "/v2?q=/api/v1", "rw"},
        {"/ci/Thing", "c2", "/lower/Thing", "rw"},
        /* ... the whole path for exact and regex matches; routing is not
         * redone for the new authority or path. */
        {"/login?next=/home", "c3", "/signin?next=/home", "auth.internal:8443"},
        {"/item/42?q", "c4", "/item?q", "rw"},
        /* uriRegexRewrite: RE2's \N groups, every match, query untouched. */
        {"/service/foo/v1/api?k=v", "c5", "/v1/api/instance/foo?k=v", "rw"},
        {"/service/nomatch", "c5", "/service/nomatch", "rw"},
        {"/g/one/x/one?one=1", "c6", "/g/two$\\/x/two$\\?one=1", "rw"},
        {"/opt/rest", "c7", "/o[]/rest", "rw"},
        {"/opt/x/rest", "c7", "/o[/x]/rest", "rw"},
        {"/keep/it", "c8", "/keep/it", "rw"},
        {"/w/axxbx?x", "c11", "/w/a[xx]b[x]?x", "rw"},
        {"/other?a", "c9", "/other?a", "other.svc"},
        /* Output far longer than the input: the buffer grows once. */
        {"/grow/aaaaaaaaaaaaaaaaaaaa?q=a", "c10",
         "/grow/"
         "[aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-a]"
         "[aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-a]"
         "[aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-a]"
         "[aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-a]"
         "[aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaa-a]"
         "?q=a",
         "rw"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char cluster[512], npath[512], nauth[512];
        rewrite_of(&f, cases[i].path, cluster, npath, nauth);
        CHECK_STR(cluster, cases[i].cluster);
        CHECK_STR(npath, cases[i].npath);
        CHECK_STR(nauth, cases[i].nauth);
    }
    /* A rewrite allocates only from the stream. */
    fx_free(&f);

#define RW(rewrite)                                                                                \
    VH("{'name':'r','match':{'prefix':'/'},'route':{'cluster':'c'},'typed_per_filter_config':"     \
       "{'router':{'rewrite':" rewrite "}}}")
    CHECK(refused(RW("{'uriRegexRewrite':{'match':'/(a)','rewrite':'\\\\2'}}"),
                  "route \"r\": typed_per_filter_config.router.rewrite.uriRegexRewrite: rewrite "
                  "refers to group \\2 but the regex has only 1 capture group"));
    CHECK(refused(RW("{'uriRegexRewrite':{'match':'/a','rewrite':'\\\\x'}}"),
                  "rewrite has \"\\x\"; only \\0 to \\9"));
    CHECK(refused(RW("{'uriRegexRewrite':{'match':'/a','rewrite':'/b\\\\'}}"),
                  "rewrite ends with a lone backslash"));
    CHECK(refused(RW("{'uriRegexRewrite':{'match':'/a(?=b)','rewrite':'/b'}}"),
                  "rewrite.uriRegexRewrite: regex \"/a(?=b)\" uses lookahead"));
    CHECK(refused(RW("{'uriRegexRewrite':{'match':'/a'}}"),
                  "uriRegexRewrite: needs \"match\" (a regex) and \"rewrite\" strings"));
    CHECK(refused(RW("{'uri':'/x','uriRegexRewrite':{'match':'/a','rewrite':'/b'}}"),
                  "give uri or uriRegexRewrite, not both"));
    CHECK(refused(RW("{'authority':'a b'}"), "authority \"a b\" is not a host[:port]"));
    CHECK(refused(RW("[]"), "typed_per_filter_config.router.rewrite: must be an object"));
    /* Unknown rewrite fields are ignored. */
    fx_build(&f, RW("{'uri':'/x','uriTemplate':'/y'}"));
    CHECK(f.t != NULL);
    fx_free(&f);
#undef RW
}

static const char *const headers_rc =
    "{'virtual_hosts':[{'name':'h','domains':['h'],'routes':["
    " {'name':'route-level','match':{'prefix':'/r'},'route':{'cluster':'c'},"
    "  'typed_per_filter_config':{'router':{'headers':{"
    "   'request':{'set':{'X-Set':'new'},'add':{'x-add':'a'},'remove':['X-Remove']},"
    "   'response':{'set':{'server':'weft'},'add':{'x-resp':'1'},'remove':['x-internal']}}}}},"
    " {'name':'lone','match':{'prefix':'/lone'},'route':{'cluster':'c'},"
    "  'typed_per_filter_config':{'router':{"
    "   'headers':{'request':{'set':{'x-level':'route','x-route':'1'}}},"
    "   'destinationHeaders':{'request':{'set':{'x-level':'destination'},'remove':['x-gone']},"
    "    'response':{'add':{'x-dest':'d'}}}}}},"
    " {'name':'split','match':{'prefix':'/split'},'route':{'weighted_clusters':{'clusters':["
    "   {'name':'a','weight':50,'typed_per_filter_config':{'router':{'headers':{"
    "    'request':{'set':{'x-level':'cluster','x-cluster':'a'}},"
    "    'response':{'set':{'x-served-by':'a','x-a':'1'}}}}}},"
    "   {'name':'b','weight':50}],'total_weight':100}},"
    "  'typed_per_filter_config':{'router':{'headers':{'request':{'set':{'x-level':'route'}},"
    "   'response':{'set':{'x-served-by':'route'}}}}}},"
    " {'name':'direct','match':{'prefix':'/direct'},'typed_per_filter_config':{'router':{"
    "   'directResponse':{'status':200,'body':{'string':'{}'}},"
    "   'headers':{'response':{'set':{'content-type':'application/json'}}}}}},"
    " {'name':'plain','match':{'prefix':'/'},'route':{'cluster':'p'}}"
    "]}]}";

/* What the host does when the upstream's response head arrives. */
static void upstream_responds(const fixture *f, wf_stream *s, void *st)
{
    fake_header_add(s, WF_RESPONSE, RT_LIT(":status"), RT_LIT("200"));
    fake_header_add(s, WF_RESPONSE, RT_LIT("server"), RT_LIT("app"));
    fake_header_add(s, WF_RESPONSE, RT_LIT("x-internal"), RT_LIT("secret"));
    router_mod->response_headers(f->t, st, s, 0);
}

TEST(header_operations)
{
    fixture f;
    fx_build(&f, headers_rc);
    CHECK(f.t != NULL);
    if (!f.t) {
        fprintf(stderr, "%s\n", f.err);
        return;
    }
    wf_stream s;
    void *st;

    /* Route level: request operations in the route hook (removes first,
     * names lower-cased), response operations when the response comes. */
    CHECK_INT(route_req(&f, &s, &st,
                        HDRS(":method", "GET", ":path", "/r", ":authority", "h", "x-set", "old",
                             "x-add", "b", "x-remove", "1", "X-REMOVE", "2")),
              WF_CONTINUE);
    CHECK(st != NULL);
    CHECK_STR(s.cluster, "c");
    CHECK_STR(hdr_dump(&s, WF_REQUEST),
              ":method: GET\n:path: /r\n:authority: h\nx-add: b\nx-set: new\nx-add: a\n");
    CHECK_INT(s.nresp, 0);
    upstream_responds(&f, &s, st);
    CHECK_STR(hdr_dump(&s, WF_RESPONSE), ":status: 200\nserver: weft\nx-resp: 1\n");
    /* Once only, even if the hook ran again. */
    router_mod->response_headers(f.t, st, &s, 0);
    CHECK_STR(hdr(&s, WF_RESPONSE, "x-resp"), "1");

    /* A lone destination's headers come after the route's, in one list. */
    CHECK_INT(route_req(&f, &s, &st,
                        HDRS(":path", "/lone", ":authority", "h", "x-gone", "1", "x-level", "0")),
              WF_CONTINUE);
    CHECK_STR(hdr(&s, WF_REQUEST, "x-level"), "destination");
    CHECK_STR(hdr(&s, WF_REQUEST, "x-route"), "1");
    CHECK_STR(hdr(&s, WF_REQUEST, "x-gone"), "(absent)");
    upstream_responds(&f, &s, st);
    CHECK_STR(hdr(&s, WF_RESPONSE, "x-dest"), "d");
    CHECK_STR(hdr(&s, WF_RESPONSE, "x-internal"), "secret");

    /* Weighted: the chosen cluster's headers, then the route's (the
     * route level wins a tie, as in Envoy). */
    static const uint64_t pick_a = 7, pick_b = 57;
    stream_init(&s, HDRS(":path", "/split", ":authority", "h"));
    s.rand_seq = &pick_a;
    s.nrand = 1;
    st = router_mod->stream_create(f.t, &s);
    CHECK_INT(router_mod->route(f.t, st, &s), WF_CONTINUE);
    CHECK_STR(s.cluster, "a");
    CHECK_STR(hdr(&s, WF_REQUEST, "x-level"), "route");
    CHECK_STR(hdr(&s, WF_REQUEST, "x-cluster"), "a");
    upstream_responds(&f, &s, st);
    CHECK_STR(hdr(&s, WF_RESPONSE, "x-served-by"), "route");
    CHECK_STR(hdr(&s, WF_RESPONSE, "x-a"), "1");

    stream_init(&s, HDRS(":path", "/split", ":authority", "h"));
    s.rand_seq = &pick_b;
    s.nrand = 1;
    st = router_mod->stream_create(f.t, &s);
    CHECK_INT(router_mod->route(f.t, st, &s), WF_CONTINUE);
    CHECK_STR(s.cluster, "b");
    CHECK_STR(hdr(&s, WF_REQUEST, "x-level"), "route");
    CHECK_STR(hdr(&s, WF_REQUEST, "x-cluster"), "(absent)");
    upstream_responds(&f, &s, st);
    CHECK_STR(hdr(&s, WF_RESPONSE, "x-served-by"), "route");
    CHECK_STR(hdr(&s, WF_RESPONSE, "x-a"), "(absent)");

    /* A direct response carries the route's response headers. */
    CHECK_INT(route_req(&f, &s, &st, HDRS(":path", "/direct", ":authority", "h")), WF_STOP);
    CHECK_INT(s.reply_status, 200);
    CHECK_STR(s.reply_body, "{}");
    CHECK_STR(hdr_dump(&s, WF_RESPONSE), "content-type: application/json\n");

    /* A route without operations changes nothing and needs no memory
     * beyond the stream state. */
    CHECK_INT(route_req(&f, &s, &st, HDRS(":path", "/x", ":authority", "h", "x-set", "old")),
              WF_CONTINUE);
    size_t used = s.used;
    upstream_responds(&f, &s, st);
    CHECK_STR(hdr(&s, WF_REQUEST, "x-set"), "old");
    CHECK_STR(hdr(&s, WF_RESPONSE, "server"), "app");
    CHECK_INT(s.used, used);

    /* Out of stream memory while applying: a 500, not a half-changed request. */
    stream_init(&s, HDRS(":path", "/r", ":authority", "h"));
    st = router_mod->stream_create(f.t, &s);
    s.hdr_oom = 1;
    CHECK_INT(router_mod->route(f.t, st, &s), WF_STOP);
    CHECK_INT(s.reply_status, 500);
    CHECK_STR(s.reply_details, "router_out_of_memory");
    fx_free(&f);

    /* Tables without response operations keep no per-stream state. */
    fx_build(&f, hook_rc);
    stream_init(&s, NULL);
    CHECK(f.t && router_mod->stream_create(f.t, &s) == NULL);
    CHECK_INT(s.used, 0);
    fx_free(&f);

#define HO(headers)                                                                                \
    VH("{'name':'r','match':{'prefix':'/'},'route':{'cluster':'c'},'typed_per_filter_config':"     \
       "{'router':{'headers':" headers "}}}")
    CHECK(refused(HO("{'request':{'set':{':path':'/x'}}}"),
                  "route \"r\": typed_per_filter_config.router.headers.request.set: \":path\": "
                  "pseudo-headers cannot be changed by header operations"));
    CHECK(refused(HO("{'request':{'remove':[':authority']}}"), "pseudo-headers cannot be changed"));
    CHECK(refused(HO("{'request':{'set':{'Host':'x'}}}"),
                  "headers.request.set: \"host\" cannot be changed by header operations"));
    CHECK(refused(HO("{'response':{'add':{'bad name':'x'}}}"),
                  "headers.response.add: \"bad name\" is not a valid HTTP header name"));
    CHECK(refused(HO("{'response':{'set':{'x-a':'1\\r\\nx-b: 2'}}}"),
                  "headers.response.set: the value of \"x-a\" contains a line break or NUL byte"));
    CHECK(refused(HO("{'request':{'set':{'x-a':1}}}"),
                  "headers.request.set: the value of \"x-a\" must be a string"));
    CHECK(refused(HO("{'request':{'remove':'x-a'}}"),
                  "headers.request.remove: must be a list of header names"));
    CHECK(refused(HO("[]"), "headers: must be an object with request and response"));
    CHECK(refused(VH("{'name':'r','match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
                     "{'name':'a','weight':1,'typed_per_filter_config':{'router':{'headers':"
                     "{'request':{'set':{':method':'PUT'}}}}}}]}}}"),
                  "route \"r\": weighted_clusters.clusters[0] (\"a\"): "
                  "typed_per_filter_config.router.headers.request.set: \":method\": "
                  "pseudo-headers cannot be changed"));
    /* Host may be set on a response; unknown operation kinds are ignored. */
    fx_build(&f, HO("{'response':{'set':{'host':'x'},'append':{'y':'z'}},'other':{}}"));
    CHECK(f.t != NULL);
    fx_free(&f);
#undef HO
}

TEST(timeout)
{
    CHECK_INT(rt_parse_duration_ms("1.5s", 4), 1500);
    CHECK_INT(rt_parse_duration_ms("10s", 3), 10000);
    CHECK_INT(rt_parse_duration_ms("0s", 2), 0);
    CHECK_INT(rt_parse_duration_ms("0.001s", 6), 1);
    CHECK_INT(rt_parse_duration_ms("0.0019s", 7), 1);
    CHECK_INT(rt_parse_duration_ms("2.000000001s", 12), 2000);
    CHECK_INT(rt_parse_duration_ms("2.0000000001s", 13), -1);
    CHECK_INT(rt_parse_duration_ms("1.s", 3), -1);
    CHECK_INT(rt_parse_duration_ms(".5s", 3), -1);
    CHECK_INT(rt_parse_duration_ms("5", 1), -1);
    CHECK_INT(rt_parse_duration_ms("5ms", 3), -1);
    CHECK_INT(rt_parse_duration_ms("-1s", 3), -1);
    CHECK_INT(rt_parse_duration_ms("315576000001s", 13), -1);

    fixture f;
    fx_build(&f, VH("{'name':'t','match':{'prefix':'/t'},'route':{'cluster':'c'},"
                    "'typed_per_filter_config':{'router':{'timeout':'2.25s'}}},"
                    "{'name':'z','match':{'prefix':'/z'},'route':{'cluster':'c'},"
                    "'typed_per_filter_config':{'router':{'timeout':'0s'}}},"
                    "{'name':'bad','match':{'prefix':'/bad'},'route':{'cluster':'c'},"
                    "'typed_per_filter_config':{'router':{'timeout':'soon'}}},"
                    "{'name':'none','match':{'prefix':'/'},'route':{'cluster':'c'}}"));
    CHECK(f.t != NULL); /* a malformed timeout is ignored, not refused */
    if (!f.t)
        return;
    wf_stream s;
    void *st;
    CHECK_INT(route_req(&f, &s, &st, HDRS(":path", "/t", ":authority", "v")), WF_CONTINUE);
    CHECK_STR(s.state_key, "router.timeout_ms");
    CHECK_STR(s.state_value, "2250");
    CHECK_INT(s.state_sets, 1);
    CHECK_INT(route_req(&f, &s, &st, HDRS(":path", "/z", ":authority", "v")), WF_CONTINUE);
    CHECK_STR(s.state_value, "0");
    CHECK_INT(route_req(&f, &s, &st, HDRS(":path", "/bad", ":authority", "v")), WF_CONTINUE);
    CHECK_INT(s.state_sets, 0);
    CHECK_INT(route_req(&f, &s, &st, HDRS(":path", "/", ":authority", "v")), WF_CONTINUE);
    CHECK_INT(s.state_sets, 0);
    fx_free(&f);
}

/* Everything the translator may write that the router does not implement
 * is accepted, so the proxy starts; the route still routes. */
TEST(unimplemented_accepted)
{
    fixture f;
    fx_build(&f, VH("{'name':'all','match':{'prefix':'/'},"
                    "'route':{'cluster':'outbound|80||a.ns.svc.cluster.local'},"
                    "'typed_per_filter_config':{"
                    " 'fault':{'abort':{'httpStatus':503,'percentage':{'value':1}}},"
                    " 'retry':{'attempts':3,'perTryTimeout':'2s','retryOn':'5xx'},"
                    " 'cors':{'allowOrigins':[{'exact':'https://a'}],'allowMethods':['GET']},"
                    " 'router':{'timeout':'3s','rewrite':{'uri':'/v2'},"
                    "  'mirror':{'host':'m.ns.svc.cluster.local','subset':'v1',"
                    "   'port':{'number':80},'cluster':'outbound|80|v1|m.ns.svc.cluster.local'},"
                    "  'mirrorPercentage':{'value':10.5},"
                    "  'mirrors':[{'destination':{'host':'m','cluster':'outbound|80||m'},"
                    "   'percentage':{'value':5}}],"
                    "  'corsPolicy':{'allowOrigins':[]},'retries':{'attempts':2},"
                    "  'somethingNew':true}}}"));
    CHECK(f.t != NULL);
    if (!f.t) {
        fprintf(stderr, "%s\n", f.err);
        return;
    }
    wf_stream s;
    void *st;
    CHECK_INT(route_req(&f, &s, &st, HDRS(":path", "/x", ":authority", "v")), WF_CONTINUE);
    CHECK_STR(s.cluster, "outbound|80||a.ns.svc.cluster.local");
    /* Prefix "/" replaced by "/v2": "/x" becomes "/v2x", as in Envoy and Istio. */
    CHECK_STR(hdr(&s, WF_REQUEST, ":path"), "/v2x");
    CHECK_STR(s.state_value, "3000");
    fx_free(&f);
}

/* Istio's withoutHeaders, as the translator writes it: invert_match on a
 * string matcher, no treat_missing_header_as_empty. */
TEST(without_headers)
{
    fixture f;
    fx_build(&f, VH("{'name':'not-canary','match':{'prefix':'/','headers':["
                    "{'name':'x-canary','string_match':{'exact':'yes'},'invert_match':true},"
                    "{'name':'x-debug','present_match':true,'invert_match':true}]},"
                    "'route':{'cluster':'stable'}},"
                    "{'name':'rest','match':{'prefix':'/'},'route':{'cluster':'canary'}}"));
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    wf_stream s;
    void *st;
    route_req(&f, &s, &st, HDRS(":path", "/", ":authority", "v"));
    CHECK_STR(s.cluster, "stable"); /* absent counts as "not yes" */
    route_req(&f, &s, &st, HDRS(":path", "/", ":authority", "v", "x-canary", "no"));
    CHECK_STR(s.cluster, "stable");
    route_req(&f, &s, &st, HDRS(":path", "/", ":authority", "v", "x-canary", "yes"));
    CHECK_STR(s.cluster, "canary");
    route_req(&f, &s, &st, HDRS(":path", "/", ":authority", "v", "x-debug", ""));
    CHECK_STR(s.cluster, "canary");
    fx_free(&f);
}

/* ------------------------------------------------------------------------
 * Threads: each worker has its own match data
 * ------------------------------------------------------------------------ */

typedef struct worker_arg {
    const fixture *f;
    int wrong;
} worker_arg;

static void *worker_main(void *p)
{
    worker_arg *w = p;
    for (int i = 0; i < 20000; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/item/%d%s", i, (i % 3) ? "" : "x");
        wf_stream s;
        stream_init(&s, HDRS(":authority", "v", ":path", path, ":method", "GET"));
        router_mod->route(w->f->t, NULL, &s);
        const char *want = (i % 3) ? "digits" : "other";
        w->wrong += strcmp(s.cluster, want) != 0;
    }
    return NULL;
}

TEST(concurrent_regex_matching)
{
    fixture f;
    fx_build(&f, VH("{'name':'d','match':{'safe_regex':{'regex':'/item/[0-9]+'}},"
                    "'route':{'cluster':'digits'}},"
                    "{'name':'o','match':{'prefix':'/'},'route':{'cluster':'other'}}"));
    CHECK(f.t != NULL);
    if (!f.t)
        return;
    pthread_t th[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){&f, 0};
        CHECK(pthread_create(&th[i], NULL, worker_main, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(args[i].wrong, 0);
    }
    fx_free(&f);
}

/* ------------------------------------------------------------------------
 * The example plugin
 * ------------------------------------------------------------------------ */

static void *example_create(const wf_module *m, const char *config_json, char *err, size_t errlen,
                            json_t **keep)
{
    *keep = json_sq(config_json);
    wf_config_args args = {.size = sizeof(args),
                           .name = "example",
                           .config = (const wf_value *)(void *)*keep,
                           .direction = "outbound"};
    return m->config_create(&args, err, errlen);
}

TEST(example_plugin)
{
    char err[256] = "";
    const wf_module *m =
        example_wf_module_entry(WF_ABI_MAJOR, WF_ABI_MINOR, &fake_host, err, sizeof(err));
    CHECK(m != NULL);
    if (!m)
        return;
    CHECK_STR(m->name, "example");
    CHECK(m->response_headers != NULL);
    CHECK(m->route == NULL && m->request_headers == NULL);

    json_t *keep;
    CHECK(example_create(m, "{}", err, sizeof(err), &keep) == NULL);
    CHECK_STR(err, "pluginConfig.header is required (the response header to add)");
    json_decref(keep);
    CHECK(example_create(m, "{'value':'v'}", err, sizeof(err), &keep) == NULL);
    CHECK_STR(err, "pluginConfig.header is required (the response header to add)");
    json_decref(keep);
    CHECK(example_create(m, "{'header':7}", err, sizeof(err), &keep) == NULL);
    CHECK_STR(err, "pluginConfig.header is required (the response header to add)");
    json_decref(keep);
    CHECK(example_create(m, "{'header':'bad header'}", err, sizeof(err), &keep) == NULL);
    CHECK(strstr(err, "\"bad header\" is not a valid HTTP header name") != NULL);
    json_decref(keep);
    CHECK(example_create(m, "{'header':':status'}", err, sizeof(err), &keep) == NULL);
    json_decref(keep);
    CHECK(example_create(m, "{'header':'x-a','value':[5]}", err, sizeof(err), &keep) == NULL);
    CHECK_STR(err, "pluginConfig.value must be text, not a list or a map");
    json_decref(keep);

    void *cfg =
        example_create(m, "{'header':'x-example','value':'hello'}", err, sizeof(err), &keep);
    CHECK(cfg != NULL);
    if (cfg) {
        wf_stream s;
        stream_init(&s, NULL);
        CHECK_INT(m->response_headers(cfg, NULL, &s, 1), WF_CONTINUE);
        CHECK_INT(s.added, 1);
        CHECK_STR(s.added_name, "x-example");
        CHECK_STR(s.added_value, "hello");
        m->config_destroy(cfg);
    }
    json_decref(keep);

    /* YAML numbers and booleans are taken as written. */
    static const struct {
        const char *cfg, *want;
    } typed[] = {{"{'header':'x-n','value':5}", "5"},
                 {"{'header':'x-n','value':1.5}", "1.5"},
                 {"{'header':'x-n','value':true}", "true"}};
    for (size_t i = 0; i < sizeof(typed) / sizeof(typed[0]); i++) {
        cfg = example_create(m, typed[i].cfg, err, sizeof(err), &keep);
        CHECK(cfg != NULL);
        if (cfg) {
            wf_stream s;
            stream_init(&s, NULL);
            m->response_headers(cfg, NULL, &s, 0);
            CHECK_STR(s.added_value, typed[i].want);
            m->config_destroy(cfg);
        }
        json_decref(keep);
    }

    /* value is optional. */
    cfg = example_create(m, "{'header':'x-flag'}", err, sizeof(err), &keep);
    CHECK(cfg != NULL);
    if (cfg) {
        wf_stream s;
        stream_init(&s, NULL);
        m->response_headers(cfg, NULL, &s, 0);
        CHECK_STR(s.added_name, "x-flag");
        CHECK_STR(s.added_value, "");
        m->config_destroy(cfg);
    }
    json_decref(keep);

    CHECK(example_wf_module_entry(WF_ABI_MAJOR + 1, 0, &fake_host, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "plugin example") && strstr(err, "ABI 1.0") && strstr(err, "speaks 2.0"));
}

int main(void)
{
    char err[256];
    router_mod = wf_module_entry(WF_ABI_MAJOR, WF_ABI_MINOR, &fake_host, err, sizeof(err));
    if (!router_mod) {
        fprintf(stderr, "router entry refused: %s\n", err);
        return 1;
    }
    RUN(entry_refuses_other_major);
    RUN(strip_port);
    RUN(vhost_exact_and_port);
    RUN(vhost_wildcards);
    RUN(vhost_many_domains);
    RUN(path_prefix_exact);
    RUN(path_regex);
    RUN(regex_pathological_is_bounded);
    RUN(regex_scanner);
    RUN(header_string_matchers);
    RUN(header_presence_and_absence);
    RUN(query_parameters);
    RUN(percent_decoding);
    RUN(route_first_match_wins);
    RUN(route_404);
    RUN(weighted_boundaries);
    RUN(weighted_distribution);
    RUN(config_refusals);
    RUN(redirect);
    RUN(rewrite);
    RUN(header_operations);
    RUN(timeout);
    RUN(unimplemented_accepted);
    RUN(without_headers);
    RUN(concurrent_regex_matching);
    RUN(example_plugin);
    return TEST_SUMMARY();
}
