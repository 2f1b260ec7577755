"""Proxies in xDS mode (`weft --role=proxy --xds ADDR`) under one istiod.

Every workload here is a real backend (backend.py) with its own proxy that
registers it (`--service NAME:PORT`) and forwards its inbound listener to
it (`--app-port`).  Traffic goes app -> client proxy (outbound) -> server
proxy (inbound) -> app, on loopback, with istiod's registry as the only
source of endpoints: no ServiceEntry or WorkloadEntry is written.
"""
import json
import time
from collections import Counter

from conftest import (cluster_endpoints, curl, curl_many, dedent, outbound_cluster,
                      parse_prometheus, wait_endpoints, wait_until, workload, xds_versions)

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


def served_by(client, host, n=1, headers=()):
    """Counter of x-backend over n requests from client's outbound
    listener; every answer must be 200."""
    res = curl_many(client.out_url + "/", n, host=host, headers=headers)
    bad = [r for r in res if r[0] != 200]
    assert not bad, "non-200 answers for %s: %s\n%s" % (host, Counter(bad), client.describe())
    return Counter(name for _, name in res)


def rejects(istiod):
    """pilot_total_xds_rejects summed over its series."""
    fams = parse_prometheus(istiod.metrics())
    assert "pilot_total_xds_rejects" in fams, "no pilot_total_xds_rejects in /metrics"
    return sum(v for _, _, v in fams["pilot_total_xds_rejects"]["samples"])


def syncz_entry(istiod, proxy):
    for e in istiod.syncz():
        if e.get("id") == proxy.node_id:
            return e
    return None


# --------------------------------------------------------------------------
# traffic

def test_traffic_between_three_workloads(istiod, weft_xds, backend):
    d = istiod({"mesh.yaml": MESH})
    pp = workload(weft_xds, backend, d, "productpage-v1", "productpage")
    rv = workload(weft_xds, backend, d, "reviews-v1", "reviews")
    rt = workload(weft_xds, backend, d, "ratings-v1", "ratings")
    procs = (pp, rv, rt)

    # Each proxy learns the others' inbound listeners (not their app
    # ports) as the endpoints of their services, and not its own app port.
    for src in procs:
        for dst in procs:
            app = dst.name.split("-")[0]
            wait_endpoints(src, outbound_cluster(app), {dst.inbound_addr})

    # app -> proxy -> proxy -> app, in every direction
    for src in procs:
        for dst in procs:
            if src is dst:
                continue
            app = dst.name.split("-")[0]
            before_src, before_dst = src.stats(), dst.stats()
            before_app = dst.backend.served()
            r = curl(src.out_url + "/hop/%s" % app, host="%s:9080" % app,
                     headers=["x-from: %s" % src.name])
            assert r.status == 200, "%s -> %s: %r\n%s\n%s" % (
                src.name, app, r, src.describe(), dst.describe())
            assert r.backend == dst.backend.name, r
            body = r.json()
            assert body["path"] == "/hop/%s" % app, body
            assert body["headers"].get("x-from") == src.name, body
            # the backend saw it, the server proxy received it on its
            # inbound listener, the client proxy sent it upstream
            assert dst.backend.served() == before_app + 1
            after_src, after_dst = src.stats(), dst.stats()
            assert after_src["upstream_rq_total"] >= before_src["upstream_rq_total"] + 1, (
                before_src, after_src)
            assert after_dst["downstream_rq_total"] >= before_dst["downstream_rq_total"] + 1, (
                before_dst, after_dst)
            assert after_dst["upstream_rq_total"] >= before_dst["upstream_rq_total"] + 1, (
                before_dst, after_dst)

    # an unknown host is still 404 NR in xDS mode
    r = curl(pp.out_url + "/", host="nowhere:9080")
    assert r.status == 404 and "NR" in r.text, r


def test_proxy_not_ready_until_first_config(istiod, weft_xds, backend):
    d = istiod({"mesh.yaml": MESH}, start=False)
    app = backend("reviews-v1")
    w = weft_xds(d, name="reviews-v1", services=("reviews:9080",), app_port=app.port,
                 labels={"app": "reviews", "version": "v1"}, wait=False)

    # No istiod yet: the admin listener answers, /ready says 503, and the
    # data path has nothing to serve.
    def admin_up():
        assert w.running(), "proxy exited without istiod\n%s" % w.describe()
        try:
            return w.admin("/ready", timeout=2)
        except OSError:
            return None
    status, body = wait_until(admin_up, "the proxy's admin listener")
    assert status == 503, (status, body)

    # istiod comes up on the address the proxy was given: the proxy
    # reconnects on its own (backoff), gets a config and turns ready.
    d.start()
    w.wait_ready()
    dump = w.config_dump()
    v = xds_versions(dump)
    assert v.get("LDS") and v.get("CDS") and v.get("EDS"), v
    assert cluster_endpoints(dump, outbound_cluster("reviews")) == {w.inbound_addr}
    r = curl(w.out_url + "/", host="reviews:9080")
    assert r.status == 200 and r.backend == "reviews-v1", r


# --------------------------------------------------------------------------
# registry: proxies joining and leaving

def test_join_and_leave(istiod, weft_xds, backend):
    grace = 0.5
    d = istiod({"mesh.yaml": MESH}, registry_grace="500ms")
    pp = workload(weft_xds, backend, d, "productpage-v1", "productpage")
    v1 = workload(weft_xds, backend, d, "reviews-v1", "reviews", "v1")
    cl = outbound_cluster("reviews")
    for p in (pp, v1):
        wait_endpoints(p, cl, {v1.inbound_addr})
    assert served_by(pp, "reviews:9080", 10) == Counter({"reviews-v1": 10})

    # a second reviews workload registers: every other proxy gets it
    v2 = workload(weft_xds, backend, d, "reviews-v2", "reviews", "v2")
    both = {v1.inbound_addr, v2.inbound_addr}
    for p in (pp, v1, v2):
        wait_endpoints(p, cl, both)
    # round robin over the two endpoints
    c = served_by(pp, "reviews:9080", 20)
    assert c["reviews-v1"] >= 5 and c["reviews-v2"] >= 5, c

    # it leaves: removed from the others once the grace period is over,
    # and not before
    t0 = time.monotonic()
    v2.stop()
    for p in (pp, v1):
        wait_endpoints(p, cl, {v1.inbound_addr})
    elapsed = time.monotonic() - t0
    assert elapsed >= grace * 0.9, (
        "the endpoint went %.2fs after the proxy was stopped, before the %.1fs grace"
        % (elapsed, grace))
    assert served_by(pp, "reviews:9080", 10) == Counter({"reviews-v1": 10})
    # and from the registry's service: syncz no longer lists the proxy
    wait_until(lambda: syncz_entry(d, v2) is None, "reviews-v2 to leave /debug/syncz")


def test_istiod_restart_rebuilds_registry(istiod, weft_xds, backend):
    # istiod stopped and started again: it knows nothing of the proxies
    # until they reconnect, and rebuilds the registry from their nodes.
    d = istiod({"mesh.yaml": MESH}, registry_grace="1s")
    pp = workload(weft_xds, backend, d, "productpage-v1", "productpage")
    v1 = workload(weft_xds, backend, d, "reviews-v1", "reviews", "v1")
    cl = outbound_cluster("reviews")
    wait_endpoints(pp, cl, {v1.inbound_addr})
    d.stop()
    d.restart()
    wait_until(lambda: syncz_entry(d, pp) and syncz_entry(d, v1), "both proxies to reconnect")
    wait_endpoints(pp, cl, {v1.inbound_addr})
    assert served_by(pp, "reviews:9080", 5) == Counter({"reviews-v1": 5})


# --------------------------------------------------------------------------
# NACK: a config the proxy cannot apply

def bad_plugin(module, value="hello"):
    return dedent("""
        apiVersion: weft.io/v1alpha1
        kind: FilterPlugin
        metadata:
          name: extra
          namespace: default
        spec:
          selector:
            matchLabels:
              app: productpage
          module: %s
          pluginConfig:
            header: x-extra
            value: %s
        """ % (module, value))


def test_nack_keeps_previous_config(istiod, weft_xds, backend):
    d = istiod({"mesh.yaml": MESH})
    pp = workload(weft_xds, backend, d, "productpage-v1", "productpage")
    rv = workload(weft_xds, backend, d, "reviews-v1", "reviews")
    for p in (pp, rv):
        wait_endpoints(p, outbound_cluster("reviews"), {rv.inbound_addr})

    def synced(proxy):
        e = syncz_entry(d, proxy)
        return e and all(e[t]["sent"] and e[t]["sent"] == e[t]["acked"]
                         for t in ("LDS", "CDS", "EDS")) and e
    wait_until(lambda: synced(pp) and synced(rv), "both proxies to ACK their config")
    rejects_before = rejects(d)
    pp_before = xds_versions(pp.config_dump())
    rv_lds = syncz_entry(d, rv)["LDS"]["sent"]

    # a FilterPlugin whose module does not exist, selecting productpage:
    # istiod accepts it (the module is the proxy's business), productpage
    # cannot build a snapshot with it and NACKs
    d.write(bad_plugin("no-such-module"), "plugin.yaml")

    def nacked():
        e = syncz_entry(d, pp)
        return e and e["LDS"]["last_nack"] and e
    e = wait_until(nacked, "productpage's NACK in /debug/syncz")
    assert "no-such-module" in e["LDS"]["last_nack"], e["LDS"]
    assert e["LDS"]["acked"] != e["LDS"]["sent"], e["LDS"]
    wait_until(lambda: rejects(d) > rejects_before, "pilot_total_xds_rejects to go up")

    # productpage keeps its previous config and keeps serving
    assert pp.running()
    assert xds_versions(pp.config_dump()) == pp_before
    r = curl(pp.out_url + "/", host="reviews:9080")
    assert r.status == 200 and r.backend == "reviews-v1", r
    assert r.header("x-extra") is None, r
    # the plugin does not select reviews: its config did not move
    er = syncz_entry(d, rv)
    assert er["LDS"]["sent"] == rv_lds and not er["LDS"]["last_nack"], er

    # fixed (a module that exists): ACKed, applied, the NACK cleared
    d.write(bad_plugin("example", "fixed"), "plugin.yaml")
    e = wait_until(lambda: synced(pp), "productpage to ACK the fixed config")
    assert not e["LDS"]["last_nack"], e["LDS"]
    wait_until(lambda: curl(pp.out_url + "/", host="reviews:9080").header("x-extra") == "fixed",
               "the example plugin's header on productpage's responses")
    assert xds_versions(pp.config_dump())["LDS"] != pp_before["LDS"]


# --------------------------------------------------------------------------
# config_dump

def test_config_dump_shows_xds_versions(istiod, weft_xds, backend):
    d = istiod({"mesh.yaml": MESH})
    rv = workload(weft_xds, backend, d, "reviews-v1", "reviews")
    wait_until(lambda: (syncz_entry(d, rv) or {}).get("LDS", {}).get("acked"),
               "reviews-v1 to ACK LDS")
    dump = rv.config_dump()
    v = xds_versions(dump)
    e = syncz_entry(d, rv)
    # what the proxy applied is what istiod sent and saw ACKed
    for t in ("LDS", "CDS", "EDS"):
        assert v[t] and v[t] == e[t]["acked"], (t, v, e[t])
    # the bundle holds what the types brought: both listeners, the
    # service's cluster, its endpoint
    names = {l["name"] for l in dump["listeners"]}
    assert {"virtualOutbound", "virtualInbound"} <= names, names
    assert outbound_cluster("reviews") in {c["name"] for c in dump["clusters"]}
    assert json.dumps(dump)  # plain JSON all the way down


def test_new_service_and_new_endpoint_in_one_push(istiod, weft_xds, backend):
    # Two workloads register at once: one more endpoint of a service the
    # client already uses (its EDS changes) and a service it has never
    # seen (a new cluster, so the client must widen its EDS subscription).
    # istiod sends CDS, EDS and LDS in one push; the client's request for
    # the new EDS name crosses the EDS response on the wire, and must not
    # be lost: the client has to end up with both, ACKed.
    d = istiod({"mesh.yaml": MESH})
    pp = workload(weft_xds, backend, d, "productpage-v1", "productpage")
    v1 = workload(weft_xds, backend, d, "reviews-v1", "reviews", "v1")
    wait_endpoints(pp, outbound_cluster("reviews"), {v1.inbound_addr})
    v2 = workload(weft_xds, backend, d, "reviews-v2", "reviews", "v2", wait=False)
    rt = workload(weft_xds, backend, d, "ratings-v1", "ratings", wait=False)
    v2.wait_ready()
    rt.wait_ready()
    for p in (pp, v1, v2, rt):
        try:
            wait_endpoints(p, outbound_cluster("reviews"), {v1.inbound_addr, v2.inbound_addr})
            wait_endpoints(p, outbound_cluster("ratings"), {rt.inbound_addr})
        except AssertionError as e:
            e_ = syncz_entry(d, p) or {}
            raise AssertionError("%s\n%s's xDS state: %s\nistiod's EDS view of it: %s" % (
                e, p.name, json.dumps(p.config_dump().get("xds"), sort_keys=True),
                json.dumps(e_.get("EDS"), sort_keys=True)))

    def synced(proxy):
        e = syncz_entry(d, proxy)
        return e and all(e[t]["sent"] and e[t]["sent"] == e[t]["acked"]
                         for t in ("LDS", "CDS", "EDS"))
    wait_until(lambda: all(synced(p) for p in (pp, v1, v2, rt)), "every proxy to ACK")
    assert served_by(pp, "ratings:9080", 3) == Counter({"ratings-v1": 3})
