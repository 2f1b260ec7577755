/*
 * proxy.c: the proxy at run time.  The main thread gets a resource bundle
 * (static mode: loads the config dir and runs the same translator istiod
 * runs; xDS mode: the ADS client, core/xds/client.c, hands over each
 * complete push), builds the snapshot, binds one SO_REUSEPORT socket per
 * listener per worker from the first snapshot, serves the admin port and
 * handles signals; each worker runs its own libuv loop over its sockets.
 * Later snapshots (xDS) are published to the workers by pointer swap: a
 * worker adopts it on its next wake-up, a stream keeps the snapshot it
 * started with.  SIGTERM or /quitquitquit drains: workers stop accepting,
 * finish in-flight streams, then exit (forced after the drain timeout).
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "config/config.h"
#include "identity/keeper.h"
#include "translate/translate.h"
#include "util/flags.h"
#include "util/file.h"
#include "util/jarena.h"
#include "util/log.h"
#include "xds/client.h"

static wf_snapshot *current;
static wf_worker workers[WF_MAX_WORKERS];
static int n_workers;
static atomic_int running;
static atomic_int started;
static int draining;
static uv_loop_t *main_loop;
static uv_signal_t sig_term, sig_int;
static uv_timer_t drain_timer, watch_timer, quit_timer, trim_timer;
static uint64_t drain_deadline;
static long drain_timeout_ms;
static const wf_proxy_opts *opts;
static wf_workload_info wl;
static int fatal_rc; /* set when the proxy must exit with this code */

/* xDS mode: the client, and the last state it showed once it is stopped. */
static wf_xds_client *xds;
static const char *xds_server_addr;
static json_t *xds_last_dump;
static char trust_domain[256]; /* static mode: the mesh config's, for the workload */
static json_t *xds_node; /* kept until the xDS client starts (after the first certificate) */

/* Identity (--ca): the keeper of the workload certificate. */
static wf_keeper *keeper;
static char *root_pem;

/* The listeners bound from the first snapshot.  Workers listen on these
 * for the life of the process; a later snapshot's listeners are put in
 * this order (downstream connections find theirs by index). */
typedef struct bound_listener {
    char *name;
    char host[64];
    int port;
    char warned_addr[96]; /* the other address last warned about */
    int warned_missing;
} bound_listener;
static bound_listener *bound;
static size_t n_bound;
static json_t *warned_extra; /* names of listeners ignored, warned once */

uint64_t wf_now_us(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

wf_snapshot *wf_proxy_current(void)
{
    return current;
}

int wf_proxy_ready(void)
{
    return current && !draining && atomic_load(&started) == n_workers &&
           (!opts || !opts->ca || wf_ident_ready());
}

json_t *wf_proxy_certs_dump(void)
{
    json_t *d = wf_ident_dump();
    wf_keeper_status st;
    char t[32];
    struct tm tm;

    if (!keeper) {
        json_object_set_new(d, "ca", json_null());
        return d;
    }
    wf_keeper_status_get(keeper, &st);
    json_object_set_new(d, "ca", json_string(opts->ca));
    json_object_set_new(d, "issued", json_integer((json_int_t)st.issued));
    json_object_set_new(d, "last_error", st.last_error[0] ? json_string(st.last_error) : json_null());
    if (st.next_attempt) {
        strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&st.next_attempt, &tm));
        json_object_set_new(d, "next_renewal", json_string(t));
    } else {
        json_object_set_new(d, "next_renewal", json_null());
    }
    return d;
}

/* ---- workers ---- */

/* Main thread: wakes worker w, unless it has stopped (its loop, and the
 * handle, may already be gone: libuv would abort).  Not on the request
 * path: snapshots and drain only. */
static void wake_worker(wf_worker *w)
{
    uv_mutex_lock(&w->wake_lock);
    if (!w->wake_closed)
        uv_async_send(&w->wake);
    uv_mutex_unlock(&w->wake_lock);
}

/* Points the worker at snapshot s: endpoint -> pool table and balancer
 * state sized for it. */
static int adopt(wf_worker *w, wf_snapshot *s)
{
    wf_pool **ep_pool = calloc(s->n_eps ? s->n_eps : 1, sizeof(*ep_pool));
    uint32_t *rr = calloc(s->n_cls ? s->n_cls : 1, sizeof(*rr));

    if (!ep_pool || !rr) {
        free(ep_pool);
        free(rr);
        return -1;
    }
    w->gen++;
    /* Pools are made on an endpoint's first request (wf_upstream_start):
     * most endpoints of a big mesh never see one from a given proxy. */
    for (size_t i = 0; i < s->n_cls; i++)
        for (size_t j = 0; j < s->cls[i].n_eps; j++) {
            wf_endpoint *ep = &s->cls[i].eps[j];
            wf_pool *p = wf_map_get(&w->pools, ep->poolkey, strlen(ep->poolkey));
            if ((ep_pool[ep->gindex] = p))
                p->gen = w->gen;
        }
    /* Endpoints the new configuration dropped keep no idle connections. */
    wf_pools_retire(w, w->gen);
    free(w->ep_pool);
    free(w->rr);
    w->ep_pool = ep_pool;
    w->rr = rr;
    if (w->snap)
        wf_snapshot_unref(w->snap);
    w->snap = s;
    return 0;
}

static void close_listeners(wf_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (!uv_is_closing((uv_handle_t *)&w->listeners[i]))
            uv_close((uv_handle_t *)&w->listeners[i], NULL);
}

/* May run from a connection's close callback before the drain wake-up
 * itself, so it closes everything the loop still holds. */
void wf_worker_maybe_stop(wf_worker *w)
{
    if (!atomic_load(&w->drain) || w->n_dconns || w->stopped)
        return;
    w->stopped = 1;
    close_listeners(w);
    wf_pools_close(w);
    uv_mutex_lock(&w->wake_lock);
    w->wake_closed = 1; /* no uv_async_send after this: see wake_worker */
    uv_mutex_unlock(&w->wake_lock);
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
    if (w->flush_check_init)
        uv_close((uv_handle_t *)&w->flush_check, NULL);
}

static void flush_check_cb(uv_check_t *h)
{
    wf_worker *w = h->data;

    while (w->head_dirty || w->h2_dirty) {
        wf__dc_flush_heads(w);
        wf__h2d_flush(w);
    }
    uv_check_stop(h);
}

void wf__worker_flush_soon(wf_worker *w)
{
    if (!w->flush_check_init) {
        uv_check_init(&w->loop, &w->flush_check);
        w->flush_check.data = w;
        uv_unref((uv_handle_t *)&w->flush_check);
        w->flush_check_init = 1;
    }
    uv_check_start(&w->flush_check, flush_check_cb);
}

static void report_handle(uv_handle_t *h, void *arg)
{
    wf_worker *w = arg;

    if (!uv_is_closing(h))
        WF_WARN("worker %d: still open at drain timeout: %s handle %p (active %d, %u connections, "
                "%u streams)",
                w->id, uv_handle_type_name(uv_handle_get_type(h)), (void *)h, uv_is_active(h),
                w->n_dconns, w->n_streams);
}

static void wake(wf_worker *w);
static int open_listeners(wf_worker *w);

static void wake_cb(uv_async_t *a)
{
    wake(a->data);
}

/* Also looks for a new snapshot or a drain every 250 ms, so that a lost
 * async wake-up can delay a drain but never block it.  Unreferenced: it
 * never keeps the loop alive by itself. */
static void tick_cb(uv_timer_t *t)
{
    wf_worker *w = t->data;
    uint64_t now = uv_now(&w->loop);

    wake(w);
    if (now - w->swept_ms >= 1000) {
        /* Idle connections past their timeouts, once a second. */
        w->swept_ms = now;
        wf_downstream_sweep(w, now);
        wf_pools_sweep(w, now);
    }
}

static void wake(wf_worker *w)
{
    wf_snapshot *next = atomic_exchange(&w->next, NULL);
    int drain = atomic_load(&w->drain);

    if (next && adopt(w, next) < 0)
        wf_snapshot_unref(next);
    else if (next && !drain && !w->stopped)
        open_listeners(w); /* a snapshot may add listeners */
    if (drain && !w->stopped) {
        close_listeners(w);
        wf_downstream_close_all(w, drain == 1);
        wf_worker_maybe_stop(w);
        if (drain == 2)
            uv_walk(&w->loop, report_handle, w);
    }
}

/* Starts listening on the sockets the main thread bound for listeners
 * this worker has not opened yet (all at start, new ones with a snapshot
 * that added them). */
static int open_listeners(wf_worker *w)
{
    int rc = 0;

    for (size_t i = w->n_listeners; i < w->snap->n_ls; i++) {
        uv_tcp_init(&w->loop, &w->listeners[i]);
        w->listeners[i].data = (void *)(uintptr_t)i;
        w->n_listeners = i + 1;
        if (w->listener_fds[i] < 0)
            continue; /* could not be bound (warned) */
        if (uv_tcp_open(&w->listeners[i], w->listener_fds[i]) < 0 ||
            uv_listen((uv_stream_t *)&w->listeners[i], 1024, wf_downstream_accept) < 0) {
            WF_ERROR("worker %d: cannot listen on its socket for listener %s", w->id,
                     w->snap->ls[i].name);
            rc = -1;
        }
    }
    return rc;
}

static void worker_main(void *arg)
{
    wf_worker *w = arg;

    wf_host_set_worker(w);
    if (open_listeners(w) < 0)
        exit(1);
    atomic_fetch_add(&started, 1);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Free what the loop's close callbacks no longer use. */
    for (size_t i = 0; i < w->pools.cap; i++)
        if (w->pools.e && w->pools.e[i].key) {
            wf_pool *p = w->pools.e[i].value;
            wf_h2u_pool_free(p);
            wf_tls_session_free(p->session);
            free(p);
        }
    wf_map_free(&w->pools);
    uv_loop_close(&w->loop);
    wf_arena_thread_release();
    atomic_fetch_sub(&running, 1);
}

/* A listening socket of its own for each worker: SO_REUSEPORT lets the
 * kernel spread connections over the workers without a shared accept.
 * Without reuseport the socket is the process's alone (the workers share
 * it): binding a port another process holds then fails, as it must for a
 * TCP service's port. */
static int listen_fd(const char *host, int port, int reuseport, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    int fd, one = 1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "cannot listen on %s:%d: not an IPv4 address", host, port);
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s (is another process using it?)", host,
                 port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* ---- drain and exit ---- */

static void stop_xds(void);

static void watch_cb(uv_timer_t *t)
{
    if (atomic_load(&running) > 0) {
        if (uv_now(main_loop) >= drain_deadline + 5000) {
            /* A worker that cannot stop is a bug; exiting beats hanging a
             * rollout. */
            WF_ERROR("%d worker(s) still running 5 s after the drain timeout; exiting anyway",
                     atomic_load(&running));
            _exit(1);
        }
        if (uv_now(main_loop) >= drain_deadline && draining == 1) {
            draining = 2;
            WF_WARN("drain timeout (%ld ms) reached: closing remaining connections",
                    drain_timeout_ms);
            for (int i = 0; i < n_workers; i++) {
                atomic_store(&workers[i].drain, 2);
                wake_worker(&workers[i]);
            }
        }
        return;
    }
    uv_timer_stop(&watch_timer);
    uv_close((uv_handle_t *)&watch_timer, NULL);
    uv_close((uv_handle_t *)&drain_timer, NULL);
    uv_close((uv_handle_t *)&quit_timer, NULL);
    uv_close((uv_handle_t *)&trim_timer, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    stop_xds();
    wf_admin_stop();
}

static void stop_xds(void)
{
    wf_keeper_stop(keeper);
    keeper = NULL;
    if (!xds)
        return;
    json_decref(xds_last_dump);
    xds_last_dump = wf_xds_client_dump(xds);
    if (xds_last_dump)
        json_object_set_new(xds_last_dump, "connected", json_false());
    wf_xds_client_stop(xds);
    xds = NULL;
}

json_t *wf_proxy_xds_dump(void)
{
    if (xds)
        return wf_xds_client_dump(xds);
    return xds_last_dump ? json_deep_copy(xds_last_dump) : NULL;
}

static void begin_drain(void)
{
    if (draining)
        return;
    draining = 1;
    /* A draining proxy takes no more configuration; closing the stream
     * also tells istiod, which drops the workload from its registry. */
    stop_xds();
    WF_INFO("draining: no new connections; finishing in-flight requests (up to %ld ms)",
            drain_timeout_ms);
    drain_deadline = uv_now(main_loop) + (uint64_t)drain_timeout_ms;
    for (int i = 0; i < n_workers; i++) {
        atomic_store(&workers[i].drain, 1);
        wake_worker(&workers[i]);
    }
    uv_timer_start(&watch_timer, watch_cb, 10, 10);
}

static void on_signal(uv_signal_t *s, int signum)
{
    WF_INFO("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    begin_drain();
}

static void quit_cb(uv_timer_t *t)
{
    begin_drain();
}

void wf_proxy_quit(void)
{
    /* After the admin reply is on its way. */
    uv_timer_start(&quit_timer, quit_cb, 1, 0);
}

/* ---- start-up ---- */

static void exe_dir(char *out, size_t len)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

    if (n <= 0) {
        snprintf(out, len, ".");
        return;
    }
    buf[n] = 0;
    snprintf(out, len, "%s", dirname(buf));
}

static char *labels_copy;

/* "k=v,k2=v2" -> NULL-terminated k, v list and a JSON object. */
static int parse_labels(const char *s, const char ***out, json_t *obj, char *err, size_t errlen)
{
    size_t n = 0, cap = 8;
    const char **v = calloc(cap * 2 + 1, sizeof(char *));
    char *copy = strdup(s ? s : ""), *save = NULL, *tok;

    if (!v || !copy)
        return -1;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) {
            snprintf(err, errlen, "flag --labels: \"%s\" is not KEY=VALUE", tok);
            free(v);
            free(copy);
            return -1;
        }
        *eq = 0;
        if (n == cap) {
            const char **nv = realloc(v, (cap * 4 + 1) * sizeof(char *));
            if (!nv)
                return -1;
            v = nv;
            cap *= 2;
        }
        v[2 * n] = tok;
        v[2 * n + 1] = eq + 1;
        json_object_set_new(obj, tok, json_string(eq + 1));
        n++;
    }
    v[2 * n] = NULL;
    *out = v; /* points into copy; both freed by labels_free */
    labels_copy = copy;
    return 0;
}

/* ---- listeners, workers, snapshots ---- */

/* Forgets the listener sockets; close_fds when no worker took them over
 * (a worker's uv_close owns them once it opened them). */
static void unbind_listeners(int close_fds)
{
    for (int i = 0; i < WF_MAX_WORKERS; i++) {
        wf_worker *w = &workers[i];
        /* Sockets a worker opened are its loop's; the rest are closed here. */
        for (size_t k = close_fds ? 0 : w->n_listeners; w->listener_fds && k < n_bound; k++)
            if (w->listener_fds[k] >= 0)
                close(w->listener_fds[k]);
        free(w->listeners);
        free(w->listener_fds);
        w->listeners = NULL;
        w->listener_fds = NULL;
        w->n_listeners = 0;
    }
    for (size_t k = 0; k < n_bound; k++)
        free(bound[k].name);
    free(bound);
    bound = NULL;
    n_bound = 0;
}

/* Binds listener k for every worker.  An optional one (a TCP service's own
 * port, or one added after start-up) is one socket shared by the workers,
 * and failing to bind it is a warning: the rest of the mesh still works. */
static int bind_one(size_t k, const char *name, const char *host, int port, int optional,
                    char *err, size_t errlen)
{
    char why[512];

    for (int i = 0; i < (int)opts->concurrency; i++) {
        wf_worker *w = &workers[i];
        if (optional && i > 0) {
            int fd0 = workers[0].listener_fds[k];
            w->listener_fds[k] = fd0 < 0 ? -1 : fcntl(fd0, F_DUPFD_CLOEXEC, 0);
            continue;
        }
        w->listener_fds[k] = listen_fd(host, port, !optional, why, sizeof(why));
        if (w->listener_fds[k] >= 0)
            continue;
        if (!optional) {
            snprintf(err, errlen, "listener %s: %s", name, why);
            return -1;
        }
        WF_WARN("listener %s: %s; connections to it through this proxy fail until it can "
                "bind (give each proxy its own outbound address with --outbound ADDR:PORT, then "
                "restart it)",
                name, why);
    }
    return 0;
}

/* Binds every listener of s once per worker and remembers the set: it is
 * the proxy's for the rest of its life. */
static int bind_listeners(const wf_snapshot *s, int nw, char *err, size_t errlen)
{
    if (s->n_ls > WF_MAX_LISTENERS) {
        snprintf(err, errlen, "%zu listeners: more than the %d a proxy serves", s->n_ls,
                 WF_MAX_LISTENERS);
        return -1;
    }
    if (!(bound = calloc(WF_MAX_LISTENERS, sizeof(*bound)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    n_bound = s->n_ls;
    for (size_t k = 0; k < s->n_ls; k++) {
        bound[k].name = strdup(s->ls[k].name);
        snprintf(bound[k].host, sizeof(bound[k].host), "%s", s->ls[k].host);
        bound[k].port = s->ls[k].port;
    }
    for (int i = 0; i < nw; i++) {
        wf_worker *w = &workers[i];
        w->id = i;
        w->n_listeners = 0; /* opened by the worker itself */
        /* Room for listeners added later (TCP services appear with their
         * configuration); pages never touched cost no memory. */
        w->listeners = calloc(WF_MAX_LISTENERS, sizeof(uv_tcp_t));
        w->listener_fds = malloc(WF_MAX_LISTENERS * sizeof(int));
        if (!w->listeners || !w->listener_fds) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (size_t k = 0; k < WF_MAX_LISTENERS; k++)
            w->listener_fds[k] = -1;
    }
    for (size_t k = 0; k < s->n_ls; k++)
        if (bind_one(k, s->ls[k].name, s->ls[k].host, s->ls[k].port, s->ls[k].optional, err,
                     errlen) < 0)
            return -1;
    return 0;
}

/* Starts the workers on current (their sockets are bound).  Out of memory
 * here is fatal. */
static int start_workers(const wf_proxy_opts *o)
{
    n_workers = (int)o->concurrency;
    atomic_store(&running, n_workers);
    for (int i = 0; i < n_workers; i++) {
        wf_worker *w = &workers[i];
        uv_loop_init(&w->loop);
        w->loop.data = w;
        uv_async_init(&w->loop, &w->wake, wake_cb);
        uv_mutex_init(&w->wake_lock);
        w->wake.data = w;
        uv_timer_init(&w->loop, &w->tick);
        w->tick.data = w;
        uv_timer_start(&w->tick, tick_cb, 250, 250);
        uv_unref((uv_handle_t *)&w->tick);
        wf_map_init(&w->pools);
        /* Mapped, not calloc'd: calloc may clear all of it from the heap,
         * a mapping's pages cost memory only once a counter is written. */
        w->stats = mmap(NULL, WF_MAX_STATS * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (w->stats == MAP_FAILED)
            w->stats = NULL;
        w->rbuf = malloc(WF_READ_BUF);
        w->rng = o->seed ? (uint64_t)o->seed * 2654435761u + (uint64_t)i * 0x9E3779B97F4A7C15ULL + 1
                         : (wf_now_us() ^ ((uint64_t)getpid() << 20)) + (uint64_t)i * 7919 + 1;
        wf_snapshot_ref(current);
        if (!w->stats || !w->rbuf || adopt(w, current) < 0) {
            fprintf(stderr, "weft: proxy: out of memory starting worker %d\n", i);
            return -1;
        }
        wf_stats_attach(w);
        uv_thread_create(&w->thread, worker_main, w);
    }
    return 0;
}

/* Hands s to every worker: each adopts it on its next wake-up and drops
 * the one it had (streams keep theirs until they end). */
static void publish(wf_snapshot *s)
{
    wf_snapshot *old = current;

    current = s;
    for (int i = 0; i < n_workers; i++) {
        wf_worker *w = &workers[i];
        wf_snapshot *prev;
        wf_snapshot_ref(s);
        /* A snapshot published before the worker woke is never adopted. */
        if ((prev = atomic_exchange(&w->next, s)))
            wf_snapshot_unref(prev);
        wake_worker(w);
    }
    wf_snapshot_unref(old);
}

/* "host:port" of a Listener (JSON), and its parts. */
static void listener_addr(const json_t *l, char *out, size_t len, char *host, size_t hostlen,
                          int *port)
{
    const json_t *sa = json_object_get(json_object_get(l, "address"), "socket_address");
    const char *h = json_string_value(json_object_get(sa, "address"));
    const json_t *p = json_object_get(sa, "port_value");

    snprintf(host, hostlen, "%s", h ? h : "");
    *port = json_is_integer(p) ? (int)json_integer_value(p) : 0;
    snprintf(out, len, "%s:%d", host, *port);
}

/* Listeners are bound once: puts the bundle's listeners in the order of
 * the bound set, keeping each one's binding.  A listener that moved keeps
 * its old address, one that disappeared keeps its previous configuration,
 * a new one is not served; each is logged once. */
static int align_listeners(json_t *bundle)
{
    json_t *ls = json_object_get(bundle, "listeners");
    json_t *prev = NULL; /* the listeners before, read when one is missing */
    json_t *out = json_array();
    size_t n = json_array_size(ls), j;
    char *used = calloc(n + 1, 1);
    json_t *l;

    if (!out || !used || (!warned_extra && !(warned_extra = json_object()))) {
        json_decref(out);
        free(used);
        return -1;
    }
    for (size_t i = 0; i < n_bound; i++) {
        bound_listener *b = &bound[i];
        json_t *pick = NULL;
        json_array_foreach(ls, j, l)
        {
            const char *name = json_string_value(json_object_get(l, "name"));
            if (!used[j] && name && strcmp(name, b->name) == 0) {
                used[j] = 1;
                pick = l;
                break;
            }
        }
        if (pick) {
            char addr[96], host[64];
            int port;
            b->warned_missing = 0;
            listener_addr(pick, addr, sizeof(addr), host, sizeof(host), &port);
            if ((strcmp(host, b->host) != 0 || port != b->port) &&
                strcmp(addr, b->warned_addr) != 0) {
                WF_WARN("listener %s: the configuration moves it to %s, but listeners are bound "
                        "once; it keeps listening on %s:%d (restart the proxy to move it)",
                        b->name, addr, b->host, b->port);
                snprintf(b->warned_addr, sizeof(b->warned_addr), "%s", addr);
            }
        } else {
            if (!prev)
                prev = wf_snapshot_listeners(current);
            pick = json_array_get(prev, i);
            if (!b->warned_missing)
                WF_WARN("listener %s (%s:%d) is not in the new configuration; it keeps its "
                        "previous configuration (listeners are bound once: restart the proxy "
                        "to remove it)",
                        b->name, b->host, b->port);
            b->warned_missing = 1;
        }
        if (!pick || json_array_append(out, pick) < 0) {
            json_decref(prev);
            json_decref(out);
            free(used);
            return -1;
        }
    }
    json_array_foreach(ls, j, l)
    {
        const char *name = json_string_value(json_object_get(l, "name"));
        char addr[96], host[64], why[600];
        int port;
        if (used[j] || !name || json_object_get(warned_extra, name))
            continue;
        listener_addr(l, addr, sizeof(addr), host, sizeof(host), &port);
        if (n_bound == WF_MAX_LISTENERS) {
            WF_WARN("listener %s (%s) is new in the configuration and is not served: the proxy "
                    "already serves %d listeners, its most",
                    name, addr, WF_MAX_LISTENERS);
            json_object_set_new(warned_extra, name, json_true());
            continue;
        }
        /* A new listener (a TCP service appeared): bound now, opened by
         * the workers when they adopt this configuration. */
        bind_one(n_bound, name, host, port, 1, why, sizeof(why));
        bound[n_bound].name = strdup(name);
        snprintf(bound[n_bound].host, sizeof(bound[n_bound].host), "%s", host);
        bound[n_bound].port = port;
        n_bound++;
        WF_INFO("listener %s (%s) added", name, addr);
        if (json_array_append(out, l) < 0) {
            json_decref(prev);
            json_decref(out);
            free(used);
            return -1;
        }
    }
    json_decref(prev);
    free(used);
    return json_object_set_new(bundle, "listeners", out);
}

/*
 * Static mode: the snapshot of cfg's translation.  The translation's JSON
 * is made in the JSON region (util/jarena.h): the snapshot keeps nothing of
 * it (it compiles what it reads, and packs what /config_dump shows), so
 * the region is emptied and its pages given back once the snapshot is
 * built, and none of the translation's many small values is left among
 * what the snapshot keeps.
 */
static wf_snapshot *translate_and_build(const wf_config *cfg, const wf_proxy_info *pi, char *err,
                                        size_t errlen)
{
    int region = wf_jarena_begin() == 0;
    char why[512];
    json_t *bundle = wf_translate(cfg, pi, why, sizeof(why));
    wf_snapshot *s = NULL;

    if (region)
        wf_jarena_pause(); /* what the snapshot makes stays */
    if (bundle) {
        s = wf_snapshot_build(bundle, &wl, err, errlen);
    } else {
        snprintf(err, errlen, "cannot translate the configuration: %s", why);
    }
    json_decref(bundle);
    if (region) {
        wf_jarena_end();
        wf_jarena_release();
    }
    return s;
}

static void trim_cb(uv_timer_t *t)
{
    wf_jarena_release();
    malloc_trim(0);
}

/* Once the xDS client has dropped the trees it built the bundle from (after
 * apply returns), their pages go back to the system. */
static void trim_soon(void)
{
    uv_timer_start(&trim_timer, trim_cb, 0, 0);
}

/* The ADS client has a complete push (main thread). */
static int xds_apply(json_t *bundle, void *ud, char *err, size_t errlen)
{
    wf_snapshot *s;
    char why[1024];

    if (draining) {
        snprintf(err, errlen, "the proxy is draining and takes no new configuration");
        return -1;
    }
    if (current && align_listeners(bundle) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!(s = wf_snapshot_build(bundle, &wl, err, errlen)))
        return -1;
    if (current) {
        publish(s);
        trim_soon();
        return 0;
    }
    if (bind_listeners(s, (int)opts->concurrency, why, sizeof(why)) < 0) {
        WF_ERROR("cannot serve the first configuration from istiod: %s; exiting", why);
        snprintf(err, errlen, "%s", why);
        wf_snapshot_unref(s);
        unbind_listeners(1);
        fatal_rc = 1;
        begin_drain();
        return -1;
    }
    current = s;
    trim_soon();
    if (start_workers(opts) < 0)
        exit(1);
    WF_INFO("ready: %d workers; %zu listeners (outbound %s, inbound %s), %zu clusters; admin %s; "
            "xds %s version %s",
            n_workers, current->n_ls, opts->outbound, opts->app_port ? opts->inbound : "off",
            current->n_cls, opts->admin, xds_server_addr, current->version);
    return 0;
}

/* A certificate from the keeper: new TLS contexts for new connections. */
static void on_cert(const char *chain_pem, const char *key_pem, time_t not_after, void *ud)
{
    char err[600];

    if (wf_ident_set(chain_pem, key_pem, root_pem, err, sizeof(err)) < 0) {
        WF_ERROR("identity: %s", err);
        return;
    }
    WF_INFO("identity: certificate for %s, valid until %ld", wf_ident_id() ?: "?",
            (long)not_after);
    if (xds_node && !xds && !draining) {
        xds = wf_xds_client_start_tls(main_loop, xds_server_addr, xds_node, wf_ident_client,
                                      opts->ca_name ? opts->ca_name : WF_KEEPER_DEFAULT_CA_NAME,
                                      xds_apply, NULL, err, sizeof(err));
        json_decref(xds_node);
        xds_node = NULL;
        if (!xds) {
            WF_ERROR("xDS: %s", err);
            fatal_rc = 1;
            begin_drain();
        }
    }
}

static int start_keeper(const wf_proxy_opts *o, char *err, size_t errlen)
{
    wf_keeper_opts ko = {.ca_addr = o->ca,
                         .ca_name = o->ca_name,
                         .token_path = o->token_file,
                         .ttl = o->cert_ttl_s,
                         .on_cert = on_cert};
    char *e = NULL;
    int r = wf_read_file(o->root_cert, 1 << 20, &root_pem, NULL);

    if (r < 0) {
        snprintf(err, errlen, "--root-cert %s: %s", o->root_cert, strerror(-r));
        return -1;
    }
    ko.root_pem = root_pem;
    if (wf_keeper_start(main_loop, &ko, &keeper, &e) < 0) {
        snprintf(err, errlen, "--ca %s: %s", o->ca, e ? e : "cannot start");
        free(e);
        return -1;
    }
    return 0;
}

static int run(const wf_proxy_opts *o, const wf_proxy_xds_opts *x)
{
    const char *dirs[1] = {o->config_dir};
    wf_config *cfg = NULL;
    wf_diags diags = {0};
    wf_proxy_info pi = {0};
    char err[1024], dir[PATH_MAX], mdir[PATH_MAX + 16], pdir[PATH_MAX + 16];
    char out_host[64], in_host[64];
    int out_port, in_port;
    const char **labels = NULL;
    const char *pdirs[40];
    size_t npd = 0;
    json_t *label_obj = json_object(), *node = NULL;
    int rc = 0;

    wf_log_role = "proxy";
    opts = o;
    drain_timeout_ms = o->drain_timeout_ms;
    signal(SIGPIPE, SIG_IGN);
    wf_stats_init();
    exe_dir(dir, sizeof(dir));
    snprintf(mdir, sizeof(mdir), "%s/modules", dir);
    snprintf(pdir, sizeof(pdir), "%s/plugins", dir);
    for (size_t i = 0; i < o->n_plugin_dirs; i++)
        pdirs[npd++] = o->plugin_dirs[i];
    /* The defaults stay searched after the directories given. */
    pdirs[npd++] = pdir;
    pdirs[npd++] = "/etc/weft/plugins";
    wf_modules_set_dirs(o->module_dir ? o->module_dir : mdir, pdirs, npd);

    if (parse_labels(o->labels, &labels, label_obj, err, sizeof(err)) < 0) {
        fprintf(stderr, "weft: %s\n", err);
        rc = 2;
        goto out;
    }
    wf_addr_split(o->outbound, out_host, sizeof(out_host), &out_port);
    wf_addr_split(o->inbound, in_host, sizeof(in_host), &in_port);
    wl = (wf_workload_info){.role = "proxy",
                            .namespace_ = o->namespace_,
                            .service_account = o->service_account,
                            .trust_domain = "cluster.local",
                            .labels = label_obj,
                            .workers = (uint32_t)o->concurrency};

    if (!x) {
        /* Static mode: the bundle comes from the config dir, translated
         * here exactly as istiod would. */
        if (wf_config_load(dirs, 1, &cfg, &diags) < 0) {
            wf_diags_print(&diags, stderr);
            fprintf(stderr,
                    "weft: proxy: the configuration in %s was refused (%zu problem%s above); "
                    "fix it and start again (weft validate %s)\n",
                    o->config_dir, diags.n, diags.n == 1 ? "" : "s", o->config_dir);
            wf_diags_free(&diags);
            rc = 1;
            goto out;
        }
        wf_diags_free(&diags);
        pi = (wf_proxy_info){.role = "proxy",
                             .namespace_ = o->namespace_,
                             .service_account = o->service_account,
                             .labels = labels,
                             .outbound_addr = out_host,
                             .outbound_port = out_port,
                             .inbound_addr = in_host,
                             .inbound_port = in_port,
                             .app_port = (int)o->app_port,
                             .app_protocol = o->app_protocol};
        /* Filters may keep the workload's strings: this one outlives cfg. */
        snprintf(trust_domain, sizeof(trust_domain), "%s", cfg->mesh.trust_domain);
        wl.trust_domain = trust_domain;
        current = translate_and_build(cfg, &pi, err, sizeof(err));
        wf_config_free(cfg);
        cfg = NULL;
        malloc_trim(0);
        if (!current) {
            fprintf(stderr, "weft: proxy: %s\n", err);
            rc = 1;
            goto out;
        }
        if (bind_listeners(current, (int)o->concurrency, err, sizeof(err)) < 0) {
            fprintf(stderr, "weft: proxy: %s\n", err);
            rc = 1;
            goto out;
        }
    } else {
        /* Like Istio's injector: a workload with a certificate says so, and
         * peers' auto mTLS then speaks mTLS to it (core/translate). */
        if (o->ca && !json_object_get(label_obj, "security.istio.io/tlsMode"))
            json_object_set_new(label_obj, "security.istio.io/tlsMode", json_string("istio"));
        wf_xds_node_info ni = {.namespace_ = o->namespace_,
                               .service_account = o->service_account,
                               .labels = label_obj,
                               .name = x->name,
                               .instance_ips = x->instance_ips,
                               .outbound = o->outbound,
                               .inbound = o->inbound,
                               .app_port = (int)o->app_port,
                               .app_protocol = o->app_protocol,
                               .services = x->services,
                               .n_services = x->n_services,
                               .pid = (long)getpid()};
        if (!(node = wf_xds_node(&ni, err, sizeof(err)))) {
            fprintf(stderr, "weft: proxy: %s\n", err);
            rc = 2;
            goto out;
        }
        xds_server_addr = x->server;
    }

    main_loop = uv_default_loop();
    if (wf_admin_start(main_loop, o->admin, err, sizeof(err)) < 0) {
        fprintf(stderr, "weft: proxy: admin: %s\n", err);
        rc = 1;
        goto out;
    }
    uv_timer_init(main_loop, &drain_timer);
    uv_timer_init(main_loop, &watch_timer);
    uv_timer_init(main_loop, &quit_timer);
    uv_timer_init(main_loop, &trim_timer);
    uv_signal_init(main_loop, &sig_term);
    uv_signal_init(main_loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    if (o->ca && start_keeper(o, err, sizeof(err)) < 0) {
        fprintf(stderr, "weft: proxy: %s\n", err);
        rc = 1;
        goto out;
    }
    if (!x) {
        if (start_workers(o) < 0) {
            rc = 1;
            goto out;
        }
        WF_INFO("ready: %d workers; %zu listeners (outbound %s, inbound %s), %zu clusters; admin "
                "%s; config %s version %s",
                n_workers, current->n_ls, o->outbound, o->app_port ? o->inbound : "off",
                current->n_cls, o->admin, o->config_dir, current->version);
    } else if (o->ca) {
        /* xDS over mTLS starts with the first certificate (on_cert). */
        xds_node = json_incref(node);
        WF_INFO("started: getting the workload certificate from %s, then the configuration from "
                "istiod at %s over mTLS; admin %s answers /ready 503 until then",
                o->ca, x->server, o->admin);
    } else {
        xds = wf_xds_client_start(main_loop, x->server, node, xds_apply, NULL, err, sizeof(err));
        if (!xds) {
            fprintf(stderr, "weft: proxy: %s\n", err);
            fatal_rc = 1;
            begin_drain();
        } else {
            WF_INFO("started: waiting for the first configuration from istiod at %s (node %s); "
                    "admin %s answers /ready 503 until then",
                    x->server, json_string_value(json_object_get(node, "id")), o->admin);
        }
    }

    uv_run(main_loop, UV_RUN_DEFAULT);
    for (int i = 0; i < n_workers; i++) {
        wf_snapshot *next;
        uv_thread_join(&workers[i].thread);
        wf_snapshot_unref(workers[i].snap);
        if ((next = atomic_exchange(&workers[i].next, NULL)))
            wf_snapshot_unref(next);
    }
    rc = fatal_rc;
    if (!rc)
        WF_INFO("drained; exiting");
out:
    /* Stat shards stay allocated: a late /stats read may still sum them. */
    for (int i = 0; i < WF_MAX_WORKERS; i++) {
        wf_worker *w = &workers[i];
        free(w->ep_pool);
        free(w->rr);
        free(w->rbuf);
    }
    unbind_listeners(rc != 0);
    if (current)
        wf_snapshot_unref(current);
    current = NULL;
    if (cfg)
        wf_config_free(cfg);
    json_decref(label_obj);
    json_decref(node);
    json_decref(xds_last_dump);
    xds_last_dump = NULL;
    json_decref(xds_node);
    xds_node = NULL;
    wf_ident_shutdown();
    free(root_pem);
    root_pem = NULL;
    json_decref(warned_extra);
    warned_extra = NULL;
    free(labels);
    free(labels_copy);
    if (!rc)
        uv_loop_close(main_loop);
    return rc;
}

int wf_proxy_run(const wf_proxy_opts *o)
{
    return run(o, NULL);
}

int wf_proxy_run_xds(const wf_proxy_opts *o, const wf_proxy_xds_opts *x)
{
    return run(o, x);
}
