/*
 * istiod.c: the control plane at run time.  One libuv loop runs
 * everything: the config directory's watch (uv_fs_event on the directory,
 * plus a 1 s stat() poll for file systems where events do not arrive),
 * debounced reloads that keep the last good config when a change is
 * refused, the registry's grace timers, per-proxy translation and the ADS
 * server's pushes, and the monitoring port.
 *
 * Translation is memoised per proxy shape (role, namespace, service
 * account, labels, listener addresses, app port) for the current
 * configuration view, so a hundred identical sidecars cost one
 * translation per change, and a proxy whose shape did not change gets the
 * same resources and therefore no push.  A translation is kept as a
 * snapshot of encoded responses (xds/server.h), so a change is encoded
 * once per shape, not once per proxy; translating runs on a helper
 * thread (the loop waits for it) for the sake of memory, see "the
 * allocation thread" below.
 */
#include "istiod/istiod-t.h"

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "translate/translate.h"
#include "util/flags.h"
#include "util/jarena.h"
#include "util/log.h"
#include "util/loop.h"

/* Keep restarting a debounce for at most this many debounce periods, so a
 * file rewritten without pause still gets loaded. */
#define DEBOUNCE_MAX_FACTOR 10
#define ISTIOD_MMAP_THRESHOLD (64 * 1024)
/* The snapshots of a view before, and the memory of a burst of
 * translations, are let go this long after a translation, once no push is
 * under way (checked every tick). */
#define SETTLE_DELAY_MS 500
#define SETTLE_TICK_MS 10
#define POLL_MS 1000

/* What istiod knows of one connected proxy (an ADS stream's data). */
typedef struct ist_proxy {
    char *key;              /* the translation cache key */
    const char **labels;    /* k, v, ..., NULL; strings borrowed from the stream's node */
    wf_proxy_info pi;       /* what wf_translate gets */
    char ns[256], sa[256];
    char out_host[256], in_host[256];
    wf_reg_workload *reg;   /* registry entry, or NULL when it registers nothing */
} ist_proxy;

typedef struct cache_entry {
    char *key;
    wf_xds_snapshot *snap; /* the translation, and its encodings as streams are pushed */
} cache_entry;

/* ---- files ----------------------------------------------------------------------------------- */

static int has_suffix(const char *s, const char *suf)
{
    size_t l = strlen(s), k = strlen(suf);

    return l >= k && strcmp(s + l - k, suf) == 0;
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The files the loader reads from dir (the same rule: *.yaml and *.yml,
 * not hidden), sorted.  With content set, hashes names and contents into
 * *hash; always hashes names, sizes and mtimes into *fp.  Returns 0, or -1
 * when dir cannot be read. */
static int dir_digest(const char *dir, int content, uint64_t *hash, uint64_t *fp)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL, path[4096];
    size_t n = 0, cap = 0;
    uint64_t h = 0xcbf29ce484222325ULL, f = h;

    if (!d)
        return -1;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' ||
            (!has_suffix(e->d_name, ".yaml") && !has_suffix(e->d_name, ".yml")))
            continue;
        if (n == cap) {
            char **nv = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof(*nv));
            if (!nv)
                break;
            names = nv;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_strp);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        f = fnv(f, names[i], strlen(names[i]) + 1);
        if (stat(path, &st) == 0) {
            int64_t v[4] = {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec,
                            (int64_t)st.st_mtim.tv_nsec, (int64_t)st.st_ino};
            f = fnv(f, v, sizeof(v));
        }
        if (content) {
            FILE *fh = fopen(path, "rb");
            char buf[8192];
            size_t k;
            h = fnv(h, names[i], strlen(names[i]) + 1);
            while (fh && (k = fread(buf, 1, sizeof(buf), fh)) > 0)
                h = fnv(h, buf, k);
            if (fh)
                fclose(fh);
            h = fnv(h, "\0", 1);
        }
        free(names[i]);
    }
    free(names);
    if (hash)
        *hash = h;
    *fp = f;
    return 0;
}

/* ---- translation cache and view -------------------------------------------------------------- */

/*
 * A translation (a tree of some 10^5 JSON values for a thousand services)
 * is made in the JSON region (util/jarena.h) and dropped whole as soon as
 * its snapshot has the bytes.  The snapshots of the view before are kept
 * until the pushes are out (so that the new translations find the
 * resources that did not change encoded already, see
 * wf_xds_snapshot_new), then freed, and the memory the burst used is
 * given back: the region's pages and malloc's free ones.
 */
static void retired_free(wf_istiod *I)
{
    for (size_t i = 0; i < I->n_retired; i++)
        wf_xds_snapshot_unref(I->retired[i]);
    free(I->retired);
    I->retired = NULL;
    I->n_retired = 0;
}

static void settle_cb(uv_timer_t *t)
{
    wf_istiod *I = t->data;

    if (I->xds && wf_xds_server_pushing(I->xds))
        return; /* the next tick (the server stops waiting for stalled clients) */
    uv_timer_stop(t);
    retired_free(I);
    wf_jarena_release();
#ifdef __GLIBC__
    /* Give the pages back: free() leaves them to the arena. */
    malloc_trim(0);
#endif
}

static void settle_later(wf_istiod *I)
{
    if (!uv_is_active((uv_handle_t *)&I->settle_timer))
        uv_timer_start(&I->settle_timer, settle_cb, SETTLE_DELAY_MS, SETTLE_TICK_MS);
}

/* Takes the reference to a snapshot of the view before and drops it later. */
static void retire(wf_istiod *I, wf_xds_snapshot *sn)
{
    wf_xds_snapshot **v;

    if (I->stopping || !sn || !(v = realloc(I->retired, (I->n_retired + 1) * sizeof(*v)))) {
        wf_xds_snapshot_unref(sn);
        return;
    }
    I->retired = v;
    I->retired[I->n_retired++] = sn;
    settle_later(I);
}

static void cache_clear(wf_istiod *I)
{
    for (size_t i = 0; I->cache.e && i < I->cache.cap; i++) {
        cache_entry *ce = I->cache.e[i].key ? I->cache.e[i].value : NULL;
        if (ce) {
            free(ce->key);
            retire(I, ce->snap);
            free(ce);
        }
    }
    wf_map_free(&I->cache);
    wf_map_init(&I->cache);
}

/* ---- the allocation thread ------------------------------------------------------------------ */

/*
 * Translating is done on a thread of its own, though the loop waits for it:
 * glibc gives each thread its own malloc arena, so what a translation
 * allocates besides its JSON (which is in the region, util/jarena.h) --
 * the encoder's many small temporaries, the snapshot's tables -- is not
 * mixed in with the small allocations that live as long as a proxy's
 * connection (stream state, HTTP/2 session).  Mixed, the pages freed
 * temporaries leave stay resident for as long as one connection's
 * allocation is on them: translating on the loop thread, istiod held 2 to
 * 10 MB more with 2000 proxies after six changes (./dev bench, case 6).
 * The thread runs one job at a time while the loop thread is blocked, so
 * the two never touch the same data at the same time.
 */
typedef struct worker {
    uv_thread_t th;
    uv_mutex_t mu;
    uv_cond_t cv;
    int started, quit, busy;
    void (*fn)(void *);
    void *arg;
} worker;

static worker W;

static void worker_main(void *unused)
{
    uv_mutex_lock(&W.mu);
    for (;;) {
        while (!W.busy && !W.quit)
            uv_cond_wait(&W.cv, &W.mu);
        if (W.quit)
            break;
        uv_mutex_unlock(&W.mu);
        W.fn(W.arg);
        uv_mutex_lock(&W.mu);
        W.busy = 0;
        uv_cond_broadcast(&W.cv);
    }
    uv_mutex_unlock(&W.mu);
}

static void worker_start(void)
{
    if (uv_mutex_init(&W.mu) < 0)
        return;
    if (uv_cond_init(&W.cv) < 0) {
        uv_mutex_destroy(&W.mu);
        return;
    }
    if (uv_thread_create(&W.th, worker_main, NULL) < 0) {
        WF_WARN("cannot start the translation thread; translating on the main thread");
        uv_cond_destroy(&W.cv);
        uv_mutex_destroy(&W.mu);
        return;
    }
    W.started = 1;
}

static void worker_stop(void)
{
    if (!W.started)
        return;
    uv_mutex_lock(&W.mu);
    W.quit = 1;
    uv_cond_broadcast(&W.cv);
    uv_mutex_unlock(&W.mu);
    uv_thread_join(&W.th);
    uv_cond_destroy(&W.cv);
    uv_mutex_destroy(&W.mu);
    W.started = 0;
}

/* Runs fn(arg) on the worker thread (here when there is none) and returns
 * when it is done. */
static void on_worker(void (*fn)(void *), void *arg)
{
    if (!W.started) {
        fn(arg);
        return;
    }
    uv_mutex_lock(&W.mu);
    W.fn = fn;
    W.arg = arg;
    W.busy = 1;
    uv_cond_broadcast(&W.cv);
    while (W.busy)
        uv_cond_wait(&W.cv, &W.mu);
    uv_mutex_unlock(&W.mu);
}

typedef struct translate_job {
    const wf_config *cfg;
    const wf_proxy_info *pi;
    wf_xds_snapshot *snap;
    char err[512];
} translate_job;

static void translate_fn(void *arg)
{
    translate_job *j = arg;
    int region = wf_jarena_begin() == 0;
    json_t *bundle = wf_translate(j->cfg, j->pi, j->err, sizeof(j->err));

    if (bundle && !(j->snap = wf_xds_snapshot_new(bundle)))
        snprintf(j->err, sizeof(j->err), "out of memory");
    /* Made whole in the region, the translation goes with it at once. */
    if (!region || !wf_jarena_whole())
        json_decref(bundle);
    if (region)
        wf_jarena_end();
}

/* Makes the view current (the config plus the registry). */
static int ensure_view(wf_istiod *I)
{
    if (!I->view_dirty)
        return 0;
    wf_reg_view_free(&I->view);
    cache_clear(I);
    if (wf_reg_view_build(&I->view, I->cfg, &I->reg) < 0) {
        WF_ERROR("out of memory building the configuration view; will retry at the next change");
        return -1;
    }
    I->view_dirty = 0;
    return 0;
}

static wf_xds_snapshot *resources_hook(wf_xds_conn *c, void *ud, char *err, size_t errlen)
{
    wf_istiod *I = ud;
    ist_proxy *p = wf_xds_conn_data(c);
    cache_entry *ce;
    wf_xds_snapshot *sn;
    translate_job j = {0};

    if (!p) {
        snprintf(err, errlen, "stream has no proxy");
        return NULL;
    }
    if (ensure_view(I) < 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if ((ce = wf_map_get(&I->cache, p->key, strlen(p->key))))
        return wf_xds_snapshot_ref(ce->snap);
    j.cfg = &I->view.cfg;
    j.pi = &p->pi;
    on_worker(translate_fn, &j);
    settle_later(I);
    if (!(sn = j.snap)) {
        snprintf(err, errlen, "%s", j.err);
        return NULL;
    }
    ce = calloc(1, sizeof(*ce));
    if (ce && (ce->key = strdup(p->key)) &&
        wf_map_put(&I->cache, ce->key, strlen(ce->key), ce) == 0) {
        ce->snap = wf_xds_snapshot_ref(sn);
    } else if (ce) {
        free(ce->key);
        free(ce);
    }
    return sn;
}

/* ---- pushes ---------------------------------------------------------------------------------- */

static uint64_t debounce_max(const wf_istiod *I)
{
    uint64_t m = (uint64_t)I->o->debounce_ms * DEBOUNCE_MAX_FACTOR;

    return m < 1000 ? 1000 : m;
}

static void push_cb(uv_timer_t *t)
{
    wf_istiod *I = t->data;

    if (I->stopping)
        return;
    ensure_view(I);
    wf_xds_server_push_all(I->xds, I->push_first);
}

/* Something every proxy may see changed at trigger (uv_now): push after
 * the debounce. */
static void schedule_push(wf_istiod *I, uint64_t trigger)
{
    uint64_t now = uv_now(&I->loop);

    if (I->stopping)
        return;
    if (!uv_is_active((uv_handle_t *)&I->push_timer)) {
        I->push_first = trigger;
    } else if (now - I->push_first >= debounce_max(I)) {
        return; /* already waited long enough: let it fire */
    } else if (trigger < I->push_first) {
        I->push_first = trigger;
    }
    uv_timer_start(&I->push_timer, push_cb, (uint64_t)I->o->debounce_ms, 0);
}

/* ---- configuration --------------------------------------------------------------------------- */

static void errors_free(wf_istiod *I)
{
    for (size_t i = 0; i < I->n_errors; i++)
        free(I->errors[i]);
    free(I->errors);
    I->errors = NULL;
    I->n_errors = 0;
}

/* Loads the config dir.  At start a refusal is fatal (returns -1 after
 * printing it); later it is logged once and the last good config stays. */
static int load_config(wf_istiod *I, int at_start)
{
    const char *dirs[1] = {I->o->config_dir};
    wf_config *cfg = NULL;
    wf_diags diags = {0};
    uint64_t hash = 0, fp = 0;
    char hex[17];

    if (dir_digest(I->o->config_dir, 1, &hash, &fp) == 0)
        I->fingerprint = fp;
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)hash);
    /* Nothing the loader reads changed since the last attempt (an editor's
     * backup file, a touch): nothing to do, and nothing to log again. */
    if (!at_start && strcmp(hex, I->tried) == 0)
        return 0;
    memcpy(I->tried, hex, sizeof(hex));
    if (wf_config_load(dirs, 1, &cfg, &diags) < 0) {
        if (at_start) {
            wf_diags_print(&diags, stderr);
            fprintf(stderr,
                    "weft: istiod: the configuration in %s was refused (%zu problem%s above); fix "
                    "it and start again (weft validate %s)\n",
                    I->o->config_dir, diags.n, diags.n == 1 ? "" : "s", I->o->config_dir);
            wf_diags_free(&diags);
            return -1;
        }
        errors_free(I);
        I->errors = calloc(diags.n ? diags.n : 1, sizeof(*I->errors));
        for (size_t i = 0; I->errors && i < diags.n; i++) {
            char line[2048];
            wf_diag_format(&diags.v[i], line, sizeof(line));
            WF_ERROR("config: %s", line);
            if ((I->errors[I->n_errors] = strdup(line)))
                I->n_errors++;
        }
        if (I->errors && !diags.n && (I->errors[0] = strdup("the configuration was refused")))
            I->n_errors = 1;
        WF_ERROR("config: the change in %s was refused (%zu problem%s above); still serving the "
                 "last good configuration (version %s); fix the file and it is picked up",
                 I->o->config_dir, diags.n, diags.n == 1 ? "" : "s", I->version);
        I->reloads_refused++;
        wf_diags_free(&diags);
        return 0;
    }
    wf_diags_free(&diags);
    if (I->n_errors)
        WF_INFO("config: the problems reported before are fixed");
    errors_free(I);
    wf_config_free(I->cfg);
    I->cfg = cfg;
    memcpy(I->version, hex, sizeof(hex));
    I->loaded_at = (int64_t)time(NULL);
    I->view_dirty = 1;
    if (!at_start)
        I->reloads_ok++;
    WF_INFO("config: %s loaded: %zu resources in %zu files, version %s", I->o->config_dir,
            wf_config_count(cfg), cfg->n_files, I->version);
    return 1;
}

static void reload_cb(uv_timer_t *t)
{
    wf_istiod *I = t->data;
    uint64_t first = I->reload_first;

    if (I->stopping)
        return;
    if (load_config(I, 0) > 0) {
        /* The reload was the debounce: push now, from the first change. */
        if (uv_is_active((uv_handle_t *)&I->push_timer)) {
            uv_timer_stop(&I->push_timer);
            if (I->push_first < first)
                first = I->push_first;
        }
        ensure_view(I);
        wf_xds_server_push_all(I->xds, first);
    }
}

static void schedule_reload(wf_istiod *I)
{
    uint64_t now = uv_now(&I->loop);

    if (I->stopping)
        return;
    if (!uv_is_active((uv_handle_t *)&I->reload_timer))
        I->reload_first = now;
    else if (now - I->reload_first >= debounce_max(I))
        return;
    uv_timer_start(&I->reload_timer, reload_cb, (uint64_t)I->o->debounce_ms, 0);
}

static void fsev_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
    wf_istiod *I = h->data;

    if (status < 0) {
        WF_WARN("config: watching %s failed: %s; falling back to polling every second",
                I->o->config_dir, uv_strerror(status));
        uv_fs_event_stop(h);
        return;
    }
    WF_DEBUG("config: change in %s (%s)", I->o->config_dir, filename ? filename : "?");
    schedule_reload(I);
}

static void poll_cb(uv_timer_t *t)
{
    wf_istiod *I = t->data;
    uint64_t fp;

    if (dir_digest(I->o->config_dir, 0, NULL, &fp) == 0 && fp != I->fingerprint) {
        I->fingerprint = fp;
        schedule_reload(I);
    }
}

/* ---- proxies --------------------------------------------------------------------------------- */

static const char *md_str(const json_t *node, const char *key)
{
    return json_string_value(json_object_get(json_object_get(node, "metadata"), key));
}

static int md_int(const json_t *node, const char *key)
{
    const json_t *v = json_object_get(json_object_get(node, "metadata"), key);

    if (json_is_number(v))
        return (int)json_number_value(v);
    if (json_is_string(v))
        return atoi(json_string_value(v));
    return 0;
}

static void proxy_free(ist_proxy *p)
{
    if (!p)
        return;
    free(p->key);
    free(p->labels);
    free(p);
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const char *const *)a)[0], ((const char *const *)b)[0]);
}

/* What wf_translate needs, from the node. */
static ist_proxy *proxy_from_node(const json_t *node)
{
    ist_proxy *p = calloc(1, sizeof(*p));
    const json_t *labels = json_object_get(json_object_get(node, "metadata"), "LABELS"), *v;
    const char *gen = md_str(node, "GENERATOR"), *ns = md_str(node, "NAMESPACE");
    const char *sa = md_str(node, "SERVICE_ACCOUNT"), *out = md_str(node, "WEFT_OUTBOUND_LISTEN");
    const char *in = md_str(node, "WEFT_INBOUND_LISTEN"), *k;
    const char *id = json_string_value(json_object_get(node, "id"));
    size_t n = 0, len;
    int op = 0, ip = 0;
    char *key;

    if (!p)
        return NULL;
    if (!ns || !*ns) {
        /* Istio's node id: sidecar~ip~pod.ns~ns.svc.cluster.local */
        const char *q = id;
        for (int i = 0; q && i < 3; i++)
            if ((q = strchr(q, '~')))
                q++;
        snprintf(p->ns, sizeof(p->ns), "%.*s", q && *q ? (int)strcspn(q, ".~") : 7,
                 q && *q ? q : "default");
    } else {
        snprintf(p->ns, sizeof(p->ns), "%s", ns);
    }
    snprintf(p->sa, sizeof(p->sa), "%s", sa && *sa ? sa : "default");
    if (!(p->labels = calloc(2 * json_object_size(labels) + 1, sizeof(*p->labels))))
        goto oom;
    json_object_foreach ((json_t *)labels, k, v)
        if (json_is_string(v)) {
            p->labels[2 * n] = k;
            p->labels[2 * n + 1] = json_string_value(v);
            n++;
        }
    /* Sorted, so that the cache key does not depend on the order the
     * client wrote its labels in. */
    qsort(p->labels, n, 2 * sizeof(*p->labels), cmp_label);
    p->labels[2 * n] = NULL;
    if (out && wf_addr_split(out, p->out_host, sizeof(p->out_host), &op) == 0)
        p->pi.outbound_addr = p->out_host, p->pi.outbound_port = op;
    if (in && wf_addr_split(in, p->in_host, sizeof(p->in_host), &ip) == 0)
        p->pi.inbound_addr = p->in_host, p->pi.inbound_port = ip;
    p->pi.role = gen && strcmp(gen, "grpc") == 0 ? "grpc" : "proxy";
    p->pi.no_version = 1; /* the snapshot versions the encoded bytes (xds/server.h) */
    p->pi.namespace_ = p->ns;
    p->pi.service_account = p->sa;
    p->pi.labels = n ? p->labels : NULL;
    p->pi.app_port = md_int(node, "WEFT_APP_PORT");
    p->pi.app_protocol = md_str(node, "WEFT_APP_PROTOCOL");
    if (p->pi.app_protocol && strcmp(p->pi.app_protocol, "http2") != 0 &&
        strcmp(p->pi.app_protocol, "grpc") != 0 && strcmp(p->pi.app_protocol, "tcp") != 0)
        p->pi.app_protocol = NULL; /* HTTP/1.1, the default */
    if (p->pi.app_port < 0 || p->pi.app_port > 65535)
        p->pi.app_port = 0;

    len = strlen(p->pi.role) + strlen(p->ns) + strlen(p->sa) + 128 + 2 * strlen(p->out_host) +
          2 * strlen(p->in_host);
    for (size_t i = 0; i < 2 * n; i++)
        len += strlen(p->labels[i]) + 2;
    if (!(key = p->key = malloc(len)))
        goto oom;
    key += sprintf(key, "%s|%s|%s|%s:%d|%s:%d|%d|%s|", p->pi.role, p->ns, p->sa, p->out_host, op,
                   p->in_host, ip, p->pi.app_port, p->pi.app_protocol ? p->pi.app_protocol : "");
    for (size_t i = 0; i < n; i++)
        key += sprintf(key, "%s=%s,", p->labels[2 * i], p->labels[2 * i + 1]);
    return p;
oom:
    proxy_free(p);
    return NULL;
}

static void expire_cb(uv_timer_t *t);

static void arm_expiry(wf_istiod *I, uint64_t next)
{
    uint64_t now = uv_now(&I->loop);

    if (!next || I->stopping)
        return;
    uv_timer_start(&I->expire_timer, expire_cb, next > now ? next - now : 0, 0);
}

static void expire_cb(uv_timer_t *t)
{
    wf_istiod *I = t->data;
    uint64_t next;
    size_t n = wf_registry_expire(&I->reg, uv_now(&I->loop), &next);

    if (n) {
        WF_INFO("registry: %zu workload%s removed after the %lld ms grace period", n,
                n == 1 ? "" : "s", (long long)I->o->registry_grace_ms);
        I->view_dirty = 1;
        schedule_push(I, uv_now(&I->loop));
    }
    arm_expiry(I, next);
}

/*
 * On the secure port a proxy is believed only as far as its certificate
 * says: the namespace and service account its node claims must be the
 * certificate's, and the services it registers must be in that namespace.
 */
static int check_claims(const ist_proxy *p, const json_t *node, const char *peer_id, char *err,
                        size_t errlen)
{
    wf_spiffe_id id;
    char *e = NULL;
    size_t i;
    const json_t *svc;

    if (wf_spiffe_parse(peer_id, &id, &e) < 0) {
        snprintf(err, errlen, "client certificate identity %s is not a workload's: %s", peer_id,
                 e ? e : "bad SPIFFE ID");
        free(e);
        return -1;
    }
    if (strcmp(id.ns, p->ns) != 0 || strcmp(id.sa, p->sa) != 0) {
        snprintf(err, errlen,
                 "the node claims namespace %s and service account %s, but its certificate is "
                 "%s: start the proxy with --namespace %s --service-account %s",
                 p->ns, p->sa, peer_id, id.ns, id.sa);
        return -1;
    }
    json_array_foreach(json_object_get(json_object_get(node, "metadata"), "WEFT_SERVICES"), i, svc)
    {
        const char *name = json_string_value(json_object_get(svc, "name"));
        const char *dot = name ? strchr(name, '.') : NULL;
        size_t nl = strlen(id.ns);
        if (dot && !(strncmp(dot + 1, id.ns, nl) == 0 && (dot[1 + nl] == 0 || dot[1 + nl] == '.'))) {
            snprintf(err, errlen,
                     "the node registers service %s, outside its certificate's namespace %s (%s)",
                     name, id.ns, peer_id);
            return -1;
        }
    }
    return 0;
}

static int join_hook(wf_xds_conn *c, void *ud, char *err, size_t errlen)
{
    wf_istiod *I = ud;
    const json_t *node = wf_xds_conn_state(c)->node;
    ist_proxy *p = proxy_from_node(node);
    int changed = 0;
    char rerr[512];

    if (!p) {
        snprintf(err, errlen, "istiod is out of memory");
        return -1;
    }
    if (wf_xds_conn_peer_id(c) && check_claims(p, node, wf_xds_conn_peer_id(c), err, errlen) < 0) {
        WF_WARN("ADS %s refused: %s", json_string_value(json_object_get(node, "id")), err);
        I->claims_refused++;
        proxy_free(p);
        return -1;
    }
    if (wf_registry_join(&I->reg, node, &p->reg, &changed, rerr, sizeof(rerr)) < 0) {
        /* Its config is still served; only the registration is refused. */
        WF_WARN("registry: %s does not register: %s",
                json_string_value(json_object_get(node, "id")), rerr);
    } else if (p->reg && changed) {
        WF_INFO("registry: %s is an endpoint %s:%u of %zu service%s", p->reg->id, p->reg->address,
                p->reg->port, p->reg->n_svcs, p->reg->n_svcs == 1 ? "" : "s");
        I->view_dirty = 1;
        schedule_push(I, uv_now(&I->loop));
    }
    wf_xds_conn_set_data(c, p);
    return 0;
}

static void leave_hook(wf_xds_conn *c, void *ud)
{
    wf_istiod *I = ud;
    ist_proxy *p = wf_xds_conn_data(c);

    wf_xds_conn_set_data(c, NULL);
    if (p && p->reg && !I->stopping) {
        wf_registry_leave(&I->reg, p->reg, uv_now(&I->loop));
        /* expire_cb removes what is due and re-arms for the next one. */
        uv_timer_start(&I->expire_timer, expire_cb, 0, 0);
    }
    proxy_free(p);
}

/* ---- identity: the CA and istiod's own certificate ------------------------------------------- */

static int ca_on_call(wf_grpc_call *c, const char *path, void *ud)
{
    wf_istiod *I = ud;

    if (!wf_ca_service_handles(path))
        return WF_GRPC_UNIMPLEMENTED;
    return wf_ca_service_on_call(I->casvc, c, path);
}

static void ca_on_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    wf_istiod *I = ud;

    if (wf_ca_service_owns(I->casvc, c))
        wf_ca_service_on_message(I->casvc, c, msg, len);
}

static void ca_on_half_close(wf_grpc_call *c, void *ud)
{
    wf_istiod *I = ud;

    if (wf_ca_service_owns(I->casvc, c))
        wf_ca_service_on_half_close(I->casvc, c);
    else
        wf_grpc_finish(c, WF_GRPC_OK, NULL);
}

static void ca_on_close(wf_grpc_call *c, void *ud)
{
}

#define ISTIOD_CERT_TTL (24 * 3600)

/* A fresh serving certificate for the secure port (SAN istiod.<rootNamespace>.svc);
 * a new server context for the connections that come next. */
static wf_tls_ctx *istiod_tls(wf_istiod *I, char *err, size_t errlen)
{
    char name[300], *e = NULL;
    wf_tls_ctx *ctx;

    snprintf(name, sizeof(name), "istiod.%s.svc", I->cfg->mesh.root_namespace);
    if (!(ctx = wf_ca_serving_ctx(I->ca, name, ISTIOD_CERT_TTL, NULL, &e)))
        snprintf(err, errlen, "istiod's own certificate: %s", e ? e : "cannot issue");
    free(e);
    return ctx;
}

static void cert_cb(uv_timer_t *t)
{
    wf_istiod *I = t->data;
    char err[600];
    wf_tls_ctx *ctx = istiod_tls(I, err, sizeof(err));

    if (!ctx) {
        WF_ERROR("%s; trying again in a minute", err);
        uv_timer_start(&I->cert_timer, cert_cb, 60000, 0);
        return;
    }
    wf_xds_server_set_tls(I->xds, ctx);
    wf_tls_ctx_unref(I->tls);
    I->tls = ctx;
    uv_timer_start(&I->cert_timer, cert_cb, ISTIOD_CERT_TTL * 1000 / 2, 0);
}

static int start_identity(wf_istiod *I, char *err, size_t errlen)
{
    const wf_istiod_opts *o = I->o;
    wf_grpc_server_handlers other = {.on_call = ca_on_call,
                                     .on_message = ca_on_message,
                                     .on_close = ca_on_close,
                                     .on_half_close = ca_on_half_close,
                                     .ud = I};
    char *e = NULL;

    if (mkdir(o->ca_dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "--ca-dir %s: cannot create it: %s", o->ca_dir, strerror(errno));
        return -1;
    }
    if (wf_ca_load_or_create(o->ca_dir, I->cfg->mesh.trust_domain, &I->ca, &e) < 0) {
        snprintf(err, errlen, "CA (--ca-dir %s): %s", o->ca_dir, e ? e : "cannot load");
        free(e);
        return -1;
    }
    if (!(I->casvc = wf_ca_service_new(I->ca, (long)(o->cert_ttl_ms / 1000),
                                       (long)(o->max_cert_ttl_ms / 1000)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!(I->tls = istiod_tls(I, err, errlen)))
        return -1;
    if (wf_xds_server_listen_tls(I->xds, o->secure_listen, I->tls, &other, err, errlen) < 0)
        return -1;
    uv_timer_start(&I->cert_timer, cert_cb, ISTIOD_CERT_TTL * 1000 / 2, 0);
    return 0;
}

/* ---- run ------------------------------------------------------------------------------------- */

static void stop(wf_istiod *I)
{
    if (I->stopping)
        return;
    I->stopping = 1;
    if (I->fsev_on)
        uv_close((uv_handle_t *)&I->fsev, NULL);
    uv_close((uv_handle_t *)&I->poll, NULL);
    uv_close((uv_handle_t *)&I->reload_timer, NULL);
    uv_close((uv_handle_t *)&I->push_timer, NULL);
    uv_close((uv_handle_t *)&I->expire_timer, NULL);
    uv_close((uv_handle_t *)&I->settle_timer, NULL);
    uv_close((uv_handle_t *)&I->cert_timer, NULL);
    uv_close((uv_handle_t *)&I->sig_term, NULL);
    uv_close((uv_handle_t *)&I->sig_int, NULL);
    wf__istiod_monitor_stop(I);
    wf_xds_server_stop(I->xds);
}

static void on_signal(uv_signal_t *s, int signum)
{
    WF_INFO("received %s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    stop(s->data);
}

int wf_istiod_run(const wf_istiod_opts *o)
{
    static wf_istiod ist;
    wf_istiod *I = &ist;
    wf_xds_hooks hooks = {join_hook, resources_hook, leave_hook, I};
    char err[512];
    int rc = 0, r;

    wf_log_role = "istiod";
    signal(SIGPIPE, SIG_IGN);
#ifdef __GLIBC__
    /* istiod keeps many small long-lived objects per connected proxy and
     * passes large short-lived ones (encodings of hundreds of KB, write
     * buffers, configuration files).  With glibc's default, the threshold for
     * giving a large block its own mapping rises with the blocks freed, so
     * after the first pushes they come from the heap, between the small
     * ones, and their pages stay resident long after they are freed.  A
     * fixed threshold keeps them out of the heap. */
    mallopt(M_MMAP_THRESHOLD, ISTIOD_MMAP_THRESHOLD);
#endif
    memset(I, 0, sizeof(*I));
    I->o = o;
    wf_registry_init(&I->reg, (uint64_t)o->registry_grace_ms);
    wf_map_init(&I->cache);
    if (load_config(I, 1) < 0)
        return 1;
    if (uv_loop_init(&I->loop) < 0) {
        fprintf(stderr, "weft: istiod: cannot create the event loop\n");
        wf_config_free(I->cfg);
        return 1;
    }
    uv_timer_init(&I->loop, &I->poll);
    uv_timer_init(&I->loop, &I->reload_timer);
    uv_timer_init(&I->loop, &I->push_timer);
    uv_timer_init(&I->loop, &I->expire_timer);
    uv_timer_init(&I->loop, &I->settle_timer);
    uv_timer_init(&I->loop, &I->cert_timer);
    I->poll.data = I->reload_timer.data = I->push_timer.data = I->expire_timer.data = I;
    I->cert_timer.data = I->settle_timer.data = I;
    uv_signal_init(&I->loop, &I->sig_term);
    uv_signal_init(&I->loop, &I->sig_int);
    I->sig_term.data = I->sig_int.data = I;
    uv_signal_start(&I->sig_term, on_signal, SIGTERM);
    uv_signal_start(&I->sig_int, on_signal, SIGINT);

    worker_start();
    if (!(I->xds = wf_xds_server_start(&I->loop, o->xds_listen, &hooks, err, sizeof(err)))) {
        fprintf(stderr, "weft: istiod: xDS server (--xds-listen %s): %s\n", o->xds_listen, err);
        rc = 1;
        goto out;
    }
    if (start_identity(I, err, sizeof(err)) < 0) {
        fprintf(stderr, "weft: istiod: secure port (--secure-listen %s): %s\n", o->secure_listen,
                err);
        rc = 1;
        goto out;
    }
    if (wf__istiod_monitor_start(I, o->monitoring, err, sizeof(err)) < 0) {
        fprintf(stderr, "weft: istiod: monitoring (--monitoring %s): %s\n", o->monitoring, err);
        rc = 1;
        goto out;
    }
    /* Proxies that were connected to an earlier run come back one by one;
     * the registry is whole again once each had its grace period to. */
    wf_xds_server_hold(I->xds, uv_now(&I->loop) + (uint64_t)o->registry_grace_ms);
    uv_fs_event_init(&I->loop, &I->fsev);
    I->fsev.data = I;
    I->fsev_on = 1;
    if ((r = uv_fs_event_start(&I->fsev, fsev_cb, o->config_dir, 0)) < 0)
        WF_WARN("config: cannot watch %s (%s); polling it every second instead", o->config_dir,
                uv_strerror(r));
    uv_timer_start(&I->poll, poll_cb, POLL_MS, POLL_MS);
    WF_INFO("istiod %s: xDS (ADS) on %s, xDS over mTLS and the CA on %s (root %s/root-cert.pem), "
            "monitoring on %s, config %s",
            WF_VERSION, o->xds_listen, o->secure_listen, o->ca_dir, o->monitoring, o->config_dir);
    uv_run(&I->loop, UV_RUN_DEFAULT);
    goto done;
out:
    stop(I);
done:
    /* Everything is closed by stop(); whatever a failed start left open
     * is closed here so the loop can be freed. */
    wf_loop_finish(&I->loop);
    worker_stop();
    wf_xds_server_free(I->xds);
    wf_ca_service_free(I->casvc);
    wf_tls_ctx_unref(I->tls);
    wf_ca_free(I->ca);
    cache_clear(I);
    wf_map_free(&I->cache);
    retired_free(I);
    wf_reg_view_free(&I->view);
    wf_registry_free(&I->reg);
    wf_config_free(I->cfg);
    errors_free(I);
    if (!rc)
        WF_INFO("stopped");
    return rc;
}
