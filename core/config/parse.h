/*
 * parse.h: the table-driven typed parser behind the config loader.
 *
 * Each Istio message is described once (config/kinds.c) as a table of
 * fields: YAML name, type, where it lives in the C struct.  One engine
 * (config/parse.c) uses the tables to parse, to fill defaults and to free,
 * so that unknown fields, wrong types, bad enums, ranges and required
 * fields are checked the same way everywhere and a new field is one line.
 *
 * Offsets other than `off` are stored plus one (WF__OFF) so that zero can
 * mean "none".  A field of type WF__F_INLINE whose `off` is 0 and whose
 * sub-message uses the parent's offsets "flattens" a nested YAML map (such
 * as `port: {number: 80}`) into the parent struct.
 */
#ifndef WF_CONFIG_PARSE_H
#define WF_CONFIG_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "config/yamltree.h"

#define WF__MAX_DIAGS 1000

/* Parsing context for one document. */
typedef struct wf__pctx {
    wf_diags *d;
    const char *file; /* interned in the config */
    char res[384];    /* "Kind/namespace/name" or "-" */
    char path[768];   /* current field path */
    size_t plen;
    int errors;       /* errors reported through this context */
    const char *ns;   /* the resource's namespace */
    const wf_yn *doc; /* where errors about absent nodes point */
} wf__pctx;

typedef enum wf__ftype {
    WF__F_END = 0,
    WF__F_STR,        /* char * */
    WF__F_STRLIST,    /* char **off, size_t aux */
    WF__F_KV,         /* wf_kv *off, size_t aux; string values */
    WF__F_KVU32,      /* wf_kv *off, size_t aux, uint32_t *aux2; integer values */
    WF__F_INT,        /* int (int32 range) */
    WF__F_U32,        /* uint32_t */
    WF__F_I64,        /* int64_t, -1 unset, non-negative */
    WF__F_BOOL,       /* int, aux = set flag */
    WF__F_DUR,        /* int64_t ms, -1 unset */
    WF__F_DOUBLE,     /* double, aux = set flag */
    WF__F_ENUM,       /* int, sub = wf__enum[], aux = set flag */
    WF__F_MSG,        /* T *, sub = wf__msg */
    WF__F_INLINE,     /* T at off, sub = wf__msg */
    WF__F_MSGLIST,    /* T *off, size_t aux, sub = wf__msg; appends */
    WF__F_MSGONE,     /* one map appended to the list at off/aux */
    WF__F_SMATCH,     /* wf_string_match */
    WF__F_SMATCHLIST, /* wf_string_match *off, size_t aux */
    WF__F_NMATCH,     /* wf_named_match *off, size_t aux */
    WF__F_JSON,       /* json_t * */
    WF__F_CUSTOM,     /* sub = wf__custom */
    WF__F_IGNORE,     /* accepted and dropped (Kubernetes bookkeeping) */
    WF__F_ISTR,       /* internal char *, only freed */
    WF__F_ISTRLIST,   /* internal char **off with count aux, only freed */
} wf__ftype;

enum {
    WF__REQ = 1 << 0,      /* missing -> error */
    WF__PORT = 1 << 1,     /* 1..65535 */
    WF__NONNEG = 1 << 2,   /* >= 0 */
    WF__PERCENT = 1 << 3,  /* 0..100 */
    WF__NOFREE = 1 << 4,   /* another field frees this storage */
    WF__HTTPCODE = 1 << 5, /* 200..599 */
};

#define WF__OFF(T, m) (offsetof(T, m) + 1)
#define WF__AT(base, off1) ((void *)((char *)(base) + (off1)-1))

typedef struct wf__enum {
    const char *name;
    int value;
} wf__enum;

struct wf__field;
struct wf__msg;

typedef struct wf__custom {
    void (*parse)(wf__pctx *c, const wf_yn *v, void *base, const struct wf__field *f);
    void (*free)(void *base, const struct wf__field *f);
} wf__custom;

typedef struct wf__field {
    const char *name;
    wf__ftype type;
    size_t off;
    size_t aux, aux2; /* WF__OFF-encoded */
    size_t pos;       /* WF__OFF-encoded wf_pos filled from the value node */
    const void *sub;
    unsigned flags;
    double def;
} wf__field;

typedef struct wf__msg {
    size_t size;
    size_t pos; /* WF__OFF-encoded wf_pos of the map node */
    const wf__field *fields;
    /* Cross-field checks once the map is parsed; node may be NULL. */
    void (*check)(wf__pctx *c, const wf_yn *node, void *obj);
} wf__msg;

/* Errors: the field is the current path (or `field`), the position the node's. */
void wf__err(wf__pctx *c, const wf_yn *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void wf__err_field(wf__pctx *c, const wf_yn *n, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Adds a diagnostic unless the load already reported WF__MAX_DIAGS. */
void wf__report(wf_diags *d, const char *file, int line, int col, const char *res,
                const char *field, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* Path building: returns the old length for wf__path_pop. */
size_t wf__path_key(wf__pctx *c, const char *key);
size_t wf__path_idx(wf__pctx *c, size_t i);
void wf__path_pop(wf__pctx *c, size_t mark);

/* Typed parse of map node `n` (NULL = absent) into obj, initialised already. */
void wf__parse_msg(wf__pctx *c, const wf_yn *n, const wf__msg *m, void *obj);
void wf__init_msg(const wf__msg *m, void *obj);
void wf__free_msg(const wf__msg *m, void *obj);

/* Reports an unknown key k among the known names (with a suggestion). */
void wf__unknown_field(wf__pctx *c, const wf_yn *k, const char *const *names, size_t n);

/* Reports keys written twice in map m; wf__dup_keys also returns a flag
 * per pair marking the later copies (caller frees; NULL when none). */
void wf__check_dup_keys(wf__pctx *c, const wf_yn *m);
unsigned char *wf__dup_keys(wf__pctx *c, const wf_yn *m);

/* For n list entries keyed by strs[i] (NULL = no key) or, when strs is
 * NULL, by nums[i] (0 = no key): the index of the first earlier entry with
 * the same key, or SIZE_MAX.  Caller frees; NULL when out of memory. */
size_t *wf__first_dups(const char *const *strs, const uint32_t *nums, size_t n);
/* Reports at a stored position, with the current path as the field. */
void wf__err_pos(wf__pctx *c, const wf_pos *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Scalar helpers; each reports its own error and returns -1 on failure. */
int wf__get_str(wf__pctx *c, const wf_yn *v, char **out);
int wf__get_int(wf__pctx *c, const wf_yn *v, long long lo, long long hi, long long *out);
wf_pos wf__pos(const wf__pctx *c, const wf_yn *n);

/* Value syntax checks shared with the checks in load.c. */
int wf__check_regex(wf__pctx *c, const wf_yn *n, const char *re);

#endif
