/*
 * chain.c: runs a stream through its listener's filter chain.
 *
 * Request side, in chain order: the route hooks until one sets a route,
 * then request_headers.  A hook may pause (WF_STOP) and be resumed later
 * from a timer or event; a local reply ends the request side.  Response
 * side: response_headers in reverse order, then the head goes out.
 * Body hooks see the bytes as they stream.  Hooks beyond the size a module
 * was built with are treated as absent.
 */
#include "proxy/proxy.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define HOOK(m, field) ((m)->size > offsetof(wf_module, field) ? (m)->field : NULL)

enum { PH_ROUTE = 0, PH_REQUEST = 1, PH_FORWARD = 2, PH_RESPONSE = 3, PH_SENT = 4 };

void wf_chain_stream_create(wf_stream *s)
{
    wf_chain *c = &s->l->chain;

    s->fstate = wf_arena_alloc(&s->arena, sizeof(void *) * (c->n ? c->n : 1));
    if (!s->fstate)
        return;
    memset(s->fstate, 0, sizeof(void *) * (c->n ? c->n : 1));
    if (!c->any_stream_create)
        return;
    for (size_t i = 0; i < c->n; i++) {
        const wf_module *m = c->f[i].m;
        void *(*create)(void *, wf_stream *) = HOOK(m, stream_create);
        if (create)
            s->fstate[i] = create(c->f[i].cfg, s);
    }
}

void wf_chain_stream_destroy(wf_stream *s)
{
    wf_chain *c = s->l ? &s->l->chain : NULL;

    if (!c || !s->fstate || !c->any_stream_create)
        return;
    for (size_t i = 0; i < c->n; i++) {
        void (*destroy)(void *, void *, wf_stream *) = HOOK(c->f[i].m, stream_destroy);
        if (destroy && s->fstate[i])
            destroy(c->f[i].cfg, s->fstate[i], s);
    }
}

static void run_request(wf_stream *s)
{
    wf_chain *c = &s->l->chain;

    if (!s->fstate) {
        wf_stream_local_reply(s, 500, "out of stream memory\n", 21, "DPE");
        return;
    }
    while (s->phase == PH_ROUTE) {
        if (s->pos >= c->n) {
            s->phase = PH_REQUEST;
            s->pos = 0;
            break;
        }
        {
            const wf_filter *f = &c->f[s->pos];
            wf_status (*route)(void *, void *, wf_stream *) = HOOK(f->m, route);
            wf_status st = route ? route(f->cfg, s->fstate[s->pos], s) : WF_CONTINUE;
            if (s->local_reply)
                return;
            if (st == WF_STOP) {
                s->paused = 1;
                return;
            }
            s->pos++;
            if (s->route || s->cluster_name) {
                s->phase = PH_REQUEST;
                s->pos = 0;
            }
        }
    }
    while (s->phase == PH_REQUEST && s->pos < c->n) {
        const wf_filter *f = &c->f[s->pos];
        wf_status (*rh)(void *, void *, wf_stream *, int) = HOOK(f->m, request_headers);
        wf_status st = rh ? rh(f->cfg, s->fstate[s->pos], s, s->req_done) : WF_CONTINUE;
        if (s->local_reply)
            return;
        if (st == WF_STOP) {
            s->paused = 1;
            return;
        }
        s->pos++;
    }
    if (s->phase == PH_REQUEST) {
        s->phase = PH_FORWARD;
        wf_stream_forward(s);
    }
}

void wf_chain_request_headers(wf_stream *s)
{
    s->phase = PH_ROUTE;
    s->pos = 0;
    run_request(s);
}

static void run_response(wf_stream *s)
{
    wf_chain *c = &s->l->chain;

    while (s->pos > 0) {
        size_t i = s->pos - 1;
        const wf_filter *f = &c->f[i];
        wf_status (*rh)(void *, void *, wf_stream *, int) = HOOK(f->m, response_headers);
        wf_status st = rh && s->fstate ? rh(f->cfg, s->fstate[i], s, 0) : WF_CONTINUE;
        s->pos--;
        if (st == WF_STOP && !s->local_reply) {
            s->paused = 1;
            return;
        }
    }
    s->phase = PH_SENT;
    wf_stream_write_head(s);
}

void wf_chain_resume(wf_stream *s)
{
    if (!s->paused)
        return;
    s->paused = 0;
    if (s->phase == PH_RESPONSE) {
        run_response(s);
        return;
    }
    s->pos++;
    if (s->phase == PH_ROUTE && (s->route || s->cluster_name)) {
        s->phase = PH_REQUEST;
        s->pos = 0;
    }
    run_request(s);
}

void wf_chain_response_headers(wf_stream *s, int end_stream)
{
    wf_str st;

    if (wf_hdrs_get(&s->resp, ":status", 7, &st))
        s->status = atoi(st.p);
    s->phase = PH_RESPONSE;
    s->paused = 0;
    s->pos = s->l->chain.n;
    run_response(s);
}

void wf_chain_complete(wf_stream *s)
{
    wf_chain *c = &s->l->chain;
    wf_stream_info info;

    if (!c->any_complete || !s->fstate)
        return;
    info = (wf_stream_info){
        .size = sizeof(info),
        .status = s->resp_started ? s->status : 0,
        .request_bytes = s->req_bytes,
        .response_bytes = s->resp_bytes,
        .start_us = s->start_us,
        .duration_us = wf_now_us() - s->start_us,
        .upstream_time_us = s->up_time_us,
        .response_flags = s->flags,
        .route_name = s->route_name,
        .cluster = s->cluster_name,
        .upstream_host = s->upstream_host[0] ? s->upstream_host : NULL,
        .downstream_peer = s->peer,
        .direction = s->l->inbound ? "inbound" : "outbound",
        .attempts = s->attempts,
    };
    for (size_t i = 0; i < c->n; i++) {
        void (*done)(void *, void *, wf_stream *, const wf_stream_info *) =
            HOOK(c->f[i].m, stream_complete);
        if (done)
            done(c->f[i].cfg, s->fstate[i], s, &info);
    }
}

wf_attempt_action wf_chain_attempt_done(wf_stream *s, wf_attempt *a)
{
    wf_chain *c = &s->l->chain;

    if (!s->fstate)
        return WF_ATTEMPT_ACCEPT;
    for (size_t i = 0; i < c->n; i++) {
        wf_attempt_action (*ad)(void *, void *, wf_stream *, wf_attempt *) =
            HOOK(c->f[i].m, attempt_done);
        if (ad && ad(c->f[i].cfg, s->fstate[i], s, a) == WF_ATTEMPT_RETRY)
            return WF_ATTEMPT_RETRY; /* retries land with the retry module */
    }
    return WF_ATTEMPT_ACCEPT;
}
