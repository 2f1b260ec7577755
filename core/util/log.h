/*
 * log.h: operator-facing logging.  One line per event, tagged with the
 * role and, where there is one, the connection and stream.  Debug lines
 * cost one branch when debug logging is off.
 */
#ifndef WF_UTIL_LOG_H
#define WF_UTIL_LOG_H

#include <stdarg.h>
#include <stdint.h>

enum { WF_LDEBUG = 0, WF_LINFO = 1, WF_LWARN = 2, WF_LERROR = 3 };

extern int wf_log_threshold;        /* lines below this level are dropped */
extern const char *wf_log_role; /* "proxy", "istiod", ... */

void wf_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wf_vlog(int level, const char *tag, const char *fmt, va_list ap);

#define WF_DEBUG(...) do { if (wf_log_threshold <= WF_LDEBUG) wf_log(WF_LDEBUG, __VA_ARGS__); } while (0)
#define WF_INFO(...) wf_log(WF_LINFO, __VA_ARGS__)
#define WF_WARN(...) wf_log(WF_LWARN, __VA_ARGS__)
#define WF_ERROR(...) wf_log(WF_LERROR, __VA_ARGS__)

/* Parses "debug|info|warn|error"; returns the level or -1. */
int wf_log_parse_level(const char *s);

/* Rate limiting for lines a flood could repeat (a misconfigured peer
 * retrying thousands of times a second): at most one per interval. */
typedef struct wf_ratelimit {
    uint64_t last_ms;
    uint64_t suppressed;
} wf_ratelimit;
/* 1 when a line may be logged at now_ms; *skipped then receives how many
 * were suppressed since the last one.  0: suppressed (counted). */
int wf_ratelimit_ok(wf_ratelimit *r, uint64_t now_ms, uint64_t interval_ms, uint64_t *skipped);

/* For functions that report errors as a malloc'd message: sets *err (when
 * err is not NULL) to the formatted text, owned by the caller, and returns
 * -1. */
int wf_fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
