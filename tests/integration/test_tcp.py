"""Opaque TCP through the mesh (issue 5, core/proxy/tunnel.c): a service port
whose protocol is TCP gets a listener of its own on the client proxy's
outbound address; the bytes go to the server proxy over mTLS and on to the
app, both ways, with half-close.  TLS ports are routed by the SNI of the
client's own TLS.  VirtualService tcp routes split connections by weight.

Each proxy gets its own loopback address (127.0.0.N) for its outbound
listeners, as two sidecars would have their own pods.

Apps are small Python socket servers run in threads here; clients are raw
sockets and openssl s_client / s_server."""
import json
import math
import socket
import subprocess
import threading
import time

import pytest

from conftest import (DEADLINE, STRICT, dedent, destination_rule, free_port, mtls_args,
                      service_entry, wait_until, workload_entry)
from tcp_app import read_all

SVC = "echo.default.svc.cluster.local"


# --------------------------------------------------------------------------
# apps

class App:
    """A TCP server on 127.0.0.1 running `serve(conn)` per connection."""

    def __init__(self, serve):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.conns = 0
        self.peers = []
        self.done = False
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while not self.done:
            try:
                c, peer = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            self.peers.append(peer)
            threading.Thread(target=self.run, args=(c,), daemon=True).start()

    def run(self, c):
        try:
            self.serve(c)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.done = True
        # Wake the accept() blocked in loop(): closing alone leaves it
        # waiting on the old socket, whose descriptor a later App may reuse.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def echo_after_eof(c):
    """Reads until the client's EOF, then sends it all back and closes:
    only a relay that carries the half-close gets an answer through."""
    c.sendall(b"echo:" + read_all(c))


def echo_lines(c):
    """Echoes each read at once (an interactive protocol)."""
    while True:
        b = c.recv(65536)
        if not b:
            return
        c.sendall(b)


def banner(name):
    def serve(c):
        c.sendall(b"220 %s ready\r\n" % name.encode())
        c.recv(100)
    return serve


@pytest.fixture
def apps():
    made = []

    def make(serve):
        a = App(serve)
        made.append(a)
        return a
    yield make
    for a in made:
        a.close()


# --------------------------------------------------------------------------
# mesh

def tcp_mesh(port, servers, extra=""):
    """Service echo (TCP port `port`) whose endpoints are `servers`: list of
    (proxy inbound port, version)."""
    y = service_entry("echo", ports=((port, "tcp-echo"),), protocol="TCP")
    for i, (inport, version) in enumerate(servers):
        y += workload_entry("echo-%d" % i, inport, app="echo", version=version,
                            port_names=("tcp-echo",), service_account="echo",
                            extra_labels={"security.istio.io/tlsMode": "istio"})
    return y + STRICT + extra


def with_outbound(cmd, addr, port):
    return [("--outbound=%s:%d" % (addr, port)) if a.startswith("--outbound=") else a
            for a in cmd]


def start_mesh(weft, ca, app_ports, extra="", versions=None, client_addr="127.0.0.2",
               client_workers=2):
    """Server proxies (one per app, app protocol tcp, mTLS STRICT) and one
    client proxy whose outbound address is client_addr.  Returns (client,
    servers, service port)."""
    port = free_port()
    ca = ca()
    servers = [weft(name="server%d" % i, start=False) for i in range(len(app_ports))]
    versions = versions or ["v1"] * len(app_ports)
    y = tcp_mesh(port, [(s.in_port, v) for s, v in zip(servers, versions)], extra)
    for i, (s, ap) in enumerate(zip(servers, app_ports)):
        s.write(y)
        cmd = s.command(app_port=ap, service_account="echo", labels={"app": "echo",
                        "version": versions[i]},
                        extra=mtls_args(ca, "default", "echo") + ["--app-protocol", "tcp"])
        s.start(argv=with_outbound(cmd, "127.0.0.%d" % (10 + i), s.out_port))
    client = weft(name="client", start=False)
    client.write(y)
    cmd = client.command(service_account="client", concurrency=client_workers,
                         extra=mtls_args(ca, "default", "client"))
    client.start(argv=with_outbound(cmd, client_addr, client.out_port))
    return client, servers, port


def dial(addr, port):
    return socket.create_connection((addr, port), timeout=DEADLINE)


# --------------------------------------------------------------------------
# tests

def test_echo_with_half_close_over_mtls(weft, ca, apps):
    app = apps(echo_after_eof)
    client, (server,), port = start_mesh(weft, ca, [app.port])
    for size in (5, 70000, 3 << 20):
        payload = bytes((i * 7) & 0xff for i in range(size))
        s = dial("127.0.0.2", port)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # the app answers only after our EOF
        got = read_all(s)
        s.close()
        assert got == b"echo:" + payload, "size %d: got %d bytes" % (size, len(got))
    # It went over mTLS: the server proxy terminated TLS, and the app's peer
    # is the server proxy, not the client.
    st = server.stats()
    assert st.get("ssl.handshake", 0) >= 1, st
    assert st.get("tcp.inbound|%d||.downstream_cx_total" % app.port, 0) >= 3, st
    cst = client.stats()
    assert cst.get("tcp.outbound|%d||%s.downstream_cx_total" % (port, SVC), 0) == 3, cst
    assert cst.get("upstream_ssl.handshake", 0) >= 1, cst


def test_interactive_exchange_and_server_close(weft, ca, apps):
    app = apps(echo_lines)
    client, _, port = start_mesh(weft, ca, [app.port])
    s = dial("127.0.0.2", port)
    for i in range(50):
        msg = b"line %d\n" % i
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += s.recv(100)
        assert got == msg
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b""  # the app closes after our EOF; we see its EOF
    s.close()


def test_server_speaks_first(weft, ca, apps):
    """Server-first protocols (SMTP, MySQL): the proxies connect before the
    client says anything."""
    app = apps(banner("echo"))
    client, _, port = start_mesh(weft, ca, [app.port])
    s = dial("127.0.0.2", port)
    s.settimeout(DEADLINE)
    got = b""
    while not got.endswith(b"\r\n"):
        b = s.recv(100)
        assert b, "connection closed before the banner"
        got += b
    assert got == b"220 echo ready\r\n"
    s.close()


def test_slow_reader_keeps_memory_bounded(weft, ca, apps):
    """An app sending 64 MiB to a client that does not read: the proxies
    stop reading above their high-water mark instead of buffering it."""
    total = 64 << 20

    def flood(c):
        chunk = b"z" * 65536
        sent = 0
        c.settimeout(DEADLINE * 4)
        while sent < total:
            c.sendall(chunk)
            sent += len(chunk)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
    app = apps(flood)
    client, (server,), port = start_mesh(weft, ca, [app.port])
    before = client.rss_kb() + server.rss_kb()
    s = dial("127.0.0.2", port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    wait_until(lambda: app.conns == 1, "the app accepted the connection")
    # Give the flood time to fill every buffer it can (poll RSS until flat).
    samples = []

    def flat():
        samples.append(client.rss_kb() + server.rss_kb())
        return len(samples) > 20 and max(samples[-10:]) - min(samples[-10:]) < 512
    wait_until(flat, "proxy memory to stop growing", interval=0.1)
    grown = max(samples) - before
    assert grown < 16 * 1024, "proxies grew by %d KiB holding an unread stream" % grown
    # Then read it all: nothing was lost.
    got = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        got += len(b)
    assert got == total
    s.close()


def test_weighted_tcp_route(weft, ca, apps):
    v1 = apps(banner("v1"))
    v2 = apps(banner("v2"))
    extra = destination_rule("echo", subsets=("v1", "v2")) + dedent("""
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata:
          name: echo
          namespace: default
        spec:
          hosts: [echo]
          tcp:
          - route:
            - destination: {host: echo, subset: v1}
              weight: 75
            - destination: {host: echo, subset: v2}
              weight: 25
        """)
    client, _, port = start_mesh(weft, ca, [v1.port, v2.port], extra=extra,
                                 versions=["v1", "v2"])
    n = 200
    seen = {"v1": 0, "v2": 0}
    for _ in range(n):
        s = dial("127.0.0.2", port)
        line = b""
        while not line.endswith(b"\r\n"):
            b = s.recv(100)
            assert b
            line += b
        seen[line.split()[1].decode()] += 1
        s.close()
    # 4 standard deviations of a binomial(n, 0.75).
    tol = 4 * math.sqrt(n * 0.75 * 0.25)
    assert abs(seen["v1"] - 0.75 * n) <= tol, seen


def test_idle_timeout_closes_quiet_connection(weft, ca, apps):
    app = apps(echo_lines)
    extra = dedent("""
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata:
          name: echo
          namespace: default
        spec:
          host: echo
          trafficPolicy:
            connectionPool:
              tcp:
                idleTimeout: 1s
        """)
    client, _, port = start_mesh(weft, ca, [app.port], extra=extra)
    s = dial("127.0.0.2", port)
    s.sendall(b"hi\n")
    assert s.recv(10) == b"hi\n"
    t0 = time.monotonic()
    s.settimeout(DEADLINE)
    assert s.recv(10) == b""  # closed by the proxy, not by us or the app
    quiet = time.monotonic() - t0
    assert 0.8 <= quiet < DEADLINE, quiet
    wait_until(lambda: client.stats().get(
        "tcp.outbound|%d||%s.idle_timeout" % (port, SVC), 0) == 1, "idle_timeout counted")


def test_endpoint_down_closes_client(weft, ca, apps):
    app = apps(echo_lines)
    client, (server,), port = start_mesh(weft, ca, [app.port])
    server.stop()
    s = dial("127.0.0.2", port)
    s.settimeout(DEADLINE)
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:
        pass
    s.close()
    wait_until(lambda: client.stats().get("upstream_cx_connect_fail", 0) >= 1,
               "the failed connect counted")


# --------------------------------------------------------------------------
# TLS ports: routed by SNI

def s_server(tmp_path, name, port):
    key = tmp_path / ("%s.key" % name)
    crt = tmp_path / ("%s.crt" % name)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=%s" % name], check=True, capture_output=True)
    p = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert",
                          str(crt), "-key", str(key), "-www", "-naccept", "100"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0,
               "openssl s_server %s" % name)
    return p


def s_client_subject(addr, port, sni):
    r = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (addr, port),
                        "-servername", sni], input=b"", capture_output=True, timeout=DEADLINE)
    out = r.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("subject="):
            return line.split("CN", 1)[1].strip(" =")
    return None


def test_tls_port_routes_by_sni(weft, tmp_path):
    """Two TLS services on one port, told apart by the SNI of the client's
    own TLS (the proxy reads the ClientHello, never decrypts)."""
    port = free_port()
    pa, pb = free_port(), free_port()
    procs = [s_server(tmp_path, "alpha", pa), s_server(tmp_path, "beta", pb)]
    try:
        y = ""
        for name, host, ap in (("alpha", "alpha.example.com", pa), ("beta", "beta.example.com",
                                                                     pb)):
            y += service_entry(name, ports=((port, "tls"),), protocol="TLS", host=host,
                               endpoints=[("127.0.0.1", {"tls": ap})])
        # A tls route: beta also answers for its subdomains.
        y += dedent("""
            ---
            apiVersion: networking.istio.io/v1beta1
            kind: VirtualService
            metadata:
              name: beta
              namespace: default
            spec:
              hosts: [beta.example.com]
              tls:
              - match:
                - port: %d
                  sniHosts: ["*.beta.example.com", beta.example.com]
                route:
                - destination: {host: beta.example.com}
            """ % port)
        w = weft(name="client", start=False)
        w.write(y)
        w.start(argv=with_outbound(w.command(), "127.0.0.3", w.out_port))
        assert s_client_subject("127.0.0.3", port, "alpha.example.com") == "alpha"
        assert s_client_subject("127.0.0.3", port, "beta.example.com") == "beta"
        assert s_client_subject("127.0.0.3", port, "www.beta.example.com") == "beta"
        # No chain for an unknown name: the connection is closed.
        assert s_client_subject("127.0.0.3", port, "gamma.example.com") is None
        assert "no filter chain for server name \"gamma.example.com\"" in w.stderr()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_plaintext_tcp_to_app_without_sidecar(weft, apps):
    """A TCP ServiceEntry whose endpoint is the app itself (no sidecar, so
    no mTLS): the client proxy relays straight to it."""
    app = apps(echo_after_eof)
    port = free_port()
    w = weft(name="client", start=False)
    w.write(service_entry("echo", ports=((port, "tcp"),), protocol="TCP",
                          endpoints=[("127.0.0.1", {"tcp": app.port})]))
    w.start(argv=with_outbound(w.command(), "127.0.0.4", w.out_port))
    s = dial("127.0.0.4", port)
    s.sendall(b"plain")
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b"echo:plain"
    s.close()
    st = w.stats()
    assert st.get("tcp.outbound|%d||%s.downstream_cx_rx_bytes_total" % (port, SVC)) == 5, st
    assert st.get("tcp.outbound|%d||%s.downstream_cx_tx_bytes_total" % (port, SVC)) == 10, st


def test_port_taken_by_another_process_is_a_warning(weft, apps):
    """A TCP service whose port is already bound on the outbound address:
    the proxy warns and serves everything else."""
    app = apps(echo_lines)
    taken = socket.socket()
    taken.bind(("127.0.0.5", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        w = weft(name="client", start=False)
        w.write(service_entry("echo", ports=((port, "tcp"),), protocol="TCP",
                              endpoints=[("127.0.0.1", {"tcp": app.port})]))
        w.start(argv=with_outbound(w.command(), "127.0.0.5", w.out_port))
        err = w.stderr()
        assert "127.0.0.5_%d" % port in err and "give each proxy its own outbound" in err, err
        assert w.admin("/ready")[0] == 200
    finally:
        taken.close()


# --------------------------------------------------------------------------
# xDS mode: TCP services come and go with the registry

def test_xds_tcp_service_added_after_start(istiod, weft_xds, apps):
    """The client proxy starts before any TCP service exists; istiod later
    registers one (a proxy with --app-protocol tcp), and the client proxy
    binds the new port without a restart, then relays over mTLS."""
    app = apps(echo_after_eof)
    control = istiod(files={"pa.yaml": STRICT})
    port = free_port()
    client = weft_xds(control, name="client", start=False)
    cmd = client.command(mtls=True, service_account="client")
    client.start(argv=with_outbound(cmd, "127.0.0.6", client.out_port))
    server = weft_xds(control, name="tcpecho", services=("tcpecho:%d" % port,),
                      app_port=app.port, labels={"app": "tcpecho", "version": "v1"},
                      mtls=True, extra=["--app-protocol", "tcp"])

    def answered():
        try:
            s = dial("127.0.0.6", port)
        except OSError:
            return False
        try:
            s.sendall(b"late")
            s.shutdown(socket.SHUT_WR)
            return read_all(s) == b"echo:late"
        except OSError:
            return False
        finally:
            s.close()
    wait_until(answered, "the new TCP service to answer through the client proxy")
    assert "listener 127.0.0.6_%d" % port in client.stderr(), client.stderr()[-2000:]
    assert server.stats().get("ssl.handshake", 0) >= 1


def test_drain_timeout_closes_open_tunnels_and_exits_cleanly(weft, apps):
    """SIGTERM with a TCP connection still open: the proxy waits up to its
    drain timeout, closes the tunnel and exits 0, while the worker that had
    nothing left stopped long before."""
    app = apps(echo_lines)
    port = free_port()
    w = weft(name="client", start=False)
    w.write(service_entry("echo", ports=((port, "tcp"),), protocol="TCP",
                          endpoints=[("127.0.0.1", {"tcp": app.port})]))
    w.start(argv=with_outbound(w.command(concurrency=2, extra=["--drain-timeout", "500"]),
                               "127.0.0.7", w.out_port))
    s = dial("127.0.0.7", port)
    s.sendall(b"hold\n")
    assert s.recv(10) == b"hold\n"
    w.stop()  # asserts exit code 0 and no sanitizer report
    s.settimeout(DEADLINE)
    assert s.recv(10) == b""  # the tunnel was closed by the drain timeout
    s.close()
