/* ctree.c: compact read-only configuration trees; see ctree.h. */
#include "util/ctree.h"

#include <stdlib.h>
#include <string.h>

#include "util/map.h"

/* A map's children are pairs: a string node for the key, then the value. */
struct wf_value {
    uint32_t type; /* wf_value_type */
    uint32_t n;    /* string: length; list: items; map: entries */
    union {
        int64_t i;
        double d;
        const char *s;
        const struct wf_value *kids;
    } u;
};

typedef struct build {
    size_t nodes, bytes; /* nodes, and bytes of distinct strings with NULs */
    wf_map strs;         /* text -> its offset in the pool, plus one */
    char *pool;
    wf_value *next; /* the next free node */
} build;

static int intern(build *b, const char *s, size_t len)
{
    if (wf_map_get(&b->strs, s, len))
        return 0;
    if (wf_map_put(&b->strs, s, len, (void *)(uintptr_t)(b->bytes + 1)) < 0)
        return -1;
    b->bytes += len + 1;
    return 0;
}

/* Counts v's children and interns its strings. */
static int measure(build *b, const json_t *v)
{
    size_t i;
    const char *k;
    json_t *c;

    switch (json_typeof(v)) {
    case JSON_STRING:
        return intern(b, json_string_value(v), json_string_length(v));
    case JSON_ARRAY:
        b->nodes += json_array_size(v);
        json_array_foreach((json_t *)v, i, c)
            if (measure(b, c) < 0)
                return -1;
        return 0;
    case JSON_OBJECT:
        b->nodes += 2 * json_object_size(v);
        json_object_foreach((json_t *)v, k, c)
            if (intern(b, k, strlen(k)) < 0 || measure(b, c) < 0)
                return -1;
        return 0;
    default:
        return 0;
    }
}

static void set_string(build *b, wf_value *n, const char *s, size_t len)
{
    n->type = WF_VALUE_STRING;
    n->n = (uint32_t)len;
    n->u.s = b->pool + ((uintptr_t)wf_map_get(&b->strs, s, len) - 1);
}

static void fill(build *b, const json_t *v, wf_value *n)
{
    size_t i;
    const char *k;
    json_t *c;

    switch (json_typeof(v)) {
    case JSON_STRING:
        set_string(b, n, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        n->type = WF_VALUE_INT;
        n->u.i = json_integer_value(v);
        break;
    case JSON_REAL:
        n->type = WF_VALUE_DOUBLE;
        n->u.d = json_real_value(v);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        n->type = WF_VALUE_BOOL;
        n->u.i = json_is_true(v);
        break;
    case JSON_ARRAY: {
        wf_value *kids = b->next;
        n->type = WF_VALUE_LIST;
        n->n = (uint32_t)json_array_size(v);
        n->u.kids = kids;
        b->next += n->n;
        json_array_foreach((json_t *)v, i, c)
            fill(b, c, &kids[i]);
        break;
    }
    case JSON_OBJECT: {
        wf_value *kids = b->next;
        n->type = WF_VALUE_MAP;
        n->n = (uint32_t)json_object_size(v);
        n->u.kids = kids;
        b->next += 2 * (size_t)n->n;
        i = 0;
        json_object_foreach((json_t *)v, k, c)
        {
            set_string(b, &kids[2 * i], k, strlen(k));
            fill(b, c, &kids[2 * i + 1]);
            i++;
        }
        break;
    }
    default:
        n->type = WF_VALUE_NULL;
        break;
    }
}

wf_value *wf_ctree_new(const json_t *v)
{
    build b = {.nodes = 1};
    json_t *empty = v ? NULL : json_object();
    wf_value *root = NULL;

    if (!v && !(v = empty))
        return NULL;
    wf_map_init(&b.strs);
    if (measure(&b, v) < 0 || b.nodes > UINT32_MAX ||
        !(root = calloc(1, b.nodes * sizeof(wf_value) + b.bytes)))
        goto out;
    b.pool = (char *)(root + b.nodes);
    for (size_t i = 0; i < b.strs.cap; i++) {
        const wf_map_entry *e = &b.strs.e[i];
        if (e->key)
            memcpy(b.pool + ((uintptr_t)e->value - 1), e->key, e->klen); /* NUL: calloc's */
    }
    b.next = root + 1;
    fill(&b, v, root);
out:
    wf_map_free(&b.strs);
    json_decref(empty);
    return root;
}

void wf_ctree_free(wf_value *root)
{
    free(root);
}

wf_value_type wf_ctree_type(const wf_value *v)
{
    return v ? (wf_value_type)v->type : WF_VALUE_NULL;
}

const char *wf_ctree_string(const wf_value *v, size_t *len)
{
    if (!v || v->type != WF_VALUE_STRING)
        return NULL;
    if (len)
        *len = v->n;
    return v->u.s;
}

int64_t wf_ctree_int(const wf_value *v)
{
    return !v                            ? 0
           : v->type == WF_VALUE_INT    ? v->u.i
           : v->type == WF_VALUE_DOUBLE ? (int64_t)v->u.d
                                        : 0;
}

double wf_ctree_double(const wf_value *v)
{
    return !v                            ? 0
           : v->type == WF_VALUE_DOUBLE ? v->u.d
           : v->type == WF_VALUE_INT    ? (double)v->u.i
                                        : 0;
}

int wf_ctree_bool(const wf_value *v)
{
    return v && v->type == WF_VALUE_BOOL && v->u.i;
}

size_t wf_ctree_len(const wf_value *v)
{
    return v && (v->type == WF_VALUE_LIST || v->type == WF_VALUE_MAP) ? v->n : 0;
}

const wf_value *wf_ctree_at(const wf_value *v, size_t i)
{
    if (!v || i >= wf_ctree_len(v))
        return NULL;
    return v->type == WF_VALUE_LIST ? &v->u.kids[i] : &v->u.kids[2 * i + 1];
}

const char *wf_ctree_key_at(const wf_value *v, size_t i)
{
    return v && v->type == WF_VALUE_MAP && i < v->n ? v->u.kids[2 * i].u.s : NULL;
}

const wf_value *wf_ctree_get(const wf_value *map, const char *key)
{
    size_t len;

    if (!map || map->type != WF_VALUE_MAP || !key)
        return NULL;
    len = strlen(key);
    for (size_t i = 0; i < map->n; i++) {
        const wf_value *k = &map->u.kids[2 * i];
        if (k->n == len && memcmp(k->u.s, key, len) == 0)
            return &map->u.kids[2 * i + 1];
    }
    return NULL;
}
