/* common.c: flag helpers the roles share (see roles.h). */
#include "roles/roles.h"

#include "config/config.h"
#include "util/log.h"

int wf_duration_flag(const char *name, const char *v, int64_t max_ms, int64_t *ms)
{
    char err[256];

    if (wf_duration_parse(v, ms, err, sizeof(err)) < 0)
        return wf_usage_error("flag --%s: %s", name, err);
    if (*ms > max_ms)
        return wf_usage_error("flag --%s: \"%s\" is longer than %lld s", name, v,
                              (long long)(max_ms / 1000));
    return 0;
}

int wf_role_flags(const wf_flag *flags, size_t n, int argc, char **argv, int first,
                  const char **log_level)
{
    char err[512];
    int lvl;

    *log_level = "info";
    if (wf_flags_parse(flags, n, argc, argv, first, err, sizeof(err)) < 0)
        return wf_usage_error("%s", err);
    if ((lvl = wf_log_parse_level(*log_level)) < 0)
        return wf_usage_error("flag --log-level: \"%s\" is not debug, info, warn or error",
                              *log_level);
    wf_log_threshold = lvl;
    return 0;
}
