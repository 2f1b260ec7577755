/*
 * kinds.h: the table of resource kinds the loader knows, each with its
 * API group, versions, spec description (config/kinds.c) and where its
 * array lives in wf_config.
 */
#ifndef WF_CONFIG_KINDS_H
#define WF_CONFIG_KINDS_H

#include "config/parse.h"

typedef struct wf__kind {
    const char *kind;
    const char *group;
    const char *const *versions; /* NULL-terminated */
    const wf__msg *spec;
    size_t elem_size;
    size_t spec_off; /* where the spec fields start inside an element */
    size_t arr_off;  /* offset of `T *` in wf_config; SIZE_MAX for MeshConfig */
    size_t cnt_off;  /* offset of its count */
    int name_optional;
} wf__kind;

extern const wf__kind wf__kinds[];
extern const size_t wf__n_kinds;
extern const wf__msg wf__meta_msg;

/* The MeshConfig kind, which is a single value rather than an array. */
#define WF__KIND_IS_MESH(k) ((k)->arr_off == (size_t)-1)

#endif
