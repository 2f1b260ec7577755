/*
 * istiod.h: the control plane at run time (`weft --role=istiod`).
 *
 *   istiod.c    start-up, config dir load + watch + debounce + last good,
 *               per-proxy translation, pushes, signals
 *   registry.c  workloads that register themselves (registry.h)
 *   monitor.c   the monitoring port: /ready, /debug/..., /metrics
 *
 * The ADS protocol itself is core/xds/server.c.
 */
#ifndef WF_ISTIOD_ISTIOD_H
#define WF_ISTIOD_ISTIOD_H

#include <stdint.h>

typedef struct wf_istiod_opts {
    const char *config_dir; /* required */
    const char *xds_listen; /* "127.0.0.1:15010" */
    const char *monitoring; /* "127.0.0.1:15014" */
    int64_t registry_grace_ms; /* 3000 */
    int64_t debounce_ms;       /* 100 */
    const char *secure_listen; /* "127.0.0.1:15012": xDS over mTLS + the CA */
    const char *ca_dir;        /* plugged certs or a generated root */
    int64_t cert_ttl_ms, max_cert_ttl_ms;
} wf_istiod_opts;

/* Runs istiod until SIGTERM/SIGINT.  Returns the exit code: 0 after a
 * clean stop, 1 when the config or a listener fails at start. */
int wf_istiod_run(const wf_istiod_opts *o);

#endif
