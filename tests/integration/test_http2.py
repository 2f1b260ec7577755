"""HTTP/2 on weft's data path (issue 5): h2c with prior knowledge on the
outbound listener beside HTTP/1.1, many streams on one connection, HTTP/2
between proxies over mTLS (one pooled multiplexed connection per
destination), HTTP/2-only apps behind the mesh, and per-stream flow
control (a slow reader on one stream must not stall the others).

Peers nobody here wrote: curl (--http2-prior-knowledge), nghttp, h2load
(nghttp2-client), nghttpd (nghttp2-server).  The slow reader is a small
HTTP/2 client on raw frames below (H2Client), with libnghttp2's HPACK
decoder through ctypes, since Debian's python3 has no HTTP/2 client.

Topologies (all loopback):
    one proxy   client → proxy outbound (h2c or HTTP/1.1) → app
    two proxies client → client proxy outbound → mTLS (STRICT) →
                server proxy inbound → app (--app-protocol as the app speaks)

The helpers for the second one (two_proxies, mtls_args, curl_v, ...) are
in conftest.py."""
import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import (CHILD_ENV, DEADLINE, connect, curl, curl_many, curl_v, free_port, port_open,
                      two_proxies, typed_service_entry, wait_until, workload_entry)

MiB = 1 << 20
WEB = "web:9080"  # the service every test here calls, as the client names it


# --------------------------------------------------------------------------
# topologies (two_proxies and its builders live in conftest.py)

def one_proxy(weft, app_port, service="web", port=9080, port_name="http", protocol="HTTP"):
    """A proxy whose outbound listener reaches the app at app_port directly
    (plaintext) as SERVICE:PORT."""
    return weft(typed_service_entry(service, port, port_name, protocol)
                + workload_entry(service + "-1", app_port, app=service, port_names=(port_name,)),
                name="proxy")


@pytest.fixture(params=["one_proxy", "two_proxies"])
def path_to_web(request, weft, backend, ca):
    """(entry proxy, backend, hops): backend.py as web:9080 through one
    proxy or two."""
    b = backend("web-1")
    if request.param == "one_proxy":
        return one_proxy(weft, b.port), b, 1
    client, _ = two_proxies(weft, ca(), b.port)
    return client, b, 2


# Connection-specific header fields, which HTTP/2 forbids (RFC 9113 8.2.2).
CONNECTION_SPECIFIC = ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                       "upgrade")


# --------------------------------------------------------------------------
# nghttp -v, parsed

class NghttpRun:
    """What `nghttp -nv` showed: .connections (how many "Connected"),
    .streams {id: {"status", "headers", "frames": [(type, flags, headers)],
    "data": bytes received}}, .rc, .out, .elapsed (seconds)."""

    FRAME = re.compile(r"\[\s*[\d.]+\] recv (\w+) frame <length=(\d+), flags=0x([0-9a-f]+), "
                       r"stream_id=(\d+)>")
    HEADER = re.compile(r"\[\s*[\d.]+\] recv \(stream_id=(\d+)\) (:?[^:\s]+): (.*)$")

    def __init__(self, out, rc, elapsed):
        self.out, self.rc, self.elapsed = out, rc, elapsed
        self.connections = len(re.findall(r"\] Connected$", out, re.M))
        self.streams = {}
        pending = {}
        for line in out.splitlines():
            m = self.HEADER.match(line)
            if m:
                pending.setdefault(int(m.group(1)), []).append((m.group(2), m.group(3)))
                continue
            m = self.FRAME.match(line)
            if m:
                typ, length, flags, sid = m.group(1), int(m.group(2)), int(m.group(3), 16), \
                    int(m.group(4))
                if sid == 0:
                    continue
                st = self.streams.setdefault(sid, {"status": None, "headers": [], "frames": [],
                                                   "data_len": 0})
                hs = pending.pop(sid, []) if typ == "HEADERS" else []
                st["frames"].append((typ, flags, hs))
                if typ == "HEADERS":
                    st["headers"] += hs
                    for k, v in hs:
                        if k == ":status" and st["status"] is None:
                            st["status"] = int(v)
                if typ == "DATA":
                    st["data_len"] += length

    def statuses(self):
        return {sid: st["status"] for sid, st in self.streams.items()}


def nghttp(port, paths, authority=WEB, extra=(), timeout=DEADLINE):
    """nghttp -nv to 127.0.0.1:port for each path (one connection),
    :authority overridden.  Returns an NghttpRun."""
    args = ["nghttp", "-nv", "--no-dep", "-t", "%ds" % timeout, "-H", ":authority: " + authority]
    args += list(extra) + ["http://127.0.0.1:%d%s" % (port, p) for p in paths]
    t0 = time.monotonic()
    p = subprocess.run(args, capture_output=True, env=CHILD_ENV, timeout=timeout + 10)
    return NghttpRun(p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace"),
                     p.returncode, time.monotonic() - t0)


def h2load(port, path="/", authority=WEB, c=4, m=100, n=4000, timeout=60):
    """h2load (h2c prior knowledge); returns (counts dict, output)."""
    args = ["h2load", "-c", str(c), "-m", str(m), "-n", str(n), "-H", ":authority: " + authority,
            "http://127.0.0.1:%d%s" % (port, path)]
    p = subprocess.run(args, capture_output=True, env=CHILD_ENV, timeout=timeout)
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    m_rq = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    m_st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m_rq and m_st, "h2load printed no summary (exit %d):\n%s" % (p.returncode, out[-3000:])
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    counts = dict(zip(keys, map(int, m_rq.groups())))
    counts.update(zip(("2xx", "3xx", "4xx", "5xx"), map(int, m_st.groups())))
    proto = re.search(r"Application protocol: (\S+)", out)
    counts["protocol"] = proto.group(1) if proto else None
    return counts, out


# --------------------------------------------------------------------------
# a minimal HTTP/2 client on raw frames

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
CANCEL = 0x8


class _NV(ctypes.Structure):
    _fields_ = [("name", ctypes.POINTER(ctypes.c_uint8)), ("value", ctypes.POINTER(ctypes.c_uint8)),
                ("namelen", ctypes.c_size_t), ("valuelen", ctypes.c_size_t),
                ("flags", ctypes.c_uint8)]


class HpackDecoder:
    """libnghttp2's HPACK inflater (nghttp2_hd_inflate_*), through ctypes:
    the response side needs Huffman decoding and the dynamic table."""
    FINAL, EMIT = 0x01, 0x02

    def __init__(self):
        lib = ctypes.CDLL(ctypes.util.find_library("nghttp2") or "libnghttp2.so.14")
        lib.nghttp2_hd_inflate_new.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.nghttp2_hd_inflate_hd2.argtypes = [ctypes.c_void_p, ctypes.POINTER(_NV),
                                               ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
                                               ctypes.c_size_t, ctypes.c_int]
        lib.nghttp2_hd_inflate_hd2.restype = ctypes.c_ssize_t
        lib.nghttp2_hd_inflate_end_headers.argtypes = [ctypes.c_void_p]
        lib.nghttp2_hd_inflate_del.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.inf = ctypes.c_void_p()
        assert lib.nghttp2_hd_inflate_new(ctypes.byref(self.inf)) == 0

    def decode(self, block):
        buf = ctypes.create_string_buffer(bytes(block), len(block))
        base, off, out = ctypes.addressof(buf), 0, []
        while True:
            nv, flags = _NV(), ctypes.c_int(0)
            rv = self.lib.nghttp2_hd_inflate_hd2(self.inf, ctypes.byref(nv), ctypes.byref(flags),
                                                 base + off, len(block) - off, 1)
            if rv < 0:
                raise AssertionError("HPACK: the proxy sent a header block nghttp2 cannot "
                                     "decode (%d): %r" % (rv, bytes(block)[:100]))
            off += rv
            if flags.value & self.EMIT:
                out.append((ctypes.string_at(nv.name, nv.namelen).decode("latin-1"),
                            ctypes.string_at(nv.value, nv.valuelen).decode("latin-1")))
            if flags.value & self.FINAL:
                self.lib.nghttp2_hd_inflate_end_headers(self.inf)
                return out
            if not flags.value & self.EMIT and off >= len(block):
                raise AssertionError("HPACK: header block ended early")

    def close(self):
        if self.inf:
            self.lib.nghttp2_hd_inflate_del(self.inf)
            self.inf = None


def _hpack_int(n, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = [first | limit]
    n -= limit
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack_literal(fields):
    """Header fields as HPACK literals without indexing, new names, no
    Huffman (RFC 7541 6.2.2): simple and always valid."""
    out = b""
    for k, v in fields:
        k, v = k.encode("latin-1"), v.encode("latin-1")
        out += b"\x00" + _hpack_int(len(k), 7) + k + _hpack_int(len(v), 7) + v
    return out


def h2frame(typ, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


class H2Stream:
    def __init__(self):
        self.headers = None   # the response head: [(name, value)]
        self.trailers = None
        self.data = bytearray()
        self.ended = False
        self.rst = None       # error code of a RST_STREAM from the server

    @property
    def status(self):
        return int(dict(self.headers)[":status"]) if self.headers else None

    def __repr__(self):
        return "<stream headers=%s data=%d bytes ended=%s rst=%s>" % (
            self.headers, len(self.data), self.ended, self.rst)


class H2Client:
    """One h2c connection with prior knowledge.  It never acknowledges a
    stream's DATA by itself: the test decides with window_update(); the
    connection window is opened wide at the start so that only per-stream
    windows limit the server."""

    def __init__(self, port, stream_window=65535):
        self.sock = connect(port)
        self.hpack = HpackDecoder()
        self.streams = {}
        self.goaway = None
        self.buf = b""
        self.block = None  # (sid, header block so far, END_STREAM) until END_HEADERS
        settings = struct.pack(">HI", 0x2, 0) + struct.pack(">HI", 0x4, stream_window)
        self.sock.sendall(PREFACE + h2frame(SETTINGS, 0, 0, settings)
                          + h2frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 30))))

    def request(self, sid, path, authority=WEB, method="GET", headers=(), body=None,
                trailers=()):
        """Opens stream sid: HEADERS, the body (if not None) in DATA frames
        of at most 16 KiB, then the trailers (if any) as a HEADERS frame
        that ends the stream.  The body must fit the proxy's initial
        windows (64 KiB until its SETTINGS are acknowledged)."""
        fields = [(":method", method), (":scheme", "http"), (":path", path),
                  (":authority", authority)] + list(headers)
        self.streams[sid] = H2Stream()
        ends = body is None and not trailers
        out = h2frame(HEADERS, END_HEADERS | (END_STREAM if ends else 0), sid,
                      hpack_literal(fields))
        if body is not None:
            pieces = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                if piece or (last and not trailers):
                    out += h2frame(DATA, END_STREAM if last and not trailers else 0, sid, piece)
        if trailers:
            out += h2frame(HEADERS, END_HEADERS | END_STREAM, sid, hpack_literal(trailers))
        self.sock.sendall(out)
        return self.streams[sid]

    def window_update(self, sid, n):
        self.sock.sendall(h2frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", n)))

    def reset(self, sid, code=CANCEL):
        self.sock.sendall(h2frame(RST_STREAM, 0, sid, struct.pack(">I", code)))

    def pump(self, pred, what, timeout=DEADLINE):
        """Reads frames until pred() is true; fails after timeout seconds."""
        end = time.monotonic() + timeout
        while not pred():
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out after %.1fs waiting for %s; streams %s, goaway %s"
                                     % (timeout, what, self.streams, self.goaway))
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                continue
            if not data:
                raise AssertionError("the proxy closed the connection while waiting for %s; "
                                     "streams %s, goaway %s" % (what, self.streams, self.goaway))
            self.buf += data
            self._frames()

    def _frames(self):
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                return
            typ, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            self._frame(typ, flags, sid, payload)

    def _frame(self, typ, flags, sid, p):
        st = self.streams.get(sid)
        if typ in (DATA, HEADERS) and flags & PADDED:
            p = p[1:len(p) - p[0]]
        if typ == DATA:
            assert st is not None, "DATA on unknown stream %d" % sid
            st.data += p
            st.ended = st.ended or bool(flags & END_STREAM)
        elif typ == HEADERS:
            if flags & PRIO_FLAG:
                p = p[5:]
            self.block = (sid, p, bool(flags & END_STREAM))
            if flags & END_HEADERS:
                self._header_block()
        elif typ == CONTINUATION:
            assert self.block and self.block[0] == sid, "CONTINUATION out of place"
            self.block = (sid, self.block[1] + p, self.block[2])
            if flags & END_HEADERS:
                self._header_block()
        elif typ == RST_STREAM:
            if st is not None:
                st.rst = struct.unpack(">I", p)[0]
        elif typ == SETTINGS:
            if not flags & ACK:
                self.sock.sendall(h2frame(SETTINGS, ACK, 0))
        elif typ == PING:
            if not flags & ACK:
                self.sock.sendall(h2frame(PING, ACK, 0, p))
        elif typ == GOAWAY:
            last, code = struct.unpack(">II", p[:8])
            self.goaway = (last & 0x7FFFFFFF, code, p[8:])
        elif typ == PUSH_PROMISE:
            raise AssertionError("PUSH_PROMISE although SETTINGS_ENABLE_PUSH is 0")

    def _header_block(self):
        sid, block, end = self.block
        self.block = None
        fields = self.hpack.decode(block)
        st = self.streams.get(sid)
        assert st is not None, "HEADERS on unknown stream %d" % sid
        if st.headers is None:
            st.headers = fields
        else:
            st.trailers = fields
        st.ended = st.ended or end

    def close(self):
        self.sock.close()
        self.hpack.close()


# --------------------------------------------------------------------------
# tests: one proxy, h2c beside HTTP/1.1

def test_h2c_prior_knowledge_to_http1_backend(weft, backend):
    b = backend("web-1")
    w = one_proxy(weft, b.port)

    r = curl_v(w.out_port, "/hello?x=1&y=%C3%BC", headers=["x-custom: abc", "x-two: 1",
                                                          "x-two: 2"])
    assert r.status == 200 and r.version == "2", (r, r.version, r.error)
    assert r.header("x-backend") == "web-1", r
    assert r.header("content-type") == "application/json", r
    bad = [k for k, _ in r.headers if k in CONNECTION_SPECIFIC]
    assert not bad, "connection-specific fields in an HTTP/2 response: %s" % bad
    seen = r.json()
    assert seen["method"] == "GET" and seen["path"] == "/hello?x=1&y=%C3%BC", seen
    assert seen["headers"]["x-custom"] == "abc", seen
    assert seen["headers"]["x-two"] == "1, 2", seen
    # The HTTP/1.1 backend gets a Host from :authority.
    assert seen["headers"]["host"] == WEB, seen

    # A request body (POST, 300 KiB) and a large chunked response body.
    up = os.urandom(300 * 1024)
    r = curl_v(w.out_port, "/echo", method="POST", data=up)
    assert r.status == 200 and r.version == "2", (r, r.error)
    assert r.header("x-body-len") == str(len(up)), r
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(up).digest(), len(r.body)
    r = curl_v(w.out_port, "/big?n=3000000")
    assert r.status == 200 and r.version == "2", (r, r.error)
    assert len(r.body) == 3000000 and r.body == b"x" * 3000000, len(r.body)
    assert r.header("transfer-encoding") is None, r

    # An error status from the app passes as it is.
    r = curl_v(w.out_port, "/status?code=404")
    assert r.status == 404 and r.version == "2", (r, r.error)
    assert r.header("x-backend") == "web-1", r

    # HTTP/1.1 on the same listener still works, origin- and absolute-form.
    r = curl_v(w.out_port, "/h1", http2=False)
    assert r.status == 200 and r.version == "1.1", (r, r.error)
    assert r.json()["path"] == "/h1"
    r = curl("http://web:9080/abs", proxy=w.proxy)
    assert r.status == 200 and r.json()["path"] == "/abs", r


def test_unknown_authority_over_h2_is_404(weft, backend):
    b = backend("web-1")
    w = one_proxy(weft, b.port)
    r = curl_v(w.out_port, "/x", authority="nosuch.default.svc.cluster.local:9080")
    assert r.status == 404 and r.version == "2", (r, r.error)
    assert "no route" in r.text, r
    assert b.served() == 0


def test_nghttp_concurrent_streams_on_one_connection(weft, backend):
    b = backend("web-1")
    w = one_proxy(weft, b.port)
    before = w.stats()["downstream_cx_total"]

    # Six slow requests (600 ms each) on one connection: multiplexed they
    # take about 600 ms, one after the other 3.6 s.
    paths = ["/slow?ms=600&i=%d" % i for i in range(6)]
    run = nghttp(w.out_port, paths)
    assert run.rc == 0, run.out[-3000:]
    assert run.connections == 1, run.out[-3000:]
    st = run.statuses()
    assert len(st) == 6 and set(st.values()) == {200}, (st, run.out[-3000:])
    assert run.elapsed < 2.4, "6 concurrent streams of 600 ms took %.2fs: not concurrent" % (
        run.elapsed)

    # Fifty requests of one URI on the same connection (-m).
    run = nghttp(w.out_port, ["/many"], extra=["-m", "50"])
    assert run.rc == 0, run.out[-3000:]
    st = run.statuses()
    assert len(st) == 50 and set(st.values()) == {200}, st
    assert w.stats()["downstream_cx_total"] - before == 2


def test_h2load_many_streams_few_connections(path_to_web):
    entry, b, hops = path_to_web
    counts, out = h2load(entry.out_port, "/load", c=4, m=100, n=4000)
    assert counts["protocol"] == "h2c", out[-2000:]
    assert counts["succeeded"] == 4000 and counts["failed"] == 0 and counts["errored"] == 0, (
        counts, out[-2000:])
    assert counts["2xx"] == 4000, counts
    assert entry.stats()["downstream_cx_total"] == 4


# --------------------------------------------------------------------------
# an HTTP/2-only app (nghttpd) behind the mesh, called with HTTP/1.1

@pytest.fixture
def nghttpd(tmp_path):
    """Factory: nghttpd() -> (port, log path) of `nghttpd --no-tls` serving
    htdocs/hello.txt, echoing POST bodies; stopped at teardown."""
    if not shutil.which("nghttpd"):
        pytest.fail("nghttpd not found: apt-get install -y nghttp2-server", pytrace=False)
    procs = []

    def start():
        docs = tmp_path / "htdocs"
        docs.mkdir(exist_ok=True)
        (docs / "hello.txt").write_text("hello from an HTTP/2-only server\n")
        port = free_port()
        log = tmp_path / ("nghttpd-%d.log" % port)
        with open(log, "wb") as f:
            p = subprocess.Popen(["nghttpd", "--no-tls", "-a", "127.0.0.1", "-d", str(docs),
                                  "--echo-upload", "-v", str(port)],
                                 stdout=f, stderr=subprocess.STDOUT, env=CHILD_ENV,
                                 start_new_session=True)
        procs.append(p)

        def up():
            if p.poll() is not None:
                raise AssertionError("nghttpd exited %d:\n%s" % (p.returncode, log.read_text()))
            return port_open(port)
        wait_until(up, "nghttpd on port %d" % port)
        return port, log
    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.parametrize("hops", [1, 2])
def test_http1_client_to_http2_only_app(weft, ca, nghttpd, hops):
    port, log = nghttpd()
    # nghttpd really speaks only HTTP/2: a plain HTTP/1.1 request fails.
    direct = curl_v(port, "/hello.txt", http2=False)
    assert direct.status != 200, direct
    if hops == 1:
        # The service port says HTTP2: the proxy dials the app with h2c.
        entry = one_proxy(weft, port, service="h2app", port_name="http2", protocol="HTTP2")
    else:
        # The server proxy speaks HTTP/2 to its app because of --app-protocol.
        entry, _ = two_proxies(weft, ca(), port, service="h2app", app_protocol="http2")
    r = curl("http://h2app:9080/hello.txt", proxy=entry.proxy)
    assert r.status == 200, (r, entry.describe())
    assert r.body == b"hello from an HTTP/2-only server\n", r
    body = os.urandom(200 * 1024)
    r = curl("http://h2app:9080/upload", proxy=entry.proxy, method="POST", data=body)
    assert r.status == 200, r
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(body).digest(), len(r.body)
    r = curl("http://h2app:9080/missing.txt", proxy=entry.proxy)
    assert r.status == 404, r
    assert "recv HEADERS frame" in log.read_text(errors="replace")


# --------------------------------------------------------------------------
# HTTP/2 between proxies

def test_http1_through_two_proxies_keeps_messages_intact(weft, backend, ca):
    b = backend("web-1")
    client, server = two_proxies(weft, ca(), b.port, client_workers=1)
    r = curl("http://web:9080/a?q=1", proxy=client.proxy,
             headers=["x-custom: abc", "x-two: 1", "x-two: 2"])
    assert r.status == 200, (r, client.describe(), server.describe())
    seen = r.json()
    assert seen["path"] == "/a?q=1" and seen["method"] == "GET", seen
    assert seen["headers"]["x-custom"] == "abc" and seen["headers"]["x-two"] == "1, 2", seen
    assert seen["headers"]["host"] == WEB, seen
    assert seen["headers"]["x-forwarded-client-cert"].endswith(
        "URI=spiffe://cluster.local/ns/default/sa/client"), seen
    up = os.urandom(MiB)
    r = curl("http://web:9080/echo", proxy=client.proxy, method="POST", data=up)
    assert r.status == 200 and r.body == up, (r.status, len(r.body))
    r = curl("http://web:9080/big?n=5000000", proxy=client.proxy)
    assert r.status == 200 and len(r.body) == 5000000, (r.status, len(r.body))
    r = curl("http://web:9080/status?code=404", proxy=client.proxy)
    assert r.status == 404 and r.header("x-backend") == "web-1", r
    # HEAD: a head with framing headers but no body must not hang anyone.
    r = curl("http://web:9080/big?n=100", proxy=client.proxy, extra=["-I"])
    assert r.status == 200 and r.header("x-backend") == "web-1", r
    st = client.stats()
    assert st["upstream_cx_total"] == 1, "one worker, sequential requests: one pooled " \
        "connection to the server proxy, got %d" % st["upstream_cx_total"]
    assert st["upstream_ssl.handshake"] == 1, st


def test_thousand_requests_reuse_few_tls_connections(weft, backend, ca):
    b = backend("web-1")
    client, server = two_proxies(weft, ca(), b.port, client_workers=2)
    results, errors = [], []

    def run():
        try:
            results.extend(curl_many("http://web:9080/r", 125, proxy=client.proxy))
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 1000, len(results)
    bad = [r for r in results if r != (200, "web-1")]
    assert not bad, "%d of 1000 failed, e.g. %s" % (len(bad), bad[:5])
    st = client.stats()
    cluster = "cluster.outbound|9080||web.default.svc.cluster.local.upstream_cx_total"
    assert st["upstream_ssl.handshake"] <= 2, "1000 requests took %d TLS handshakes " \
        "(2 workers: at most 2 pooled HTTP/2 connections)" % st["upstream_ssl.handshake"]
    assert st["upstream_cx_total"] <= 2, st["upstream_cx_total"]
    assert st.get(cluster, 0) <= 2, {k: v for k, v in st.items() if "upstream_cx" in k}
    assert server.stats()["ssl.handshake"] <= 2, server.stats()


# --------------------------------------------------------------------------
# flow control: one stalled stream, the others go on

def test_slow_reader_does_not_stall_other_streams(path_to_web):
    entry, b, hops = path_to_web
    c = H2Client(entry.out_port, stream_window=65535)
    try:
        big = c.request(1, "/big?n=20000000")
        c.pump(lambda: len(big.data) >= 65535, "stream 1 to fill its 64 KiB window")
        assert big.status == 200, big
        # Stream 1 is stalled: its window is spent and never reopened.
        t0 = time.monotonic()
        small = c.request(3, "/fast")
        c.pump(lambda: small.ended, "stream 3 to complete while stream 1 is stalled", timeout=5)
        took = time.monotonic() - t0
        assert small.status == 200, small
        assert json.loads(bytes(small.data))["path"] == "/fast", small
        assert took < 2.0, "stream 3 took %.2fs behind a stalled stream" % took
        assert len(big.data) == 65535, "the proxy overran stream 1's window: %d bytes" % len(
            big.data)
        assert not big.ended and big.rst is None and c.goaway is None, (big, c.goaway)

        # Reopened, stream 1 goes on; cancelled, the connection stays usable.
        c.window_update(1, MiB)
        c.pump(lambda: len(big.data) >= 65535 + MiB, "stream 1 to resume after WINDOW_UPDATE")
        c.reset(1)
        after = c.request(5, "/after")
        c.pump(lambda: after.ended, "stream 5 after stream 1 was cancelled")
        assert after.status == 200, after
        assert c.goaway is None, c.goaway
        # The cancel reached the app (the connection is still open): its
        # /big request is no longer being served.
        wait_until(lambda: b.inflight() == 0, "the backend's /big request to end after the "
                   "client cancelled stream 1")
    finally:
        c.close()
    if hops == 2:
        # All three streams shared the one pooled connection between the proxies.
        assert entry.stats()["upstream_cx_total"] == 1, entry.stats()


def test_unread_streams_keep_connection_memory_bounded(weft, backend):
    """64 streams of 2 MiB to a client that reads nothing: each stream may
    hold 1 MiB in the proxy, but one connection holds at most about 8 MiB
    in all; opened again, every body arrives whole."""
    b = backend("web-1")
    w = one_proxy(weft, b.port)
    n, size = 64, 2 * MiB
    c = H2Client(w.out_port, stream_window=65535)
    try:
        before = w.rss_kb()
        streams = [c.request(1 + 2 * i, "/big?n=%d" % size) for i in range(n)]
        c.pump(lambda: all(st.status == 200 and st.data for st in streams),
               "every stream's head and first bytes")
        samples = []

        def flat():
            samples.append(w.rss_kb())
            return len(samples) > 15 and max(samples[-8:]) - min(samples[-8:]) < 256
        wait_until(flat, "the proxy's memory to stop growing", interval=0.1)
        grown = max(samples) - before
        assert grown < 24 * 1024, "one unread connection grew the proxy by %d KiB" % grown
        for st_id in range(n):
            c.window_update(1 + 2 * st_id, size)
        c.pump(lambda: all(st.ended for st in streams), "every stream to complete", timeout=60)
        assert all(len(st.data) == size and st.status == 200 for st in streams), \
            [(st.status, len(st.data)) for st in streams if len(st.data) != size]
    finally:
        c.close()


# --------------------------------------------------------------------------
# request trailers: HEADERS after the body, with END_STREAM

def received_trailers(log):
    """The trailer blocks nghttpd -v logged receiving: {stream id: [(frame
    type, flags, fields)]} of the streams whose request ended with a
    HEADERS frame that has no pseudo-header.  nghttpd logs frames as nghttp
    does (NghttpRun parses them), each line after its connection's
    "[id=N] "; the requests here share one connection."""
    text = re.sub(r"^\[id=\d+\] ", "", log.read_text(errors="replace"), flags=re.M)
    streams = NghttpRun(text, 0, 0).streams
    out = {}
    for sid, st in streams.items():
        last = st["frames"][-1] if st["frames"] else None
        if last and last[0] == "HEADERS" and last[1] & END_STREAM and last[2] and \
                not any(k.startswith(":") for k, _ in last[2]):
            out[sid] = st["frames"]
    return out


@pytest.mark.parametrize("hops", [1, 2])
def test_request_trailers_reach_an_http2_app(weft, ca, nghttpd, hops):
    port, log = nghttpd()
    if hops == 1:
        # The client proxy's HTTP/2 upstream sends them to the app.
        entry = one_proxy(weft, port, service="h2app", port_name="http2", protocol="HTTP2")
    else:
        # Client proxy → server proxy (HTTP/2 over mTLS) → the app: both
        # proxies take them from their client and send them on.
        entry, _ = two_proxies(weft, ca(), port, service="h2app", app_protocol="http2")
    body = os.urandom(40000)  # three DATA frames
    sums = [("x-checksum", hashlib.sha256(body).hexdigest()), ("x-parts", "3")]
    c = H2Client(entry.out_port)
    try:
        full = c.request(1, "/upload", authority="h2app:9080", method="POST", body=body,
                         trailers=sums)
        # Trailers after an empty body: HEADERS, then HEADERS with END_STREAM.
        bare = c.request(3, "/upload", authority="h2app:9080", method="POST", body=b"",
                         trailers=[("x-only", "trailers")])
        c.pump(lambda: full.ended and bare.ended, "both responses")
        assert full.status == 200 and bytes(full.data) == body, (full, entry.describe())
        assert bare.status == 200 and bytes(bare.data) == b"", bare
        assert full.rst is None and bare.rst is None and c.goaway is None
    finally:
        c.close()

    def both():
        got = received_trailers(log)
        return got if len(got) == 2 else None
    got = wait_until(both, "nghttpd to log two requests that end with trailers")
    by_fields = {tuple(frames[-1][2]): frames for frames in got.values()}
    assert set(by_fields) == {tuple(sums), (("x-only", "trailers"),)}, got
    # The body went before the trailers, and no DATA frame ended the stream.
    frames = by_fields[tuple(sums)]
    assert frames[0][0] == "HEADERS" and not frames[0][1] & END_STREAM, frames
    assert [f[0] for f in frames[1:-1]] and all(f[0] == "DATA" for f in frames[1:-1]), frames
    assert not any(f[1] & END_STREAM for f in frames[:-1]), frames


def test_request_trailers_to_an_http1_app_are_dropped(weft, backend):
    # HTTP/1.1 toward the app: the body arrives whole, the trailers do not
    # (nor as headers), and the exchange completes.
    b = backend("web-1")
    w = one_proxy(weft, b.port)
    body = os.urandom(40000)
    c = H2Client(w.out_port)
    try:
        st = c.request(1, "/info", method="POST", body=body, trailers=[("x-late", "1")])
        c.pump(lambda: st.ended, "the response")
        assert st.status == 200, st
        seen = json.loads(bytes(st.data))
        assert seen["method"] == "POST" and seen["body_len"] == len(body), seen
        assert "x-late" not in {k.lower() for k in seen["headers"]}, seen
        after = c.request(3, "/after")
        c.pump(lambda: after.ended, "a request after it on the same connection")
        assert after.status == 200 and c.goaway is None, (after, c.goaway)
    finally:
        c.close()
