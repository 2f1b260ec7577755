/*
 * roles.h: the entry point of each role and tool.  main.c parses only the
 * role (or tool name) and hands argv to one of these.  Each returns the
 * process exit code: 0 ok, 1 runtime or config failure, 2 usage error.
 */
#ifndef WF_ROLES_ROLES_H
#define WF_ROLES_ROLES_H

#include <stdint.h>

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

#endif
