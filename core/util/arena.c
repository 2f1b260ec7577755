/* arena.c: bump allocation in recycled blocks; see arena.h. */
#include "util/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct wf_arena_block {
    wf_arena_block *next;
    size_t size;
    _Alignas(16) char data[];
};

/* Standard-size blocks are kept per thread for reuse; a few are enough for
 * a worker's concurrent streams to stop touching malloc. */
static __thread wf_arena_block *free_blocks;
static __thread size_t free_count;
#define FREE_MAX 256

static wf_arena_block *block_new(size_t need)
{
    wf_arena_block *b;
    size_t size = need <= WF_ARENA_BLOCK ? WF_ARENA_BLOCK : need;

    if (size == WF_ARENA_BLOCK && free_blocks) {
        b = free_blocks;
        free_blocks = b->next;
        free_count--;
        return b;
    }
    b = malloc(sizeof(*b) + size);
    if (b)
        b->size = size;
    return b;
}

void wf_arena_init(wf_arena *a, size_t limit)
{
    a->head = NULL;
    a->used = 0;
    a->total = 0;
    a->limit = limit;
}

void *wf_arena_alloc(wf_arena *a, size_t n)
{
    wf_arena_block *b;

    n = (n + 15) & ~(size_t)15;
    if (a->head && a->used + n <= a->head->size) {
        void *p = a->head->data + a->used;
        a->used += n;
        return p;
    }
    if (a->total + (n > WF_ARENA_BLOCK ? n : WF_ARENA_BLOCK) > a->limit)
        return NULL;
    b = block_new(n);
    if (!b)
        return NULL;
    b->next = a->head;
    a->head = b;
    a->total += b->size;
    a->used = n;
    return b->data;
}

char *wf_arena_strndup(wf_arena *a, const char *s, size_t len)
{
    char *p = wf_arena_alloc(a, len + 1);

    if (p) {
        memcpy(p, s, len);
        p[len] = 0;
    }
    return p;
}

void *wf_arena_grow(wf_arena *a, void *p, size_t old, size_t new_size)
{
    size_t o = (old + 15) & ~(size_t)15, nn = (new_size + 15) & ~(size_t)15;
    void *q;

    if (p && a->head && (char *)p + o == a->head->data + a->used &&
        (char *)p - a->head->data + nn <= a->head->size) {
        a->used = (size_t)((char *)p - a->head->data) + nn;
        return p;
    }
    q = wf_arena_alloc(a, new_size);
    if (q && p && old)
        memcpy(q, p, old);
    return q;
}

void wf_arena_reset(wf_arena *a)
{
    wf_arena_block *b = a->head, *next;

    for (; b; b = next) {
        next = b->next;
        if (b->size == WF_ARENA_BLOCK && free_count < FREE_MAX) {
            b->next = free_blocks;
            free_blocks = b;
            free_count++;
        } else {
            free(b);
        }
    }
    a->head = NULL;
    a->used = 0;
    a->total = 0;
}

/* The thread's buffers (wf_thread_buffer), freed with its blocks. */
static __thread void **buffers[8];
static __thread size_t n_buffers;

void *wf_thread_buffer(void **slot, size_t size)
{
    if (*slot)
        return *slot;
    if (n_buffers == sizeof(buffers) / sizeof(buffers[0]) || !(*slot = malloc(size)))
        return NULL;
    buffers[n_buffers++] = slot;
    return *slot;
}

void wf_arena_thread_release(void)
{
    while (n_buffers) {
        void **slot = buffers[--n_buffers];
        free(*slot);
        *slot = NULL;
    }
    while (free_blocks) {
        wf_arena_block *b = free_blocks;
        free_blocks = b->next;
        free(b);
    }
    free_count = 0;
}
