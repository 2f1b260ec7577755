"""gRPC over TLS interop: Debian's python3-grpcio (C-core 1.51, BoringSSL)
against weft's gRPC server and client over TLS (core/grpc on core/tls),
through the unit-test binary's extra modes:

    grpc_test --serve-tls 0 DIR                    echo server, client certs optional
    grpc_test --client-tls DIR NAME ADDR PATH N SIZE  one call, prints the result

Certificates are made here with the openssl command line (an ECDSA P-256
root; leaves with DNS and SPIFFE URI SANs), so neither side's issuer is
weft's own CA code.  The binary comes from $WEFT_GRPC_TEST (default
build/tests/grpc_test).  Only loopback; every wait polls with a deadline."""
import concurrent.futures
import subprocess

import pytest

from conftest import CHILD_ENV, DEADLINE, sanitizer_lines
from test_grpc_transport import EchoServer, MiB, grpc_test_bin, msg  # noqa: F401 (fixture)

grpc = pytest.importorskip("grpc")

SERVER_NAME = "istiod.test"
SERVER_ID = "spiffe://cluster.local/ns/istio-system/sa/istiod"
CLIENT_ID = "spiffe://cluster.local/ns/app/sa/client"


def openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, timeout=DEADLINE)
    assert p.returncode == 0, p.stderr.decode(errors="replace")


def leaf(d, name, sans):
    """d/name/{cert-chain,key,root-cert}.pem for a leaf with sans, signed by d's root."""
    out = d / name
    out.mkdir()
    (d / (name + ".ext")).write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=%s\n" % sans)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(out / "key.pem"), "-out", name + ".csr", "-subj", "/O=weft-test",
            cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "root.pem", "-CAkey", "root.key",
            "-CAcreateserial", "-days", "1", "-sha256", "-extfile", name + ".ext",
            "-out", str(out / "cert-chain.pem"), cwd=d)
    (out / "root-cert.pem").write_bytes((d / "root.pem").read_bytes())
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpc-tls")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "root.key", "-out", "root.pem", "-subj", "/O=weft-test-root",
            "-days", "1", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    anon = d / "anon"
    anon.mkdir()
    (anon / "root-cert.pem").write_bytes((d / "root.pem").read_bytes())
    return {
        "root": (d / "root.pem").read_bytes(),
        "server": leaf(d, "server", "DNS:%s,URI:%s" % (SERVER_NAME, SERVER_ID)),
        "client": leaf(d, "client", "URI:%s" % CLIENT_ID),
        "anon": anon,
    }


@pytest.fixture
def tls_server(grpc_test_bin, pki):  # noqa: F811
    s = EchoServer(grpc_test_bin, ["--serve-tls", "0", str(pki["server"])])
    yield s
    s.stop()


def channel(server, pki, client="client", name=SERVER_NAME):
    c = pki[client] if client else None
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki["root"],
        private_key=(c / "key.pem").read_bytes() if c else None,
        certificate_chain=(c / "cert-chain.pem").read_bytes() if c else None)
    return grpc.secure_channel(server.addr, creds,
                               options=[("grpc.ssl_target_name_override", name)])


def test_grpcio_mtls_client_against_weft_server(tls_server, pki):
    with channel(tls_server, pki) as ch:
        who = ch.unary_unary("/weft.test.Echo/PeerId")(b"?", timeout=DEADLINE)
        assert who == CLIENT_ID.encode()
        sizes = [0, 1, 16384, 16385, 100000, MiB, 4 * MiB] + [i * 37 % 3000 for i in range(100)]
        sent = [msg(i, n) for i, n in enumerate(sizes)]
        call = ch.stream_stream("/weft.test.Echo/Bidi")(iter(sent), timeout=DEADLINE)
        assert list(call) == sent
        assert call.code() == grpc.StatusCode.OK


def test_grpcio_client_without_certificate(tls_server, pki):
    with channel(tls_server, pki, client=None) as ch:
        assert ch.unary_unary("/weft.test.Echo/PeerId")(b"?", timeout=DEADLINE) == b"(none)"


def test_grpcio_client_refuses_wrong_name(tls_server, pki):
    with channel(tls_server, pki, name="other.test") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/weft.test.Echo/PeerId")(b"?", timeout=DEADLINE)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def py_tls_server(pki):
    def echo(it, ctx):
        for m in it:
            yield m

    handler = grpc.method_handlers_generic_handler("weft.test.Echo", {
        "Bidi": grpc.stream_stream_rpc_method_handler(echo),
    })
    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(8))
    srv.add_generic_rpc_handlers((handler,))
    d = pki["server"]
    creds = grpc.ssl_server_credentials(
        [((d / "key.pem").read_bytes(), (d / "cert-chain.pem").read_bytes())],
        root_certificates=pki["root"], require_client_auth=True)
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    yield "127.0.0.1:%d" % port
    srv.stop(None)


def run_tls_client(binary, certdir, name, addr, n, size):
    p = subprocess.run([binary, "--client-tls", str(certdir), name, addr, "/weft.test.Echo/Bidi",
                        str(n), str(size)], capture_output=True, env=CHILD_ENV,
                       timeout=DEADLINE * 2)
    err = p.stderr.decode(errors="replace")
    assert not sanitizer_lines(err), err
    assert p.returncode == 0, err
    out = p.stdout.decode().strip()
    return dict(kv.split("=", 1) for kv in out.split(" ", 4))


def test_weft_client_against_grpcio_tls_server(grpc_test_bin, pki, py_tls_server):  # noqa: F811
    r = run_tls_client(grpc_test_bin, pki["client"], SERVER_NAME, py_tls_server, 300, 1000)
    assert r == {"messages": "300", "bytes": "300000", "bad": "0", "status": "0", "message": ""}
    r = run_tls_client(grpc_test_bin, pki["client"], SERVER_ID, py_tls_server, 3, 3 * MiB)
    assert (r["messages"], r["bad"], r["status"]) == ("3", "0", "0")


def test_weft_client_refusals(grpc_test_bin, pki, py_tls_server):  # noqa: F811
    r = run_tls_client(grpc_test_bin, pki["client"], "other.test", py_tls_server, 1, 10)
    assert r["status"] == "14"
    assert r["message"].startswith("TLS: server certificate does not carry the name other.test")
    wrong = "spiffe://cluster.local/ns/istio-system/sa/other"
    r = run_tls_client(grpc_test_bin, pki["client"], wrong, py_tls_server, 1, 10)
    assert r["status"] == "14"
    assert r["message"].startswith("TLS: server identity %s, %s is not one of: %s"
                                   % (SERVER_ID, SERVER_NAME, wrong)), r
    # The grpcio server requires a client certificate.
    r = run_tls_client(grpc_test_bin, pki["anon"], SERVER_NAME, py_tls_server, 1, 10)
    assert r["status"] == "14"
    assert r["message"].startswith("TLS: "), r
