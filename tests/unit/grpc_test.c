/*
 * grpc_test.c: the gRPC transport (core/grpc) end to end on one libuv loop:
 * a server and clients on 127.0.0.1, plus raw sockets playing broken or
 * slow peers.
 *
 * Extra modes serve the interop tests (tests/integration/
 * test_grpc_transport.py, test_grpc_tls.py), which drive them with
 * python3-grpcio:
 *   grpc_test --serve PORT     echo server (PORT 0: any); prints
 *                              "serving 127.0.0.1:PORT", stops on SIGTERM
 *   grpc_test --serve-tls PORT DIR
 *                              the same over TLS with DIR/cert-chain.pem,
 *                              DIR/key.pem and DIR/root-cert.pem; client
 *                              certificates optional; /weft.test.Echo/PeerId
 *                              answers the client's verified identity
 *   grpc_test --client ADDR PATH N SIZE [HEADER=VALUE]
 *                              one call: N messages of SIZE bytes, then
 *                              half-close; prints what came back
 *   grpc_test --client-tls DIR NAME ADDR PATH N SIZE
 *                              the same over TLS with DIR's files as the
 *                              client's, verifying the server's NAME
 *                              (a DNS name, or a URI SAN when it has "://")
 * Set WEFT_LOG=debug to see every frame.
 */
#include "grpc/grpc.h"
#include "grpc/testing.h"

#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "test.h"
#include "util/file.h"
#include "util/log.h"

static uv_loop_t *loop;
static uv_timer_t deadline;
static int timed_out;

static void on_deadline(uv_timer_t *t)
{
    timed_out = 1;
}

/* Runs the loop until *flag becomes true or 10 s pass; returns *flag. */
static int run_until(const int *flag)
{
    timed_out = 0;
    uv_timer_start(&deadline, on_deadline, 10000, 0);
    while (!*flag && !timed_out)
        uv_run(loop, UV_RUN_ONCE);
    uv_timer_stop(&deadline);
    return *flag;
}

/* Runs the loop until *counter reaches want or 10 s pass. */
static void wait_count(const int *counter, int want)
{
    timed_out = 0;
    uv_timer_start(&deadline, on_deadline, 10000, 0);
    while (*counter < want && !timed_out)
        uv_run(loop, UV_RUN_ONCE);
    uv_timer_stop(&deadline);
}

#define wait_server_closes(n) wait_count(&S.closes, (n))

/* Message i of a test stream: its size and byte pattern. */
static size_t msg_size(int i)
{
    return i % 10 == 9 ? 70000 + (size_t)i : (size_t)(i * 37 % 2000);
}

static void fill(uint8_t *b, size_t n, int i)
{
    for (size_t j = 0; j < n; j++)
        b[j] = (uint8_t)(i * 7 + j * 13);
}

static int check_fill(const uint8_t *b, size_t n, int i)
{
    for (size_t j = 0; j < n; j++)
        if (b[j] != (uint8_t)(i * 7 + j * 13))
            return 0;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* test server: behaviour chosen by the method name */

enum { S_ECHO, S_FAIL, S_HOLD, S_CANCEL, S_FLOOD, S_STOP, S_META, S_COUNT, S_PEER };

typedef struct scall {
    int kind;
    int n;
} scall;

static struct {
    int calls, open, closes, messages, half_closes;
    wf_grpc_call *last;
    wf_grpc_server *stop_me; /* S_STOP stops this server from on_message */
    char ua[64], xtest[64], authority[64];
} S;

static int kind_of(const char *path)
{
    const char *m = strrchr(path, '/');

    if (!m || strncmp(path, "/weft.test.Echo/", 16) != 0)
        return -1;
    m++;
    return strcmp(m, "Bidi") == 0       ? S_ECHO
           : strcmp(m, "Fail") == 0     ? S_FAIL
           : strcmp(m, "Hold") == 0     ? S_HOLD
           : strcmp(m, "CancelMe") == 0 ? S_CANCEL
           : strcmp(m, "Flood") == 0    ? S_FLOOD
           : strcmp(m, "Stop") == 0     ? S_STOP
           : strcmp(m, "Meta") == 0     ? S_META
           : strcmp(m, "Count") == 0    ? S_COUNT
           : strcmp(m, "PeerId") == 0   ? S_PEER
           : strcmp(m, "Refuse") == 0   ? 100
                                        : -1;
}

static int s_on_call(wf_grpc_call *c, const char *path, void *ud)
{
    int k = kind_of(path);
    scall *sc;
    const char *h;

    S.calls++;
    if (k < 0)
        return WF_GRPC_UNIMPLEMENTED;
    if (k == 100) {
        wf_grpc_finish(c, WF_GRPC_PERMISSION_DENIED, "go away: \xc3\xbc 100%\n");
        return WF_GRPC_PERMISSION_DENIED;
    }
    if (!(sc = calloc(1, sizeof(*sc))))
        return WF_GRPC_INTERNAL;
    sc->kind = k;
    wf_grpc_set_data(c, sc);
    S.open++;
    S.last = c;
    if ((h = wf_grpc_header(c, "user-agent")))
        snprintf(S.ua, sizeof(S.ua), "%s", h);
    if ((h = wf_grpc_header(c, "x-test")))
        snprintf(S.xtest, sizeof(S.xtest), "%s", h);
    if ((h = wf_grpc_header(c, ":authority")))
        snprintf(S.authority, sizeof(S.authority), "%s", h);
    if (k == S_FLOOD) {
        /* Far more than the peer's window: it stays queued here. */
        static uint8_t mb[1 << 20];
        for (int i = 0; i < 8; i++)
            wf_grpc_send(c, mb, sizeof(mb));
    }
    return WF_GRPC_OK;
}

static void s_on_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    scall *sc = wf_grpc_data(c);

    S.messages++;
    sc->n++;
    switch (sc->kind) {
    case S_ECHO:
        wf_grpc_send(c, msg, len);
        break;
    case S_FAIL:
        wf_grpc_finish(c, 9, "nope %");
        break;
    case S_CANCEL:
        wf_grpc_cancel(c);
        break;
    case S_STOP:
        wf_grpc_send(c, msg, len);
        wf_grpc_server_stop(S.stop_me);
        break;
    case S_META: {
        const char *ua = wf_grpc_header(c, "user-agent"), *x = wf_grpc_header(c, "x-test");
        wf_grpc_send(c, (const uint8_t *)(ua ? ua : ""), ua ? strlen(ua) : 0);
        wf_grpc_send(c, (const uint8_t *)(x ? x : ""), x ? strlen(x) : 0);
        break;
    }
    case S_PEER: {
        const char *id = wf_grpc_peer_id(c);
        id = id ? id : "(none)";
        wf_grpc_send(c, (const uint8_t *)id, strlen(id));
        break;
    }
    default:
        break;
    }
}

static void s_on_close(wf_grpc_call *c, void *ud)
{
    S.closes++;
    S.open--;
    if (S.last == c)
        S.last = NULL;
    free(wf_grpc_data(c));
}

/* Used by the second server only: answers after the client half-closes. */
static void s_on_half_close(wf_grpc_call *c, void *ud)
{
    scall *sc = wf_grpc_data(c);
    char b[32];
    int n = snprintf(b, sizeof(b), "%d", sc->n);

    S.half_closes++;
    wf_grpc_send(c, (const uint8_t *)b, (size_t)n);
    wf_grpc_finish(c, WF_GRPC_OK, "counted");
}

static const wf_grpc_server_handlers server_h = {
    .on_call = s_on_call, .on_message = s_on_message, .on_close = s_on_close};

static wf_grpc_server *srv;
static char srv_addr[64];

static wf_grpc_server *start_server(const wf_grpc_server_handlers *h, char *addr, size_t alen)
{
    char err[256];
    wf_grpc_server *s = wf_grpc_server_start(loop, "127.0.0.1:0", h, err, sizeof(err));

    if (!s) {
        fprintf(stderr, "server: %s\n", err);
        exit(1);
    }
    snprintf(addr, alen, "127.0.0.1:%d", wf_grpc_server_port(s));
    return s;
}

/* ---------------------------------------------------------------------- */
/* test client */

typedef struct cstate {
    wf_grpc_call *c;
    int opened, closed, status, msgs, bad, nsend, cancel_after, finish_on_open, send_on_open;
    size_t bytes, big;
    char message[256];
    char first[128];
} cstate;

static void c_on_open(wf_grpc_call *c, void *ud)
{
    cstate *st = ud;

    st->opened = 1;
    if (st->send_on_open) {
        for (int i = 0; i < st->nsend; i++) {
            size_t n = msg_size(i);
            uint8_t *b = malloc(n + 1);
            fill(b, n, i);
            CHECK_INT(wf_grpc_send(c, b, n), 0);
            free(b);
        }
        if (st->finish_on_open)
            wf_grpc_finish(c, 0, NULL);
    }
}

static void c_on_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    cstate *st = ud;

    if (st->big) {
        if (len != st->big || !check_fill(msg, len, st->msgs))
            st->bad++;
    } else if (st->nsend) {
        if (len != msg_size(st->msgs) || !check_fill(msg, len, st->msgs))
            st->bad++;
    }
    if (st->msgs == 0)
        snprintf(st->first, sizeof(st->first), "%.*s", (int)(len < 127 ? len : 127),
                 (const char *)msg);
    st->msgs++;
    st->bytes += len;
    if (st->cancel_after && st->msgs == st->cancel_after)
        wf_grpc_cancel(c);
}

static void c_on_close(wf_grpc_call *c, int status, const char *message, void *ud)
{
    cstate *st = ud;

    st->closed++;
    st->status = status;
    snprintf(st->message, sizeof(st->message), "%s", message ? message : "(null)");
    st->c = NULL;
}

static const wf_grpc_client_handlers client_h = {
    .on_open = c_on_open, .on_message = c_on_message, .on_close = c_on_close};

static wf_grpc_call *call(cstate *st, const char *addr, const char *path)
{
    char err[256];
    wf_grpc_client_handlers h = client_h;

    h.ud = st;
    st->c = wf_grpc_client_call(loop, addr, path, NULL, &h, err, sizeof(err));
    if (!st->c)
        fprintf(stderr, "client: %s\n", err);
    return st->c;
}

static void send_one(wf_grpc_call *c, const char *s)
{
    CHECK_INT(wf_grpc_send(c, (const uint8_t *)s, strlen(s)), 0);
}

/* ---------------------------------------------------------------------- */
/* raw TCP peers */

typedef struct raw {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    uint8_t *out;
    size_t outlen;
    int do_read, connected, eof, closed;
    size_t got;
    char rbuf[65536];
} raw;

static void raw_closed(uv_handle_t *h)
{
    raw *r = h->data;

    r->closed = 1;
}

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    raw *r = h->data;

    *b = uv_buf_init(r->rbuf, sizeof(r->rbuf));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    raw *r = s->data;

    if (n < 0) {
        r->eof = 1;
        uv_read_stop(s);
    } else {
        r->got += (size_t)n;
    }
}

static void raw_written(uv_write_t *w, int status)
{
}

static void raw_connected(uv_connect_t *req, int status)
{
    raw *r = req->data;
    uv_buf_t b = uv_buf_init((char *)r->out, (unsigned)r->outlen);

    r->connected = status == 0 ? 1 : -1;
    if (status < 0)
        return;
    if (r->outlen)
        uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
    if (r->do_read)
        uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}

/* Connects to port and writes out (taken over) once connected. */
static raw *raw_start(int port, uint8_t *out, size_t outlen, int do_read)
{
    raw *r = calloc(1, sizeof(*r));
    struct sockaddr_in sa;

    r->out = out;
    r->outlen = outlen;
    r->do_read = do_read;
    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_tcp_init(loop, &r->tcp);
    r->tcp.data = r->conn.data = r;
    uv_tcp_connect(&r->conn, &r->tcp, (struct sockaddr *)&sa, raw_connected);
    return r;
}

static void raw_free(raw *r)
{
    uv_close((uv_handle_t *)&r->tcp, raw_closed);
    run_until(&r->closed);
    free(r->out);
    free(r);
}

/* The bytes an HTTP/2 client sends to open a call to path with END_STREAM
 * and default SETTINGS (a 64 KiB window), made with nghttp2 itself. */
static uint8_t *h2_request_bytes(const char *path, size_t *len)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session *ng;
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)":authority", (uint8_t *)"raw", 10, 3, 0},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
    };
    uint8_t *out = NULL;
    const uint8_t *p;
    ssize_t n;

    *len = 0;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_client_new(&ng, cbs, NULL);
    nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, NULL, 0);
    nghttp2_submit_request(ng, NULL, nv, sizeof(nv) / sizeof(nv[0]), NULL, NULL);
    while ((n = nghttp2_session_mem_send(ng, &p)) > 0) {
        out = realloc(out, *len + (size_t)n);
        memcpy(out + *len, p, (size_t)n);
        *len += (size_t)n;
    }
    nghttp2_session_del(ng);
    nghttp2_session_callbacks_del(cbs);
    return out;
}

static int port_of(const char *addr)
{
    return atoi(strrchr(addr, ':') + 1);
}

/* ---------------------------------------------------------------------- */
/* tests */

TEST(unary_like_exchange)
{
    cstate st = {0};
    int closes = S.closes;

    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf_grpc_add_header(st.c, "x-test", "hello header"), 0);
    CHECK_INT(wf_grpc_add_header(st.c, "X-Upper", "no"), -1);
    CHECK_INT(wf_grpc_add_header(st.c, ":path", "/no"), -1);
    CHECK_INT(wf_grpc_add_header(st.c, "x-crlf", "a\r\nb: c"), -1);
    send_one(st.c, "hello");
    CHECK_INT(wf_grpc_queued(st.c), 10);
    wf_grpc_finish(st.c, 0, NULL);
    CHECK_INT(wf_grpc_send(st.c, (const uint8_t *)"late", 4), -1);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.closed, 1);
    CHECK(st.opened);
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_STR(st.message, "");
    CHECK_INT(st.msgs, 1);
    CHECK_STR(st.first, "hello");
    CHECK_STR(S.ua, "weft/" WF_VERSION);
    CHECK_STR(S.xtest, "hello header");
    CHECK_STR(S.authority, srv_addr);
    wait_server_closes(closes + 1);
    CHECK_INT(S.closes, closes + 1);
}

TEST(empty_message_and_server_headers)
{
    cstate st = {0};

    CHECK(call(&st, srv_addr, "/weft.test.Echo/Meta") != NULL);
    CHECK_INT(wf_grpc_add_header(st.c, "x-test", "v1"), 0);
    CHECK_INT(wf_grpc_send(st.c, NULL, 0), 0);
    wf_grpc_finish(st.c, 0, NULL);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_INT(st.msgs, 2);
    CHECK_STR(st.first, "weft/" WF_VERSION);
}

TEST(bidi_1000_messages)
{
    cstate st = {.nsend = 1000, .send_on_open = 1, .finish_on_open = 1};
    int before = S.messages;

    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_INT(st.msgs, 1000);
    CHECK_INT(st.bad, 0);
    CHECK_INT(S.messages - before, 1000);
}

TEST(queued_before_connect_and_ping_pong)
{
    /* Messages sent before the connection is up are queued, counted and
     * delivered in order. */
    cstate st = {.nsend = 200};

    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    size_t want = 0;
    for (int i = 0; i < 200; i++) {
        size_t n = msg_size(i);
        uint8_t *b = malloc(n + 1);
        fill(b, n, i);
        CHECK_INT(wf_grpc_send(st.c, b, n), 0);
        want += n + 5;
        free(b);
    }
    CHECK_INT(wf_grpc_queued(st.c), want);
    wf_grpc_finish(st.c, 0, NULL);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_INT(st.msgs, 200);
    CHECK_INT(st.bad, 0);
}

static void big_test(size_t size)
{
    cstate st = {.big = size};
    uint8_t *b = malloc(size);

    fill(b, size, 0);
    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf_grpc_send(st.c, b, size), 0);
    fill(b, size, 1);
    CHECK_INT(wf_grpc_send(st.c, b, size), 0);
    wf_grpc_finish(st.c, 0, NULL);
    free(b);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_INT(st.msgs, 2);
    CHECK_INT(st.bad, 0);
    CHECK_INT(st.bytes, 2 * size);
}

TEST(three_mib_message)
{
    big_test(3 << 20);
}

TEST(largest_message)
{
    cstate st = {0};
    uint8_t *b = calloc(1, WF_GRPC_MAX_MESSAGE + 1);

    big_test(WF_GRPC_MAX_MESSAGE);
    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf_grpc_send(st.c, b, WF_GRPC_MAX_MESSAGE + 1), -1);
    wf_grpc_cancel(st.c);
    CHECK_INT(st.closed, 0); /* never from inside the call */
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_CANCELLED);
    free(b);
}

/* A shared body: released once, when its bytes are no longer needed. */
static int releases;
static void count_release(void *arg)
{
    releases++;
    CHECK(arg == (void *)&releases);
}

/* Sends message i (size n) as a shared body and a copied tail of k bytes. */
static int send_shared(wf_grpc_call *c, const uint8_t *b, size_t n, size_t k)
{
    return wf_grpc_send_shared(c, b, n - k, b + n - k, k, count_release, &releases);
}

TEST(shared_messages)
{
    /* Three calls at once, each two big messages whose bodies are shared,
     * so that their DATA frames interleave on the connection. */
    enum { CALLS = 3, SIZE = 300000 };
    cstate st[CALLS];
    uint8_t *b[2];

    releases = 0;
    for (int m = 0; m < 2; m++) {
        b[m] = malloc(SIZE);
        fill(b[m], SIZE, m);
    }
    for (int i = 0; i < CALLS; i++) {
        memset(&st[i], 0, sizeof(st[i]));
        st[i].big = SIZE;
        CHECK(call(&st[i], srv_addr, "/weft.test.Echo/Bidi") != NULL);
        for (int m = 0; m < 2; m++)
            CHECK_INT(send_shared(st[i].c, b[m], SIZE, m ? 0 : 24), 0);
        CHECK_INT(wf_grpc_queued(st[i].c), 2 * (SIZE + 5));
        wf_grpc_finish(st[i].c, 0, NULL);
    }
    CHECK_INT(releases, 0);
    for (int i = 0; i < CALLS; i++) {
        CHECK(run_until(&st[i].closed));
        CHECK_INT(st[i].status, WF_GRPC_OK);
        CHECK_INT(st[i].msgs, 2);
        CHECK_INT(st[i].bad, 0);
    }
    CHECK_INT(releases, 2 * CALLS);

    /* Dropped unsent: released all the same; refused: not taken. */
    cstate gone = {0};
    CHECK(call(&gone, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(send_shared(gone.c, b[0], SIZE, 10), 0);
    wf_grpc_cancel(gone.c);
    CHECK_INT(send_shared(gone.c, b[0], SIZE, 10), -1);
    CHECK(run_until(&gone.closed));
    CHECK_INT(releases, 2 * CALLS + 1);

    /* Refused, and not taken: no body, no release, a tail without bytes,
     * more than a message may hold. */
    cstate bad = {0};
    CHECK(call(&bad, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf_grpc_send_shared(bad.c, NULL, 0, NULL, 0, count_release, &releases), -1);
    CHECK_INT(wf_grpc_send_shared(bad.c, b[0], 10, NULL, 0, NULL, NULL), -1);
    CHECK_INT(wf_grpc_send_shared(bad.c, b[0], 10, NULL, 5, count_release, &releases), -1);
    CHECK_INT(wf_grpc_send_shared(bad.c, b[0], WF_GRPC_MAX_MESSAGE, b[0], 1, count_release,
                                  &releases),
              -1);
    CHECK_INT(wf_grpc_queued(bad.c), 0);
    wf_grpc_cancel(bad.c);
    CHECK(run_until(&bad.closed));
    CHECK_INT(releases, 2 * CALLS + 1);
    for (int m = 0; m < 2; m++)
        free(b[m]);
}

TEST(refused_call)
{
    cstate st = {0}, st2 = {0};
    int calls = S.calls, closes = S.closes;

    CHECK(call(&st, srv_addr, "/weft.test.Echo/NoSuchMethod") != NULL);
    send_one(st.c, "x");
    CHECK(call(&st2, srv_addr, "/weft.test.Echo/Refuse") != NULL);
    CHECK(run_until(&st.closed));
    CHECK(run_until(&st2.closed));
    CHECK_INT(st.status, WF_GRPC_UNIMPLEMENTED);
    CHECK(strstr(st.message, "/weft.test.Echo/NoSuchMethod") != NULL);
    CHECK_INT(st2.status, WF_GRPC_PERMISSION_DENIED);
    CHECK_STR(st2.message, "go away: \xc3\xbc 100%\n");
    CHECK_INT(st.msgs + st2.msgs, 0);
    CHECK_INT(S.calls, calls + 2);
    CHECK_INT(S.closes, closes); /* refused calls get no on_close */
}

TEST(server_finishes_with_status)
{
    cstate st = {0};

    CHECK(call(&st, srv_addr, "/weft.test.Echo/Fail") != NULL);
    send_one(st.c, "x");
    /* The client does not half-close: the server's trailers end it. */
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, 9);
    CHECK_STR(st.message, "nope %");
}

TEST(client_cancel)
{
    cstate st = {.cancel_after = 3};
    int closes = S.closes;

    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    for (int i = 0; i < 10; i++)
        send_one(st.c, "m");
    CHECK(run_until(&st.closed));
    CHECK_INT(st.closed, 1);
    CHECK_INT(st.status, WF_GRPC_CANCELLED);
    CHECK_INT(st.msgs, 3); /* nothing after the cancel */
    wait_server_closes(closes + 1);
    CHECK_INT(S.closes, closes + 1);
}

TEST(server_cancel)
{
    cstate st = {0};

    CHECK(call(&st, srv_addr, "/weft.test.Echo/CancelMe") != NULL);
    send_one(st.c, "x");
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_CANCELLED);
}

TEST(api_calls_never_call_back)
{
    /* finish and cancel from outside any callback: on_close comes later,
     * from the loop, never from inside the call that ended it. */
    cstate a = {0}, b = {0};
    int closes = S.closes, open = S.open;
    wf_grpc_call *sa, *sb;

    CHECK(call(&a, srv_addr, "/weft.test.Echo/Hold") != NULL);
    send_one(a.c, "x");
    wait_count(&S.open, open + 1);
    sa = S.last;
    CHECK(call(&b, srv_addr, "/weft.test.Echo/Hold") != NULL);
    send_one(b.c, "y");
    wait_count(&S.open, open + 2);
    sb = S.last;
    CHECK(sa != NULL && sb != NULL && sa != sb);
    if (!sa || !sb)
        return;
    CHECK_INT(wf_grpc_send(sa, (const uint8_t *)"bye", 3), 0);
    wf_grpc_finish(sa, WF_GRPC_NOT_FOUND, "gone \x01");
    CHECK_INT(wf_grpc_send(sa, (const uint8_t *)"more", 4), -1);
    wf_grpc_cancel(sb);
    CHECK_INT(S.closes, closes);
    CHECK(run_until(&a.closed));
    CHECK(run_until(&b.closed));
    CHECK_INT(a.status, WF_GRPC_NOT_FOUND);
    CHECK_STR(a.message, "gone \x01");
    CHECK_STR(a.first, "bye");
    CHECK_INT(b.status, WF_GRPC_CANCELLED);
    wait_server_closes(closes + 2);
    CHECK_INT(S.closes, closes + 2);
}

TEST(broken_framing_from_client)
{
    static const uint8_t compressed[] = {1, 0, 0, 0, 1, 'x'};
    static const uint8_t huge[] = {0, 0, 0x50, 0, 0}; /* 5 MiB announced */
    static const uint8_t half[] = {0, 0, 0, 0, 10, 'a', 'b'};
    cstate a = {0}, b = {0}, c = {0};
    int closes = S.closes;

    CHECK(call(&a, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf__grpc_send_raw(a.c, compressed, sizeof(compressed)), 0);
    CHECK(call(&b, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf__grpc_send_raw(b.c, huge, sizeof(huge)), 0);
    CHECK(call(&c, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf__grpc_send_raw(c.c, half, sizeof(half)), 0);
    wf_grpc_finish(c.c, 0, NULL);
    CHECK(run_until(&a.closed));
    CHECK(run_until(&b.closed));
    CHECK(run_until(&c.closed));
    CHECK_INT(a.status, WF_GRPC_UNIMPLEMENTED);
    CHECK(strstr(a.message, "compressed") != NULL);
    CHECK_INT(b.status, WF_GRPC_RESOURCE_EXHAUSTED);
    CHECK(strstr(b.message, "larger than") != NULL);
    CHECK_INT(c.status, WF_GRPC_INTERNAL);
    CHECK(strstr(c.message, "inside a message") != NULL);
    wait_server_closes(closes + 3);
    CHECK_INT(S.closes, closes + 3);
}

TEST(huge_request_headers)
{
    cstate st = {0};
    char *v = malloc(40001);

    memset(v, 'v', 40000);
    v[40000] = 0;
    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK_INT(wf_grpc_add_header(st.c, "x-big", v), 0);
    send_one(st.c, "x");
    CHECK(run_until(&st.closed));
    CHECK(st.status != WF_GRPC_OK);
    CHECK_INT(st.msgs, 0);
    free(v);
}

TEST(garbage_peers)
{
    static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    /* The preface, then a DATA frame on stream 0: a connection error. */
    static const uint8_t bad[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                 "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                                 "\x00\x00\x03\x00\x00\x00\x00\x00\x00xyz";
    raw *r1, *r2, *r3;
    uint8_t *b1 = malloc(sizeof(http1)), *b2 = malloc(sizeof(bad)), *b3;
    size_t l3;
    cstate st = {0};

    memcpy(b1, http1, sizeof(http1) - 1);
    memcpy(b2, bad, sizeof(bad) - 1);
    /* A request cut off in the middle of its HEADERS frame. */
    b3 = h2_request_bytes("/weft.test.Echo/Bidi", &l3);
    l3 -= 7;
    r1 = raw_start(port_of(srv_addr), b1, sizeof(http1) - 1, 1);
    r2 = raw_start(port_of(srv_addr), b2, sizeof(bad) - 1, 1);
    r3 = raw_start(port_of(srv_addr), b3, l3, 1);
    CHECK(run_until(&r1->eof));
    CHECK(run_until(&r2->eof));
    CHECK(r2->got > 0); /* SETTINGS and GOAWAY */
    /* The server still serves. */
    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    send_one(st.c, "still there");
    wf_grpc_finish(st.c, 0, NULL);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_STR(st.first, "still there");
    CHECK(!r3->eof); /* waiting for the rest, harmlessly */
    raw_free(r1);
    raw_free(r2);
    raw_free(r3);
}

TEST(slow_peer_blocks_nobody)
{
    size_t len;
    uint8_t *req = h2_request_bytes("/weft.test.Echo/Flood", &len);
    raw *r = raw_start(port_of(srv_addr), req, len, 0 /* never reads */);
    int open = S.open;
    cstate st = {.nsend = 100, .send_on_open = 1, .finish_on_open = 1};
    wf_grpc_call *flood;

    /* Wait until the flood call exists and has queued its 8 MiB. */
    wait_count(&S.open, open + 1);
    flood = S.last;
    CHECK(flood != NULL);
    CHECK(call(&st, srv_addr, "/weft.test.Echo/Bidi") != NULL);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_INT(st.msgs, 100);
    CHECK_INT(st.bad, 0);
    if (flood) {
        /* Only the peer's window (64 KiB) left; the rest waits here. */
        CHECK(wf_grpc_queued(flood) > (size_t)7 << 20);
        CHECK(wf_grpc_queued(flood) <= (size_t)8 * ((1 << 20) + 5));
    }
    int closes = S.closes;
    raw_free(r); /* the peer goes away: the call ends */
    wait_server_closes(closes + 1);
    CHECK_INT(S.closes, closes + 1);
}

TEST(connect_failures)
{
    cstate st = {0}, st2 = {0}, st3 = {0};
    char err[256], addr[64];
    static uv_tcp_t t;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    wf_grpc_server *busy;

    CHECK(wf_grpc_client_call(loop, "nonsense", "/a/b", NULL, &client_h, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "nonsense") != NULL);
    CHECK(wf_grpc_client_call(loop, srv_addr, "no-slash", NULL, &client_h, err, sizeof(err)) ==
          NULL);
    CHECK(wf_grpc_server_start(loop, srv_addr, &server_h, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "address already in use") != NULL);
    busy = wf_grpc_server_start(loop, "bad", &server_h, err, sizeof(err));
    CHECK(busy == NULL);

    /* A port nobody listens on. */
    uv_tcp_init(loop, &t);
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&ss);
    uv_tcp_bind(&t, (struct sockaddr *)&ss, 0);
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &sl);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    CHECK(call(&st, addr, "/weft.test.Echo/Bidi") != NULL);
    send_one(st.c, "x");
    CHECK_INT(st.closed, 0);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_UNAVAILABLE);
    CHECK(strstr(st.message, "cannot connect") != NULL);
    CHECK(!st.opened);
    uv_close((uv_handle_t *)&t, NULL);

    /* A name, resolved. */
    snprintf(addr, sizeof(addr), "localhost:%d", port_of(srv_addr));
    CHECK(call(&st2, addr, "/weft.test.Echo/Bidi") != NULL);
    send_one(st2.c, "by name");
    wf_grpc_finish(st2.c, 0, NULL);
    CHECK(run_until(&st2.closed));
    CHECK_INT(st2.status, WF_GRPC_OK);
    CHECK_STR(st2.first, "by name");

    /* Cancelled while resolving (or connecting). */
    snprintf(addr, sizeof(addr), "localhost:%d", port_of(srv_addr));
    CHECK(call(&st3, addr, "/weft.test.Echo/Bidi") != NULL);
    wf_grpc_cancel(st3.c);
    CHECK(run_until(&st3.closed));
    CHECK_INT(st3.status, WF_GRPC_CANCELLED);
}

/* A peer that answers HTTP/1.1 to the HTTP/2 preface. */
static uv_tcp_t h1srv;
static uv_tcp_t h1conn;
static uv_write_t h1wr;

static void h1_written(uv_write_t *w, int status)
{
    uv_close((uv_handle_t *)&h1conn, NULL);
}

static void h1_accept(uv_stream_t *l, int status)
{
    static char resp[] = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    uv_buf_t b = uv_buf_init(resp, sizeof(resp) - 1);

    uv_tcp_init(loop, &h1conn);
    uv_accept(l, (uv_stream_t *)&h1conn);
    uv_write(&h1wr, (uv_stream_t *)&h1conn, &b, 1, h1_written);
}

TEST(client_against_http1_server)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char addr[64];
    cstate st = {0};

    uv_tcp_init(loop, &h1srv);
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&ss);
    uv_tcp_bind(&h1srv, (struct sockaddr *)&ss, 0);
    uv_listen((uv_stream_t *)&h1srv, 8, h1_accept);
    uv_tcp_getsockname(&h1srv, (struct sockaddr *)&ss, &sl);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    CHECK(call(&st, addr, "/weft.test.Echo/Bidi") != NULL);
    send_one(st.c, "x");
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_UNAVAILABLE);
    CHECK(st.message[0] != 0);
    uv_close((uv_handle_t *)&h1srv, NULL);
}

/* A peer that accepts and then says nothing. */
static uv_tcp_t mute_srv, mute_conn;
static int mute_accepted;

static void mute_accept(uv_stream_t *l, int status)
{
    uv_tcp_init(loop, &mute_conn);
    uv_accept(l, (uv_stream_t *)&mute_conn);
    mute_accepted = 1;
}

TEST(handshake_timeouts)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char addr[64];
    cstate st = {0};
    raw *r;

    wf__grpc_handshake_ms = 200;
    /* Server side: a peer that connects and sends nothing is dropped. */
    r = raw_start(port_of(srv_addr), NULL, 0, 1);
    CHECK(run_until(&r->eof));
    raw_free(r);
    /* Client side: a server that accepts and never speaks HTTP/2. */
    uv_tcp_init(loop, &mute_srv);
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&ss);
    uv_tcp_bind(&mute_srv, (struct sockaddr *)&ss, 0);
    uv_listen((uv_stream_t *)&mute_srv, 8, mute_accept);
    uv_tcp_getsockname(&mute_srv, (struct sockaddr *)&ss, &sl);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    CHECK(call(&st, addr, "/weft.test.Echo/Bidi") != NULL);
    send_one(st.c, "anyone?");
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_UNAVAILABLE);
    CHECK(strstr(st.message, "no HTTP/2 SETTINGS within 0.2 s") != NULL);
    CHECK(st.opened); /* connected, headers queued, but no answer */
    wf__grpc_handshake_ms = 10000;
    if (mute_accepted)
        uv_close((uv_handle_t *)&mute_conn, NULL);
    uv_close((uv_handle_t *)&mute_srv, NULL);
}

TEST(half_close_handler)
{
    wf_grpc_server_handlers h = server_h;
    wf_grpc_server *s2;
    char addr[64];
    cstate st = {0};

    h.on_half_close = s_on_half_close;
    s2 = start_server(&h, addr, sizeof(addr));
    CHECK(call(&st, addr, "/weft.test.Echo/Count") != NULL);
    send_one(st.c, "a");
    send_one(st.c, "b");
    send_one(st.c, "c");
    wf_grpc_finish(st.c, 0, NULL);
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_STR(st.message, "counted");
    CHECK_STR(st.first, "3");
    wf_grpc_server_stop(s2);
}

TEST(server_stop_with_open_calls)
{
    wf_grpc_server *s2;
    char addr[64];
    cstate st[3] = {{0}};
    int closes = S.closes, open = S.open;

    s2 = start_server(&server_h, addr, sizeof(addr));
    for (int i = 0; i < 3; i++) {
        CHECK(call(&st[i], addr, i == 2 ? "/weft.test.Echo/Hold" : "/weft.test.Echo/Bidi") != NULL);
        send_one(st[i].c, "open");
    }
    /* All three calls are open on the server, the echo ones answered. */
    wait_count(&S.open, open + 3);
    CHECK_INT(S.open, open + 3);
    CHECK(run_until(&st[0].msgs));
    CHECK(run_until(&st[1].msgs));
    wf_grpc_server_stop(s2);
    wf_grpc_server_stop(s2 = NULL); /* harmless */
    for (int i = 0; i < 3; i++) {
        CHECK(run_until(&st[i].closed));
        CHECK_INT(st[i].status, WF_GRPC_UNAVAILABLE);
        CHECK(st[i].message[0] != 0);
    }
    wait_server_closes(closes + 3);
    CHECK_INT(S.closes, closes + 3);
}

TEST(server_stop_from_a_callback)
{
    char addr[64];
    cstate st = {0}, st2 = {0};
    int closes = S.closes, open = S.open;

    S.stop_me = start_server(&server_h, addr, sizeof(addr));
    CHECK(call(&st2, addr, "/weft.test.Echo/Hold") != NULL);
    send_one(st2.c, "held");
    wait_count(&S.open, open + 1);
    CHECK(call(&st, addr, "/weft.test.Echo/Stop") != NULL);
    send_one(st.c, "stop now");
    CHECK(run_until(&st.closed));
    CHECK(run_until(&st2.closed));
    CHECK_INT(st2.status, WF_GRPC_UNAVAILABLE);
    wait_server_closes(closes + 2);
    CHECK_INT(S.closes, closes + 2);
    S.stop_me = NULL;
}

TEST(many_clients)
{
    enum { N = 50 };
    cstate *st = calloc(N, sizeof(*st));
    int done = 0;

    for (int i = 0; i < N; i++) {
        st[i].nsend = 20;
        st[i].send_on_open = 1;
        st[i].finish_on_open = 1;
        CHECK(call(&st[i], srv_addr, "/weft.test.Echo/Bidi") != NULL);
    }
    uv_timer_start(&deadline, on_deadline, 20000, 0);
    timed_out = 0;
    while (!timed_out) {
        done = 0;
        for (int i = 0; i < N; i++)
            done += st[i].closed;
        if (done == N)
            break;
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&deadline);
    CHECK_INT(done, N);
    for (int i = 0; i < N; i++) {
        CHECK_INT(st[i].status, WF_GRPC_OK);
        CHECK_INT(st[i].msgs, 20);
        CHECK_INT(st[i].bad, 0);
    }
    free(st);
}

/* ---------------------------------------------------------------------- */
/* TLS: certificates from the CA core in a temporary directory */

#define TD "spiffe://cluster.local/ns/istio-system/sa/"

static struct {
    char dir[64];
    wf_ca *ca;
} PKI;

static const char *h2_alpn[] = {"h2", NULL};

static int pki_make(void)
{
    char *err = NULL;

    snprintf(PKI.dir, sizeof(PKI.dir), "/tmp/wf-grpc-test-XXXXXX");
    if (!mkdtemp(PKI.dir) || wf_ca_load_or_create(PKI.dir, NULL, &PKI.ca, &err) != 0) {
        fprintf(stderr, "test CA: %s\n", err ? err : "mkdtemp failed");
        free(err);
        return -1;
    }
    return 0;
}

static void pki_free(void)
{
    char cmd[128];

    wf_ca_free(PKI.ca);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", PKI.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", PKI.dir);
}

/* A context with a fresh certificate for spiffe (NULL: none). */
static wf_tls_ctx *tls_ctx(int server, const char *spiffe, wf_tls_peer_cert pc)
{
    char *err = NULL, *key = NULL, *csr = NULL, **chain = NULL, *pem = NULL;
    size_t n = 0;
    wf_tls_ctx *ctx = NULL;

    if (spiffe) {
        if (wf_ca_make_key_csr(&key, &csr, &err) != 0 ||
            wf_ca_sign_csr(PKI.ca, csr, spiffe, 3600, &chain, &n, &err) != 0) {
            fprintf(stderr, "issue %s: %s\n", spiffe, err);
            exit(1);
        }
        pem = calloc(1, strlen(chain[0]) + strlen(chain[n - 1]) + 1);
        strcat(strcpy(pem, chain[0]), chain[n - 1]);
    }
    wf_tls_ctx_opts o = {.server = server,
                         .cert_chain_pem = pem,
                         .key_pem = key,
                         .roots_pem = wf_ca_root_pem(PKI.ca),
                         .peer_cert = pc,
                         .alpn = h2_alpn,
                         .mesh = 1};
    if (wf_tls_ctx_new(&o, &ctx, &err) != 0) {
        fprintf(stderr, "TLS context: %s\n", err);
        exit(1);
    }
    wf_ca_chain_free(chain, n);
    free(key);
    free(csr);
    free(pem);
    return ctx;
}

static wf_grpc_server *start_tls_server(wf_tls_ctx *tls, char *addr, size_t alen)
{
    char err[256];
    wf_grpc_server *s =
        wf_grpc_server_start_tls(loop, "127.0.0.1:0", &server_h, tls, err, sizeof(err));

    if (!s) {
        fprintf(stderr, "TLS server: %s\n", err);
        exit(1);
    }
    snprintf(addr, alen, "127.0.0.1:%d", wf_grpc_server_port(s));
    return s;
}

static wf_grpc_call *call_tls(cstate *st, const char *addr, const char *path,
                              const wf_grpc_tls *tls)
{
    char err[256];
    wf_grpc_client_handlers h = client_h;

    h.ud = st;
    st->c = wf_grpc_client_call_tls(loop, addr, path, NULL, tls, &h, err, sizeof(err));
    if (!st->c)
        fprintf(stderr, "TLS client: %s\n", err);
    return st->c;
}

/* One PeerId call: what the server saw as the client's identity, in st. */
static void peer_id_call(cstate *st, const char *addr, const wf_grpc_tls *tls)
{
    CHECK(call_tls(st, addr, "/weft.test.Echo/PeerId", tls) != NULL);
    if (!st->c)
        return;
    send_one(st->c, "who am I");
    wf_grpc_finish(st->c, 0, NULL);
    CHECK(run_until(&st->closed));
}

TEST(tls_unary_with_client_cert)
{
    wf_tls_ctx *sctx = tls_ctx(1, TD "istiod", WF_TLS_PEER_OPTIONAL);
    wf_tls_ctx *cctx = tls_ctx(0, "spiffe://cluster.local/ns/app/sa/client", WF_TLS_PEER_NONE);
    const char *ids[] = {TD "istiod"};
    wf_grpc_tls t = {.ctx = cctx, .peer_ids = ids, .n_peer_ids = 1};
    char addr[64];
    wf_grpc_server *s = start_tls_server(sctx, addr, sizeof(addr));
    cstate st = {0};
    int closes = S.closes;

    wf_tls_ctx_unref(sctx); /* the server holds its own reference */
    peer_id_call(&st, addr, &t);
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_INT(st.msgs, 1);
    CHECK_STR(st.first, "spiffe://cluster.local/ns/app/sa/client");
    wait_server_closes(closes + 1);

    /* Bulk both ways: many messages, then big ones. */
    cstate bulk = {.nsend = 300, .send_on_open = 1, .finish_on_open = 1};
    CHECK(call_tls(&bulk, addr, "/weft.test.Echo/Bidi", &t) != NULL);
    CHECK(run_until(&bulk.closed));
    CHECK_INT(bulk.status, WF_GRPC_OK);
    CHECK_INT(bulk.msgs, 300);
    CHECK_INT(bulk.bad, 0);
    cstate big = {.big = 3 << 20};
    uint8_t *b = malloc(big.big);
    CHECK(call_tls(&big, addr, "/weft.test.Echo/Bidi", &t) != NULL);
    fill(b, big.big, 0);
    CHECK_INT(wf_grpc_send(big.c, b, big.big), 0);
    uint8_t *b1 = malloc(big.big);
    fill(b1, big.big, 1);
    releases = 0;
    CHECK_INT(send_shared(big.c, b1, big.big, 100), 0); /* encrypted in place */
    wf_grpc_finish(big.c, 0, NULL);
    free(b);
    CHECK(run_until(&big.closed));
    CHECK_INT(releases, 1);
    free(b1);
    CHECK_INT(big.status, WF_GRPC_OK);
    CHECK_INT(big.msgs, 2);
    CHECK_INT(big.bad, 0);

    wf_grpc_server_stop(s);
    wf_tls_ctx_unref(cctx);
}

TEST(tls_client_without_cert)
{
    wf_tls_ctx *opt = tls_ctx(1, TD "istiod", WF_TLS_PEER_OPTIONAL);
    wf_tls_ctx *req = tls_ctx(1, TD "istiod", WF_TLS_PEER_REQUIRED);
    wf_tls_ctx *anon = tls_ctx(0, NULL, WF_TLS_PEER_NONE);
    wf_grpc_tls t = {.ctx = anon};
    char a1[64], a2[64];
    wf_grpc_server *s1 = start_tls_server(opt, a1, sizeof(a1));
    wf_grpc_server *s2 = start_tls_server(req, a2, sizeof(a2));
    cstate st = {0}, st2 = {0};
    int calls = S.calls;

    peer_id_call(&st, a1, &t);
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_STR(st.first, "(none)");
    /* mTLS required: the call never reaches the server. */
    peer_id_call(&st2, a2, &t);
    CHECK_INT(st2.status, WF_GRPC_UNAVAILABLE);
    CHECK(strncmp(st2.message, "TLS: handshake failed: the peer sent the fatal alert", 52) == 0);
    CHECK_INT(S.calls, calls + 1);
    wf_grpc_server_stop(s1);
    wf_grpc_server_stop(s2);
    wf_tls_ctx_unref(opt);
    wf_tls_ctx_unref(req);
    wf_tls_ctx_unref(anon);
}

TEST(tls_server_identity_refused)
{
    wf_tls_ctx *sctx = tls_ctx(1, TD "istiod", WF_TLS_PEER_OPTIONAL);
    wf_tls_ctx *cctx = tls_ctx(0, "spiffe://cluster.local/ns/app/sa/client", WF_TLS_PEER_NONE);
    char addr[64];
    wf_grpc_server *s = start_tls_server(sctx, addr, sizeof(addr));
    int calls = S.calls;

    /* A name the certificate does not carry (it has a URI SAN only). */
    wf_grpc_tls t = {.ctx = cctx, .verify_name = "istiod.istio-system.svc"};
    cstate st = {0};
    peer_id_call(&st, addr, &t);
    CHECK_INT(st.status, WF_GRPC_UNAVAILABLE);
    CHECK(strncmp(st.message,
                  "TLS: server certificate does not carry the name istiod.istio-system.svc",
                  71) == 0);
    /* Another identity than the one expected. */
    const char *ids[] = {TD "other"};
    wf_grpc_tls t2 = {.ctx = cctx, .peer_ids = ids, .n_peer_ids = 1};
    cstate st2 = {0};
    peer_id_call(&st2, addr, &t2);
    CHECK_INT(st2.status, WF_GRPC_UNAVAILABLE);
    CHECK_STR(st2.message, "TLS: server identity " TD "istiod is not one of: " TD "other");
    CHECK_INT(S.calls, calls);
    wf_grpc_server_stop(s);
    wf_tls_ctx_unref(sctx);
    wf_tls_ctx_unref(cctx);
}

TEST(tls_and_plaintext_do_not_mix)
{
    wf_tls_ctx *sctx = tls_ctx(1, TD "istiod", WF_TLS_PEER_OPTIONAL);
    wf_tls_ctx *cctx = tls_ctx(0, NULL, WF_TLS_PEER_NONE);
    wf_grpc_tls t = {.ctx = cctx};
    char addr[64];
    wf_grpc_server *s = start_tls_server(sctx, addr, sizeof(addr));
    cstate st = {0}, st2 = {0};

    /* h2c client, TLS server. */
    CHECK(call(&st, addr, "/weft.test.Echo/Bidi") != NULL);
    send_one(st.c, "x");
    CHECK(run_until(&st.closed));
    CHECK_INT(st.status, WF_GRPC_UNAVAILABLE);
    /* TLS client, h2c server. */
    CHECK(call_tls(&st2, srv_addr, "/weft.test.Echo/Bidi", &t) != NULL);
    send_one(st2.c, "x");
    CHECK(run_until(&st2.closed));
    CHECK_INT(st2.status, WF_GRPC_UNAVAILABLE);
    CHECK(strstr(st2.message, "TLS") != NULL);
    /* A context without ALPN h2 is refused up front. */
    wf_tls_ctx_opts o = {.roots_pem = wf_ca_root_pem(PKI.ca)};
    wf_tls_ctx *no_alpn = NULL;
    char err[256];
    CHECK_INT(wf_tls_ctx_new(&o, &no_alpn, NULL), 0);
    wf_grpc_tls t3 = {.ctx = no_alpn};
    wf_grpc_client_handlers h = client_h;
    CHECK(wf_grpc_client_call_tls(loop, addr, "/x/y", NULL, &t3, &h, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "ALPN") != NULL);
    wf_tls_ctx_unref(no_alpn);
    wf_grpc_server_stop(s);
    wf_tls_ctx_unref(sctx);
    wf_tls_ctx_unref(cctx);
}

TEST(tls_rotation)
{
    wf_tls_ctx *old = tls_ctx(1, TD "istiod", WF_TLS_PEER_REQUIRED);
    wf_tls_ctx *cctx = tls_ctx(0, "spiffe://cluster.local/ns/app/sa/client", WF_TLS_PEER_NONE);
    wf_grpc_tls t = {.ctx = cctx};
    char addr[64];
    wf_grpc_server *s = start_tls_server(old, addr, sizeof(addr));
    cstate held = {0};

    /* A call open across the rotation keeps its connection. */
    CHECK(call_tls(&held, addr, "/weft.test.Echo/Bidi", &t) != NULL);
    send_one(held.c, "before");
    wait_count(&held.msgs, 1);
    CHECK_INT(held.msgs, 1);

    wf_tls_ctx *rotated = tls_ctx(1, TD "istiod-rotated", WF_TLS_PEER_REQUIRED);
    wf_grpc_server_set_tls(s, rotated);
    wf_tls_ctx_unref(rotated);
    wf_tls_ctx_unref(old); /* only the open connection holds it now */

    const char *ids[] = {TD "istiod-rotated"};
    wf_grpc_tls t2 = {.ctx = cctx, .peer_ids = ids, .n_peer_ids = 1};
    cstate st = {0};
    peer_id_call(&st, addr, &t2);
    CHECK_INT(st.status, WF_GRPC_OK);
    CHECK_STR(st.first, "spiffe://cluster.local/ns/app/sa/client");

    send_one(held.c, "after");
    wf_grpc_finish(held.c, 0, NULL);
    CHECK(run_until(&held.closed));
    CHECK_INT(held.status, WF_GRPC_OK);
    CHECK_INT(held.msgs, 2);
    wf_grpc_server_stop(s);
    wf_tls_ctx_unref(cctx);
}

/* ---------------------------------------------------------------------- */
/* --serve: the echo server for the interop test */

static wf_grpc_server *serving;
static uv_signal_t sigterm, sigint;

static int e_on_call(wf_grpc_call *c, const char *path, void *ud)
{
    if (strcmp(path, "/weft.test.Echo/Bidi") == 0)
        wf_grpc_set_data(c, (void *)1);
    else if (strcmp(path, "/weft.test.Echo/Fail") == 0)
        wf_grpc_set_data(c, (void *)2);
    else if (strcmp(path, "/weft.test.Echo/Meta") == 0)
        wf_grpc_set_data(c, (void *)3);
    else if (strcmp(path, "/weft.test.Echo/PeerId") == 0)
        wf_grpc_set_data(c, (void *)4);
    else if (strcmp(path, "/weft.test.Echo/Refuse") == 0) {
        wf_grpc_finish(c, WF_GRPC_PERMISSION_DENIED, "go away: \xc3\xbc 100%");
        return WF_GRPC_PERMISSION_DENIED;
    } else
        return WF_GRPC_UNIMPLEMENTED;
    return WF_GRPC_OK;
}

static void e_on_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    intptr_t k = (intptr_t)wf_grpc_data(c);

    if (k == 1) {
        wf_grpc_send(c, msg, len);
    } else if (k == 2) {
        wf_grpc_finish(c, 9, "nope %");
    } else if (k == 4) {
        const char *id = wf_grpc_peer_id(c);
        id = id ? id : "(none)";
        wf_grpc_send(c, (const uint8_t *)id, strlen(id));
    } else {
        const char *x = wf_grpc_header(c, "x-test"), *ua = wf_grpc_header(c, "user-agent");
        char out[512];
        int n = snprintf(out, sizeof(out), "x-test=%s user-agent=%s", x ? x : "", ua ? ua : "");
        wf_grpc_send(c, (const uint8_t *)out, (size_t)n);
    }
}

static void e_on_close(wf_grpc_call *c, void *ud)
{
}

static void on_signal(uv_signal_t *s, int signum)
{
    wf_grpc_server_stop(serving);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
}

/* A TLS context from DIR's cert-chain.pem, key.pem (both optional for a
 * client) and root-cert.pem. */
static wf_tls_ctx *ctx_from_dir(const char *dir, int server)
{
    char path[512], *chain = NULL, *key = NULL, *roots = NULL, *err = NULL;
    wf_tls_ctx *ctx = NULL;

    snprintf(path, sizeof(path), "%s/cert-chain.pem", dir);
    wf_read_file(path, 1 << 20, &chain, NULL);
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    wf_read_file(path, 1 << 20, &key, NULL);
    snprintf(path, sizeof(path), "%s/root-cert.pem", dir);
    if (wf_read_file(path, 1 << 20, &roots, NULL) < 0)
        fprintf(stderr, "grpc_test: cannot read %s\n", path);
    wf_tls_ctx_opts o = {.server = server,
                         .cert_chain_pem = chain,
                         .key_pem = key,
                         .roots_pem = roots,
                         .peer_cert = WF_TLS_PEER_OPTIONAL,
                         .alpn = h2_alpn,
                         .mesh = 0};
    if (roots && wf_tls_ctx_new(&o, &ctx, &err) != 0)
        fprintf(stderr, "grpc_test: TLS context from %s: %s\n", dir, err);
    free(err);
    free(chain);
    free(key);
    free(roots);
    return ctx;
}

static int serve(const char *port, const char *tls_dir)
{
    static const wf_grpc_server_handlers h = {
        .on_call = e_on_call, .on_message = e_on_message, .on_close = e_on_close};
    char addr[64], err[256];
    wf_tls_ctx *tls = NULL;

    snprintf(addr, sizeof(addr), "127.0.0.1:%s", port);
    if (tls_dir && !(tls = ctx_from_dir(tls_dir, 1)))
        return 1;
    serving = tls ? wf_grpc_server_start_tls(loop, addr, &h, tls, err, sizeof(err))
                  : wf_grpc_server_start(loop, addr, &h, err, sizeof(err));
    wf_tls_ctx_unref(tls);
    if (!serving) {
        fprintf(stderr, "grpc_test: %s\n", err);
        return 1;
    }
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    printf("serving 127.0.0.1:%d\n", wf_grpc_server_port(serving));
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}

/* --client: one call against someone else's server */

static int client_n;
static size_t client_size;
static int client_msgs, client_bad;
static size_t client_bytes;

static void cl_open(wf_grpc_call *c, void *ud)
{
    uint8_t *b = malloc(client_size + 1);

    for (int i = 0; i < client_n; i++) {
        fill(b, client_size, i);
        wf_grpc_send(c, b, client_size);
    }
    free(b);
    wf_grpc_finish(c, 0, NULL);
}

static void cl_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    if (len != client_size || !check_fill(msg, len, client_msgs))
        client_bad++;
    client_msgs++;
    client_bytes += len;
}

static void cl_close(wf_grpc_call *c, int status, const char *message, void *ud)
{
    printf("messages=%d bytes=%zu bad=%d status=%d message=%s\n", client_msgs, client_bytes,
           client_bad, status, message);
    fflush(stdout);
}

static int client(int argc, char **argv, const char *tls_dir, const char *name)
{
    static const wf_grpc_client_handlers h = {
        .on_open = cl_open, .on_message = cl_message, .on_close = cl_close};
    char err[256];
    wf_grpc_call *c;
    wf_tls_ctx *tls = NULL;

    if (argc < 6) {
        fprintf(stderr, "usage: grpc_test --client ADDR PATH N SIZE [NAME=VALUE]\n"
                        "       grpc_test --client-tls DIR NAME ADDR PATH N SIZE [NAME=VALUE]\n");
        return 2;
    }
    client_n = atoi(argv[4]);
    client_size = (size_t)atol(argv[5]);
    if (tls_dir && !(tls = ctx_from_dir(tls_dir, 0)))
        return 1;
    if (tls) {
        const char *ids[] = {name};
        int uri = strstr(name, "://") != NULL;
        wf_grpc_tls t = {.ctx = tls,
                         .verify_name = uri ? NULL : name,
                         .peer_ids = uri ? ids : NULL,
                         .n_peer_ids = uri ? 1 : 0};
        c = wf_grpc_client_call_tls(loop, argv[2], argv[3], NULL, &t, &h, err, sizeof(err));
        wf_tls_ctx_unref(tls);
    } else {
        c = wf_grpc_client_call(loop, argv[2], argv[3], NULL, &h, err, sizeof(err));
    }
    if (!c) {
        fprintf(stderr, "grpc_test: %s\n", err);
        return 1;
    }
    for (int i = 6; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq) {
            *eq = 0;
            wf_grpc_add_header(c, argv[i], eq + 1);
        }
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *lv = getenv("WEFT_LOG");

    wf_log_role = "grpc_test";
    wf_log_threshold = lv && wf_log_parse_level(lv) >= 0 ? wf_log_parse_level(lv) : WF_LERROR;
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    if (argc >= 3 && strcmp(argv[1], "--serve") == 0)
        return serve(argv[2], NULL);
    if (argc >= 4 && strcmp(argv[1], "--serve-tls") == 0)
        return serve(argv[2], argv[3]);
    if (argc >= 2 && strcmp(argv[1], "--client") == 0)
        return client(argc, argv, NULL, NULL);
    if (argc >= 4 && strcmp(argv[1], "--client-tls") == 0)
        return client(argc - 2, argv + 2, argv[2], argv[3]);

    uv_timer_init(loop, &deadline);
    srv = start_server(&server_h, srv_addr, sizeof(srv_addr));
    RUN(unary_like_exchange);
    RUN(empty_message_and_server_headers);
    RUN(bidi_1000_messages);
    RUN(queued_before_connect_and_ping_pong);
    RUN(three_mib_message);
    RUN(shared_messages);
    RUN(largest_message);
    RUN(refused_call);
    RUN(server_finishes_with_status);
    RUN(client_cancel);
    RUN(server_cancel);
    RUN(api_calls_never_call_back);
    RUN(broken_framing_from_client);
    RUN(huge_request_headers);
    RUN(garbage_peers);
    RUN(slow_peer_blocks_nobody);
    RUN(connect_failures);
    RUN(client_against_http1_server);
    RUN(handshake_timeouts);
    RUN(half_close_handler);
    RUN(server_stop_with_open_calls);
    RUN(server_stop_from_a_callback);
    RUN(many_clients);
    if (pki_make() == 0) {
        RUN(tls_unary_with_client_cert);
        RUN(tls_client_without_cert);
        RUN(tls_server_identity_refused);
        RUN(tls_and_plaintext_do_not_mix);
        RUN(tls_rotation);
    } else {
        test_failed++;
    }

    /* Everything must close: the loop ends with no handle left. */
    wf_grpc_server_stop(srv);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_INT(S.open, 0);
    if (uv_loop_close(loop) != 0) {
        fprintf(stderr, "uv_loop_close: handles still open\n");
        test_failed++;
    }
    pki_free();
    return TEST_SUMMARY();
}
