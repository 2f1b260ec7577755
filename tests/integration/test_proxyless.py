"""Proxyless gRPC: real gRPC clients (Debian's python3-grpcio, C-core 1.51)
configured by weft istiod over xDS, with no proxy anywhere.

The backends are three grpcio servers, v1, v2 and v3 (grpc_app.py server),
each answering /weft.test.Echo/Who with its name.  They register nowhere:
the config dir describes them as the service reviews.default.svc.cluster.local
(a ServiceEntry with a gRPC port 9090 selecting WorkloadEntries, one per
backend, labelled version=vN), with a DestinationRule (subsets v1..v3) and a
VirtualService that the tests write and rewrite.

The client (grpc_app.py client) gets a bootstrap file pointing at istiod
(node metadata GENERATOR=grpc, so istiod translates for role "grpc": an
api_listener per service port, EDS clusters over ADS) and dials
xds:///reviews.default.svc.cluster.local:9090, or an alias of it.  gRPC's
xDS client keeps process-wide state, so every client is its own process;
it prints JSON counts of the backends that answered.  For updates a client
runs through "phases" (it calls until its last calls all land on a given
set of backends), so the change reaches a live client through a push, and
the tests wait on it with a deadline, never a sleep.
"""
import json
import math
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import (CHILD_ENV, DEADLINE, HERE, dedent, destination_rule, virtual_service,
                      workload_entry)

GRPC_APP = HERE / "grpc_app.py"
PYTHON = "/usr/bin/python3"  # Debian's python3-grpcio lives there
HOST = "reviews.default.svc.cluster.local"
PORT = 9090
TARGET = "xds:///%s:%d" % (HOST, PORT)

SERVICE_ENTRY = dedent("""
    apiVersion: networking.istio.io/v1beta1
    kind: ServiceEntry
    metadata:
      name: reviews
      namespace: default
    spec:
      hosts:
      - %s
      location: MESH_INTERNAL
      ports:
      - number: %d
        name: grpc
        protocol: GRPC
      resolution: STATIC
      workloadSelector:
        labels:
          app: reviews
    """ % (HOST, PORT))


def route_to(*dests, header=None):
    """One http route of a VirtualService (YAML text): destinations as
    (subset, weight) pairs or bare subsets (None: no subset); with header
    (name, value), only requests carrying that metadata match."""
    out = []
    if header:
        out += ["- match:", "  - headers:", "      %s:" % header[0],
                "        exact: \"%s\"" % header[1], "  route:"]
    else:
        out += ["- route:"]
    for d in dests:
        subset, weight = d if isinstance(d, tuple) else (d, None)
        out += ["  - destination:", "      host: reviews"]
        if subset:
            out.append("      subset: %s" % subset)
        if weight is not None:
            out.append("    weight: %d" % weight)
    return "\n".join(out) + "\n"


def reviews_vs(*routes):
    return virtual_service("reviews", "".join(routes))


# --------------------------------------------------------------------------
# processes

def read_line(proc, deadline, what):
    """One stdout line of proc (bytes), waiting until the monotonic deadline."""
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for %s" % what)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            c = os.read(fd, 1)
            if not c:
                raise AssertionError("%s: the process exited (code %s) without a line"
                                     % (what, proc.poll()))
            line += c
    return line


class GrpcServer:
    """A grpc_app.py server on a free loopback port: .name, .port."""

    def __init__(self, name, logdir):
        self.name = name
        self.errlog = open(os.path.join(logdir, "grpc-%s.stderr" % name), "wb")
        self.proc = subprocess.Popen([PYTHON, str(GRPC_APP), "server", "--name", name],
                                     stdout=subprocess.PIPE, stderr=self.errlog, env=CHILD_ENV,
                                     start_new_session=True)
        try:
            line = read_line(self.proc, time.monotonic() + DEADLINE,
                             "gRPC server %s to print its port" % name)
        except AssertionError:
            self.stop()
            raise
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.errlog.close()


class Client:
    """A grpc_app.py client process with its own bootstrap file (and so its
    own node id) pointing at istiod."""

    seq = 0

    def __init__(self, istiod, workdir, target=TARGET, metadata=()):
        Client.seq += 1
        self.name = "grpc-client-%d" % Client.seq
        self.workdir = workdir
        self.istiod = istiod
        self.node_id = "sidecar~127.0.0.1~%s.default~default.svc.cluster.local" % self.name
        self.bootstrap = os.path.join(workdir, "%s.bootstrap.json" % self.name)
        with open(self.bootstrap, "w") as f:
            json.dump({
                "xds_servers": [{"server_uri": istiod.xds_addr,
                                 "channel_creds": [{"type": "insecure"}],
                                 "server_features": ["xds_v3"]}],
                "node": {"id": self.node_id,
                         "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}},
            }, f)
        self.args = [PYTHON, str(GRPC_APP), "client", "--target", target]
        for kv in metadata:
            self.args += ["--metadata", kv]
        self.env = dict(CHILD_ENV, GRPC_XDS_BOOTSTRAP=self.bootstrap)
        self.stderr_path = os.path.join(workdir, "%s.stderr" % self.name)
        self.proc = None

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def describe(self):
        return "%s: %s\n  stderr:\n%s\n%s" % (self.name, " ".join(self.args), self.stderr(),
                                              self.istiod.describe())

    def count(self, n):
        """Makes n calls; returns {"calls", "counts", "errors", "first_error"}."""
        with open(self.stderr_path, "ab") as err:
            p = subprocess.run(self.args + ["--count", str(n)], stdout=subprocess.PIPE,
                               stderr=err, env=self.env, timeout=DEADLINE + n * 0.5)
        lines = p.stdout.decode().splitlines()
        assert p.returncode == 0 and lines, "client exited %d\n%s" % (p.returncode,
                                                                      self.describe())
        return json.loads(lines[-1])

    def start_phases(self, *phases, window=20):
        """Starts the client in phase mode (each phase a set of backend
        names, see grpc_app.py); read results with next_phase().  After the
        last phase it stays connected (--hold) until stop()."""
        args = self.args + ["--window", str(window), "--deadline", str(DEADLINE), "--hold"]
        for ph in phases:
            args += ["--phase", ",".join(sorted(ph))]
        self.args = args
        self.err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err,
                                     env=self.env, start_new_session=True)
        return self

    def next_phase(self, what):
        """The JSON report of the next phase; fails on its timeout."""
        try:
            line = read_line(self.proc, time.monotonic() + DEADLINE + 5, what)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.describe()))
        out = json.loads(line)
        assert not out.get("timeout"), "%s: not reached within %.0fs: %s\n%s" % (
            what, DEADLINE, out, self.describe())
        return out

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.err.close()


@pytest.fixture
def grpc_mesh(tmp_path, istiod):
    """Three gRPC backends v1..v3 and a started istiod whose config dir
    holds the reviews ServiceEntry (se.yaml), one WorkloadEntry per backend
    (we-v1.yaml...) and the DestinationRule (dr.yaml).  Returns an object
    with .istiod, .servers {name: GrpcServer}, .server(name) to start one
    more, .we(name, version) the YAML of a WorkloadEntry for a server, and
    .client(target=TARGET, metadata=()) to make a Client (stopped at
    teardown)."""
    logdir = str(tmp_path)
    servers, clients = {}, []

    class Mesh:
        pass

    m = Mesh()
    m.servers = servers

    def server(name):
        servers[name] = GrpcServer(name, logdir)
        return servers[name]

    def we(name, version):
        return workload_entry("reviews-" + name, servers[name].port, app="reviews",
                              version=version, port_names=("grpc",))

    def client(target=TARGET, metadata=()):
        c = Client(m.istiod, logdir, target, metadata)
        clients.append(c)
        return c

    m.server, m.we, m.client = server, we, client
    try:
        for v in ("v1", "v2", "v3"):
            server(v)
        files = {"se.yaml": SERVICE_ENTRY, "dr.yaml": destination_rule("reviews")}
        for v in ("v1", "v2", "v3"):
            files["we-%s.yaml" % v] = we(v, v)
        m.istiod = istiod(files=files)
        yield m
    finally:
        for c in clients:
            c.stop()
        for s in servers.values():
            s.stop()


def apply(istiod, change):
    """Makes a config change (change() writes or removes files) and waits
    until istiod serves it: /debug/config_status ok with a new version.
    Fresh clients started after this get the new config."""
    before = istiod.config_status().get("version")
    change()
    end = time.monotonic() + DEADLINE
    while True:
        st = istiod.config_status()
        if st.get("ok") and st.get("version") != before:
            return st
        assert time.monotonic() < end, (
            "istiod did not take the change within %.0fs (version still %r): %s\n%s"
            % (DEADLINE, before, st, istiod.describe()))
        time.sleep(0.02)


def write_vs(istiod, *routes):
    apply(istiod, lambda: istiod.write(reviews_vs(*routes), "vs.yaml"))


def binomial_ok(k, n, p, sigmas=5):
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def no_errors(r, c):
    assert not r["errors"], "calls failed: %s (first: %s)\n%s" % (r["errors"], r["first_error"],
                                                                  c.describe())


# --------------------------------------------------------------------------
# tests

def test_weighted_split_and_header_route(grpc_mesh):
    """An 80/20 split between subsets v1 and v2 over 1000 calls, within a
    binomial 5 sigma; calls carrying x-canary: yes go to v3, dialled by the
    FQDN, by aliases, and without a port (the service's lowest port)."""
    m = grpc_mesh
    write_vs(m.istiod, route_to("v3", header=("x-canary", "yes")),
             route_to(("v1", 80), ("v2", 20)))

    c = m.client()
    r = c.count(1000)
    no_errors(r, c)
    counts = r["counts"]
    assert set(counts) <= {"v1", "v2"} and sum(counts.values()) == 1000, (counts, c.describe())
    assert binomial_ok(counts.get("v1", 0), 1000, 0.8), \
        "80/20 split gave %s (v1 expected 800 +- 63)" % counts

    for target in (TARGET, "xds:///reviews:%d" % PORT, "xds:///reviews"):
        c = m.client(target=target, metadata=("x-canary=yes",))
        r = c.count(50)
        no_errors(r, c)
        assert r["counts"] == {"v3": 50}, (target, r, c.describe())

    # An alias without the header: the split, not the canary.
    c = m.client(target="xds:///reviews.default:%d" % PORT)
    r = c.count(100)
    no_errors(r, c)
    assert set(r["counts"]) == {"v1", "v2"}, (r, c.describe())


def test_destination_rule_subsets(grpc_mesh):
    """A route to subset v2 reaches only v2; without a VirtualService the
    default route's cluster (no subset) balances over all three backends
    round robin."""
    m = grpc_mesh
    c = m.client()
    r = c.count(90)
    no_errors(r, c)
    # Round robin; the first few calls may all meet the first backend that
    # connected, hence the slack.
    assert set(r["counts"]) == {"v1", "v2", "v3"}, (r, c.describe())
    assert min(r["counts"].values()) >= 15, ("round robin over three", r)

    write_vs(m.istiod, route_to("v2"))
    c = m.client()
    r = c.count(60)
    no_errors(r, c)
    assert r["counts"] == {"v2": 60}, (r, c.describe())


def test_virtual_service_rewrite_moves_live_traffic(grpc_mesh):
    """A running client follows VirtualService rewrites pushed by istiod:
    v1 -> v3 -> a split v1/v2, with no failed call on the way, and istiod
    saw no NACK from it."""
    m = grpc_mesh
    write_vs(m.istiod, route_to("v1"))
    c = m.client().start_phases({"v1"}, {"v3"}, {"v1", "v2"}, window=40)
    c.next_phase("the client to reach v1 only")

    m.istiod.write(reviews_vs(route_to("v3")), "vs.yaml")
    c.next_phase("the client to move to v3 after the VirtualService rewrite")

    m.istiod.write(reviews_vs(route_to(("v1", 50), ("v2", 50))), "vs.yaml")
    r = c.next_phase("the client to split over v1 and v2 after the second rewrite")
    no_errors(r, c)
    check_no_nack(m.istiod, c)


def test_workload_entries_change_endpoints(grpc_mesh):
    """Endpoints follow the registry: a WorkloadEntry added to subset v1
    (backend v1b) gets traffic, a removed one (v1) stops getting it, on a
    running client, with no failed call."""
    m = grpc_mesh
    m.server("v1b")
    write_vs(m.istiod, route_to("v1"))
    c = m.client().start_phases({"v1"}, {"v1", "v1b"}, {"v1b"}, window=30)
    c.next_phase("the client to reach v1 only")

    m.istiod.write(m.we("v1b", "v1"), "we-v1b.yaml")
    c.next_phase("the client to balance over v1 and the added v1b")

    m.istiod.remove("we-v1.yaml")
    r = c.next_phase("the client to stop calling v1 once its WorkloadEntry is removed")
    no_errors(r, c)
    check_no_nack(m.istiod, c)


def test_fault_abort(grpc_mesh):
    """A VirtualService fault (abort with a gRPC status) is applied by the
    client itself (gRPC's fault filter), only on the route that has it."""
    m = grpc_mesh
    fault = ("  fault:\n    abort:\n      grpcStatus: UNAVAILABLE\n"
             "      percentage:\n        value: 100\n  route:")
    write_vs(m.istiod, route_to("v3", header=("x-fault", "yes")).replace("  route:", fault),
             route_to("v1"))
    c = m.client(metadata=("x-fault=yes",))
    r = c.count(20)
    assert r["errors"] == {"UNAVAILABLE": 20} and not r["counts"], (r, c.describe())
    assert "Fault injected" in (r["first_error"] or ""), r
    c = m.client()
    r = c.count(20)
    no_errors(r, c)
    assert r["counts"] == {"v1": 20}, (r, c.describe())


# --------------------------------------------------------------------------

def check_no_nack(istiod, client):
    """istiod's /debug/syncz lists the (still connected) client, no type was
    NACKed (gRPC accepted every resource it was sent), and the client has
    ACKed what it was last sent for LDS, CDS and EDS."""
    last = [None]

    def converged():
        entries = [e for e in istiod.syncz() if client.node_id in json.dumps(e)]
        last[0] = entries
        nacks = []

        def walk(v):
            if isinstance(v, dict):
                for k, x in v.items():
                    if (k == "last_nack" and x) or (k == "nacks" and x):
                        nacks.append(v)
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
        walk(entries)
        assert not nacks, "gRPC NACKed: %s" % nacks
        if len(entries) != 1:
            return False
        types = [entries[0].get(t) for t in ("LDS", "CDS", "EDS")]
        return all(isinstance(t, dict) and t.get("sent") and t.get("sent") == t.get("acked")
                   for t in types)

    end = time.monotonic() + DEADLINE
    while not converged():
        assert time.monotonic() < end, (
            "client %s not (or not converged) in /debug/syncz: %s\n%s"
            % (client.node_id, json.dumps(last[0]), client.describe()))
        time.sleep(0.05)
