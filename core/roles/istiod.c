/*
 * roles/istiod.c: `weft --role=istiod`, the control plane.  Parses its
 * flags and runs istiod (core/istiod/istiod.c).
 */
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "istiod/istiod.h"
#include "roles/roles.h"
#include "util/flags.h"
#include "util/log.h"

static const char *config_dir, *xds_listen, *monitoring, *grace, *debounce;
static const char *log_level = "info";

static const wf_flag flags[] = {
    {"config-dir", WF_FLAG_STR, &config_dir, 0, 0, "DIR",
     "Istio/weft YAML to serve; watched, reloaded on change (required)"},
    {"xds-listen", WF_FLAG_ADDR, &xds_listen, 0, 0, "ADDR",
     "xDS (ADS over gRPC, plaintext) for proxies (127.0.0.1:15010)"},
    {"monitoring", WF_FLAG_ADDR, &monitoring, 0, 0, "ADDR",
     "/ready, /debug/syncz, /debug/config_status, /metrics (127.0.0.1:15014)"},
    {"registry-grace", WF_FLAG_STR, &grace, 0, 0, "DURATION",
     "keep a registered workload this long after its proxy disconnects (3s)"},
    {"debounce", WF_FLAG_STR, &debounce, 0, 0, "DURATION",
     "wait this long after a change before reloading or pushing (100ms)"},
    {"log-level", WF_FLAG_STR, &log_level, 0, 0, "LEVEL", "debug|info|warn|error (info)"},
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static int duration_flag(const char *name, const char *v, int64_t *ms)
{
    char err[256];

    if (wf_duration_parse(v, ms, err, sizeof(err)) < 0)
        return wf_usage_error("flag --%s: %s", name, err);
    if (*ms > 3600000)
        return wf_usage_error("flag --%s: \"%s\" is longer than an hour", name, v);
    return 0;
}

static int run(int argc, char **argv, int first)
{
    wf_istiod_opts o = {0};
    char err[512];
    int lvl;

    config_dir = NULL;
    xds_listen = "127.0.0.1:15010";
    monitoring = "127.0.0.1:15014";
    grace = "3s";
    debounce = "100ms";
    if (wf_flags_parse(flags, N_FLAGS, argc, argv, first, err, sizeof(err)) < 0)
        return wf_usage_error("%s", err);
    if ((lvl = wf_log_parse_level(log_level)) < 0)
        return wf_usage_error("flag --log-level: \"%s\" is not debug, info, warn or error",
                              log_level);
    wf_log_threshold = lvl;
    if (!config_dir)
        return wf_usage_error("--role=istiod needs --config-dir DIR");
    if (duration_flag("registry-grace", grace, &o.registry_grace_ms) ||
        duration_flag("debounce", debounce, &o.debounce_ms))
        return 2;
    o.config_dir = config_dir;
    o.xds_listen = xds_listen;
    o.monitoring = monitoring;
    return wf_istiod_run(&o);
}

static void usage(void)
{
    wf_flags_usage(flags, N_FLAGS);
}

const wf_role wf_role_istiod = {"istiod", "control plane: config, registry, xDS server", run,
                                usage};
