/*
 * flags.h: command-line flags for every role and tool, table-driven so that
 * `weft --help` and the parser can never disagree.  Both `--flag=value` and
 * `--flag value` are accepted.  A bad flag or value is one line on stderr
 * starting with "weft: " and exit code 2 (the caller exits).
 */
#ifndef WF_UTIL_FLAGS_H
#define WF_UTIL_FLAGS_H

#include <stddef.h>

typedef enum wf_flag_type {
    WF_FLAG_STR,   /* const char *; value borrowed from argv */
    WF_FLAG_INT,   /* long, within [min, max] */
    WF_FLAG_ADDR,  /* const char * "host:port" or ":port"; checked, stored as given */
    WF_FLAG_MULTI, /* repeatable: wf_strlist */
    WF_FLAG_BOOL,  /* int, set to 1 when present (no value) */
} wf_flag_type;

typedef struct wf_strlist {
    const char *v[32];
    size_t n;
} wf_strlist;

typedef struct wf_flag {
    const char *name; /* without the dashes */
    wf_flag_type type;
    void *dst;
    long min, max;    /* WF_FLAG_INT bounds */
    const char *metavar;
    const char *help; /* one line, with the default */
} wf_flag;

/* Parses argv[first..argc) against flags[0..n).  Returns 0, or -1 after
 * writing one line into err. */
int wf_flags_parse(const wf_flag *flags, size_t n, int argc, char **argv, int first, char *err,
                   size_t errlen);
/* Prints the flag table, indented, for --help. */
void wf_flags_usage(const wf_flag *flags, size_t n);

/* Splits "host:port" / ":port" / "[v6]:port" into host (empty → 0.0.0.0)
 * and port.  Returns 0 or -1. */
int wf_addr_split(const char *addr, char *host, size_t hostlen, int *port);

#endif
