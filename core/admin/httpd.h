/*
 * httpd.h: a tiny HTTP/1.1 server for control endpoints (the proxy's
 * admin port, health and metrics; istiod's monitoring port).  Runs on the
 * main loop, one request per connection, bodies ignored; never on the data
 * path.
 */
#ifndef WF_ADMIN_HTTPD_H
#define WF_ADMIN_HTTPD_H

#include <stddef.h>
#include <uv.h>

typedef struct wf_http_reply {
    int status;
    const char *content_type;
    char *body; /* malloc'd; the server frees it */
    size_t len;
} wf_http_reply;

/* Fills *r for method and path (path includes any query string). */
typedef void (*wf_httpd_handler)(const char *method, const char *path, wf_http_reply *r);

typedef struct wf_httpd wf_httpd;

/* Listens on addr ("host:port").  Returns NULL with a reason in err. */
wf_httpd *wf_httpd_start(uv_loop_t *loop, const char *addr, wf_httpd_handler h, char *err,
                         size_t errlen);
void wf_httpd_stop(wf_httpd *d);
/* Convenience: sets a reply from a string (copied). */
void wf_http_reply_text(wf_http_reply *r, int status, const char *ctype, const char *text);
/* 1 when the request's path (without its query string) is p. */
int wf_http_path_is(const char *path, const char *p);
/* Monitoring endpoints only read: anything but GET or HEAD gets a 405.
 * 1 when it refused. */
int wf_http_refuse_unless_get(const char *method, wf_http_reply *r);
/* A Prometheus text page (taken; the server frees it), or a 500 for NULL
 * (out of memory). */
void wf_http_reply_metrics(wf_http_reply *r, char *text, size_t len);

#endif
