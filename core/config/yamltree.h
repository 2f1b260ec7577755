/*
 * yamltree.h: a YAML node tree that remembers where every node was written.
 *
 * libyaml's events are turned into a small tree of maps, lists and
 * scalars, each with its 1-based line and column, so that the typed parser
 * (config/parse.c) can point every error at the exact node.  Plain scalars
 * are resolved with the YAML 1.2 core schema (null, booleans, integers,
 * floats, strings); quoted and block scalars are always strings.  Aliases
 * are expanded by copying, under a node budget, so that a "billion laughs"
 * document is refused instead of exhausting memory.
 */
#ifndef WF_CONFIG_YAMLTREE_H
#define WF_CONFIG_YAMLTREE_H

#include <stddef.h>

#include "util/arena.h"

typedef enum wf_yn_type {
    WF_YN_SCALAR = 1,
    WF_YN_SEQ = 2,
    WF_YN_MAP = 3,
} wf_yn_type;

/* How a scalar resolved. */
typedef enum wf_yv {
    WF_YV_NULL = 0,
    WF_YV_BOOL = 1,
    WF_YV_INT = 2,
    WF_YV_FLOAT = 3,
    WF_YV_STR = 4,
} wf_yv;

typedef struct wf_yn {
    wf_yn_type type;
    wf_yv vtype;   /* scalars only */
    int line, col; /* 1-based */
    char *s;       /* scalar text, NUL-terminated (may also contain NULs) */
    size_t len;    /* scalar length in bytes */
    /* A list holds its items; a map holds key0, value0, key1, value1, ... */
    struct wf_yn **kids;
    size_t n, cap;
} wf_yn;

typedef struct wf_ydoc {
    wf_yn *root; /* never NULL */
    int line, col;
} wf_ydoc;

typedef struct wf_ydocs {
    wf_ydoc *v;
    size_t n, cap;
    wf_arena arena; /* every node, list and string: freed whole */
} wf_ydocs;

/*
 * Parses buf[0..len) (the whole file) into documents appended to *out
 * (owned by the caller, freed with wf__yaml_free_docs).  Empty documents
 * are skipped.  Returns 0, or -1 with a message in err and the 1-based
 * position of the problem in *line and *col; documents completed before the
 * error stay in *out.
 */
int wf__yaml_parse(const char *buf, size_t len, wf_ydocs *out, char *err, size_t errlen, int *line,
                   int *col);
void wf__yaml_free_docs(wf_ydocs *d);

/* Number of key/value pairs of a map node. */
static inline size_t wf__yn_pairs(const wf_yn *m)
{
    return m->n / 2;
}

/* The value for key in map m (first match), or NULL; m may be NULL. */
const wf_yn *wf__yn_get(const wf_yn *m, const char *key);
/* "a map", "a list", "a string", "an integer", ... for messages. */
const char *wf__yn_kind(const wf_yn *n);
/* 1 when n is absent or a null scalar. */
int wf__yn_is_null(const wf_yn *n);

#endif
