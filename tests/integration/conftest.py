"""Fixtures and helpers for weft's integration tests.

Everything here runs real processes on loopback: `weft` proxies (the binary
from $WEFT_BIN, default build/weft), Python test backends (backend.py) and
the real curl.  Every port is allocated free at run time, so tests can run
side by side.  Waiting is always polling with a deadline, never a fixed
sleep.

Fixtures:
    weft      factory: weft(config_yaml, **start_args) -> a started Weft;
              every Weft is stopped with SIGTERM at teardown and must exit
              0 with no sanitizer report on stderr.
    backend   factory: backend(name) -> a running Backend.
    weft_bin  the binary's path (fails the test with a hint when missing).
    istiod    factory: istiod(files={name: yaml}, **start_args) -> a started
              Istiod (xDS mode; see the section "xDS mode" below).
    weft_xds  factory: weft_xds(istiod, name, services=..., **start_args)
              -> a started XdsWeft, a proxy configured by that istiod.

Helpers: curl(), curl_many(), curl_v() (HTTP/2 prior knowledge or
HTTP/1.1, routed by :authority), raw_exchange(), read_response(), the YAML
builders service_entry(), typed_service_entry(), workload_entry(),
sidecar_workload_entry(),
destination_rule(), peer_authentication() (and STRICT), and free_ports(),
wait_until(); between proxies over mTLS mtls_args() and two_proxies(); for
xDS mode workload(), wait_endpoints(), cluster_endpoints(),
outbound_cluster(), xds_versions(), http_get() and parse_prometheus() (a
strict Prometheus text-format parser).
"""
import json
import os
import pathlib
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
WEFT_BIN = os.environ.get("WEFT_BIN") or str(REPO / "build" / "weft")
BACKEND_PY = HERE / "backend.py"

# Generous, because the same tests run against ASan+UBSan builds.
DEADLINE = float(os.environ.get("WEFT_TEST_DEADLINE", "20"))

# Lines that mean a sanitizer caught something, whatever the exit code.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# Environment for every child: no proxy variables (they would send curl
# elsewhere), and an ASan quarantine small enough that the memory-growth
# tests measure the proxy's buffering, not freed blocks ASan holds back.
CHILD_ENV = {k: v for k, v in os.environ.items()
             if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
if "quarantine_size_mb" not in CHILD_ENV.get("ASAN_OPTIONS", ""):
    CHILD_ENV["ASAN_OPTIONS"] = ":".join(
        x for x in (CHILD_ENV.get("ASAN_OPTIONS", ""), "quarantine_size_mb=4") if x)


# --------------------------------------------------------------------------
# small utilities

def free_ports(n=1):
    """n distinct free loopback TCP ports (all held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]


def wait_until(pred, what, timeout=DEADLINE, interval=0.02):
    """Polls pred() until it returns a true value (returned), or fails."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def sanitizer_lines(text):
    return [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKS)]


def dedent(s):
    return textwrap.dedent(s).strip("\n") + "\n"


# --------------------------------------------------------------------------
# YAML builders: Istio resources as a user writes them

def service_entry(name, ns="default", ports=((9080, "http"),), addresses=(), selector=None,
                  endpoints=None, resolution="STATIC", host=None, protocol="HTTP"):
    """A MESH_INTERNAL ServiceEntry for NAME.NS.svc.cluster.local, whose
    endpoints are the WorkloadEntries labelled app=NAME (or `selector`), or
    the inline `endpoints` (list of (address, {portname: port}))."""
    host = host or "%s.%s.svc.cluster.local" % (name, ns)
    out = ["---", "apiVersion: networking.istio.io/v1beta1", "kind: ServiceEntry",
           "metadata:", "  name: %s" % name, "  namespace: %s" % ns, "spec:",
           "  hosts:", "  - %s" % host]
    if addresses:
        out.append("  addresses:")
        out += ["  - %s" % a for a in addresses]
    out.append("  ports:")
    for number, pname in ports:
        out += ["  - number: %d" % number, "    name: %s" % pname, "    protocol: %s" % protocol]
    out += ["  location: MESH_INTERNAL", "  resolution: %s" % resolution]
    if endpoints is not None:
        out.append("  endpoints:")
        for addr, pmap in endpoints:
            out.append("  - address: %s" % addr)
            if pmap:
                out.append("    ports:")
                out += ["      %s: %d" % (k, v) for k, v in pmap.items()]
    else:
        labels = selector or {"app": name}
        out += ["  workloadSelector:", "    labels:"]
        out += ["      %s: %s" % kv for kv in labels.items()]
    return "\n".join(out) + "\n"


def workload_entry(name, port, app, version=None, ns="default", port_names=("http",),
                   address="127.0.0.1", extra_labels=None, service_account=None):
    """A WorkloadEntry at ADDRESS whose named ports all map to PORT."""
    out = ["---", "apiVersion: networking.istio.io/v1beta1", "kind: WorkloadEntry",
           "metadata:", "  name: %s" % name, "  namespace: %s" % ns, "spec:",
           "  address: %s" % address]
    if service_account:
        out.append("  serviceAccount: %s" % service_account)
    out.append("  ports:")
    out += ["    %s: %d" % (p, port) for p in port_names]
    out += ["  labels:", "    app: %s" % app]
    if version:
        out.append("    version: %s" % version)
    for k, v in (extra_labels or {}).items():
        out.append("    %s: %s" % (k, v))
    return "\n".join(out) + "\n"


def typed_service_entry(name, port, port_name, protocol, endpoints=None):
    """service_entry() with one port of the given protocol."""
    return service_entry(name, ports=((port, port_name),), endpoints=endpoints, protocol=protocol)


def sidecar_workload_entry(name, port, app, sa, port_name="http"):
    """A WorkloadEntry for a workload with a sidecar (tlsMode istio) running
    as service account sa, at 127.0.0.1:port."""
    return workload_entry(name, port, app=app, port_names=(port_name,), service_account=sa,
                          extra_labels={"security.istio.io/tlsMode": "istio"})


def peer_authentication(mode, name="default", ns="istio-system"):
    """A PeerAuthentication with mtls.mode MODE (in istio-system: mesh-wide)."""
    return dedent("""
        ---
        apiVersion: security.istio.io/v1beta1
        kind: PeerAuthentication
        metadata:
          name: %s
          namespace: %s
        spec:
          mtls:
            mode: %s
        """ % (name, ns, mode))


STRICT = peer_authentication("STRICT")


def destination_rule(name, host=None, subsets=("v1", "v2", "v3"), lb=None, ns="default"):
    """A DestinationRule with one subset per version label."""
    out = ["---", "apiVersion: networking.istio.io/v1beta1", "kind: DestinationRule",
           "metadata:", "  name: %s" % name, "  namespace: %s" % ns, "spec:",
           "  host: %s" % (host or name)]
    if lb:
        out += ["  trafficPolicy:", "    loadBalancer:", "      simple: %s" % lb]
    if subsets:
        out.append("  subsets:")
        for s in subsets:
            out += ["  - name: %s" % s, "    labels:", "      version: %s" % s]
    return "\n".join(out) + "\n"


def virtual_service(name, http_yaml, hosts=None, ns="default"):
    """A VirtualService whose `http:` list is given as YAML text."""
    head = dedent("""
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata:
          name: %s
          namespace: %s
        spec:
          hosts:
        """ % (name, ns))
    head += "".join("  - %s\n" % h for h in (hosts or [name]))
    return head + "  http:\n" + textwrap.indent(dedent(http_yaml), "  ")


# --------------------------------------------------------------------------
# HTTP over raw sockets (for what curl cannot show: pipelining, framing)

class RawResponse:
    def __init__(self, version, status, reason, headers, body):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)


def read_response(f, head=False, sink=None):
    """Reads one HTTP/1.x response from the binary file object f.  The body
    is framed by Content-Length, chunked encoding or connection close; with
    sink, body bytes are passed to sink(bytes) instead of being kept."""
    line = f.readline(65537)
    if not line:
        raise ConnectionError("connection closed before a response")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    while True:
        h = f.readline(65537)
        if not h:
            raise ConnectionError("connection closed inside the response headers")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers.append((k.strip().lower(), v.strip()))
    if status in (100, 101, 102, 103):
        return read_response(f, head, sink)
    chunks = []
    keep = sink or chunks.append
    hd = {}
    for k, v in headers:
        hd.setdefault(k, v)
    if head or status in (204, 304):
        pass
    elif "chunked" in hd.get("transfer-encoding", "").lower():
        while True:
            size = int(f.readline(65537).split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            left = size
            while left:
                d = f.read(min(left, 1 << 16))
                if not d:
                    raise ConnectionError("connection closed inside a chunk")
                keep(d)
                left -= len(d)
            f.readline(3)
    elif "content-length" in hd:
        left = int(hd["content-length"])
        while left:
            d = f.read(min(left, 1 << 16))
            if not d:
                raise ConnectionError("connection closed inside the body")
            keep(d)
            left -= len(d)
    else:
        while True:
            d = f.read1(1 << 16) if hasattr(f, "read1") else f.read(1 << 16)
            if not d:
                break
            keep(d)
    return RawResponse(version, status, reason, headers, b"".join(chunks))


def connect(port, timeout=DEADLINE):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def raw_exchange(port, data, count=1, timeout=DEADLINE, head=False):
    """Sends data (bytes) on a new connection and reads count responses.
    Returns (responses, closed) where closed tells whether the server closed
    the connection after the last response (checked with a short wait)."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        f = s.makefile("rb")
        out = [read_response(f, head=head) for _ in range(count)]
        s.settimeout(2)
        try:
            closed = f.read(1) == b""
        except (socket.timeout, TimeoutError):
            closed = False
        except ConnectionResetError:
            closed = True
        return out, closed
    finally:
        s.close()


def is_closed(sock, timeout=2.0):
    """True if the peer closed (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


# --------------------------------------------------------------------------
# curl

class Response:
    """A response as curl saw it. status 0 means curl failed (see .error)."""

    def __init__(self, status, headers, body, error=""):
        self.status = status
        self.headers = headers  # list of (lower-case name, value), last response only
        self.body = body
        self.error = error

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    @property
    def backend(self):
        return self.header("x-backend")

    def __repr__(self):
        return "<Response %d %s %r>" % (self.status, self.headers, self.body[:200])


def curl(url, *, host=None, proxy=None, method=None, headers=(), data=None, data_file=None,
         timeout=DEADLINE, extra=()):
    """Runs the real curl (HTTP/1.1) and returns a Response.
    host: sets the Host header (origin-form to the outbound listener);
    proxy: sends the request in absolute-form to that HTTP proxy;
    data: bytes or str body; data_file: path of a body file;
    headers: iterable of "Name: value"."""
    with tempfile.TemporaryDirectory(prefix="weft-curl-") as td:
        hfile, bfile = os.path.join(td, "h"), os.path.join(td, "b")
        args = ["curl", "-sS", "--http1.1", "--max-time", str(timeout),
                "-D", hfile, "-o", bfile, "-w", "%{http_code}"]
        if host:
            args += ["-H", "Host: " + host]
        if proxy:
            args += ["-x", proxy]
        else:
            args += ["--noproxy", "*"]
        if method:
            args += ["-X", method]
        for h in headers:
            args += ["-H", h]
        if data is not None:
            dfile = os.path.join(td, "d")
            with open(dfile, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
            data_file = dfile
        if data_file is not None:
            args += ["--data-binary", "@" + str(data_file), "-H", "Expect:"]
        args += list(extra) + [url]
        p = subprocess.run(args, capture_output=True, env=CHILD_ENV, timeout=timeout + 10)
        code = p.stdout.decode().strip()
        status = int(code) if code.isdigit() else 0
        hdrs = []
        if os.path.exists(hfile):
            with open(hfile, "rb") as f:
                blocks = [b for b in re.split(rb"\r?\n\r?\n", f.read()) if b.strip()]
            if blocks:
                for line in blocks[-1].decode("latin-1").splitlines()[1:]:
                    k, _, v = line.partition(":")
                    hdrs.append((k.strip().lower(), v.strip()))
        body = b""
        if os.path.exists(bfile):
            with open(bfile, "rb") as f:
                body = f.read()
        return Response(status, hdrs, body, p.stderr.decode(errors="replace"))


def curl_many(url, n, *, host=None, headers=(), proxy=None, timeout=120):
    """Sends n GETs to url with one curl process (it reuses its connection)
    and returns a list of (status, x-backend or "") in order."""
    with tempfile.TemporaryDirectory(prefix="weft-curl-") as td:
        cfg = os.path.join(td, "curl.cfg")
        with open(cfg, "w") as f:
            f.write('write-out = "%{http_code} %header{x-backend}\\n"\n')
            if host:
                f.write('header = "Host: %s"\n' % host)
            for h in headers:
                f.write('header = "%s"\n' % h)
            if proxy:
                f.write('proxy = "%s"\n' % proxy)
            for _ in range(n):
                f.write('url = "%s"\noutput = "/dev/null"\n' % url)
        args = ["curl", "-sS", "--http1.1", "--max-time", "20", "-K", cfg]
        if not proxy:
            args += ["--noproxy", "*"]
        p = subprocess.run(args, capture_output=True, env=CHILD_ENV, timeout=timeout)
        out = []
        for line in p.stdout.decode().splitlines():
            code, _, name = line.partition(" ")
            out.append((int(code) if code.isdigit() else 0, name.strip()))
        assert len(out) == n, "curl made %d of %d requests: %s" % (len(out), n, p.stderr.decode())
        return out


def curl_v(port, path, authority="web:9080", http2=True, method=None, headers=(), data=None,
           timeout=DEADLINE, extra=()):
    """curl to 127.0.0.1:port as http://AUTHORITY/PATH (--connect-to, so the
    proxy routes by AUTHORITY), with HTTP/2 prior knowledge or HTTP/1.1.
    method "HEAD" is curl -I.  Returns a Response with .version ("2",
    "1.1") and .trailers (list of (lower-case name, value)) added."""
    host, _, aport = authority.partition(":")
    with tempfile.TemporaryDirectory(prefix="weft-curl2-") as td:
        hfile, bfile = os.path.join(td, "h"), os.path.join(td, "b")
        args = ["curl", "-sS", "--max-time", str(timeout), "--noproxy", "*",
                "--http2-prior-knowledge" if http2 else "--http1.1",
                "--connect-to", "%s:%s:127.0.0.1:%d" % (host, aport or "80", port),
                "-D", hfile, "-o", bfile, "-w", "%{http_code} %{http_version}"]
        if method:
            args += ["-X", method] if method != "HEAD" else ["-I"]
        for h in headers:
            args += ["-H", h]
        if data is not None:
            dfile = os.path.join(td, "d")
            with open(dfile, "wb") as f:
                f.write(data)
            args += ["--data-binary", "@" + dfile, "-H", "Expect:"]
        args += list(extra) + ["http://%s%s" % (authority, path)]
        p = subprocess.run(args, capture_output=True, env=CHILD_ENV, timeout=timeout + 10)
        code, _, version = p.stdout.decode().strip().partition(" ")
        blocks = []
        if os.path.exists(hfile):
            with open(hfile, "rb") as f:
                blocks = [b.decode("latin-1") for b in re.split(rb"\r?\n\r?\n", f.read())
                          if b.strip()]
        # Each response head starts with its status line (interim ones
        # first); what follows the last one is its trailers.
        heads = [i for i, b in enumerate(blocks) if b.startswith("HTTP/")]
        last = heads[-1] if heads else len(blocks)

        def fields(lines):
            out = []
            for line in lines:
                k, _, v = line.partition(":")
                out.append((k.strip().lower(), v.strip()))
            return out
        hdrs = fields(blocks[last].splitlines()[1:]) if heads else []
        trailers = fields(l for b in blocks[last + 1:] for l in b.splitlines())
        body = b""
        if os.path.exists(bfile):
            with open(bfile, "rb") as f:
                body = f.read()
        r = Response(int(code) if code.isdigit() else 0, hdrs, body,
                     p.stderr.decode(errors="replace"))
        r.version = version
        r.trailers = trailers
        return r


# --------------------------------------------------------------------------
# processes

class Backend:
    """A backend.py process; .port, .name, .url."""

    def __init__(self, name, logdir, port=0):
        self.name = name
        self.errlog = open(os.path.join(logdir, "backend-%s.stderr" % name), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKEND_PY), "--port", str(port), "--name", name],
            stdout=subprocess.PIPE, stderr=self.errlog, env=CHILD_ENV, start_new_session=True)
        end = time.monotonic() + DEADLINE
        line = b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError("backend %s did not start" % name)
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    continue
                line += c
        self.port = int(line.split()[1])
        self.url = "http://127.0.0.1:%d" % self.port

    def counts(self):
        """{"inflight": requests being served now, "served": all so far},
        asked of the backend directly (not through a proxy)."""
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", "/_inflight")
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def inflight(self):
        return self.counts()["inflight"]

    def served(self):
        return self.counts()["served"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errlog.close()


def teardown_all(made):
    """Tears down every process a factory made, then fails once with every
    problem found (a sanitizer report, an unclean exit), not just the first."""
    errors = []
    for p in made:
        try:
            p.teardown()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


class ExitChecks:
    """What every weft process helper asserts when it stops: a clean exit
    (code 0) and no sanitizer report on stderr.  KIND names it in messages."""
    KIND = "weft"

    def stop(self, sig=signal.SIGTERM, timeout=DEADLINE):
        """Sends sig and asserts a clean exit: code 0, no sanitizer report."""
        if self.running():
            self.proc.send_signal(sig)
            try:
                self.rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("%s %s ignored signal %d for %.0fs\n%s"
                                     % (self.KIND, self.name, sig, timeout, self.describe()))
            assert self.rc == 0, "%s %s exited %d after signal %d\n%s" % (
                self.KIND, self.name, self.rc, sig, self.describe())
        self.check_stderr()

    def teardown(self):
        """Stops the process if it runs (clean exit asserted), checks the
        stderr of one that already ended, and releases its files."""
        try:
            if self.proc is not None:
                if self.running():
                    self.stop()
                elif not self.checked:
                    self.proc.wait()
                    self.check_stderr()
        finally:
            if self.running():
                self.proc.kill()
                self.proc.wait()
            self.close()

    def check_stderr(self):
        self.checked = True
        bad = sanitizer_lines(self.stderr())
        assert not bad, "%s %s: sanitizer report on stderr\n%s" % (self.KIND, self.name,
                                                                   self.describe())


class Weft(ExitChecks):
    """One `weft --role=proxy` process with its own config dir and ports.

    Attributes: out_port, in_port, admin_port, config_dir, proc, and
    out_url / in_url ("http://127.0.0.1:PORT")."""

    def __init__(self, binary, workdir, name):
        self.binary = binary
        self.name = name
        self.dir = pathlib.Path(workdir) / name
        self.config_dir = self.dir / "config"
        self.config_dir.mkdir(parents=True)
        self.out_port, self.in_port, self.admin_port = free_ports(3)
        self.proc = None
        self.args = []
        self.rc = None
        self.checked = False

    @property
    def out_url(self):
        return "http://127.0.0.1:%d" % self.out_port

    @property
    def in_url(self):
        return "http://127.0.0.1:%d" % self.in_port

    @property
    def proxy(self):
        """For curl(proxy=...): absolute-form requests to the outbound port."""
        return self.out_url

    def write(self, text, filename="config.yaml"):
        path = self.config_dir / filename
        path.write_text(dedent(text) if text.startswith("\n") else text)
        return path

    def command(self, namespace="default", service_account="default", labels=None,
                app_port=None, concurrency=2, plugin_dirs=(), module_dir=None, seed=None,
                log_level=None, extra=()):
        # Both flag spellings on purpose: "--flag=value" and "--flag value".
        args = [self.binary, "--role=proxy", "--config-dir", str(self.config_dir),
                "--namespace", namespace, "--service-account=" + service_account,
                "--outbound=127.0.0.1:%d" % self.out_port,
                "--inbound", "127.0.0.1:%d" % self.in_port,
                "--admin=127.0.0.1:%d" % self.admin_port,
                "--concurrency", str(concurrency)]
        if labels:
            args.append("--labels=" + ",".join("%s=%s" % kv for kv in labels.items()))
        if app_port is not None:
            args += ["--app-port", str(app_port)]
        for d in plugin_dirs:
            args += ["--plugin-dir", str(d)]
        if module_dir:
            args.append("--module-dir=" + str(module_dir))
        if seed is not None:
            args.append("--seed=%d" % seed)
        if log_level:
            args.append("--log-level=" + log_level)
        return args + list(extra)

    def start(self, wait=True, argv=None, **kw):
        """Starts weft (argv as given, or built by command(**kw)) and,
        with wait, polls /ready until 200."""
        self.args = list(argv) if argv else self.command(**kw)
        self.stdout = open(self.dir / "stdout.log", "wb")
        self.stderr_f = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.stdout, stderr=self.stderr_f,
                                     env=CHILD_ENV, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        p = self.dir / "stderr.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def describe(self):
        return "weft %s\n  command: %s\n  stderr:\n%s" % (
            self.name, " ".join(map(str, self.args)),
            textwrap.indent(self.stderr()[-4000:], "    "))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def admin(self, path, method="GET", timeout=5):
        """(status, body bytes) from the admin listener."""
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def wait_ready(self, timeout=DEADLINE):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("weft exited with %d before it was ready\n%s"
                                     % (self.proc.returncode, self.describe()))
            try:
                return self.admin("/ready", timeout=2)[0] == 200
            except OSError:
                return False
        try:
            wait_until(ready, "weft %s to answer 200 on /ready" % self.name, timeout)
        except AssertionError as e:
            if "before it was ready" in str(e):
                raise
            raise AssertionError("%s\n%s" % (e, self.describe()))

    def config_dump(self):
        status, body = self.admin("/config_dump")
        assert status == 200, body
        return json.loads(body)

    def stats(self):
        """/stats as a dict name -> int (non-integer values kept as text)."""
        status, body = self.admin("/stats")
        assert status == 200, body
        out = {}
        for line in body.decode().splitlines():
            if ": " not in line:
                continue
            k, v = line.rsplit(": ", 1)
            v = v.strip()
            out[k.strip()] = int(v) if re.fullmatch(r"-?\d+", v) else v
        return out

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.proc.pid)

    def wait_exit(self, timeout=DEADLINE):
        """Waits for the process to exit on its own; returns its exit code."""
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("weft %s still running after %.0fs\n%s"
                                 % (self.name, timeout, self.describe()))
        return self.rc

    def close(self):
        for f in ("stdout", "stderr_f"):
            if hasattr(self, f):
                getattr(self, f).close()



def run_weft(args, timeout=DEADLINE, cwd=None):
    """Runs weft to completion (for CLI and refused-config cases)."""
    return subprocess.run([WEFT_BIN] + list(args), capture_output=True, text=True,
                          env=CHILD_ENV, timeout=timeout, cwd=cwd)


def make_token_file(ca_dir, namespace, service_account, ttl, path):
    """`weft token` for NS/SA from the CA in ca_dir, written to path."""
    r = run_weft(["token", "--ca-dir", str(ca_dir), "--namespace", namespace,
                  "--service-account", service_account, "--ttl", ttl])
    assert r.returncode == 0, "weft token failed (%d): %s" % (r.returncode, r.stderr)
    path = pathlib.Path(path)
    path.write_text(r.stdout)
    return path


# --------------------------------------------------------------------------
# fixtures

@pytest.fixture
def weft_bin():
    if not os.access(WEFT_BIN, os.X_OK):
        pytest.fail("weft binary not found at %s: build it with `./dev build`, or point "
                    "WEFT_BIN at it" % WEFT_BIN, pytrace=False)
    return WEFT_BIN


@pytest.fixture
def weft(tmp_path, weft_bin):
    """Factory: weft(config_yaml=None, name=None, start=True, **start_args)."""
    made = []

    def make(config=None, name=None, start=True, files=None, **kw):
        w = Weft(weft_bin, tmp_path, name or "weft%d" % len(made))
        made.append(w)
        if config is not None:
            w.write(config)
        for fname, text in (files or {}).items():
            w.write(text, fname)
        if start:
            w.start(**kw)
        return w

    yield make
    teardown_all(made)


@pytest.fixture
def backend(tmp_path):
    """Factory: backend(name, port=0) -> Backend, stopped at teardown."""
    made = []
    logdir = tmp_path / "backends"
    logdir.mkdir(exist_ok=True)

    def make(name, port=0):
        b = Backend(name, str(logdir), port)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def reviews(backend):
    """Three backends reviews-v1/v2/v3 and the YAML of a `reviews` service
    (port 9080, named http) with WorkloadEntries for them and a
    DestinationRule with subsets v1, v2, v3.  Tests add a VirtualService."""
    bs = {v: backend("reviews-" + v) for v in ("v1", "v2", "v3")}

    class Mesh:
        backends = bs
        yaml = (service_entry("reviews")
                + "".join(workload_entry("reviews-" + v, b.port, app="reviews", version=v)
                          for v, b in bs.items())
                + destination_rule("reviews"))
    return Mesh


# --------------------------------------------------------------------------
# the CA alone: `weft --role=ca`
#
#     ca        factory: ca(name=None, ca_dir=None, start=True, extra=()) -> a
#               started CaProc (class from the ca_class fixture, which a test
#               module may override to add methods)

class CaProc(ExitChecks):
    """`weft --role=ca` with its own CA directory and free ports; restartable."""
    KIND = "ca"

    def __init__(self, binary, workdir, name="ca", ca_dir=None):
        self.binary = binary
        self.name = name
        self.dir = pathlib.Path(workdir) / name
        self.dir.mkdir(parents=True)
        self.ca_dir = pathlib.Path(ca_dir) if ca_dir else self.dir / "ca"
        self.port, self.mon_port = free_ports(2)
        self.proc = None
        self.rc = None
        self.checked = False
        self.runs = 0
        self.args = []
        self._err = None

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    @property
    def root_cert(self):
        return self.ca_dir / "root-cert.pem"

    def start(self, extra=()):
        self.args = [self.binary, "--role=ca", "--ca-dir", str(self.ca_dir), "--listen", self.addr,
                     "--monitoring", "127.0.0.1:%d" % self.mon_port] + list(extra)
        self.runs += 1
        self.checked = False
        self.rc = None
        self.close()
        self._err = open(self.dir / ("stderr.%d.log" % self.runs), "wb")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._err,
                                     env=CHILD_ENV, start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("ca exited %d before it was ready\n%s"
                                     % (self.proc.returncode, self.describe()))
            try:
                return http_get(self.mon_port, "/ready", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(ready, "the CA to answer 200 on /ready")
        return self

    def restart(self, extra=()):
        self.stop()
        return self.start(extra)

    def token(self, ns, sa, ttl="1h"):
        r = run_weft(["token", "--ca-dir", str(self.ca_dir), "--namespace", ns,
                      "--service-account", sa, "--ttl", ttl])
        assert r.returncode == 0, "weft token failed (%d): %s" % (r.returncode, r.stderr)
        assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1, repr(r.stdout)
        return r.stdout.strip()

    def token_file(self, ns, sa, ttl="1h"):
        return make_token_file(self.ca_dir, ns, sa, ttl,
                               self.dir / ("token-%s-%s-%s" % (ns, sa, ttl)))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        out = []
        for i in range(1, self.runs + 1):
            p = self.dir / ("stderr.%d.log" % i)
            if p.exists():
                out.append(p.read_text(errors="replace"))
        return "".join(out)

    def describe(self):
        return "ca %s\n  command: %s\n  stderr:\n%s" % (self.name, " ".join(map(str, self.args)),
                                                      self.stderr()[-4000:])

    def close(self):
        if self._err:
            self._err.close()
            self._err = None





def mtls_args(ca, ns, sa, ttl=None):
    """The proxy flags that get a workload certificate for NS/SA from the
    CaProc ca (a token file made for it); ttl: --cert-ttl."""
    args = ["--ca", ca.addr, "--token-file", str(ca.token_file(ns, sa)),
            "--root-cert", str(ca.root_cert)]
    if ttl:
        args += ["--cert-ttl", ttl]
    return args


def two_proxies(weft, ca, app_port, service="web", port=9080, port_name="http", protocol="HTTP",
                app_protocol=None, client_workers=2, client_yaml="", mode="STRICT",
                server_sa=None, expect_sa=None, client_sa="client", ttl=None):
    """A server proxy in front of the app at app_port and a client proxy (sa
    client_sa) that reaches it as SERVICE:PORT over mTLS, both with
    certificates from the CaProc ca.  The server runs as server_sa (default
    SERVICE); its WorkloadEntry names expect_sa (default server_sa), the
    identity the client checks.  mode: the mesh-wide PeerAuthentication
    (None: none); app_protocol: the server's --app-protocol; client_yaml:
    more configuration for the client; ttl: the certificates' lifetime.
    Returns (client, server)."""
    server_sa = server_sa or service
    server = weft(name="server", start=False)
    client = weft(name="client", start=False)
    y = (typed_service_entry(service, port, port_name, protocol)
         + sidecar_workload_entry(service + "-1", server.in_port, service, expect_sa or server_sa,
                                  port_name)
         + (peer_authentication(mode) if mode else ""))
    server.write(y)
    client.write(y + client_yaml)
    extra = mtls_args(ca, "default", server_sa, ttl)
    if app_protocol:
        extra += ["--app-protocol", app_protocol]
    server.start(app_port=app_port, service_account=server_sa, labels={"app": service},
                 extra=extra)
    client.start(service_account=client_sa, labels={"app": client_sa},
                 concurrency=client_workers, extra=mtls_args(ca, "default", client_sa, ttl))
    return client, server


@pytest.fixture
def ca_class():
    return CaProc


@pytest.fixture
def ca(tmp_path, weft_bin, ca_class):
    made = []

    def make(name=None, ca_dir=None, start=True, extra=()):
        c = ca_class(weft_bin, tmp_path, name or "ca%d" % len(made), ca_dir)
        made.append(c)
        return c.start(extra) if start else c
    yield make
    teardown_all(made)


# --------------------------------------------------------------------------
# xDS mode: istiod and proxies that take their config from it
#
# Fixtures:
#     istiod    factory: istiod(files={name: yaml}, start=True, **start_args)
#               -> a started Istiod (config dir, free xDS and monitoring
#               ports, /ready polled); stopped with SIGTERM at teardown,
#               exit 0 and no sanitizer report required.
#     weft_xds  factory: weft_xds(istiod, name, services=("reviews:9080",),
#               app_port=..., labels=..., **start_args) -> a started XdsWeft
#               (a Weft whose command uses --xds instead of --config-dir).
#
# Helpers: http_get(), cluster_endpoints(), parse_prometheus(),
# prometheus_client_check().

def http_get(port, path, method="GET", timeout=5):
    """(status, body bytes, headers dict lower-case) from 127.0.0.1:port."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


class Istiod(ExitChecks):
    """One `weft --role=istiod` process with its own config dir and ports.

    Attributes: xds_port, mon_port, config_dir, proc, and xds_addr
    ("127.0.0.1:PORT", what proxies get as --xds).  restart() starts a new
    process with the same command and ports (after kill() or stop());
    each run's stderr goes to its own file and stderr() joins them."""
    KIND = "istiod"

    def __init__(self, binary, workdir, name="istiod"):
        self.binary = binary
        self.name = name
        self.dir = pathlib.Path(workdir) / name
        self.config_dir = self.dir / "config"
        self.config_dir.mkdir(parents=True)
        (self.dir / "tmp").mkdir()
        self.xds_port, self.mon_port, self.secure_port = free_ports(3)
        self.ca_dir = self.dir / "ca"
        self.proc = None
        self.args = []
        self.runs = 0
        self.rc = None
        self.checked = False
        self.killed = False
        self._files = []

    @property
    def xds_addr(self):
        return "127.0.0.1:%d" % self.xds_port

    @property
    def mon_addr(self):
        return "127.0.0.1:%d" % self.mon_port

    @property
    def secure_addr(self):
        """xDS over mTLS and the CA: what mTLS proxies get as --xds and --ca."""
        return "127.0.0.1:%d" % self.secure_port

    @property
    def root_cert(self):
        return self.ca_dir / "root-cert.pem"

    def token_file(self, namespace, service_account, ttl="1h", name=None):
        """A bootstrap token from this istiod's CA, written to a file."""
        return make_token_file(self.ca_dir, namespace, service_account, ttl,
                               self.dir / (name or "token-%s-%s" % (namespace, service_account)))

    def write(self, text, filename="config.yaml"):
        """Writes a config file atomically (a temporary file outside the
        config dir renamed into it), as editors that save by rename do, so
        istiod never reads half a file.  Returns the path."""
        path = self.config_dir / filename
        tmp = self.dir / "tmp" / filename
        tmp.write_text(dedent(text) if text.startswith("\n") else text)
        os.replace(tmp, path)
        return path

    def write_in_place(self, text, filename="config.yaml"):
        """Rewrites a config file in place (truncate + write), as `>` does."""
        path = self.config_dir / filename
        with open(path, "w") as f:
            f.write(dedent(text) if text.startswith("\n") else text)
        return path

    def remove(self, filename):
        (self.config_dir / filename).unlink()

    def command(self, registry_grace=None, log_level=None, extra=()):
        args = [self.binary, "--role=istiod", "--config-dir", str(self.config_dir),
                "--xds-listen", self.xds_addr, "--monitoring=" + self.mon_addr,
                "--secure-listen", self.secure_addr, "--ca-dir", str(self.ca_dir)]
        if registry_grace is not None:
            args += ["--registry-grace", str(registry_grace)]
        if log_level:
            args.append("--log-level=" + log_level)
        return args + list(extra)

    def start(self, wait=True, argv=None, **kw):
        self.args = list(argv) if argv else self.command(**kw)
        return self._spawn(wait)

    def restart(self, wait=True):
        """Starts the same command again (the previous run must be over)."""
        assert not self.running(), "istiod %s is still running" % self.name
        return self._spawn(wait)

    def _spawn(self, wait):
        self.close()
        self.runs += 1
        self.checked = False
        self.killed = False
        self.rc = None
        out = open(self.dir / ("stdout.%d.log" % self.runs), "wb")
        err = open(self.dir / ("stderr.%d.log" % self.runs), "wb")
        self._files = [out, err]
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, env=CHILD_ENV,
                                     start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self, run=None):
        """stderr of one run (1-based), or of every run joined."""
        runs = [run] if run else range(1, self.runs + 1)
        out = []
        for i in runs:
            p = self.dir / ("stderr.%d.log" % i)
            if p.exists():
                out.append(p.read_text(errors="replace"))
        return "".join(out)

    def describe(self):
        return "istiod %s\n  command: %s\n  stderr (run %d):\n%s" % (
            self.name, " ".join(map(str, self.args)), self.runs,
            textwrap.indent(self.stderr(self.runs)[-4000:], "    "))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def get(self, path, timeout=5):
        """(status, body bytes) from the monitoring listener."""
        status, body, _ = http_get(self.mon_port, path, timeout=timeout)
        return status, body

    def get_json(self, path):
        status, body = self.get(path)
        assert status == 200, "GET %s on istiod's monitoring port: %d %r\n%s" % (
            path, status, body[:500], self.describe())
        try:
            return json.loads(body)
        except ValueError as e:
            raise AssertionError("GET %s: not JSON (%s): %r" % (path, e, body[:500]))

    def config_status(self):
        """/debug/config_status: {"ok": bool, "errors": [...], "version": "..."}."""
        return self.get_json("/debug/config_status")

    def syncz(self):
        """/debug/syncz: one entry per connected proxy."""
        out = self.get_json("/debug/syncz")
        assert isinstance(out, list), "/debug/syncz is not a JSON list: %r" % (out,)
        return out

    def metrics(self):
        """/metrics as text (status 200 asserted)."""
        status, body = self.get("/metrics")
        assert status == 200, "GET /metrics: %d %r" % (status, body[:300])
        return body.decode()

    def wait_ready(self, timeout=DEADLINE):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("istiod exited with %d before it was ready\n%s"
                                     % (self.proc.returncode, self.describe()))
            try:
                return self.get("/ready", timeout=2)[0] == 200
            except OSError:
                return False
        try:
            wait_until(ready, "istiod %s to answer 200 on /ready" % self.name, timeout)
        except AssertionError as e:
            if "before it was ready" in str(e):
                raise
            raise AssertionError("%s\n%s" % (e, self.describe()))

    def kill(self):
        """SIGKILL, as a crash: no clean exit is asked of this run."""
        assert self.running(), "istiod %s is not running" % self.name
        self.proc.kill()
        self.proc.wait()
        self.killed = True
        self.checked = True
        self.close()

    def close(self):
        for f in self._files:
            f.close()
        self._files = []



class XdsWeft(Weft):
    """A `weft --role=proxy --xds ADDR` process.  Like Weft, plus
    services (the --service NAME:PORT it registers) and node_name (its
    --name, so tests can find it in /debug/syncz and proxy-status)."""

    def __init__(self, binary, workdir, name, istiod):
        super().__init__(binary, workdir, name)
        self.istiod = istiod
        self.services = ()
        self.namespace = "default"

    @property
    def node_name(self):
        return self.name

    @property
    def node_id(self):
        """The node id the contract prescribes for namespace default."""
        return "sidecar~127.0.0.1~%s.%s~%s.svc.cluster.local" % (
            self.name, self.namespace, self.namespace)

    @property
    def inbound_addr(self):
        return "127.0.0.1:%d" % self.in_port

    def command(self, xds=None, services=(), namespace="default", service_account=None,
                labels=None, app_port=None, concurrency=1, node_name=None, instance_ip=None,
                plugin_dirs=(), module_dir=None, seed=None, log_level=None, mtls=False,
                token_file=None, cert_ttl=None, extra=()):
        """mtls: get a certificate from istiod's CA (a token for NS/SA unless
        token_file is given) and speak xDS over mTLS on its secure port."""
        self.services = tuple(services)
        self.namespace = namespace
        sa = service_account or (labels or {}).get("app", "default")
        if mtls:
            xds = xds or self.istiod.secure_addr
        args = [self.binary, "--role=proxy", "--xds", xds or self.istiod.xds_addr,
                "--namespace", namespace,
                "--service-account=" + sa,
                "--outbound=127.0.0.1:%d" % self.out_port,
                "--inbound", "127.0.0.1:%d" % self.in_port,
                "--admin=127.0.0.1:%d" % self.admin_port,
                "--concurrency", str(concurrency),
                "--name", node_name or self.name]
        for s in services:
            args += ["--service", s]
        if labels:
            args.append("--labels=" + ",".join("%s=%s" % kv for kv in labels.items()))
        if app_port is not None:
            args += ["--app-port", str(app_port)]
        if instance_ip:
            args += ["--instance-ip", instance_ip]
        for d in plugin_dirs:
            args += ["--plugin-dir", str(d)]
        if module_dir:
            args.append("--module-dir=" + str(module_dir))
        if seed is not None:
            args.append("--seed=%d" % seed)
        if log_level:
            args.append("--log-level=" + log_level)
        if mtls:
            tf = token_file or self.istiod.token_file(namespace, sa)
            args += ["--ca", self.istiod.secure_addr, "--token-file", str(tf),
                     "--root-cert", str(self.istiod.root_cert)]
            if cert_ttl:
                args += ["--cert-ttl", cert_ttl]
        return args + list(extra)

    def ready(self):
        try:
            return self.admin("/ready", timeout=2)[0] == 200
        except OSError:
            return False


def cluster_endpoints(dump, cluster):
    """{"ADDR:PORT", ...} of one cluster's ClusterLoadAssignment in a
    /config_dump (empty set when the cluster has no assignment)."""
    out = set()
    for cla in dump.get("endpoints") or []:
        if cla.get("cluster_name") != cluster:
            continue
        for loc in cla.get("endpoints") or []:
            for lb in loc.get("lb_endpoints") or []:
                sa = lb["endpoint"]["address"]["socket_address"]
                out.add("%s:%d" % (sa["address"], int(sa["port_value"])))
    return out


# ---- Prometheus text exposition format (version 0.0.4), parsed strictly

_PROM_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROM_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PROM_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _prom_value(s, where):
    if s in ("+Inf", "Inf"):
        return float("inf")
    if s == "-Inf":
        return float("-inf")
    if s == "NaN":
        return float("nan")
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
        raise AssertionError("%s: %r is not a number" % (where, s))
    return float(s)


def _prom_labels(s, i, where):
    """Parses {k="v",...} starting at s[i] == '{'; returns (dict, next i)."""
    labels = {}
    i += 1
    while True:
        if s[i:i + 1] == "}":
            return labels, i + 1
        m = _PROM_LABEL.match(s, i)
        if not m:
            raise AssertionError("%s: bad label name at column %d" % (where, i + 1))
        key = m.group(0)
        i = m.end()
        if s[i:i + 2] != '="':
            raise AssertionError("%s: label %s: expected =\" at column %d" % (where, key, i + 1))
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise AssertionError("%s: unterminated label value" % where)
            c = s[i]
            if c == "\\":
                nxt = s[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise AssertionError("%s: bad escape \\%s in label %s" % (where, nxt, key))
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise AssertionError("%s: newline in label value" % where)
            else:
                val.append(c)
                i += 1
        if key in labels:
            raise AssertionError("%s: label %s given twice" % (where, key))
        labels[key] = "".join(val)
        if s[i:i + 1] == ",":
            i += 1
        elif s[i:i + 1] != "}":
            raise AssertionError("%s: expected , or } at column %d" % (where, i + 1))


def parse_prometheus(text):
    """Parses Prometheus text format 0.0.4 strictly.  Returns
    {family: {"type": t, "help": h, "samples": [(name, labels, value)]}}.
    Fails on: malformed lines, a TYPE after the family's samples or given
    twice, samples of one family not together, a duplicate series, sample
    names that do not belong to their family's type, and histograms whose
    buckets are not cumulative, lack +Inf, or disagree with _count."""
    fams = {}
    seen_series = set()
    order = []  # family of each sample line, to check grouping
    if text and not text.endswith("\n"):
        raise AssertionError("metrics text does not end with a newline")

    def family_of(name):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)] if name.endswith(suffix) else None
            if base and base in fams and fams[base]["type"] in ("histogram", "summary"):
                return base
        return name

    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        where = "metrics line %d %r" % (lineno, line[:120])
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3 or not _PROM_NAME.fullmatch(parts[2]):
                    raise AssertionError("%s: bad metric name" % where)
                name = parts[2]
                f = fams.setdefault(name, {"type": None, "help": None, "samples": []})
                if parts[1] == "TYPE":
                    t = parts[3].strip() if len(parts) > 3 else ""
                    if t not in _PROM_TYPES:
                        raise AssertionError("%s: unknown type %r" % (where, t))
                    if f["type"] is not None:
                        raise AssertionError("%s: second TYPE line for %s" % (where, name))
                    if f["samples"]:
                        raise AssertionError("%s: TYPE after samples of %s" % (where, name))
                    f["type"] = t
                else:
                    if f["help"] is not None:
                        raise AssertionError("%s: second HELP line for %s" % (where, name))
                    f["help"] = parts[3] if len(parts) > 3 else ""
            continue  # other comments are allowed
        m = _PROM_NAME.match(line)
        if not m:
            raise AssertionError("%s: does not start with a metric name" % where)
        name = m.group(0)
        i = m.end()
        labels = {}
        if line[i:i + 1] == "{":
            labels, i = _prom_labels(line, i, where)
        if line[i:i + 1] != " ":
            raise AssertionError("%s: expected a space before the value" % where)
        rest = line[i + 1:].strip().split(" ")
        if len(rest) not in (1, 2):
            raise AssertionError("%s: expected VALUE [TIMESTAMP]" % where)
        value = _prom_value(rest[0], where)
        if len(rest) == 2 and not re.fullmatch(r"-?\d+", rest[1]):
            raise AssertionError("%s: bad timestamp" % where)
        fam = family_of(name)
        f = fams.setdefault(fam, {"type": None, "help": None, "samples": []})
        t = f["type"] or "untyped"
        if t in ("histogram", "summary") and name == fam:
            if t == "histogram":
                raise AssertionError("%s: histogram %s sample without _bucket/_sum/_count"
                                     % (where, fam))
        if t in ("counter", "gauge", "untyped") and name != fam:
            raise AssertionError("%s: sample name differs from family %s" % (where, fam))
        if t == "histogram" and name.endswith("_bucket") and "le" not in labels:
            raise AssertionError("%s: histogram bucket without le" % where)
        if t == "counter" and value < 0:
            raise AssertionError("%s: negative counter" % where)
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            raise AssertionError("%s: series given twice" % where)
        seen_series.add(key)
        if order and order[-1] != fam and fam in order:
            raise AssertionError("%s: samples of %s are not together" % (where, fam))
        order.append(fam)
        f["samples"].append((name, labels, value))

    for fam, f in fams.items():
        if f["type"] != "histogram":
            continue
        groups = {}
        for name, labels, value in f["samples"]:
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
            if name.endswith("_bucket"):
                g["buckets"].append((_prom_value(labels["le"], "%s le" % fam), value))
            elif name.endswith("_sum"):
                g["sum"] = value
            else:
                g["count"] = value
        for rest, g in groups.items():
            what = "histogram %s%s" % (fam, dict(rest) if rest else "")
            les = [le for le, _ in g["buckets"]]
            if les != sorted(les):
                raise AssertionError("%s: buckets not in increasing le order: %s" % (what, les))
            if not les or les[-1] != float("inf"):
                raise AssertionError("%s: no le=\"+Inf\" bucket" % what)
            counts = [c for _, c in g["buckets"]]
            if any(b < a for a, b in zip(counts, counts[1:])):
                raise AssertionError("%s: bucket counts not cumulative: %s" % (what, counts))
            if g["count"] is None or g["sum"] is None:
                raise AssertionError("%s: missing _count or _sum" % what)
            if g["count"] != counts[-1]:
                raise AssertionError("%s: _count %s != +Inf bucket %s"
                                     % (what, g["count"], counts[-1]))
    return fams


def prometheus_client_check(text):
    """Parses text with prometheus_client's parser as well when the
    python3-prometheus-client package is installed; returns the family
    names it saw, or None when the package is missing."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return None
    return {f.name for f in text_string_to_metric_families(text)}


@pytest.fixture
def istiod(tmp_path, weft_bin):
    """Factory: istiod(files=None, name="istiod", start=True, **start_args)
    -> an Istiod (start_args: registry_grace, log_level, extra, wait)."""
    made = []

    def make(files=None, name=None, start=True, **kw):
        d = Istiod(weft_bin, tmp_path, name or ("istiod" if not made else "istiod%d" % len(made)))
        made.append(d)
        for fname, text in (files or {}).items():
            d.write(text, fname)
        if start:
            d.start(**kw)
        return d

    yield make
    teardown_all(made)


@pytest.fixture
def weft_xds(tmp_path, weft_bin, istiod):
    """Factory: weft_xds(istiod, name, services=(), app_port=None,
    labels=None, start=True, wait=True, **start_args) -> an XdsWeft.
    Proxies are stopped (SIGTERM, exit 0, no sanitizer report) before
    istiod, since this fixture depends on `istiod`."""
    made = []

    def make(control, name=None, start=True, **kw):
        w = XdsWeft(weft_bin, tmp_path, name or "proxy%d" % len(made), control)
        made.append(w)
        if start:
            w.start(**kw)
        return w

    yield make
    teardown_all(made)


def xds_versions(dump):
    """The xDS versions a proxy's /config_dump reports: {"LDS": v, "CDS":
    v, "EDS": v} (upper-case type names), plus "bundle": the applied
    snapshot's version_info."""
    out = {"bundle": dump.get("version_info")}
    x = dump.get("xds")
    assert isinstance(x, dict), "/config_dump has no \"xds\" object: keys %s" % sorted(dump)
    for k, v in x.items():
        if isinstance(v, dict):
            v = v.get("version") or v.get("version_info") or v.get("acked")
        if k.upper() in ("LDS", "CDS", "EDS"):
            out[k.upper()] = v
    return out


def outbound_cluster(host, port=9080, subset="", ns="default"):
    """Istio's cluster name for a service (short host resolved in ns)."""
    if "." not in host:
        host = "%s.%s.svc.cluster.local" % (host, ns)
    return "outbound|%d|%s|%s" % (port, subset, host)


def wait_endpoints(proxy, cluster, want, timeout=DEADLINE):
    """Polls proxy's /config_dump until the endpoints of cluster are
    exactly the set want ({"ADDR:PORT", ...}); returns the dump."""
    want = set(want)
    seen = [None]

    def ok():
        d = proxy.config_dump()
        seen[0] = cluster_endpoints(d, cluster)
        return d if seen[0] == want else None
    try:
        return wait_until(ok, "%s to have endpoints %s in %s" % (proxy.name, sorted(want), cluster),
                          timeout, interval=0.05)
    except AssertionError as e:
        raise AssertionError("%s; last seen %s\n%s" % (e, sorted(seen[0] or ()),
                                                      proxy.describe()))


def workload(weft_xds, backend, control, name, app, version="v1", port=9080, serve=True, **kw):
    """A workload in xDS mode: a backend NAME and a proxy NAME registering
    APP:PORT with labels app=APP,version=VERSION, its inbound listener
    forwarding to the backend.  serve=False: a client-only proxy (no
    --service, no app).  The proxy gets .backend (or None)."""
    b = backend(name) if serve else None
    w = weft_xds(control, name=name, services=("%s:%d" % (app, port),) if serve else (),
                 app_port=b.port if b else None, labels={"app": app, "version": version}, **kw)
    w.backend = b
    return w
