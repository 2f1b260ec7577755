/*
 * roles/istiod.c: `weft --role=istiod`, the control plane.  Parses its
 * flags and runs istiod (core/istiod/istiod.c).
 */
#include "istiod/istiod.h"
#include "roles/roles.h"

static const char *config_dir, *xds_listen, *monitoring, *grace, *debounce, *secure_listen, *ca_dir,
    *cert_ttl, *max_cert_ttl, *log_level;

static const wf_flag flags[] = {
    {"config-dir", WF_FLAG_STR, &config_dir, 0, 0, "DIR",
     "Istio/weft YAML to serve; watched, reloaded on change (required)"},
    {"xds-listen", WF_FLAG_ADDR, &xds_listen, 0, 0, "ADDR",
     "xDS (ADS over gRPC, plaintext) for proxies (127.0.0.1:15010)"},
    {"secure-listen", WF_FLAG_ADDR, &secure_listen, 0, 0, "ADDR",
     "xDS over mTLS and the CA (CreateCertificate) (127.0.0.1:15012)"},
    {"ca-dir", WF_FLAG_STR, &ca_dir, 0, 0, "DIR",
     "the CA's root of trust: Istio plugged certs, or a root generated there on first start "
     "(/var/lib/weft/ca)"},
    WF_FLAGS_CERT_TTL(&cert_ttl, "workload certificate lifetime when a CSR asks for none",
                      &max_cert_ttl, "the longest workload certificate lifetime granted"),
    {"monitoring", WF_FLAG_ADDR, &monitoring, 0, 0, "ADDR",
     "/ready, /debug/syncz, /debug/config_status, /metrics (127.0.0.1:15014)"},
    {"registry-grace", WF_FLAG_STR, &grace, 0, 0, "DURATION",
     "keep a registered workload this long after its proxy disconnects (3s)"},
    {"debounce", WF_FLAG_STR, &debounce, 0, 0, "DURATION",
     "wait this long after a change before reloading or pushing (100ms)"},
    WF_FLAG_LOG_LEVEL(&log_level),
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static int run(int argc, char **argv, int first)
{
    wf_istiod_opts o = {0};
    long ttl = 0, max_ttl = 0;

    config_dir = NULL;
    xds_listen = "127.0.0.1:15010";
    monitoring = "127.0.0.1:15014";
    secure_listen = "127.0.0.1:15012";
    ca_dir = "/var/lib/weft/ca";
    cert_ttl = WF_CERT_TTL_DEFAULT;
    max_cert_ttl = WF_MAX_CERT_TTL_DEFAULT;
    grace = "3s";
    debounce = "100ms";
    if (wf_role_flags(flags, N_FLAGS, argc, argv, first, &log_level))
        return 2;
    if (!config_dir)
        return wf_usage_error("--role=istiod needs --config-dir DIR");
    if (wf_duration_flag("registry-grace", grace, 3600000, &o.registry_grace_ms) ||
        wf_duration_flag("debounce", debounce, 3600000, &o.debounce_ms) ||
        wf_cert_ttl_flags(cert_ttl, max_cert_ttl, &ttl, &max_ttl))
        return 2;
    o.cert_ttl_ms = (int64_t)ttl * 1000;
    o.max_cert_ttl_ms = (int64_t)max_ttl * 1000;
    o.secure_listen = secure_listen;
    o.ca_dir = ca_dir;
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
