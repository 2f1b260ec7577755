/*
 * roles.h: the entry point of each role and tool.  main.c parses only the
 * role (or tool name) and hands argv to one of these.  Each returns the
 * process exit code: 0 ok, 1 runtime or config failure, 2 usage error.
 * Also the pieces of a role's command line that several roles share, so
 * that a flag two roles both take is spelt, defaulted and applied once.
 */
#ifndef WF_ROLES_ROLES_H
#define WF_ROLES_ROLES_H

#include <stddef.h>
#include <stdint.h>

#include "util/flags.h"

typedef struct wf_role {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv, int first); /* argv[first..] are its flags */
    void (*usage)(void);                          /* prints its flags */
} wf_role;

extern const wf_role wf_role_proxy;
extern const wf_role wf_role_istiod;
extern const wf_role wf_role_gateway;
extern const wf_role wf_role_ca;

/* Prints "weft: MSG" on stderr and returns 2; for usage errors. */
int wf_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parses a duration flag ("100ms", "2s", "24h") into *ms; on a bad value or
 * one above max_ms prints the usage error and returns 2, else 0. */
int wf_duration_flag(const char *name, const char *v, int64_t max_ms, int64_t *ms);

/* --log-level, the same in every role; wf_role_flags() applies it. */
#define WF_FLAG_LOG_LEVEL(dst)                                                                     \
    {"log-level", WF_FLAG_STR, (dst), 0, 0, "LEVEL", "debug|info|warn|error (info)"}

/* The lifetimes of workload certificates, for the roles that run a CA
 * (--role=ca and --role=istiod).  The defaults are written once here and
 * end each role's own help line, so the help cannot disagree with what
 * is granted. */
#define WF_CERT_TTL_DEFAULT "24h"
#define WF_MAX_CERT_TTL_DEFAULT "2160h"
#define WF_FLAGS_CERT_TTL(ttl_dst, ttl_help, max_dst, max_help)                                    \
    {"cert-ttl", WF_FLAG_STR, (ttl_dst), 0, 0, "DURATION",                                         \
     ttl_help " (" WF_CERT_TTL_DEFAULT ")"},                                                       \
    {"max-cert-ttl", WF_FLAG_STR, (max_dst), 0, 0, "DURATION",                                     \
     max_help " (" WF_MAX_CERT_TTL_DEFAULT ")"}
/* Checks those two flags alike in every role: each from a second to ten
 * years, --cert-ttl no longer than --max-cert-ttl.  Sets the lifetimes in
 * seconds; returns 0, or 2 after printing the usage error. */
int wf_cert_ttl_flags(const char *ttl, const char *max_ttl, long *ttl_s, long *max_s);

/* Parses a role's flags (argv[first..argc) against flags[0..n)) and sets
 * the log threshold from *log_level, the destination of the table's
 * WF_FLAG_LOG_LEVEL; *log_level is set to "info" first.  Returns 0, or 2
 * after printing the usage error (an unknown flag, a bad value, a level
 * that is not debug, info, warn or error). */
int wf_role_flags(const wf_flag *flags, size_t n, int argc, char **argv, int first,
                  const char **log_level);

#endif
