/* map.c: open addressing with linear probing; see map.h. */
#include "util/map.h"

#include <stdlib.h>
#include <string.h>

uint64_t wf_hash(const void *p, size_t len)
{
    /* FNV-1a: short keys, build-time use; good enough and simple. */
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void wf_map_init(wf_map *m)
{
    m->e = NULL;
    m->cap = m->n = 0;
}

void wf_map_free(wf_map *m)
{
    free(m->e);
    wf_map_init(m);
}

static int same(const wf_map_entry *e, const void *key, size_t klen, uint64_t h)
{
    if (e->hash != h || e->klen != klen)
        return 0;
    return klen ? memcmp(e->key, key, klen) == 0 : e->key == key;
}

static int put(wf_map *m, const void *key, size_t klen, uint64_t h, void *value);

static int grow(wf_map *m)
{
    wf_map old = *m;
    size_t cap = old.cap ? old.cap * 2 : 16;

    m->e = calloc(cap, sizeof(*m->e));
    if (!m->e) {
        *m = old;
        return -1;
    }
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.e[i].key)
            put(m, old.e[i].key, old.e[i].klen, old.e[i].hash, old.e[i].value);
    free(old.e);
    return 0;
}

static int put(wf_map *m, const void *key, size_t klen, uint64_t h, void *value)
{
    size_t i;

    if ((m->n + 1) * 4 > m->cap * 3 && grow(m) < 0)
        return -1;
    for (i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        wf_map_entry *e = &m->e[i];
        if (!e->key) {
            e->key = key;
            e->klen = klen;
            e->hash = h;
            e->value = value;
            m->n++;
            return 0;
        }
        if (same(e, key, klen, h)) {
            e->value = value;
            return 0;
        }
    }
}

static void *get(const wf_map *m, const void *key, size_t klen, uint64_t h)
{
    if (!m->cap)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const wf_map_entry *e = &m->e[i];
        if (!e->key)
            return NULL;
        if (same(e, key, klen, h))
            return e->value;
    }
}

int wf_map_put(wf_map *m, const char *key, size_t klen, void *value)
{
    /* A zero-length string key is stored with klen 0 but a distinct
     * pointer; give it one byte of hash so it never equals a pointer key. */
    return put(m, key, klen, wf_hash(key, klen) ^ 0x9e3779b97f4a7c15ULL, value);
}

void *wf_map_get(const wf_map *m, const char *key, size_t klen)
{
    return get(m, key, klen, wf_hash(key, klen) ^ 0x9e3779b97f4a7c15ULL);
}

int wf_map_put_ptr(wf_map *m, const void *key, void *value)
{
    return put(m, key, 0, wf_hash(&key, sizeof(key)), value);
}

void *wf_map_get_ptr(const wf_map *m, const void *key)
{
    return get(m, key, 0, wf_hash(&key, sizeof(key)));
}
