/*
 * modules/router.c: the router filter module.
 *
 * config_create compiles the listener's RouteConfiguration (Envoy v3 in
 * proto3 JSON form, docs/resources.md) into structures that the route hook
 * can search without allocating: a hash table of exact domains, lists of
 * wildcard domains sorted longest first, and per virtual host an ordered
 * array of routes whose path, header and query-parameter matchers are
 * precompiled (regexes with PCRE2 and its JIT).  The route hook finds the
 * virtual host for :authority, takes the first route that matches, picks a
 * cluster (weighted when asked) and hands the decision to the host with
 * set_route; with no virtual host or no route it answers 404 with response
 * flag NR, as Envoy does.
 *
 * The configuration tree is read only through the host's value_* functions:
 * this file includes nothing of weft but include/weft/filter.h.
 *
 * What it reads: virtual_hosts (name, domains, routes); per route name,
 * match (prefix | path | safe_regex | path_separated_prefix,
 * case_sensitive, headers, query_parameters) and one action: route
 * (cluster | weighted_clusters), direct_response, or the translator's
 * typed_per_filter_config.router.directResponse or .redirect.  Fields of a
 * matcher it does not know are refused rather than ignored, since ignoring
 * one would make the route match more than it says.  The router's own
 * config has one option, strip_any_host_port (off, as in Envoy).
 *
 * Per-route features.  The translator puts Istio's HTTPRoute fields in
 * typed_per_filter_config.router under Istio's names; they are compiled
 * with the route, so a request parses and mallocs nothing:
 *   redirect     a local reply (redirectCode, 301 by default) whose
 *                location header is built as Envoy builds it;
 *   rewrite      uri (replaces the matched prefix, or the whole path for
 *                exact and regex matches), uriRegexRewrite (PCRE2
 *                substitution, RE2's \1 groups) and authority, applied to
 *                :path and :authority after set_route (no re-routing);
 *   headers      request ops in the route hook, response ops in
 *                response_headers (per-stream state says which), at route
 *                level, for a lone destination (destinationHeaders) and
 *                per weighted cluster;
 *   timeout      recorded in stream state "router.timeout_ms" for the core;
 *   the rest     (mirror, mirrors, unknown keys) accepted and ignored with
 *                a debug log: they must never stop a proxy from starting.
 * Envoy's own route-level "redirect" is refused: nothing produces it.
 *
 * Header matchers follow Envoy, except that an inverted string matcher
 * (what Istio's withoutHeaders becomes) also matches a missing header
 * unless treat_missing_header_as_empty is given: Istio documents
 * withoutHeaders as "absent, or present with another value".
 *
 * Regexes.  Istio defines its regexes as RE2 syntax, and RE2 matches in
 * linear time.  PCRE2 backtracks, so constructs RE2 does not have
 * (backreferences, lookaround, atomic groups, recursion, conditionals,
 * verbs) are refused at config time, and a match limit bounds what is left.
 * Matches are anchored at both ends, as Envoy's safe_regex is a full match.
 */
#include <weft/filter.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on one regex match.  RE2-only syntax keeps ordinary patterns far
 * below these; a pathological one such as (a+)+$ stops here and counts as
 * "no match" instead of holding a worker. */
#define RT_MATCH_LIMIT 1000000u
#define RT_DEPTH_LIMIT 100000u
#define RT_HEAP_LIMIT_KIB 8192u

/* How much of a request's host or path a 404 body echoes. */
#define RT_ECHO_MAX 256

/* Compile options: RE2 works on UTF-8 text and its '$' (without (?m)) only
 * matches at the very end; anchoring both ends makes the match full. */
#define RT_PCRE2_OPTIONS                                                                           \
    (PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C | PCRE2_DOLLAR_ENDONLY |        \
     PCRE2_ANCHORED | PCRE2_ENDANCHORED)

#define RT_LIT(s) ((wf_str){(s), sizeof(s) - 1})

/* The host's function table, given to the entry; valid for the process. */
static const wf_host *rt_host;

/* ------------------------------------------------------------------------
 * Compiled structures
 * ------------------------------------------------------------------------ */

/* A bump allocator holding everything a compiled table owns except the
 * PCRE2 objects, so that a table (or a half-built one) is freed whole. */
typedef struct rt_block {
    struct rt_block *next;
    size_t used, cap;
    unsigned char data[] __attribute__((aligned(16)));
} rt_block;

typedef struct rt_arena {
    rt_block *head;
} rt_arena;

typedef struct rt_regex {
    pcre2_code *code;
    uint32_t pairs;            /* capture groups + 1: the match data it needs */
    pcre2_match_context *mctx; /* the table's; bounds the match */
    const char *pattern;       /* for log lines */
    int warned;                /* a match limit was already logged */
    struct rt_regex *next;     /* the table's list, for freeing */
} rt_regex;

typedef enum rt_sm_kind {
    RT_SM_EXACT = 0,
    RT_SM_PREFIX = 1,
    RT_SM_SUFFIX = 2,
    RT_SM_CONTAINS = 3,
    RT_SM_REGEX = 4,
} rt_sm_kind;

/* Envoy's StringMatcher. */
typedef struct rt_strmatch {
    rt_sm_kind kind;
    int ignore_case; /* not for regexes, as in Envoy */
    const char *s;   /* lower-cased when ignore_case */
    size_t len;
    rt_regex *re;
} rt_strmatch;

/* Envoy's HeaderMatcher. */
typedef struct rt_header_match {
    wf_str name;          /* lower-cased; pseudo-headers such as ":method" too */
    int is_present;       /* a present_match (or no specifier at all) */
    int present;          /* present_match's value */
    int invert;           /* invert_match */
    int missing_as_empty; /* treat_missing_header_as_empty: 1, 0, or -1 unset */
    rt_strmatch sm;       /* when !is_present */
} rt_header_match;

/* Envoy's QueryParameterMatcher. */
typedef struct rt_query_match {
    wf_str name;
    int has_sm; /* otherwise the parameter only has to be present */
    rt_strmatch sm;
} rt_query_match;

typedef enum rt_path_kind {
    RT_PATH_PREFIX = 0,
    RT_PATH_EXACT = 1,
    RT_PATH_REGEX = 2,
    RT_PATH_SEPARATED = 3, /* path_separated_prefix */
} rt_path_kind;

typedef enum rt_action {
    RT_ACT_CLUSTER = 0,
    RT_ACT_WEIGHTED = 1,
    RT_ACT_DIRECT = 2,   /* direct_response: the proxy answers itself */
    RT_ACT_REDIRECT = 3, /* Istio's redirect: a local reply with a location */
} rt_action;

/* One header operation: set (replace every value) or add (one more). */
typedef struct rt_hop {
    wf_str name; /* lower-cased */
    wf_str value;
    int add;
} rt_hop;

/* Istio's HeaderOperations for one direction at one level, applied as
 * Envoy applies a level: every remove first, then set and add in order. */
typedef struct rt_hops {
    const wf_str *remove;
    size_t nremove;
    const rt_hop *ops;
    size_t nops;
} rt_hops;

typedef struct rt_headers {
    rt_hops req, resp;
} rt_headers;

/* Istio's HTTPRedirect, compiled.  Empty strings mean "the request's". */
typedef struct rt_redirect {
    int code;
    wf_str scheme;         /* lower-cased */
    wf_str host;           /* authority, without the port when a port is set */
    wf_str port;           /* ":N", or empty */
    int port_from_request; /* derivePort FROM_REQUEST_PORT, port unknown at
                            * config time: take the :authority's */
    wf_str path;           /* uri; has_path when non-empty */
    int has_path;
    int path_has_query; /* the uri's own query replaces the request's */
} rt_redirect;

typedef struct rt_weighted {
    const char *name;
    uint64_t cum;           /* sum of the weights up to and including this one */
    const rt_headers *hdrs; /* typed_per_filter_config.router.headers, or NULL */
} rt_weighted;

typedef struct rt_route {
    const wf_value *node; /* the route's node, for set_route */
    const char *name;     /* "name", or "vhost/index" */

    rt_path_kind path_kind;
    const char *path; /* lower-cased when !case_sensitive */
    size_t path_len;
    int case_sensitive;
    rt_regex *path_re;

    rt_header_match *headers;
    size_t nheaders;
    rt_query_match *queries;
    size_t nqueries;

    rt_action action;
    const char *cluster;
    rt_weighted *wc;
    size_t nwc;
    uint64_t total;
    int direct_status;
    wf_str direct_body;
    const rt_redirect *redirect; /* RT_ACT_REDIRECT */

    /* typed_per_filter_config.router; extras is set when anything below
     * (or a weighted cluster's headers) has work for a routed request. */
    int extras;
    const rt_headers *hdrs; /* route level, destinationHeaders merged in */
    wf_str rw_uri;          /* rewrite.uri; has_rw_uri when non-empty */
    int has_rw_uri;
    rt_regex *rw_re; /* rewrite.uriRegexRewrite.match, or NULL */
    wf_str rw_sub;   /* its rewrite, in PCRE2 substitution syntax */
    wf_str rw_auth;  /* rewrite.authority; has_rw_auth when non-empty */
    int has_rw_auth;
    wf_str timeout; /* milliseconds in decimal; has_timeout when given */
    int has_timeout;
} rt_route;

typedef struct rt_vhost {
    const char *name;
    rt_route *routes;
    size_t nroutes;
} rt_vhost;

/* One slot of the open-addressing domain table; vh == NULL when empty. */
typedef struct rt_slot {
    const char *dom; /* lower-cased */
    size_t len;
    uint32_t hash;
    const rt_vhost *vh;
} rt_slot;

/* A wildcard domain: "*.suffix" stores ".suffix", "prefix.*" "prefix.". */
typedef struct rt_wild {
    const char *s;
    size_t len;
    size_t order; /* position in the config, to keep ties stable */
    const rt_vhost *vh;
} rt_wild;

typedef struct rt_table {
    rt_arena arena;
    rt_vhost *vhosts;
    size_t nvhosts;
    rt_slot *slots;
    size_t nslots; /* a power of two, or 0 */
    rt_wild *suffixes;
    size_t nsuffixes;
    rt_wild *prefixes;
    size_t nprefixes;
    const rt_vhost *any; /* the vhost listing "*" */
    int strip_port;      /* also try the authority without ":port" */
    size_t nroutes;
    pcre2_match_context *mctx;
    rt_regex *regexes;
    size_t nregexes;
    int has_resp_ops; /* some route has response header ops: streams need state */
} rt_table;

/* Per-stream state, only when the table has response header ops: what
 * response_headers applies, in order (a weighted cluster's, then the
 * route's, as Envoy: the route level wins a tie). */
typedef struct rt_stream {
    const rt_hops *resp[2];
} rt_stream;

/* What the matchers look at in one request. */
typedef struct rt_request {
    wf_stream *s;
    wf_str path;      /* :path as received */
    wf_str path_only; /* :path before any '?' or '#' */
    wf_str query;     /* between '?' and '#', without the '?' */
} rt_request;

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

static inline unsigned char rt_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Compares n bytes of a with b, ignoring ASCII case. */
static int rt_eq_ci(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rt_lower((unsigned char)a[i]) != rt_lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int rt_eq(const char *a, const char *b, size_t n, int ignore_case)
{
    return ignore_case ? rt_eq_ci(a, b, n) : memcmp(a, b, n) == 0;
}

/* FNV-1a over the lower-cased bytes, so that lookups need no copy. */
static uint32_t rt_hash_ci(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= rt_lower((unsigned char)p[i]);
        h *= 16777619u;
    }
    return h;
}

static int rt_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = rt_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes one byte of a percent-encoded string at in[*i], advancing *i.  An
 * invalid escape ("%zz", a lone '%') stays as it is, as in Envoy; '+' is
 * not a space there either. */
static unsigned char rt_pct_next(const char *in, size_t n, size_t *i)
{
    unsigned char c = (unsigned char)in[*i];
    if (c == '%' && n - *i >= 3) {
        int hi = rt_hexval((unsigned char)in[*i + 1]), lo = rt_hexval((unsigned char)in[*i + 2]);
        if (hi >= 0 && lo >= 0) {
            *i += 3;
            return (unsigned char)(hi * 16 + lo);
        }
    }
    (*i)++;
    return c;
}

/* Decodes in[0..n) into out (at least n bytes); returns the decoded length. */
static size_t rt_pct_decode(const char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    while (i < n)
        out[o++] = (char)rt_pct_next(in, n, &i);
    return o;
}

/* Whether the percent-encoded enc decodes to exactly plain[0..len). */
static int rt_pct_equals(const char *enc, size_t n, const char *plain, size_t len)
{
    size_t i = 0, o = 0;
    while (i < n) {
        if (o == len || (char)rt_pct_next(enc, n, &i) != plain[o])
            return 0;
        o++;
    }
    return o == len;
}

/* ------------------------------------------------------------------------
 * Config arena
 * ------------------------------------------------------------------------ */

static void *rt_alloc(rt_arena *a, size_t n)
{
    if (n > SIZE_MAX - 64)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    rt_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 8192 ? n : 8192;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

static void *rt_alloc_array(rt_arena *a, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size / 2)
        return NULL;
    return rt_alloc(a, count * size);
}

/* A NUL-terminated copy of p[0..n), lower-cased when lower is set. */
static char *rt_strdup(rt_arena *a, const char *p, size_t n, int lower)
{
    char *s = rt_alloc(a, n + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++)
        s[i] = lower ? (char)rt_lower((unsigned char)p[i]) : p[i];
    s[n] = '\0';
    return s;
}

static void rt_arena_free(rt_arena *a)
{
    rt_block *b = a->head;
    while (b) {
        rt_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ------------------------------------------------------------------------
 * Per-thread regex match data
 *
 * pcre2_match writes into its match data, so one cannot be shared between
 * workers; each thread creates its own on first use and keeps it (a thread
 * key frees it when the thread exits).  It grows once when a rewrite regex
 * needs more capture pairs than it has, never per request.
 * ------------------------------------------------------------------------ */

static __thread pcre2_match_data *rt_md;
static __thread uint32_t rt_md_pairs;
static pthread_key_t rt_md_key;
static pthread_once_t rt_md_once = PTHREAD_ONCE_INIT;
static int rt_md_key_ok;

static void rt_md_free(void *md)
{
    pcre2_match_data_free(md);
}

static void rt_md_key_init(void)
{
    rt_md_key_ok = pthread_key_create(&rt_md_key, rt_md_free) == 0;
}

/* Match data with at least `pairs` capture pairs.  One pair is enough for
 * matching: a full match needs no captures, and PCRE2 reports a match with
 * a too-small vector as 0, not an error.  Substitution needs them all. */
static pcre2_match_data *rt_match_data(uint32_t pairs)
{
    if (!rt_md || rt_md_pairs < pairs) {
        uint32_t want = pairs > 1 ? pairs : 1;
        pcre2_match_data *md = pcre2_match_data_create(want, NULL);
        if (!md)
            return NULL;
        pcre2_match_data_free(rt_md);
        rt_md = md;
        rt_md_pairs = want;
        pthread_once(&rt_md_once, rt_md_key_init);
        if (rt_md_key_ok)
            pthread_setspecific(rt_md_key, rt_md);
    }
    return rt_md;
}

/* 1 if re matches all of subj[0..len), 0 if not, -1 if no match data. */
static int rt_regex_match(rt_regex *re, const char *subj, size_t len)
{
    pcre2_match_data *md = rt_match_data(1);
    if (!md)
        return -1;
    int rc = pcre2_match(re->code, (PCRE2_SPTR)(subj ? subj : ""), len, 0, 0, md, re->mctx);
    if (rc >= 0)
        return 1;
    if (rc != PCRE2_ERROR_NOMATCH && !__atomic_exchange_n(&re->warned, 1, __ATOMIC_RELAXED)) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        rt_host->log(WF_LOG_WARN, "router",
                     "regex \"%s\" gave up on a %zu-byte input (%s); treating it as no match. "
                     "Simplify the regex (avoid nested repetition such as (a+)+). Logged once.",
                     re->pattern, len, (const char *)msg);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Matchers (all without allocation, except percent-decoding a query value
 * that needs it, which uses the stream arena)
 * ------------------------------------------------------------------------ */

/* 1 if v matches sm, 0 if not, -1 on a resource failure. */
static int rt_string_matches(const rt_strmatch *sm, wf_str v)
{
    switch (sm->kind) {
    case RT_SM_EXACT:
        return v.len == sm->len && rt_eq(v.p, sm->s, sm->len, sm->ignore_case);
    case RT_SM_PREFIX:
        return v.len >= sm->len && rt_eq(v.p, sm->s, sm->len, sm->ignore_case);
    case RT_SM_SUFFIX:
        return v.len >= sm->len && rt_eq(v.p + v.len - sm->len, sm->s, sm->len, sm->ignore_case);
    case RT_SM_CONTAINS:
        if (sm->len == 0)
            return 1;
        for (size_t i = 0; i + sm->len <= v.len; i++)
            if (rt_eq(v.p + i, sm->s, sm->len, sm->ignore_case))
                return 1;
        return 0;
    case RT_SM_REGEX:
        return rt_regex_match(sm->re, v.p, v.len);
    }
    return 0;
}

/* Envoy's rules: a missing header matches only "present_match: false", or
 * "present_match: true" inverted; a string matcher fails on it, unless
 * treat_missing_header_as_empty is set (then "" is matched).  One change:
 * an inverted string matcher without treat_missing_header_as_empty matches
 * a missing header.  That is what the translator makes of Istio's
 * withoutHeaders, documented as "absent, or present with another value";
 * "treat_missing_header_as_empty: false" given explicitly keeps Envoy's
 * rule. */
static int rt_header_matches(const rt_header_match *h, wf_stream *s)
{
    wf_str v = {"", 0};
    if (!rt_host->header_get(s, WF_REQUEST, h->name, &v)) {
        if (h->missing_as_empty != 1) {
            if (h->is_present)
                return h->invert ? h->present : !h->present;
            return h->invert && h->missing_as_empty < 0;
        }
        v = (wf_str){"", 0};
    }
    int m = h->is_present ? h->present : rt_string_matches(&h->sm, v);
    if (m < 0)
        return m;
    return m != h->invert;
}

/* The first value of the query parameter named q->name (names and values
 * percent-decoded), matched as Envoy does: absent never matches. */
static int rt_query_matches(const rt_query_match *q, const rt_request *rq)
{
    const char *p = rq->query.p, *end = rq->query.p + rq->query.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if (rt_pct_equals(p, (size_t)(ke - p), q->name.p, q->name.len)) {
            if (!q->has_sm)
                return 1;
            wf_str v = {eq ? eq + 1 : pe, eq ? (size_t)(pe - eq - 1) : 0};
            if (memchr(v.p, '%', v.len)) {
                char *buf = rt_host->alloc(rq->s, v.len + 1);
                if (!buf)
                    return -1;
                v.len = rt_pct_decode(v.p, v.len, buf);
                v.p = buf;
            }
            return rt_string_matches(&q->sm, v);
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}

/* As Envoy: prefix looks at the whole :path, exact, separated prefix and
 * regex at the path without its query string. */
static int rt_path_matches(const rt_route *r, const rt_request *rq)
{
    int ic = !r->case_sensitive;
    wf_str p = rq->path_only;
    switch (r->path_kind) {
    case RT_PATH_PREFIX:
        return rq->path.len >= r->path_len && rt_eq(rq->path.p, r->path, r->path_len, ic);
    case RT_PATH_EXACT:
        return p.len == r->path_len && rt_eq(p.p, r->path, r->path_len, ic);
    case RT_PATH_SEPARATED:
        return p.len >= r->path_len && rt_eq(p.p, r->path, r->path_len, ic) &&
               (p.len == r->path_len || p.p[r->path_len] == '/');
    case RT_PATH_REGEX:
        return rt_regex_match(r->path_re, p.p, p.len);
    }
    return 0;
}

/* All of a route's matchers: 1 match, 0 no match, -1 resource failure. */
static int rt_route_matches(const rt_route *r, const rt_request *rq)
{
    int m = rt_path_matches(r, rq);
    for (size_t i = 0; m > 0 && i < r->nheaders; i++)
        m = rt_header_matches(&r->headers[i], rq->s);
    for (size_t i = 0; m > 0 && i < r->nqueries; i++)
        m = rt_query_matches(&r->queries[i], rq);
    return m;
}

/* Weighted choice: rnd % total falls in exactly one cluster's slice of the
 * cumulative weights (a weight of 0 has an empty slice). */
static size_t rt_pick_index(const rt_route *r, uint64_t rnd)
{
    uint64_t x = rnd % r->total;
    for (size_t i = 0; i < r->nwc; i++)
        if (x < r->wc[i].cum)
            return i;
    return r->nwc - 1; /* not reached: cum of the last is total */
}

/* Splits :path into the path and the query string. */
static void rt_request_split(rt_request *rq)
{
    const char *p = rq->path.p;
    size_t n = rq->path.len, i = 0;
    while (i < n && p[i] != '?' && p[i] != '#')
        i++;
    rq->path_only = (wf_str){p, i};
    rq->query = (wf_str){NULL, 0};
    if (i < n && p[i] == '?') {
        size_t j = i + 1;
        while (j < n && p[j] != '#')
            j++;
        rq->query = (wf_str){p + i + 1, j - i - 1};
    }
}

/* ------------------------------------------------------------------------
 * Virtual host lookup
 * ------------------------------------------------------------------------ */

/* The length of host h without a trailing ":port", or n when it has none.
 * An IPv6 literal has a port only in its bracketed form "[::1]:80". */
static size_t rt_strip_port(const char *h, size_t n)
{
    size_t i = n;
    while (i > 0 && h[i - 1] >= '0' && h[i - 1] <= '9')
        i--;
    if (i == n || i < 2 || h[i - 1] != ':')
        return n;
    size_t colon = i - 1;
    if (h[0] == '[')
        return h[colon - 1] == ']' ? colon : n;
    if (memchr(h, ':', colon))
        return n; /* a bare IPv6 address */
    return colon;
}

static const rt_vhost *rt_find_exact(const rt_table *t, const char *h, size_t n)
{
    if (!t->nslots)
        return NULL;
    uint32_t hash = rt_hash_ci(h, n);
    size_t mask = t->nslots - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        const rt_slot *sl = &t->slots[i];
        if (!sl->vh)
            return NULL;
        if (sl->hash == hash && sl->len == n && rt_eq_ci(h, sl->dom, n))
            return sl->vh;
    }
}

/* The '*' of a wildcard matches at least one character, as in Envoy. */
static const rt_vhost *rt_find_suffix(const rt_table *t, const char *h, size_t n)
{
    for (size_t i = 0; i < t->nsuffixes; i++) {
        const rt_wild *w = &t->suffixes[i];
        if (n > w->len && rt_eq_ci(h + n - w->len, w->s, w->len))
            return w->vh;
    }
    return NULL;
}

static const rt_vhost *rt_find_prefix(const rt_table *t, const char *h, size_t n)
{
    for (size_t i = 0; i < t->nprefixes; i++) {
        const rt_wild *w = &t->prefixes[i];
        if (n > w->len && rt_eq_ci(h, w->s, w->len))
            return w->vh;
    }
    return NULL;
}

/* Envoy's order: exact, "*.suffix" (longest first), "prefix.*" (longest
 * first), then "*".  The authority is matched as sent, port included, as
 * Envoy does by default: the translator lists every alias with its port
 * (and port-less forms where Istio has them), so "reviews:9999" must not
 * reach a service that only has port 9080.  With the router option
 * strip_any_host_port each step also tries the authority without its
 * ":port", after the form as sent.  Case is ignored; nothing is copied. */
static const rt_vhost *rt_find_vhost(const rt_table *t, const char *h, size_t n)
{
    size_t hn = t->strip_port ? rt_strip_port(h, n) : n;
    const rt_vhost *vh = rt_find_exact(t, h, n);
    if (!vh && hn != n)
        vh = rt_find_exact(t, h, hn);
    if (!vh)
        vh = rt_find_suffix(t, h, n);
    if (!vh && hn != n)
        vh = rt_find_suffix(t, h, hn);
    if (!vh)
        vh = rt_find_prefix(t, h, n);
    if (!vh && hn != n)
        vh = rt_find_prefix(t, h, hn);
    return vh ? vh : t->any;
}

/* ------------------------------------------------------------------------
 * Compiling the route table
 * ------------------------------------------------------------------------ */

typedef struct rt_build {
    rt_table *t;
    char *err;
    size_t errlen;
} rt_build;

static int rt_fail(rt_build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int rt_fail(rt_build *b, const char *fmt, ...)
{
    if (b->err && b->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int rt_oom(rt_build *b)
{
    return rt_fail(b, "out of memory compiling the route table");
}

static const wf_value *rt_get(const wf_value *map, const char *key)
{
    if (rt_host->value_type(map) != WF_VALUE_MAP)
        return NULL;
    return rt_host->value_get(map, key);
}

/* Absent (0), a string (1, in *out), or another type (-1, refused). */
static int rt_get_string(rt_build *b, const char *where, const wf_value *map, const char *key,
                         wf_str *out)
{
    const wf_value *v = rt_get(map, key);
    if (!v || rt_host->value_type(v) == WF_VALUE_NULL)
        return 0;
    size_t len = 0;
    const char *s = rt_host->value_string(v, &len);
    if (!s)
        return rt_fail(b, "%s: \"%s\" must be a string", where, key);
    *out = (wf_str){s, len};
    return 1;
}

/* Leaves *out alone when key is absent. */
static int rt_get_bool(rt_build *b, const char *where, const wf_value *map, const char *key,
                       int *out)
{
    const wf_value *v = rt_get(map, key);
    if (!v || rt_host->value_type(v) == WF_VALUE_NULL)
        return 0;
    if (rt_host->value_type(v) != WF_VALUE_BOOL)
        return rt_fail(b, "%s: \"%s\" must be true or false", where, key);
    *out = rt_host->value_bool(v) != 0;
    return 1;
}

/* A non-negative integer no larger than max: proto3 JSON writes uint32 as
 * a number, and some writers quote it. */
static int rt_get_uint(rt_build *b, const char *where, const wf_value *map, const char *key,
                       uint64_t max, uint64_t *out)
{
    const wf_value *v = rt_get(map, key);
    wf_value_type ty = rt_host->value_type(v);
    if (!v || ty == WF_VALUE_NULL)
        return 0;
    int ok = 0;
    uint64_t n = 0;
    if (ty == WF_VALUE_INT) {
        int64_t i = rt_host->value_int(v);
        ok = i >= 0;
        n = (uint64_t)i;
    } else if (ty == WF_VALUE_DOUBLE) {
        double d = rt_host->value_double(v);
        ok = d >= 0 && d <= (double)max && d == (double)(uint64_t)d;
        n = ok ? (uint64_t)d : 0;
    } else if (ty == WF_VALUE_STRING) {
        size_t len = 0;
        const char *s = rt_host->value_string(v, &len);
        ok = len > 0 && len <= 20;
        for (size_t i = 0; ok && i < len; i++) {
            ok = s[i] >= '0' && s[i] <= '9' && n <= (UINT64_MAX - 9) / 10;
            n = n * 10 + (uint64_t)(s[i] - '0');
        }
    }
    if (!ok || n > max)
        return rt_fail(b, "%s: \"%s\" must be a whole number from 0 to %llu", where, key,
                       (unsigned long long)max);
    *out = n;
    return 1;
}

/* Refuses keys of map not in allowed (NULL-terminated).  Used where an
 * ignored field would make a matcher match more than was asked for. */
static int rt_check_keys(rt_build *b, const char *where, const wf_value *map,
                         const char *const *allowed)
{
    size_t n = rt_host->value_len(map);
    for (size_t i = 0; i < n; i++) {
        const char *k = rt_host->value_key_at(map, i);
        if (!k)
            continue;
        size_t j = 0;
        while (allowed[j] && strcmp(allowed[j], k) != 0)
            j++;
        if (!allowed[j]) {
            char known[256];
            size_t o = 0;
            known[0] = '\0';
            for (j = 0; allowed[j] && o < sizeof(known); j++) {
                int w = snprintf(known + o, sizeof(known) - o, "%s%s", j ? ", " : "", allowed[j]);
                if (w < 0)
                    break;
                o += (size_t)w;
            }
            return rt_fail(b, "%s: unknown or unsupported field \"%s\" (the router reads: %s)",
                           where, k, known);
        }
    }
    return 0;
}

/* Returns why the group starting at g (g[0] == '(') is not RE2 syntax, or
 * NULL when it is.  RE2 groups: (...), (?:...), (?P<name>...),
 * (?<name>...), (?flags) and (?flags:...) with flags from "imsU-". */
static const char *rt_group_unsupported(const char *g, size_t n)
{
    if (n < 2 || (g[1] != '?' && g[1] != '*'))
        return NULL;
    if (g[1] == '*')
        return "a (*...) verb or lookaround";
    if (n < 3)
        return NULL; /* PCRE2 reports the syntax error */
    char c = g[2];
    if (c == ':')
        return NULL;
    if (c == '=' || c == '!')
        return "lookahead";
    if (c == '<') {
        if (n > 3 && (g[3] == '=' || g[3] == '!'))
            return "lookbehind";
        return NULL;
    }
    if (c == 'P')
        return (n > 3 && g[3] == '<') ? NULL : "a named backreference or subroutine call";
    if (c == '>')
        return "an atomic group";
    if (c == '(')
        return "a conditional group";
    if (c == 'R' || c == '&' || c == '+' || (c >= '0' && c <= '9'))
        return "recursion or a subroutine call";
    if (c == 'C')
        return "a callout";
    if (c == '#')
        return "a comment group";
    if (c == '|')
        return "a branch-reset group";
    size_t j = 2;
    while (j < n && (g[j] == 'i' || g[j] == 'm' || g[j] == 's' || g[j] == 'U' || g[j] == '-')) {
        if (g[j] == '-' && j + 1 < n && g[j + 1] >= '0' && g[j + 1] <= '9')
            return "recursion or a subroutine call";
        j++;
    }
    if (j > 2 && j < n && (g[j] == ')' || g[j] == ':'))
        return NULL;
    return "a group syntax RE2 does not have";
}

/* Scans a pattern for constructs RE2 lacks; returns a description and sets
 * *at to its offset, or returns NULL. */
static const char *rt_regex_unsupported(const char *p, size_t n, size_t *at)
{
    int in_class = 0;
    size_t i = 0;
    while (i < n) {
        char c = p[i];
        if (c == '\\') {
            if (i + 1 >= n)
                return NULL; /* PCRE2 reports the trailing backslash */
            char e = p[i + 1];
            if (e == 'Q') { /* \Q...\E quotes literally */
                const char *q = NULL;
                for (size_t j = i + 2; j + 1 < n; j++)
                    if (p[j] == '\\' && p[j + 1] == 'E') {
                        q = p + j;
                        break;
                    }
                i = q ? (size_t)(q - p) + 2 : n;
                continue;
            }
            if (!in_class) {
                *at = i;
                if (e >= '1' && e <= '9')
                    return "a backreference";
                if (e == 'g' || e == 'k')
                    return "a backreference or subroutine call";
                if (e == 'K')
                    return "\\K (match start reset)";
            }
            i += 2;
            continue;
        }
        if (in_class) {
            if (c == '[' && i + 1 < n && p[i + 1] == ':') {
                /* A POSIX class such as [:alpha:] inside a bracket. */
                size_t j = i + 2;
                while (j + 1 < n && !(p[j] == ':' && p[j + 1] == ']'))
                    j++;
                i = j + 1 < n ? j + 2 : i + 1;
                continue;
            }
            if (c == ']')
                in_class = 0;
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            i++;
            if (i < n && p[i] == '^')
                i++;
            if (i < n && p[i] == ']') /* a leading ']' is literal */
                i++;
            continue;
        }
        if (c == '(') {
            const char *why = rt_group_unsupported(p + i, n - i);
            if (why) {
                *at = i;
                return why;
            }
        }
        i++;
    }
    return NULL;
}

/* Compiles pattern, for a full match when anchored, else to be found
 * anywhere (a rewrite).  `where` names the config location. */
static rt_regex *rt_regex_compile_opt(rt_build *b, const char *where, wf_str pat, int anchored)
{
    rt_table *t = b->t;
    int shown = pat.len > 120 ? 120 : (int)pat.len;
    size_t at = 0;
    const char *why = rt_regex_unsupported(pat.p, pat.len, &at);
    if (why) {
        rt_fail(b,
                "%s: regex \"%.*s%s\" uses %s at offset %zu, which RE2 (Istio's regex syntax) does "
                "not support; rewrite it without lookaround, backreferences or PCRE-only groups",
                where, shown, pat.p, (size_t)shown < pat.len ? "..." : "", why, at);
        return NULL;
    }
    rt_regex *re = rt_alloc(&t->arena, sizeof(*re));
    char *copy = rt_strdup(&t->arena, pat.p, pat.len, 0);
    if (!re || !copy) {
        rt_oom(b);
        return NULL;
    }
    int ec = 0;
    PCRE2_SIZE eo = 0;
    uint32_t opts = RT_PCRE2_OPTIONS;
    if (!anchored)
        opts &= ~(uint32_t)(PCRE2_ANCHORED | PCRE2_ENDANCHORED);
    re->code = pcre2_compile((PCRE2_SPTR)pat.p, pat.len, opts, &ec, &eo, NULL);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        rt_fail(b, "%s: regex \"%.*s%s\" does not compile at offset %zu: %s", where, shown, pat.p,
                (size_t)shown < pat.len ? "..." : "", (size_t)eo, (const char *)msg);
        return NULL;
    }
    re->mctx = t->mctx;
    re->pattern = copy;
    uint32_t groups = 0;
    pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &groups);
    re->pairs = groups + 1;
    re->next = t->regexes;
    t->regexes = re;
    t->nregexes++;
    /* A backstop for backreference spellings the scanner does not know. */
    uint32_t backref = 0;
    if (pcre2_pattern_info(re->code, PCRE2_INFO_BACKREFMAX, &backref) == 0 && backref > 0) {
        rt_fail(b,
                "%s: regex \"%.*s\" uses a backreference, which RE2 (Istio's regex syntax) "
                "does not support",
                where, shown, pat.p);
        return NULL;
    }
    int jrc = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    if (jrc != 0) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(jrc, msg, sizeof(msg));
        rt_host->log(WF_LOG_WARN, "router",
                     "%s: PCRE2 JIT unavailable for regex \"%s\" (%s); matching with the slower "
                     "interpreter",
                     where, copy, (const char *)msg);
    }
    return re;
}

static rt_regex *rt_regex_compile(rt_build *b, const char *where, wf_str pat)
{
    return rt_regex_compile_opt(b, where, pat, 1);
}

/* Envoy's StringMatcher: one of exact, prefix, suffix, contains,
 * safe_regex, plus ignore_case. */
static int rt_compile_strmatch(rt_build *b, const char *where, const wf_value *v, rt_strmatch *sm)
{
    static const char *const keys[] = {"exact",      "prefix",      "suffix", "contains",
                                       "safe_regex", "ignore_case", NULL};
    static const char *const kinds[] = {"exact", "prefix", "suffix", "contains"};
    if (rt_host->value_type(v) != WF_VALUE_MAP)
        return rt_fail(b, "%s: string_match must be an object", where);
    if (rt_check_keys(b, where, v, keys) < 0)
        return -1;
    int found = 0;
    for (int k = 0; k < 4; k++) {
        wf_str s;
        int r = rt_get_string(b, where, v, kinds[k], &s);
        if (r < 0)
            return -1;
        if (r > 0) {
            found++;
            sm->kind = (rt_sm_kind)k;
            sm->s = s.p;
            sm->len = s.len;
        }
    }
    const wf_value *sr = rt_get(v, "safe_regex");
    if (sr) {
        wf_str pat;
        found++;
        if (rt_get_string(b, where, sr, "regex", &pat) <= 0)
            return rt_fail(b, "%s: safe_regex needs a \"regex\" string", where);
        sm->kind = RT_SM_REGEX;
        if (!(sm->re = rt_regex_compile(b, where, pat)))
            return -1;
    }
    if (found != 1)
        return rt_fail(b,
                       "%s: string_match needs exactly one of exact, prefix, suffix, contains "
                       "or safe_regex (found %d)",
                       where, found);
    if (rt_get_bool(b, where, v, "ignore_case", &sm->ignore_case) < 0)
        return -1;
    if (sm->kind == RT_SM_REGEX) {
        sm->ignore_case = 0; /* Envoy ignores it for regexes; use (?i) */
    } else if (!(sm->s = rt_strdup(&b->t->arena, sm->s, sm->len, sm->ignore_case))) {
        return rt_oom(b);
    }
    return 0;
}

static int rt_compile_header(rt_build *b, const char *route, size_t idx, const wf_value *v,
                             rt_header_match *h)
{
    static const char *const keys[] = {"name",
                                       "string_match",
                                       "present_match",
                                       "invert_match",
                                       "treat_missing_header_as_empty",
                                       "exact_match",
                                       "prefix_match",
                                       "suffix_match",
                                       "contains_match",
                                       "safe_regex_match",
                                       NULL};
    /* Envoy's older one-field spellings, mapped onto string_match. */
    static const char *const legacy[] = {"exact_match", "prefix_match", "suffix_match",
                                         "contains_match"};
    char where[400];
    snprintf(where, sizeof(where), "%.240s: match.headers[%zu]", route, idx);
    if (rt_host->value_type(v) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object", where);
    if (rt_check_keys(b, where, v, keys) < 0)
        return -1;
    wf_str name;
    int r = rt_get_string(b, where, v, "name", &name);
    if (r < 0)
        return -1;
    if (r == 0 || name.len == 0)
        return rt_fail(b, "%s: needs a header \"name\"", where);
    char *lname = rt_strdup(&b->t->arena, name.p, name.len, 1);
    if (!lname)
        return rt_oom(b);
    h->name = (wf_str){lname, name.len};
    h->missing_as_empty = -1;
    snprintf(where, sizeof(where), "%.240s: match.headers[%zu] (\"%.*s\")", route, idx,
             name.len > 64 ? 64 : (int)name.len, name.p);
    if (rt_get_bool(b, where, v, "invert_match", &h->invert) < 0 ||
        rt_get_bool(b, where, v, "treat_missing_header_as_empty", &h->missing_as_empty) < 0)
        return -1;

    int kinds = 0;
    const wf_value *sm = rt_get(v, "string_match");
    if (sm) {
        kinds++;
        if (rt_compile_strmatch(b, where, sm, &h->sm) < 0)
            return -1;
    }
    for (int k = 0; k < 4; k++) {
        wf_str s;
        int lr = rt_get_string(b, where, v, legacy[k], &s);
        if (lr < 0)
            return -1;
        if (lr > 0) {
            kinds++;
            h->sm.kind = (rt_sm_kind)k;
            h->sm.len = s.len;
            if (!(h->sm.s = rt_strdup(&b->t->arena, s.p, s.len, 0)))
                return rt_oom(b);
        }
    }
    const wf_value *lre = rt_get(v, "safe_regex_match");
    if (lre) {
        wf_str pat;
        kinds++;
        if (rt_get_string(b, where, lre, "regex", &pat) <= 0)
            return rt_fail(b, "%s: safe_regex_match needs a \"regex\" string", where);
        h->sm.kind = RT_SM_REGEX;
        if (!(h->sm.re = rt_regex_compile(b, where, pat)))
            return -1;
    }
    int pr = rt_get_bool(b, where, v, "present_match", &h->present);
    if (pr < 0)
        return -1;
    kinds += pr;
    if (kinds > 1)
        return rt_fail(b, "%s: give only one of string_match, present_match or the *_match fields",
                       where);
    if (kinds == 0 || pr > 0) {
        /* No specifier at all means "the header is present", as in Envoy. */
        h->is_present = 1;
        if (pr == 0)
            h->present = 1;
    }
    return 0;
}

static int rt_compile_query(rt_build *b, const char *route, size_t idx, const wf_value *v,
                            rt_query_match *q)
{
    static const char *const keys[] = {"name", "string_match", "present_match", NULL};
    char where[320];
    snprintf(where, sizeof(where), "%.240s: match.query_parameters[%zu]", route, idx);
    if (rt_host->value_type(v) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object", where);
    if (rt_check_keys(b, where, v, keys) < 0)
        return -1;
    wf_str name;
    int r = rt_get_string(b, where, v, "name", &name);
    if (r < 0)
        return -1;
    if (r == 0 || name.len == 0)
        return rt_fail(b, "%s: needs a parameter \"name\"", where);
    char *copy = rt_strdup(&b->t->arena, name.p, name.len, 0);
    if (!copy)
        return rt_oom(b);
    q->name = (wf_str){copy, name.len};
    int present = 0;
    if (rt_get_bool(b, where, v, "present_match", &present) < 0)
        return -1;
    const wf_value *sm = rt_get(v, "string_match");
    if (sm && rt_get(v, "present_match"))
        return rt_fail(b, "%s: give string_match or present_match, not both", where);
    if (sm) {
        q->has_sm = 1;
        if (rt_compile_strmatch(b, where, sm, &q->sm) < 0)
            return -1;
    }
    return 0;
}

static int rt_compile_match(rt_build *b, const char *where, const wf_value *m, rt_route *r)
{
    static const char *const keys[] = {
        "prefix",         "path",    "safe_regex",       "path_separated_prefix",
        "case_sensitive", "headers", "query_parameters", NULL};
    static const char *const kinds[] = {"prefix", "path", "path_separated_prefix"};
    static const rt_path_kind kind_of[] = {RT_PATH_PREFIX, RT_PATH_EXACT, RT_PATH_SEPARATED};
    char mwhere[300];
    snprintf(mwhere, sizeof(mwhere), "%.240s: match", where);
    if (rt_host->value_type(m) != WF_VALUE_MAP)
        return rt_fail(b, "%s: has no \"match\" object", where);
    if (rt_check_keys(b, mwhere, m, keys) < 0)
        return -1;

    r->case_sensitive = 1;
    if (rt_get_bool(b, mwhere, m, "case_sensitive", &r->case_sensitive) < 0)
        return -1;
    int found = 0;
    for (int k = 0; k < 3; k++) {
        wf_str s;
        int sr = rt_get_string(b, mwhere, m, kinds[k], &s);
        if (sr < 0)
            return -1;
        if (sr > 0) {
            found++;
            r->path_kind = kind_of[k];
            r->path_len = s.len;
            if (!(r->path = rt_strdup(&b->t->arena, s.p, s.len, !r->case_sensitive)))
                return rt_oom(b);
        }
    }
    const wf_value *re = rt_get(m, "safe_regex");
    if (re) {
        wf_str pat;
        found++;
        if (rt_get_string(b, mwhere, re, "regex", &pat) <= 0)
            return rt_fail(b, "%s: safe_regex needs a \"regex\" string", mwhere);
        r->path_kind = RT_PATH_REGEX;
        /* case_sensitive does not apply to regexes in Envoy (nor does
         * Istio's ignoreUriCase): write (?i) in the pattern instead. */
        if (!(r->path_re = rt_regex_compile(b, mwhere, pat)))
            return -1;
    }
    if (found != 1)
        return rt_fail(b,
                       "%s: needs exactly one of prefix, path, safe_regex or "
                       "path_separated_prefix (found %d)",
                       mwhere, found);

    const wf_value *hs = rt_get(m, "headers");
    if (hs) {
        if (rt_host->value_type(hs) != WF_VALUE_LIST)
            return rt_fail(b, "%s: headers must be a list", mwhere);
        r->nheaders = rt_host->value_len(hs);
        r->headers = rt_alloc_array(&b->t->arena, r->nheaders, sizeof(*r->headers));
        if (!r->headers)
            return rt_oom(b);
        for (size_t i = 0; i < r->nheaders; i++)
            if (rt_compile_header(b, where, i, rt_host->value_at(hs, i), &r->headers[i]) < 0)
                return -1;
    }
    const wf_value *qs = rt_get(m, "query_parameters");
    if (qs) {
        if (rt_host->value_type(qs) != WF_VALUE_LIST)
            return rt_fail(b, "%s: query_parameters must be a list", mwhere);
        r->nqueries = rt_host->value_len(qs);
        r->queries = rt_alloc_array(&b->t->arena, r->nqueries, sizeof(*r->queries));
        if (!r->queries)
            return rt_oom(b);
        for (size_t i = 0; i < r->nqueries; i++)
            if (rt_compile_query(b, where, i, rt_host->value_at(qs, i), &r->queries[i]) < 0)
                return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Per-route features: typed_per_filter_config.router
 *
 * The translator writes Istio's HTTPRoute fields there under Istio's names.
 * What the router implements is compiled here; what it does not (mirror,
 * mirrors, fields a later translator may add) is accepted and ignored with
 * a debug log, because a proxy must not refuse to start over a feature it
 * merely lacks.  Malformed values of the implemented fields are refused:
 * a rewrite or redirect silently dropped would send traffic elsewhere.
 * ------------------------------------------------------------------------ */

static void rt_ignored(const char *where, const char *key, const char *why)
{
    if (rt_host->log_enabled(WF_LOG_DEBUG))
        rt_host->log(WF_LOG_DEBUG, "router", "%s: %s is %s; ignored", where, key, why);
}

/* RFC 9110 token characters, what a header name is made of. */
static int rt_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A header value may not hold what would end the header line. */
static int rt_value_ok(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return 0;
    return 1;
}

/* Checks and copies (lower-cased) the name of one header operation. */
static int rt_hop_name(rt_build *b, const char *where, const char *p, size_t n, int request,
                       wf_str *out)
{
    int shown = n > 64 ? 64 : (int)n;
    if (n == 0)
        return rt_fail(b, "%s: a header name is empty", where);
    if (p[0] == ':')
        return rt_fail(b,
                       "%s: \"%.*s\": pseudo-headers cannot be changed by header operations (Istio "
                       "and Envoy refuse it too); use rewrite.uri or rewrite.authority",
                       where, shown, p);
    if (request && n == 4 && rt_eq_ci(p, "host", 4))
        return rt_fail(b,
                       "%s: \"host\" cannot be changed by header operations (Istio and Envoy "
                       "refuse it too); use rewrite.authority",
                       where);
    for (size_t i = 0; i < n; i++)
        if (!rt_is_tchar((unsigned char)p[i]))
            return rt_fail(b, "%s: \"%.*s\" is not a valid HTTP header name", where, shown, p);
    char *copy = rt_strdup(&b->t->arena, p, n, 1);
    if (!copy)
        return rt_oom(b);
    *out = (wf_str){copy, n};
    return 0;
}

/* Counts (when out->ops is NULL) or fills one HeaderOperations object
 * {set, add, remove} into out, after what is already there. */
static int rt_hops_pass(rt_build *b, const char *where, const wf_value *v, int request,
                        rt_hops *out, size_t *nrm, size_t *nops)
{
    static const char *const kinds[] = {"set", "add"};
    char w[400];
    if (rt_host->value_type(v) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object with set, add and remove", where);
    int fill = out->ops != NULL || out->remove != NULL;
    size_t nk = rt_host->value_len(v);
    for (size_t i = 0; !fill && i < nk; i++) {
        const char *k = rt_host->value_key_at(v, i);
        if (k && strcmp(k, "set") && strcmp(k, "add") && strcmp(k, "remove"))
            rt_ignored(where, k, "not a header operation the router knows");
    }
    for (int k = 0; k < 2; k++) {
        const wf_value *m = rt_get(v, kinds[k]);
        if (!m || rt_host->value_type(m) == WF_VALUE_NULL)
            continue;
        snprintf(w, sizeof(w), "%.300s.%s", where, kinds[k]);
        if (rt_host->value_type(m) != WF_VALUE_MAP)
            return rt_fail(b, "%s: must be a map of header name to value", w);
        size_t n = rt_host->value_len(m);
        for (size_t i = 0; i < n; i++) {
            const char *key = rt_host->value_key_at(m, i);
            size_t vlen = 0;
            const char *val = rt_host->value_string(rt_host->value_at(m, i), &vlen);
            if (!key || !val)
                return rt_fail(b, "%s: the value of \"%s\" must be a string", w, key ? key : "");
            if (!rt_value_ok(val, vlen))
                return rt_fail(b,
                               "%s: the value of \"%s\" contains a line break or NUL byte, which "
                               "would corrupt the HTTP message",
                               w, key);
            if (fill) {
                rt_hop *op = (rt_hop *)&out->ops[*nops];
                if (rt_hop_name(b, w, key, strlen(key), request, &op->name) < 0)
                    return -1;
                char *copy = rt_strdup(&b->t->arena, val, vlen, 0);
                if (!copy)
                    return rt_oom(b);
                op->value = (wf_str){copy, vlen};
                op->add = k == 1;
            }
            (*nops)++;
        }
    }
    const wf_value *rm = rt_get(v, "remove");
    if (rm && rt_host->value_type(rm) != WF_VALUE_NULL) {
        snprintf(w, sizeof(w), "%.300s.remove", where);
        if (rt_host->value_type(rm) != WF_VALUE_LIST)
            return rt_fail(b, "%s: must be a list of header names", w);
        size_t n = rt_host->value_len(rm);
        for (size_t i = 0; i < n; i++) {
            size_t len = 0;
            const char *name = rt_host->value_string(rt_host->value_at(rm, i), &len);
            if (!name)
                return rt_fail(b, "%s[%zu]: must be a string", w, i);
            if (fill && rt_hop_name(b, w, name, len, request, (wf_str *)&out->remove[*nrm]) < 0)
                return -1;
            (*nrm)++;
        }
    }
    return 0;
}

/* Compiles one direction (request or response) of Istio Headers objects
 * hv[0..n) (NULL entries skipped) into out, as one level: Istio merges a
 * lone destination's headers into the route's list, after the route's. */
static int rt_compile_hops(rt_build *b, const char *const *where, const wf_value *const *hv,
                           size_t n, int request, rt_hops *out)
{
    const char *dir = request ? "request" : "response";
    char w[400];
    size_t nrm = 0, nops = 0;
    *out = (rt_hops){NULL, 0, NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (nrm + nops == 0)
                return 0;
            out->remove = rt_alloc_array(&b->t->arena, nrm ? nrm : 1, sizeof(wf_str));
            out->ops = rt_alloc_array(&b->t->arena, nops ? nops : 1, sizeof(rt_hop));
            if (!out->remove || !out->ops)
                return rt_oom(b);
            out->nremove = nrm;
            out->nops = nops;
            nrm = nops = 0;
        }
        for (size_t i = 0; i < n; i++) {
            const wf_value *d = rt_get(hv[i], dir);
            if (!d || rt_host->value_type(d) == WF_VALUE_NULL)
                continue;
            snprintf(w, sizeof(w), "%.300s.%s", where[i], dir);
            if (rt_hops_pass(b, w, d, request, out, &nrm, &nops) < 0)
                return -1;
        }
    }
    return 0;
}

/* Istio Headers objects hv[0..n) as one level of request and response
 * operations; *out stays NULL when there is nothing to do. */
static int rt_compile_headers(rt_build *b, const char *const *where, const wf_value *const *hv,
                              size_t n, const rt_headers **out)
{
    *out = NULL;
    for (size_t i = 0; i < n; i++)
        if (hv[i] && rt_host->value_type(hv[i]) != WF_VALUE_MAP &&
            rt_host->value_type(hv[i]) != WF_VALUE_NULL)
            return rt_fail(b, "%s: must be an object with request and response", where[i]);
    rt_headers h;
    if (rt_compile_hops(b, where, hv, n, 1, &h.req) < 0 ||
        rt_compile_hops(b, where, hv, n, 0, &h.resp) < 0)
        return -1;
    if (h.req.nremove + h.req.nops + h.resp.nremove + h.resp.nops == 0)
        return 0;
    rt_headers *copy = rt_alloc(&b->t->arena, sizeof(*copy));
    if (!copy)
        return rt_oom(b);
    *copy = h;
    *out = copy;
    if (h.resp.nremove + h.resp.nops)
        b->t->has_resp_ops = 1;
    return 0;
}

static int rt_hops_empty(const rt_hops *h)
{
    return h->nremove + h->nops == 0;
}

/* RE2's rewrite syntax (\0-\9 groups, \\ a backslash; Envoy checks it with
 * RE2::CheckRewriteString) into PCRE2's ("${N}", "$$" a dollar). */
static int rt_convert_rewrite(rt_build *b, const char *where, wf_str in, uint32_t groups,
                              wf_str *out)
{
    char *o = rt_alloc(&b->t->arena, in.len * 4 + 1);
    size_t n = 0;
    if (!o)
        return rt_oom(b);
    for (size_t i = 0; i < in.len; i++) {
        char c = in.p[i];
        if (c == '$') {
            o[n++] = '$';
            o[n++] = '$';
        } else if (c != '\\') {
            o[n++] = c;
        } else if (i + 1 == in.len) {
            return rt_fail(b, "%s: rewrite ends with a lone backslash (write \\\\ for one)", where);
        } else if (in.p[i + 1] >= '0' && in.p[i + 1] <= '9') {
            uint32_t g = (uint32_t)(in.p[++i] - '0');
            if (g > groups)
                return rt_fail(b,
                               "%s: rewrite refers to group \\%u but the regex has only %u "
                               "capture group%s",
                               where, g, groups, groups == 1 ? "" : "s");
            n += (size_t)sprintf(o + n, "${%u}", g);
        } else if (in.p[i + 1] == '\\') {
            o[n++] = '\\'; /* literal in PCRE2's default replacement syntax */
            i++;
        } else {
            return rt_fail(b,
                           "%s: rewrite has \"\\%c\"; only \\0 to \\9 (groups) and \\\\ (a "
                           "backslash) may follow a backslash",
                           where, in.p[i + 1]);
        }
    }
    o[n] = '\0';
    *out = (wf_str){o, n};
    return 0;
}

/* Istio's HTTPRewrite: uri, authority, uriRegexRewrite {match, rewrite}. */
static int rt_compile_rewrite(rt_build *b, const char *where, const wf_value *rw, rt_route *r)
{
    char w[400];
    snprintf(w, sizeof(w), "%.300s: typed_per_filter_config.router.rewrite", where);
    if (rt_host->value_type(rw) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object", w);
    wf_str s;
    int sr = rt_get_string(b, w, rw, "uri", &s);
    if (sr < 0)
        return -1;
    if (sr > 0 && s.len > 0) { /* Istio ignores an empty uri */
        if (!rt_value_ok(s.p, s.len))
            return rt_fail(b, "%s: uri contains a line break or NUL byte", w);
        if (!(r->rw_uri.p = rt_strdup(&b->t->arena, s.p, s.len, 0)))
            return rt_oom(b);
        r->rw_uri.len = s.len;
        r->has_rw_uri = 1;
    }
    sr = rt_get_string(b, w, rw, "authority", &s);
    if (sr < 0)
        return -1;
    if (sr > 0 && s.len > 0) {
        if (!rt_value_ok(s.p, s.len) || memchr(s.p, ' ', s.len) || memchr(s.p, '/', s.len))
            return rt_fail(b, "%s: authority \"%.*s\" is not a host[:port]", w,
                           s.len > 64 ? 64 : (int)s.len, s.p);
        if (!(r->rw_auth.p = rt_strdup(&b->t->arena, s.p, s.len, 0)))
            return rt_oom(b);
        r->rw_auth.len = s.len;
        r->has_rw_auth = 1;
    }
    const wf_value *rx = rt_get(rw, "uriRegexRewrite");
    if (rx && rt_host->value_type(rx) != WF_VALUE_NULL) {
        char rw_where[440];
        snprintf(rw_where, sizeof(rw_where), "%s.uriRegexRewrite", w);
        wf_str pat, sub;
        if (rt_host->value_type(rx) != WF_VALUE_MAP ||
            rt_get_string(b, rw_where, rx, "match", &pat) <= 0 ||
            rt_get_string(b, rw_where, rx, "rewrite", &sub) <= 0)
            return rt_fail(b, "%s: needs \"match\" (a regex) and \"rewrite\" strings", rw_where);
        if (r->has_rw_uri)
            return rt_fail(b, "%s: give uri or uriRegexRewrite, not both", w);
        if (!(r->rw_re = rt_regex_compile_opt(b, rw_where, pat, 0)))
            return -1;
        if (!rt_value_ok(sub.p, sub.len))
            return rt_fail(b, "%s: rewrite contains a line break or NUL byte", rw_where);
        if (rt_convert_rewrite(b, rw_where, sub, r->rw_re->pairs - 1, &r->rw_sub) < 0)
            return -1;
    }
    size_t nk = rt_host->value_len(rw);
    for (size_t i = 0; i < nk; i++) {
        const char *k = rt_host->value_key_at(rw, i);
        if (k && strcmp(k, "uri") && strcmp(k, "authority") && strcmp(k, "uriRegexRewrite"))
            rt_ignored(w, k, "not a rewrite field the router knows");
    }
    return 0;
}

/* The ":port" at the end of host[0..n), or an empty string. */
static wf_str rt_port_of(const char *h, size_t n)
{
    size_t hn = rt_strip_port(h, n);
    return (wf_str){h + hn, n - hn};
}

/* Istio's HTTPRedirect: uri, authority, port | derivePort, scheme,
 * redirectCode.  FROM_REQUEST_PORT is the service port the route serves,
 * which the translator puts at the end of the virtual host's name
 * ("HOST:P"); Istio likewise fixes it per listener port. */
static int rt_compile_redirect(rt_build *b, const char *where, const rt_vhost *vh,
                               const wf_value *rd, rt_route *r)
{
    char w[400];
    snprintf(w, sizeof(w), "%.300s: typed_per_filter_config.router.redirect", where);
    if (rt_host->value_type(rd) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object", w);
    rt_redirect *x = rt_alloc(&b->t->arena, sizeof(*x));
    if (!x)
        return rt_oom(b);
    uint64_t code = 301;
    if (rt_get_uint(b, w, rd, "redirectCode", 399, &code) < 0)
        return -1;
    if (code < 300)
        return rt_fail(b, "%s: redirectCode %llu is not a 3xx status", w, (unsigned long long)code);
    x->code = (int)code;

    wf_str s;
    int sr = rt_get_string(b, w, rd, "uri", &s);
    if (sr < 0)
        return -1;
    if (sr > 0 && s.len > 0) {
        if (!rt_value_ok(s.p, s.len) || memchr(s.p, ' ', s.len))
            return rt_fail(b, "%s: uri contains a space, line break or NUL byte", w);
        if (!(x->path.p = rt_strdup(&b->t->arena, s.p, s.len, 0)))
            return rt_oom(b);
        x->path.len = s.len;
        x->has_path = 1;
        x->path_has_query = memchr(s.p, '?', s.len) != NULL;
    }
    sr = rt_get_string(b, w, rd, "authority", &s);
    if (sr < 0)
        return -1;
    if (sr > 0 && s.len > 0) {
        if (!rt_value_ok(s.p, s.len) || memchr(s.p, ' ', s.len) || memchr(s.p, '/', s.len))
            return rt_fail(b, "%s: authority \"%.*s\" is not a host[:port]", w,
                           s.len > 64 ? 64 : (int)s.len, s.p);
        if (!(x->host.p = rt_strdup(&b->t->arena, s.p, s.len, 0)))
            return rt_oom(b);
        x->host.len = s.len;
    }
    sr = rt_get_string(b, w, rd, "scheme", &s);
    if (sr < 0)
        return -1;
    if (sr > 0 && s.len > 0) {
        /* RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
        int ok = rt_lower((unsigned char)s.p[0]) >= 'a' && rt_lower((unsigned char)s.p[0]) <= 'z';
        for (size_t i = 1; ok && i < s.len; i++) {
            unsigned char c = rt_lower((unsigned char)s.p[i]);
            ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
                 c == '.';
        }
        if (!ok)
            return rt_fail(b, "%s: scheme \"%.*s\" is not a URL scheme (http, https, ...)", w,
                           s.len > 32 ? 32 : (int)s.len, s.p);
        if (!(x->scheme.p = rt_strdup(&b->t->arena, s.p, s.len, 1)))
            return rt_oom(b);
        x->scheme.len = s.len;
    }
    uint64_t port = 0;
    int pr = rt_get_uint(b, w, rd, "port", 65535, &port);
    if (pr < 0)
        return -1;
    wf_str derive = {NULL, 0};
    if (rt_get_string(b, w, rd, "derivePort", &derive) < 0)
        return -1;
    char pbuf[16];
    if (pr > 0 && port > 0) {
        int n = snprintf(pbuf, sizeof(pbuf), ":%u", (unsigned)port);
        if (!(x->port.p = rt_strdup(&b->t->arena, pbuf, (size_t)n, 0)))
            return rt_oom(b);
        x->port.len = (size_t)n;
    } else if (derive.p && derive.len == 17 && memcmp(derive.p, "FROM_REQUEST_PORT", 17) == 0) {
        wf_str vp = rt_port_of(vh->name, strlen(vh->name));
        if (vp.len > 1)
            x->port = vp; /* vh->name lives in the table's arena */
        else
            x->port_from_request = 1;
    } else if (derive.p &&
               !(derive.len == 21 && memcmp(derive.p, "FROM_PROTOCOL_DEFAULT", 21) == 0)) {
        rt_host->log(WF_LOG_WARN, "router",
                     "%s: derivePort \"%s\" is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT; "
                     "using FROM_PROTOCOL_DEFAULT",
                     w, derive.p);
    }
    if (x->port.len && x->host.len)
        x->host.len = rt_strip_port(x->host.p, x->host.len); /* the port is swapped */

    static const char *const known[] = {"redirectCode", "uri",        "authority", "scheme",
                                        "port",         "derivePort", NULL};
    size_t nk = rt_host->value_len(rd);
    for (size_t i = 0; i < nk; i++) {
        const char *k = rt_host->value_key_at(rd, i);
        size_t j = 0;
        while (k && known[j] && strcmp(known[j], k))
            j++;
        if (k && !known[j])
            rt_ignored(w, k, "not a redirect field the router knows");
    }
    r->action = RT_ACT_REDIRECT;
    r->redirect = x;
    return 0;
}

/* An Envoy duration in proto3 JSON ("1.5s", up to 9 decimals) in whole
 * milliseconds (truncated, as Envoy converts it); -1 when malformed. */
static int64_t rt_parse_duration_ms(const char *p, size_t n)
{
    if (n < 2 || p[n - 1] != 's' || p[0] < '0' || p[0] > '9')
        return -1;
    n--;
    uint64_t sec = 0, ms = 0;
    size_t i = 0, fd = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        sec = sec * 10 + (uint64_t)(p[i++] - '0');
        if (sec > 315576000000ull) /* Envoy's (and protobuf's) maximum */
            return -1;
    }
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            if (fd < 3)
                ms = ms * 10 + (uint64_t)(p[i] - '0');
            fd++;
            i++;
        }
        if (fd == 0 || fd > 9)
            return -1;
        for (size_t k = fd; k < 3; k++)
            ms *= 10;
    }
    if (i != n)
        return -1;
    return (int64_t)(sec * 1000 + ms);
}

/* The route's typed_per_filter_config.router, besides its action
 * (directResponse and redirect, compiled with the other actions). */
static int rt_compile_router_cfg(rt_build *b, const char *where, const wf_value *mine, rt_route *r)
{
    char w[400];
    snprintf(w, sizeof(w), "%.300s: typed_per_filter_config.router", where);
    if (!mine || rt_host->value_type(mine) == WF_VALUE_NULL)
        return 0;
    if (rt_host->value_type(mine) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object", w);

    /* Headers: the route's, then a lone destination's, as one level. */
    const wf_value *hv[2] = {rt_get(mine, "headers"), rt_get(mine, "destinationHeaders")};
    char w0[440], w1[440];
    snprintf(w0, sizeof(w0), "%s.headers", w);
    snprintf(w1, sizeof(w1), "%s.destinationHeaders", w);
    const char *hw[2] = {w0, w1};
    if (rt_compile_headers(b, hw, hv, 2, &r->hdrs) < 0)
        return -1;

    const wf_value *rw = rt_get(mine, "rewrite");
    if (rw && rt_host->value_type(rw) != WF_VALUE_NULL) {
        if (r->action == RT_ACT_REDIRECT || r->action == RT_ACT_DIRECT)
            rt_ignored(w, "rewrite", "meaningless on a route that answers itself");
        else if (rt_compile_rewrite(b, where, rw, r) < 0)
            return -1;
    }

    const wf_value *to = rt_get(mine, "timeout");
    if (to && rt_host->value_type(to) != WF_VALUE_NULL) {
        size_t len = 0;
        const char *ts = rt_host->value_string(to, &len);
        int64_t ms = ts ? rt_parse_duration_ms(ts, len) : -1;
        if (ms < 0) {
            /* Only a timeout, which nothing enforces yet: not worth
             * refusing the configuration over. */
            rt_host->log(WF_LOG_WARN, "router",
                         "%s: timeout is not a duration such as \"1.5s\"; ignored", w);
        } else {
            char buf[24];
            int n = snprintf(buf, sizeof(buf), "%lld", (long long)ms);
            if (!(r->timeout.p = rt_strdup(&b->t->arena, buf, (size_t)n, 0)))
                return rt_oom(b);
            r->timeout.len = (size_t)n;
            r->has_timeout = 1;
        }
    }

    static const char *const known[] = {"headers",  "destinationHeaders", "rewrite", "timeout",
                                        "redirect", "directResponse",     NULL};
    size_t nk = rt_host->value_len(mine);
    for (size_t i = 0; i < nk; i++) {
        const char *k = rt_host->value_key_at(mine, i);
        size_t j = 0;
        while (k && known[j] && strcmp(known[j], k))
            j++;
        if (k && !known[j])
            rt_ignored(w, k, "not implemented by the weft router");
    }
    return 0;
}

static int rt_compile_weighted(rt_build *b, const char *where, const wf_value *wc, rt_route *r)
{
    const wf_value *cl = rt_get(wc, "clusters");
    if (rt_host->value_type(cl) != WF_VALUE_LIST || rt_host->value_len(cl) == 0)
        return rt_fail(b, "%s: weighted_clusters needs a non-empty \"clusters\" list", where);
    r->action = RT_ACT_WEIGHTED;
    r->nwc = rt_host->value_len(cl);
    r->wc = rt_alloc_array(&b->t->arena, r->nwc, sizeof(*r->wc));
    if (!r->wc)
        return rt_oom(b);
    uint64_t sum = 0;
    for (size_t i = 0; i < r->nwc; i++) {
        const wf_value *c = rt_host->value_at(cl, i);
        char cwhere[320];
        snprintf(cwhere, sizeof(cwhere), "%.240s: weighted_clusters.clusters[%zu]", where, i);
        wf_str name;
        int nr = rt_get_string(b, cwhere, c, "name", &name);
        if (nr < 0)
            return -1;
        if (nr == 0 || name.len == 0)
            return rt_fail(b, "%s: needs a cluster \"name\"", cwhere);
        uint64_t w = 0;
        int wr = rt_get_uint(b, cwhere, c, "weight", UINT32_MAX, &w);
        if (wr < 0)
            return -1;
        if (wr == 0)
            return rt_fail(b, "%s (\"%s\"): needs a \"weight\"", cwhere, name.p);
        sum += w;
        r->wc[i].cum = sum;
        if (!(r->wc[i].name = rt_strdup(&b->t->arena, name.p, name.len, 0)))
            return rt_oom(b);
        /* The translator puts a weighted destination's own Istio headers
         * here; Envoy applies them before the route's. */
        const wf_value *mine = rt_get(rt_get(c, "typed_per_filter_config"), "router");
        if (mine && rt_host->value_type(mine) != WF_VALUE_NULL) {
            char hwhere[400];
            snprintf(hwhere, sizeof(hwhere), "%.280s (\"%.64s\"): typed_per_filter_config.router",
                     cwhere, r->wc[i].name);
            if (rt_host->value_type(mine) != WF_VALUE_MAP)
                return rt_fail(b, "%s: must be an object", hwhere);
            char hw[440];
            snprintf(hw, sizeof(hw), "%s.headers", hwhere);
            const wf_value *hv[1] = {rt_get(mine, "headers")};
            const char *hwp[1] = {hw};
            if (rt_compile_headers(b, hwp, hv, 1, &r->wc[i].hdrs) < 0)
                return -1;
            size_t nk = rt_host->value_len(mine);
            for (size_t k = 0; k < nk; k++) {
                const char *key = rt_host->value_key_at(mine, k);
                if (key && strcmp(key, "headers"))
                    rt_ignored(hwhere, key, "not implemented for a weighted destination");
            }
        }
    }
    uint64_t total = 0;
    int tr = rt_get_uint(b, where, wc, "total_weight", UINT32_MAX, &total);
    if (tr < 0)
        return -1;
    if (tr > 0 && total != sum)
        return rt_fail(b,
                       "%s: weighted_clusters total_weight is %llu but the weights add up to "
                       "%llu; make them agree or drop total_weight",
                       where, (unsigned long long)total, (unsigned long long)sum);
    if (sum == 0)
        return rt_fail(b, "%s: weighted_clusters total weight is 0", where);
    r->total = sum;
    return 0;
}

/* Decodes standard base64 (padding optional) into out, which has room for
 * n bytes; returns the decoded length or -1 on a bad character. */
static long rt_base64_decode(const char *in, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    long o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else if (c == '=')
            break;
        else
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    return o;
}

/* A direct response, in Envoy's form (direct_response: status, body
 * inline_string or inline_bytes) or in the translator's Istio form
 * (typed_per_filter_config.router.directResponse: status, body string or
 * bytes).  Bytes are base64, as proto3 JSON writes them. */
static int rt_compile_direct(rt_build *b, const char *where, const wf_value *d, const char *what,
                             const char *str_key, const char *bytes_key, rt_route *r)
{
    uint64_t status = 0;
    int sr = rt_get_uint(b, where, d, "status", 599, &status);
    if (sr < 0)
        return -1;
    if (sr == 0 || status < 200)
        return rt_fail(b, "%s: %s needs a \"status\" from 200 to 599", where, what);
    r->action = RT_ACT_DIRECT;
    r->direct_status = (int)status;
    r->direct_body = (wf_str){"", 0};
    const wf_value *body = rt_get(d, "body");
    if (!body)
        return 0;
    wf_str s;
    int str = rt_get_string(b, where, body, str_key, &s);
    if (str < 0)
        return -1;
    if (str > 0) {
        char *copy = rt_strdup(&b->t->arena, s.p, s.len, 0);
        if (!copy)
            return rt_oom(b);
        r->direct_body = (wf_str){copy, s.len};
        return 0;
    }
    if (rt_get_string(b, where, body, bytes_key, &s) <= 0)
        return rt_fail(b, "%s: %s.body needs \"%s\" or \"%s\"", where, what, str_key, bytes_key);
    char *out = rt_alloc(&b->t->arena, s.len + 1);
    if (!out)
        return rt_oom(b);
    long n = rt_base64_decode(s.p, s.len, out);
    if (n < 0)
        return rt_fail(b, "%s: %s.body.%s is not valid base64", where, what, bytes_key);
    r->direct_body = (wf_str){out, (size_t)n};
    return 0;
}

static int rt_compile_action(rt_build *b, const char *where, const rt_vhost *vh, const wf_value *rv,
                             rt_route *r)
{
    const wf_value *act = rt_get(rv, "route");
    const wf_value *direct = rt_get(rv, "direct_response");
    /* The translator puts Istio's redirect and directResponse into the
     * router's per-route config and leaves "route" out. */
    const wf_value *mine = rt_get(rt_get(rv, "typed_per_filter_config"), "router");
    const wf_value *idirect = rt_get(mine, "directResponse");
    const wf_value *iredirect = rt_get(mine, "redirect");
    if (!!act + !!direct + !!idirect + !!iredirect > 1)
        return rt_fail(b,
                       "%s: give only one of \"route\", \"direct_response\", "
                       "typed_per_filter_config.router.directResponse or "
                       "typed_per_filter_config.router.redirect",
                       where);
    if (direct)
        return rt_compile_direct(b, where, direct, "direct_response", "inline_string",
                                 "inline_bytes", r);
    if (idirect)
        return rt_compile_direct(b, where, idirect, "directResponse", "string", "bytes", r);
    if (iredirect)
        return rt_compile_redirect(b, where, vh, iredirect, r);
    if (!act) {
        if (rt_get(rv, "redirect"))
            return rt_fail(b,
                           "%s: Envoy's route-level \"redirect\" is not supported by the weft "
                           "router; give Istio's redirect in "
                           "typed_per_filter_config.router.redirect (as the translator does)",
                           where);
        return rt_fail(b,
                       "%s: has no route action (\"route\" with \"cluster\" or "
                       "\"weighted_clusters\")",
                       where);
    }
    if (rt_host->value_type(act) != WF_VALUE_MAP)
        return rt_fail(b, "%s: \"route\" must be an object", where);
    const wf_value *wc = rt_get(act, "weighted_clusters");
    wf_str cluster = {NULL, 0};
    int cr = rt_get_string(b, where, act, "cluster", &cluster);
    if (cr < 0)
        return -1;
    if (cr > 0 && wc)
        return rt_fail(b, "%s: route has both \"cluster\" and \"weighted_clusters\"", where);
    if (wc)
        return rt_compile_weighted(b, where, wc, r);
    if (cr == 0) {
        if (rt_get(act, "cluster_header"))
            return rt_fail(b, "%s: route.cluster_header is not supported by the weft router",
                           where);
        return rt_fail(b, "%s: route action needs \"cluster\" or \"weighted_clusters\"", where);
    }
    if (cluster.len == 0)
        return rt_fail(b, "%s: route.cluster is empty", where);
    r->action = RT_ACT_CLUSTER;
    if (!(r->cluster = rt_strdup(&b->t->arena, cluster.p, cluster.len, 0)))
        return rt_oom(b);
    return 0;
}

static int rt_compile_route(rt_build *b, const rt_vhost *vh, size_t idx, const wf_value *rv,
                            rt_route *r)
{
    char where[300];
    snprintf(where, sizeof(where), "virtual host \"%.200s\": routes[%zu]", vh->name, idx);
    if (rt_host->value_type(rv) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object", where);
    wf_str name;
    int nr = rt_get_string(b, where, rv, "name", &name);
    if (nr < 0)
        return -1;
    if (nr > 0 && name.len > 0) {
        r->name = rt_strdup(&b->t->arena, name.p, name.len, 0);
    } else {
        char def[300];
        int n = snprintf(def, sizeof(def), "%.250s/%zu", vh->name, idx);
        r->name = rt_strdup(&b->t->arena, def, n < 0 ? 0 : (size_t)n, 0);
    }
    if (!r->name)
        return rt_oom(b);
    r->node = rv;
    snprintf(where, sizeof(where), "route \"%.200s\"", r->name);
    if (rt_compile_match(b, where, rt_get(rv, "match"), r) < 0)
        return -1;
    if (rt_compile_action(b, where, vh, rv, r) < 0)
        return -1;
    if (rt_compile_router_cfg(b, where, rt_get(rt_get(rv, "typed_per_filter_config"), "router"),
                              r) < 0)
        return -1;
    r->extras = r->hdrs || r->has_rw_uri || r->rw_re || r->has_rw_auth || r->has_timeout;
    for (size_t i = 0; i < r->nwc; i++)
        r->extras |= r->wc[i].hdrs != NULL;
    return 0;
}

static int rt_cmp_wild(const void *a, const void *b)
{
    const rt_wild *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Adds dom (lower-cased) to the exact table; refuses a duplicate. */
static int rt_add_domain(rt_build *b, const rt_vhost *vh, const char *dom, size_t len)
{
    rt_table *t = b->t;
    uint32_t hash = rt_hash_ci(dom, len);
    size_t mask = t->nslots - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        rt_slot *sl = &t->slots[i];
        if (!sl->vh) {
            *sl = (rt_slot){dom, len, hash, vh};
            return 0;
        }
        if (sl->hash == hash && sl->len == len && memcmp(sl->dom, dom, len) == 0) {
            if (sl->vh == vh)
                return rt_fail(b, "virtual host \"%s\": domain \"%s\" is listed twice", vh->name,
                               dom);
            return rt_fail(b,
                           "virtual host \"%s\": domain \"%s\" is also listed by virtual host "
                           "\"%s\" (domains must be unique across the route table)",
                           vh->name, dom, sl->vh->name);
        }
    }
}

static int rt_compile_vhost(rt_build *b, size_t idx, const wf_value *v, rt_vhost *vh)
{
    rt_table *t = b->t;
    char where[300];
    snprintf(where, sizeof(where), "virtual_hosts[%zu]", idx);
    if (rt_host->value_type(v) != WF_VALUE_MAP)
        return rt_fail(b, "%s: must be an object", where);
    wf_str name;
    int nr = rt_get_string(b, where, v, "name", &name);
    if (nr < 0)
        return -1;
    if (nr > 0 && name.len > 0)
        vh->name = rt_strdup(&t->arena, name.p, name.len, 0);
    else
        vh->name = rt_strdup(&t->arena, where, strlen(where), 0);
    if (!vh->name)
        return rt_oom(b);
    snprintf(where, sizeof(where), "virtual host \"%.200s\"", vh->name);

    const wf_value *doms = rt_get(v, "domains");
    if (rt_host->value_type(doms) != WF_VALUE_LIST || rt_host->value_len(doms) == 0)
        return rt_fail(b, "%s: needs a non-empty \"domains\" list", where);
    size_t nd = rt_host->value_len(doms);
    for (size_t i = 0; i < nd; i++) {
        size_t len = 0;
        const char *s = rt_host->value_string(rt_host->value_at(doms, i), &len);
        if (!s || len == 0)
            return rt_fail(b, "%s: domains[%zu] must be a non-empty string", where, i);
        char *dom = rt_strdup(&t->arena, s, len, 1);
        if (!dom)
            return rt_oom(b);
        if (rt_add_domain(b, vh, dom, len) < 0)
            return -1;
        const char *star = memchr(dom, '*', len);
        if (!star)
            continue;
        if (len == 1) {
            t->any = vh;
        } else if (star == dom && !memchr(dom + 1, '*', len - 1)) {
            t->suffixes[t->nsuffixes++] = (rt_wild){dom + 1, len - 1, t->nsuffixes, vh};
        } else if (star == dom + len - 1) {
            t->prefixes[t->nprefixes++] = (rt_wild){dom, len - 1, t->nprefixes, vh};
        } else {
            return rt_fail(b,
                           "%s: domain \"%s\": a wildcard '*' may only stand alone, start the "
                           "domain (\"*.example.com\") or end it (\"example.*\")",
                           where, dom);
        }
    }

    const wf_value *routes = rt_get(v, "routes");
    if (routes && rt_host->value_type(routes) != WF_VALUE_LIST)
        return rt_fail(b, "%s: routes must be a list", where);
    vh->nroutes = routes ? rt_host->value_len(routes) : 0;
    vh->routes = rt_alloc_array(&t->arena, vh->nroutes, sizeof(*vh->routes));
    if (!vh->routes)
        return rt_oom(b);
    for (size_t i = 0; i < vh->nroutes; i++)
        if (rt_compile_route(b, vh, i, rt_host->value_at(routes, i), &vh->routes[i]) < 0)
            return -1;
    t->nroutes += vh->nroutes;
    return 0;
}

static void rt_table_free(rt_table *t)
{
    if (!t)
        return;
    for (rt_regex *re = t->regexes; re; re = re->next)
        pcre2_code_free(re->code);
    pcre2_match_context_free(t->mctx);
    rt_arena arena = t->arena; /* t itself lives in the arena */
    rt_arena_free(&arena);
}

/* Compiles a RouteConfiguration (or NULL: no routes at all).  Returns the
 * table (owned by the caller, freed with rt_table_free) or NULL with err. */
static rt_table *rt_table_build(const wf_value *rc, int strip_port, char *err, size_t errlen)
{
    rt_arena arena = {NULL};
    rt_table *t = rt_alloc(&arena, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory compiling the route table");
        return NULL;
    }
    t->arena = arena;
    t->strip_port = strip_port;
    rt_build b = {t, err, errlen};
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->mctx) {
        rt_oom(&b);
        goto fail;
    }
    pcre2_set_match_limit(t->mctx, RT_MATCH_LIMIT);
    pcre2_set_depth_limit(t->mctx, RT_DEPTH_LIMIT);
    pcre2_set_heap_limit(t->mctx, RT_HEAP_LIMIT_KIB);
    if (!rc || rt_host->value_type(rc) == WF_VALUE_NULL)
        return t;
    if (rt_host->value_type(rc) != WF_VALUE_MAP) {
        rt_fail(&b, "route table: must be a RouteConfiguration object");
        goto fail;
    }
    const wf_value *vhs = rt_get(rc, "virtual_hosts");
    if (vhs && rt_host->value_type(vhs) != WF_VALUE_LIST) {
        rt_fail(&b, "route table: virtual_hosts must be a list");
        goto fail;
    }
    t->nvhosts = vhs ? rt_host->value_len(vhs) : 0;

    /* Size the domain table and the wildcard lists before filling them. */
    size_t ndom = 0, nwild = 0;
    for (size_t i = 0; i < t->nvhosts; i++) {
        const wf_value *d = rt_get(rt_host->value_at(vhs, i), "domains");
        size_t n = rt_host->value_type(d) == WF_VALUE_LIST ? rt_host->value_len(d) : 0;
        ndom += n;
        for (size_t j = 0; j < n; j++) {
            size_t len = 0;
            const char *s = rt_host->value_string(rt_host->value_at(d, j), &len);
            if (s && memchr(s, '*', len))
                nwild++;
        }
    }
    t->nslots = 16;
    while (t->nslots < 2 * ndom)
        t->nslots *= 2;
    t->vhosts = rt_alloc_array(&t->arena, t->nvhosts, sizeof(*t->vhosts));
    t->slots = rt_alloc_array(&t->arena, t->nslots, sizeof(*t->slots));
    t->suffixes = rt_alloc_array(&t->arena, nwild, sizeof(*t->suffixes));
    t->prefixes = rt_alloc_array(&t->arena, nwild, sizeof(*t->prefixes));
    if (!t->vhosts || !t->slots || !t->suffixes || !t->prefixes) {
        rt_oom(&b);
        goto fail;
    }
    for (size_t i = 0; i < t->nvhosts; i++)
        if (rt_compile_vhost(&b, i, rt_host->value_at(vhs, i), &t->vhosts[i]) < 0)
            goto fail;
    qsort(t->suffixes, t->nsuffixes, sizeof(*t->suffixes), rt_cmp_wild);
    qsort(t->prefixes, t->nprefixes, sizeof(*t->prefixes), rt_cmp_wild);
    return t;
fail:
    rt_table_free(t);
    return NULL;
}

/* ------------------------------------------------------------------------
 * Hooks
 * ------------------------------------------------------------------------ */

/* The router's own config (the HttpFilter's value) is normally {}; its one
 * option is strip_any_host_port (as Envoy's HttpConnectionManager). */
static void *router_config_create(const wf_config_args *args, char *err, size_t errlen)
{
    static const char *const keys[] = {"strip_any_host_port", NULL};
    rt_build b = {NULL, err, errlen};
    int strip = 0;
    wf_value_type ty = rt_host->value_type(args->config);
    if (ty != WF_VALUE_MAP && ty != WF_VALUE_NULL) {
        rt_fail(&b, "router config: must be an object (normally {})");
        return NULL;
    }
    if (ty == WF_VALUE_MAP &&
        (rt_check_keys(&b, "router config", args->config, keys) < 0 ||
         rt_get_bool(&b, "router config", args->config, "strip_any_host_port", &strip) < 0))
        return NULL;
    rt_table *t = rt_table_build(args->route_table, strip, err, errlen);
    if (t && rt_host->log_enabled(WF_LOG_DEBUG))
        rt_host->log(WF_LOG_DEBUG, "router",
                     "%s: compiled %zu virtual hosts, %zu routes, %zu regexes%s",
                     args->name ? args->name : "router", t->nvhosts, t->nroutes, t->nregexes,
                     args->route_table ? "" : " (no route table: every request gets 404)");
    return t;
}

static void router_config_destroy(void *cfg)
{
    rt_table_free(cfg);
}

/* Answers 404 NR with a body naming the cause; `path` NULL means no
 * virtual host matched the host. */
static wf_status rt_no_route(wf_stream *s, wf_str authority, const wf_str *path)
{
    int alen = authority.len > RT_ECHO_MAX ? RT_ECHO_MAX : (int)authority.len;
    const char *atrunc = (size_t)alen < authority.len ? "..." : "";
    wf_str body = RT_LIT("no route (NR)\n");
    size_t cap = 2 * RT_ECHO_MAX + 128;
    char *buf = rt_host->alloc(s, cap);
    if (buf && !path) {
        int n =
            snprintf(buf, cap, "no route for host \"%.*s%s\" (NR)\n", alen, authority.p, atrunc);
        body = (wf_str){buf, n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1};
    } else if (buf) {
        wf_str method = {"", 0};
        rt_host->header_get(s, WF_REQUEST, RT_LIT(":method"), &method);
        int mlen = method.len > 16 ? 16 : (int)method.len;
        int plen = path->len > RT_ECHO_MAX ? RT_ECHO_MAX : (int)path->len;
        int n = snprintf(buf, cap, "no route matched \"%.*s %.*s%s\" on host \"%.*s%s\" (NR)\n",
                         mlen, method.p, plen, path->p, (size_t)plen < path->len ? "..." : "", alen,
                         authority.p, atrunc);
        body = (wf_str){buf, n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1};
    }
    rt_host->send_local_reply(s, 404, body, "NR");
    return WF_STOP;
}

static wf_status rt_fail_stream(wf_stream *s, const char *what)
{
    char msg[128];
    int n = snprintf(msg, sizeof(msg), "router: out of stream memory %s\n", what);
    rt_host->send_local_reply(s, 500, (wf_str){msg, (size_t)n}, "router_out_of_memory");
    return WF_STOP;
}

/* Applies one level of header operations; -1 when the host is out of
 * stream memory. */
static int rt_apply_hops(wf_stream *s, wf_part part, const rt_hops *h)
{
    for (size_t i = 0; i < h->nremove; i++)
        rt_host->header_remove(s, part, h->remove[i]);
    for (size_t i = 0; i < h->nops; i++) {
        const rt_hop *op = &h->ops[i];
        int rc = op->add ? rt_host->header_add(s, part, op->name, op->value)
                         : rt_host->header_set(s, part, op->name, op->value);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The location of a redirect, built as Envoy builds it (Istio's redirect
 * is Envoy's RedirectAction): scheme://host[:port]path, where what the
 * redirect leaves out comes from the request.  The request's own port is
 * dropped when the redirect sets one, and when the scheme changes and the
 * port was the old scheme's default (http://a:80 -> https://a).  A uri
 * without a query keeps the request's query string.  Returns the bytes in
 * stream memory, or a NULL pointer. */
static wf_str rt_location(wf_stream *s, const rt_redirect *x, const rt_request *rq,
                          wf_str authority)
{
    wf_str req_scheme = {"http", 4};
    wf_str v;
    if (rt_host->header_get(s, WF_REQUEST, RT_LIT(":scheme"), &v) && v.len > 0)
        req_scheme = v;
    wf_str scheme = x->scheme.len ? x->scheme : req_scheme;
    wf_str port = x->port_from_request ? rt_port_of(authority.p, authority.len) : x->port;
    wf_str host = x->host.len ? x->host : authority;
    if (port.len) {
        host.len = rt_strip_port(host.p, host.len);
    } else if (!x->host.len &&
               !(scheme.len == req_scheme.len && rt_eq_ci(scheme.p, req_scheme.p, scheme.len))) {
        wf_str old = rt_port_of(host.p, host.len);
        if ((old.len == 3 && memcmp(old.p, ":80", 3) == 0 && req_scheme.len == 4 &&
             rt_eq_ci(req_scheme.p, "http", 4)) ||
            (old.len == 4 && memcmp(old.p, ":443", 4) == 0 && req_scheme.len == 5 &&
             rt_eq_ci(req_scheme.p, "https", 5)))
            host.len -= old.len;
    }
    wf_str path = rq->path, query = {"", 0};
    if (x->has_path) {
        path = x->path;
        if (!x->path_has_query)
            query = (wf_str){rq->path.p + rq->path_only.len, rq->path.len - rq->path_only.len};
    }
    size_t cap = scheme.len + 3 + host.len + port.len + 1 + path.len + query.len + 1;
    char *buf = rt_host->alloc(s, cap);
    if (!buf)
        return (wf_str){NULL, 0};
    size_t n = 0;
#define RT_PUT(str)                                                                                \
    do {                                                                                           \
        if ((str).len)                                                                             \
            memcpy(buf + n, (str).p, (str).len);                                                   \
        n += (str).len;                                                                            \
    } while (0)
    RT_PUT(scheme);
    RT_PUT(RT_LIT("://"));
    RT_PUT(host);
    RT_PUT(port);
    if (path.len == 0 || path.p[0] != '/')
        buf[n++] = '/';
    RT_PUT(path);
    RT_PUT(query);
#undef RT_PUT
    return (wf_str){buf, n};
}

static wf_status rt_send_redirect(wf_stream *s, const rt_route *r, const rt_request *rq,
                                  wf_str authority)
{
    wf_str loc = rt_location(s, r->redirect, rq, authority);
    if (!loc.p || rt_host->header_add(s, WF_RESPONSE, RT_LIT("location"), loc) < 0 ||
        (r->hdrs && rt_apply_hops(s, WF_RESPONSE, &r->hdrs->resp) < 0))
        return rt_fail_stream(s, "building a redirect");
    rt_host->send_local_reply(s, r->redirect->code, (wf_str){"", 0}, "redirect");
    return WF_STOP;
}

/* The path after rewrite.uri or uriRegexRewrite, in stream memory: 1 when
 * *out is set, 0 to leave the path alone, -1 out of memory. */
static int rt_rewrite_path(wf_stream *s, const rt_route *r, const rt_request *rq, wf_str *out)
{
    /* What follows the part that is rewritten (the query string at least)
     * is kept as it is. */
    size_t head = rq->path_only.len;
    if (r->has_rw_uri && (r->path_kind == RT_PATH_PREFIX || r->path_kind == RT_PATH_SEPARATED))
        head = r->path_len; /* the matched prefix */
    wf_str tail = {rq->path.p + head, rq->path.len - head};
    char *p;
    if (!r->rw_re) {
        if (!(p = rt_host->alloc(s, r->rw_uri.len + tail.len + 1)))
            return -1;
        memcpy(p, r->rw_uri.p, r->rw_uri.len);
        memcpy(p + r->rw_uri.len, tail.p, tail.len);
        *out = (wf_str){p, r->rw_uri.len + tail.len};
        return 1;
    }
    rt_regex *re = r->rw_re;
    pcre2_match_data *md = rt_match_data(re->pairs);
    if (!md)
        return -1;
    /* A guess that fits most rewrites; PCRE2 says what it needs when it
     * does not, and the second try fits.  The tail is copied after the
     * result, in the same buffer. */
    PCRE2_SIZE cap = 2 * head + r->rw_sub.len + 64;
    for (int attempt = 0;; attempt++) {
        if (!(p = rt_host->alloc(s, cap + tail.len)))
            return -1;
        PCRE2_SIZE olen = cap;
        int rc = pcre2_substitute(re->code, (PCRE2_SPTR)(head ? rq->path.p : ""), head, 0,
                                  PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH |
                                      PCRE2_SUBSTITUTE_UNSET_EMPTY,
                                  md, re->mctx, (PCRE2_SPTR)r->rw_sub.p, r->rw_sub.len,
                                  (PCRE2_UCHAR *)p, &olen);
        if (rc >= 0) {
            memcpy(p + olen, tail.p, tail.len); /* olen < cap: room for the NUL */
            *out = (wf_str){p, olen + tail.len};
            return 1;
        }
        if (rc == PCRE2_ERROR_NOMEMORY && attempt == 0) {
            cap = olen; /* what it needs, with the NUL */
            continue;
        }
        if (!__atomic_exchange_n(&re->warned, 1, __ATOMIC_RELAXED)) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            rt_host->log(WF_LOG_WARN, "router",
                         "route \"%s\": uriRegexRewrite \"%s\" gave up on a %zu-byte path (%s); "
                         "the path is forwarded unchanged. Logged once.",
                         r->name, re->pattern, head, (const char *)msg);
        }
        return 0;
    }
}

/* Everything typed_per_filter_config.router asks of a routed request, in
 * Envoy's order: header operations (the weighted cluster's, then the
 * route's), then the authority rewrite, then the path rewrite. */
static wf_status rt_route_extras(void *st, wf_stream *s, const rt_route *r, const rt_headers *wh,
                                 const rt_request *rq)
{
    wf_str path = {NULL, 0};
    int rp = 0;
    /* Computed first, while rq still points at the request's :path. */
    if (r->has_rw_uri || r->rw_re) {
        rp = rt_rewrite_path(s, r, rq, &path);
        if (rp < 0)
            return rt_fail_stream(s, "rewriting the path");
    }
    if ((wh && rt_apply_hops(s, WF_REQUEST, &wh->req) < 0) ||
        (r->hdrs && rt_apply_hops(s, WF_REQUEST, &r->hdrs->req) < 0) ||
        (r->has_rw_auth &&
         rt_host->header_set(s, WF_REQUEST, RT_LIT(":authority"), r->rw_auth) < 0) ||
        (rp > 0 && rt_host->header_set(s, WF_REQUEST, RT_LIT(":path"), path) < 0))
        return rt_fail_stream(s, "changing request headers");
    if (r->has_timeout && rt_host->state_set(s, "router.timeout_ms", r->timeout) < 0)
        return rt_fail_stream(s, "recording the route timeout");
    const rt_hops *w = wh && !rt_hops_empty(&wh->resp) ? &wh->resp : NULL;
    const rt_hops *rr = r->hdrs && !rt_hops_empty(&r->hdrs->resp) ? &r->hdrs->resp : NULL;
    if (w || rr) {
        rt_stream *ss = st; /* stream_create made it: the table has response ops */
        if (!ss)
            return rt_fail_stream(s, "for response header operations");
        ss->resp[0] = w;
        ss->resp[1] = rr;
    }
    return WF_CONTINUE;
}

static wf_status router_route(void *cfg, void *st, wf_stream *s)
{
    const rt_table *t = cfg;
    wf_str authority = {"", 0};
    rt_host->header_get(s, WF_REQUEST, RT_LIT(":authority"), &authority);
    const rt_vhost *vh = rt_find_vhost(t, authority.p, authority.len);
    if (!vh)
        return rt_no_route(s, authority, NULL);

    rt_request rq = {.s = s, .path = {"", 0}};
    rt_host->header_get(s, WF_REQUEST, RT_LIT(":path"), &rq.path);
    rt_request_split(&rq);
    for (size_t i = 0; i < vh->nroutes; i++) {
        const rt_route *r = &vh->routes[i];
        int m = rt_route_matches(r, &rq);
        if (m < 0) {
            rt_host->send_local_reply(s, 500, RT_LIT("router: out of memory matching routes\n"),
                                      "router_out_of_memory");
            return WF_STOP;
        }
        if (m == 0)
            continue;
        if (r->action == RT_ACT_DIRECT) {
            /* Envoy applies the route's response headers to a direct
             * response too; the host sends what is on WF_RESPONSE. */
            if (r->hdrs && rt_apply_hops(s, WF_RESPONSE, &r->hdrs->resp) < 0)
                return rt_fail_stream(s, "adding response headers");
            rt_host->send_local_reply(s, r->direct_status, r->direct_body, "direct_response");
            return WF_STOP;
        }
        if (r->action == RT_ACT_REDIRECT)
            return rt_send_redirect(s, r, &rq, authority);
        const char *cluster = r->cluster;
        const rt_headers *wh = NULL;
        if (r->action == RT_ACT_WEIGHTED) {
            const rt_weighted *w = &r->wc[rt_pick_index(r, rt_host->random(s))];
            cluster = w->name;
            wh = w->hdrs;
        }
        /* If the host cannot take the decision (an unknown cluster, say) it
         * answers the stream itself; the router has nothing to add. */
        if (rt_host->set_route(s, r->node, r->name, cluster) != 0 || !r->extras)
            return WF_CONTINUE;
        return rt_route_extras(st, s, r, wh, &rq);
    }
    return rt_no_route(s, authority, &rq.path);
}

/* Per-stream state exists only for tables with response header
 * operations, so other configurations allocate nothing per stream.  The
 * route hook fills it in; the ABI hands the hooks the pointer that this
 * hook returns, so the route hook cannot create it itself. */
static void *router_stream_create(void *cfg, wf_stream *s)
{
    const rt_table *t = cfg;
    if (!t || !t->has_resp_ops)
        return NULL;
    rt_stream *st = rt_host->alloc(s, sizeof(*st));
    if (st)
        memset(st, 0, sizeof(*st));
    return st;
}

/* Applies the route's response header operations to the response, be it
 * the upstream's or a local reply made after routing (no healthy
 * upstream, a fault abort).  Once: a later call has nothing left to do. */
static wf_status router_response_headers(void *cfg, void *st, wf_stream *s, int end_stream)
{
    rt_stream *ss = st;
    if (!ss)
        return WF_CONTINUE;
    for (int i = 0; i < 2; i++) {
        const rt_hops *h = ss->resp[i];
        ss->resp[i] = NULL;
        if (h && rt_apply_hops(s, WF_RESPONSE, h) < 0) {
            /* Too late for a 500 of our own: the response goes out as is. */
            rt_host->log(WF_LOG_WARN, "router",
                         "out of stream memory applying response header operations; the "
                         "response is sent without some of them");
            break;
        }
    }
    return WF_CONTINUE;
}

static const wf_module rt_module = {
    .size = sizeof(wf_module),
    .abi_major = WF_ABI_MAJOR,
    .abi_minor = WF_ABI_MINOR,
    .name = "router",
    .config_create = router_config_create,
    .config_destroy = router_config_destroy,
    .stream_create = router_stream_create,
    .route = router_route,
    .response_headers = router_response_headers,
};

WF_EXPORT const wf_module *wf_module_entry(uint32_t abi_major, uint32_t abi_minor,
                                           const wf_host *host, char *err, size_t errlen)
{
    if (abi_major != WF_ABI_MAJOR) {
        snprintf(err, errlen,
                 "module router was built for filter ABI %d.%d but weft speaks %u.%u; use the "
                 "router.so built with this weft",
                 WF_ABI_MAJOR, WF_ABI_MINOR, abi_major, abi_minor);
        return NULL;
    }
    /* Everything up to random() is used; all of it is in ABI 1.0. */
    if (!host || host->size < offsetof(wf_host, random) + sizeof(host->random)) {
        snprintf(err, errlen, "module router: the host function table is too small (%zu bytes)",
                 host ? host->size : (size_t)0);
        return NULL;
    }
    rt_host = host;
    return &rt_module;
}

/* The entry must have the type filter.h declares for it. */
_Static_assert(__builtin_types_compatible_p(__typeof__(&wf_module_entry), wf_module_entry_fn),
               "wf_module_entry does not match wf_module_entry_fn");
