"""The admin listener (/ready, /config_dump, /stats, /quitquitquit) and
graceful shutdown: SIGTERM stops accepting, finishes in-flight requests and
exits 0."""
import http.client
import json
import signal
import socket
import threading

import pytest

from conftest import (curl, free_port, service_entry, virtual_service,
                      wait_until, workload_entry)

FQDN = "reviews.default.svc.cluster.local"


@pytest.fixture
def proxy(weft, reviews, backend):
    app = backend("productpage")  # gives the proxy an inbound listener
    return weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - headers:
              end-user: {exact: jason}
          route:
          - destination: {host: reviews, subset: v3}
        - route:
          - destination: {host: reviews, subset: v1}
            weight: 90
          - destination: {host: reviews, subset: v2}
            weight: 10
        """), labels={"app": "productpage", "version": "v1"}, app_port=app.port)


def test_ready(proxy):
    status, body = proxy.admin("/ready")
    assert status == 200, body


def test_unknown_admin_path_404(proxy):
    assert proxy.admin("/no/such/page")[0] == 404


def test_config_dump_shape(proxy, reviews):
    d = proxy.config_dump()
    for key in ("version_info", "listeners", "clusters", "endpoints", "filter_chain"):
        assert key in d, "config_dump lacks %s: %s" % (key, list(d))

    listeners = {l["name"]: l for l in d["listeners"]}
    assert {"virtualOutbound", "virtualInbound"} <= set(listeners), list(listeners)
    out = listeners["virtualOutbound"]
    assert out["address"]["socket_address"]["port_value"] == proxy.out_port
    assert out["traffic_direction"] == "OUTBOUND"
    inn = listeners["virtualInbound"]
    assert inn["address"]["socket_address"]["port_value"] == proxy.in_port
    assert inn["traffic_direction"] == "INBOUND"

    # the outbound route table knows every alias of reviews:9080
    hcm = out["filter_chains"][0]["filters"][0]["typed_config"]
    vhosts = hcm["route_config"]["virtual_hosts"]
    domains = {dom for vh in vhosts for dom in vh["domains"]}
    for alias in ("reviews:9080", "reviews.default:9080", "reviews.default.svc:9080",
                  FQDN + ":9080", FQDN):
        assert alias in domains, "%s not among the domains %s" % (alias, sorted(domains))
    assert [f["name"] for f in hcm["http_filters"]][-1] == "router"

    clusters = {c["name"]: c for c in d["clusters"]}
    for subset in ("", "v1", "v2", "v3"):
        name = "outbound|9080|%s|%s" % (subset, FQDN)
        assert name in clusters, "%s not among the clusters %s" % (name, sorted(clusters))

    eps = {e["cluster_name"]: e for e in d["endpoints"]}
    for v, b in reviews.backends.items():
        cla = eps["outbound|9080|%s|%s" % (v, FQDN)]
        addrs = [(lb["endpoint"]["address"]["socket_address"]["address"],
                  lb["endpoint"]["address"]["socket_address"]["port_value"])
                 for loc in cla["endpoints"] for lb in loc["lb_endpoints"]]
        assert addrs == [("127.0.0.1", b.port)], (v, addrs)
    all_eps = eps["outbound|9080||" + FQDN]
    n = sum(len(loc["lb_endpoints"]) for loc in all_eps["endpoints"])
    assert n == 3, all_eps

    chain = d["filter_chain"]
    assert isinstance(chain, list) and chain, chain
    for f in chain:
        assert {"name", "module", "path"} <= set(f), f
    assert chain[-1]["name"] == "router" and chain[-1]["path"].endswith("router.so"), chain


def test_config_dump_is_json_with_content_type(proxy):
    c = http.client.HTTPConnection("127.0.0.1", proxy.admin_port, timeout=5)
    c.request("GET", "/config_dump")
    r = c.getresponse()
    body = r.read()
    c.close()
    assert r.status == 200
    assert "json" in (r.getheader("Content-Type") or ""), r.getheaders()
    json.loads(body)


def stat_delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


def test_stats_counters_move(proxy):
    before = proxy.stats()
    for name in ("downstream_rq_total", "downstream_rq_2xx", "downstream_rq_4xx",
                 "downstream_rq_5xx", "downstream_cx_total", "downstream_cx_active",
                 "upstream_rq_total"):
        assert name in before, "/stats lacks %s" % name
    for _ in range(3):
        assert curl(proxy.out_url + "/", host="reviews", headers=["end-user: jason"]).status == 200
    assert curl(proxy.out_url + "/", host="nosuch").status == 404
    after = proxy.stats()
    assert stat_delta(before, after, "downstream_rq_total") == 4, (before, after)
    assert stat_delta(before, after, "downstream_rq_2xx") == 3
    assert stat_delta(before, after, "downstream_rq_4xx") == 1
    assert stat_delta(before, after, "downstream_rq_5xx") == 0
    assert stat_delta(before, after, "downstream_cx_total") == 4
    assert stat_delta(before, after, "upstream_rq_total") == 3
    v3 = "cluster.outbound|9080|v3|%s.upstream_rq_total" % FQDN
    assert stat_delta(before, after, v3) == 3, sorted(k for k in after if k.startswith("cluster."))


def test_stats_5xx_and_active_connections(weft):
    w = weft(service_entry("dead") + workload_entry("dead-v1", free_port(), "dead", "v1"))
    before = w.stats()
    assert curl(w.out_url + "/", host="dead").status == 503
    s = socket.create_connection(("127.0.0.1", w.out_port))
    try:
        wait_until(lambda: w.stats()["downstream_cx_active"] >= before["downstream_cx_active"] + 1,
                   "downstream_cx_active to count an open connection")
    finally:
        s.close()
    wait_until(lambda: w.stats()["downstream_cx_active"] == before["downstream_cx_active"],
               "downstream_cx_active to drop when the connection closes")
    assert stat_delta(before, w.stats(), "downstream_rq_5xx") == 1


def test_stats_count_every_worker(proxy):
    # Many connections land on both workers; the scrape merges them.
    before = proxy.stats()
    n = 40
    errors = []

    def one():
        r = curl(proxy.out_url + "/", host="reviews")
        if r.status != 200:
            errors.append(r)

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors
    assert stat_delta(before, proxy.stats(), "downstream_rq_total") == n


def test_quitquitquit(proxy):
    status, _ = proxy.admin("/quitquitquit", method="POST")
    assert status == 200
    assert proxy.wait_exit() == 0, proxy.describe()


def test_quitquitquit_needs_post(proxy):
    status, _ = proxy.admin("/quitquitquit")
    assert status != 200 and status >= 400, status
    assert proxy.running()
    assert proxy.admin("/ready")[0] == 200


def test_sigterm_drains_in_flight_request(proxy, reviews):
    v3 = reviews.backends["v3"]
    result = {}

    def slow():
        c = http.client.HTTPConnection("127.0.0.1", proxy.out_port, timeout=30)
        try:
            c.request("GET", "/slow?ms=3000", headers={"Host": "reviews", "end-user": "jason"})
            r = c.getresponse()
            result["status"], result["body"] = r.status, r.read()
        except Exception as e:  # reported by the assertion below
            result["error"] = repr(e)
        finally:
            c.close()

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: v3.inflight() == 1, "the slow request to reach the backend")
    proxy.proc.send_signal(signal.SIGTERM)
    # stop accepting: new connections are refused while the slow one runs
    wait_until(lambda: not _accepts(proxy.out_port), "the outbound listener to close", timeout=2.5)
    assert proxy.running(), "weft exited with a request in flight"
    t.join(30)
    assert result.get("status") == 200, result
    assert json.loads(result["body"])["path"] == "/slow?ms=3000"
    assert proxy.wait_exit() == 0, proxy.describe()


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_sigterm_idle_exits_promptly(proxy):
    # an idle keep-alive connection must not hold the exit up
    c = http.client.HTTPConnection("127.0.0.1", proxy.out_port, timeout=10)
    c.request("GET", "/", headers={"Host": "reviews"})
    assert c.getresponse().read()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.wait_exit(timeout=10) == 0, proxy.describe()
    c.close()

