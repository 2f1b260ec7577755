/*
 * chunkq.c: the bounded FIFO of body bytes (chunkq.h).
 *
 * Each push that does not fit in the room left at the end of the last
 * node gets a node of its own; small pushes (gRPC messages, small HTTP/2
 * DATA frames) share one node of WF_CHUNKQ_SMALL bytes instead of costing
 * a malloc each.  A node is freed as soon as its last byte is taken.
 */
#include "proxy/chunkq.h"

#include <stdlib.h>
#include <string.h>

#define WF_CHUNKQ_SMALL 4000 /* with the node's header, about one 4 KiB block */

struct wf_chunkq_node {
    wf_chunkq_node *next;
    size_t len; /* bytes written into data */
    size_t cap;
    char data[];
};

void wf_chunkq_init(wf_chunkq *q, size_t limit)
{
    memset(q, 0, sizeof(*q));
    q->limit = limit;
}

int wf_chunkq_push(wf_chunkq *q, const void *data, size_t len)
{
    wf_chunkq_node *k = q->tail;
    size_t cap;

    if (!len)
        return 0;
    if (k && k->cap - k->len >= len) {
        memcpy(k->data + k->len, data, len);
        k->len += len;
        q->len += len;
        return 0;
    }
    cap = len < WF_CHUNKQ_SMALL ? WF_CHUNKQ_SMALL : len;
    if (!(k = malloc(sizeof(*k) + cap)))
        return -1;
    k->next = NULL;
    k->len = len;
    k->cap = cap;
    memcpy(k->data, data, len);
    if (q->tail)
        q->tail->next = k;
    else
        q->head = k;
    q->tail = k;
    q->len += len;
    return 0;
}

/* The head node is spent: free it and start on the next. */
static void drop_head(wf_chunkq *q)
{
    wf_chunkq_node *k = q->head;

    q->head = k->next;
    if (!q->head)
        q->tail = NULL;
    q->off = 0;
    free(k);
}

const char *wf_chunkq_peek(const wf_chunkq *q, size_t *len)
{
    if (!q->head) {
        *len = 0;
        return NULL;
    }
    *len = q->head->len - q->off;
    return q->head->data + q->off;
}

void wf_chunkq_consume(wf_chunkq *q, size_t n)
{
    while (n && q->head) {
        size_t here = q->head->len - q->off;
        if (n < here) {
            q->off += n;
            q->len -= n;
            return;
        }
        n -= here;
        q->len -= here;
        drop_head(q);
    }
}

size_t wf_chunkq_pull(wf_chunkq *q, void *buf, size_t n)
{
    size_t done = 0;

    while (done < n && q->head) {
        size_t here = q->head->len - q->off;
        if (here > n - done)
            here = n - done;
        memcpy((char *)buf + done, q->head->data + q->off, here);
        done += here;
        wf_chunkq_consume(q, here);
    }
    return done;
}

void wf_chunkq_move(wf_chunkq *dst, wf_chunkq *src)
{
    if (!src->head)
        return;
    if (!dst->head) {
        dst->head = src->head;
        dst->off = src->off;
    } else {
        /* The source's front was taken from: its first node must not be
         * read from its start.  Shifting the few remaining bytes keeps
         * one offset per queue. */
        if (src->off) {
            wf_chunkq_node *k = src->head;
            memmove(k->data, k->data + src->off, k->len - src->off);
            k->len -= src->off;
            src->off = 0;
        }
        dst->tail->next = src->head;
    }
    dst->tail = src->tail;
    dst->len += src->len;
    src->head = src->tail = NULL;
    src->off = src->len = 0;
}

void wf_chunkq_free(wf_chunkq *q)
{
    while (q->head)
        drop_head(q);
    q->len = 0;
}
