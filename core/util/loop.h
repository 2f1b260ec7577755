/* loop.h: ending a libuv loop a role ran on. */
#ifndef WF_UTIL_LOOP_H
#define WF_UTIL_LOOP_H

#include <uv.h>

/*
 * Closes every handle still open on loop (what a failed start left
 * behind), runs it until their close callbacks have run, and closes it.
 * Returns 0, or -1 after warning when a handle stays open.
 */
int wf_loop_finish(uv_loop_t *loop);

#endif
