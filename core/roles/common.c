/* common.c: flag helpers the roles share. */
#include "roles/roles.h"

#include "config/config.h"

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
