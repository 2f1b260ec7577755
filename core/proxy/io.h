/*
 * io.h: writing to a libuv stream without copying when the kernel takes the
 * bytes at once (uv_try_write), and with one copy per write otherwise.  The
 * owner tracks how much is queued, for backpressure, and is told when the
 * queue drains.  The owner must be freed only from its handle's close
 * callback (libuv cancels queued writes before that).
 */
#ifndef WF_PROXY_IO_H
#define WF_PROXY_IO_H

#include <uv.h>

typedef struct wf_wq {
    size_t queued;                /* bytes accepted but not yet written */
    void (*drained)(void *owner); /* queue fell below the low-water mark */
    void *owner;
    int failed;                   /* a write failed; the owner should close */
} wf_wq;

#define WF_WQ_LOW (256 * 1024)

/* Writes bufs in order after anything already queued.  Returns 0, or a
 * negative libuv error. */
int wf_write(uv_stream_t *st, wf_wq *q, const uv_buf_t *bufs, unsigned n);

/* Shuts st's writing once what is queued is out (a half-close).  done(data,
 * 0) follows, or done(data, status < 0) when it failed; nothing follows
 * when the handle closed first.  Returns 0, or negative (nothing follows). */
int wf_shutdown(uv_stream_t *st, void (*done)(void *data, int status), void *data);

#endif
