/*
 * monitor.c: istiod's monitoring port (Istio's 15014).
 *
 *   GET /ready                 200 once the config is loaded and xDS is up
 *   GET /debug/config_status   {"ok", "errors": ["file:line:col: ..."], "version", ...}
 *   GET /debug/syncz           every connected proxy, per type sent/acked/last_nack
 *   GET /debug/registry        workloads that registered themselves
 *   GET /metrics               Prometheus text
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "istiod/istiod-t.h"

/* The httpd handler has no user data; one istiod runs per process. */
static wf_istiod *mon_ist;

static void reply_json(wf_http_reply *r, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

    json_decref(j);
    if (!s) {
        wf_http_reply_text(r, 500, "text/plain", "out of memory\n");
        return;
    }
    r->status = 200;
    r->content_type = "application/json";
    r->len = strlen(s);
    /* One trailing newline for curl users (a copy: gcc 12 at -O0 takes the
     * fallback after a failed realloc for a use after free). */
    r->body = malloc(r->len + 2);
    if (!r->body) {
        r->body = s;
        return;
    }
    memcpy(r->body, s, r->len);
    free(s);
    r->body[r->len++] = '\n';
    r->body[r->len] = 0;
}

static json_t *config_status(const wf_istiod *I)
{
    json_t *o = json_object(), *errs = json_array();
    char when[32] = "";
    time_t t = (time_t)I->loaded_at;
    struct tm tm;

    for (size_t i = 0; i < I->n_errors; i++)
        json_array_append_new(errs, json_string(I->errors[i]));
    if (I->loaded_at && gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_set_new(o, "ok", json_boolean(I->n_errors == 0));
    json_object_set_new(o, "errors", errs);
    json_object_set_new(o, "version", json_string(I->version));
    json_object_set_new(o, "config_dir", json_string(I->o->config_dir));
    json_object_set_new(o, "resources", json_integer((json_int_t)wf_config_count(I->cfg)));
    json_object_set_new(o, "files", json_integer((json_int_t)I->cfg->n_files));
    json_object_set_new(o, "loaded_at", json_string(when));
    json_object_set_new(o, "reloads", json_integer((json_int_t)I->reloads_ok));
    json_object_set_new(o, "refused", json_integer((json_int_t)I->reloads_refused));
    return o;
}

/* A growable text buffer for /metrics. */
typedef struct tbuf {
    char *p;
    size_t len, cap;
    int oom;
} tbuf;

static void tb_printf(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(tbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        {
            size_t cap = (b->cap ? b->cap : 4096);
            char *np;
            while (cap <= b->len + (size_t)n)
                cap *= 2;
            if (!(np = realloc(b->p, cap))) {
                b->oom = 1;
                return;
            }
            b->p = np;
            b->cap = cap;
        }
    }
}

static void metric_head(tbuf *b, const char *name, const char *type, const char *help)
{
    tb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static char *metrics_text(const wf_istiod *I, size_t *len)
{
    const wf_xds_metrics *m = wf_xds_server_metrics(I->xds);
    tbuf b = {0};
    uint64_t rejects = 0;
    static const char *const lower[WF_XDS_NTYPES] = {"cds", "eds", "lds"};

    metric_head(&b, "pilot_xds", "gauge", "Number of proxies connected to this istiod over xDS.");
    tb_printf(&b, "pilot_xds %llu\n", (unsigned long long)m->connected);
    metric_head(&b, "pilot_xds_pushes", "counter", "xDS responses sent, by type.");
    for (int t = 0; t < WF_XDS_NTYPES; t++)
        tb_printf(&b, "pilot_xds_pushes{type=\"%s\"} %llu\n", lower[t],
                  (unsigned long long)m->pushes[t]);
    for (int t = 0; t < WF_XDS_NTYPES; t++)
        rejects += m->rejects[t];
    metric_head(&b, "pilot_total_xds_rejects", "counter",
                "Total number of xDS responses rejected (NACKed) by proxies.");
    tb_printf(&b, "pilot_total_xds_rejects %llu\n", (unsigned long long)rejects);
    metric_head(&b, "pilot_xds_rejects", "counter", "xDS responses rejected by proxies, by type.");
    for (int t = 0; t < WF_XDS_NTYPES; t++)
        tb_printf(&b, "pilot_xds_rejects{type=\"%s\"} %llu\n", lower[t],
                  (unsigned long long)m->rejects[t]);
    metric_head(&b, "pilot_xds_expired_nonce", "counter",
                "Requests carrying a nonce that is not the last one sent (ignored), by type.");
    for (int t = 0; t < WF_XDS_NTYPES; t++)
        tb_printf(&b, "pilot_xds_expired_nonce{type=\"%s\"} %llu\n", lower[t],
                  (unsigned long long)m->expired_nonce[t]);
    metric_head(&b, "pilot_total_xds_internal_errors", "counter",
                "Pushes that failed inside istiod (translation or encoding).");
    tb_printf(&b, "pilot_total_xds_internal_errors %llu\n", (unsigned long long)m->push_errors);
    metric_head(&b, "pilot_xds_pushes_deferred", "counter",
                "Pushes put off because the proxy had not read the previous ones.");
    tb_printf(&b, "pilot_xds_pushes_deferred %llu\n", (unsigned long long)m->deferred);
    metric_head(&b, "pilot_proxy_convergence_time", "histogram",
                "Delay in seconds between a config or registry change and the proxy's ACK of "
                "the push it caused.");
    for (int i = 0; i < WF_XDS_CONV_BUCKETS; i++)
        tb_printf(&b, "pilot_proxy_convergence_time_bucket{le=\"%g\"} %llu\n",
                  wf_xds_conv_bounds[i], (unsigned long long)m->conv_buckets[i]);
    tb_printf(&b, "pilot_proxy_convergence_time_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)m->conv_count);
    tb_printf(&b, "pilot_proxy_convergence_time_sum %.6f\n", m->conv_sum);
    tb_printf(&b, "pilot_proxy_convergence_time_count %llu\n", (unsigned long long)m->conv_count);
    metric_head(&b, "pilot_services", "gauge", "Service hosts known (config and registry).");
    tb_printf(&b, "pilot_services %zu\n", I->view.n_services);
    metric_head(&b, "weft_registry_workloads", "gauge", "Workloads registered by their proxies.");
    tb_printf(&b, "weft_registry_workloads %zu\n", I->reg.n);
    metric_head(&b, "weft_config_reloads", "counter", "Config directory reloads, by result.");
    tb_printf(&b, "weft_config_reloads{result=\"ok\"} %llu\n",
              (unsigned long long)I->reloads_ok);
    tb_printf(&b, "weft_config_reloads{result=\"refused\"} %llu\n",
              (unsigned long long)I->reloads_refused);
    metric_head(&b, "weft_config_ok", "gauge",
                "1 when the config directory's current content is served, 0 when a change was "
                "refused.");
    tb_printf(&b, "weft_config_ok %d\n", I->n_errors == 0);
    metric_head(&b, "weft_xds_claims_refused_total", "counter",
                "Secure xDS streams refused because the node claimed more than its certificate "
                "says.");
    tb_printf(&b, "weft_xds_claims_refused_total %llu\n", (unsigned long long)I->claims_refused);
    if (I->casvc && !b.oom) {
        /* The CA's counters use the same buffer discipline: NUL-terminated. */
        size_t cap = b.cap;
        if (wf_ca_service_metrics(I->casvc, &b.p, &b.len, &cap) < 0)
            b.oom = 1;
        b.cap = cap;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

static void handler(const char *method, const char *path, wf_http_reply *r)
{
    wf_istiod *I = mon_ist;

    if (wf_http_refuse_unless_get(method, r))
        return;
#define IS(p) wf_http_path_is(path, p)
    if (IS("/ready")) {
        if (I->cfg && I->xds && !I->stopping)
            wf_http_reply_text(r, 200, "text/plain", "ready\n");
        else
            wf_http_reply_text(r, 503, "text/plain", "not ready\n");
    } else if (IS("/debug/config_status")) {
        reply_json(r, config_status(I));
    } else if (IS("/debug/syncz")) {
        reply_json(r, wf_xds_server_syncz(I->xds));
    } else if (IS("/debug/registry")) {
        reply_json(r, wf_registry_json(&I->reg));
    } else if (IS("/metrics") || IS("/stats/prometheus")) {
        size_t len = 0;
        char *t = metrics_text(I, &len);
        wf_http_reply_metrics(r, t, len);
    } else if (IS("/")) {
        wf_http_reply_text(r, 200, "text/plain",
                           "weft istiod\n"
                           "  /ready\n  /debug/config_status\n  /debug/syncz\n"
                           "  /debug/registry\n  /metrics\n");
    }
#undef IS
}

int wf__istiod_monitor_start(wf_istiod *ist, const char *addr, char *err, size_t errlen)
{
    mon_ist = ist;
    ist->mon = wf_httpd_start(&ist->loop, addr, handler, err, errlen);
    return ist->mon ? 0 : -1;
}

void wf__istiod_monitor_stop(wf_istiod *ist)
{
    if (ist->mon)
        wf_httpd_stop(ist->mon);
    ist->mon = NULL;
}
