/*
 * stats.c: counters.  Each worker owns a shard (a plain array it alone
 * writes); reading sums the shards, so the request path takes no lock and
 * no atomic.  Names are registered on the main thread.
 */
#include "proxy/proxy.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

static const char *const fixed[WF_ST_FIXED_COUNT] = {
    "downstream_cx_total",        "downstream_cx_active",     "downstream_rq_total",
    "downstream_rq_1xx",          "downstream_rq_2xx",        "downstream_rq_3xx",
    "downstream_rq_4xx",          "downstream_rq_5xx",        "downstream_rq_active",
    "upstream_rq_total",          "upstream_cx_total",        "upstream_cx_active",
    "upstream_cx_connect_fail",   "no_route",                 "no_healthy_upstream",
    "ssl.handshake",              "ssl.session_reused",       "ssl.connection_error",
    "upstream_ssl.handshake",     "upstream_ssl.session_reused", "upstream_ssl.connection_error",
};

static char *names[WF_MAX_STATS];
static int n_names;
static wf_map by_name;
static wf_worker *shards[WF_MAX_WORKERS];
static int n_shards;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

void wf_stats_init(void)
{
    wf_map_init(&by_name);
    for (int i = 0; i < WF_ST_FIXED_COUNT; i++)
        wf_stat_id(fixed[i]);
}

int wf_stat_id(const char *name)
{
    int id;
    void *v;

    pthread_mutex_lock(&mu);
    v = wf_map_get(&by_name, name, strlen(name));
    if (v) {
        id = (int)(intptr_t)v - 1;
    } else if (n_names == WF_MAX_STATS) {
        static int warned;
        if (!warned++)
            WF_WARN("stats: %d counters registered, the most a proxy keeps; %s and the ones "
                    "after it are not counted",
                    WF_MAX_STATS, name);
        id = -1;
    } else {
        id = n_names;
        names[n_names++] = strdup(name);
        wf_map_put(&by_name, names[id], strlen(names[id]), (void *)(intptr_t)(id + 1));
    }
    pthread_mutex_unlock(&mu);
    return id;
}

void wf_stats_attach(wf_worker *w)
{
    pthread_mutex_lock(&mu);
    if (n_shards < WF_MAX_WORKERS)
        shards[n_shards++] = w;
    pthread_mutex_unlock(&mu);
}

static int cmp(const void *a, const void *b)
{
    return strcmp(names[*(const int *)a], names[*(const int *)b]);
}

char *wf_stats_text(void)
{
    int n, *order;
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);

    pthread_mutex_lock(&mu);
    n = n_names;
    order = malloc(sizeof(int) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++)
        order[i] = i;
    qsort(order, (size_t)n, sizeof(int), cmp);
    for (int k = 0; k < n && out; k++) {
        int id = order[k];
        int64_t sum = 0;
        for (int s = 0; s < n_shards; s++)
            sum += (int64_t)__atomic_load_n(&shards[s]->stats[id], __ATOMIC_RELAXED);
        while (out && len + strlen(names[id]) + 32 > cap) {
            char *o = realloc(out, cap *= 2);
            if (!o)
                free(out);
            out = o;
        }
        if (out)
            len += (size_t)snprintf(out + len, cap - len, "%s: %lld\n", names[id], (long long)sum);
    }
    pthread_mutex_unlock(&mu);
    free(order);
    return out;
}
