/*
 * roles/proxy.c: `weft --role=proxy`, the sidecar.  Parses its flags and
 * runs the proxy (core/proxy/proxy.c).
 */
#include <stdio.h>
#include <string.h>

#include "proxy/proxy.h"
#include "roles/roles.h"
#include "util/flags.h"
#include "util/log.h"

static wf_proxy_opts opts;
static wf_strlist plugin_dirs;
static const char *log_level = "info";

static const wf_flag flags[] = {
    {"config-dir", WF_FLAG_STR, &opts.config_dir, 0, 0, "DIR",
     "static mode: Istio/weft YAML to serve (required for now)"},
    {"namespace", WF_FLAG_STR, &opts.namespace_, 0, 0, "NS", "workload namespace (default)"},
    {"service-account", WF_FLAG_STR, &opts.service_account, 0, 0, "SA",
     "workload service account (default)"},
    {"labels", WF_FLAG_STR, &opts.labels, 0, 0, "K=V,...", "workload labels"},
    {"outbound", WF_FLAG_ADDR, &opts.outbound, 0, 0, "ADDR",
     "outbound listener for the app (127.0.0.1:15001)"},
    {"inbound", WF_FLAG_ADDR, &opts.inbound, 0, 0, "ADDR",
     "inbound listener for peers (:15006); needs --app-port"},
    {"app-port", WF_FLAG_INT, &opts.app_port, 1, 65535, "N",
     "the app's port on 127.0.0.1; inbound traffic goes there"},
    {"admin", WF_FLAG_ADDR, &opts.admin, 0, 0, "ADDR", "admin endpoints (127.0.0.1:15000)"},
    {"concurrency", WF_FLAG_INT, &opts.concurrency, 1, WF_MAX_WORKERS, "N",
     "worker threads (2)"},
    {"module-dir", WF_FLAG_STR, &opts.module_dir, 0, 0, "DIR",
     "built-in filter modules (modules/ beside the binary)"},
    {"plugin-dir", WF_FLAG_MULTI, &plugin_dirs, 0, 0, "DIR",
     "more plugin directories, searched first; repeatable (then plugins/ beside the binary, "
     "/etc/weft/plugins)"},
    {"seed", WF_FLAG_INT, &opts.seed, 0, 0x7fffffff, "N",
     "fix the random sequence (weighted splits, balancers) for tests"},
    {"drain-timeout", WF_FLAG_INT, &opts.drain_timeout_ms, 0, 3600000, "MS",
     "how long SIGTERM waits for in-flight requests (10000)"},
    {"log-level", WF_FLAG_STR, &log_level, 0, 0, "LEVEL", "debug|info|warn|error (info)"},
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static int run(int argc, char **argv, int first)
{
    char err[512];
    int lvl;

    opts.namespace_ = "default";
    opts.service_account = "default";
    opts.labels = "";
    opts.outbound = "127.0.0.1:15001";
    opts.inbound = ":15006";
    opts.admin = "127.0.0.1:15000";
    opts.concurrency = 2;
    opts.drain_timeout_ms = 10000;
    if (wf_flags_parse(flags, N_FLAGS, argc, argv, first, err, sizeof(err)) < 0)
        return wf_usage_error("%s", err);
    if ((lvl = wf_log_parse_level(log_level)) < 0)
        return wf_usage_error("flag --log-level: \"%s\" is not debug, info, warn or error", log_level);
    wf_log_threshold = lvl;
    if (!opts.config_dir)
        return wf_usage_error("--role=proxy needs --config-dir DIR (static mode)");
    for (size_t i = 0; i < plugin_dirs.n; i++)
        opts.plugin_dirs[opts.n_plugin_dirs++] = plugin_dirs.v[i];
    return wf_proxy_run(&opts);
}

static void usage(void)
{
    wf_flags_usage(flags, N_FLAGS);
}

const wf_role wf_role_proxy = {"proxy", "the sidecar next to every workload", run, usage};
