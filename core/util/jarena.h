/*
 * jarena.h: a bump region for JSON that one thread builds, reads and drops
 * in one go: istiod's translations, each a few hundred thousand small
 * jansson values that live for a few milliseconds.  From malloc, making
 * and freeing them was a third of istiod's time for a configuration
 * change, and their pages were faulted in again for every change.
 *
 * Between wf_jarena_begin and wf_jarena_end, every jansson allocation of
 * the calling thread comes from one reserved range of address space, and
 * freeing it costs nothing (jansson's free hook sees the address is in the
 * range).  wf_jarena_end empties the region: everything made in it must be
 * dropped (or never looked at again) before.  The pages stay for the next
 * translation until wf_jarena_release gives them back.  Other threads, and
 * this one outside begin/end or while paused, allocate JSON from malloc as
 * before.
 *
 * One thread at a time: istiod's translation thread, while the loop waits;
 * a proxy's main thread for the trees it unpacks to apply an xDS push.
 */
#ifndef WF_UTIL_JARENA_H
#define WF_UTIL_JARENA_H

#include <stddef.h>

/* Starts a region on the calling thread.  -1 when no address space could
 * be reserved or a region is already open (JSON then comes from malloc). */
int wf_jarena_begin(void);
/* 1 when every JSON allocation since wf_jarena_begin came from the region
 * (none fell back to malloc because the region was full), so what was
 * made there holds no malloc'd memory and need not be freed value by
 * value. */
int wf_jarena_whole(void);
/* Between these the opening thread's JSON comes from malloc again (what
 * must outlive the region); the region stays open. */
void wf_jarena_pause(void);
void wf_jarena_resume(void);
/* Ends the region and makes it empty. */
void wf_jarena_end(void);
/* Gives the region's pages back to the kernel (when idle). */
void wf_jarena_release(void);
/* Bytes the region has touched and holds (for metrics and tests). */
size_t wf_jarena_resident(void);

#endif
