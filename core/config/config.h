/*
 * config.h: loading Istio and weft resources from YAML files.
 *
 * wf_config_load reads files and directories of multi-document YAML, parses
 * every document into the typed structures of config/resources-t.h,
 * validates them (types, enums, unknown fields, duplicates, dangling
 * references), resolves short host names in each resource's namespace and
 * fills Istio's defaults.  Every problem is reported as one diagnostic that
 * prints as
 *
 *     file:line:col: Kind/namespace/name: field: message
 *
 * A configuration with any error is refused whole: wf_config_load then
 * returns -1 and *out stays NULL, so a bad file never replaces good config.
 */
#ifndef WF_CONFIG_CONFIG_H
#define WF_CONFIG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/resources-t.h"

/* One problem found while loading. All strings owned by the diag list. */
typedef struct wf_diag {
    char *file;     /* path as given */
    int line, col;  /* 1-based; 0 when unknown */
    char *resource; /* "Kind/namespace/name", or "-" before one is known */
    char *field;    /* dotted path such as "spec.http[0].route[1].destination.subset" */
    char *message;
} wf_diag;

typedef struct wf_diags {
    wf_diag *v;
    size_t n, cap;
} wf_diags;

/* Appends a diagnostic (strings copied); the one helper every config error
 * goes through. */
void wf_diag_add(wf_diags *d, const char *file, int line, int col, const char *resource,
                 const char *field, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* Prints each diagnostic as one line in the documented format. */
void wf_diags_print(const wf_diags *d, FILE *f);
/* Formats diagnostic i into buf (one line, no newline). */
void wf_diag_format(const wf_diag *dg, char *buf, size_t len);
void wf_diags_free(wf_diags *d);

/*
 * Loads paths[0..n) (files, or directories whose *.yaml and *.yml files are
 * read in name order).  Returns 0 and a new config in *out (caller frees
 * with wf_config_free), or -1 with every problem in diags.
 */
int wf_config_load(const char *const *paths, size_t n, wf_config **out, wf_diags *diags);
void wf_config_free(wf_config *c);

/* YAML held in memory (from etcd, a test, a fuzzer); `name` stands for the
 * file name in diagnostics and wf_pos.  Borrowed for the call only. */
typedef struct wf_config_buf {
    const char *name;
    const char *data;
    size_t len;
} wf_config_buf;

/* wf_config_load for in-memory buffers, with the same checks and result. */
int wf_config_load_bufs(const wf_config_buf *bufs, size_t n, wf_config **out, wf_diags *diags);

/*
 * Helpers shared with the translator and the proxy.
 */

/* Parses a duration such as "1.5s", "100ms", "2m", "1h" or "500us" into
 * milliseconds (a non-zero value under 1ms becomes 1).  Returns 0, or -1
 * with a one-line reason in err. */
int wf_duration_parse(const char *s, int64_t *ms, char *err, size_t errlen);
/* Checks that re is a regex both PCRE2 and RE2 accept, with the same
 * meaning.  Returns 0, or -1 with a one-line reason in err. */
int wf_regex_check(const char *re, char *err, size_t errlen);
/* Resolves a host as Istio does in namespace ns: a name without a dot
 * (other than "*") becomes name.ns.svc.cluster.local.  Returns a new string
 * the caller frees, or NULL when out of memory. */
char *wf_config_resolve_host(const char *host, const char *ns);
/* Counts the resources of every kind in c (the MeshConfig included when one
 * was loaded). */
size_t wf_config_count(const wf_config *c);

#endif
