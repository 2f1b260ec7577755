/*
 * registry.h: istiod's service registry of workloads that register
 * themselves.  A proxy started with `--service NAME:PORT` announces, in
 * its node metadata (WEFT_SERVICES, WEFT_INBOUND_ADDR, NAMESPACE, LABELS,
 * SERVICE_ACCOUNT), the services it serves and where its inbound listener
 * is reached; it is an endpoint of each of them while its ADS stream is up
 * and for a grace period after (a reconnect within it keeps it).
 *
 * The registry is merged into the loaded configuration as a view
 * (wf_reg_view): a ServiceEntry that names a registered host gets the
 * registered endpoints added to its own; a host no ServiceEntry names gets
 * a ServiceEntry made for it (ports "http-PORT", protocol HTTP, resolution
 * STATIC, location MESH_INTERNAL, the namespace of its first workload).
 * The translator then reads the view like any configuration.
 */
#ifndef WF_ISTIOD_REGISTRY_H
#define WF_ISTIOD_REGISTRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct wf_reg_service {
    char *host;    /* FQDN: a name without a dot is resolved in the workload's namespace */
    uint32_t port; /* the service port */
} wf_reg_service;

typedef struct wf_reg_workload {
    char *id; /* node id: the identity a reconnect is recognised by */
    char *namespace_;
    char *service_account; /* NULL when not given */
    char *protocol;        /* the app's protocol (WEFT_APP_PROTOCOL): "HTTP", "HTTP2", "GRPC" */
    json_t *labels;        /* object (owned reference) */
    char *address;         /* endpoint address: host of WEFT_INBOUND_ADDR */
    uint32_t port;         /* endpoint port: port of WEFT_INBOUND_ADDR */
    wf_reg_service *svcs;
    size_t n_svcs;
    int streams;      /* ADS streams up with this id */
    uint64_t left_ms; /* when the last one ended (streams == 0) */
    struct wf_reg_workload *next;
} wf_reg_workload;

typedef struct wf_registry {
    wf_reg_workload *list; /* sorted by id */
    size_t n;
    uint64_t grace_ms;
} wf_registry;

void wf_registry_init(wf_registry *r, uint64_t grace_ms);
void wf_registry_free(wf_registry *r);

/*
 * A stream with this node joined.  A node without WEFT_SERVICES registers
 * nothing: returns 0 with *out NULL.  Otherwise returns 0 with the entry
 * in *out (owned by the registry; hand it back to wf_registry_leave) and
 * *changed set when what others see changed (a new workload, or new
 * metadata).  Returns -1 with a reason in err when the metadata is wrong
 * (bad WEFT_SERVICES or WEFT_INBOUND_ADDR) or memory ran out.
 */
int wf_registry_join(wf_registry *r, const json_t *node, wf_reg_workload **out, int *changed,
                     char *err, size_t errlen);
/* One of w's streams ended at now_ms; w stays until its grace expires. */
void wf_registry_leave(wf_registry *r, wf_reg_workload *w, uint64_t now_ms);
/* Removes workloads whose grace ran out by now_ms.  Returns how many were
 * removed; *next_ms is when the next one will (0 = none pending). */
size_t wf_registry_expire(wf_registry *r, uint64_t now_ms, uint64_t *next_ms);
/* /debug/registry: a new JSON array. */
json_t *wf_registry_json(const wf_registry *r);

/* base plus the registry.  cfg is a shallow copy of base whose
 * service_entries array is the view's own; base must outlive the view. */
typedef struct wf_reg_view {
    wf_config cfg;
    void **allocs; /* everything the view allocated */
    size_t n_allocs, cap_allocs;
    size_t n_services; /* service hosts in the view */
} wf_reg_view;

/* Builds the view; returns 0, or -1 on out of memory (the view is then
 * empty and freed). */
int wf_reg_view_build(wf_reg_view *v, const wf_config *base, const wf_registry *r);
void wf_reg_view_free(wf_reg_view *v);

#endif
