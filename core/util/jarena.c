/* jarena.c: the bump region for translations' JSON; see jarena.h. */
#include "util/jarena.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Address space only, reserved inaccessible: the region is made usable a
 * step at a time as it grows (so that a system that counts committed
 * memory strictly counts only what is used), and pages are touched as it
 * fills.  A region that cannot grow falls back to malloc, so this is a
 * ceiling on speed, not on the size of a configuration. */
#define RESERVE ((size_t)4 << 30)
#define STEP ((size_t)1 << 20)

static char *base;       /* the reserved range, kept for the process's life */
static size_t used;      /* bytes handed out since wf_jarena_begin */
static size_t usable;    /* bytes from base made readable and writable */
static size_t touched;   /* the most used since the last release */
static int open_, spilled;
static __thread int opened; /* the calling thread opened the region */
static __thread int mine;   /* ... and its JSON goes there now */

/* Makes the region usable up to at least need bytes; -1 when it cannot. */
static int grow(size_t need)
{
    size_t to = (need + STEP - 1) / STEP * STEP;

    if (to > RESERVE || mprotect(base + usable, to - usable, PROT_READ | PROT_WRITE) != 0)
        return -1;
    usable = to;
    return 0;
}

static void *ja_malloc(size_t n)
{
    if (mine) {
        size_t r = (n + 15) & ~(size_t)15;
        if (r >= n && r <= RESERVE - used && (used + r <= usable || grow(used + r) == 0)) {
            void *p = base + used;
            used += r;
            UNPOISON(p, n);
            return p;
        }
        spilled = 1;
    }
    return malloc(n);
}

static void ja_free(void *p)
{
    if ((char *)p >= base && (char *)p < base + RESERVE)
        return; /* emptied whole by wf_jarena_end */
    free(p);
}

int wf_jarena_begin(void)
{
    if (open_)
        return -1;
    if (!base) {
        void *p = mmap(NULL, RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                       0);
        if (p == MAP_FAILED)
            return -1;
        base = p;
        /* Outside the region these are malloc and free, so values made
         * before are freed as they always were. */
        json_set_alloc_funcs(ja_malloc, ja_free);
    }
    open_ = opened = mine = 1;
    used = 0;
    spilled = 0;
    return 0;
}

void wf_jarena_pause(void)
{
    mine = 0;
}

void wf_jarena_resume(void)
{
    mine = opened;
}

int wf_jarena_whole(void)
{
    return open_ && !spilled;
}

void wf_jarena_end(void)
{
    if (!open_ || !opened)
        return;
    if (used > touched)
        touched = used;
    POISON(base, used); /* under ASan, a value used after the end is reported */
    used = 0;
    open_ = opened = mine = 0;
}

void wf_jarena_release(void)
{
    if (!base || open_ || !usable)
        return;
    /* Inaccessible again: the pages and their commitment go back. */
    madvise(base, usable, MADV_DONTNEED);
    mprotect(base, usable, PROT_NONE);
    usable = touched = 0;
}

size_t wf_jarena_resident(void)
{
    return touched > used ? touched : used;
}
