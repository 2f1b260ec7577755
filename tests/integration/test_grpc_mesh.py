"""gRPC through the mesh (issue 5): a grpcio client → client proxy outbound
(h2c) → HTTP/2 over mTLS → server proxy inbound → grpcio app (h2c, the
server proxy started with --app-protocol grpc), in static mode and in xDS
mode; and the gRPC errors the proxies generate themselves, which must be
trailers-only responses (HTTP 200, content-type application/grpc,
grpc-status, grpc-message) with Envoy's HTTP→gRPC status mapping.

Both ends are Debian's python3-grpcio (C-core 1.51) with generic handlers
and bytes messages (grpc_mesh_app.py is the app); the client channel dials
the client proxy's outbound port with grpc.default_authority set to
echo.default.svc.cluster.local:9090, so the proxy routes by :authority.
nghttp shows the frames of a proxy-generated error."""
import hashlib
import json
import os
import queue
import select
import signal
import subprocess
import tempfile
import time

import grpc
import pytest

from conftest import (CHILD_ENV, DEADLINE, HERE, free_port, outbound_cluster,
                      sidecar_workload_entry, two_proxies, typed_service_entry, wait_endpoints,
                      wait_until)
from test_http2 import nghttp

APP = HERE / "grpc_mesh_app.py"
PYTHON = "/usr/bin/python3"  # Debian's python3-grpcio lives there
SERVICE = "weft.test.Mesh"
AUTH = "echo.default.svc.cluster.local:9090"
MiB = 1 << 20


# --------------------------------------------------------------------------
# the app and the client channel

class GrpcApp:
    """grpc_mesh_app.py server on a free loopback port (.port)."""

    def __init__(self, logdir):
        self.err_path = os.path.join(logdir, "grpc-app-%d.stderr" % id(self))
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([PYTHON, str(APP), "server", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self.err, env=CHILD_ENV,
                                     start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], DEADLINE)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.kill()
            raise AssertionError("grpc_mesh_app.py did not start: %r\n%s" % (line, self.stderr()))
        self.port = int(line.split()[1])

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def kill(self):
        """SIGKILL, as a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.killed = True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("grpc_mesh_app.py ignored SIGTERM\n" + self.stderr())
            assert rc == 0, "grpc_mesh_app.py exited %d\n%s" % (rc, self.stderr())
        self.proc.stdout.close()
        self.err.close()


@pytest.fixture
def grpc_app(tmp_path):
    """Factory: grpc_app() -> a running GrpcApp, stopped at teardown."""
    made = []

    def make():
        a = GrpcApp(str(tmp_path))
        made.append(a)
        return a
    yield make
    for a in made:
        if getattr(a, "killed", False):
            a.proc.stdout.close()
            a.err.close()
        else:
            a.stop()


@pytest.fixture
def channels():
    """Factory: channels(port, authority=AUTH) -> a grpc channel to
    127.0.0.1:port that sends that :authority; closed at teardown."""
    made = []

    def make(port, authority=AUTH):
        ch = grpc.insecure_channel("127.0.0.1:%d" % port, options=[
            ("grpc.default_authority", authority),
            ("grpc.max_receive_message_length", 16 * MiB),
            ("grpc.max_send_message_length", 16 * MiB),
            ("grpc.enable_retries", 0)])
        made.append(ch)
        return ch
    yield make
    for ch in made:
        ch.close()


class Mesh:
    """Calls of weft.test.Mesh on one channel (bytes in, bytes out)."""

    def __init__(self, ch):
        self.ch = ch
        self.echo = ch.unary_unary("/%s/Echo" % SERVICE)
        self.info = ch.unary_unary("/%s/Info" % SERVICE)
        self.count = ch.unary_stream("/%s/Count" % SERVICE)
        self.chat = ch.stream_stream("/%s/Chat" % SERVICE)
        self.fail = ch.unary_unary("/%s/Fail" % SERVICE)
        self.sleep = ch.unary_unary("/%s/Sleep" % SERVICE)
        self.stats = ch.unary_unary("/%s/Stats" % SERVICE)


@pytest.fixture
def mesh(weft, ca, grpc_app, channels):
    """The gRPC app behind a server proxy (--app-protocol grpc), reached as
    echo:9090 (a port named grpc) through a client proxy over mTLS.
    Returns an object with .client, .server, .app, .calls (a Mesh)."""
    app = grpc_app()
    client, server = two_proxies(weft, ca(), app.port, service="echo", port=9090,
                                 port_name="grpc", protocol="GRPC", app_protocol="grpc")

    class M:
        pass
    m = M()
    m.client, m.server, m.app = client, server, app
    m.calls = Mesh(channels(client.out_port))
    return m


def rpc_error(fn, *args, **kw):
    """Runs a call that must fail; returns its grpc.RpcError."""
    try:
        r = fn(*args, **kw)
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded: %r" % (r,))


# --------------------------------------------------------------------------
# calls through two proxies

def test_unary_through_two_proxies(mesh):
    c = mesh.calls
    resp, call = c.echo.with_call(b"hello", timeout=DEADLINE, metadata=[("x-custom", "abc")])
    assert resp == b"hello"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-echo-initial", "yes") in call.initial_metadata(), call.initial_metadata()
    # Trailers travel end to end.
    assert ("x-echo-len", "5") in call.trailing_metadata(), call.trailing_metadata()

    md = json.loads(c.info(b"", timeout=DEADLINE, metadata=[("x-custom", "abc")]))["metadata"]
    assert md.get("x-custom") == "abc", md
    # The app sees the caller's identity: the hop between proxies was mTLS.
    assert md.get("x-forwarded-client-cert", "").endswith(
        "URI=spiffe://cluster.local/ns/default/sa/client"), md
    assert mesh.client.stats()["upstream_ssl.handshake"] >= 1
    # An empty message is a valid message.
    assert c.echo(b"", timeout=DEADLINE) == b""


def test_server_streaming_100_messages(mesh):
    got = list(mesh.calls.count(json.dumps({"n": 100, "size": 100}).encode(), timeout=DEADLINE))
    assert len(got) == 100, len(got)
    for i, m in enumerate(got):
        assert m == (b"%06d:" % i).ljust(100, b"."), (i, m[:20])


def test_bidirectional_ping_pong_50(mesh):
    q = queue.Queue()

    def requests():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    responses = mesh.calls.chat(requests(), timeout=DEADLINE)
    # Each answer must arrive before the next message is sent: nothing on
    # the way may wait for the end of the request stream.
    for i in range(50):
        q.put(b"ping-%d" % i)
        assert next(responses) == b"pong:ping-%d" % i
    q.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


def test_status_error_message_arrives_intact(mesh):
    message = "no such thing: ü (100% sure)"
    e = rpc_error(mesh.calls.fail, json.dumps({"code": "NOT_FOUND", "message": message}).encode(),
                  timeout=DEADLINE)
    assert e.code() == grpc.StatusCode.NOT_FOUND, (e.code(), e.details())
    assert e.details() == message, e.details()
    # The stream after an error is fine.
    assert mesh.calls.echo(b"again", timeout=DEADLINE) == b"again"


def test_deadline_expires_as_deadline_exceeded(mesh):
    t0 = time.monotonic()
    e = rpc_error(mesh.calls.sleep, json.dumps({"ms": 5000}).encode(), timeout=0.5)
    took = time.monotonic() - t0
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
    assert took < 3.0, "the deadline of 0.5 s took %.2fs" % took

    # The app saw its call end early (grpc-timeout or the reset passed
    # through both proxies), well before its 5 s.
    def ended():
        return json.loads(mesh.calls.stats(b"", timeout=DEADLINE))["ended_early"] >= 1
    wait_until(ended, "the app to see the expired call end", timeout=4)
    assert mesh.calls.echo(b"after", timeout=DEADLINE) == b"after"


def test_large_messages_3mib(mesh):
    big = os.urandom(3 * MiB)
    got = mesh.calls.echo(big, timeout=DEADLINE)
    assert len(got) == len(big) and hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    msgs = list(mesh.calls.count(json.dumps({"n": 3, "size": 3 * MiB}).encode(),
                                 timeout=DEADLINE))
    assert [len(m) for m in msgs] == [3 * MiB] * 3
    assert [m[:7] for m in msgs] == [b"000000:", b"000001:", b"000002:"]
    # And both ways at once on a bidirectional stream.
    q = [os.urandom(3 * MiB) for _ in range(2)]
    back = list(mesh.calls.chat(iter(q), timeout=DEADLINE))
    assert back == [b"pong:" + m for m in q]


# --------------------------------------------------------------------------
# errors the proxies generate

def grpc_frames_of_error(port, authority):
    """Sends one gRPC call (an empty message) with nghttp; returns the
    stream's frames as nghttp saw them: [(type, flags, headers)]."""
    with tempfile.TemporaryDirectory(prefix="weft-grpc-") as td:
        body = os.path.join(td, "empty-message")
        with open(body, "wb") as f:
            f.write(b"\x00\x00\x00\x00\x00")  # uncompressed, length 0
        run = nghttp(port, ["/%s/Echo" % SERVICE], authority=authority,
                     extra=["-d", body, "-H", "content-type: application/grpc",
                            "-H", "te: trailers"])
    assert len(run.streams) == 1, run.out[-3000:]
    return list(run.streams.values())[0]["frames"], run.out


def assert_trailers_only(frames, code, out):
    """One HEADERS frame with END_STREAM: :status 200, content-type
    application/grpc, grpc-status CODE, a grpc-message; no DATA."""
    assert [t for t, _, _ in frames] == ["HEADERS"], "not trailers-only: %s\n%s" % (
        frames, out[-3000:])
    _, flags, hs = frames[0]
    assert flags & 0x1, "the one HEADERS frame has no END_STREAM: %s" % (frames,)
    h = dict(hs)
    assert h.get(":status") == "200", hs
    assert h.get("content-type", "").startswith("application/grpc"), hs
    assert h.get("grpc-status") == str(code), hs
    assert h.get("grpc-message"), hs


def test_proxy_generated_errors_are_trailers_only(weft, ca, grpc_app, channels):
    app = grpc_app()
    dead = free_port()
    # gone:9090 has one endpoint (with a sidecar) where nothing listens;
    # empty:9090 has none.
    more = (typed_service_entry("gone", 9090, "grpc", "GRPC")
            + sidecar_workload_entry("gone-1", dead, "gone", "gone", "grpc")
            + typed_service_entry("empty", 9090, "grpc", "GRPC"))
    client, server = two_proxies(weft, ca(), app.port, service="echo", port=9090,
                                 port_name="grpc", protocol="GRPC", app_protocol="grpc",
                                 client_yaml=more)
    cases = [("nosuch.default.svc.cluster.local:9090", grpc.StatusCode.UNIMPLEMENTED, 12,
              "no route"),
             ("gone.default.svc.cluster.local:9090", grpc.StatusCode.UNAVAILABLE, 14,
              "connect"),
             ("empty.default.svc.cluster.local:9090", grpc.StatusCode.UNAVAILABLE, 14,
              "no healthy upstream")]
    for authority, code, number, reason in cases:
        calls = Mesh(channels(client.out_port, authority))
        e = rpc_error(calls.echo, b"x", timeout=DEADLINE)
        assert e.code() == code, (authority, e.code(), e.details())
        assert reason in e.details(), (authority, e.details())
        frames, out = grpc_frames_of_error(client.out_port, authority)
        assert_trailers_only(frames, number, out)
    # The good service still answers on the same proxy.
    assert Mesh(channels(client.out_port)).echo(b"ok", timeout=DEADLINE) == b"ok"


def test_app_failure_behind_the_server_proxy_is_unavailable(mesh):
    """The server proxy's own errors (reset by the app, then connect
    refused) reach the client as UNAVAILABLE through the client proxy."""
    c = mesh.calls
    assert c.echo(b"warm", timeout=DEADLINE) == b"warm"
    pending = c.sleep.future(json.dumps({"ms": 10000}).encode(), timeout=DEADLINE)
    wait_until(lambda: json.loads(c.stats(b"", timeout=DEADLINE))["calls"].get("Sleep"),
               "the app to start the slow call")
    mesh.app.kill()
    e = pending.exception(timeout=DEADLINE)
    assert e is not None and e.code() == grpc.StatusCode.UNAVAILABLE, (
        e and (e.code(), e.details()))
    e = rpc_error(c.echo, b"x", timeout=DEADLINE)
    assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
    assert "connect" in e.details(), e.details()
    frames, out = grpc_frames_of_error(mesh.client.out_port, AUTH)
    assert_trailers_only(frames, 14, out)


# --------------------------------------------------------------------------
# xDS mode

def test_grpc_through_proxies_in_xds_mode(istiod, weft_xds, grpc_app, channels):
    ist = istiod()
    app = grpc_app()
    server = weft_xds(ist, "echo-1", services=("echo:9090",), app_port=app.port,
                      labels={"app": "echo"}, mtls=True, extra=["--app-protocol", "grpc"])
    client = weft_xds(ist, "client-1", labels={"app": "client"}, mtls=True)
    cluster = outbound_cluster("echo", 9090)
    dump = wait_endpoints(client, cluster, {server.inbound_addr})
    cl = [x for x in dump.get("clusters") or [] if x.get("name") == cluster]
    assert cl and "http2_protocol_options" in cl[0], (
        "the registry did not make echo:9090 a gRPC port (--app-protocol grpc): %s" % cl)

    calls = Mesh(channels(client.out_port))
    resp, call = calls.echo.with_call(b"over xds", timeout=DEADLINE)
    assert resp == b"over xds" and ("x-echo-len", "8") in call.trailing_metadata()
    got = list(calls.count(json.dumps({"n": 20, "size": 10}).encode(), timeout=DEADLINE))
    assert got == [(b"%06d:" % i).ljust(10, b".") for i in range(20)]
    back = list(calls.chat(iter([b"a", b"b", b"c"]), timeout=DEADLINE))
    assert back == [b"pong:a", b"pong:b", b"pong:c"]
    md = json.loads(calls.info(b"", timeout=DEADLINE))["metadata"]
    assert md.get("x-forwarded-client-cert", "").endswith(
        "URI=spiffe://cluster.local/ns/default/sa/client"), md

