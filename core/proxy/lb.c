/*
 * lb.c: load balancers.  The schedule of a weighted round robin is built
 * once per snapshot; the position in it, like all balancer state, is per
 * worker, so picking takes no lock.
 *
 *   ROUND_ROBIN    weighted round robin over an interleaved schedule
 *   LEAST_REQUEST  power of two choices on active requests / weight
 *   RANDOM         weighted random
 */
#include "proxy/proxy.h"

#include <stdlib.h>

#define SCHED_MAX 4096

uint64_t wf_rand(uint64_t *x)
{
    /* xorshift64*: fast, and reproducible from a seed for tests. */
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 2685821657736338717ULL;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int wf_lb_prepare(wf_cluster *c)
{
    uint64_t g = 0, total = 0;
    size_t n = 0;

    free(c->sched);
    c->sched = NULL;
    c->n_sched = 0;
    if (!c->n_eps)
        return 0;
    for (size_t i = 0; i < c->n_eps; i++)
        g = gcd(g, c->eps[i].weight);
    for (size_t i = 0; i < c->n_eps; i++)
        total += c->eps[i].weight / g;
    if (total > SCHED_MAX)
        total = SCHED_MAX; /* approximate very uneven weights */
    c->sched = malloc(sizeof(uint32_t) * total);
    if (!c->sched)
        return -1;
    /* Smooth weighted round robin: interleaves, so weights 5:1 give
     * a a b a a a rather than a a a a a b. */
    {
        int64_t *cur = calloc(c->n_eps, sizeof(int64_t));
        if (!cur)
            return -1;
        while (n < total) {
            size_t best = 0;
            int64_t sum = 0;
            for (size_t i = 0; i < c->n_eps; i++) {
                cur[i] += c->eps[i].weight;
                sum += c->eps[i].weight;
                if (cur[i] > cur[best])
                    best = i;
            }
            cur[best] -= sum;
            c->sched[n++] = (uint32_t)best;
        }
        free(cur);
    }
    c->n_sched = n;
    return 0;
}

static wf_endpoint *weighted_random(wf_worker *w, wf_cluster *c)
{
    uint64_t total = 0, r;

    for (size_t i = 0; i < c->n_eps; i++)
        total += c->eps[i].weight;
    r = wf_rand(&w->rng) % total;
    for (size_t i = 0; i < c->n_eps; i++) {
        if (r < c->eps[i].weight)
            return &c->eps[i];
        r -= c->eps[i].weight;
    }
    return &c->eps[c->n_eps - 1];
}

wf_endpoint *wf_lb_pick(wf_worker *w, wf_cluster *c)
{
    if (!c->n_eps)
        return NULL;
    if (c->n_eps == 1)
        return &c->eps[0];
    switch (c->lb) {
    case WF_LBP_RANDOM:
        return weighted_random(w, c);
    case WF_LBP_LEAST_REQUEST: {
        size_t a = wf_rand(&w->rng) % c->n_eps, b = wf_rand(&w->rng) % (c->n_eps - 1);
        wf_pool *pa, *pb;
        if (b >= a)
            b++;
        pa = w->ep_pool ? w->ep_pool[c->eps[a].gindex] : NULL;
        pb = w->ep_pool ? w->ep_pool[c->eps[b].gindex] : NULL;
        /* Compare active/weight without dividing: a_act * b_w vs b_act * a_w. */
        if (pa && pb &&
            (uint64_t)pb->active * c->eps[a].weight < (uint64_t)pa->active * c->eps[b].weight)
            return &c->eps[b];
        return &c->eps[a];
    }
    default: {
        uint32_t i = w->rr ? w->rr[c->index]++ : 0;
        return &c->eps[c->sched[i % c->n_sched]];
    }
    }
}
