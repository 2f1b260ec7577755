/*
 * translate.h: the one translator.  It turns a loaded configuration (Istio
 * resources, config/resources-t.h) plus the identity of one workload into
 * the Envoy v3 resources described in docs/resources.md, held as jansson
 * JSON: the proxy runs it in-process in static mode, istiod runs it for
 * every connected proxy.
 *
 * The translator is pure: it keeps no state between calls, touches no
 * globals and does no I/O, with one exception: ServiceEntries with
 * resolution DNS or DNS_ROUND_ROBIN have their host names resolved with
 * getaddrinfo (acceptable because the translator never runs on a worker
 * thread), and a name that does not resolve is logged as a warning.  The
 * output order is deterministic, so the same input always gives the same
 * JSON and the same version_info.
 *
 * The rules it applies are written in docs/resources.md, "Translation
 * rules" (and "Proxyless gRPC" for role "grpc", "TLS" for mTLS).
 */
#ifndef WF_TRANSLATE_TRANSLATE_H
#define WF_TRANSLATE_TRANSLATE_H

#include <stddef.h>

#include <jansson.h>

#include "config/config.h"

/* The workload a translation is for.  Every pointer is borrowed for the
 * duration of the call. */
typedef struct wf_proxy_info {
    const char *role;            /* "proxy" (NULL means "proxy"), or "grpc": a proxyless
                                    gRPC client (api_listeners, see docs/resources.md);
                                    "gateway" later */
    const char *namespace_;      /* required */
    const char *service_account; /* may be NULL */
    const char *const *labels;   /* k0, v0, k1, v1, ..., NULL; NULL = no labels */
    const char *outbound_addr;   /* listener virtualOutbound; NULL = "127.0.0.1" */
    int outbound_port;           /* 0 = 15001 */
    const char *inbound_addr;    /* listener virtualInbound; NULL = "0.0.0.0" */
    int inbound_port;            /* 0 = 15006 */
    int app_port;                /* 0: no inbound listener (ignored for "grpc") */
    const char *app_protocol;    /* what the app on app_port speaks: "http" (NULL), "http2"
                                    or "grpc" (both HTTP/2 with prior knowledge), or "tcp"
                                    (opaque bytes: inbound chains carry a tcp_proxy) */
    int no_version;              /* leave version_info "": the caller versions what it sends
                                    itself (istiod: the encoded bytes), and hashing the
                                    bundle's text is a third of a translation */
} wf_proxy_info;

/*
 * Translates cfg for the workload p.  Returns a new reference to the bundle
 * {version_info, listeners, clusters, endpoints} (the caller owns it and
 * releases it with json_decref), or NULL with a one-line reason in err
 * (bad proxy info, or out of memory).  cfg and p are only read.
 */
json_t *wf_translate(const wf_config *cfg, const wf_proxy_info *p, char *err, size_t errlen);

/*
 * The mTLS mode PeerAuthentications give port `port` (0: the workload as a
 * whole) of a workload in namespace ns with labels (k0, v0, k1, v1, ...,
 * NULL; NULL = no labels), by Istio's precedence: a policy selecting the
 * workload (its portLevelMtls for the port first), then the namespace's
 * policy without selector, then the mesh-wide one in
 * MeshConfig.rootNamespace; a mode UNSET inherits from the level above;
 * nothing at all is WF_MTLS_PERMISSIVE.  Never returns WF_MTLS_UNSET.
 * Several policies at one level: the first by name, with a warning.  cfg
 * and labels are only read.
 */
wf_mtls_mode wf_peer_auth_mode(const wf_config *cfg, const char *ns, const char *const *labels,
                               int port);

/* Internal (core/translate): the same, without the warnings when quiet. */
wf_mtls_mode wf__peer_auth_mode(const wf_config *cfg, const char *ns, const char *const *labels,
                                int port, int quiet);

/* Internal to core/translate: a warning tagged "translate". */
void wf__translate_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
