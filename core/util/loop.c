/* loop.c: see loop.h. */
#include "util/loop.h"

#include "util/log.h"

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int wf_loop_finish(uv_loop_t *loop)
{
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    if (uv_loop_close(loop) != 0) {
        WF_WARN("event loop closed with handles still open");
        return -1;
    }
    return 0;
}
