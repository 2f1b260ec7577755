#!/usr/bin/python3
"""weft's demo: a small mesh in static mode on loopback.

    /usr/bin/python3 conf/demo/demo.py --weft build/weft [--once]

Starts a backend and a weft proxy for each of reviews v1/v2/v3 and
details v1 (the proxy's inbound listener forwards to the backend), plus a
client-side proxy for productpage, all on free 127.0.0.1 ports, with the
config in conf/demo/*.yaml.  Then it sends traffic through productpage's
proxy and prints which subset served what: the 90/10 split, the
`end-user: jason` canary, a service without VirtualService, and an unknown
host.  It keeps the mesh running until Ctrl-C or SIGTERM (with --once it
stops right away) and stops every child cleanly.
"""
import argparse
import http.client
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
DEADLINE = 20.0  # seconds for anything to come up

# workload -> (app, version, has a backend)
WORKLOADS = [
    ("productpage", "productpage", "v1", False),
    ("reviews-v1", "reviews", "v1", True),
    ("reviews-v2", "reviews", "v2", True),
    ("reviews-v3", "reviews", "v3", True),
    ("details-v1", "details", "v1", True),
]


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


class Mesh:
    def __init__(self, weft, workdir, style):
        self.weft = weft
        self.dir = workdir
        self.s = style
        self.backends = {}  # name -> (Popen, port)
        self.proxies = {}   # name -> dict(proc, out, inb, admin, stderr path)

    # --- start --------------------------------------------------------

    def start(self):
        for name, app, version, has_app in WORKLOADS:
            if has_app:
                self.backends[name] = self._start_backend(name)
        ports = iter(free_ports(3 * len(WORKLOADS)))
        for name, app, version, has_app in WORKLOADS:
            self.proxies[name] = {"out": next(ports), "inb": next(ports), "admin": next(ports)}
        config = self._render_config()
        for name, app, version, has_app in WORKLOADS:
            self._start_proxy(name, app, version, config)
        for name, p in self.proxies.items():
            self._wait_ready(name, p)

    def _start_backend(self, name):
        proc = subprocess.Popen([sys.executable, str(BACKEND_PY), "--port", "0", "--name", name],
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

    def _render_config(self):
        """Copies conf/demo/*.yaml, giving each marked port its real value."""
        cdir = self.dir / "config"
        cdir.mkdir()
        mark = re.compile(r"^(\s*\w[\w-]*:\s*)\d+(\s*#\s*demo\.py:\s*(\S+)\s+inbound.*)$", re.M)

        def sub(m):
            return "%s%d%s" % (m.group(1), self.proxies[m.group(3)]["inb"], m.group(2))

        for f in sorted(HERE.glob("*.yaml")):
            (cdir / f.name).write_text(mark.sub(sub, f.read_text()))
        return cdir

    def _start_proxy(self, name, app, version, config):
        p = self.proxies[name]
        p["stderr"] = self.dir / ("%s.stderr" % name)
        args = [self.weft, "--role=proxy", "--config-dir", str(config),
                "--namespace", "default", "--service-account", app,
                "--labels", "app=%s,version=%s" % (app, version),
                "--outbound", "127.0.0.1:%d" % p["out"],
                "--inbound", "127.0.0.1:%d" % p["inb"],
                "--admin", "127.0.0.1:%d" % p["admin"], "--concurrency", "1"]
        if name in self.backends:
            args += ["--app-port", str(self.backends[name][1])]
        with open(p["stderr"], "wb") as err:
            p["proc"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                                         env=child_env(), start_new_session=True)

    def _wait_ready(self, name, p):
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            if p["proc"].poll() is not None:
                raise RuntimeError("the proxy of %s exited with code %d:\n%s"
                                   % (name, p["proc"].returncode, self.stderr_of(name)))
            try:
                c = http.client.HTTPConnection("127.0.0.1", p["admin"], timeout=2)
                c.request("GET", "/ready")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the proxy of %s was not ready after %.0fs:\n%s"
                           % (name, DEADLINE, self.stderr_of(name)))

    def stderr_of(self, name):
        try:
            text = self.proxies[name]["stderr"].read_text(errors="replace")
        except (KeyError, OSError):
            return ""
        return "\n".join("    " + l for l in text.splitlines()[-20:])

    # --- watch and stop -----------------------------------------------

    def dead(self):
        """Names of children that exited on their own."""
        out = [n for n, p in self.proxies.items() if "proc" in p and p["proc"].poll() is not None]
        out += [n + " (backend)" for n, (proc, _) in self.backends.items() if proc.poll() is not None]
        return out

    def stop(self):
        """SIGTERM to every child, proxies first; returns a list of problems."""
        problems = []
        procs = [(n, p["proc"]) for n, p in self.proxies.items() if "proc" in p]
        procs += [(n + " (backend)", proc) for n, (proc, _) in self.backends.items()]
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs:
            try:
                rc = proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                problems.append("%s did not stop within %.0fs; killed\n%s"
                                % (name, DEADLINE, self.stderr_of(name)))
                continue
            if rc != 0 and not name.endswith("(backend)"):
                problems.append("%s exited with code %d:\n%s" % (name, rc, self.stderr_of(name)))
        return problems

    # --- traffic ------------------------------------------------------

    def request(self, host, path="/", headers=None, conn=None):
        """One GET through productpage's outbound listener."""
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.proxies["productpage"]["out"],
                                              timeout=10)
        h = {"Host": host}
        h.update(headers or {})
        conn.request("GET", path, headers=h)
        r = conn.getresponse()
        body = r.read()
        if own:
            conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body


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
    conn = http.client.HTTPConnection("127.0.0.1", pp["out"], timeout=10)

    print(s.bold("1. %d requests from productpage to http://reviews:9080/" % n))
    print(s.dim("   VirtualService reviews: 90% to subset v1, 10% to subset v2"))
    counts = Counter()
    for _ in range(n):
        status, headers, _ = mesh.request("reviews:9080", "/reviews/1", conn=conn)
        counts[subset_of(status, headers)] += 1
        with_header += plugin_header in headers
        sent += 1
    table(s, counts, n)
    if counts["v1"] + counts["v2"] != n:
        wrong.append("the 90/10 split answered %s" % dict(counts))
    print()

    jn = 20
    print(s.bold("2. %d requests with header end-user: jason" % jn))
    print(s.dim("   the first route of the VirtualService sends them to subset v3"))
    counts = Counter()
    for _ in range(jn):
        status, headers, _ = mesh.request("reviews:9080", "/reviews/1",
                                          {"end-user": "jason"}, conn=conn)
        counts[subset_of(status, headers)] += 1
        with_header += plugin_header in headers
        sent += 1
    table(s, counts, jn)
    if counts["v3"] != jn:
        wrong.append("jason's requests went to %s" % dict(counts))
    print()

    print(s.bold("3. http://details:9080/ (no VirtualService: the service routes to itself)"))
    status, headers, _ = mesh.request("details:9080", "/details/1", conn=conn)
    with_header += plugin_header in headers
    sent += 1
    print("     %d from %s" % (status, headers.get("x-backend", "?")))
    if status != 200 or headers.get("x-backend") != "details-v1":
        wrong.append("details answered %d from %s" % (status, headers.get("x-backend")))
    print()

    print(s.bold("4. http://ratings:9080/ (no such service in the mesh)"))
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
    print(s.bold("5. the example plugin (FilterPlugin demo-header, on productpage's proxy)"))
    print("     %d of %d responses carried %s: %s" % (with_header, sent, plugin_header, value))
    if with_header != sent:
        wrong.append("only %d of %d responses carried %s" % (with_header, sent, plugin_header))
    print()
    return wrong


def main():
    ap = argparse.ArgumentParser(description="Run weft's demo mesh on loopback.")
    ap.add_argument("--weft", default=str(REPO / "build" / "weft"), help="the weft binary")
    ap.add_argument("--once", action="store_true", help="exit after sending the traffic")
    ap.add_argument("--requests", type=int, default=200, help="requests for the split (200)")
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
            print(s.bold("weft demo") + ": a static-mode mesh on 127.0.0.1 "
                  + s.dim("(config: %s)" % os.path.relpath(HERE)))
            print()
            mesh.start()
            print("     %-12s %-17s %-17s %s" % ("workload", "proxy outbound", "proxy inbound",
                                                  "app"))
            for name, app, version, has_app in WORKLOADS:
                p = mesh.proxies[name]
                # without an app there is no inbound listener
                inb = ("127.0.0.1:%d" % p["inb"]) if has_app else "-"
                appaddr = ("127.0.0.1:%d" % mesh.backends[name][1]) if has_app else "-"
                print("     %-12s %-17s %-17s %s"
                      % (name, "127.0.0.1:%d" % p["out"], inb, appaddr))
            print()
            wrong = run_traffic(mesh, s, args.requests)
            if wrong:
                rc = 1
                for w in wrong:
                    print(s.red("unexpected: ") + w)
                print()
            if not args.once:
                pp = mesh.proxies["productpage"]
                print(s.dim("   try: curl -H 'Host: reviews:9080' http://127.0.0.1:%d/"
                            % pp["out"]))
                print(s.dim("        curl -s http://127.0.0.1:%d/config_dump | python3 -m json.tool"
                            % pp["admin"]))
                print(s.bold("mesh running; Ctrl-C to stop"), flush=True)
                while True:
                    dead = mesh.dead()
                    if dead:
                        print(s.red("stopped unexpectedly: ") + ", ".join(dead))
                        for d in dead:
                            if d in mesh.proxies:
                                print(mesh.stderr_of(d))
                        rc = 1
                        break
                    time.sleep(0.5)
        except Stop:
            print()
        except (RuntimeError, OSError) as e:
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
