/*
 * map.h: small open-addressing hash maps used when a snapshot is built and
 * for per-worker lookups: string keys (borrowed, must outlive the map) and
 * pointer keys.  Values are void pointers.  Not thread-safe; read-only use
 * from many threads is fine once built.
 */
#ifndef WF_UTIL_MAP_H
#define WF_UTIL_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct wf_map_entry {
    const void *key; /* string or pointer; NULL = empty */
    size_t klen;     /* string length, or 0 for pointer keys */
    uint64_t hash;
    void *value;
} wf_map_entry;

typedef struct wf_map {
    wf_map_entry *e;
    size_t cap, n; /* cap is a power of two */
} wf_map;

uint64_t wf_hash(const void *p, size_t len);
void wf_map_init(wf_map *m);
void wf_map_free(wf_map *m);
/* String keys: the key bytes must outlive the map.  Returns 0 or -1 (OOM);
 * an existing key has its value replaced. */
int wf_map_put(wf_map *m, const char *key, size_t klen, void *value);
void *wf_map_get(const wf_map *m, const char *key, size_t klen);
/* Pointer keys. */
int wf_map_put_ptr(wf_map *m, const void *key, void *value);
void *wf_map_get_ptr(const wf_map *m, const void *key);

#endif
