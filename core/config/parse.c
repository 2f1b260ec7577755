/*
 * parse.c: the engine that turns a wf_yn map into a C struct following a
 * wf__msg table (see parse.h), and fills defaults and frees by the same
 * tables.  Every YAML node's type is checked before it is used: this code
 * runs on untrusted files and is fuzzed.
 */
#include "config/parse.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- diagnostics and paths -------------------------------------------- */

void wf__report(wf_diags *d, const char *file, int line, int col, const char *res,
                const char *field, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (d->n > WF__MAX_DIAGS)
        return;
    if (d->n == WF__MAX_DIAGS) {
        wf_diag_add(d, file, line, col, "-", "-",
                    "too many problems; stopping after %d (fix these and run again)",
                    WF__MAX_DIAGS);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wf_diag_add(d, file, line, col, res, field, "%s", msg);
}

static void verr(wf__pctx *c, const wf_yn *n, const char *field, const char *fmt, va_list ap)
{
    char msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (!n)
        n = c->doc;
    c->errors++;
    wf__report(c->d, c->file, n ? n->line : 0, n ? n->col : 0, c->res, field, "%s", msg);
}

void wf__err(wf__pctx *c, const wf_yn *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(c, n, c->path, fmt, ap);
    va_end(ap);
}

void wf__err_field(wf__pctx *c, const wf_yn *n, const char *field, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(c, n, field, fmt, ap);
    va_end(ap);
}

void wf__err_pos(wf__pctx *c, const wf_pos *p, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->errors++;
    wf__report(c->d, c->file, p->line, p->col, c->res, c->path, "%s", msg);
}

size_t wf__path_key(wf__pctx *c, const char *key)
{
    size_t mark = c->plen;
    int w =
        snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "%s%.100s", c->plen ? "." : "", key);
    if (w > 0)
        c->plen += (size_t)w;
    if (c->plen >= sizeof(c->path))
        c->plen = sizeof(c->path) - 1;
    return mark;
}

size_t wf__path_idx(wf__pctx *c, size_t i)
{
    size_t mark = c->plen;
    int w = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "[%zu]", i);
    if (w > 0)
        c->plen += (size_t)w;
    if (c->plen >= sizeof(c->path))
        c->plen = sizeof(c->path) - 1;
    return mark;
}

void wf__path_pop(wf__pctx *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

wf_pos wf__pos(const wf__pctx *c, const wf_yn *n)
{
    wf_pos p;

    if (!n)
        n = c->doc;
    p.file = c->file;
    p.line = n ? n->line : 0;
    p.col = n ? n->col : 0;
    return p;
}

static void set_pos(const wf__pctx *c, void *base, size_t off1, const wf_yn *n)
{
    if (off1)
        *(wf_pos *)WF__AT(base, off1) = wf__pos(c, n);
}

/* ---- scalars ------------------------------------------------------------ */

static int is_scalar(const wf_yn *v, wf_yv t)
{
    return v && v->type == WF_YN_SCALAR && v->vtype == t;
}

int wf__get_str(wf__pctx *c, const wf_yn *v, char **out)
{
    if (!is_scalar(v, WF_YV_STR)) {
        if (v && v->type == WF_YN_SCALAR && v->vtype != WF_YV_NULL)
            wf__err(c, v, "expected a string, got %s (quote it: \"%.64s\")", wf__yn_kind(v), v->s);
        else
            wf__err(c, v, "expected a string, got %s", wf__yn_kind(v));
        return -1;
    }
    if (strlen(v->s) != v->len) {
        wf__err(c, v, "string contains a NUL byte");
        return -1;
    }
    *out = strdup(v->s);
    return *out ? 0 : -1;
}

static int parse_ll(const char *s, long long *out)
{
    const char *p = s;
    int neg = 0, base = 10;
    unsigned long long acc = 0;

    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (p[0] == '0' && p[1] == 'x')
        base = 16, p += 2;
    else if (p[0] == '0' && p[1] == 'o')
        base = 8, p += 2;
    if (!*p)
        return -1;
    for (; *p; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            return -1;
        if (d >= base)
            return -1;
        if (acc > (ULLONG_MAX - (unsigned)d) / (unsigned)base)
            return -1;
        acc = acc * (unsigned)base + (unsigned)d;
    }
    if (!neg && acc > (unsigned long long)LLONG_MAX)
        return -1;
    if (neg && acc > (unsigned long long)LLONG_MAX + 1ULL)
        return -1;
    *out = neg ? (long long)(0 - acc) : (long long)acc;
    return 0;
}

int wf__get_int(wf__pctx *c, const wf_yn *v, long long lo, long long hi, long long *out)
{
    long long x;

    if (!is_scalar(v, WF_YV_INT)) {
        wf__err(c, v, "expected an integer, got %s", wf__yn_kind(v));
        return -1;
    }
    if (parse_ll(v->s, &x) < 0 || x < lo || x > hi) {
        wf__err(c, v, "value %.40s is out of range %lld..%lld", v->s, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_bool(wf__pctx *c, const wf_yn *v, int *out)
{
    if (!is_scalar(v, WF_YV_BOOL)) {
        wf__err(c, v, "expected a boolean (true or false), got %s", wf__yn_kind(v));
        return -1;
    }
    *out = v->s[0] == 't' || v->s[0] == 'T';
    return 0;
}

static int get_double(wf__pctx *c, const wf_yn *v, double *out)
{
    double x;
    char *end;

    if (!is_scalar(v, WF_YV_INT) && !is_scalar(v, WF_YV_FLOAT)) {
        wf__err(c, v, "expected a number, got %s", wf__yn_kind(v));
        return -1;
    }
    errno = 0;
    if (v->vtype == WF_YV_INT) {
        long long i;
        if (parse_ll(v->s, &i) < 0) {
            wf__err(c, v, "number %.40s is out of range", v->s);
            return -1;
        }
        x = (double)i;
    } else {
        x = strtod(v->s, &end);
        if (*end || !isfinite(x)) {
            wf__err(c, v, "expected a finite number, got %.40s", v->s);
            return -1;
        }
    }
    *out = x;
    return 0;
}

/* ---- duplicates in lists ------------------------------------------------- */

typedef struct dupkey {
    const char *s;
    uint32_t u;
    size_t i;
} dupkey;

static int cmp_dupkey(const void *a, const void *b)
{
    const dupkey *x = a, *y = b;
    int r = x->s ? strcmp(x->s, y->s) : (x->u > y->u) - (x->u < y->u);

    return r ? r : (x->i > y->i) - (x->i < y->i);
}

size_t *wf__first_dups(const char *const *strs, const uint32_t *nums, size_t n)
{
    size_t *first = n ? malloc(n * sizeof(*first)) : NULL;
    dupkey *k = n ? malloc(n * sizeof(*k)) : NULL;
    size_t m = 0;

    if (!first || !k) {
        free(first);
        free(k);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        first[i] = SIZE_MAX;
        if (strs ? strs[i] != NULL : nums[i] != 0) {
            k[m].s = strs ? strs[i] : NULL;
            k[m].u = nums ? nums[i] : 0;
            k[m++].i = i;
        }
    }
    /* Sorting keeps this O(n log n): lists come from untrusted files. */
    qsort(k, m, sizeof(*k), cmp_dupkey);
    for (size_t i = 1, run = 0; i < m; i++) {
        if (cmp_dupkey(&(dupkey){k[run].s, k[run].u, 0}, &(dupkey){k[i].s, k[i].u, 0}) == 0)
            first[k[i].i] = k[run].i;
        else
            run = i;
    }
    free(k);
    return first;
}

/* ---- the regex and string-match values ---------------------------------- */

int wf__check_regex(wf__pctx *c, const wf_yn *n, const char *re)
{
    char err[512];

    if (wf_regex_check(re, err, sizeof(err)) < 0) {
        wf__err(c, n, "%s", err);
        return -1;
    }
    return 0;
}

static int levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int row[64];

    if (la > 60 || lb > 60)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0], cur;
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev + (a[i - 1] != b[j - 1]);
            int del = row[j] + 1, ins = row[j - 1] + 1;
            cur = sub < del ? sub : del;
            cur = cur < ins ? cur : ins;
            prev = row[j];
            row[j] = cur;
        }
    }
    return row[lb];
}

/* Reports an unknown key, naming the closest known field when one is close
 * enough to be the obvious intent, or else listing the known fields. */
void wf__unknown_field(wf__pctx *c, const wf_yn *k, const char *const *names, size_t n)
{
    const char *best = NULL;
    int bestd = 99;
    char list[512] = "";
    size_t ll = 0;

    for (size_t i = 0; i < n; i++) {
        int d = strcasecmp(k->s, names[i]) == 0 ? 0 : levenshtein(k->s, names[i]);
        if (d < bestd)
            bestd = d, best = names[i];
    }
    if (best && (bestd == 0 || bestd <= (int)(strlen(best) > 6 ? 2 : 1))) {
        wf__err(c, k, "unknown field \"%.64s\"; did you mean \"%s\"?", k->s, best);
        return;
    }
    for (size_t i = 0; i < n && ll < sizeof(list) - 1; i++) {
        int w = snprintf(list + ll, sizeof(list) - ll, "%s%s", i ? ", " : "", names[i]);
        if (w > 0)
            ll += (size_t)w;
    }
    if (n && n <= 16)
        wf__err(c, k, "unknown field \"%.64s\" (known fields: %s)", k->s, list);
    else
        wf__err(c, k, "unknown field \"%.64s\"", k->s);
}

static int check_map(wf__pctx *c, const wf_yn *v)
{
    if (!v || v->type != WF_YN_MAP) {
        wf__err(c, v, "expected a map, got %s", wf__yn_kind(v));
        return -1;
    }
    return 0;
}

static int check_seq(wf__pctx *c, const wf_yn *v)
{
    if (!v || v->type != WF_YN_SEQ) {
        wf__err(c, v, "expected a list, got %s", wf__yn_kind(v));
        return -1;
    }
    return 0;
}

/* Key of pair i as a string, or NULL after reporting a non-scalar key. */
static const wf_yn *map_key(wf__pctx *c, const wf_yn *m, size_t i)
{
    const wf_yn *k = m->kids[2 * i];

    if (k->type != WF_YN_SCALAR || strlen(k->s) != k->len) {
        wf__err(c, k, "map keys must be strings, got %s", wf__yn_kind(k));
        return NULL;
    }
    return k;
}

typedef struct keyref {
    const wf_yn *k;
    size_t i;
} keyref;

static int cmp_keyref(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    size_t l = x->k->len < y->k->len ? x->k->len : y->k->len;
    int r = memcmp(x->k->s, y->k->s, l);

    if (!r && x->k->len != y->k->len)
        r = x->k->len < y->k->len ? -1 : 1;
    return r ? r : (x->i < y->i ? -1 : x->i > y->i);
}

/* Reports keys written twice in one map (Kubernetes refuses them too, and
 * silently keeping one hides typos).  Returns a flag per pair, set on each
 * later copy so that callers skip it, or NULL when there is none. */
unsigned char *wf__dup_keys(wf__pctx *c, const wf_yn *m)
{
    size_t n = wf__yn_pairs(m), k = 0;
    keyref *idx;
    unsigned char *dup = NULL;

    if (n < 2)
        return NULL;
    idx = malloc(n * sizeof(*idx));
    if (!idx)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (m->kids[2 * i]->type == WF_YN_SCALAR) {
            idx[k].k = m->kids[2 * i];
            idx[k++].i = i;
        }
    qsort(idx, k, sizeof(*idx), cmp_keyref);
    for (size_t i = 1; i < k; i++) {
        const wf_yn *a = idx[i - 1].k, *b = idx[i].k;
        if (a->len == b->len && memcmp(a->s, b->s, a->len) == 0) {
            size_t mark = wf__path_key(c, b->s);
            wf__err(c, b, "duplicate key \"%.64s\" (first at line %d column %d)", b->s, a->line,
                    a->col);
            wf__path_pop(c, mark);
            if (!dup)
                dup = calloc(n, 1);
            if (dup)
                dup[idx[i].i] = 1;
        }
    }
    free(idx);
    return dup;
}

void wf__check_dup_keys(wf__pctx *c, const wf_yn *m)
{
    free(wf__dup_keys(c, m));
}

static int parse_smatch(wf__pctx *c, const wf_yn *v, wf_string_match *sm)
{
    static const char *const names[] = {"exact", "prefix", "regex"};
    int set = 0;
    unsigned char *dup;

    if (!v || v->type != WF_YN_MAP) {
        wf__err(c, v, "expected a map with one of exact, prefix or regex, got %s", wf__yn_kind(v));
        return -1;
    }
    dup = wf__dup_keys(c, v);
    sm->pos = wf__pos(c, v);
    for (size_t i = 0; i < wf__yn_pairs(v); i++) {
        const wf_yn *k = map_key(c, v, i), *val = v->kids[2 * i + 1];
        size_t mark;
        int kind = 0;
        char *s = NULL;

        if (!k || (dup && dup[i]))
            continue;
        mark = wf__path_key(c, k->s);
        for (int j = 0; j < 3; j++)
            if (strcmp(k->s, names[j]) == 0)
                kind = j + 1;
        if (!kind) {
            wf__unknown_field(c, k, names, 3);
        } else if (!wf__yn_is_null(val) && wf__get_str(c, val, &s) == 0) {
            if (set) {
                wf__err(c, k, "only one of exact, prefix or regex may be set");
                free(s);
            } else {
                set = 1;
                sm->kind = (wf_sm_kind)kind;
                sm->value = s;
                if (kind == WF_SM_REGEX)
                    wf__check_regex(c, val, s);
            }
        }
        wf__path_pop(c, mark);
    }
    free(dup);
    return 0;
}

/* ---- JSON (pluginConfig) ------------------------------------------------- */

static json_t *to_json(wf__pctx *c, const wf_yn *v, int depth)
{
    json_t *j;

    if (depth > 64) {
        wf__err(c, v, "nested deeper than 64 levels");
        return NULL;
    }
    if (v->type == WF_YN_SEQ) {
        j = json_array();
        for (size_t i = 0; j && i < v->n; i++) {
            size_t mark = wf__path_idx(c, i);
            json_t *e = to_json(c, v->kids[i], depth + 1);
            wf__path_pop(c, mark);
            if (!e || json_array_append_new(j, e) < 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    }
    if (v->type == WF_YN_MAP) {
        j = json_object();
        wf__check_dup_keys(c, v);
        for (size_t i = 0; j && i < wf__yn_pairs(v); i++) {
            const wf_yn *k = map_key(c, v, i);
            size_t mark;
            json_t *e;
            if (!k) {
                json_decref(j);
                return NULL;
            }
            mark = wf__path_key(c, k->s);
            e = to_json(c, v->kids[2 * i + 1], depth + 1);
            wf__path_pop(c, mark);
            if (!e || json_object_set_new(j, k->s, e) < 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    }
    switch (v->vtype) {
    case WF_YV_NULL:
        return json_null();
    case WF_YV_BOOL:
        return json_boolean(v->s[0] == 't' || v->s[0] == 'T');
    case WF_YV_INT: {
        long long x;
        if (parse_ll(v->s, &x) < 0) {
            wf__err(c, v, "integer %.40s is out of range", v->s);
            return NULL;
        }
        return json_integer((json_int_t)x);
    }
    case WF_YV_FLOAT: {
        char *end;
        double x = strtod(v->s, &end);
        if (*end || !isfinite(x)) {
            wf__err(c, v, "%.40s cannot be represented in JSON", v->s);
            return NULL;
        }
        return json_real(x);
    }
    default:
        if (strlen(v->s) != v->len) {
            wf__err(c, v, "string contains a NUL byte");
            return NULL;
        }
        j = json_string(v->s);
        if (!j)
            wf__err(c, v, "string is not valid UTF-8");
        return j;
    }
}

/* ---- the engine ---------------------------------------------------------- */

static void *grow(void **arr, size_t *n, size_t elem, size_t add)
{
    char *v;

    if (add > (SIZE_MAX / elem) - *n)
        return NULL;
    v = realloc(*arr, (*n + add) * elem);
    if (!v)
        return NULL;
    memset(v + *n * elem, 0, add * elem);
    *arr = v;
    return v + *n * elem;
}

static const char *enum_list(const wf__enum *e, char *buf, size_t len)
{
    size_t l = 0;

    buf[0] = '\0';
    for (; e->name && l < len - 1; e++) {
        int w = snprintf(buf + l, len - l, "%s%s", l ? ", " : "", e->name);
        if (w > 0)
            l += (size_t)w;
    }
    return buf;
}

static void parse_field(wf__pctx *c, const wf_yn *v, void *base, const wf__field *f)
{
    void *at = (char *)base + f->off;
    long long x;
    unsigned char *dup = NULL;

    switch (f->type) {
    case WF__F_STR: {
        char *s;
        if (wf__get_str(c, v, &s) == 0) {
            free(*(char **)at);
            *(char **)at = s;
        }
        break;
    }
    case WF__F_STRLIST: {
        char ***list = at;
        size_t *cnt = WF__AT(base, f->aux);
        if (check_seq(c, v) < 0)
            break;
        for (size_t i = 0; i < v->n; i++) {
            size_t mark = wf__path_idx(c, i);
            char *s, **slot;
            if (wf__get_str(c, v->kids[i], &s) == 0) {
                slot = grow((void **)list, cnt, sizeof(char *), 1);
                if (slot) {
                    *slot = s;
                    (*cnt)++;
                } else {
                    free(s);
                }
            }
            wf__path_pop(c, mark);
        }
        break;
    }
    case WF__F_KV:
    case WF__F_KVU32: {
        wf_kv **list = at;
        size_t *cnt = WF__AT(base, f->aux);
        if (check_map(c, v) < 0)
            break;
        dup = wf__dup_keys(c, v);
        for (size_t i = 0; i < wf__yn_pairs(v); i++) {
            const wf_yn *k = map_key(c, v, i), *val = v->kids[2 * i + 1];
            size_t mark;
            char *s = NULL, *key;
            long long num = 0;
            wf_kv *slot;
            if (!k || (dup && dup[i]))
                continue;
            mark = wf__path_key(c, k->s);
            if (f->type == WF__F_KV) {
                if (wf__get_str(c, val, &s) < 0) {
                    wf__path_pop(c, mark);
                    continue;
                }
            } else {
                int port = (f->flags & WF__PORT) != 0;
                char buf[24];
                if (port && is_scalar(val, WF_YV_INT) && parse_ll(val->s, &num) == 0 &&
                    (num < 1 || num > 65535)) {
                    wf__err(c, val, "port %lld is out of range 1..65535", num);
                    wf__path_pop(c, mark);
                    continue;
                }
                if (wf__get_int(c, val, port ? 1 : 0, port ? 65535 : UINT32_MAX, &num) < 0) {
                    wf__path_pop(c, mark);
                    continue;
                }
                snprintf(buf, sizeof(buf), "%lld", num);
                s = strdup(buf);
            }
            key = strdup(k->s);
            slot = grow((void **)list, cnt, sizeof(wf_kv), 1);
            if (f->type == WF__F_KVU32 && slot) {
                uint32_t **nums = WF__AT(base, f->aux2);
                size_t tmp = *cnt;
                uint32_t *ns = grow((void **)nums, &tmp, sizeof(uint32_t), 1);
                if (!ns)
                    slot = NULL;
                else
                    *ns = (uint32_t)num;
            }
            if (!slot || !key || !s) {
                free(key);
                free(s);
            } else {
                slot->key = key;
                slot->value = s;
                slot->pos = wf__pos(c, k);
                (*cnt)++;
            }
            wf__path_pop(c, mark);
        }
        free(dup);
        break;
    }
    case WF__F_INT: {
        long long lo = INT32_MIN, hi = INT32_MAX;
        if (f->flags & WF__NONNEG)
            lo = 0;
        if (f->flags & WF__PERCENT)
            lo = 0, hi = 100;
        if (f->flags & WF__HTTPCODE)
            lo = 200, hi = 599;
        if (wf__get_int(c, v, lo, hi, &x) == 0)
            *(int *)at = (int)x;
        break;
    }
    case WF__F_U32: {
        if ((f->flags & WF__PORT) && is_scalar(v, WF_YV_INT) && parse_ll(v->s, &x) == 0 &&
            (x < 1 || x > 65535)) {
            wf__err(c, v, "port %lld is out of range 1..65535", x);
            break;
        }
        if (wf__get_int(c, v, (f->flags & WF__PORT) ? 1 : 0,
                        (f->flags & WF__PORT) ? 65535 : UINT32_MAX, &x) == 0)
            *(uint32_t *)at = (uint32_t)x;
        break;
    }
    case WF__F_I64:
        if (wf__get_int(c, v, 0, (f->flags & WF__PERCENT) ? 100 : UINT32_MAX, &x) == 0)
            *(int64_t *)at = x;
        break;
    case WF__F_BOOL: {
        int b;
        if (get_bool(c, v, &b) == 0) {
            *(int *)at = b;
            if (f->aux)
                *(int *)WF__AT(base, f->aux) = 1;
        }
        break;
    }
    case WF__F_DUR: {
        char *s;
        int64_t ms;
        char err[256];
        if (wf__get_str(c, v, &s) < 0)
            break;
        if (wf_duration_parse(s, &ms, err, sizeof(err)) < 0)
            wf__err(c, v, "%s", err);
        else
            *(int64_t *)at = ms;
        free(s);
        break;
    }
    case WF__F_DOUBLE: {
        double d;
        if (get_double(c, v, &d) < 0)
            break;
        if ((f->flags & WF__PERCENT) && (d < 0 || d > 100)) {
            wf__err(c, v, "percentage %g is out of range 0..100", d);
            break;
        }
        *(double *)at = d;
        if (f->aux)
            *(int *)WF__AT(base, f->aux) = 1;
        break;
    }
    case WF__F_ENUM: {
        const wf__enum *e = f->sub;
        char buf[512];
        if (!is_scalar(v, WF_YV_STR)) {
            wf__err(c, v, "expected one of %s, got %s", enum_list(e, buf, sizeof(buf)),
                    wf__yn_kind(v));
            break;
        }
        for (; e->name; e++)
            if (strcmp(e->name, v->s) == 0)
                break;
        if (!e->name) {
            wf__err(c, v, "invalid value \"%.64s\"; allowed values: %s", v->s,
                    enum_list(f->sub, buf, sizeof(buf)));
            break;
        }
        *(int *)at = e->value;
        if (f->aux)
            *(int *)WF__AT(base, f->aux) = 1;
        break;
    }
    case WF__F_MSG: {
        const wf__msg *m = f->sub;
        void *obj;
        if (check_map(c, v) < 0)
            break;
        obj = *(void **)at;
        if (!obj) {
            obj = calloc(1, m->size);
            if (!obj)
                break;
            wf__init_msg(m, obj);
            *(void **)at = obj;
        }
        wf__parse_msg(c, v, m, obj);
        break;
    }
    case WF__F_INLINE:
        if (check_map(c, v) == 0)
            wf__parse_msg(c, v, f->sub, at);
        break;
    case WF__F_MSGLIST:
    case WF__F_MSGONE: {
        const wf__msg *m = f->sub;
        size_t *cnt = WF__AT(base, f->aux);
        size_t nitems = f->type == WF__F_MSGONE ? 1 : 0;
        if (f->type == WF__F_MSGLIST) {
            if (check_seq(c, v) < 0)
                break;
            nitems = v->n;
        } else if (check_map(c, v) < 0) {
            break;
        }
        for (size_t i = 0; i < nitems; i++) {
            const wf_yn *item = f->type == WF__F_MSGLIST ? v->kids[i] : v;
            size_t mark = f->type == WF__F_MSGLIST ? wf__path_idx(c, i) : c->plen;
            void *obj;
            if (check_map(c, item) == 0) {
                obj = grow((void **)at, cnt, m->size, 1);
                if (obj) {
                    (*cnt)++;
                    wf__init_msg(m, obj);
                    wf__parse_msg(c, item, m, obj);
                }
            }
            wf__path_pop(c, mark);
        }
        break;
    }
    case WF__F_SMATCH:
        parse_smatch(c, v, at);
        break;
    case WF__F_SMATCHLIST: {
        size_t *cnt = WF__AT(base, f->aux);
        if (check_seq(c, v) < 0)
            break;
        for (size_t i = 0; i < v->n; i++) {
            size_t mark = wf__path_idx(c, i);
            wf_string_match *sm = grow((void **)at, cnt, sizeof(*sm), 1);
            if (sm) {
                (*cnt)++;
                parse_smatch(c, v->kids[i], sm);
            }
            wf__path_pop(c, mark);
        }
        break;
    }
    case WF__F_NMATCH: {
        size_t *cnt = WF__AT(base, f->aux);
        if (check_map(c, v) < 0)
            break;
        dup = wf__dup_keys(c, v);
        for (size_t i = 0; i < wf__yn_pairs(v); i++) {
            const wf_yn *k = map_key(c, v, i), *val = v->kids[2 * i + 1];
            size_t mark;
            wf_named_match *nm;
            if (!k || (dup && dup[i]))
                continue;
            mark = wf__path_key(c, k->s);
            nm = grow((void **)at, cnt, sizeof(*nm), 1);
            if (nm) {
                (*cnt)++;
                nm->name = strdup(k->s);
                nm->pos = wf__pos(c, k);
                /* `name: {}` (or null) is a presence match. */
                if (!wf__yn_is_null(val))
                    parse_smatch(c, val, &nm->match);
                else
                    nm->match.pos = wf__pos(c, k);
            }
            wf__path_pop(c, mark);
        }
        free(dup);
        break;
    }
    case WF__F_JSON: {
        json_t *j = to_json(c, v, 0);
        if (j) {
            json_decref(*(json_t **)at);
            *(json_t **)at = j;
        }
        break;
    }
    case WF__F_CUSTOM:
        ((const wf__custom *)f->sub)->parse(c, v, base, f);
        break;
    default:
        break;
    }
}

static size_t field_names(const wf__field *fs, const char **names, size_t max)
{
    size_t n = 0;

    for (; fs->type != WF__F_END && n < max; fs++)
        if (fs->type != WF__F_ISTR && fs->type != WF__F_ISTRLIST && fs->type != WF__F_IGNORE)
            names[n++] = fs->name;
    return n;
}

void wf__parse_msg(wf__pctx *c, const wf_yn *n, const wf__msg *m, void *obj)
{
    unsigned char *dup = NULL;

    if (n && !wf__yn_is_null(n)) {
        if (check_map(c, n) < 0)
            return;
        dup = wf__dup_keys(c, n);
    }
    if (m->pos)
        set_pos(c, obj, m->pos, n);
    for (size_t i = 0; n && n->type == WF_YN_MAP && i < wf__yn_pairs(n); i++) {
        const wf_yn *k = map_key(c, n, i), *v = n->kids[2 * i + 1];
        const wf__field *f;
        size_t mark;

        if (!k || (dup && dup[i]))
            continue;
        for (f = m->fields; f->type != WF__F_END; f++)
            if (f->type != WF__F_ISTR && f->type != WF__F_ISTRLIST && strcmp(f->name, k->s) == 0)
                break;
        mark = wf__path_key(c, k->s);
        if (f->type == WF__F_END) {
            const char *names[64];
            wf__unknown_field(c, k, names, field_names(m->fields, names, 64));
        } else if (f->type != WF__F_IGNORE && !wf__yn_is_null(v)) {
            if (f->pos)
                set_pos(c, obj, f->pos, v);
            parse_field(c, v, obj, f);
        }
        wf__path_pop(c, mark);
    }
    free(dup);
    for (const wf__field *f = m->fields; f->type != WF__F_END; f++) {
        if ((f->flags & WF__REQ) && wf__yn_is_null(wf__yn_get(n, f->name))) {
            size_t mark = wf__path_key(c, f->name);
            wf__err(c, n, "required field is missing");
            wf__path_pop(c, mark);
        }
    }
    if (m->check)
        m->check(c, n, obj);
}

void wf__init_msg(const wf__msg *m, void *obj)
{
    for (const wf__field *f = m->fields; f->type != WF__F_END; f++) {
        void *at = (char *)obj + f->off;
        switch (f->type) {
        case WF__F_INT:
        case WF__F_ENUM:
            *(int *)at = (int)f->def;
            break;
        case WF__F_U32:
            *(uint32_t *)at = (uint32_t)f->def;
            break;
        case WF__F_I64:
        case WF__F_DUR:
            *(int64_t *)at = -1;
            break;
        case WF__F_DOUBLE:
            *(double *)at = f->def;
            break;
        case WF__F_INLINE:
            wf__init_msg(f->sub, at);
            break;
        default:
            break;
        }
    }
}

void wf__free_msg(const wf__msg *m, void *obj)
{
    if (!obj)
        return;
    for (const wf__field *f = m->fields; f->type != WF__F_END; f++) {
        void *at = (char *)obj + f->off;
        if (f->flags & WF__NOFREE)
            continue;
        switch (f->type) {
        case WF__F_STR:
        case WF__F_ISTR:
            free(*(char **)at);
            *(char **)at = NULL;
            break;
        case WF__F_STRLIST:
        case WF__F_ISTRLIST: {
            char **l = *(char ***)at;
            size_t n = *(size_t *)WF__AT(obj, f->aux);
            for (size_t i = 0; l && i < n; i++)
                free(l[i]);
            free(l);
            *(char ***)at = NULL;
            break;
        }
        case WF__F_KV:
        case WF__F_KVU32: {
            wf_kv *l = *(wf_kv **)at;
            size_t n = *(size_t *)WF__AT(obj, f->aux);
            for (size_t i = 0; l && i < n; i++) {
                free(l[i].key);
                free(l[i].value);
            }
            free(l);
            *(wf_kv **)at = NULL;
            if (f->type == WF__F_KVU32) {
                free(*(uint32_t **)WF__AT(obj, f->aux2));
                *(uint32_t **)WF__AT(obj, f->aux2) = NULL;
            }
            break;
        }
        case WF__F_MSG: {
            void *p = *(void **)at;
            wf__free_msg(f->sub, p);
            free(p);
            *(void **)at = NULL;
            break;
        }
        case WF__F_INLINE:
            wf__free_msg(f->sub, at);
            break;
        case WF__F_MSGLIST:
        case WF__F_MSGONE: {
            const wf__msg *sm = f->sub;
            char *l = *(char **)at;
            size_t n = *(size_t *)WF__AT(obj, f->aux);
            for (size_t i = 0; l && i < n; i++)
                wf__free_msg(sm, l + i * sm->size);
            free(l);
            *(void **)at = NULL;
            break;
        }
        case WF__F_SMATCH:
            free(((wf_string_match *)at)->value);
            ((wf_string_match *)at)->value = NULL;
            break;
        case WF__F_SMATCHLIST: {
            wf_string_match *l = *(wf_string_match **)at;
            size_t n = *(size_t *)WF__AT(obj, f->aux);
            for (size_t i = 0; l && i < n; i++)
                free(l[i].value);
            free(l);
            *(void **)at = NULL;
            break;
        }
        case WF__F_NMATCH: {
            wf_named_match *l = *(wf_named_match **)at;
            size_t n = *(size_t *)WF__AT(obj, f->aux);
            for (size_t i = 0; l && i < n; i++) {
                free(l[i].name);
                free(l[i].match.value);
            }
            free(l);
            *(void **)at = NULL;
            break;
        }
        case WF__F_JSON:
            json_decref(*(json_t **)at);
            *(json_t **)at = NULL;
            break;
        case WF__F_CUSTOM:
            ((const wf__custom *)f->sub)->free(obj, f);
            break;
        default:
            break;
        }
    }
}
