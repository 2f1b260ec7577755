"""The proxy's own replies written into connections the client has left.

wf_stream_local_reply (core/proxy/downstream.c) writes the proxy's own
answer: head, body, end.  When the client has gone, a write of it fails,
and a failed write closes the connection, which frees the stream in the
middle of the reply.  The reply must look at the connection after each
write and stop; it once went on to wf_stream_response_end and freed the
stream a second time.  These tests make dozens of such replies, then check
that the proxy still answers and exits 0 on SIGTERM with no sanitizer
report (ExitChecks in conftest); against a `scons sanitize=1` build a use
after free or double free there is a report.

How a reply meets a connection the client has left:
  * reset: each client pipelines a second request behind the first, waits
    until the proxy has forwarded the first, and resets (SO_LINGER 0).
    The proxy stops reading a client while bytes wait behind a pending
    response, so it does not see the RST; the reply's write is the first
    it hears of it, and fails.  The proxy writes an HTTP/1.1 head with the
    first body bytes, so the failing write is the body's (plain HTTP) or,
    for a head-only reply, the head's flushed by wf_stream_response_end
    (gRPC).
  * FIN, or curl --max-time 0.1 giving up: the proxy reads the EOF and,
    the request being whole, still answers: the reply goes into a socket
    already closed, which answers it with a RST.

What makes the proxy reply on its own, with the upstream silent:
  * plain HTTP: the upstream drops the connections before any response
    (503 "upstream connection ... reset before response headers (UC)",
    with a body), released by the test once the clients have gone: no
    timing involved;
  * gRPC: the caller's deadline (grpc-timeout) runs out in the proxy (504
    semantics, sent as a head-only grpc-status 4 on HTTP 200).
A VirtualService route `timeout` would be the natural trigger, but the
core does not enforce route timeouts yet (docs/modules.md: recorded as
router.timeout_ms, not enforced).
"""
import selectors
import socket
import struct
import subprocess
import threading

import pytest

from conftest import (CHILD_ENV, DEADLINE, connect, read_response, service_entry, wait_until,
                      workload_entry)

N_RAW = 40   # raw-socket clients per test
N_CURL = 24  # curl clients per test

HTTP_REQ = b"GET /never HTTP/1.1\r\nHost: silent\r\n\r\n"


def grpc_req(deadline):
    """A unary gRPC call over HTTP/1.1 with the caller's deadline."""
    msg = b"\x00\x00\x00\x00\x00"  # one empty length-prefixed message
    return (b"POST /weft.Test/Never HTTP/1.1\r\nHost: silent\r\n"
            b"Content-Type: application/grpc\r\nTE: trailers\r\n"
            b"grpc-timeout: %s\r\nContent-Length: %d\r\n\r\n" % (deadline.encode(), len(msg))
            + msg)


class SilentUpstream:
    """An upstream that accepts, reads and never answers.  It counts the
    request heads it has seen (seen()), so a test knows the proxy holds a
    request, and drops every connection when told (drop(), which makes the
    proxy answer the clients itself)."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.heads = 0
        # Commands reach the thread through this pair, which also wakes
        # its select: b"D" drop every connection, b"Q" quit.
        self.cmd_r, self.cmd_w = socket.socketpair()
        self.thread = threading.Thread(target=self._run, name="silent-upstream", daemon=True)
        self.thread.start()

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.lsock, selectors.EVENT_READ, "listen")
        sel.register(self.cmd_r, selectors.EVENT_READ, "cmd")
        tails = {}  # connection -> last bytes, for a head split across reads
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "cmd":
                        for c in self.cmd_r.recv(64):
                            if c == ord("Q"):
                                return
                            for conn in tails:
                                sel.unregister(conn)
                                conn.close()
                            tails.clear()
                    elif key.data == "listen":
                        conn, _ = self.lsock.accept()
                        sel.register(conn, selectors.EVENT_READ, "conn")
                        tails[conn] = b""
                    else:
                        conn = key.fileobj
                        if conn not in tails:
                            continue  # dropped earlier in this batch of events
                        try:
                            d = conn.recv(65536)
                        except OSError:
                            d = b""
                        if not d:
                            sel.unregister(conn)
                            del tails[conn]
                            conn.close()
                            continue
                        buf = tails[conn] + d
                        tails[conn] = buf[-3:]
                        with self.lock:
                            self.heads += buf.count(b"\r\n\r\n")
        finally:
            for conn in tails:
                conn.close()
            sel.close()

    def seen(self):
        with self.lock:
            return self.heads

    def wait_seen(self, n):
        wait_until(lambda: self.seen() >= n, "the upstream to hold %d forwarded requests" % n)

    def drop(self):
        """Closes every connection held now (the proxy then replies 503 UC)."""
        self.cmd_w.send(b"D")

    def stop(self):
        self.cmd_w.send(b"Q")
        self.thread.join(DEADLINE)
        for s in (self.lsock, self.cmd_r, self.cmd_w):
            s.close()


@pytest.fixture
def silent():
    u = SilentUpstream()
    yield u
    u.stop()


@pytest.fixture
def proxy(weft, silent):
    """A proxy in front of `silent` (port 9080, HTTP)."""
    w = weft(service_entry("silent") + workload_entry("silent-v1", silent.port, "silent", "v1"))
    w.upstream = silent
    return w


def stat(w, name):
    return w.stats()[name]


def wait_ended(w, counter, want):
    """Polls /stats until `counter` reaches want and no request is active:
    every stream ended with the proxy's own reply, whether or not its
    writes reached anyone."""
    wait_until(lambda: stat(w, counter) >= want,
               "%s to reach %d (every stream ended with the proxy's reply)" % (counter, want))
    wait_until(lambda: stat(w, "downstream_rq_active") == 0, "downstream_rq_active to reach 0")


def open_and_send(w, n, data):
    socks = [connect(w.out_port) for _ in range(n)]
    for s in socks:
        s.sendall(data)
    return socks


def leave(socks, reset):
    for s in socks:
        if reset:
            # SO_LINGER 0: close() sends a RST instead of a FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def send_and_reset(w, n, req):
    """n clients send req with a second one pipelined behind it, and reset
    once the proxy has forwarded every first one (so it holds the second
    and no longer reads them)."""
    seen = w.upstream.seen()
    socks = open_and_send(w, n, req + req)
    w.upstream.wait_seen(seen + n)
    leave(socks, reset=True)


def accept_queue_empty(port):
    """True when no connection to 127.0.0.1:port waits in a listening
    socket's accept queue (for a LISTEN socket, /proc/net/tcp's rx_queue
    is that queue's length)."""
    local = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A" and int(fields[4].split(":")[1], 16):
                return False
    return True


def curl_gives_up(w, n, headers=(), data=None):
    """Runs n curls that give up after 0.1 s (exit 28) and close."""
    args = ["curl", "-sS", "--http1.1", "--noproxy", "*", "--max-time", "0.1",
            "-o", "/dev/null", "-H", "Host: silent"]
    for h in headers:
        args += ["-H", h]
    if data is not None:
        args += ["--data-binary", data]
    procs = [subprocess.Popen(args + [w.out_url + "/never"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=CHILD_ENV) for _ in range(n)]
    for p in procs:
        _, err = p.communicate(timeout=DEADLINE)
        assert p.returncode == 28, "curl exited %d, not 28 (timed out): %s" % (
            p.returncode, err.decode(errors="replace"))


class Settle:
    """On a loaded machine a curl may give up before its request is out,
    so how many requests the proxy took is counted, not assumed: a
    snapshot before the curls, then waits until the proxy has accepted
    every connection and settled each one."""

    def __init__(self, w):
        self.w = w
        self.st0 = w.stats()
        self.seen0 = w.upstream.seen()

    def delta(self, st, name):
        return st[name] - self.st0[name]

    def held(self):
        """Waits until every open connection holds a request the upstream
        has; returns how many (the upstream has answered none of them)."""
        def settled():
            if not accept_queue_empty(self.w.out_port):
                return False
            st = self.w.stats()
            held = self.delta(st, "downstream_rq_active")
            return (held,) if (self.delta(st, "downstream_cx_active") == held
                               and self.w.upstream.seen() - self.seen0 == held) else False
        return self._taken(wait_until(settled, "every request to be held")[0])

    def ended(self):
        """Waits until every connection is closed; returns how many
        requests the proxy took (all ended)."""
        def settled():
            if not accept_queue_empty(self.w.out_port):
                return False
            st = self.w.stats()
            return (st if self.delta(st, "downstream_rq_active") == 0
                    and self.delta(st, "downstream_cx_active") == 0 else False)
        st = wait_until(settled, "every connection to end")
        return self._taken(self.delta(st, "downstream_rq_total")), st

    def _taken(self, n):
        assert n > 0, "no curl got its request to the proxy within 0.1 s\n" + self.w.describe()
        return n


def ask(w, data):
    s = connect(w.out_port)
    try:
        s.sendall(data)
        return read_response(s.makefile("rb"))
    finally:
        s.close()


def expect_503_uc(w):
    """A client that waits gets the proxy's own 503 once the upstream drops."""
    seen = w.upstream.seen()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=ask(w, HTTP_REQ)))
    t.start()
    w.upstream.wait_seen(seen + 1)
    w.upstream.drop()
    t.join(DEADLINE)
    r = result.get("r")
    assert r is not None, "no answer\n" + w.describe()
    assert r.status == 503, (r.status, r.body, w.describe())
    assert b"(UC)" in r.body, r.body


def expect_grpc_deadline(w):
    """A client that waits gets the proxy's own DEADLINE_EXCEEDED."""
    r = ask(w, grpc_req("300m"))
    assert r.status == 200, (r.status, r.body, w.describe())
    assert r.header("grpc-status") == "4", r.headers


# --------------------------------------------------------------------------
# plain HTTP: the upstream drops before answering -> 503 UC with a body

def test_reply_into_reset_clients(proxy):
    before = stat(proxy, "downstream_rq_5xx")
    send_and_reset(proxy, N_RAW, HTTP_REQ)
    proxy.upstream.drop()
    wait_ended(proxy, "downstream_rq_5xx", before + N_RAW)
    expect_503_uc(proxy)
    proxy.stop()


def test_reply_into_clients_gone_with_fin(proxy):
    before = stat(proxy, "downstream_rq_5xx")
    seen = proxy.upstream.seen()
    socks = open_and_send(proxy, N_RAW, HTTP_REQ)
    leave(socks, reset=False)
    proxy.upstream.wait_seen(seen + N_RAW)
    proxy.upstream.drop()
    wait_ended(proxy, "downstream_rq_5xx", before + N_RAW)
    expect_503_uc(proxy)
    proxy.stop()


def test_reply_after_curl_gave_up(proxy):
    before = stat(proxy, "downstream_rq_5xx")
    settle = Settle(proxy)
    curl_gives_up(proxy, N_CURL)
    taken = settle.held()
    proxy.upstream.drop()
    wait_ended(proxy, "downstream_rq_5xx", before + taken)
    expect_503_uc(proxy)
    proxy.stop()


# --------------------------------------------------------------------------
# gRPC: the caller's deadline runs out in the proxy -> grpc-status 4

def test_grpc_deadline_into_reset_clients(proxy):
    """The clients reset well within the deadline (2 s)."""
    before = stat(proxy, "downstream_rq_2xx")
    send_and_reset(proxy, N_RAW, grpc_req("2000m"))
    wait_ended(proxy, "downstream_rq_2xx", before + N_RAW)
    expect_grpc_deadline(proxy)
    proxy.stop()


def test_grpc_deadline_into_clients_gone_with_fin(proxy):
    """The clients send and close at once; 0.3 s later the deadline."""
    before = stat(proxy, "downstream_rq_2xx")
    leave(open_and_send(proxy, N_RAW, grpc_req("300m")), reset=False)
    wait_ended(proxy, "downstream_rq_2xx", before + N_RAW)
    expect_grpc_deadline(proxy)
    proxy.stop()


def test_grpc_deadline_after_curl_gave_up(proxy):
    """The deadline (0.3 s) runs out after curl gave up (0.1 s)."""
    settle = Settle(proxy)
    curl_gives_up(proxy, N_CURL, headers=("Content-Type: application/grpc", "TE: trailers",
                                          "grpc-timeout: 300m"), data="")
    taken, st = settle.ended()
    assert settle.delta(st, "downstream_rq_2xx") == taken, (
        "of %d calls taken, %d ended with the proxy's DEADLINE_EXCEEDED"
        % (taken, settle.delta(st, "downstream_rq_2xx")))
    expect_grpc_deadline(proxy)
    proxy.stop()
