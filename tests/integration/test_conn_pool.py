"""Upstream connection pools and hop-by-hop headers (issue 5):
DestinationRule connectionPool.http.maxRequestsPerConnection retires an
HTTP/1.1 connection after that many requests; `te: trailers` reaches the
endpoint (gRPC servers require it), any other te does not."""
import time

from conftest import curl, dedent, service_entry, wait_until, workload_entry

HOST = "plain.default.svc.cluster.local"


def mesh(b, pool=""):
    y = service_entry("plain") + workload_entry("plain-1", b.port, app="plain")
    if pool:
        y += dedent("""
            ---
            apiVersion: networking.istio.io/v1beta1
            kind: DestinationRule
            metadata:
              name: plain
              namespace: default
            spec:
              host: plain
              trafficPolicy:
                connectionPool:
                  http:
            %s
            """) % "\n".join("        " + line for line in pool.strip().splitlines())
    return y


def test_max_requests_per_connection(weft, backend):
    b = backend("plain")
    w = weft(config=mesh(b, "maxRequestsPerConnection: 3"), concurrency=1)
    peers = []
    for _ in range(9):
        r = curl(w.out_url + "/x", host=HOST)
        assert r.status == 200, r
        body = r.json()
        peers.append(body["peer"])
        assert body["conn_requests"] <= 3, body  # never a fourth on one connection
    # Nine requests, three per connection: three connections.
    assert len(set(peers)) == 3, peers


def test_connections_reused_without_a_limit(weft, backend):
    b = backend("plain")
    w = weft(config=mesh(b), concurrency=1)
    peers = {curl(w.out_url + "/x", host=HOST).json()["peer"] for _ in range(9)}
    assert len(peers) == 1, peers


def test_te_trailers_kept_other_te_dropped(weft, backend):
    b = backend("plain")
    w = weft(config=mesh(b))
    r = curl(w.out_url + "/x", host=HOST, headers=["TE: trailers"])
    assert r.json()["headers"].get("te") == "trailers", r.json()
    r = curl(w.out_url + "/x", host=HOST, headers=["TE: gzip"])
    assert "te" not in r.json()["headers"], r.json()
    r = curl(w.out_url + "/x", host=HOST, headers=["TE: gzip, trailers"])
    assert r.json()["headers"].get("te") == "trailers", r.json()


def test_idle_upstream_connection_closed_after_idle_timeout(weft, backend):
    b = backend("plain")
    w = weft(config=mesh(b, "idleTimeout: 1s"), concurrency=1)
    t0 = time.monotonic()
    assert curl(w.out_url + "/x", host=HOST).status == 200
    assert w.stats().get("upstream_cx_active") == 1
    wait_until(lambda: w.stats().get("upstream_cx_active") == 0,
               "the idle pooled connection to close")
    assert time.monotonic() - t0 >= 0.9
    # The next request opens a new connection and works.
    r = curl(w.out_url + "/x", host=HOST)
    assert r.status == 200 and r.json()["conn_requests"] == 1  # a new connection

