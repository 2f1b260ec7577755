"""The certificate authority as real processes: `weft --role=ca` and
`weft token`, driven by tools nobody here wrote: python3-grpcio over TLS for
CreateCertificate (messages hand-encoded, two small protobufs), openssl for
CSRs, chains and SANs, and the CA's /metrics read by the strict Prometheus
parser.  Loopback only; every wait polls with a deadline."""
import base64
import json
import os
import pathlib
import signal
import stat
import subprocess
import time

import pytest

from conftest import (DEADLINE, CaProc, free_ports, http_get, parse_prometheus, run_weft,
                      wait_until)

grpc = pytest.importorskip("grpc")

TD = "cluster.local"
SERVER_NAME = "istiod.istio-system.svc"
METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"


def spiffe(ns, sa, td=TD):
    return "spiffe://%s/ns/%s/sa/%s" % (td, ns, sa)


# --------------------------------------------------------------------------
# the two messages, by hand (istio.v1.auth: csr=1 string, validity_duration=3
# int64; response cert_chain=1 repeated string)

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_request(csr_pem, validity=0):
    csr = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    out = b"\x0a" + _varint(len(csr)) + csr
    if validity:
        out += b"\x18" + _varint(validity)
    return out


def decode_response(data):
    chain, i = [], 0
    while i < len(data):
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = _read_varint(data, i)
            if field == 1:
                chain.append(data[i:i + n].decode())
            i += n
        elif wire == 0:
            _, i = _read_varint(data, i)
        else:
            raise AssertionError("unexpected wire type %d in IstioCertificateResponse" % wire)
    return chain


def _read_varint(data, i):
    shift = n = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


# --------------------------------------------------------------------------
# openssl

def openssl(*args, cwd=None, check=True):
    p = subprocess.run(["openssl"] + [str(a) for a in args], capture_output=True, text=True,
                       cwd=cwd, timeout=DEADLINE)
    if check:
        assert p.returncode == 0, "openssl %s failed: %s" % (" ".join(map(str, args)), p.stderr)
    return p


def make_csr(workdir, name, uri=None, rsa=False):
    """A CSR (P-256 unless rsa) with an optional URI SAN; returns its PEM text."""
    workdir = pathlib.Path(workdir)
    key, csr = workdir / (name + ".key"), workdir / (name + ".csr")
    if rsa:
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-subj", "/O=test",
                "-out", csr)
    else:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        args = ["req", "-new", "-key", key, "-subj", "/O=test", "-out", csr]
        if uri:
            args += ["-addext", "subjectAltName=URI:" + uri]
        openssl(*args)
    return csr.read_text()


def write_chain(workdir, name, chain):
    """leaf.pem, untrusted.pem (what is between leaf and root) for openssl verify."""
    workdir = pathlib.Path(workdir)
    leaf = workdir / (name + "-leaf.pem")
    mid = workdir / (name + "-untrusted.pem")
    leaf.write_text(chain[0])
    mid.write_text("".join(chain[1:-1]) or chain[-1])
    return leaf, mid


def san_of(cert_path):
    return openssl("x509", "-noout", "-ext", "subjectAltName", "-in", cert_path).stdout


def not_after(cert_path):
    out = openssl("x509", "-noout", "-enddate", "-in", cert_path).stdout.strip()
    stamp = out.split("=", 1)[1]
    return time.mktime(time.strptime(stamp, "%b %d %H:%M:%S %Y %Z")) - time.timezone


def make_plugged(d):
    """Istio plugged certs: a root and an intermediate (30 days) made by openssl."""
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nO = Example Org\n"
        "CN = Intermediate CA\n[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
        "keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root-key.pem", cwd=d)
    openssl("req", "-x509", "-new", "-key", "root-key.pem", "-subj", "/O=Example Org/CN=Root CA",
            "-days", "3650", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root-cert.pem", cwd=d)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.pem", cwd=d)
    openssl("req", "-new", "-key", "ca-key.pem", "-config", "ca.cnf", "-out", "ca.csr", cwd=d)
    openssl("x509", "-req", "-in", "ca.csr", "-CA", "root-cert.pem", "-CAkey", "root-key.pem",
            "-CAcreateserial", "-days", "30", "-extfile", "ca.cnf", "-extensions", "v3_ca",
            "-out", "ca-cert.pem", cwd=d)
    (d / "cert-chain.pem").write_text((d / "ca-cert.pem").read_text() +
                                      (d / "root-cert.pem").read_text())
    os.chmod(d / "ca-key.pem", 0o600)
    return d


# --------------------------------------------------------------------------
# the CA process

class CaGrpc(CaProc):
    """A CA process plus CreateCertificate over python3-grpcio and /metrics."""

    def channel(self, cert=None, key=None, root=None):
        creds = grpc.ssl_channel_credentials(
            root_certificates=pathlib.Path(root or self.root_cert).read_bytes(),
            private_key=key.encode() if key else None,
            certificate_chain=cert.encode() if cert else None)
        return grpc.secure_channel(self.addr, creds,
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME)])

    def create(self, csr_pem, token=None, validity=0, cert=None, key=None):
        """CreateCertificate; returns the chain or raises grpc.RpcError."""
        with self.channel(cert, key) as ch:
            call = ch.unary_unary(METHOD)
            md = [("authorization", "Bearer " + token)] if token else None
            return decode_response(call(encode_request(csr_pem, validity), metadata=md,
                                        timeout=DEADLINE))

    def refused(self, csr_pem, token=None, **kw):
        with pytest.raises(grpc.RpcError) as e:
            self.create(csr_pem, token, **kw)
        return e.value.code(), e.value.details()

    def metrics(self):
        status, body, _ = http_get(self.mon_port, "/metrics")
        assert status == 200, body
        fams = parse_prometheus(body.decode())
        return {name: {tuple(sorted(labels.items())): v for _, labels, v in f["samples"]}
                for name, f in fams.items()}



@pytest.fixture
def ca_class():
    return CaGrpc



def verify_chain(workdir, name, chain, root_path):
    leaf, mid = write_chain(workdir, name, chain)
    p = openssl("verify", "-CAfile", root_path, "-untrusted", mid, leaf, check=False)
    assert p.returncode == 0 and ": OK" in p.stdout, p.stdout + p.stderr
    return leaf


# --------------------------------------------------------------------------
# tests

def test_token_gets_a_spiffe_certificate(ca, tmp_path):
    c = ca()
    tok = c.token("a", "x")
    csr = make_csr(tmp_path, "w")
    chain = c.create(csr, tok, validity=3600)
    assert len(chain) >= 2, chain
    assert chain[-1].strip() == c.root_cert.read_text().strip(), "root is not last"
    leaf = verify_chain(tmp_path, "w", chain, c.root_cert)
    san = san_of(leaf)
    assert "URI:" + spiffe("a", "x") in san, san
    # The leaf is for the CSR's key.
    pub_csr = openssl("req", "-in", tmp_path / "w.csr", "-noout", "-pubkey").stdout
    pub_leaf = openssl("x509", "-in", leaf, "-noout", "-pubkey").stdout
    assert pub_csr == pub_leaf
    left = not_after(leaf) - time.time()
    assert 3500 < left <= 3600, left
    # Key file mode and the log line an operator reads.
    assert stat.S_IMODE(os.stat(c.ca_dir / "ca-key.pem").st_mode) == 0o600
    wait_until(lambda: "issued " + spiffe("a", "x") in c.stderr(), "the issuance log line")
    m = c.metrics()
    assert m["citadel_server_csr_count"][()] == 1
    assert m["citadel_server_success_cert_issuance_count"][()] == 1


def test_ttl_default_and_maximum(ca, tmp_path):
    c = ca(extra=["--cert-ttl", "2h", "--max-cert-ttl", "3h"])
    tok = c.token("a", "x")
    leaf = verify_chain(tmp_path, "d", c.create(make_csr(tmp_path, "d"), tok), c.root_cert)
    assert 2 * 3600 - 100 < not_after(leaf) - time.time() <= 2 * 3600
    leaf = verify_chain(tmp_path, "m", c.create(make_csr(tmp_path, "m"), tok, validity=10 * 3600),
                        c.root_cert)
    assert 3 * 3600 - 100 < not_after(leaf) - time.time() <= 3 * 3600


def test_token_for_one_namespace_cannot_get_another(ca, tmp_path):
    c = ca()
    tok = c.token("a", "x")
    code, msg = c.refused(make_csr(tmp_path, "b", uri=spiffe("b", "y")), tok)
    assert code == grpc.StatusCode.PERMISSION_DENIED, (code, msg)
    assert msg == "token for %s cannot obtain %s" % (spiffe("a", "x"), spiffe("b", "y")), msg
    # Asking for exactly its own identity is fine.
    chain = c.create(make_csr(tmp_path, "a", uri=spiffe("a", "x")), tok)
    assert "URI:" + spiffe("a", "x") in san_of(verify_chain(tmp_path, "a", chain, c.root_cert))
    m = c.metrics()
    assert m["weft_ca_refused_total"][(("reason", "identity_mismatch"),)] == 1


def test_expired_and_missing_tokens_are_unauthenticated(ca, tmp_path):
    c = ca()
    tok = c.token("a", "x", ttl="1s")
    payload = tok.split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    wait_until(lambda: time.time() >= exp + 0.05, "the token to expire", timeout=5)
    csr = make_csr(tmp_path, "e")
    code, msg = c.refused(csr, tok)
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, msg)
    assert "expired at" in msg and "weft token" in msg, msg
    code, msg = c.refused(csr, None)
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, msg)
    assert msg == ("no credential: send a bootstrap token (weft token) or present a "
                   "certificate"), msg
    # A token from another CA (another directory).
    other = ca("other")
    code, msg = c.refused(csr, other.token("a", "x"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "bad signature" in msg, (code, msg)
    m = c.metrics()
    assert m["citadel_server_authentication_failure_count"][()] == 3
    assert m["weft_ca_refused_total"][(("reason", "no_credential"),)] == 1
    assert m["weft_ca_refused_total"][(("reason", "bad_token"),)] == 2


def test_bad_csrs_are_invalid_argument(ca, tmp_path):
    c = ca()
    tok = c.token("a", "x")
    code, msg = c.refused(make_csr(tmp_path, "r", rsa=True), tok)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "P-256" in msg, (code, msg)
    code, msg = c.refused("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                          "-----END CERTIFICATE REQUEST-----\n", tok)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "CSR refused" in msg, (code, msg)
    assert c.metrics()["citadel_server_csr_parsing_err_count"][()] == 2


def test_renewal_with_the_client_certificate(ca, tmp_path):
    c = ca()
    tok = c.token("a", "x")
    chain = c.create(make_csr(tmp_path, "one"), tok)
    key = (tmp_path / "one.key").read_text()
    cert = "".join(chain[:-1])
    # No token: the TLS client certificate is the credential.
    chain2 = c.create(make_csr(tmp_path, "two"), None, cert=cert, key=key)
    assert "URI:" + spiffe("a", "x") in san_of(verify_chain(tmp_path, "two", chain2, c.root_cert))
    wait_until(lambda: "via certificate" in c.stderr(), "the renewal log line")
    # ... and it cannot be used to obtain another identity.
    with pytest.raises(grpc.RpcError) as e:
        c.create(make_csr(tmp_path, "three", uri=spiffe("b", "y")), None, cert=cert, key=key)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == "certificate for %s cannot obtain %s" % (spiffe("a", "x"),
                                                                         spiffe("b", "y"))


def test_server_certificate_and_wrong_root(ca, tmp_path):
    c = ca()
    p = subprocess.run(["openssl", "s_client", "-connect", c.addr, "-servername", SERVER_NAME,
                        "-CAfile", str(c.root_cert), "-verify_hostname", SERVER_NAME,
                        "-verify_return_error", "-alpn", "h2", "-brief"],
                       input=b"", capture_output=True, timeout=DEADLINE)
    # stdout holds the server's HTTP/2 SETTINGS (binary); the verdict is on stderr.
    err = p.stderr.decode(errors="replace")
    assert "Verification: OK" in err, err
    # A client trusting another root gets no further than the handshake.
    other = ca("other")
    with c.channel(root=other.root_cert) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(METHOD)(encode_request(make_csr(tmp_path, "w")), timeout=DEADLINE)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_generated_root_survives_restart(ca, tmp_path):
    c = ca()
    root = c.root_cert.read_bytes()
    key = (c.ca_dir / "ca-key.pem").read_bytes()
    assert stat.S_IMODE(os.stat(c.ca_dir / "ca-key.pem").st_mode) == 0o600
    tok = c.token("a", "x", ttl="10m")
    c.restart()
    assert c.root_cert.read_bytes() == root
    assert (c.ca_dir / "ca-key.pem").read_bytes() == key
    # The token made before the restart still works, and the new leaf
    # verifies against the old root.
    chain = c.create(make_csr(tmp_path, "w"), tok)
    verify_chain(tmp_path, "w", chain, c.ca_dir / "root-cert.pem")
    assert "generated a new root" in c.stderr() and "loaded the root" in c.stderr()


def test_plugged_certs(ca, tmp_path):
    d = make_plugged(tmp_path / "plugged")
    before = {n: (d / n).read_bytes() for n in ("ca-cert.pem", "ca-key.pem", "root-cert.pem",
                                                "cert-chain.pem")}
    c = ca(ca_dir=d)
    tok = c.token("a", "x")
    chain = c.create(make_csr(tmp_path, "w"), tok, validity=90 * 86400)
    assert len(chain) == 3, "expected leaf, intermediate, root: %d entries" % len(chain)
    assert chain[1].strip() == (d / "ca-cert.pem").read_text().strip()
    assert chain[2].strip() == (d / "root-cert.pem").read_text().strip()
    leaf = verify_chain(tmp_path, "w", chain, d / "root-cert.pem")
    # The leaf stops with the intermediate (30 days), whatever was asked.
    assert not_after(leaf) <= not_after(d / "ca-cert.pem")
    issuer = openssl("x509", "-noout", "-issuer", "-nameopt", "RFC2253", "-in", leaf).stdout
    assert "CN=Intermediate CA,O=Example Org" in issuer, issuer
    c.restart()
    assert {n: (d / n).read_bytes() for n in before} == before, "the CA rewrote plugged certs"
    verify_chain(tmp_path, "w2", c.create(make_csr(tmp_path, "w2"), tok), d / "root-cert.pem")


def test_plugged_certs_refused_with_the_file_named(weft_bin, tmp_path):
    d = make_plugged(tmp_path / "plugged")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", d / "ca-key.pem")
    r = run_weft(["--role=ca", "--ca-dir", str(d), "--listen", "127.0.0.1:%d" % free_ports(1)[0]])
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weft: "), r.stderr
    assert str(d / "ca-key.pem") in lines[0] and "ca-cert.pem" in lines[0], lines[0]
    # weft token refuses the same directory the same way.
    r = run_weft(["token", "--ca-dir", str(d), "--namespace", "a", "--service-account", "x"])
    assert r.returncode == 1 and "ca-key.pem" in r.stderr, r.stderr


def one_line(r, code):
    assert r.returncode == code, "exit %d, want %d: %s" % (r.returncode, code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weft: "), r.stderr
    assert r.stdout == "", r.stdout
    return lines[0]


def test_token_errors(weft_bin, tmp_path, ca):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = one_line(run_weft(["token"]), 2)
    assert "--ca-dir" in err, err
    err = one_line(run_weft(["token", "--ca-dir", str(empty), "--namespace", "a"]), 2)
    assert "--service-account" in err, err
    err = one_line(run_weft(["token", "--ca-dir", str(empty), "--namespace", "a",
                             "--service-account", "x", "--frob"]), 2)
    assert "--frob" in err, err
    err = one_line(run_weft(["token", "--ca-dir", str(tmp_path / "nope"), "--namespace", "a",
                             "--service-account", "x"]), 1)
    assert "no such directory" in err, err
    err = one_line(run_weft(["token", "--ca-dir", str(empty), "--namespace", "a",
                             "--service-account", "x"]), 1)
    assert err == ("weft: token: no CA in %s: start `weft --role=ca --ca-dir %s` or istiod first"
                   % (empty, empty)), err
    assert list(empty.iterdir()) == [], "weft token created files in %s" % empty
    c = ca()
    base = ["token", "--ca-dir", str(c.ca_dir)]
    err = one_line(run_weft(base + ["--namespace", "Bad_NS", "--service-account", "x"]), 2)
    assert "--namespace" in err and "Bad_NS" in err, err
    err = one_line(run_weft(base + ["--namespace", "a", "--service-account", "x/y"]), 2)
    assert "--service-account" in err, err
    err = one_line(run_weft(base + ["--namespace", "a", "--service-account", "x", "--ttl",
                                    "soon"]), 2)
    assert "--ttl" in err, err
    err = one_line(run_weft(base + ["--namespace", "a", "--service-account", "x", "--ttl",
                                    "10ms"]), 2)
    assert "shorter than a second" in err, err
    r = run_weft(["token", "--help"])
    assert r.returncode == 0 and "--service-account" in r.stdout
    assert "weft token" in run_weft(["--help"]).stdout


def test_ca_role_usage_errors(weft_bin, tmp_path):
    err = one_line(run_weft(["--role=ca"]), 2)
    assert "--ca-dir" in err, err
    d = str(tmp_path / "d")
    err = one_line(run_weft(["--role=ca", "--ca-dir", d, "--cert-ttl", "forever"]), 2)
    assert "--cert-ttl" in err, err
    err = one_line(run_weft(["--role=ca", "--ca-dir", d, "--cert-ttl", "48h",
                             "--max-cert-ttl", "24h"]), 2)
    assert "--max-cert-ttl" in err, err
    err = one_line(run_weft(["--role=ca", "--ca-dir", d, "--listen", "nowhere"]), 2)
    assert "--listen" in err, err
    assert not os.path.exists(d), "a usage error still created the CA directory"


def test_monitoring_reads_only(ca):
    c = ca()
    assert http_get(c.mon_port, "/ready?x=1")[0] == 200
    status, body, _ = http_get(c.mon_port, "/metrics", method="DELETE")
    assert status == 405 and b"only GET" in body, (status, body)


def test_sigint_stops_cleanly(ca):
    c = ca()
    c.stop(signal.SIGINT)
