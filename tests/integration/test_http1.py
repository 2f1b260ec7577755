"""HTTP/1.1 on the outbound listener: keep-alive, pipelining, chunked and
large bodies streamed both ways with bounded memory, and the framing
errors a proxy must refuse (CL+TE conflicts, oversized headers, garbage)."""
import hashlib
import http.client
import json
import os
import socket
import threading
import time

import pytest

from conftest import (connect, curl, is_closed, raw_exchange, read_response, service_entry,
                      wait_until, workload_entry)

MiB = 1 << 20


@pytest.fixture
def proxy(weft, backend):
    """A proxy in front of one backend, `reviews` (port 9080)."""
    b = backend("reviews-v1")
    w = weft(service_entry("reviews") + workload_entry("reviews-v1", b.port, "reviews", "v1"))
    w.backend = b
    return w


def req(method, path, host="reviews", headers=(), body=b""):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + host] + list(headers)
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding"))
                        for h in headers):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------
# connections

def test_keep_alive_reuses_one_connection(proxy):
    before = proxy.stats()
    c = http.client.HTTPConnection("127.0.0.1", proxy.out_port, timeout=10)
    c.connect()
    local = c.sock.getsockname()
    peers = set()
    for i in range(30):
        c.request("GET", "/k/%d" % i, headers={"Host": "reviews"})
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, body
        assert r.getheader("x-backend") == "reviews-v1"
        assert not r.will_close, "proxy asked to close a keep-alive connection"
        assert c.sock is not None and c.sock.getsockname() == local, "reconnected at %d" % i
        peers.add(json.loads(body)["peer"])
    c.close()
    after = proxy.stats()
    assert after["downstream_cx_total"] - before["downstream_cx_total"] == 1
    # Upstream connections are pooled: 30 sequential requests must not
    # open 30 connections to the backend.
    assert len(peers) <= 2, "upstream connections not reused: %d for 30 requests" % len(peers)


def test_pipelining_answers_in_order(proxy):
    data = (req("GET", "/first") + req("POST", "/echo", body=b"middle")
            + req("GET", "/third", headers=["x-n: 3"]))
    (r1, r2, r3), closed = raw_exchange(proxy.out_port, data, count=3)
    assert r1.status == 200 and r1.json()["path"] == "/first"
    assert r2.status == 200 and r2.body == b"middle"
    assert r3.status == 200 and r3.json()["path"] == "/third"
    assert r3.json()["headers"]["x-n"] == "3"
    assert not closed, "connection closed after pipelined requests"


def test_pipelined_requests_split_across_writes(proxy):
    # A request cut mid-header, the rest arriving with the next request.
    data = req("GET", "/one") + req("GET", "/two")
    s = connect(proxy.out_port)
    try:
        cut = len(req("GET", "/one")) - 7
        s.sendall(data[:cut])
        time.sleep(0.05)  # load shaping: make the two writes separate segments
        s.sendall(data[cut:])
        f = s.makefile("rb")
        assert read_response(f).json()["path"] == "/one"
        assert read_response(f).json()["path"] == "/two"
    finally:
        s.close()


def test_pipelined_while_a_slow_response_is_pending(proxy):
    """The second request arrives while the first (slow) one is answered:
    it waits its turn, answers stay in order."""
    s = connect(proxy.out_port)
    try:
        s.sendall(req("GET", "/slow?ms=300"))
        wait_until(lambda: proxy.backend.inflight() == 1, "the slow request at the backend")
        s.sendall(req("GET", "/after"))
        f = s.makefile("rb")
        assert read_response(f).json()["path"] == "/slow?ms=300"
        assert read_response(f).json()["path"] == "/after"
    finally:
        s.close()


def test_client_half_close_after_request_still_gets_answer(proxy):
    """A client that shuts its writing once the request is sent (as
    `nc -N` does) gets the answer, then the connection closes."""
    s = connect(proxy.out_port)
    try:
        s.sendall(req("GET", "/slow?ms=200"))
        s.shutdown(socket.SHUT_WR)
        f = s.makefile("rb")
        r = read_response(f)
        assert r.status == 200 and r.json()["path"] == "/slow?ms=200"
        assert f.read() == b""  # then closed
    finally:
        s.close()


def test_connection_close_is_honoured(proxy):
    (r,), closed = raw_exchange(proxy.out_port, req("GET", "/bye", headers=["Connection: close"]))
    assert r.status == 200
    assert closed, "proxy kept the connection open after Connection: close"


def test_http10_request(proxy):
    data = b"GET /old HTTP/1.0\r\nHost: reviews\r\n\r\n"
    (r,), closed = raw_exchange(proxy.out_port, data)
    assert r.status == 200 and r.json()["path"] == "/old"
    assert closed, "an HTTP/1.0 request without keep-alive must end with close"


def test_head_then_get_on_one_connection(proxy):
    s = connect(proxy.out_port)
    try:
        f = s.makefile("rb")
        s.sendall(req("HEAD", "/h"))
        h = read_response(f, head=True)
        assert h.status == 200 and h.body == b""
        # the length of the body a GET would get, passed through, not zeroed
        assert int(h.header("content-length") or 0) > 0, h.headers
        s.sendall(req("GET", "/g"))
        g = read_response(f)
        assert g.status == 200 and g.json()["path"] == "/g", "HEAD response framing broken"
    finally:
        s.close()


def test_many_concurrent_connections(proxy):
    errors = []

    def client(i):
        try:
            c = http.client.HTTPConnection("127.0.0.1", proxy.out_port, timeout=20)
            for j in range(10):
                c.request("GET", "/c/%d/%d" % (i, j), headers={"Host": "reviews"})
                r = c.getresponse()
                body = r.read()
                if r.status != 200:
                    errors.append((i, j, r.status, body))
            c.close()
        except Exception as e:  # collected and asserted below
            errors.append((i, repr(e)))

    ts = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:5]


# --------------------------------------------------------------------------
# bodies

def test_content_length_body(proxy):
    body = os.urandom(100000)
    r = curl(proxy.out_url + "/echo", host="reviews", data=body)
    assert r.status == 200 and r.body == body


def test_chunked_upload_with_curl(proxy, tmp_path):
    body = os.urandom(300000)
    f = tmp_path / "up.bin"
    f.write_bytes(body)
    r = curl(proxy.out_url + "/echo", host="reviews", data_file=f,
             headers=["Transfer-Encoding: chunked"])
    assert r.status == 200, r
    assert r.body == body


def test_chunked_upload_with_extensions_and_trailers(proxy):
    data = (b"POST /echo HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n"
            b"1\r\n \r\n"
            b"5\r\nworld\r\n"
            b"0\r\nx-trailer: t\r\n\r\n")
    s = connect(proxy.out_port)
    try:
        f = s.makefile("rb")
        s.sendall(data)
        r = read_response(f)
        assert r.status == 200 and r.body == b"hello world", r.body
        # the connection is still in step: the next request works
        s.sendall(req("GET", "/after"))
        assert read_response(f).json()["path"] == "/after"
    finally:
        s.close()


def test_chunked_response(proxy):
    r = curl(proxy.out_url + "/big?n=1000003", host="reviews")
    assert r.status == 200 and len(r.body) == 1000003 and set(r.body) == {ord("x")}


def test_large_response_streamed_with_bounded_memory(proxy):
    n = 50 * MiB
    base = proxy.rss_kb()
    peak = [base]

    def sample():
        peak[0] = max(peak[0], proxy.rss_kb())

    s = connect(proxy.out_port, timeout=60)
    got = [0]
    digest = hashlib.sha1()
    paused = [False]

    def sink(data):
        got[0] += len(data)
        digest.update(data)
        if got[0] % (4 * MiB) < len(data):
            sample()
        if not paused[0] and got[0] >= MiB:
            # A slow reader: for one second read nothing while the backend
            # writes as fast as it can.  A proxy without back-pressure
            # buffers the rest of the body now.
            paused[0] = True
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                sample()
                time.sleep(0.05)

    try:
        s.sendall(req("GET", "/big?n=%d" % n))
        r = read_response(s.makefile("rb"), sink=sink)
    finally:
        s.close()
    sample()
    assert r.status == 200
    assert got[0] == n, "got %d of %d bytes" % (got[0], n)
    assert digest.hexdigest() == hashlib.sha1(b"x" * n).hexdigest()
    growth_mb = (peak[0] - base) / 1024
    assert growth_mb < 25, "proxy RSS grew %.1f MB streaming a 50 MB response" % growth_mb


def test_large_upload_streamed_with_bounded_memory(proxy):
    n = 20 * MiB
    base = proxy.rss_kb()
    peak = base
    s = connect(proxy.out_port, timeout=60)
    head = req("POST", "/sink?pause_ms=1000", headers=["Content-Length: %d" % n])
    err = []

    def send():
        try:
            s.sendall(head)
            block = b"u" * MiB
            for _ in range(n // MiB):
                s.sendall(block)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=send)
    t.start()
    # The backend reads 1 MiB, stalls a second, then reads the rest; sample
    # the proxy's memory the whole time.
    while t.is_alive():
        peak = max(peak, proxy.rss_kb())
        t.join(0.05)
    try:
        r = read_response(s.makefile("rb"))
    finally:
        s.close()
    assert not err, err
    assert r.status == 200, r.body
    assert r.json()["body_len"] == n
    growth_mb = (peak - base) / 1024
    assert growth_mb < 10, "proxy RSS grew %.1f MB streaming a 20 MB upload" % growth_mb


# --------------------------------------------------------------------------
# refusals

@pytest.mark.parametrize("headers", [
    ["Content-Length: 5", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding: chunked", "Content-Length: 5"],
    ["Content-Length: 5", "Content-Length: 6"],
    ["Content-Length: -1"],
    ["Content-Length: 1x"],
], ids=["cl-te", "te-cl", "two-cl", "negative-cl", "bad-cl"])
def test_bad_framing_400_and_close(proxy, headers):
    before = proxy.backend.served()
    data = req("POST", "/echo", headers=headers) + b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: reviews\r\n\r\n"
    s = connect(proxy.out_port)
    try:
        s.sendall(data)
        f = s.makefile("rb")
        r = read_response(f)
        assert r.status == 400, (r.status, r.body)
        # After a framing error the rest of the bytes cannot be trusted:
        # the proxy must close rather than answer a smuggled request.
        rest = b""
        s.settimeout(5)
        try:
            while True:
                d = f.read1(65536)
                if not d:
                    break
                rest += d
        except (TimeoutError, OSError):
            pytest.fail("connection left open after a 400 for bad framing")
        assert b"smuggled" not in rest and b"HTTP/1.1 200" not in rest, rest
    finally:
        s.close()
    assert proxy.backend.served() == before, "a request with bad framing reached the backend"


def test_header_over_limit_431(proxy):
    data = req("GET", "/", headers=["x-big: " + "a" * (70 * 1024)])
    s = connect(proxy.out_port)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy may answer and close before reading it all
        r = read_response(s.makefile("rb"))
        assert r.status == 431, (r.status, r.body)
    finally:
        s.close()


def test_many_headers_over_limit_431(proxy):
    hs = ["x-h%d: %s" % (i, "b" * 1000) for i in range(70)]
    s = connect(proxy.out_port)
    try:
        try:
            s.sendall(req("GET", "/", headers=hs))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = read_response(s.makefile("rb"))
        assert r.status == 431, (r.status, r.body)
    finally:
        s.close()


def test_header_under_limit_passes(proxy):
    big = "a" * (40 * 1024)
    r = curl(proxy.out_url + "/", host="reviews", headers=["x-big: " + big])
    assert r.status == 200, r
    assert r.json()["headers"]["x-big"] == big


@pytest.mark.parametrize("line", [
    b"this is not http\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: reviews\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: reviews\r\nbad header line\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\nHost: reviews\r\n\r\n",
], ids=["garbage", "bad-version", "bad-header", "nul"])
def test_bad_request_400(proxy, line):
    s = connect(proxy.out_port)
    try:
        s.sendall(line)
        r = read_response(s.makefile("rb"))
        allowed = (400, 505) if b"9.9" in line else (400,)
        assert r.status in allowed, (r.status, r.body)
        assert is_closed(s), "connection left open after a malformed request"
    finally:
        s.close()
    # and the proxy still serves
    r = curl(proxy.out_url + "/", host="reviews")
    assert r.status == 200


def test_client_disconnect_mid_response_keeps_proxy_healthy(proxy):
    s = connect(proxy.out_port)
    s.sendall(req("GET", "/big?n=%d" % (30 * MiB)))
    s.recv(65536)
    s.close()
    wait_until(lambda: proxy.backend.inflight() == 0, "backend to see the aborted download end")
    r = curl(proxy.out_url + "/", host="reviews")
    assert r.status == 200
