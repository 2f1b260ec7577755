"""istiod (`weft --role=istiod`): config from a watched directory, pushed to
proxies in xDS mode; the monitoring port (/ready, /debug/config_status,
/debug/syncz, /metrics) and `weft proxy-status`.

The mesh in these tests: productpage and details (clients, each with an
app) and reviews v1/v2, every workload registered by its own proxy
(`--service NAME:9080`).  Routing for reviews comes from a DestinationRule
(subsets by version) and a VirtualService that the tests rewrite on disk.
"""
import datetime
import http.client
import math
import re
import threading
from collections import Counter

from conftest import (DEADLINE, curl_many, dedent, free_port, http_get,
                      outbound_cluster, parse_prometheus, prometheus_client_check, run_weft,
                      wait_endpoints, wait_until, workload, xds_versions)

MESH = dedent("""
    apiVersion: weft.io/v1alpha1
    kind: MeshConfig
    metadata:
      name: mesh
      namespace: istio-system
    spec:
      rootNamespace: istio-system
      filterChain: [router]
    """)

REVIEWS_DR = dedent("""
    apiVersion: networking.istio.io/v1beta1
    kind: DestinationRule
    metadata:
      name: reviews
      namespace: default
    spec:
      host: reviews
      subsets:
      - name: v1
        labels:
          version: v1
      - name: v2
        labels:
          version: v2
    """)


def reviews_vs(w1, w2, jason=None, typo=False):
    """The reviews VirtualService: weights w1/w2 to v1/v2; with jason, a
    first route sending `end-user: jason` to that subset; with typo, the
    field `weight` of the v2 destination misspelt `weigth`."""
    out = ["apiVersion: networking.istio.io/v1beta1",
           "kind: VirtualService",
           "metadata:",
           "  name: reviews",
           "  namespace: default",
           "spec:",
           "  hosts:",
           "  - reviews",
           "  http:"]
    if jason:
        out += ["  - name: jason",
                "    match:",
                "    - headers:",
                "        end-user:",
                "          exact: jason",
                "    route:",
                "    - destination:",
                "        host: reviews",
                "        subset: %s" % jason]
    out += ["  - name: split",
            "    route:",
            "    - destination:",
            "        host: reviews",
            "        subset: v1",
            "      weight: %d" % w1,
            "    - destination:",
            "        host: reviews",
            "        subset: v2",
            "      %s: %d" % ("weigth" if typo else "weight", w2)]
    return "\n".join(out) + "\n"


def five_sigma(n, p):
    return 5 * math.sqrt(n * p * (1 - p))


def split(client, n, headers=()):
    """Counter of x-backend over n requests for reviews (all must be 200)."""
    res = curl_many(client.out_url + "/", n, host="reviews:9080", headers=headers)
    bad = [r for r in res if r[0] != 200]
    assert not bad, "non-200 answers: %s\n%s" % (Counter(bad), client.describe())
    return Counter(name for _, name in res)


def syncz_by_id(d):
    return {e["id"]: e for e in d.syncz()}


def all_synced(d, proxies):
    """True when every proxy is in /debug/syncz with each type ACKed at
    the version sent and no NACK."""
    by_id = syncz_by_id(d)
    for p in proxies:
        e = by_id.get(p.node_id)
        if not e:
            return False
        for t in ("LDS", "CDS", "EDS"):
            if not e[t]["sent"] or e[t]["sent"] != e[t]["acked"] or e[t]["last_nack"]:
                return False
    return True


def reviews_mesh(istiod, weft_xds, backend, vs, **istiod_kw):
    """istiod with MESH + REVIEWS_DR + the VirtualService vs, and the four
    workloads; returns (istiod, {name: proxy}) once every proxy has every
    reviews endpoint and is synced."""
    d = istiod({"mesh.yaml": MESH, "reviews-dr.yaml": REVIEWS_DR, "reviews-vs.yaml": vs},
               **istiod_kw)
    ws = {
        "productpage": workload(weft_xds, backend, d, "productpage-v1", "productpage"),
        "details": workload(weft_xds, backend, d, "details-v1", "details"),
        "v1": workload(weft_xds, backend, d, "reviews-v1", "reviews", "v1"),
        "v2": workload(weft_xds, backend, d, "reviews-v2", "reviews", "v2"),
    }
    for p in ws.values():
        wait_endpoints(p, outbound_cluster("reviews", subset="v1"), {ws["v1"].inbound_addr})
        wait_endpoints(p, outbound_cluster("reviews", subset="v2"), {ws["v2"].inbound_addr})
    wait_until(lambda: all_synced(d, ws.values()), "every proxy synced in /debug/syncz")
    return d, ws


# --------------------------------------------------------------------------
# config changes on disk

def test_config_change_reaches_every_proxy(istiod, weft_xds, backend):
    d, ws = reviews_mesh(istiod, weft_xds, backend, reviews_vs(100, 0))
    clients = (ws["productpage"], ws["details"])
    for c in clients:
        assert split(c, 20) == Counter({"reviews-v1": 20})
    before = {n: xds_versions(p.config_dump()) for n, p in ws.items()}
    status_before = d.config_status()
    assert status_before["ok"] is True and status_before["errors"] == [], status_before

    # move the weights and add a header route, in one edit
    d.write(reviews_vs(20, 80, jason="v1"), "reviews-vs.yaml")

    # every proxy converges on a new listener version (their outbound
    # route tables all hold reviews) ...
    def moved():
        now = {n: xds_versions(p.config_dump()) for n, p in ws.items()}
        return all(now[n]["LDS"] != before[n]["LDS"] for n in ws) and now
    after = wait_until(moved, "every proxy to apply a new LDS version")
    for n in ws:
        assert after[n]["bundle"] != before[n]["bundle"], (n, before[n], after[n])
        # clusters and endpoints did not change: their versions stay
        assert after[n]["CDS"] == before[n]["CDS"], (n, before[n], after[n])
        assert after[n]["EDS"] == before[n]["EDS"], (n, before[n], after[n])
    status = d.config_status()
    assert status["ok"] is True and status["version"] != status_before["version"], status

    # ... and routes by it: jason to v1, everyone else 20/80
    n = 1000
    for c in clients:
        assert split(c, 10, headers=["end-user: jason"]) == Counter({"reviews-v1": 10})
    got = split(ws["productpage"], n)
    assert got["reviews-v1"] + got["reviews-v2"] == n, got
    tol = five_sigma(n, 0.8)
    assert abs(got["reviews-v2"] - 0.8 * n) <= tol, (
        "v2 served %d of %d after the edit, expected %d +- %.0f" % (got["reviews-v2"], n,
                                                                   0.8 * n, tol))
    wait_until(lambda: all_synced(d, ws.values()), "every proxy to ACK the new version")


def test_config_file_removed_and_added(istiod, weft_xds, backend):
    d, ws = reviews_mesh(istiod, weft_xds, backend, reviews_vs(0, 100))
    pp = ws["productpage"]
    assert split(pp, 10) == Counter({"reviews-v2": 10})
    # without a VirtualService the service routes to itself (both versions)
    d.remove("reviews-vs.yaml")
    wait_until(lambda: len(split(pp, 10)) == 2, "reviews to route to both versions")
    # a new file is picked up as well
    d.write(reviews_vs(100, 0), "new-vs.yaml")
    wait_until(lambda: split(pp, 10) == Counter({"reviews-v1": 10}), "routing to v1 only")


def test_bad_file_refused_with_location(istiod, weft_xds, backend):
    d, ws = reviews_mesh(istiod, weft_xds, backend, reviews_vs(100, 0))
    pp = ws["productpage"]
    assert split(pp, 10) == Counter({"reviews-v1": 10})
    good = d.config_status()
    before = {n: xds_versions(p.config_dump()) for n, p in ws.items()}

    # the whole edit is refused: the bad field and the weights with it
    bad = reviews_vs(0, 100, typo=True)
    lines = bad.splitlines()
    line = next(i for i, l in enumerate(lines) if "weigth" in l) + 1
    col = lines[line - 1].index("weigth") + 1
    d.write_in_place(bad, "reviews-vs.yaml")
    where = re.compile(r"(^|/)reviews-vs\.yaml:%d:%d: " % (line, col))

    def refused():
        s = d.config_status()
        return s["ok"] is False and any(where.search(e) for e in s["errors"]) and s
    status = wait_until(refused, "/debug/config_status to show reviews-vs.yaml:%d:%d"
                        % (line, col))
    err = next(e for e in status["errors"] if where.search(e))
    assert "weigth" in err and "VirtualService/default/reviews" in err, err
    assert status["version"] == good["version"], (good, status)

    # the last good config keeps being served
    assert split(pp, 50) == Counter({"reviews-v1": 50})
    assert split(ws["details"], 20) == Counter({"reviews-v1": 20})
    for n, p in ws.items():
        assert xds_versions(p.config_dump()) == before[n], n

    # fixing the file clears the error and applies the edit
    d.write_in_place(reviews_vs(0, 100), "reviews-vs.yaml")
    wait_until(lambda: d.config_status()["ok"] is True, "the error to clear")
    assert d.config_status()["errors"] == []
    wait_until(lambda: split(pp, 10) == Counter({"reviews-v2": 10}), "routing to v2 only")
    # the error was logged once, with its location
    logged = [l for l in d.stderr().splitlines() if "reviews-vs.yaml:%d:%d:" % (line, col) in l]
    assert len(logged) == 1, "the refused file was logged %d times:\n%s" % (
        len(logged), "\n".join(logged))


# --------------------------------------------------------------------------
# istiod killed while traffic flows

class TrafficLoop(threading.Thread):
    """Sends GETs for reviews through one proxy until stopped, on a
    keep-alive connection (a new one when the server closes it), and
    counts answers by status / backend and failures with their reason."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop_flag = threading.Event()
        self.ok = Counter()
        self.failures = []
        self.lock = threading.Lock()

    def total_ok(self):
        with self.lock:
            return sum(self.ok.values())

    def run(self):
        conn = None
        while not self.stop_flag.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/loop", headers={"Host": "reviews:9080"})
                r = conn.getresponse()
                body = r.read()
                if r.status == 200:
                    with self.lock:
                        self.ok[r.getheader("x-backend")] += 1
                else:
                    self.failures.append("HTTP %d %r" % (r.status, body[:100]))
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                # A keep-alive connection closed by the proxy between two
                # requests is not a failed request: retry once on a new
                # connection; a second failure counts.
                if conn is not None and isinstance(e, (http.client.RemoteDisconnected,
                                                       ConnectionResetError, BrokenPipeError)):
                    conn.close()
                    conn = None
                    continue
                self.failures.append("%s: %s" % (type(e).__name__, e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop_flag.set()
        self.join(DEADLINE)
        assert not self.is_alive(), "the traffic loop did not stop"


def test_istiod_killed_and_restarted_zero_failures(istiod, weft_xds, backend):
    d, ws = reviews_mesh(istiod, weft_xds, backend, reviews_vs(50, 50))
    pp = ws["productpage"]
    before = {n: xds_versions(p.config_dump()) for n, p in ws.items()}
    loop = TrafficLoop(pp.out_port)
    loop.start()
    try:
        wait_until(lambda: loop.total_ok() >= 50, "50 requests before the kill")
        d.kill()
        # istiod is gone: proxies keep serving their last config
        n = loop.total_ok()
        wait_until(lambda: loop.total_ok() >= n + 200, "200 requests while istiod is down")
        for name, p in ws.items():
            assert p.running(), p.describe()
            assert p.admin("/ready")[0] == 200, name
        d.restart()
        # every proxy reconnects, resubscribes and is in sync again
        wait_until(lambda: all_synced(d, ws.values()), "every proxy back in /debug/syncz")
        n = loop.total_ok()
        wait_until(lambda: loop.total_ok() >= n + 200, "200 requests after the restart")
    finally:
        loop.finish()
    assert not loop.failures, "%d failed requests (of %d), first: %s" % (
        len(loop.failures), loop.total_ok() + len(loop.failures), loop.failures[:5])
    assert set(loop.ok) == {"reviews-v1", "reviews-v2"}, loop.ok
    # same config, same versions: the proxies did not have to change
    for name, p in ws.items():
        assert xds_versions(p.config_dump()) == before[name], (name, before[name],
                                                               xds_versions(p.config_dump()))


# --------------------------------------------------------------------------
# monitoring: syncz, proxy-status, metrics

def test_syncz_lists_every_proxy(istiod, weft_xds, backend):
    d, ws = reviews_mesh(istiod, weft_xds, backend, reviews_vs(100, 0))
    by_id = syncz_by_id(d)
    assert set(by_id) == {p.node_id for p in ws.values()}, sorted(by_id)
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, p in ws.items():
        e = by_id[p.node_id]
        assert e["namespace"] == "default", e
        assert e["labels"].get("app") == p.name.split("-")[0], e
        assert e["labels"].get("version") == p.name.split("-")[1], e
        since = datetime.datetime.strptime(e["connected_since"], "%Y-%m-%dT%H:%M:%SZ")
        since = since.replace(tzinfo=datetime.timezone.utc)
        assert abs((now - since).total_seconds()) < 300, e["connected_since"]
        for t in ("LDS", "CDS", "EDS"):
            assert re.fullmatch(r"[0-9a-f]{16}", e[t]["sent"] or ""), (t, e[t])
            assert e[t]["acked"] == e[t]["sent"] and e[t]["last_nack"] is None, (t, e[t])
    # a proxy that stops is no longer listed
    ws["details"].stop()
    wait_until(lambda: ws["details"].node_id not in syncz_by_id(d), "details to leave syncz")
    assert len(d.syncz()) == 3


def test_proxy_status_table(istiod, weft_xds, backend):
    d, ws = reviews_mesh(istiod, weft_xds, backend, reviews_vs(100, 0))
    p = run_weft(["proxy-status", "--istiod", d.mon_addr])
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    head = lines[0].split()
    for col in ("NAME", "CDS", "LDS", "EDS"):
        assert col in head, lines[0]
    rows = lines[1:]
    assert len(rows) == len(ws), p.stdout
    for name, w in ws.items():
        row = [r for r in rows if w.name in r]
        assert len(row) == 1, (w.name, p.stdout)
        cells = row[0].split()
        for col in ("CDS", "LDS", "EDS"):
            assert cells[head.index(col)] == "SYNCED", (col, row[0], p.stdout)

    # a NACK shows as such in the LDS column of that proxy's row
    d.write(dedent("""
        apiVersion: weft.io/v1alpha1
        kind: FilterPlugin
        metadata:
          name: broken
          namespace: default
        spec:
          selector:
            matchLabels:
              app: details
          module: no-such-module
        """), "plugin.yaml")
    wait_until(lambda: syncz_by_id(d)[ws["details"].node_id]["LDS"]["last_nack"],
               "details to NACK")
    p = run_weft(["proxy-status", "--istiod", d.mon_addr])
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    row = next(r for r in p.stdout.splitlines() if ws["details"].name in r)
    assert row.split()[head.index("LDS")] != "SYNCED", row
    assert "NACK" in row, row

    # nothing listening: a one-line error naming the address, non-zero exit
    addr = "127.0.0.1:%d" % free_port()
    p = run_weft(["proxy-status", "--istiod", addr])
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert addr in p.stderr, p.stderr


def metric(fams, name, **labels):
    """Sum of the samples called name (a family, or a histogram's
    NAME_count / NAME_sum) whose labels include labels."""
    base = re.sub(r"_(count|sum|bucket)$", "", name)
    fam = fams.get(name) or (fams.get(base) if fams.get(base, {}).get("type") == "histogram"
                             else None)
    assert fam is not None, "no %s in /metrics (have %s)" % (name, sorted(fams))
    return sum(v for n, l, v in fam["samples"]
               if n == name and all(l.get(k, "").lower() == v2 for k, v2 in labels.items()))


def test_metrics(istiod, weft_xds, backend):
    d, ws = reviews_mesh(istiod, weft_xds, backend, reviews_vs(100, 0))
    status, body, headers = http_get(d.mon_port, "/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain"), headers
    text = body.decode()
    fams = parse_prometheus(text)
    checked = prometheus_client_check(text)
    if checked is not None:
        for name in ("pilot_xds", "pilot_xds_pushes", "pilot_total_xds_rejects",
                     "pilot_proxy_convergence_time"):
            assert name in checked, (name, sorted(checked))

    assert fams["pilot_xds"]["type"] == "gauge", fams["pilot_xds"]
    assert metric(fams, "pilot_xds") == 4
    assert fams["pilot_xds_pushes"]["type"] == "counter"
    for t in ("lds", "cds", "eds"):
        assert metric(fams, "pilot_xds_pushes", type=t) >= 4, (t, fams["pilot_xds_pushes"])
    assert fams["pilot_total_xds_rejects"]["type"] == "counter"
    assert metric(fams, "pilot_total_xds_rejects") == 0
    conv = fams["pilot_proxy_convergence_time"]
    assert conv["type"] == "histogram", conv
    count = metric(fams, "pilot_proxy_convergence_time_count")
    assert count >= 4, conv

    # a config change pushes LDS to every proxy and is measured
    lds = metric(fams, "pilot_xds_pushes", type="lds")
    d.write(reviews_vs(0, 100), "reviews-vs.yaml")
    wait_until(lambda: split(ws["productpage"], 5) == Counter({"reviews-v2": 5}),
               "the edit to apply")
    wait_until(lambda: all_synced(d, ws.values()), "every proxy to ACK")
    fams = parse_prometheus(d.metrics())
    assert metric(fams, "pilot_xds_pushes", type="lds") >= lds + 4
    assert metric(fams, "pilot_proxy_convergence_time_count") > count

    # a proxy leaving is counted out
    ws["details"].stop()
    wait_until(lambda: metric(parse_prometheus(d.metrics()), "pilot_xds") == 3,
               "pilot_xds to drop to 3")


def test_monitoring_endpoints_without_proxies(istiod):
    d = istiod({"mesh.yaml": MESH})
    assert d.get("/ready")[0] == 200
    assert d.syncz() == []
    s = d.config_status()
    assert s["ok"] is True and s["errors"] == [] and s["version"], s
    text = d.metrics()
    fams = parse_prometheus(text)
    assert metric(fams, "pilot_xds") == 0
    checked = prometheus_client_check(text)
    assert checked is None or "pilot_xds" in checked, checked
    assert d.get("/no-such-page")[0] == 404
    # A query string does not change the page; monitoring only reads.
    assert d.get("/ready?verbose=1")[0] == 200
    status, body, _ = http_get(d.mon_port, "/ready", method="POST")
    assert status == 405 and b"only GET" in body, (status, body)
    assert http_get(d.mon_port, "/metrics", method="HEAD")[0] == 200
