/* log.c: the one place log lines are formatted and written (stderr), and
 * error messages for callers are made. */
#define _GNU_SOURCE /* vasprintf */
#include "util/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int wf_log_threshold = WF_LINFO;
const char *wf_log_role = "weft";

static const char *const names[] = {"debug", "info", "warn", "error"};

void wf_vlog(int level, const char *tag, const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    int n;

    if (level < wf_log_threshold)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s%s%s: ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (long)(tv.tv_usec / 1000), names[level & 3], wf_log_role, tag ? " " : "",
                 tag ? tag : "");
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    n = (int)strlen(line);
    line[n++] = '\n';
    /* One write per line so lines from several threads never interleave. */
    fwrite(line, 1, (size_t)n, stderr);
}

void wf_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    wf_vlog(level, NULL, fmt, ap);
    va_end(ap);
}

int wf_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

int wf_fail(char **err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(err, fmt, ap) < 0)
            *err = NULL;
        va_end(ap);
    }
    return -1;
}

int wf_ratelimit_ok(wf_ratelimit *r, uint64_t now_ms, uint64_t interval_ms, uint64_t *skipped)
{
    if (r->last_ms && now_ms - r->last_ms < interval_ms) {
        r->suppressed++;
        return 0;
    }
    *skipped = r->suppressed;
    r->suppressed = 0;
    r->last_ms = now_ms ? now_ms : 1;
    return 1;
}
