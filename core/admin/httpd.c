/* httpd.c: the control-endpoint server; see httpd.h. */
#include "admin/httpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/flags.h"

#define REQ_MAX 8192

struct wf_httpd {
    uv_tcp_t tcp;
    wf_httpd_handler handler;
};

typedef struct hconn {
    uv_tcp_t tcp;
    wf_httpd *d;
    uv_write_t wr;
    char buf[REQ_MAX];
    size_t len;
    char *out;
} hconn;

void wf_http_reply_text(wf_http_reply *r, int status, const char *ctype, const char *text)
{
    r->status = status;
    r->content_type = ctype;
    r->body = strdup(text);
    r->len = r->body ? strlen(r->body) : 0;
}

int wf_http_path_is(const char *path, const char *p)
{
    size_t pl = strcspn(path, "?");

    return pl == strlen(p) && strncmp(path, p, pl) == 0;
}

int wf_http_refuse_unless_get(const char *method, wf_http_reply *r)
{
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        return 0;
    wf_http_reply_text(r, 405, "text/plain", "only GET here\n");
    return 1;
}

void wf_http_reply_metrics(wf_http_reply *r, char *text, size_t len)
{
    if (!text) {
        wf_http_reply_text(r, 500, "text/plain", "out of memory\n");
        return;
    }
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4";
    r->body = text;
    r->len = len;
}

static void closed(uv_handle_t *h)
{
    hconn *c = h->data;

    free(c->out);
    free(c);
}

static void written(uv_write_t *w, int status)
{
    hconn *c = w->data;

    uv_close((uv_handle_t *)&c->tcp, closed);
}

static const char *reason(int s)
{
    return s == 200 ? "OK" : s == 404 ? "Not Found" : s == 405 ? "Method Not Allowed"
         : s == 503 ? "Service Unavailable" : s == 400 ? "Bad Request" : "Status";
}

static void respond(hconn *c)
{
    char method[16], path[2048];
    wf_http_reply r = {0};
    size_t hl;
    uv_buf_t b;

    if (sscanf(c->buf, "%15s %2047s", method, path) != 2) {
        wf_http_reply_text(&r, 400, "text/plain", "bad request\n");
    } else {
        c->d->handler(method, path, &r);
        if (!r.status)
            wf_http_reply_text(&r, 404, "text/plain", "not found\n");
    }
    c->out = malloc(r.len + 256);
    if (!c->out) {
        free(r.body);
        uv_close((uv_handle_t *)&c->tcp, closed);
        return;
    }
    hl = (size_t)snprintf(c->out, 256,
                          "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                          "connection: close\r\n\r\n",
                          r.status, reason(r.status), r.content_type ? r.content_type : "text/plain",
                          r.len);
    if (r.len && strcmp(method, "HEAD") != 0)
        memcpy(c->out + hl, r.body, r.len);
    else
        r.len = 0;
    free(r.body);
    b = uv_buf_init(c->out, (unsigned)(hl + r.len));
    c->wr.data = c;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, written) < 0)
        uv_close((uv_handle_t *)&c->tcp, closed);
}

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    hconn *c = h->data;

    b->base = c->buf + c->len;
    b->len = REQ_MAX - 1 - c->len;
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    hconn *c = st->data;

    if (n < 0 || (n == 0 && c->len >= REQ_MAX - 1)) {
        uv_close((uv_handle_t *)&c->tcp, closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = 0;
    if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n"))
        respond(c);
    else if (c->len >= REQ_MAX - 1)
        uv_close((uv_handle_t *)&c->tcp, closed);
}

static void on_conn(uv_stream_t *srv, int status)
{
    wf_httpd *d = srv->data;
    hconn *c;

    if (status < 0 || !(c = calloc(1, sizeof(*c))))
        return;
    c->d = d;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

wf_httpd *wf_httpd_start(uv_loop_t *loop, const char *addr, wf_httpd_handler h, char *err,
                         size_t errlen)
{
    char host[256];
    int port, r;
    struct sockaddr_in sa;
    wf_httpd *d;

    if (wf_addr_split(addr, host, sizeof(host), &port) < 0 || uv_ip4_addr(host, port, &sa) < 0) {
        snprintf(err, errlen, "%s is not an IPv4 HOST:PORT", addr);
        return NULL;
    }
    d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->handler = h;
    uv_tcp_init(loop, &d->tcp);
    d->tcp.data = d;
    if ((r = uv_tcp_bind(&d->tcp, (struct sockaddr *)&sa, 0)) < 0 ||
        (r = uv_listen((uv_stream_t *)&d->tcp, 128, on_conn)) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, uv_strerror(r));
        uv_close((uv_handle_t *)&d->tcp, (uv_close_cb)free);
        return NULL;
    }
    return d;
}

static void srv_closed(uv_handle_t *h)
{
    free(h->data);
}

void wf_httpd_stop(wf_httpd *d)
{
    if (d)
        uv_close((uv_handle_t *)&d->tcp, srv_closed);
}
