/*
 * admin.c: the proxy's admin endpoints (loopback only by default):
 *   GET  /ready          200 once listening with config, else 503
 *   GET  /config_dump    listeners, routes, clusters, endpoints, filter chain, and in
 *                        xDS mode "xds": istiod's address, the stream, per type the
 *                        version applied, last nonce, ACK state, and the last NACK
 *   GET  /stats          counters, "name: value" per line
 *   GET  /certs          the workload certificate: identity, serial, validity, root
 *                        fingerprint, and the CA client's state (renewal, last error)
 *   POST /quitquitquit   graceful exit
 */
#include "proxy/proxy.h"

#include <stdlib.h>
#include <string.h>

#include "admin/httpd.h"
#include "xds/client.h"

static wf_httpd *server;

static void handle(const char *method, const char *path, wf_http_reply *r)
{
    if (wf_http_path_is(path, "/ready")) {
        int ok = wf_proxy_ready();
        wf_http_reply_text(r, ok ? 200 : 503, "text/plain", ok ? "LIVE\n" : "NOT READY\n");
    } else if (wf_http_path_is(path, "/config_dump")) {
        wf_snapshot *s = wf_proxy_current();
        json_t *d = s ? wf_snapshot_dump(s) : json_object();
        json_t *x = wf_proxy_xds_dump();
        if (x)
            json_object_set_new(d, "xds", x);
        r->status = 200;
        r->content_type = "application/json";
        r->body = json_dumps(d, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        r->len = r->body ? strlen(r->body) : 0;
        json_decref(d);
    } else if (wf_http_path_is(path, "/stats")) {
        r->status = 200;
        r->content_type = "text/plain";
        r->body = wf_stats_text();
        r->len = r->body ? strlen(r->body) : 0;
    } else if (wf_http_path_is(path, "/certs")) {
        json_t *d = wf_proxy_certs_dump();
        r->status = 200;
        r->content_type = "application/json";
        r->body = json_dumps(d, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        r->len = r->body ? strlen(r->body) : 0;
        json_decref(d);
    } else if (wf_http_path_is(path, "/quitquitquit")) {
        if (strcmp(method, "POST") != 0) {
            wf_http_reply_text(r, 405, "text/plain", "use POST /quitquitquit\n");
            return;
        }
        wf_http_reply_text(r, 200, "text/plain", "OK\n");
        wf_proxy_quit();
    } else if (wf_http_path_is(path, "/")) {
        wf_http_reply_text(r, 200, "text/plain",
                           "weft admin: /ready /config_dump /stats /certs POST /quitquitquit\n");
    }
}

int wf_admin_start(uv_loop_t *loop, const char *addr, char *err, size_t errlen)
{
    server = wf_httpd_start(loop, addr, handle, err, errlen);
    return server ? 0 : -1;
}

void wf_admin_stop(void)
{
    wf_httpd_stop(server);
    server = NULL;
}
