"""gRPC transport interop: Debian's python3-grpcio (C-core 1.51) against
weft's gRPC server and client (core/grpc), through the unit-test binary's
extra modes:

    grpc_test --serve 0                         an echo server
    grpc_test --client ADDR PATH N SIZE [K=V]   one call, prints the result

The binary comes from $WEFT_GRPC_TEST (default build/tests/grpc_test).
Only loopback; every wait polls with a deadline."""
import concurrent.futures
import os
import select
import signal
import subprocess
import threading

import pytest

from conftest import CHILD_ENV, DEADLINE, REPO, sanitizer_lines

grpc = pytest.importorskip("grpc")

GRPC_TEST = os.environ.get("WEFT_GRPC_TEST") or str(REPO / "build" / "tests" / "grpc_test")
MiB = 1 << 20


def pattern(i, n):
    """Message i of n bytes: a pattern that catches reordering and cuts."""
    return bytes((i * 7 + j * 13) & 0xFF for j in range(min(n, 4096))) * (n // 4096 + 1)


def msg(i, n):
    return pattern(i, n)[:n]


@pytest.fixture
def grpc_test_bin():
    if not os.path.exists(GRPC_TEST):
        pytest.fail("%s is missing: build it (scons build/tests/grpc_test) or set WEFT_GRPC_TEST"
                    % GRPC_TEST)
    return GRPC_TEST


class EchoServer:
    """grpc_test's echo server (args: ["--serve", "0"], or the TLS mode)."""

    def __init__(self, binary, args=("--serve", "0")):
        self.mode = args[0]
        self.proc = subprocess.Popen([binary] + list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=CHILD_ENV)
        ready, _, _ = select.select([self.proc.stdout], [], [], DEADLINE)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("serving "):
            self.proc.kill()
            raise AssertionError("grpc_test %s did not start: %r %s"
                                 % (self.mode, line, self.proc.stderr.read().decode()))
        self.addr = line.split()[1]

    def stop(self):
        """SIGTERM: the server stops; it must exit 0 with no sanitizer report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("grpc_test %s did not stop on SIGTERM" % self.mode)
        err = err.decode(errors="replace")
        assert not sanitizer_lines(err), err
        assert self.proc.returncode == 0, err
        return err


@pytest.fixture
def server(grpc_test_bin):
    s = EchoServer(grpc_test_bin)
    yield s
    s.stop()


@pytest.fixture
def channel(server):
    ch = grpc.insecure_channel(server.addr)
    yield ch
    ch.close()


def bidi(channel, path="/weft.test.Echo/Bidi"):
    # No serializers: grpcio passes bytes through as they are.
    return channel.stream_stream(path)


def test_bidi_echo_many_sizes(channel):
    sizes = [0, 1, 5, 1000, 16384, 16385, 100000, MiB, 3 * MiB, 4 * MiB] + [i * 37 % 3000
                                                                          for i in range(200)]
    sent = [msg(i, n) for i, n in enumerate(sizes)]
    call = bidi(channel)(iter(sent), timeout=DEADLINE)
    got = list(call)
    assert len(got) == len(sent)
    assert [len(g) for g in got] == sizes
    assert got == sent
    assert call.code() == grpc.StatusCode.OK


def test_unary_over_the_same_transport(channel):
    resp, call = channel.unary_unary("/weft.test.Echo/Bidi").with_call(b"hello", timeout=DEADLINE)
    assert resp == b"hello"
    assert call.code() == grpc.StatusCode.OK


def test_server_finishes_with_status_and_encoded_message(channel):
    with pytest.raises(grpc.RpcError) as e:
        list(bidi(channel, "/weft.test.Echo/Fail")(iter([b"x"]), timeout=DEADLINE))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.details() == "nope %"


def test_refused_calls_trailers_only(channel):
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/weft.test.Echo/Nope")(b"x", timeout=DEADLINE)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/weft.test.Echo/Nope" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/weft.test.Echo/Refuse")(b"x", timeout=DEADLINE)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == "go away: \u00fc 100%"


def test_request_metadata_reaches_the_server(channel):
    resp = channel.unary_unary("/weft.test.Echo/Meta")(
        b"x", metadata=(("x-test", "hi there"),), timeout=DEADLINE)
    assert resp.startswith(b"x-test=hi there user-agent=grpc-python/"), resp


def test_oversized_message_is_refused(channel):
    with pytest.raises(grpc.RpcError) as e:
        list(bidi(channel)(iter([b"a", msg(1, 4 * MiB + 1)]), timeout=DEADLINE))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than" in e.value.details()
    # The channel (same HTTP/2 connection) still works.
    assert channel.unary_unary("/weft.test.Echo/Bidi")(b"ok", timeout=DEADLINE) == b"ok"


def test_cancel_mid_stream_then_call_again(channel):
    def slow():
        yield b"first"
        # Never ends on its own: the cancel ends the call.
        while True:
            yield b"more"

    call = bidi(channel)(slow(), timeout=DEADLINE)
    assert next(call) == b"first"
    call.cancel()
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.CANCELLED
    assert channel.unary_unary("/weft.test.Echo/Bidi")(b"again", timeout=DEADLINE) == b"again"


def test_concurrent_streams_on_one_connection(channel):
    """Many calls multiplexed on the channel's one HTTP/2 connection."""
    def one(k):
        sent = [msg(k * 100 + i, (k * 131 + i * 17) % 20000) for i in range(30)]
        got = list(bidi(channel)(iter(sent), timeout=DEADLINE))
        return got == sent

    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        results = list(ex.map(one, range(64)))
    assert all(results)


def test_server_stop_ends_open_streams(grpc_test_bin):
    s = EchoServer(grpc_test_bin)
    ch = grpc.insecure_channel(s.addr)
    done = threading.Event()

    def held_open():
        yield b"open"
        done.wait(DEADLINE)

    try:
        call = bidi(ch)(held_open(), timeout=DEADLINE)
        assert next(call) == b"open"
        s.stop()  # GOAWAY, then the connection closes
        with pytest.raises(grpc.RpcError) as e:
            for _ in call:
                pass
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        done.set()
        ch.close()


# --------------------------------------------------------------------------
# weft's client against grpcio's server


@pytest.fixture
def py_server():
    def echo(it, ctx):
        for m in it:
            yield m

    def fail(it, ctx):
        for _ in it:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "nope %")

    def meta(it, ctx):
        md = dict(ctx.invocation_metadata())
        for _ in it:
            pass
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT,
                  "x-test=%s ua=%s \u00fc%%" % (md.get("x-test"), md.get("user-agent")))

    handler = grpc.method_handlers_generic_handler("weft.test.Echo", {
        "Bidi": grpc.stream_stream_rpc_method_handler(echo),
        "Fail": grpc.stream_stream_rpc_method_handler(fail),
        "Meta": grpc.stream_stream_rpc_method_handler(meta),
    })
    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(8))
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield "127.0.0.1:%d" % port
    srv.stop(None)


def run_client(binary, addr, path, n, size, *headers):
    p = subprocess.run([binary, "--client", addr, path, str(n), str(size)] + list(headers),
                       capture_output=True, env=CHILD_ENV, timeout=DEADLINE * 2)
    err = p.stderr.decode(errors="replace")
    assert not sanitizer_lines(err), err
    assert p.returncode == 0, err
    out = p.stdout.decode().strip()
    fields = dict(kv.split("=", 1) for kv in out.split(" ", 4))
    return fields


def test_weft_client_against_grpcio_server(grpc_test_bin, py_server):
    r = run_client(grpc_test_bin, py_server, "/weft.test.Echo/Bidi", 300, 1000)
    assert r == {"messages": "300", "bytes": "300000", "bad": "0", "status": "0", "message": ""}
    r = run_client(grpc_test_bin, py_server, "/weft.test.Echo/Bidi", 3, 3 * MiB)
    assert (r["messages"], r["bad"], r["status"]) == ("3", "0", "0")
    r = run_client(grpc_test_bin, py_server, "/weft.test.Echo/Fail", 1, 10)
    assert (r["status"], r["message"]) == ("9", "nope %")
    r = run_client(grpc_test_bin, py_server, "/weft.test.Echo/Nope", 1, 10)
    assert r["status"] == "12"
    r = run_client(grpc_test_bin, py_server, "/weft.test.Echo/Meta", 1, 10, "x-test=hello")
    assert r["status"] == "3"
    assert r["message"].startswith("x-test=hello ua=weft/"), r
    assert r["message"].endswith(" \u00fc%"), r


def test_weft_client_without_server(grpc_test_bin):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run_client(grpc_test_bin, "127.0.0.1:%d" % port, "/weft.test.Echo/Bidi", 1, 10)
    assert r["status"] == "14"
    assert "cannot connect" in r["message"]
