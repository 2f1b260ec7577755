#!/usr/bin/python3
"""weft's demo: a small mesh in xDS mode on loopback.

    /usr/bin/python3 conf/demo/demo.py --weft build/weft [--once]

Starts istiod on a copy of conf/demo/*.yaml, then a backend and a proxy
in xDS mode for each of reviews v1/v2/v3 and details v1 (each proxy
registers its workload with `--service NAME:9080`; its inbound listener
forwards to the backend), plus a client-side proxy for productpage, all on
free 127.0.0.1 ports.  Then it sends traffic through productpage's proxy
and prints which subset served what: the 90/10 split; the split again
after it edits the VirtualService file to 50/50 (waiting for the proxies
to apply the new version, not for a fixed time); the `end-user: jason`
canary; a service without VirtualService; an unknown host.  It keeps the
mesh running until Ctrl-C or SIGTERM (with --once it stops right away)
and stops every child cleanly.
"""
import argparse
import http.client
import json
import os
import pathlib
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
BACKEND_PY = REPO / "tests" / "integration" / "backend.py"
GRPC_APP_PY = REPO / "tests" / "integration" / "grpc_app.py"
TCP_APP_PY = REPO / "tests" / "integration" / "tcp_app.py"
GRPC_PORT = 9090
TCP_PORT = 9100
DEADLINE = 20.0  # seconds for anything to come up or converge

# workload -> (app, version, has a backend)
WORKLOADS = [
    ("productpage", "productpage", "v1", False),
    ("reviews-v1", "reviews", "v1", True),
    ("reviews-v2", "reviews", "v2", True),
    ("reviews-v3", "reviews", "v3", True),
    ("details-v1", "details", "v1", True),
    ("echo-v1", "echo", "v1", "grpc"),  # a gRPC service (python3-grpcio)
    ("tcpecho-v1", "tcpecho", "v1", "tcp"),  # opaque TCP (tcp_app.py)
]
SERVICE_PORT = 9080


def service_port(kind):
    return GRPC_PORT if kind == "grpc" else TCP_PORT if kind == "tcp" else SERVICE_PORT


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the running loop."""


class Style:
    def __init__(self, on):
        self.on = on

    def _w(self, code, s):
        return "\033[%sm%s\033[0m" % (code, s) if self.on else s

    def bold(self, s):
        return self._w("1", s)

    def dim(self, s):
        return self._w("2", s)

    def green(self, s):
        return self._w("32", s)

    def red(self, s):
        return self._w("31", s)


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def child_env():
    return {k: v for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


def http_get(port, path, timeout=2):
    """(status, body bytes) of GET 127.0.0.1:port/path."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def poll(pred, what, timeout=DEADLINE, interval=0.05):
    """Calls pred() until it returns a true value (returned) or raises
    RuntimeError naming what after timeout.  OSError counts as not yet."""
    end = time.monotonic() + timeout
    while True:
        try:
            v = pred()
        except OSError:
            v = None
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("gave up after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Mesh:
    def __init__(self, weft, workdir, style):
        self.weft = weft
        self.dir = workdir
        self.s = style
        self.config = workdir / "config"
        self.istiod = {}    # proc, xds, mon, stderr path
        self.backends = {}  # name -> (Popen, port)
        self.proxies = {}   # name -> dict(proc, out, inb, admin, stderr path)

    # --- start --------------------------------------------------------

    def start(self):
        self.config.mkdir()
        for f in sorted(HERE.glob("*.yaml")):
            shutil.copy(f, self.config / f.name)
        self._start_istiod()
        for name, app, version, has_app in WORKLOADS:
            if has_app in ("grpc", "tcp"):
                self.backends[name] = self._start_backend(name, kind=has_app)
            elif has_app:
                self.backends[name] = self._start_backend(name)
        ports = iter(free_ports(3 * len(WORKLOADS)))
        for i, (name, app, version, has_app) in enumerate(WORKLOADS):
            # Each proxy has its own outbound address, as sidecars have
            # their pods' IPs: a TCP service's port is bound on it.
            self.proxies[name] = {"host": "127.0.0.%d" % (11 + i), "out": next(ports),
                                  "inb": next(ports), "admin": next(ports)}
        for name, app, version, has_app in WORKLOADS:
            self._start_proxy(name, app, version)
        for name, p in self.proxies.items():
            self._wait_ready(name, p["proc"], p["admin"], "the proxy of " + name)
        self._wait_converged()

    def _start_istiod(self):
        xds, mon, sec = free_ports(3)
        d = self.istiod
        d.update(xds=xds, mon=mon, secure=sec, stderr=self.dir / "istiod.stderr",
                 ca=self.dir / "ca")
        args = [self.weft, "--role=istiod", "--config-dir", str(self.config),
                "--xds-listen", "127.0.0.1:%d" % xds, "--monitoring", "127.0.0.1:%d" % mon,
                "--secure-listen", "127.0.0.1:%d" % sec, "--ca-dir", str(d["ca"])]
        with open(d["stderr"], "wb") as err:
            d["proc"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                                         env=child_env(), start_new_session=True)
        self._wait_ready("istiod", d["proc"], mon, "istiod")

    def _start_backend(self, name, kind=None):
        cmd = ([sys.executable, str(GRPC_APP_PY), "server", "--name", name, "--port", "0"]
               if kind == "grpc" else
               [sys.executable, str(TCP_APP_PY), "--port", "0", "--name", name]
               if kind == "tcp" else
               [sys.executable, str(BACKEND_PY), "--port", "0", "--name", name])
        proc = subprocess.Popen(cmd,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=child_env(), start_new_session=True)
        end = time.monotonic() + DEADLINE
        line = b""
        while not line.endswith(b"\n"):
            r, _, _ = select.select([proc.stdout], [], [], max(0, end - time.monotonic()))
            c = os.read(proc.stdout.fileno(), 1) if r else b""
            if not c:
                raise RuntimeError("backend %s did not start" % name)
            line += c
        return proc, int(line.split()[1])

    def token(self, app):
        """A bootstrap token for default/APP from istiod's CA (weft token)."""
        path = self.dir / ("%s.token" % app)
        r = subprocess.run([self.weft, "token", "--ca-dir", str(self.istiod["ca"]),
                            "--namespace", "default", "--service-account", app, "--ttl", "1h"],
                           capture_output=True, text=True, env=child_env())
        if r.returncode != 0:
            raise RuntimeError("weft token failed: %s" % r.stderr.strip())
        path.write_text(r.stdout)
        return path

    def _start_proxy(self, name, app, version):
        p = self.proxies[name]
        p["stderr"] = self.dir / ("%s.stderr" % name)
        secure = "127.0.0.1:%d" % self.istiod["secure"]
        # The certificate comes from istiod's CA (a token proves who the
        # workload is); xDS then runs over mTLS on the secure port.
        args = [self.weft, "--role=proxy", "--xds", secure, "--ca", secure,
                "--token-file", str(self.token(app)),
                "--root-cert", str(self.istiod["ca"] / "root-cert.pem"),
                "--name", name, "--namespace", "default", "--service-account", app,
                "--labels", "app=%s,version=%s" % (app, version),
                "--outbound", "%s:%d" % (p["host"], p["out"]),
                "--inbound", "127.0.0.1:%d" % p["inb"],
                "--admin", "127.0.0.1:%d" % p["admin"], "--concurrency", "1"]
        if name in self.backends:
            # registers the workload as an endpoint of its service, at the
            # proxy's inbound address
            kind = dict((w[0], w[3]) for w in WORKLOADS)[name]
            args += ["--service", "%s:%d" % (app, service_port(kind)),
                     "--app-port", str(self.backends[name][1])]
            if kind in ("grpc", "tcp"):
                args += ["--app-protocol", kind]
        with open(p["stderr"], "wb") as err:
            p["proc"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                                         env=child_env(), start_new_session=True)

    def _wait_ready(self, name, proc, port, what):
        def ready():
            if proc.poll() is not None:
                raise RuntimeError("%s exited with code %d:\n%s"
                                   % (what, proc.returncode, self.stderr_of(name)))
            return http_get(port, "/ready")[0] == 200
        try:
            poll(ready, "%s to be ready" % what)
        except RuntimeError as e:
            if "exited" in str(e):
                raise
            raise RuntimeError("%s\n%s" % (e, self.stderr_of(name)))

    def _wait_converged(self):
        """Until productpage's proxy has every workload as an endpoint (the
        workloads register in any order) and istiod sees every proxy in
        sync."""
        want = {}
        for name, app, version, has_app in WORKLOADS:
            if has_app:
                port = service_port(has_app)
                cl = "outbound|%d||%s.default.svc.cluster.local" % (port, app)
                want.setdefault(cl, set()).add("127.0.0.1:%d" % self.proxies[name]["inb"])

        def converged():
            have = endpoints(self.config_dump("productpage"))
            return all(have.get(cl) == eps for cl, eps in want.items())
        try:
            poll(converged, "productpage's proxy to learn every workload")
            poll(self.synced, "every proxy to ACK its config")
        except RuntimeError as e:
            raise RuntimeError("%s; istiod's /debug/syncz:\n%s" % (e, self.syncz_summary()))

    def syncz_summary(self):
        lines = []
        for e in self.syncz() or []:
            lines.append("    %s: %s" % (e.get("id"), ", ".join(
                "%s sent %s acked %s%s" % (t, (e[t]["sent"] or "-")[:8], (e[t]["acked"] or "-")[:8],
                                           " NACK %s" % e[t]["last_nack"] if e[t]["last_nack"]
                                           else "")
                for t in ("CDS", "EDS", "LDS"))))
        return "\n".join(lines) or "    (no proxy)"

    def syncz(self):
        status, body = http_get(self.istiod["mon"], "/debug/syncz")
        return json.loads(body) if status == 200 else None

    def synced(self):
        """True when istiod lists every proxy with each type ACKed."""
        entries = self.syncz() or []
        if len(entries) != len(self.proxies):
            return False
        return all(e[t]["sent"] and e[t]["sent"] == e[t]["acked"]
                   for e in entries for t in ("LDS", "CDS", "EDS"))

    def config_status(self):
        return json.loads(http_get(self.istiod["mon"], "/debug/config_status")[1])

    def config_dump(self, name):
        status, body = http_get(self.proxies[name]["admin"], "/config_dump")
        if status != 200:
            raise RuntimeError("config_dump of %s answered %d" % (name, status))
        return json.loads(body)

    def version(self, name):
        """The config version the proxy of name serves."""
        return self.config_dump(name).get("version_info")

    def proxy_status(self):
        p = subprocess.run([self.weft, "proxy-status", "--istiod",
                            "127.0.0.1:%d" % self.istiod["mon"]],
                           capture_output=True, text=True, timeout=DEADLINE, env=child_env())
        return p.returncode, (p.stdout if p.returncode == 0 else p.stderr)

    def certs(self, name):
        status, body = http_get(self.proxies[name]["admin"], "/certs")
        return json.loads(body) if status == 200 else {}

    def stderr_of(self, name):
        path = self.istiod.get("stderr") if name == "istiod" else \
            self.proxies.get(name, {}).get("stderr")
        try:
            text = path.read_text(errors="replace") if path else ""
        except OSError:
            return ""
        return "\n".join("    " + l for l in text.splitlines()[-20:])

    # --- watch and stop -----------------------------------------------

    def dead(self):
        """Names of children that exited on their own."""
        out = [n for n, p in self.proxies.items() if "proc" in p and p["proc"].poll() is not None]
        out += [n + " (backend)" for n, (proc, _) in self.backends.items() if proc.poll() is not None]
        if "proc" in self.istiod and self.istiod["proc"].poll() is not None:
            out.append("istiod")
        return out

    def stop(self):
        """SIGTERM to every child, proxies first, then istiod, then the
        backends; returns a list of problems."""
        problems = []
        groups = [[(n, p["proc"]) for n, p in self.proxies.items() if "proc" in p]]
        if "proc" in self.istiod:
            groups.append([("istiod", self.istiod["proc"])])
        groups.append([(n + " (backend)", proc) for n, (proc, _) in self.backends.items()])
        for group in groups:
            for _, proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for name, proc in group:
                try:
                    rc = proc.wait(DEADLINE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    problems.append("%s did not stop within %.0fs; killed\n%s"
                                    % (name, DEADLINE, self.stderr_of(name)))
                    continue
                if rc != 0 and not name.endswith("(backend)"):
                    problems.append("%s exited with code %d:\n%s"
                                    % (name, rc, self.stderr_of(name)))
        return problems

    # --- traffic ------------------------------------------------------

    def request(self, host, path="/", headers=None, conn=None):
        """One GET through productpage's outbound listener."""
        own = conn is None
        if own:
            pp = self.proxies["productpage"]
            conn = http.client.HTTPConnection(pp["host"], pp["out"],
                                              timeout=10)
        h = {"Host": host}
        h.update(headers or {})
        conn.request("GET", path, headers=h)
        r = conn.getresponse()
        body = r.read()
        if own:
            conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def endpoints(dump):
    """{cluster name: {"ADDR:PORT", ...}} of a /config_dump."""
    out = {}
    for cla in dump.get("endpoints") or []:
        eps = out.setdefault(cla.get("cluster_name"), set())
        for loc in cla.get("endpoints") or []:
            for lb in loc.get("lb_endpoints") or []:
                sa = lb["endpoint"]["address"]["socket_address"]
                eps.add("%s:%d" % (sa["address"], int(sa["port_value"])))
    return out


def bar(n, total, width=30):
    return "#" * (round(width * n / total) if total else 0)


def table(s, counts, total, subsets=("v1", "v2", "v3")):
    print("     %-8s %7s %8s" % ("subset", "served", "share"))
    for sub in subsets:
        n = counts.get(sub, 0)
        share = 100.0 * n / total if total else 0.0
        print(("     %-8s %7d %7.1f%%  %s" % (sub, n, share, s.green(bar(n, total)))).rstrip())
    other = {k: v for k, v in counts.items() if k not in subsets}
    for k, v in sorted(other.items()):
        print("     %-8s %7d" % (k, v))


def set_weights(path, w1, w2, tmpdir):
    """Rewrites the weights of the `split` route's v1 and v2 destinations
    in the VirtualService file at path (the demo's own copy), keeping the
    rest of the file, comments included, as it is.  The new text is
    written beside, in tmpdir, and renamed over the file: istiod sees one
    change and never half a file."""
    text = path.read_text()
    pat = re.compile(r"(subset: v1\n\s*weight: )\d+(.*?subset: v2\n\s*weight: )\d+", re.S)
    new, n = pat.subn(lambda m: "%s%d%s%d" % (m.group(1), w1, m.group(2), w2), text)
    if n != 1:
        raise RuntimeError("could not find the v1/v2 weights in %s" % path)
    tmp = tmpdir / path.name
    tmp.write_text(new)
    os.replace(tmp, path)


def run_traffic(mesh, s, n):
    """Sends the demo's requests; returns a list of things that looked wrong."""
    wrong = []
    plugin_header = "x-weft-demo"
    with_header = 0
    sent = 0

    def subset_of(status, headers):
        if status != 200:
            return "HTTP %d" % status
        name = headers.get("x-backend", "?")
        return name.rsplit("-", 1)[-1] if name.startswith("reviews-") else name

    pp = mesh.proxies["productpage"]
    conn = http.client.HTTPConnection(pp["host"], pp["out"], timeout=10)

    def split(headers=None, count=n):
        nonlocal with_header, sent
        counts = Counter()
        for _ in range(count):
            status, hdrs, _ = mesh.request("reviews:9080", "/reviews/1", headers, conn=conn)
            counts[subset_of(status, hdrs)] += 1
            with_header += plugin_header in hdrs
            sent += 1
        return counts

    def share(counts, sub):
        return 100.0 * counts.get(sub, 0) / n

    print(s.bold("1. %d requests from productpage to http://reviews:9080/" % n))
    print(s.dim("   VirtualService reviews: 90% to subset v1, 10% to subset v2"))
    counts = split()
    table(s, counts, n)
    if counts["v1"] + counts["v2"] != n or not 75 <= share(counts, "v1") <= 100:
        wrong.append("the 90/10 split answered %s" % dict(counts))
    print()

    vs = mesh.config / "reviews.yaml"
    print(s.bold("2. edit %s: weights 90/10 -> 50/50" % vs.name))
    old_status = mesh.config_status()
    old = {name: mesh.version(name) for name in mesh.proxies}
    t0 = time.monotonic()
    set_weights(vs, 50, 50, mesh.dir)

    def reloaded():
        st = mesh.config_status()
        return st if st.get("version") != old_status.get("version") or st.get("errors") else None
    status = poll(reloaded, "istiod to reload %s" % vs.name)
    if not status.get("ok", False):
        raise RuntimeError("istiod refused the edit: %s" % "; ".join(status.get("errors", [])))
    poll(lambda: all(mesh.version(name) != old[name] for name in mesh.proxies),
         "every proxy to apply the new config")
    took = (time.monotonic() - t0) * 1000
    print(s.dim("   istiod reloaded it (config version %s -> %s);"
                % (old_status.get("version", "?")[:8], status.get("version", "?")[:8])))
    print(s.dim("   every proxy applied its new version within %.0f ms, e.g. productpage's %s -> %s"
                % (took, (old["productpage"] or "?")[:8],
                   (mesh.version("productpage") or "?")[:8])))
    counts = split()
    table(s, counts, n)
    if counts["v1"] + counts["v2"] != n or not 30 <= share(counts, "v1") <= 70:
        wrong.append("after the edit the 50/50 split answered %s" % dict(counts))
    print()

    jn = 20
    print(s.bold("3. %d requests with header end-user: jason" % jn))
    print(s.dim("   the first route of the VirtualService sends them to subset v3"))
    counts = split({"end-user": "jason"}, jn)
    table(s, counts, jn)
    if counts["v3"] != jn:
        wrong.append("jason's requests went to %s" % dict(counts))
    print()

    print(s.bold("4. http://details:9080/ (no VirtualService: the service routes to itself)"))
    status, headers, _ = mesh.request("details:9080", "/details/1", conn=conn)
    with_header += plugin_header in headers
    sent += 1
    print("     %d from %s" % (status, headers.get("x-backend", "?")))
    if status != 200 or headers.get("x-backend") != "details-v1":
        wrong.append("details answered %d from %s" % (status, headers.get("x-backend")))
    print()

    print(s.bold("5. http://ratings:9080/ (no such service in the mesh)"))
    status, headers, body = mesh.request("ratings:9080", "/ratings/1", conn=conn)
    with_header += plugin_header in headers
    sent += 1
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    print("     %d %s" % (status, text[:70]))
    if status != 404 or "NR" not in text:
        wrong.append("the unknown host answered %d %r (want 404 NR)" % (status, text[:70]))
    conn.close()
    print()

    value = headers.get(plugin_header, "")
    print(s.bold("6. the example plugin (FilterPlugin demo-header, on productpage's proxy)"))
    print("     %d of %d responses carried %s: %s" % (with_header, sent, plugin_header, value))
    if with_header != sent:
        wrong.append("only %d of %d responses carried %s" % (with_header, sent, plugin_header))
    print()

    print(s.bold("7. gRPC: echo:9090 through two proxies (HTTP/2 over mTLS between them)"))
    wrong += grpc_calls(mesh, s)
    print()

    print(s.bold("8. TCP: tcpecho:%d through two proxies (opaque bytes over mTLS, half-close)"
                 % TCP_PORT))
    wrong += tcp_calls(mesh, s)
    print()

    print(s.bold("9. identities: mTLS between every pair of proxies (PeerAuthentication STRICT)"))
    for name in mesh.proxies:
        c = mesh.certs(name)
        print("     %-12s %s  serial %s..  until %s"
              % (name, c.get("identity"), (c.get("serial") or "?")[:8], c.get("not_after")))
        if not (c.get("identity") or "").startswith("spiffe://cluster.local/ns/default/sa/"):
            wrong.append("%s has no workload identity: %s" % (name, c))
    status, headers, body = mesh.request("reviews:9080", "/whoami")
    try:
        xfcc = {k.lower(): v for k, v in json.loads(body)["headers"].items()}.get(
            "x-forwarded-client-cert", "")
    except ValueError:
        xfcc = ""
    print("     reviews' app was told who called (x-forwarded-client-cert):")
    print("       " + (xfcc or "(nothing)"))
    if "URI=spiffe://cluster.local/ns/default/sa/productpage" not in xfcc:
        wrong.append("reviews did not see productpage's identity: %r" % xfcc)
    inb = mesh.proxies["reviews-v1"]["inb"]
    try:
        code = http_get(inb, "/")[0]
        print(s.red("     plaintext to reviews-v1's inbound 127.0.0.1:%d answered %d" % (inb, code)))
        wrong.append("a plaintext request to a STRICT inbound listener got %d" % code)
    except OSError as e:
        print("     plaintext to reviews-v1's inbound 127.0.0.1:%d: refused (%s)"
              % (inb, e.__class__.__name__))
    print()
    return wrong


def tcp_calls(mesh, s):
    """Raw TCP to productpage's proxy at its own address, port 9100: it
    relays to tcpecho's proxy over mTLS; the app answers once it sees our
    end of input (half-close), then closes."""
    host = mesh.proxies["productpage"]["host"]
    wrong = []
    for msg in (b"hello over TCP", b"x" * 100000):
        try:
            c = socket.create_connection((host, TCP_PORT), timeout=10)
            c.sendall(msg)
            c.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                got += b
            c.close()
        except OSError as e:
            got = ("error: %s" % e).encode()
        ok = got == b"tcpecho-v1: " + msg
        shown = got[:40].decode("latin-1") + ("... (%d bytes)" % len(got) if len(got) > 40 else "")
        print("     %s:%d sent %d bytes, then EOF; got %s" % (host, TCP_PORT, len(msg), shown))
        if not ok:
            wrong.append("TCP echo through two proxies answered %r" % got[:80])
    return wrong


def grpc_calls(mesh, s, n=20):
    """n unary calls from productpage's side to echo, and one to a service
    that does not exist (the proxy answers it with a gRPC status)."""
    try:
        import grpc
    except ImportError:
        return ["python3-grpcio is not installed (./dev demo installs it)"]
    wrong = []
    pp = mesh.proxies["productpage"]
    target = "%s:%d" % (pp["host"], pp["out"])
    names = Counter()
    for host, count in (("echo.default.svc.cluster.local:%d" % GRPC_PORT, n),
                        ("nosuch.default.svc.cluster.local:%d" % GRPC_PORT, 1)):
        with grpc.insecure_channel(target, options=[("grpc.default_authority", host)]) as ch:
            call = ch.unary_unary("/weft.test.Echo/Who")
            for _ in range(count):
                try:
                    names[call(b"", timeout=DEADLINE).decode()] += 1
                except grpc.RpcError as e:
                    names["%s (%s)" % (e.code().name, e.details())] += 1
    for k, v in sorted(names.items()):
        print("     %3d  %s" % (v, k))
    if names.get("echo-v1") != n:
        wrong.append("gRPC calls to echo answered %s" % dict(names))
    if not any(k.startswith("UNIMPLEMENTED") for k in names):
        wrong.append("the call to a missing gRPC service was not UNIMPLEMENTED: %s" % dict(names))
    return wrong


def main():
    ap = argparse.ArgumentParser(description="Run weft's demo mesh on loopback.")
    ap.add_argument("--weft", default=str(REPO / "build" / "weft"), help="the weft binary")
    ap.add_argument("--once", action="store_true", help="exit after sending the traffic")
    ap.add_argument("--requests", type=int, default=200, help="requests per split (200)")
    args = ap.parse_args()
    s = Style(sys.stdout.isatty() and not os.environ.get("NO_COLOR"))

    weft = os.path.abspath(args.weft)
    if not os.access(weft, os.X_OK):
        print("demo: no weft binary at %s; build it with `./dev build` or pass --weft PATH"
              % weft, file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="weft-demo-"))
    mesh = Mesh(weft, workdir, s)
    rc = 0
    try:
        try:
            print(s.bold("weft demo") + ": istiod and proxies in xDS mode on 127.0.0.1 "
                  + s.dim("(config: a copy of %s)" % os.path.relpath(HERE)))
            print()
            mesh.start()
            print("     istiod: xDS + CA over mTLS on 127.0.0.1:%d, monitoring on 127.0.0.1:%d"
                  % (mesh.istiod["secure"], mesh.istiod["mon"]))
            print()
            print("     %-12s %-17s %-17s %s" % ("workload", "proxy outbound", "proxy inbound",
                                                  "app"))
            for name, app, version, has_app in WORKLOADS:
                p = mesh.proxies[name]
                # without an app there is no inbound listener
                inb = ("127.0.0.1:%d" % p["inb"]) if has_app else "-"
                appaddr = ("127.0.0.1:%d" % mesh.backends[name][1]) if has_app else "-"
                print("     %-12s %-17s %-17s %s"
                      % (name, "%s:%d" % (p["host"], p["out"]), inb, appaddr))
            print()
            code, text = mesh.proxy_status()
            print(s.bold("weft proxy-status") + s.dim(" (what istiod sent, what each proxy ACKed)"))
            for line in text.rstrip("\n").splitlines():
                print("     " + line)
            if code != 0:
                print(s.red("     (weft proxy-status exited %d)" % code))
            print()
            wrong = run_traffic(mesh, s, args.requests)
            if wrong:
                rc = 1
                for w in wrong:
                    print(s.red("unexpected: ") + w)
                print()
            if not args.once:
                pp = mesh.proxies["productpage"]
                print(s.dim("   try: curl -H 'Host: reviews:9080' http://%s:%d/"
                            % (pp["host"], pp["out"])))
                print(s.dim("        %s proxy-status --istiod 127.0.0.1:%d"
                            % (os.path.relpath(weft), mesh.istiod["mon"])))
                print(s.dim("        curl -s http://127.0.0.1:%d/debug/syncz | python3 -m json.tool"
                            % mesh.istiod["mon"]))
                print(s.dim("        edit %s (istiod watches it)"
                            % (mesh.config / "reviews.yaml")))
                print(s.bold("mesh running; Ctrl-C to stop"), flush=True)
                while True:
                    dead = mesh.dead()
                    if dead:
                        print(s.red("stopped unexpectedly: ") + ", ".join(dead))
                        for d in dead:
                            if d in mesh.proxies or d == "istiod":
                                print(mesh.stderr_of(d))
                        rc = 1
                        break
                    time.sleep(0.5)
        except Stop:
            print()
        except (RuntimeError, OSError, ValueError) as e:
            print(s.red("demo failed: ") + str(e), file=sys.stderr)
            rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the mesh ...", end=" ", flush=True)
        problems = mesh.stop()
        if problems:
            print(s.red("with problems:"))
            for p in problems:
                print("  " + p)
            rc = rc or 1
        else:
            print("stopped cleanly.")
        shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
