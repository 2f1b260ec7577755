/*
 * chunkq.h: a bounded FIFO of body bytes.  One side pushes whole chunks
 * (copied); the other takes bytes from the front in pieces of any size,
 * either copied out (wf_chunkq_pull, as an nghttp2 read callback wants)
 * or read in place and then consumed (wf_chunkq_peek + wf_chunkq_consume).
 *
 * The queue's byte limit is advice, not enforcement: push never refuses
 * bytes for being over it, because the bytes already arrived and dropping
 * them would corrupt the body.  The caller checks wf_chunkq_full() after
 * pushing to stop its producer, and wf_chunkq_low() after taking bytes to
 * restart it (half the limit, so that the producer is not toggled on every
 * chunk).
 *
 * A zeroed wf_chunkq is an empty queue without a limit, and the struct
 * holds no pointer into itself: it may be copied or moved as a value
 * (the source then must be forgotten, not freed).
 */
#ifndef WF_PROXY_CHUNKQ_H
#define WF_PROXY_CHUNKQ_H

#include <stddef.h>

typedef struct wf_chunkq_node wf_chunkq_node;

typedef struct wf_chunkq {
    wf_chunkq_node *head, *tail;
    size_t off;   /* bytes of head already taken */
    size_t len;   /* bytes queued and not taken yet */
    size_t limit; /* the caller's high-water mark (0: none) */
} wf_chunkq;

/* An empty queue with high-water mark limit (0: none). */
void wf_chunkq_init(wf_chunkq *q, size_t limit);
/* Appends a copy of data[0..len).  Returns 0, or -1 when out of memory
 * (the queue is unchanged).  len 0 is a no-op. */
int wf_chunkq_push(wf_chunkq *q, const void *data, size_t len);
/* Moves up to n bytes from the front into buf; returns how many (0 when
 * empty). */
size_t wf_chunkq_pull(wf_chunkq *q, void *buf, size_t n);
/* The first contiguous run of queued bytes, in place: its length goes to
 * *len (0 and NULL when empty).  Valid until the next push, consume or
 * free. */
const char *wf_chunkq_peek(const wf_chunkq *q, size_t *len);
/* Drops n bytes from the front (at most what is queued). */
void wf_chunkq_consume(wf_chunkq *q, size_t n);
/* Appends every byte of src to dst, leaving src empty (no copy). */
void wf_chunkq_move(wf_chunkq *dst, wf_chunkq *src);
/* Frees every queued byte; q is empty afterwards (its limit kept). */
void wf_chunkq_free(wf_chunkq *q);

static inline size_t wf_chunkq_len(const wf_chunkq *q)
{
    return q->len;
}

static inline int wf_chunkq_empty(const wf_chunkq *q)
{
    return q->len == 0;
}

/* Above the limit: the producer should stop. */
static inline int wf_chunkq_full(const wf_chunkq *q)
{
    return q->limit && q->len > q->limit;
}

/* Below half the limit: a stopped producer may go on. */
static inline int wf_chunkq_low(const wf_chunkq *q)
{
    return !q->limit || q->len < q->limit / 2;
}

#endif
