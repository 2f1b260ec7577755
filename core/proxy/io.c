/* io.c: try-write first, queue a copy of the rest; see io.h. */
#include "proxy/io.h"

#include <stdlib.h>
#include <string.h>

typedef struct wreq {
    uv_write_t req;
    wf_wq *q;
    size_t len;
    char data[];
} wreq;

static void written(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    wf_wq *q = w->q;
    size_t before = q->queued;

    q->queued -= w->len;
    if (status < 0)
        q->failed = 1;
    free(w);
    if (status != UV_ECANCELED && before >= WF_WQ_LOW && q->queued < WF_WQ_LOW && q->drained)
        q->drained(q->owner);
}

typedef struct sreq {
    uv_shutdown_t req;
    void (*done)(void *data, int status);
    void *data;
} sreq;

static void shut(uv_shutdown_t *req, int status)
{
    sreq *r = (sreq *)req;

    if (status != UV_ECANCELED)
        r->done(r->data, status);
    free(r);
}

int wf_shutdown(uv_stream_t *st, void (*done)(void *data, int status), void *data)
{
    sreq *r = malloc(sizeof(*r));
    int rc;

    if (!r)
        return UV_ENOMEM;
    r->done = done;
    r->data = data;
    if ((rc = uv_shutdown(&r->req, st, shut)) < 0)
        free(r);
    return rc;
}

int wf_write(uv_stream_t *st, wf_wq *q, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0, done = 0, off;
    int r = 0;
    wreq *w;
    uv_buf_t b;

    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (!total)
        return 0;
    if (q->queued == 0) {
        r = uv_try_write(st, bufs, n);
        if (r < 0 && r != UV_EAGAIN)
            return r;
        done = r > 0 ? (size_t)r : 0;
        if (done == total)
            return 0;
    }
    w = malloc(sizeof(*w) + total - done);
    if (!w)
        return UV_ENOMEM;
    off = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t skip = done > bufs[i].len ? bufs[i].len : done;
        memcpy(w->data + off, bufs[i].base + skip, bufs[i].len - skip);
        off += bufs[i].len - skip;
        done -= skip;
    }
    w->q = q;
    w->len = off;
    b = uv_buf_init(w->data, (unsigned)off);
    r = uv_write(&w->req, st, &b, 1, written);
    if (r < 0) {
        free(w);
        return r;
    }
    q->queued += off;
    return 0;
}
