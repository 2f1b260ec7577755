/*
 * xdsload.c: the xDS load tool of ./dev bench case 6 (tests/bench/case6.py):
 * many simulated sidecars on one ADS server, and how long they take to
 * ACK a change.
 *
 *   xdsload [--xds ADDR] [--clients N] [--deployments D] [--namespaces K]
 *           [--ramp R] [--timeout S]
 *
 * Each simulated proxy is one ADS stream on its own connection, made with
 * weft's own gRPC transport (grpc/grpc.h), node builder (wf_xds_node) and
 * request codec, and plays the protocol as the proxy does (xds/client.h):
 * the node in the first request, CDS and LDS as wildcards, EDS with the
 * names of the EDS clusters received, every request with the version and
 * nonce it answers.  Unlike the proxy it keeps no configuration: a response
 * is ACKed as soon as its envelope is read (wf_xds_response_envelope), and
 * the EDS names of a cluster set are worked out once per CDS version and
 * shared by every client that receives it, so that thousands of clients
 * cost the tool a few megabytes and the time measured is the server's.
 *
 * The clients are the pods of D deployments (client i belongs to
 * deployment i % D: app label svcD, namespace benchD%K, service account
 * svcD), with their own names and instance IPs and the listener addresses
 * every pod of a deployment shares, so istiod sees D proxy shapes.  At most
 * R clients are between connecting and their first full config at once.
 *
 * Output on stdout, one line per event (machine-readable):
 *   progress connected=N synced=N         each second until all are synced
 *   connected N                           every stream is open
 *   synced N ms=T                         every client ACKed its first
 *                                         CDS, EDS and LDS, T ms after start
 *   marked types=LDS n=N                  after "mark" on stdin
 *   converged types=LDS n=N done=N p50_ms=.. p99_ms=.. all_ms=.. changed=CDS:a,EDS:b,LDS:c
 * Commands on stdin, one per line:
 *   mark [CDS] [EDS] [LDS]   from now, time until each synced client has
 *                            ACKed a new version of every type named (all
 *                            three when none is): "converged" follows once
 *                            all have, or after the timeout (all_ms=-1)
 *   quit                     (or end of input) ends the streams and exits
 * Problems (refused streams, lost connections) go to stderr.  Times are
 * CLOCK_MONOTONIC (uv_hrtime).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <uv.h>

#include "grpc/grpc.h"
#include "xds/client.h"
#include "xds/codec.h"

#define VLEN 64 /* versions and nonces kept (istiod's are 16 and ~10 bytes) */
#define RETRY_MS 1000

/* The EDS names of one cluster set, shared by the clients that hold it. */
typedef struct names_set {
    char **names;
    size_t n;
    uint8_t *enc; /* resource_names as request bytes (field 3, repeated) */
    size_t enc_len;
    struct names_set *next;
} names_set;

/* A CDS version seen, and its names. */
typedef struct cds_seen {
    char version[VLEN];
    names_set *names;
    struct cds_seen *next;
} cds_seen;

typedef struct load load;

typedef struct sim {
    load *L;
    wf_grpc_call *call;
    unsigned idx;
    unsigned started : 1, open : 1, synced : 1, converged : 1, has_eds : 1;
    uint8_t acked;   /* types ACKed on this stream, bit per WF_XDSC_* */
    uint8_t changed; /* types with a new version since the mark */
    char ver[WF_XDSC_NTYPES][VLEN];
    char nonce[WF_XDSC_NTYPES][VLEN];
    char base[WF_XDSC_NTYPES][VLEN]; /* versions at the mark */
    const names_set *eds;            /* EDS names subscribed */
    uv_timer_t retry;
} sim;

struct load {
    uv_loop_t *loop;
    const char *addr;
    unsigned n, deployments, namespaces, ramp;
    uint64_t timeout_ms;
    sim *sims;
    unsigned next;     /* next client to start */
    unsigned inflight; /* started, not synced */
    unsigned n_open, n_synced, n_lost, n_refused;
    int all_open, all_synced;
    uint64_t t_start;
    uint64_t rx_bytes, rx_msgs;
    names_set *sets;
    cds_seen *cds;
    /* The measurement in progress. */
    int marking;
    uint8_t mask;
    uint64_t t_mark;
    unsigned n_marked, n_conv, changed_n[WF_XDSC_NTYPES];
    uint32_t *conv_ms;
    uv_timer_t tick;
    uv_pipe_t in_pipe;
    uv_tty_t in_tty;
    uv_stream_t *in;
    char line[256];
    size_t line_len;
    int quitting;
};

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

static void start_client(sim *s);

/* ---- requests ---------------------------------------------------------------------------- */

/* Encodes r and appends extra (more fields: protobuf merges them), then
 * queues it on s's stream. */
static void send_request(sim *s, const wf_xds_request *r, const uint8_t *extra, size_t extra_len)
{
    uint8_t *buf = NULL, *all;
    size_t len = 0;

    if (wf_xds_request_encode(r, &buf, &len) < 0) {
        fprintf(stderr, "xdsload: client %u: cannot encode a request\n", s->idx);
        return;
    }
    if (extra_len) {
        if (!(all = realloc(buf, len + extra_len))) {
            free(buf);
            return;
        }
        memcpy(all + len, extra, extra_len);
        buf = all;
        len += extra_len;
    }
    if (wf_grpc_send(s->call, buf, len) < 0)
        fprintf(stderr, "xdsload: client %u: request not sent (stream closing)\n", s->idx);
    free(buf);
}

/* A request for type: version and nonce as held (ACK, or the first one). */
static void request(sim *s, int type, json_t *node)
{
    wf_xds_request r = {.version_info = s->ver[type],
                        .type_url = (char *)wf_xdsc_type_url(type),
                        .response_nonce = s->nonce[type],
                        .node = node};

    if (type == WF_XDSC_EDS)
        send_request(s, &r, s->eds->enc, s->eds->enc_len);
    else
        send_request(s, &r, NULL, 0);
}

/* ---- EDS names per CDS version ---------------------------------------------------------- */

static names_set *names_intern(load *L, char **names, size_t n)
{
    wf_xds_request r = {.resource_names = names, .n_resource_names = n};
    names_set *ns;

    for (ns = L->sets; ns; ns = ns->next) {
        size_t i = 0;
        if (ns->n != n)
            continue;
        while (i < n && strcmp(ns->names[i], names[i]) == 0)
            i++;
        if (i == n) {
            wf_xdsc_names_free(names, n);
            return ns;
        }
    }
    if (!(ns = calloc(1, sizeof(*ns))) || wf_xds_request_encode(&r, &ns->enc, &ns->enc_len) < 0) {
        fprintf(stderr, "xdsload: out of memory\n");
        exit(2);
    }
    ns->names = names;
    ns->n = n;
    ns->next = L->sets;
    L->sets = ns;
    return ns;
}

/* The EDS names of the clusters in a CDS response; decoded once per version. */
static const names_set *cds_names(load *L, const char *version, const uint8_t *msg, size_t len)
{
    wf_xds_response r;
    cds_seen *c;
    char err[1024];
    char **names = NULL;
    long n;

    for (c = L->cds; c; c = c->next)
        if (strcmp(c->version, version) == 0)
            return c->names;
    if (wf_xds_response_decode(msg, len, &r, err, sizeof(err)) < 0) {
        fprintf(stderr, "xdsload: cannot decode CDS version %s: %s\n", version, err);
        return NULL;
    }
    n = wf_xdsc_eds_names(r.resources, &names);
    wf_xds_response_free(&r);
    if (n < 0 || !(c = calloc(1, sizeof(*c)))) {
        fprintf(stderr, "xdsload: out of memory\n");
        exit(2);
    }
    snprintf(c->version, sizeof(c->version), "%s", version);
    c->names = names_intern(L, names, (size_t)n);
    c->next = L->cds;
    L->cds = c;
    return c->names;
}

/* ---- measurement -------------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void type_list(uint8_t mask, char *buf, size_t len)
{
    buf[0] = 0;
    for (int t = 0; t < WF_XDSC_NTYPES; t++)
        if (mask & (1u << t))
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? "," : "",
                     wf_xdsc_type_name(t));
}

static void report(load *L, int timed_out)
{
    char types[32];
    unsigned n = L->n_conv, k99 = (L->n_marked * 99 + 99) / 100;
    double p50 = -1, p99 = -1, all = -1;

    qsort(L->conv_ms, n, sizeof(*L->conv_ms), cmp_u32);
    if (n && n >= (L->n_marked + 1) / 2)
        p50 = L->conv_ms[(L->n_marked + 1) / 2 - 1] / 1000.0;
    if (n && n >= k99)
        p99 = L->conv_ms[k99 - 1] / 1000.0;
    if (!timed_out && n)
        all = L->conv_ms[n - 1] / 1000.0;
    type_list(L->mask, types, sizeof(types));
    printf("converged types=%s n=%u done=%u p50_ms=%.1f p99_ms=%.1f all_ms=%.1f "
           "changed=CDS:%u,EDS:%u,LDS:%u%s\n",
           types, L->n_marked, n, p50, p99, all, L->changed_n[WF_XDSC_CDS],
           L->changed_n[WF_XDSC_EDS], L->changed_n[WF_XDSC_LDS], timed_out ? " timeout" : "");
    L->marking = 0;
}

static void mark(load *L, uint8_t mask)
{
    char types[32];

    L->marking = 1;
    L->mask = mask;
    L->n_marked = L->n_conv = 0;
    memset(L->changed_n, 0, sizeof(L->changed_n));
    for (unsigned i = 0; i < L->n; i++) {
        sim *s = &L->sims[i];
        s->changed = 0;
        s->converged = !s->synced; /* only synced clients are measured */
        L->n_marked += s->synced;
        memcpy(s->base, s->ver, sizeof(s->base));
    }
    L->t_mark = now_ns();
    type_list(mask, types, sizeof(types));
    printf("marked types=%s n=%u\n", types, L->n_marked);
    if (!L->n_marked)
        report(L, 0);
}

/* s ACKed version of type, received now. */
static void note_ack(sim *s, int type)
{
    load *L = s->L;

    if (!L->marking || (s->changed & (1u << type)) || strcmp(s->ver[type], s->base[type]) == 0)
        return;
    s->changed |= (uint8_t)(1u << type);
    L->changed_n[type]++;
    if (s->converged || (s->changed & L->mask) != L->mask)
        return;
    s->converged = 1;
    L->conv_ms[L->n_conv++] = (uint32_t)((now_ns() - L->t_mark) / 1000);
    if (L->n_conv == L->n_marked)
        report(L, 0);
}

/* ---- streams ------------------------------------------------------------------------------ */

static void check_synced(sim *s)
{
    load *L = s->L;
    uint8_t need = 1u << WF_XDSC_CDS | 1u << WF_XDSC_LDS;

    if (s->synced || !s->eds)
        return;
    if (s->eds->n)
        need |= 1u << WF_XDSC_EDS;
    if ((s->acked & need) != need)
        return;
    s->synced = 1;
    L->n_synced++;
    L->inflight--;
    while (L->next < L->n && L->inflight < L->ramp)
        start_client(&L->sims[L->next++]);
    if (L->n_synced == L->n && !L->all_synced) {
        L->all_synced = 1;
        printf("synced %u ms=%.0f\n", L->n, ms_since(L->t_start));
    }
}

static json_t *make_node(load *L, unsigned i)
{
    unsigned d = i % L->deployments;
    char app[32], ns[32], name[48], ip[32], err[256];
    json_t *labels, *node;
    wf_xds_node_info ni = {0};

    snprintf(app, sizeof(app), "svc%u", d);
    snprintf(ns, sizeof(ns), "bench%u", d % L->namespaces);
    snprintf(name, sizeof(name), "svc%u-%05u", d, i);
    snprintf(ip, sizeof(ip), "10.%u.%u.%u", 100 + i / 62500, i / 250 % 250, 1 + i % 250);
    labels = json_pack("{s:s, s:s}", "app", app, "version", "v1");
    ni.namespace_ = ns;
    ni.service_account = app;
    ni.labels = labels;
    ni.name = name;
    ni.instance_ips = ip;
    ni.outbound = "127.0.0.1:15001";
    ni.inbound = ":15006";
    ni.app_port = 8080;
    node = wf_xds_node(&ni, err, sizeof(err));
    json_decref(labels);
    if (!node) {
        fprintf(stderr, "xdsload: node of client %u: %s\n", i, err);
        exit(2);
    }
    return node;
}

static void on_open(wf_grpc_call *call, void *ud)
{
    sim *s = ud;
    load *L = s->L;
    json_t *node = make_node(L, s->idx);

    s->open = 1;
    L->n_open++;
    /* As the proxy subscribes: CDS with the node, then LDS; EDS once the
     * clusters are known. */
    request(s, WF_XDSC_CDS, node);
    request(s, WF_XDSC_LDS, NULL);
    json_decref(node);
    if (L->n_open == L->n && !L->all_open) {
        L->all_open = 1;
        printf("connected %u\n", L->n);
    }
}

static void on_message(wf_grpc_call *call, const uint8_t *msg, size_t len, void *ud)
{
    sim *s = ud;
    load *L = s->L;
    wf_xds_envelope env;
    char url[160];
    int type;

    L->rx_bytes += len;
    L->rx_msgs++;
    if (wf_xds_response_envelope(msg, len, &env) < 0 || env.type_url_len >= sizeof(url) ||
        env.version_len >= VLEN || env.nonce_len >= VLEN) {
        fprintf(stderr, "xdsload: client %u: not a DiscoveryResponse this tool can read\n", s->idx);
        wf_grpc_cancel(call);
        return;
    }
    memcpy(url, env.type_url, env.type_url_len);
    url[env.type_url_len] = 0;
    if ((type = wf_xdsc_type_of(url)) < 0) {
        fprintf(stderr, "xdsload: client %u: response of type %s, never asked for\n", s->idx, url);
        return;
    }
    memcpy(s->ver[type], env.version_info, env.version_len);
    s->ver[type][env.version_len] = 0;
    memcpy(s->nonce[type], env.nonce, env.nonce_len);
    s->nonce[type][env.nonce_len] = 0;
    if (type == WF_XDSC_CDS) {
        const names_set *ns = cds_names(L, s->ver[type], msg, len);
        request(s, WF_XDSC_CDS, NULL);
        if (ns && ns != s->eds) {
            /* New names: subscribe them, answering the last EDS response
             * (none at first). */
            s->eds = ns;
            if (ns->n || s->has_eds) {
                s->has_eds = 1;
                request(s, WF_XDSC_EDS, NULL);
            }
        }
    } else {
        if (type == WF_XDSC_EDS && !s->eds)
            return; /* never asked */
        request(s, type, NULL);
    }
    s->acked |= (uint8_t)(1u << type);
    note_ack(s, type);
    check_synced(s);
}

static void retry_cb(uv_timer_t *t)
{
    start_client(t->data);
}

static void on_close(wf_grpc_call *call, int status, const char *message, void *ud)
{
    sim *s = ud;
    load *L = s->L;

    s->call = NULL;
    if (s->open)
        L->n_open--;
    s->open = 0;
    if (L->quitting)
        return;
    if (s->synced) {
        /* A measured client went away: count it and bring it back. */
        L->n_lost++;
        s->synced = 0;
        L->n_synced--;
        L->inflight++;
        if (L->marking && !s->converged) {
            s->converged = 1;
            L->n_marked--;
        }
    } else {
        L->n_refused++;
    }
    fprintf(stderr,
            "xdsload: client %u: stream ended (gRPC status %d: %s); reconnecting in %d ms\n",
            s->idx, status, message ? message : "", RETRY_MS);
    memset(s->ver, 0, sizeof(s->ver));
    memset(s->nonce, 0, sizeof(s->nonce));
    s->acked = 0;
    s->eds = NULL;
    s->has_eds = 0;
    uv_timer_start(&s->retry, retry_cb, RETRY_MS, 0);
}

static void start_client(sim *s)
{
    static const wf_grpc_client_handlers h0 = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close};
    wf_grpc_client_handlers h = h0;
    load *L = s->L;
    char err[256];

    if (L->quitting)
        return;
    if (!s->started) {
        s->started = 1;
        L->inflight++;
    }
    h.ud = s;
    if (!(s->call =
              wf_grpc_client_call(L->loop, L->addr, WF_ADS_METHOD, NULL, &h, err, sizeof(err)))) {
        fprintf(stderr, "xdsload: %s\n", err);
        exit(2);
    }
}

/* ---- control ------------------------------------------------------------------------------ */

static void quit(load *L)
{
    if (L->quitting)
        return;
    L->quitting = 1;
    uv_timer_stop(&L->tick);
    uv_close((uv_handle_t *)&L->tick, NULL);
    uv_read_stop(L->in);
    uv_close((uv_handle_t *)L->in, NULL);
    for (unsigned i = 0; i < L->n; i++) {
        uv_timer_stop(&L->sims[i].retry);
        uv_close((uv_handle_t *)&L->sims[i].retry, NULL);
        if (L->sims[i].call)
            wf_grpc_cancel(L->sims[i].call);
    }
}

static void command(load *L, char *line)
{
    char *save = NULL, *w = strtok_r(line, " \t\r", &save);
    uint8_t mask = 0;

    if (!w)
        return;
    if (strcmp(w, "quit") == 0) {
        quit(L);
    } else if (strcmp(w, "mark") == 0) {
        while ((w = strtok_r(NULL, " \t\r", &save))) {
            int t;
            for (t = 0; t < WF_XDSC_NTYPES && strcasecmp(w, wf_xdsc_type_name(t)) != 0; t++)
                ;
            if (t == WF_XDSC_NTYPES) {
                fprintf(stderr, "xdsload: mark: unknown type %s (CDS, EDS or LDS)\n", w);
                return;
            }
            mask |= (uint8_t)(1u << t);
        }
        mark(L, mask ? mask : (1u << WF_XDSC_NTYPES) - 1);
    } else if (strcmp(w, "stats") == 0) {
        printf("stats connected=%u synced=%u lost=%u refused=%u rx_msgs=%" PRIu64
               " rx_bytes=%" PRIu64 "\n",
               L->n_open, L->n_synced, L->n_lost, L->n_refused, L->rx_msgs, L->rx_bytes);
    } else {
        fprintf(stderr, "xdsload: unknown command %s (mark [TYPES], stats, quit)\n", w);
    }
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[4096];

    b->base = buf;
    b->len = sizeof(buf);
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    load *L = st->data;

    if (n < 0) {
        quit(L);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (b->base[i] != '\n') {
            if (L->line_len < sizeof(L->line) - 1)
                L->line[L->line_len++] = b->base[i];
            continue;
        }
        L->line[L->line_len] = 0;
        L->line_len = 0;
        command(L, L->line);
        if (L->quitting)
            return;
    }
}

static void tick_cb(uv_timer_t *t)
{
    load *L = t->data;

    if (!L->all_synced)
        printf("progress connected=%u synced=%u\n", L->n_open, L->n_synced);
    if (L->marking && now_ns() - L->t_mark > L->timeout_ms * 1000000u)
        report(L, 1);
}

static void raise_nofile(unsigned want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (rl.rlim_max < want) {
        struct rlimit up = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return;
    }
    setrlimit(RLIMIT_NOFILE, &rl);
}

static unsigned uarg(const char *flag, const char *v, unsigned lo, unsigned hi)
{
    char *end;
    unsigned long x = v ? strtoul(v, &end, 10) : 0;

    if (!v || *end || x < lo || x > hi) {
        fprintf(stderr, "xdsload: %s wants a number in %u..%u\n", flag, lo, hi);
        exit(2);
    }
    return (unsigned)x;
}

static void usage(void)
{
    fprintf(stderr, "usage: xdsload [--xds ADDR] [--clients N] [--deployments D] "
                    "[--namespaces K] [--ramp R] [--timeout SECONDS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static load ld;
    load *L = &ld;
    uv_loop_t loop;
    struct rlimit rl;

    L->addr = "127.0.0.1:15010";
    L->n = 2000;
    L->deployments = 10;
    L->namespaces = 10;
    L->ramp = 200;
    L->timeout_ms = 60000;
    for (int i = 1; i < argc; i += 2) { /* --flag value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--xds") == 0 && v)
            L->addr = v;
        else if (strcmp(a, "--clients") == 0)
            L->n = uarg(a, v, 1, 1000000);
        else if (strcmp(a, "--deployments") == 0)
            L->deployments = uarg(a, v, 1, 100000);
        else if (strcmp(a, "--namespaces") == 0)
            L->namespaces = uarg(a, v, 1, 100000);
        else if (strcmp(a, "--ramp") == 0)
            L->ramp = uarg(a, v, 1, 1000000);
        else if (strcmp(a, "--timeout") == 0)
            L->timeout_ms = 1000ull * uarg(a, v, 1, 86400);
        else
            usage();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    /* A connection is a descriptor; leave room for the rest. */
    raise_nofile(L->n + 64);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < L->n + 16) {
        fprintf(stderr,
                "xdsload: %u clients need %u file descriptors, but the limit is %llu (raise it "
                "with ulimit -n, or run as root)\n",
                L->n, L->n + 16, (unsigned long long)rl.rlim_cur);
        return 2;
    }
    if (!(L->sims = calloc(L->n, sizeof(*L->sims))) ||
        !(L->conv_ms = calloc(L->n, sizeof(*L->conv_ms)))) {
        fprintf(stderr, "xdsload: out of memory\n");
        return 2;
    }
    uv_loop_init(&loop);
    L->loop = &loop;
    for (unsigned i = 0; i < L->n; i++) {
        L->sims[i].L = L;
        L->sims[i].idx = i;
        uv_timer_init(&loop, &L->sims[i].retry);
        L->sims[i].retry.data = &L->sims[i];
    }
    if (uv_guess_handle(0) == UV_TTY) {
        uv_tty_init(&loop, &L->in_tty, 0, 1);
        L->in = (uv_stream_t *)&L->in_tty;
    } else {
        uv_pipe_init(&loop, &L->in_pipe, 0);
        if (uv_pipe_open(&L->in_pipe, 0) < 0) {
            fprintf(stderr, "xdsload: stdin must be a pipe or a terminal\n");
            return 2;
        }
        L->in = (uv_stream_t *)&L->in_pipe;
    }
    L->in->data = L;
    uv_read_start(L->in, alloc_cb, read_cb);
    uv_timer_init(&loop, &L->tick);
    L->tick.data = L;
    uv_timer_start(&L->tick, tick_cb, 1000, 1000);
    L->t_start = now_ns();
    while (L->next < L->n && L->inflight < L->ramp)
        start_client(&L->sims[L->next++]);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    for (names_set *ns = L->sets, *nx; ns; ns = nx) {
        nx = ns->next;
        wf_xdsc_names_free(ns->names, ns->n);
        free(ns->enc);
        free(ns);
    }
    for (cds_seen *c = L->cds, *nx; c; c = nx) {
        nx = c->next;
        free(c);
    }
    free(L->sims);
    free(L->conv_ms);
    return L->n_lost ? 1 : 0;
}
