/*
 * host.c: the function table weft hands to every filter module
 * (include/weft/filter.h).  Stream functions run on the stream's worker
 * and allocate only from the stream arena.
 */
#include "proxy/proxy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "util/ctree.h"
#include "util/log.h"

static __thread wf_worker *cur_worker;

void wf_host_set_worker(wf_worker *w)
{
    cur_worker = w;
}

static void h_log(wf_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    char tag[96];

    snprintf(tag, sizeof(tag), "[%s]", module ? module : "module");
    va_start(ap, fmt);
    wf_vlog((int)level, tag, fmt, ap);
    va_end(ap);
}

static int h_log_enabled(wf_log_level level)
{
    return (int)level >= wf_log_threshold;
}

static void *h_alloc(wf_stream *s, size_t n)
{
    return wf_arena_alloc(&s->arena, n);
}

static int h_header_get(wf_stream *s, wf_part part, wf_str name, wf_str *value)
{
    wf_hdrs *h = wf_stream_hdrs(s, part);
    return h ? wf_hdrs_get(h, name.p, name.len, value) : 0;
}

static size_t h_header_count(wf_stream *s, wf_part part)
{
    wf_hdrs *h = wf_stream_hdrs(s, part);
    return h ? h->n : 0;
}

static int h_header_at(wf_stream *s, wf_part part, size_t i, wf_str *name, wf_str *value)
{
    wf_hdrs *h = wf_stream_hdrs(s, part);

    if (!h || i >= h->n)
        return 0;
    *name = h->v[i].name;
    *value = h->v[i].value;
    return 1;
}

static int h_header_add(wf_stream *s, wf_part part, wf_str name, wf_str value)
{
    wf_hdrs *h = wf_stream_hdrs(s, part);
    return h ? wf_hdrs_add(&s->arena, h, name.p, name.len, value.p, value.len) : -1;
}

static int h_header_remove(wf_stream *s, wf_part part, wf_str name)
{
    wf_hdrs *h = wf_stream_hdrs(s, part);
    return h ? wf_hdrs_remove(h, name.p, name.len) : 0;
}

/* Replaces in place, so a pseudo-header keeps its place at the front. */
static int h_header_set(wf_stream *s, wf_part part, wf_str name, wf_str value)
{
    wf_hdrs *h = wf_stream_hdrs(s, part);

    if (!h)
        return -1;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name.len != name.len || strncasecmp(h->v[i].name.p, name.p, name.len) != 0)
            continue;
        h->v[i].value.p = wf_arena_strndup(&s->arena, value.p, value.len);
        h->v[i].value.len = value.len;
        if (!h->v[i].value.p)
            return -1;
        /* Drop later duplicates. */
        for (uint32_t j = i + 1, k = i + 1; j <= h->n; j++) {
            if (j == h->n) {
                h->n = k;
                break;
            }
            if (h->v[j].name.len == name.len &&
                strncasecmp(h->v[j].name.p, name.p, name.len) == 0)
                continue;
            h->v[k++] = h->v[j];
        }
        return 0;
    }
    return h_header_add(s, part, name, value);
}

static size_t h_buffer_length(const wf_buffer *b)
{
    return b->len;
}

static size_t h_buffer_peek(const wf_buffer *b, size_t off, const char **data)
{
    if (off >= b->len)
        return 0;
    *data = b->data + off;
    return b->len - off;
}

static int h_buffer_append(wf_buffer *b, const char *data, size_t len)
{
    if (b->len + len > b->cap) {
        size_t cap = (b->len + len) * 2;
        char *n = wf_arena_grow(&b->s->arena, b->data, b->cap, cap);
        if (!n)
            return -1;
        b->data = n;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static void h_buffer_drain(wf_buffer *b, size_t len)
{
    if (len >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + len, b->len - len);
    b->len -= len;
}

static int h_send_local_reply(wf_stream *s, int status, wf_str body, const char *details)
{
    wf_stream_local_reply(s, status, body.p, body.len, details);
    return 0;
}

static void h_resume(wf_stream *s)
{
    wf_chain_resume(s);
}

static int h_set_route(wf_stream *s, const wf_value *route, const char *name, const char *cluster)
{
    s->route = route;
    s->route_name = name ? wf_arena_strndup(&s->arena, name, strlen(name)) : NULL;
    s->cluster_name = cluster ? wf_arena_strndup(&s->arena, cluster, strlen(cluster)) : NULL;
    s->route_cfgs = route ? wf_map_get_ptr(&s->l->chain.route_cfgs, route) : NULL;
    return 0;
}

static void *h_route_config(wf_stream *s, const wf_filter *f)
{
    return s->route_cfgs && f ? s->route_cfgs[f->index] : NULL;
}

static int h_has_route(wf_stream *s)
{
    return s->route != NULL || s->cluster_name != NULL;
}

static int h_state_set(wf_stream *s, const char *key, wf_str value)
{
    wf_kvstate *kv;

    for (kv = s->kv; kv; kv = kv->next)
        if (strcmp(kv->key, key) == 0)
            break;
    if (!kv) {
        kv = wf_arena_alloc(&s->arena, sizeof(*kv));
        if (!kv || !(kv->key = wf_arena_strndup(&s->arena, key, strlen(key))))
            return -1;
        kv->next = s->kv;
        s->kv = kv;
    }
    kv->value.p = wf_arena_strndup(&s->arena, value.p, value.len);
    kv->value.len = value.len;
    return kv->value.p ? 0 : -1;
}

static int h_state_get(wf_stream *s, const char *key, wf_str *value)
{
    for (wf_kvstate *kv = s->kv; kv; kv = kv->next)
        if (strcmp(kv->key, key) == 0) {
            *value = kv->value;
            return 1;
        }
    return 0;
}

static void timer_fire(uv_timer_t *t)
{
    wf_timer *wt = t->data;

    wt->active = 0;
    wt->cb(wt->s, wt->arg);
}

static wf_timer *h_timer_start(wf_stream *s, uint64_t ms, void (*cb)(wf_stream *, void *), void *arg)
{
    /* Timers are not in the arena: a libuv handle must outlive its close
     * callback, which may come after the stream is gone. */
    wf_timer *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    uv_timer_init(&s->w->loop, &t->t);
    t->t.data = t;
    t->s = s;
    t->cb = cb;
    t->arg = arg;
    t->active = 1;
    t->next = s->timers;
    s->timers = t;
    uv_timer_start(&t->t, timer_fire, ms, 0);
    return t;
}

static void h_timer_cancel(wf_stream *s, wf_timer *t)
{
    if (t && t->active) {
        uv_timer_stop(&t->t);
        t->active = 0;
    }
}

static uint64_t h_random(wf_stream *s)
{
    return wf_rand(&s->w->rng);
}

static uint64_t h_now_ms(void)
{
    return cur_worker ? uv_now(&cur_worker->loop) : wf_now_us() / 1000;
}

static wf_metric *h_counter_define(const char *name)
{
    int id = wf_stat_id(name);
    return id < 0 ? NULL : (wf_metric *)(intptr_t)(id + 1);
}

static void h_counter_add(wf_metric *m, uint64_t n)
{
    if (m && cur_worker)
        cur_worker->stats[(intptr_t)m - 1] += n;
}

static int h_host_eject(const char *cluster, const char *address, uint32_t port, uint64_t ms)
{
    return -1; /* outlier detection lands with its module */
}

const wf_host wf_host_table = {
    .size = sizeof(wf_host),
    .abi_major = WF_ABI_MAJOR,
    .abi_minor = WF_ABI_MINOR,
    .log = h_log,
    .log_enabled = h_log_enabled,
    .value_type = wf_ctree_type,
    .value_string = wf_ctree_string,
    .value_int = wf_ctree_int,
    .value_double = wf_ctree_double,
    .value_bool = wf_ctree_bool,
    .value_len = wf_ctree_len,
    .value_at = wf_ctree_at,
    .value_key_at = wf_ctree_key_at,
    .value_get = wf_ctree_get,
    .alloc = h_alloc,
    .header_get = h_header_get,
    .header_count = h_header_count,
    .header_at = h_header_at,
    .header_set = h_header_set,
    .header_add = h_header_add,
    .header_remove = h_header_remove,
    .buffer_length = h_buffer_length,
    .buffer_peek = h_buffer_peek,
    .buffer_append = h_buffer_append,
    .buffer_drain = h_buffer_drain,
    .send_local_reply = h_send_local_reply,
    .resume = h_resume,
    .set_route = h_set_route,
    .route_config = h_route_config,
    .has_route = h_has_route,
    .state_set = h_state_set,
    .state_get = h_state_get,
    .timer_start = h_timer_start,
    .timer_cancel = h_timer_cancel,
    .random = h_random,
    .now_ms = h_now_ms,
    .counter_define = h_counter_define,
    .counter_add = h_counter_add,
    .host_eject = h_host_eject,
};
