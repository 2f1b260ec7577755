/*
 * rate.c: a fixed-rate HTTP/1.1 load generator for ./dev bench (case 2).
 *
 *   rate -r RATE -d SECONDS [-w WARMUP] [-c CONNS] [-H HOST] ADDR:PORT PATH
 *
 * Sends RATE requests per second on CONNS keep-alive connections, open
 * loop: request k is due at start + k/RATE whatever became of the ones
 * before it.  A request that finds every connection busy waits for one, and
 * its latency still counts from when it was due, so a stalled proxy shows
 * up in the percentiles instead of slowing the load down (coordinated
 * omission).  Latency is from the due time to the last byte of the
 * response (Content-Length bodies only).  Requests due during the first
 * WARMUP seconds are sent but not counted.
 *
 * Prints one JSON object: {"rate", "sent", "counted", "p50_us", "p90_us",
 * "p99_us", "p999_us", "max_us"}.  A failed request (connection error,
 * not a 200 with a Content-Length) stops it with exit status 1.
 *
 * One thread, epoll, timeouts with nanosecond resolution (epoll_pwait2), so
 * the generator adds microseconds, not a timer tick, to every figure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define BUF_SIZE 65536

typedef struct conn {
    int fd;
    int busy;     /* a request is out */
    uint64_t due; /* of the request out, ns */
    int counted;  /* its latency is recorded */
    char buf[BUF_SIZE];
    size_t len;
} conn;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "rate: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int connect_to(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0)
        die("socket");
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
        die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Bytes of a complete response at the start of c->buf, 0 when not complete
 * yet, -1 when it is not a 200 with a Content-Length. */
static long response_len(const conn *c)
{
    const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4), *p;
    long head, body = -1;

    if (!end)
        return c->len >= BUF_SIZE ? -1 : 0;
    head = end + 4 - c->buf;
    if (c->len < 12 || memcmp(c->buf + 9, "200", 3) != 0)
        return -1;
    for (p = c->buf; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p += *p == '\n';
        if (strncasecmp(p, "content-length:", 15) == 0)
            body = strtol(p + 15, NULL, 10);
    }
    if (body < 0)
        return -1;
    return (size_t)(head + body) <= c->len ? head + body : 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static uint32_t pct(const uint32_t *v, size_t n, double p)
{
    size_t i = (size_t)(p * (double)n);

    return n ? v[i < n ? i : n - 1] : 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: rate -r RATE -d SECONDS [-w WARMUP] [-c CONNS] [-H HOST] "
                    "ADDR:PORT PATH\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static conn conns[MAX_CONNS];
    double rate = 1000, seconds = 10, warmup = 1;
    int nconns = 16, opt, ep;
    const char *host = "localhost";
    char req[1024], addr[64], *colon;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    size_t reqlen, total, sent = 0, done = 0, counted = 0, waiting = 0;
    uint64_t start, interval, warm_end, waiting_due[4096];
    uint32_t *lat;

    while ((opt = getopt(argc, argv, "r:d:w:c:H:")) != -1) {
        switch (opt) {
        case 'r': rate = atof(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'H': host = optarg; break;
        default: usage();
        }
    }
    if (argc - optind != 2 || rate <= 0 || seconds <= 0 || nconns < 1 || nconns > MAX_CONNS)
        usage();
    snprintf(addr, sizeof(addr), "%s", argv[optind]);
    if (!(colon = strrchr(addr, ':')))
        usage();
    *colon = 0;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        usage();
    reqlen = (size_t)snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                              argv[optind + 1], host);

    total = (size_t)((seconds + warmup) * rate);
    if (!(lat = calloc(total, sizeof(*lat))))
        die("calloc");
    if ((ep = epoll_create1(0)) < 0)
        die("epoll_create1");
    for (int i = 0; i < nconns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};

        conns[i].fd = connect_to(&sa);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }

    interval = (uint64_t)(1e9 / rate);
    start = now_ns();
    warm_end = start + (uint64_t)(warmup * 1e9);
    while (done < total) {
        uint64_t now = now_ns(), next = start + sent * interval;
        struct epoll_event evs[MAX_CONNS];
        struct timespec ts;
        int n;

        /* Due requests: onto an idle connection, else they wait for one. */
        while (sent < total && next <= now) {
            if (waiting >= sizeof(waiting_due) / sizeof(waiting_due[0])) {
                fprintf(stderr, "rate: more than %zu requests waiting: the target cannot "
                                "keep up with %.0f/s\n", waiting, rate);
                goto fail;
            }
            waiting_due[waiting++] = next;
            sent++;
            next = start + sent * interval;
        }
        for (int i = 0; i < nconns && waiting; i++) {
            conn *c = &conns[i];

            if (c->busy)
                continue;
            c->due = waiting_due[0];
            c->counted = c->due >= warm_end;
            memmove(waiting_due, waiting_due + 1, --waiting * sizeof(waiting_due[0]));
            if (write(c->fd, req, reqlen) != (ssize_t)reqlen)
                die("write");
            c->busy = 1;
        }

        now = now_ns();
        if (sent < total && next > now) {
            ts.tv_sec = (time_t)((next - now) / 1000000000u);
            ts.tv_nsec = (long)((next - now) % 1000000000u);
        } else {
            ts.tv_sec = sent < total ? 0 : 5;
            ts.tv_nsec = 0;
        }
        n = epoll_pwait2(ep, evs, MAX_CONNS, &ts, NULL);
        if (n < 0 && errno != EINTR)
            die("epoll_pwait2");
        if (n == 0 && sent >= total) {
            fprintf(stderr, "rate: no answer for 5 s, %zu requests outstanding\n",
                    total - done);
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->len, BUF_SIZE - c->len);
            long len;

            if (r <= 0) {
                fprintf(stderr, "rate: connection %s\n", r == 0 ? "closed by the server" :
                                                                strerror(errno));
                goto fail;
            }
            c->len += (size_t)r;
            while (c->busy && (len = response_len(c)) != 0) {
                uint64_t t = now_ns();

                if (len < 0) {
                    fprintf(stderr, "rate: bad response: %.*s\n", (int)(c->len < 200 ? c->len : 200),
                            c->buf);
                    goto fail;
                }
                if (c->counted)
                    lat[counted++] = (uint32_t)((t - c->due) / 1000);
                done++;
                c->busy = 0;
                c->len -= (size_t)len;
                memmove(c->buf, c->buf + len, c->len);
            }
        }
    }
    qsort(lat, counted, sizeof(*lat), cmp_u32);
    printf("{\"rate\": %.0f, \"sent\": %zu, \"counted\": %zu, \"p50_us\": %u, "
           "\"p90_us\": %u, \"p99_us\": %u, \"p999_us\": %u, \"max_us\": %u}\n",
           rate, sent, counted, pct(lat, counted, 0.50), pct(lat, counted, 0.90),
           pct(lat, counted, 0.99), pct(lat, counted, 0.999), counted ? lat[counted - 1] : 0);
    free(lat);
    return 0;
fail:
    free(lat);
    return 1;
}
