#!/usr/bin/python3
"""Benchmark case 6: the control plane under 2000 xDS clients.

One `weft --role=istiod` (core 1) serves 1000 services (ServiceEntry, five
endpoints each, over ten namespaces) and one VirtualService; the load tool
(build/bench-tools/xdsload, core 0, tests/bench/xdsload.c) connects 2000
simulated sidecars of ten deployments, each on its own ADS stream, and
reports when every one has ACKed its first CDS, EDS and LDS.  Then, each
round:

  (a) the VirtualService's route weights change: time until 99 % and 100 %
      of the clients have ACKed a new LDS version;
  (b) one endpoint of one service moves: the same for EDS.

Each time runs from the moment just before the file is replaced (the tool
is told "mark" first), so istiod's file watch and debounce count, as they
do for a user.  istiod's RSS (VmRSS) is read before the clients connect
and once they are all synced; the difference per client is the cost of a
connected proxy.  Budget (issue 6): 99 % converged within 1 s, at most
100 KB per connected client.

case_xds(rounds) returns the medians as a dict; run alone it prints them:
  python3 tests/bench/case6.py [--rounds N] [--clients N] [--build DIR]
"""
import argparse
import json
import os
import pathlib
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "bench" / "work" / "case6"
ISTIOD_CORE, LOAD_CORE = "1", "0"
SERVICES, ENDPOINTS, NAMESPACES, DEPLOYMENTS = 1000, 5, 10, 10
CLIENTS = 2000
SYNC_TIMEOUT = 900      # seconds for every client to get its first config
CONVERGE_TIMEOUT = 120  # seconds for one change to reach every client


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kb(pid, key="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def raise_nofile():
    """Room for a descriptor per client (root may raise the hard limit)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200000, 200000))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------
# configuration


def service(i):
    return "svc%d" % i, "bench%d" % (i % NAMESPACES)


def ep_addr(i, k, moved=0):
    """Endpoint k of service i; moved shifts endpoint 0 (the change (b))."""
    if k == 0 and moved:
        return "10.250.%d.%d" % (moved // 250 % 250, 1 + moved % 250)
    return "10.%d.%d.%d" % (i // 250, i % 250, 1 + k)


def services_yaml(moved_service=-1, moved=0):
    out = []
    for i in range(SERVICES):
        name, ns = service(i)
        eps = "".join("  - address: %s\n    ports: {http: 8080}\n"
                      % ep_addr(i, k, moved if i == moved_service else 0)
                      for k in range(ENDPOINTS))
        out.append("apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                   "metadata: {name: %s, namespace: %s}\nspec:\n"
                   "  hosts: [%s.%s.svc.cluster.local]\n"
                   "  location: MESH_INTERNAL\n  resolution: STATIC\n"
                   "  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n%s"
                   % (name, ns, name, ns, eps))
    return "---\n".join(out)


def vs_yaml(weight):
    """svc0 split between itself and svc10 (same namespace), weight % to svc10."""
    return ("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
            "metadata: {name: svc0, namespace: bench0}\nspec:\n  hosts: [svc0]\n  http:\n"
            "  - route:\n    - destination: {host: svc0}\n      weight: %d\n"
            "    - destination: {host: svc10}\n      weight: %d\n" % (100 - weight, weight))


def write_atomic(path, text):
    """The way a config tool replaces a file: write aside, then rename over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# processes


class Istiod:
    def __init__(self, build, cfg):
        self.xds, self.secure, self.mon = free_port(), free_port(), free_port()
        self.log = open(WORK / "istiod.log", "wb")
        args = [str(build / "weft"), "--role=istiod", "--config-dir", str(cfg),
                "--xds-listen", "127.0.0.1:%d" % self.xds,
                "--secure-listen", "127.0.0.1:%d" % self.secure,
                "--monitoring", "127.0.0.1:%d" % self.mon,
                "--ca-dir", str(WORK / "ca"), "--log-level", "warn"]
        self.p = subprocess.Popen(["taskset", "-c", ISTIOD_CORE] + args, stdout=self.log,
                                  stderr=self.log, start_new_session=True,
                                  preexec_fn=raise_nofile)
        end = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/ready" % self.mon,
                                            timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.p.poll() is not None or time.monotonic() > end:
                raise RuntimeError("istiod did not become ready; see %s" % (WORK / "istiod.log"))
            time.sleep(0.05)

    def rss(self, key="VmRSS"):
        return rss_kb(self.p.pid, key)

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mon, timeout=10) as r:
            return r.read().decode()

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.log.close()


class Load:
    """xdsload: commands on its stdin, its event lines read by a thread."""

    def __init__(self, build, xds_port, clients):
        self.err = open(WORK / "xdsload.err", "wb")
        args = [str(build / "bench-tools" / "xdsload"), "--xds", "127.0.0.1:%d" % xds_port,
                "--clients", str(clients), "--deployments", str(DEPLOYMENTS),
                "--namespaces", str(NAMESPACES), "--timeout", str(CONVERGE_TIMEOUT)]
        self.p = subprocess.Popen(["taskset", "-c", LOAD_CORE] + args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1,
                                  start_new_session=True, preexec_fn=raise_nofile)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def wait(self, prefix, timeout, server=None):
        """The next line starting with prefix, as a dict of its key=value words;
        fails early when server (an Istiod) exits meanwhile."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError("xdsload: no '%s' within %ds" % (prefix, timeout))
            if server and server.p.poll() is not None:
                raise RuntimeError("istiod exited (status %d) while waiting for '%s'; see %s"
                                   % (server.p.returncode, prefix, WORK / "istiod.log"))
            try:
                line = self.lines.get(timeout=min(left, 1))
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("xdsload exited (%s); see %s"
                                   % (self.p.wait(), WORK / "xdsload.err"))
            if line.startswith(prefix + " "):
                words = line.split()
                kv = dict(w.split("=", 1) for w in words[1:] if "=" in w)
                kv["_line"] = line
                kv["_args"] = [w for w in words[1:] if "=" not in w]
                return kv

    def stop(self):
        try:
            self.send("quit")
            self.p.wait(30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait()
        self.err.close()


# --------------------------------------------------------------------------
# the case


def converge(load, types, change, server=None):
    """Marks, applies change(), returns (p99_ms, all_ms, line) of the tool's report."""
    load.send("mark " + types)
    load.wait("marked", 10, server)
    change()
    r = load.wait("converged", CONVERGE_TIMEOUT + 30, server)
    if "timeout" in r["_args"]:
        print("case 6: %s change not converged within %ds: %s"
              % (types, CONVERGE_TIMEOUT, r["_line"]), file=sys.stderr)
    return float(r["p99_ms"]), float(r["all_ms"]), r["_line"]


def case_xds(rounds, build=None, clients=CLIENTS, verbose=False):
    build = pathlib.Path(build) if build else REPO / "build"
    if not build.is_absolute():
        build = REPO / build
    shutil.rmtree(WORK, ignore_errors=True)
    cfg = WORK / "config"
    cfg.mkdir(parents=True)
    (cfg / "services.yaml").write_text(services_yaml())
    (cfg / "vs.yaml").write_text(vs_yaml(10))
    istiod = Istiod(build, cfg)
    load = None
    runs = []
    try:
        time.sleep(1)
        idle = istiod.rss()
        t0 = time.monotonic()
        load = Load(build, istiod.xds, clients)
        load.wait("connected", SYNC_TIMEOUT, istiod)
        synced = load.wait("synced", SYNC_TIMEOUT, istiod)
        time.sleep(2)
        with_clients = istiod.rss()
        peak = istiod.rss("VmHWM")
        if verbose:
            print("synced %d clients in %.1f s; istiod RSS %d KB idle, %d KB with clients "
                  "(peak %d KB)" % (clients, time.monotonic() - t0, idle, with_clients, peak),
                  file=sys.stderr)
        for r in range(rounds):
            weight = 20 + 10 * (r % 5)
            vs = converge(load, "LDS",
                          lambda: write_atomic(cfg / "vs.yaml", vs_yaml(weight)), istiod)
            time.sleep(1)
            ep = converge(load, "EDS",
                          lambda: write_atomic(cfg / "services.yaml",
                                               services_yaml(SERVICES // 2, r + 1)), istiod)
            time.sleep(1)
            runs.append({"vs_p99_ms": vs[0], "vs_all_ms": vs[1],
                         "ep_p99_ms": ep[0], "ep_all_ms": ep[1]})
            if verbose:
                print("round %d: %s\n         %s" % (r + 1, vs[2], ep[2]), file=sys.stderr)
        after = istiod.rss()
    finally:
        if load:
            load.stop()
        istiod.stop()

    def med(k):
        return statistics.median(x[k] for x in runs)

    return {"vs_p99_ms": med("vs_p99_ms"), "vs_all_ms": med("vs_all_ms"),
            "ep_p99_ms": med("ep_p99_ms"), "ep_all_ms": med("ep_all_ms"),
            "istiod_rss_kb_idle": idle, "istiod_rss_kb_clients": with_clients,
            "kb_per_client": round((with_clients - idle) / clients, 1),
            "clients": clients, "services": SERVICES,
            "istiod_rss_kb_peak": peak, "istiod_rss_kb_after": after,
            "sync_ms": float(synced["ms"]), "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=CLIENTS)
    ap.add_argument("--build", default="build",
                    help="build directory holding weft and bench-tools/ (build)")
    a = ap.parse_args()
    res = case_xds(a.rounds, build=a.build, clients=a.clients, verbose=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
