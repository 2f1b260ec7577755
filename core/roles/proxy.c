/*
 * roles/proxy.c: `weft --role=proxy`, the sidecar.  Parses its flags and
 * runs the proxy (core/proxy/proxy.c) in one of two modes: static
 * (--config-dir, translated in-process) or xDS (--xds, configured by
 * istiod).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "proxy/proxy.h"
#include "roles/roles.h"
#include "util/flags.h"
#include "util/log.h"
#include "xds/client.h"

static wf_proxy_opts opts;
static wf_strlist plugin_dirs, services, instance_ips;
static const char *xds_addr, *node_name;
static const char *log_level;
static const char *cert_ttl;

static const wf_flag flags[] = {
    {"config-dir", WF_FLAG_STR, &opts.config_dir, 0, 0, "DIR",
     "static mode: Istio/weft YAML to serve (this or --xds)"},
    {"xds", WF_FLAG_ADDR, &xds_addr, 0, 0, "ADDR",
     "xDS mode: istiod's ADS address, e.g. 127.0.0.1:15010 (this or --config-dir)"},
    {"service", WF_FLAG_MULTI, &services, 0, 0, "NAME:PORT",
     "xDS: register this workload as an endpoint of service NAME port PORT; repeatable; "
     "needs --app-port"},
    {"name", WF_FLAG_STR, &node_name, 0, 0, "NAME",
     "xDS: workload name in the node id (<app label or service>-<pid>)"},
    {"instance-ip", WF_FLAG_MULTI, &instance_ips, 0, 0, "IP",
     "xDS: the workload's IP, where peers reach a :PORT inbound; repeatable (127.0.0.1)"},
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
    {"app-protocol", WF_FLAG_STR, &opts.app_protocol, 0, 0, "PROTO",
     "what the app speaks: http, http2 or grpc (h2c with prior knowledge), or tcp "
     "(opaque bytes) (http)"},
    {"admin", WF_FLAG_ADDR, &opts.admin, 0, 0, "ADDR", "admin endpoints (127.0.0.1:15000)"},
    {"concurrency", WF_FLAG_INT, &opts.concurrency, 1, WF_MAX_WORKERS, "N", "worker threads (2)"},
    {"module-dir", WF_FLAG_STR, &opts.module_dir, 0, 0, "DIR",
     "built-in filter modules (modules/ beside the binary)"},
    {"plugin-dir", WF_FLAG_MULTI, &plugin_dirs, 0, 0, "DIR",
     "more plugin directories, searched first; repeatable (then plugins/ beside the binary, "
     "/etc/weft/plugins)"},
    {"seed", WF_FLAG_INT, &opts.seed, 0, 0x7fffffff, "N",
     "fix the random sequence (weighted splits, balancers) for tests"},
    {"drain-timeout", WF_FLAG_INT, &opts.drain_timeout_ms, 0, 3600000, "MS",
     "how long SIGTERM waits for in-flight requests (10000)"},
    {"ca", WF_FLAG_ADDR, &opts.ca, 0, 0, "ADDR",
     "the CA (istiod's secure port or --role=ca), e.g. 127.0.0.1:15012: get the workload "
     "certificate there and speak mTLS; in xDS mode, xDS then runs over mTLS too"},
    {"token-file", WF_FLAG_STR, &opts.token_file, 0, 0, "FILE",
     "bootstrap token proving the workload's identity to the CA (weft token); needs --ca"},
    {"root-cert", WF_FLAG_STR, &opts.root_cert, 0, 0, "FILE",
     "the mesh's root certificate (PEM), to trust the CA, istiod and peers; needs --ca"},
    {"ca-name", WF_FLAG_STR, &opts.ca_name, 0, 0, "NAME",
     "the DNS name the CA's and istiod's certificates carry (istiod.istio-system.svc)"},
    {"cert-ttl", WF_FLAG_STR, &cert_ttl, 0, 0, "DURATION",
     "lifetime to ask the CA for (24h); renewed at about half of it"},
    WF_FLAG_LOG_LEVEL(&log_level),
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

/* Checks the xDS-only flags and runs the proxy in xDS mode. */
static int run_xds(void)
{
    char err[512], name[256], ips[32 * 48] = "", host[256];
    int port;
    size_t len = 0;
    wf_proxy_xds_opts x = {
        .server = xds_addr, .name = node_name, .services = services.v, .n_services = services.n};

    if (wf_addr_split(xds_addr, host, sizeof(host), &port) < 0 || !host[0] ||
        strcmp(host, "0.0.0.0") == 0 || port == 0)
        return wf_usage_error("flag --xds: \"%s\" is not istiod's HOST:PORT (e.g. 127.0.0.1:15010)",
                              xds_addr);
    for (size_t i = 0; i < services.n; i++)
        if (wf_xds_parse_service(services.v[i], name, sizeof(name), &port, err, sizeof(err)) < 0)
            return wf_usage_error("flag %s", err);
    if (services.n && !opts.app_port)
        return wf_usage_error("flag --service needs --app-port N: peers reach the service "
                              "through the inbound listener, which forwards to the app");
    if (node_name && (!*node_name || strpbrk(node_name, "~ \t")))
        return wf_usage_error("flag --name: \"%s\" must be non-empty, without '~' or spaces",
                              node_name);
    for (size_t i = 0; i < instance_ips.n; i++) {
        /* Each value may itself be a comma-separated list. */
        char copy[256], *save = NULL, *tok;
        unsigned char buf[16];
        snprintf(copy, sizeof(copy), "%s", instance_ips.v[i]);
        for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (inet_pton(AF_INET, tok, buf) != 1 && inet_pton(AF_INET6, tok, buf) != 1)
                return wf_usage_error("flag --instance-ip: \"%s\" is not an IP address", tok);
            len += (size_t)snprintf(ips + len, sizeof(ips) - len, "%s%s", len ? "," : "", tok);
            if (len >= sizeof(ips))
                return wf_usage_error("flag --instance-ip: too many addresses");
        }
    }
    if (instance_ips.n && !ips[0])
        return wf_usage_error("flag --instance-ip: no address given");
    x.instance_ips = ips[0] ? ips : NULL;
    return wf_proxy_run_xds(&opts, &x);
}

static int run(int argc, char **argv, int first)
{
    opts.namespace_ = "default";
    opts.service_account = "default";
    opts.labels = "";
    opts.outbound = "127.0.0.1:15001";
    opts.inbound = ":15006";
    opts.admin = "127.0.0.1:15000";
    opts.concurrency = 2;
    opts.drain_timeout_ms = 10000;
    if (wf_role_flags(flags, N_FLAGS, argc, argv, first, &log_level))
        return 2;
    if (!opts.config_dir == !xds_addr)
        return wf_usage_error(
            "--role=proxy needs exactly one of --config-dir DIR (static mode) and "
            "--xds ADDR (configuration from istiod)");
    for (size_t i = 0; i < plugin_dirs.n; i++)
        opts.plugin_dirs[opts.n_plugin_dirs++] = plugin_dirs.v[i];
    if (opts.app_protocol && strcmp(opts.app_protocol, "http") != 0 &&
        strcmp(opts.app_protocol, "http2") != 0 && strcmp(opts.app_protocol, "grpc") != 0 &&
        strcmp(opts.app_protocol, "tcp") != 0)
        return wf_usage_error("flag --app-protocol: \"%s\" is not http, http2, grpc or tcp",
                              opts.app_protocol);
    if (opts.app_protocol && !opts.app_port)
        return wf_usage_error("flag --app-protocol needs --app-port N");
    if (!opts.ca && (opts.token_file || opts.root_cert))
        return wf_usage_error("flag --%s needs --ca ADDR (the CA that signs the workload "
                              "certificate)",
                              opts.token_file ? "token-file" : "root-cert");
    if (cert_ttl) {
        int64_t ms;
        if (!opts.ca)
            return wf_usage_error("flag --cert-ttl needs --ca ADDR");
        if (wf_duration_flag("cert-ttl", cert_ttl, 90LL * 86400 * 1000, &ms))
            return 2;
        if (ms < 1000)
            return wf_usage_error("flag --cert-ttl: \"%s\" is shorter than a second", cert_ttl);
        opts.cert_ttl_s = (long)(ms / 1000);
    }
    if (opts.ca && !opts.root_cert)
        return wf_usage_error("flag --ca needs --root-cert FILE: the mesh's root certificate, "
                              "to trust the CA and peers (root-cert.pem in the CA directory)");
    if (opts.config_dir) {
        if (services.n || node_name || instance_ips.n)
            return wf_usage_error("flag --%s needs --xds (static mode registers nothing)",
                                  services.n  ? "service"
                                  : node_name ? "name"
                                              : "instance-ip");
        return wf_proxy_run(&opts);
    }
    return run_xds();
}

static void usage(void)
{
    wf_flags_usage(flags, N_FLAGS);
}

const wf_role wf_role_proxy = {"proxy", "the sidecar next to every workload", run, usage};
