"""HTTP/2 toward endpoints (issue 5, core/proxy/upstream_h2.c): a cluster
whose port speaks HTTP2 or GRPC gets one multiplexed HTTP/2 connection per
endpoint and worker (h2c with prior knowledge here), whatever the client
spoke to the proxy.

Backends nobody here wrote:
  - nghttpd (Debian's nghttp2-server) serving a directory of files; with
    --echo-upload it sends request bodies back, with -m it allows only a
    few concurrent streams.  It speaks nothing but HTTP/2, so any answer
    proves the proxy spoke HTTP/2 to it.
  - a python3-grpcio server (this file run as a script, see the end:
    `test_h2_upstream.py grpc-server --port N [--max-age-ms M]`), whose
    max_connection_age makes it send GOAWAY on a schedule and whose
    graceful stop sends GOAWAY before closing.

Clients: curl over HTTP/1.1 to the outbound listener (the proxy changes
protocol on the way), and, where the client must speak HTTP/2 too (gRPC),
curl --http2-prior-knowledge and a grpcio client (this file again,
`grpc-client ...`)."""
import argparse
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import (CHILD_ENV, DEADLINE, connect, curl, curl_v, dedent, free_port, port_open,
                      read_response, wait_until)

MiB = 1 << 20
HOST = "files.default.svc.cluster.local"
CLUSTER = "cluster.outbound|9080||" + HOST
PYTHON = "/usr/bin/python3"  # Debian's python3-grpcio lives there
SMALL = b"hello over HTTP/2\n"


# --------------------------------------------------------------------------
# configuration

def h2_service(port, protocol="HTTP2", by_name=False, name="files", ns="default"):
    """A ServiceEntry for NAME.NS.svc.cluster.local port 9080 with one
    endpoint, 127.0.0.1:PORT.  The port's protocol is HTTP/2 (or gRPC) by
    its protocol field, or (by_name) by Istio's port-name prefix alone."""
    pname = protocol.lower() + ("-files" if by_name else "")
    proto_line = "" if by_name else "\n            protocol: %s" % protocol
    return dedent("""
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata:
          name: %s
          namespace: %s
        spec:
          hosts:
          - %s.%s.svc.cluster.local
          ports:
          - number: 9080
            name: %s%s
          location: MESH_INTERNAL
          resolution: STATIC
          endpoints:
          - address: 127.0.0.1
            ports:
              %s: %d
        """ % (name, ns, name, ns, pname, proto_line, pname, port))


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# backends

@pytest.fixture(scope="module")
def www(tmp_path_factory):
    """The directory nghttpd serves: small.txt, one.bin (1 MiB), big.bin
    (10 MiB) and huge.bin (64 MiB), random bytes."""
    d = tmp_path_factory.mktemp("www")
    (d / "small.txt").write_bytes(SMALL)
    for name, size in (("one.bin", MiB), ("big.bin", 10 * MiB), ("huge.bin", 64 * MiB)):
        (d / name).write_bytes(os.urandom(size))
    return d


class Nghttpd:
    """nghttpd --no-tls on 127.0.0.1:PORT serving root."""

    def __init__(self, root, logdir, port=None, echo=False, max_streams=None, verbose=False,
                 tls=None):
        self.port = port or free_port()
        args = ["nghttpd", "--address=127.0.0.1", "-d", str(root)]
        if not tls:
            args.append("--no-tls")
        if verbose:
            args.append("-v")  # prints the frames and headers it receives
        if echo:
            args.append("--echo-upload")
        if max_streams:
            args += ["-m", str(max_streams)]
        args.append(str(self.port))
        if tls:
            args += [str(tls[0]), str(tls[1])]  # key, certificate (ALPN h2)
        self.log_path = os.path.join(logdir, "nghttpd-%d-%d.log" % (self.port, time.monotonic_ns()))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=CHILD_ENV, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nghttpd exited with %d:\n%s"
                                     % (self.proc.returncode, self.output()))
            return port_open(self.port)
        wait_until(up, "nghttpd to listen on port %d" % self.port)

    def output(self, tail=3000):
        with open(self.log_path, errors="replace") as f:
            text = f.read()
        return text[-tail:] if tail else text

    def received_headers(self, stream_id):
        """The (name, value) pairs of the request HEADERS nghttpd -v logged
        for stream_id, or None before it logged the whole frame."""
        mark = "recv (stream_id=%d) " % stream_id
        out = []
        for line in self.output(tail=None).splitlines():
            if mark in line:
                name, _, value = line.split(mark, 1)[1].partition(": ")
                out.append((name, value))
            elif "recv HEADERS frame" in line and "stream_id=%d>" % stream_id in line:
                return out  # nghttpd logs the fields, then the frame
        return None

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def nghttpd(www, tmp_path):
    """Factory: nghttpd(port=None, echo=False, max_streams=None) -> Nghttpd
    serving www, stopped at teardown."""
    if not shutil.which("nghttpd"):
        pytest.fail("nghttpd not found: install Debian's nghttp2-server (./dev installs it)",
                    pytrace=False)
    made = []

    def make(**kw):
        n = Nghttpd(www, str(tmp_path), **kw)
        made.append(n)
        return n

    yield make
    for n in made:
        n.kill(signal.SIGTERM)


class GrpcServer:
    """This file's grpc-server mode on 127.0.0.1:PORT."""

    def __init__(self, logdir, port=0, max_age_ms=0):
        self.err_path = os.path.join(logdir, "grpc-server-%d.stderr" % time.monotonic_ns())
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, __file__, "grpc-server", "--port", str(port), "--max-age-ms",
             str(max_age_ms)], stdout=subprocess.PIPE, stderr=self.err, env=CHILD_ENV,
            start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], DEADLINE)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise AssertionError("grpc server did not start: %r\n%s" % (line, self.stderr()))
        self.port = int(line.split()[1])

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()[-3000:]

    def stop(self):
        """SIGTERM: the server stops gracefully (GOAWAY first)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


@pytest.fixture
def grpc_server(tmp_path):
    made = []

    def make(**kw):
        g = GrpcServer(str(tmp_path), **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop()


def grpc_client(port, count=1, size=10, timeout=60):
    """Unary Echo calls through the proxy at 127.0.0.1:PORT (authority
    HOST:9080); returns {"ok": n, "errors": {...}}."""
    p = subprocess.run([PYTHON, __file__, "grpc-client", "--target", "127.0.0.1:%d" % port,
                        "--authority", HOST + ":9080", "--count", str(count), "--size",
                        str(size)], capture_output=True, env=CHILD_ENV, timeout=timeout)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return json.loads(p.stdout)


def parallel_gets(url, n, host=HOST, parallel=50):
    """n GETs of url by one curl process with --parallel (each transfer on
    its own connection): a list of (status, bytes downloaded)."""
    with tempfile.TemporaryDirectory(prefix="weft-curl-") as td:
        cfg = os.path.join(td, "curl.cfg")
        with open(cfg, "w") as f:
            f.write('write-out = "%{http_code} %{size_download}\\n"\n')
            f.write('header = "Host: %s"\n' % host)
            for i in range(n):
                f.write('url = "%s?n=%d"\noutput = "/dev/null"\n' % (url, i))
        p = subprocess.run(["curl", "-sS", "--http1.1", "--noproxy", "*", "--parallel",
                            "--parallel-immediate", "--parallel-max", str(parallel),
                            "--max-time", str(DEADLINE * 3), "-K", cfg],
                           capture_output=True, env=CHILD_ENV, timeout=DEADLINE * 4)
        out = []
        for line in p.stdout.decode().splitlines():
            code, _, size = line.partition(" ")
            out.append((int(code) if code.isdigit() else 0, int(size) if size.isdigit() else 0))
        assert len(out) == n, "curl made %d of %d requests: %s" % (len(out), n, p.stderr)
        return out


# --------------------------------------------------------------------------
# files: small, large, many at once

@pytest.mark.parametrize("by_name", [False, True], ids=["protocol-field", "port-name"])
def test_small_and_large_files(weft, nghttpd, www, by_name):
    b = nghttpd()
    w = weft(h2_service(b.port, by_name=by_name))
    r = curl(w.out_url + "/small.txt", host=HOST)
    assert r.status == 200, r
    assert r.body == SMALL
    assert r.header("server").startswith("nghttpd"), r.headers  # an HTTP/2-only server
    assert r.header("content-length") == str(len(SMALL)), r.headers
    big = curl(w.out_url + "/big.bin", host=HOST)
    assert big.status == 200, big.error
    assert sha(big.body) == sha((www / "big.bin").read_bytes())
    head = curl(w.out_url + "/big.bin", host=HOST, extra=("--head",))
    assert head.status == 200, head
    assert head.header("content-length") == str(10 * MiB), head.headers
    missing = curl(w.out_url + "/nope", host=HOST)
    assert missing.status == 404, missing
    st = w.stats()
    assert st[CLUSTER + ".upstream_rq_total"] == 4
    # Pooled: no more than one connection per worker (two workers).
    assert 1 <= st[CLUSTER + ".upstream_cx_total"] <= 2, st
    assert st["upstream_cx_connect_fail"] == 0


def test_concurrent_requests_share_one_connection(weft, nghttpd):
    b = nghttpd()
    w = weft(h2_service(b.port))
    got = parallel_gets(w.out_url + "/one.bin", 50)
    assert got == [(200, MiB)] * 50, got
    st = w.stats()
    assert st[CLUSTER + ".upstream_rq_total"] == 50
    # 50 client connections, all multiplexed on one upstream connection
    # per worker.
    assert st[CLUSTER + ".upstream_cx_total"] <= 2, st
    assert st["upstream_cx_active"] <= 2, st


def test_peer_stream_limit_is_respected(weft, nghttpd):
    # The server allows 2 concurrent streams: the rest wait or go to
    # further connections, and none fails.
    b = nghttpd(max_streams=2)
    w = weft(h2_service(b.port))
    got = parallel_gets(w.out_url + "/one.bin", 20, parallel=20)
    assert got == [(200, MiB)] * 20, got
    assert w.stats()["downstream_rq_5xx"] == 0


def test_slow_client_keeps_proxy_memory_bounded(weft, nghttpd, www):
    # Flow control end to end: while the client reads nothing, the proxy
    # takes no more than its queue plus one stream window from the server.
    b = nghttpd()
    w = weft(h2_service(b.port))
    assert curl(w.out_url + "/small.txt", host=HOST).status == 200  # warm up
    n = 64 * MiB
    base = w.rss_kb()
    peak = [base]
    got = [0]
    digest = hashlib.sha256()
    paused = [False]

    def sample():
        peak[0] = max(peak[0], w.rss_kb())

    def sink(data):
        got[0] += len(data)
        digest.update(data)
        if got[0] % (4 * MiB) < len(data):
            sample()
        if not paused[0] and got[0] >= MiB:
            # A slow reader: for one second it reads nothing while the
            # server sends as fast as the proxy lets it.
            paused[0] = True
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                sample()
                time.sleep(0.05)

    s = connect(w.out_port, timeout=60)
    try:
        s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode())
        r = read_response(s.makefile("rb"), sink=sink)
    finally:
        s.close()
    sample()
    assert r.status == 200
    assert got[0] == n, "got %d of %d bytes" % (got[0], n)
    assert digest.hexdigest() == sha((www / "huge.bin").read_bytes())
    growth_mb = (peak[0] - base) / 1024
    assert growth_mb < 25, "proxy RSS grew %.1f MB streaming a 64 MB response" % growth_mb


def test_request_headers_are_translated(weft, nghttpd):
    b = nghttpd(verbose=True, echo=True)
    w = weft(h2_service(b.port), concurrency=1)
    # (An Upgrade header would make it an upgrade request, which the
    # listener refuses with 403 unless its upgrade_configs allow it.)
    r = curl(w.out_url + "/echo", host=HOST.upper(), data=b"abc",
             headers=["X-Mixed-Case: Yes", "Keep-Alive: timeout=5",
                      "Proxy-Connection: keep-alive", "Connection: keep-alive"])
    assert r.status == 200 and r.body == b"abc", r
    got = wait_until(lambda: b.received_headers(1), "nghttpd to log the request")
    names = [n for n, _ in got]
    # Pseudo-headers first, in the usual order; the authority lower-cased.
    assert got[:4] == [(":method", "POST"), (":scheme", "http"), (":authority", HOST),
                       (":path", "/echo")], got
    assert ("x-mixed-case", "Yes") in got, got
    # HTTP/2 frames the body itself but a length still helps the server.
    assert ("content-length", "3") in got, got
    for banned in ("host", "connection", "keep-alive", "proxy-connection", "upgrade",
                   "transfer-encoding", "te"):
        assert banned not in names, got
    assert all(n == n.lower() for n in names), got


# --------------------------------------------------------------------------
# connectionPool.http.maxRequestsPerConnection

def pool_rule(max_rq, host=HOST):
    """A DestinationRule for host with connectionPool.http.maxRequestsPerConnection."""
    return dedent("""
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata:
          name: files-pool
          namespace: default
        spec:
          host: %s
          trafficPolicy:
            connectionPool:
              http:
                maxRequestsPerConnection: %d
        """ % (host, max_rq))


def test_max_requests_per_connection(weft, nghttpd):
    b = nghttpd()
    w = weft(h2_service(b.port) + pool_rule(2), concurrency=1)
    cl = [c for c in w.config_dump().get("clusters") or []
          if c.get("name") == CLUSTER[len("cluster."):]]
    assert cl, "no cluster %s in /config_dump" % CLUSTER
    assert cl[0].get("common_http_protocol_options", {}).get("max_requests_per_connection") == 2
    # One after the other: two streams per connection, then a new one.
    for _ in range(5):
        r = curl(w.out_url + "/small.txt", host=HOST)
        assert r.status == 200 and r.body == SMALL, r
    st = w.stats()
    assert st[CLUSTER + ".upstream_cx_total"] == 3, st
    # A spent connection closes once its streams are done: only the last,
    # with one stream left to give, stays pooled.
    wait_until(lambda: w.stats()["upstream_cx_active"] == 1, "the spent connections to close")
    # At once: still no connection carries more than two.
    got = parallel_gets(w.out_url + "/one.bin", 10, parallel=10)
    assert got == [(200, MiB)] * 10, got
    # The third connection had one stream left; nine more need five.
    assert w.stats()[CLUSTER + ".upstream_cx_total"] == 3 + 5, w.stats()
    assert w.stats()["upstream_cx_connect_fail"] == 0


# --------------------------------------------------------------------------
# TLS toward an external HTTP/2 server (DestinationRule SIMPLE)

def external_h2(port, pki):
    from test_mtls import external_yaml
    return external_yaml(port, "mode: SIMPLE\ncaCertificates: %s\nsni: api.external.test\n"
                         % (pki / "ca.pem"), port_name="http2", protocol="HTTP2")


def test_h2_over_tls_to_an_external_server(weft, nghttpd, tmp_path):
    from test_mtls import external_pki
    pki = external_pki(tmp_path / "ext")
    b = nghttpd(tls=(pki / "server.key", pki / "server.pem"))
    w = weft(external_h2(b.port, pki), concurrency=1)
    for _ in range(3):
        r = curl("http://api.external.test:8443/small.txt", proxy=w.proxy)
        assert r.status == 200 and r.body == SMALL, (r, w.describe())
    st = w.stats()
    # One TLS connection (ALPN h2) for all three requests.
    assert st["upstream_ssl.handshake"] == 1, st
    assert st["upstream_cx_total"] == 1, st


def test_http1_server_on_an_http2_port_is_a_clear_error(weft, backend):
    # An HTTP/1.1-only server behind a port declared HTTP2: the proxy
    # speaks HTTP/2 (the port says so), the server answers in HTTP/1.x, and
    # client and operator are told what went wrong.
    b = backend("h1-only")
    w = weft(h2_service(b.port), concurrency=1)
    r = curl(w.out_url + "/small.txt", host=HOST)
    assert r.status == 503, r
    assert b"HTTP/2 protocol error" in r.body, r.body
    wait_until(lambda: "does the endpoint speak HTTP/2" in w.stderr(), "the warning")


# --------------------------------------------------------------------------
# request bodies

def test_upload_is_echoed(weft, nghttpd, tmp_path):
    b = nghttpd(echo=True)
    w = weft(h2_service(b.port))
    body = os.urandom(8 * MiB)
    f = tmp_path / "up.bin"
    f.write_bytes(body)
    # Content-Length from the client.
    r = curl(w.out_url + "/echo", host=HOST, data_file=f)
    assert r.status == 200, r.error
    assert sha(r.body) == sha(body)
    # Chunked from the client (HTTP/2 frames it itself upstream).
    small = body[:3 * MiB + 17]
    g = tmp_path / "up2.bin"
    g.write_bytes(small)
    r = curl(w.out_url + "/echo", host=HOST, data_file=g,
             headers=["Transfer-Encoding: chunked"])
    assert r.status == 200, r.error
    assert sha(r.body) == sha(small)
    # An empty POST.
    r = curl(w.out_url + "/echo", host=HOST, data=b"")
    assert r.status == 200 and r.body == b"", r


def test_upload_from_an_http2_client(weft, nghttpd, tmp_path):
    b = nghttpd(echo=True)
    w = weft(h2_service(b.port))
    body = os.urandom(5 * MiB)
    f = tmp_path / "up.bin"
    f.write_bytes(body)
    r = curl(w.out_url + "/echo", host=HOST, data_file=f, extra=("--http2-prior-knowledge",))
    assert r.status == 200, r.error
    assert sha(r.body) == sha(body)


# --------------------------------------------------------------------------
# failures

def test_endpoint_down_is_503_uf(weft):
    port = free_port()  # nobody listens there
    w = weft(h2_service(port))
    r = curl(w.out_url + "/small.txt", host=HOST)
    assert r.status == 503, r
    assert b"(UF)" in r.body and b"127.0.0.1:%d" % port in r.body, r.body
    st = w.stats()
    assert st["upstream_cx_connect_fail"] >= 1
    assert st[CLUSTER + ".upstream_cx_connect_fail"] >= 1


def test_endpoint_killed_mid_download_cuts_the_client(weft, nghttpd):
    b = nghttpd()
    w = weft(h2_service(b.port), concurrency=1)
    s = connect(w.out_port)
    try:
        s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode())
        f = s.makefile("rb")
        got = [0]
        cut = [False]

        def sink(data):
            got[0] += len(data)
            if not cut[0] and got[0] >= MiB:
                # 63 MiB are still to come, far more than the proxy and the
                # sockets hold: the server is mid-stream now.
                cut[0] = True
                b.kill(signal.SIGKILL)

        with pytest.raises(ConnectionError):
            read_response(f, sink=sink)
        assert cut[0] and got[0] < 64 * MiB, got[0]
    finally:
        s.close()
    # The proxy is fine, and a new server gets a new connection.
    b2 = nghttpd(port=b.port)
    r = curl(w.out_url + "/small.txt", host=HOST)
    assert r.status == 200 and r.body == SMALL, r
    assert b2.proc.poll() is None


def test_endpoint_restart_gets_a_new_connection(weft, nghttpd):
    b = nghttpd()
    w = weft(h2_service(b.port), concurrency=1)
    assert curl(w.out_url + "/small.txt", host=HOST).status == 200
    assert w.stats()[CLUSTER + ".upstream_cx_total"] == 1
    b.kill(signal.SIGTERM)
    # The pooled connection notices the close and goes.
    wait_until(lambda: w.stats()["upstream_cx_active"] == 0, "the idle connection to close")
    nghttpd(port=b.port)
    r = curl(w.out_url + "/small.txt", host=HOST)
    assert r.status == 200 and r.body == SMALL, r
    st = w.stats()
    assert st[CLUSTER + ".upstream_cx_total"] == 2, st
    assert st["upstream_cx_active"] == 1


def test_goaway_moves_new_requests_to_a_new_connection(weft, grpc_server):
    # The server sends GOAWAY every 300 ms (max_connection_age): requests
    # keep working, each GOAWAY'd connection finishes and a new one opens.
    # A GET is no gRPC call, but the server answers it (HTTP 200 with a
    # grpc-status), which is all this needs.
    g = grpc_server(max_age_ms=300)
    w = weft(h2_service(g.port, protocol="GRPC"), concurrency=1)
    statuses = []

    def three_connections():
        statuses.append(curl(w.out_url + "/weft.test.Echo/Echo", host=HOST).status)
        return w.stats()[CLUSTER + ".upstream_cx_total"] >= 3
    wait_until(three_connections, "the proxy to follow two GOAWAYs", interval=0.05)
    assert set(statuses) == {200}, statuses
    assert w.stats()["upstream_cx_connect_fail"] == 0


def test_graceful_server_stop_and_restart(weft, grpc_server):
    g = grpc_server()
    w = weft(h2_service(g.port, protocol="GRPC"), concurrency=1)
    assert curl(w.out_url + "/weft.test.Echo/Echo", host=HOST).status == 200
    g.stop()  # GOAWAY, then the connection closes
    wait_until(lambda: w.stats()["upstream_cx_active"] == 0, "the connection to close")
    grpc_server(port=g.port)
    assert curl(w.out_url + "/weft.test.Echo/Echo", host=HOST).status == 200
    assert w.stats()[CLUSTER + ".upstream_cx_total"] == 2


# --------------------------------------------------------------------------
# gRPC end to end (needs an HTTP/2 client side too)

def test_grpc_calls_through_the_proxy(weft, grpc_server):
    g = grpc_server()
    w = weft(h2_service(g.port, protocol="GRPC"))
    # curl: a framed message in, the echo and grpc-status in the trailers out.
    msg = b"weft"
    frame = b"\x00" + len(msg).to_bytes(4, "big") + msg
    r = curl_v(w.out_port, "/weft.test.Echo/Echo", authority=HOST, data=frame,
               headers=["content-type: application/grpc", "te: trailers"])
    assert r.status == 200 and r.version == "2", (r, r.error)
    assert r.header("content-type") == "application/grpc", r.headers
    assert r.body == frame, r.body
    assert dict(r.trailers).get("grpc-status") == "0", (r.headers, r.trailers)
    # A real gRPC client: small and large messages, several calls on one
    # channel.
    out = grpc_client(w.out_port, count=20, size=1000)
    assert out == {"ok": 20, "errors": {}}, out
    out = grpc_client(w.out_port, count=2, size=6 * MiB)
    assert out == {"ok": 2, "errors": {}}, out
    assert w.stats()[CLUSTER + ".upstream_cx_total"] <= 2


# --------------------------------------------------------------------------
# script mode: the gRPC server and client the tests above run

SERVICE = "weft.test.Echo"
MAX_MESSAGE = 16 << 20


def _grpc_server(args):
    import threading
    from concurrent import futures

    import grpc

    opts = [("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE)]
    if args.max_age_ms:
        # GOAWAY every max_age_ms; calls in flight get 10 s to finish.
        opts += [("grpc.max_connection_age_ms", args.max_age_ms),
                 ("grpc.max_connection_age_grace_ms", 10000)]

    def echo(request, context):
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=opts)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if port == 0:
        print("grpc-server: cannot listen on 127.0.0.1:%d" % args.port, file=sys.stderr)
        return 1
    server.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print("PORT %d" % port, flush=True)
    done.wait()
    server.stop(grace=2).wait()  # GOAWAY first
    return 0


def _grpc_client(args):
    import collections

    import grpc

    ch = grpc.insecure_channel(args.target, options=[
        ("grpc.default_authority", args.authority),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE)])
    call = ch.unary_unary("/%s/Echo" % SERVICE)
    payload = (bytes(range(256)) * (args.size // 256 + 1))[:args.size]
    ok, errors = 0, collections.Counter()
    for _ in range(args.count):
        try:
            if call(payload, timeout=DEADLINE) == payload:
                ok += 1
            else:
                errors["wrong payload"] += 1
        except grpc.RpcError as e:
            errors["%s: %s" % (e.code().name, e.details())] += 1
    print(json.dumps({"ok": ok, "errors": dict(errors)}), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description="gRPC helpers of test_h2_upstream.py")
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("grpc-server")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--max-age-ms", type=int, default=0)
    c = sub.add_parser("grpc-client")
    c.add_argument("--target", required=True)
    c.add_argument("--authority", required=True)
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--size", type=int, default=10)
    args = ap.parse_args()
    return _grpc_server(args) if args.mode == "grpc-server" else _grpc_client(args)


if __name__ == "__main__":
    sys.exit(main())
