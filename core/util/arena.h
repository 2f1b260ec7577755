/*
 * arena.h: the stream arena.  Everything a stream allocates comes from
 * here and is freed whole when the stream ends.  Blocks are recycled
 * through a per-thread free list, so a steady request load does not call
 * malloc at all.  An arena has a byte limit; past it allocation fails and
 * the stream fails, not the process.
 */
#ifndef WF_UTIL_ARENA_H
#define WF_UTIL_ARENA_H

#include <stddef.h>

#define WF_ARENA_BLOCK 8192

typedef struct wf_arena_block wf_arena_block;

typedef struct wf_arena {
    wf_arena_block *head; /* current block, linked to earlier ones */
    size_t used;          /* bytes used in head */
    size_t total;         /* bytes held by all blocks */
    size_t limit;         /* refuse to grow past this */
} wf_arena;

void wf_arena_init(wf_arena *a, size_t limit);
/* Returns n bytes aligned to 16, or NULL when the limit is reached. */
void *wf_arena_alloc(wf_arena *a, size_t n);
/* Copies len bytes and a NUL; returns the copy or NULL. */
char *wf_arena_strndup(wf_arena *a, const char *s, size_t len);
/* Grows the most recent allocation p (old bytes) to new bytes, in place
 * when it is last in the block, else by copying.  Returns NULL on limit. */
void *wf_arena_grow(wf_arena *a, void *p, size_t old, size_t new_size);
/* Frees the calling thread's recycled blocks and buffers (at thread exit). */
void wf_arena_thread_release(void);
/* The calling thread's buffer *slot (a __thread pointer) of size bytes,
 * made on first use.  Large per-thread scratch declared as a __thread
 * array would be resident in every thread from its start, used or not
 * (the C library zeroes thread-local storage).  NULL on out of memory. */
void *wf_thread_buffer(void **slot, size_t size);
/* Frees every block (back to the thread's free list). */
void wf_arena_reset(wf_arena *a);

#endif
