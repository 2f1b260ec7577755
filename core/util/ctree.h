/*
 * ctree.h: configuration trees as modules see them (the ABI's wf_value,
 * include/weft/filter.h), compact and read-only.
 *
 * A filter's configuration and a listener's route table live as long as
 * the configuration they came with, on every proxy of the mesh.  As jansson
 * trees they cost about six times their JSON text (a hash table per
 * object, an allocation per value); a ctree is one allocation of 16-byte
 * nodes, the children of a list or map side by side, and one copy of each
 * distinct string.  Lookups by index are O(1); by key, a scan of the map
 * (configuration maps are small).
 */
#ifndef WF_UTIL_CTREE_H
#define WF_UTIL_CTREE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <weft/filter.h>

/* The tree of v (NULL: an empty map), or NULL on out of memory.  Free it
 * with wf_ctree_free.  A node pointer stays valid, and the same, for the
 * tree's life. */
wf_value *wf_ctree_new(const json_t *v);
void wf_ctree_free(wf_value *root);

wf_value_type wf_ctree_type(const wf_value *v); /* NULL is WF_VALUE_NULL */
/* A string's text (NUL-terminated) and length; NULL when not a string. */
const char *wf_ctree_string(const wf_value *v, size_t *len);
int64_t wf_ctree_int(const wf_value *v);   /* doubles truncate; 0 if not a number */
double wf_ctree_double(const wf_value *v); /* ints convert; 0 if not a number */
int wf_ctree_bool(const wf_value *v);      /* 1 for true */
size_t wf_ctree_len(const wf_value *v);    /* entries of a list or map; 0 otherwise */
const wf_value *wf_ctree_at(const wf_value *v, size_t i);      /* list item or map value */
const char *wf_ctree_key_at(const wf_value *v, size_t i);      /* map key */
const wf_value *wf_ctree_get(const wf_value *map, const char *key);

#endif
