/* lb_test.c: the load balancers (core/proxy/lb.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "test.h"

static wf_endpoint eps[4];

static wf_cluster cluster(int lb, const uint32_t *weights, size_t n)
{
    wf_cluster c;

    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < n; i++) {
        memset(&eps[i], 0, sizeof(eps[i]));
        eps[i].weight = weights[i];
        eps[i].gindex = (uint32_t)i;
    }
    c.eps = eps;
    c.n_eps = n;
    c.lb = lb;
    wf_lb_prepare(&c);
    return c;
}

static wf_worker worker(wf_pool **pools, uint32_t *rr)
{
    wf_worker w;

    memset(&w, 0, sizeof(w));
    w.rng = 42;
    w.ep_pool = pools;
    w.rr = rr;
    return w;
}

TEST(round_robin_equal_weights_cycles)
{
    uint32_t wts[3] = {1, 1, 1}, rr[1] = {0};
    wf_cluster c = cluster(WF_LBP_ROUND_ROBIN, wts, 3);
    wf_worker w = worker(NULL, rr);

    for (int i = 0; i < 9; i++)
        CHECK_INT(wf_lb_pick(&w, &c) - eps, i % 3);
    free(c.sched);
}

TEST(round_robin_weights_interleave)
{
    uint32_t wts[2] = {5, 1}, rr[1] = {0};
    wf_cluster c = cluster(WF_LBP_ROUND_ROBIN, wts, 2);
    wf_worker w = worker(NULL, rr);
    int count[2] = {0, 0}, run = 0, longest = 0;

    CHECK_INT(c.n_sched, 6);
    for (int i = 0; i < 600; i++) {
        long k = wf_lb_pick(&w, &c) - eps;
        count[k]++;
        run = k == 0 ? run + 1 : 0;
        if (run > longest)
            longest = run;
    }
    CHECK_INT(count[0], 500);
    CHECK_INT(count[1], 100);
    /* Smooth: the heavy endpoint never gets more than its share in a row. */
    CHECK(longest <= 5);
    free(c.sched);
}

TEST(least_request_prefers_idle)
{
    uint32_t wts[2] = {1, 1};
    wf_pool p[2];
    wf_pool *pools[2] = {&p[0], &p[1]};
    wf_cluster c = cluster(WF_LBP_LEAST_REQUEST, wts, 2);
    wf_worker w = worker(pools, NULL);

    memset(p, 0, sizeof(p));
    p[0].active = 10;
    p[1].active = 0;
    /* With two endpoints both are always sampled: the idle one wins. */
    for (int i = 0; i < 100; i++)
        CHECK_INT(wf_lb_pick(&w, &c) - eps, 1);
    free(c.sched);
}

TEST(least_request_weights_scale_load)
{
    uint32_t wts[2] = {4, 1};
    wf_pool p[2];
    wf_pool *pools[2] = {&p[0], &p[1]};
    wf_cluster c = cluster(WF_LBP_LEAST_REQUEST, wts, 2);
    wf_worker w = worker(pools, NULL);

    memset(p, 0, sizeof(p));
    p[0].active = 3; /* 3/4 per unit of weight */
    p[1].active = 1; /* 1/1 */
    for (int i = 0; i < 50; i++)
        CHECK_INT(wf_lb_pick(&w, &c) - eps, 0);
    free(c.sched);
}

TEST(random_follows_weights)
{
    uint32_t wts[2] = {9, 1};
    wf_cluster c = cluster(WF_LBP_RANDOM, wts, 2);
    wf_worker w = worker(NULL, NULL);
    int n = 100000, hits = 0;
    double sd = sqrt(n * 0.1 * 0.9);

    for (int i = 0; i < n; i++)
        hits += wf_lb_pick(&w, &c) - eps == 1;
    /* Five standard deviations: fails by chance about once in 3.5 million. */
    CHECK(fabs(hits - n * 0.1) < 5 * sd);
    free(c.sched);
}

TEST(empty_cluster_gives_null)
{
    wf_cluster c;
    wf_worker w = worker(NULL, NULL);

    memset(&c, 0, sizeof(c));
    CHECK(wf_lb_pick(&w, &c) == NULL);
}

int main(void)
{
    RUN(round_robin_equal_weights_cycles);
    RUN(round_robin_weights_interleave);
    RUN(least_request_prefers_idle);
    RUN(least_request_weights_scale_load);
    RUN(random_follows_weights);
    RUN(empty_cluster_gives_null);
    return TEST_SUMMARY();
}
