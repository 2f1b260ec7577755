"""mTLS between proxies: workload certificates from the CA, PeerAuthentication
STRICT / PERMISSIVE / DISABLE on the inbound listener, auto mTLS toward
endpoints that have a proxy, SPIFFE identity checks, certificate rotation
under traffic, /certs, xDS over mTLS on istiod's secure port, and
DestinationRule TLS toward a server outside the mesh.

Peers nobody here wrote: curl, openssl s_client / s_server / x509 / verify."""
import hashlib
import json
import re
import subprocess
import textwrap
import threading
import time

import pytest

from conftest import (DEADLINE, STRICT, curl, dedent, free_ports, mtls_args, peer_authentication,
                      port_open, service_entry, sidecar_workload_entry, two_proxies, wait_until)

TD = "cluster.local"


def spiffe(ns, sa):
    return "spiffe://%s/ns/%s/sa/%s" % (TD, ns, sa)


def mesh_yaml(server_port, mode=None, sa="reviews"):
    """reviews (one WorkloadEntry: the server proxy's inbound port, with a
    sidecar) and, when mode is given, a mesh-wide PeerAuthentication."""
    y = service_entry("reviews") + sidecar_workload_entry("reviews-1", server_port, "reviews", sa)
    return y + (peer_authentication(mode) if mode else "")


def pair(weft, backend, ca, mode="STRICT", server_sa="reviews", expect_sa="reviews", ttl=None,
         client_workers=2):
    """A server proxy (sa server_sa) in front of a backend and a client proxy
    (sa productpage) that reaches it as reviews:9080 (conftest's
    two_proxies).  Returns (client, server, backend)."""
    b = backend("reviews-app")
    client, server = two_proxies(weft, ca, b.port, service="reviews", mode=mode,
                                 server_sa=server_sa, expect_sa=expect_sa, client_sa="productpage",
                                 ttl=ttl, client_workers=client_workers)
    return client, server, b


def certs(w):
    status, body = w.admin("/certs")
    assert status == 200, body
    return json.loads(body)


def server_chain(port, tmp_path):
    """The certificate chain a TLS server presents, as PEM blocks (openssl s_client)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-showcerts",
                        "-servername", "reviews"],
                       input=b"", capture_output=True, timeout=DEADLINE)
    out = r.stdout.decode(errors="replace")
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert pems, "openssl s_client showed no certificate:\n%s\n%s" % (out, r.stderr.decode())
    return pems, out


def x509_san(pem):
    r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem.encode(),
                       capture_output=True, timeout=DEADLINE)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def test_strict_mtls_between_proxies(weft, backend, ca, tmp_path):
    authority = ca()
    client, server, b = pair(weft, backend, authority, "STRICT")

    r = curl("http://reviews:9080/hello", proxy=client.proxy)
    assert r.status == 200, r
    seen = r.json()
    # The server proxy tells the app who called, from the verified certificate.
    xfcc = seen["headers"].get("x-forwarded-client-cert") or seen["headers"].get("X-Forwarded-Client-Cert")
    assert xfcc == "By=%s;URI=%s" % (spiffe("default", "reviews"), spiffe("default", "productpage")), seen
    assert server.stats()["ssl.handshake"] >= 1
    assert client.stats()["upstream_ssl.handshake"] >= 1

    # A plaintext client cannot talk to a STRICT inbound listener.
    plain = curl(server.in_url + "/hello", host="reviews")
    assert plain.status == 0, plain

    # openssl s_client sees the SPIFFE SAN and a chain to the root.
    pems, out = server_chain(server.in_port, tmp_path)
    assert "URI:" + spiffe("default", "reviews") in x509_san(pems[0])
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(pems[0] + "\n")
    untrusted = []
    if len(pems) > 1:
        chain = tmp_path / "chain.pem"
        chain.write_text("\n".join(pems[1:]) + "\n")
        untrusted = ["-untrusted", str(chain)]
    v = subprocess.run(["openssl", "verify", "-CAfile", str(authority.root_cert)] + untrusted
                       + [str(leaf)], capture_output=True, text=True)
    assert v.returncode == 0 and ": OK" in v.stdout, (v.stdout, v.stderr)


def test_forged_client_cert_header_is_dropped(weft, backend, ca):
    client, server, b = pair(weft, backend, ca(), "PERMISSIVE")
    forged = "By=x;URI=spiffe://cluster.local/ns/admin/sa/root"
    r = curl(server.in_url + "/h", host="reviews", headers=["x-forwarded-client-cert: " + forged])
    assert r.status == 200, r
    hdrs = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert "x-forwarded-client-cert" not in hdrs, hdrs


def test_permissive_accepts_both(weft, backend, ca):
    client, server, b = pair(weft, backend, ca(), "PERMISSIVE")
    plain = curl(server.in_url + "/p", host="reviews")
    assert plain.status == 200, plain
    r = curl("http://reviews:9080/m", proxy=client.proxy)
    assert r.status == 200, r
    hdrs = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert hdrs.get("x-forwarded-client-cert", "").endswith("URI=" + spiffe("default", "productpage"))
    assert server.stats()["ssl.handshake"] >= 1


def test_disable_is_plaintext_only(weft, backend, ca, tmp_path):
    client, server, b = pair(weft, backend, ca(), "DISABLE")
    plain = curl(server.in_url + "/p", host="reviews")
    assert plain.status == 200, plain
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % server.in_port],
                       input=b"", capture_output=True, timeout=DEADLINE)
    assert "BEGIN CERTIFICATE" not in r.stdout.decode(errors="replace")


def test_wrong_server_identity_is_refused(weft, backend, ca):
    # The client expects reviews to run as sa "ratings"; it runs as "reviews".
    client, server, b = pair(weft, backend, ca(), "STRICT", server_sa="reviews", expect_sa="ratings")
    r = curl("http://reviews:9080/x", proxy=client.proxy)
    assert r.status == 503, r
    assert client.stats()["upstream_ssl.connection_error"] >= 1
    assert "is not one of" in client.stderr() or "ratings" in client.stderr(), client.describe()
    assert b.served() == 0


def test_certificate_from_another_root_is_refused(weft, backend, ca):
    ca1, ca2 = ca(), ca()
    b = backend("reviews-app")
    server = weft(name="server", start=False)
    client = weft(name="client", start=False)
    y = mesh_yaml(server.in_port, "STRICT")
    server.write(y)
    client.write(y)
    server.start(app_port=b.port, service_account="reviews", extra=mtls_args(ca2, "default", "reviews"))
    client.start(service_account="productpage", extra=mtls_args(ca1, "default", "productpage"))
    r = curl("http://reviews:9080/x", proxy=client.proxy)
    assert r.status == 503, r
    assert b.served() == 0
    assert client.stats()["upstream_ssl.connection_error"] >= 1


def test_certs_endpoint(weft, backend, ca):
    authority = ca()
    client, server, b = pair(weft, backend, authority, "STRICT")
    c = certs(server)
    assert c["identity"] == spiffe("default", "reviews"), c
    assert re.fullmatch(r"[0-9a-f]+", c["serial"]), c
    der = subprocess.run(["openssl", "x509", "-in", str(authority.root_cert), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert c["root_sha256"] == hashlib.sha256(der).hexdigest(), c
    nb = time.strptime(c["not_before"], "%Y-%m-%dT%H:%M:%SZ")
    na = time.strptime(c["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    life = time.mktime(na) - time.mktime(nb)
    assert 23 * 3600 < life <= 24 * 3600 + 120, c


def test_expired_token_gets_no_certificate(weft, ca, tmp_path):
    authority = ca()
    tok = authority.token_file("default", "reviews", ttl="1s")
    wait_until(lambda: time.time() > tok.stat().st_mtime + 2.1, "the token to expire", timeout=5)
    w = weft(name="p", start=False)
    w.write(mesh_yaml(1, "STRICT"))
    w.start(wait=False, extra=["--ca", authority.addr, "--token-file", str(tok),
                               "--root-cert", str(authority.root_cert)])

    def refused():
        try:
            c = certs(w)
        except OSError:
            return False
        return "expired" in (c.get("last_error") or "")
    wait_until(refused, "the proxy to report the expired token on /certs")
    assert w.admin("/ready")[0] == 503


def test_rotation_under_traffic_drops_nothing(weft, backend, ca):
    client, server, b = pair(weft, backend, ca(), "STRICT", ttl="4s")
    first = {w.name: certs(w)["serial"] for w in (client, server)}
    results = {"ok": 0, "bad": []}
    stop = threading.Event()

    def load():
        while not stop.is_set():
            r = curl("http://reviews:9080/r", proxy=client.proxy)
            if r.status == 200:
                results["ok"] += 1
            else:
                results["bad"].append(r)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        seen = {w.name: {first[w.name]} for w in (client, server)}

        def rotated_twice():
            for w in (client, server):
                seen[w.name].add(certs(w)["serial"])
            return all(len(v) >= 3 for v in seen.values())
        wait_until(rotated_twice, "both proxies to rotate their certificate twice", timeout=30,
                   interval=0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not results["bad"], results["bad"][:3]
    assert results["ok"] > 20, results


def test_xds_over_mtls_and_strict_mesh(istiod, weft_xds, backend):
    ist = istiod(files={"pa.yaml": STRICT})
    b = backend("reviews-app")
    server = weft_xds(ist, "reviews-1", services=("reviews:9080",), app_port=b.port,
                      labels={"app": "reviews"}, mtls=True)
    client = weft_xds(ist, "productpage-1", services=(), labels={"app": "productpage"}, mtls=True)
    r = curl("http://reviews:9080/x", proxy=client.proxy)
    assert r.status == 200, r
    hdrs = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert hdrs["x-forwarded-client-cert"] == "By=%s;URI=%s" % (
        spiffe("default", "reviews"), spiffe("default", "productpage"))
    assert curl(server.in_url + "/x", host="reviews").status == 0
    ids = {e.get("peer_id") for e in ist.syncz()}
    assert spiffe("default", "reviews") in ids, ist.syncz()


def test_xds_claims_beyond_the_certificate_are_refused(istiod, weft_xds, backend):
    ist = istiod()
    liar = weft_xds(ist, "liar", start=False)
    tok = ist.token_file("default", "productpage")
    liar.start(wait=False, namespace="payments", service_account="productpage", mtls=True,
               token_file=tok)
    wait_until(lambda: "claims namespace payments" in ist.stderr(),
               "istiod to refuse the proxy's claim")
    assert liar.admin("/ready")[0] == 503


def test_istiod_restart_keeps_its_root(istiod, weft_xds, backend):
    ist = istiod()
    before = ist.root_cert.read_bytes()
    assert oct(ist.ca_dir.joinpath("ca-key.pem").stat().st_mode & 0o777) == "0o600"
    ist.stop()
    ist.restart()
    assert ist.root_cert.read_bytes() == before
    b = backend("reviews-app")
    weft_xds(ist, "reviews-1", services=("reviews:9080",), app_port=b.port,
             labels={"app": "reviews"}, mtls=True)


# --------------------------------------------------------------------------
# DestinationRule TLS toward a server outside the mesh: openssl s_server

def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + [str(a) for a in args], cwd=cwd, capture_output=True,
                       text=True, timeout=DEADLINE)
    assert r.returncode == 0, (args, r.stderr)
    return r


def external_pki(d):
    """A CA of its own (not the mesh's), a server certificate for
    api.external.test and a client certificate, made by openssl."""
    d.mkdir(exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=ext-ca",
            "-days", "2", cwd=d)
    for name, san in (("server", "DNS:api.external.test"), ("client", "DNS:client.example")):
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj",
                "/CN=" + san[4:], cwd=d)
        (d / (name + ".ext")).write_text("subjectAltName=%s\n" % san)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext",
                cwd=d)
    return d


@pytest.fixture
def s_server(tmp_path):
    """Factory: s_server(pki_dir, verify_clients=False) -> port of an
    `openssl s_server -www` (TLS 1.2) with the external server certificate."""
    procs = []

    def start(pki, verify_clients=False):
        port, = free_ports(1)
        args = ["openssl", "s_server", "-accept", str(port), "-cert", str(pki / "server.pem"),
                "-key", str(pki / "server.key"), "-www", "-tls1_2"]
        if verify_clients:
            args += ["-Verify", "1", "-CAfile", str(pki / "ca.pem")]
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        procs.append(p)
        wait_until(lambda: port_open(port), "openssl s_server on port %d" % port)
        return port
    yield start
    for p in procs:
        p.kill()
        p.wait()


def external_yaml(port, tls_yaml, port_name="http", protocol="HTTP"):
    """api.external.test:8443 outside the mesh (127.0.0.1:port) and a
    DestinationRule whose trafficPolicy.tls is tls_yaml."""
    return dedent("""
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata:
          name: external-api
          namespace: default
        spec:
          hosts:
          - api.external.test
          location: MESH_EXTERNAL
          resolution: STATIC
          ports:
          - number: 8443
            name: %s
            protocol: %s
          endpoints:
          - address: 127.0.0.1
            ports:
              %s: %d
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata:
          name: external-api
          namespace: default
        spec:
          host: api.external.test
          trafficPolicy:
            tls:
        %s
        """) % (port_name, protocol, port_name, port, textwrap.indent(dedent(tls_yaml), "      "))


@pytest.mark.parametrize("mode", ["SIMPLE", "MUTUAL"])
def test_destination_rule_tls_to_an_external_server(weft, tmp_path, s_server, mode):
    pki = external_pki(tmp_path / "ext")
    port = s_server(pki, verify_clients=(mode == "MUTUAL"))
    tls = "mode: %s\ncaCertificates: %s\nsni: api.external.test\n" % (mode, pki / "ca.pem")
    if mode == "MUTUAL":
        tls += "clientCertificate: %s\nprivateKey: %s\n" % (pki / "client.pem", pki / "client.key")
    w = weft(external_yaml(port, tls))
    r = curl("http://api.external.test:8443/", proxy=w.proxy)
    assert r.status == 200, (r, w.describe())
    assert "s_server" in r.text, r.text[:300]
    assert w.stats()["upstream_ssl.handshake"] >= 1


def test_destination_rule_tls_refuses_a_server_of_another_ca(weft, tmp_path, s_server):
    pki = external_pki(tmp_path / "ext")
    other = external_pki(tmp_path / "other")
    port = s_server(pki)
    w = weft(external_yaml(port, "mode: SIMPLE\ncaCertificates: %s\n" % (other / "ca.pem")))
    r = curl("http://api.external.test:8443/", proxy=w.proxy)
    assert r.status == 503, r
    assert w.stats()["upstream_ssl.connection_error"] >= 1


def test_upstream_sessions_are_resumed(weft, tmp_path, s_server):
    # s_server -www closes each connection after its answer, so every
    # request dials again: the second and later resume the first's session.
    # (Between proxies requests share one HTTP/2 connection instead.)
    pki = external_pki(tmp_path / "ext")
    port = s_server(pki)
    w = weft(external_yaml(port, "mode: SIMPLE\ncaCertificates: %s\n" % (pki / "ca.pem")),
             concurrency=1)
    for _ in range(3):
        r = curl("http://api.external.test:8443/", proxy=w.proxy)
        assert r.status == 200, (r, w.describe())
    st = w.stats()
    assert st["upstream_ssl.handshake"] >= 3, st
    assert st["upstream_ssl.session_reused"] >= 2, st
