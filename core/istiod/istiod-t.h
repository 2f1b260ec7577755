/*
 * istiod-t.h: the state of a running istiod, shared by its files
 * (istiod.c owns it; monitor.c reads it to answer the monitoring port).
 */
#ifndef WF_ISTIOD_ISTIOD_T_H
#define WF_ISTIOD_ISTIOD_T_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "admin/httpd.h"
#include "ca/ca.h"
#include "config/config.h"
#include "identity/casvc.h"
#include "istiod/istiod.h"
#include "istiod/registry.h"
#include "util/map.h"
#include "xds/server.h"

typedef struct wf_istiod {
    const wf_istiod_opts *o;
    uv_loop_t loop;
    int stopping;

    /* Configuration: the last good one, and why the last change was refused. */
    wf_config *cfg;
    char version[17];       /* content hash of the files of cfg */
    char tried[17];         /* content hash of the last load attempt */
    char **errors;          /* "file:line:col: ..." of the refused change; NULL when ok */
    size_t n_errors;
    uint64_t reloads_ok, reloads_refused;
    int64_t loaded_at;      /* wall clock seconds of the last good load */
    uint64_t fingerprint;   /* stat() of the files at the last look */

    /* Registry and the configuration the translator reads. */
    wf_registry reg;
    wf_reg_view view;
    int view_dirty;
    wf_map cache;           /* proxy key -> snapshot of its translation, for the current view */
    wf_xds_snapshot **retired; /* snapshots of the view before, freed after the pushes */
    size_t n_retired;

    wf_xds_server *xds;
    wf_httpd *mon;

    /* Identity: the CA and istiod's own serving certificate. */
    wf_ca *ca;
    wf_ca_service *casvc;
    wf_tls_ctx *tls;               /* secure port's server context */
    uv_timer_t cert_timer;         /* renews istiod's own certificate */
    uint64_t claims_refused;       /* secure ADS streams whose node lied */

    uv_fs_event_t fsev;
    int fsev_on;
    uv_timer_t poll, reload_timer, push_timer, expire_timer, settle_timer;
    uint64_t reload_first; /* first change seen since the last reload (uv_now) */
    uint64_t push_first;   /* first change not pushed yet */
    uv_signal_t sig_term, sig_int;
} wf_istiod;

/* monitor.c: serves the monitoring port for ist. */
int wf__istiod_monitor_start(wf_istiod *ist, const char *addr, char *err, size_t errlen);
void wf__istiod_monitor_stop(wf_istiod *ist);

#endif
