/* common.c: flag helpers the roles share (see roles.h). */
#include "roles/roles.h"

#include "config/config.h"
#include "util/log.h"

int wf_duration_flag(const char *name, const char *v, int64_t max_ms, int64_t *ms)
{
    char err[256];

    if (wf_duration_parse(v, ms, err, sizeof(err)) < 0)
        return wf_usage_error("flag --%s: %s", name, err);
    if (*ms > max_ms) {
        if (max_ms % 3600000 == 0)
            return wf_usage_error("flag --%s: \"%s\" is longer than %lldh, the most it takes",
                                  name, v, (long long)(max_ms / 3600000));
        return wf_usage_error("flag --%s: \"%s\" is longer than %lld s, the most it takes", name,
                              v, (long long)(max_ms / 1000));
    }
    return 0;
}

static int ttl_secs(const char *name, const char *v, long *out)
{
    int64_t ms;

    if (wf_duration_flag(name, v, 3650LL * 86400 * 1000, &ms))
        return 2;
    if (ms < 1000)
        return wf_usage_error("flag --%s: \"%s\" is shorter than a second", name, v);
    *out = (long)(ms / 1000);
    return 0;
}

int wf_cert_ttl_flags(const char *ttl, const char *max_ttl, long *ttl_s, long *max_s)
{
    if (ttl_secs("cert-ttl", ttl, ttl_s) || ttl_secs("max-cert-ttl", max_ttl, max_s))
        return 2;
    if (*ttl_s > *max_s)
        return wf_usage_error("flag --cert-ttl %s is longer than --max-cert-ttl %s", ttl, max_ttl);
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
