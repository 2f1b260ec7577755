"""Routing through the outbound listener in static mode: VirtualService
matches and weights, DestinationRule subsets and load balancing, Istio's
host aliases, absolute-form requests, the NR/UH/UF local replies, the
inbound listener, and the demo."""
import math
import subprocess
import sys
from collections import Counter

import pytest

from conftest import (CHILD_ENV, REPO, curl, curl_many, destination_rule, free_port,
                      service_entry, virtual_service, workload_entry)


def served(w, n=1, path="/", host="reviews", headers=(), proxy=None):
    """Counter of x-backend over n requests; every one must be 200."""
    if proxy:
        url, host = "http://%s%s" % (host, path), None
    else:
        url = w.out_url + path
    res = curl_many(url, n, host=host, headers=headers, proxy=proxy)
    bad = [r for r in res if r[0] != 200]
    assert not bad, "non-200 answers: %s\n%s" % (Counter(bad), w.describe())
    return Counter(name for _, name in res)


def only(w, path="/", host="reviews", headers=(), n=5):
    """The single backend that served n requests (asserts it is one)."""
    c = served(w, n, path, host, headers)
    assert len(c) == 1, "requests to %s%s were spread over %s" % (host, path, dict(c))
    return next(iter(c))


def five_sigma(n, p):
    return 5 * math.sqrt(n * p * (1 - p))


# --------------------------------------------------------------------------
# weights and subsets

def test_weighted_split_90_10(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - route:
          - destination: {host: reviews, subset: v1}
            weight: 90
          - destination: {host: reviews, subset: v2}
            weight: 10
        """))
    n = 2000
    c = served(w, n)
    assert c["reviews-v3"] == 0, c
    assert c["reviews-v1"] + c["reviews-v2"] == n, c
    tol = five_sigma(n, 0.9)
    assert abs(c["reviews-v1"] - 0.9 * n) <= tol, (
        "v1 served %d of %d, expected %d +- %.0f (5 sigma)" % (c["reviews-v1"], n, 0.9 * n, tol))


def test_weighted_split_three_ways(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - route:
          - destination: {host: reviews, subset: v1}
            weight: 50
          - destination: {host: reviews, subset: v2}
            weight: 30
          - destination: {host: reviews, subset: v3}
            weight: 20
        """))
    n = 1500
    c = served(w, n)
    for v, p in (("v1", 0.5), ("v2", 0.3), ("v3", 0.2)):
        assert abs(c["reviews-" + v] - p * n) <= five_sigma(n, p), (v, c)


def test_header_match_routes_canary(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - headers:
              end-user: {exact: jason}
          route:
          - destination: {host: reviews, subset: v3}
        - route:
          - destination: {host: reviews, subset: v1}
        """))
    assert only(w, headers=["end-user: jason"], n=20) == "reviews-v3"
    assert only(w, n=20) == "reviews-v1"
    # exact means exact: other values and other case go to stable
    assert only(w, headers=["end-user: jasonx"]) == "reviews-v1"
    assert only(w, headers=["end-user: Jason"]) == "reviews-v1"
    # header names are case-insensitive
    assert only(w, headers=["End-User: jason"]) == "reviews-v3"


def test_header_prefix_regex_and_absence(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - headers:
              x-group: {prefix: beta-}
          route:
          - destination: {host: reviews, subset: v2}
        - match:
          - headers:
              x-build: {regex: "[0-9]+\\\\.rc[0-9]*"}
          route:
          - destination: {host: reviews, subset: v3}
        - match:
          - withoutHeaders:
              x-legacy: {}
          route:
          - destination: {host: reviews, subset: v1}
        """))
    assert only(w, headers=["x-group: beta-7"]) == "reviews-v2"
    assert only(w, headers=["x-build: 12.rc3"]) == "reviews-v3"
    # a regex must match the whole value (RE2 full match, as Istio)
    r = curl(w.out_url + "/", host="reviews", headers=["x-build: 12.rc3-dirty", "x-legacy: 1"])
    assert r.status == 404 and "NR" in r.text, r
    # without x-legacy the third route matches; with it nothing does
    assert only(w, headers=["x-group: alpha"]) == "reviews-v1"
    r = curl(w.out_url + "/", host="reviews", headers=["x-legacy: yes"])
    assert r.status == 404 and "NR" in r.text, r


def test_uri_exact_prefix_regex(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - uri: {exact: /exact}
          route:
          - destination: {host: reviews, subset: v1}
        - match:
          - uri: {prefix: /api/}
          route:
          - destination: {host: reviews, subset: v2}
        - match:
          - uri: {regex: "/items/[0-9]+"}
          route:
          - destination: {host: reviews, subset: v3}
        """))
    cases = {
        "/exact": "reviews-v1",
        "/exact?x=1": "reviews-v1",  # the query string is not part of the path
        "/api/": "reviews-v2",
        "/api/ratings/7": "reviews-v2",
        "/items/42": "reviews-v3",
        "/items/42?full=1": "reviews-v3",
    }
    for path, want in cases.items():
        r = curl(w.out_url + path, host="reviews")
        assert r.status == 200 and r.backend == want, (path, r)
        assert r.json()["path"] == path, "the path must reach the backend unchanged"
    for path in ("/exact/more", "/Exact", "/api", "/items/4x", "/items/42/extra", "/"):
        r = curl(w.out_url + path, host="reviews")
        assert r.status == 404 and "NR" in r.text, (path, r)


def test_method_match(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - method: {exact: POST}
          route:
          - destination: {host: reviews, subset: v2}
        - route:
          - destination: {host: reviews, subset: v1}
        """))
    r = curl(w.out_url + "/orders", host="reviews", data=b'{"n": 1}')
    assert r.status == 200 and r.backend == "reviews-v2", r
    assert r.json()["method"] == "POST" and r.json()["body_len"] == 8
    r = curl(w.out_url + "/orders", host="reviews")
    assert r.status == 200 and r.backend == "reviews-v1", r
    r = curl(w.out_url + "/orders", host="reviews", method="DELETE")
    assert r.status == 200 and r.backend == "reviews-v1", r
    assert r.json()["method"] == "DELETE"


def test_query_params_match(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - queryParams:
              debug: {exact: "1"}
          route:
          - destination: {host: reviews, subset: v2}
        - route:
          - destination: {host: reviews, subset: v1}
        """))
    assert only(w, path="/?debug=1") == "reviews-v2"
    assert only(w, path="/list?a=b&debug=1") == "reviews-v2"
    assert only(w, path="/?debug=2") == "reviews-v1"
    assert only(w, path="/?nodebug=1") == "reviews-v1"
    assert only(w, path="/") == "reviews-v1"


def test_authority_match(weft, reviews):
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - authority: {prefix: reviews.default.svc}
          route:
          - destination: {host: reviews, subset: v2}
        - route:
          - destination: {host: reviews, subset: v1}
        """))
    assert only(w, host="reviews.default.svc.cluster.local") == "reviews-v2"
    assert only(w, host="reviews.default.svc:9080") == "reviews-v2"
    assert only(w, host="reviews") == "reviews-v1"
    assert only(w, host="reviews.default:9080") == "reviews-v1"


def test_port_match(weft, backend):
    b1, b2 = backend("reviews-v1"), backend("reviews-v2")
    yaml = (service_entry("reviews", ports=((9080, "http"), (9090, "http-alt")))
            + workload_entry("reviews-v1", b1.port, "reviews", "v1", port_names=("http", "http-alt"))
            + workload_entry("reviews-v2", b2.port, "reviews", "v2", port_names=("http", "http-alt"))
            + destination_rule("reviews", subsets=("v1", "v2"))
            + virtual_service("reviews", """
                - match:
                  - port: 9090
                  route:
                  - destination: {host: reviews, subset: v2, port: {number: 9090}}
                - route:
                  - destination: {host: reviews, subset: v1, port: {number: 9080}}
                """))
    w = weft(yaml)
    assert only(w, host="reviews:9090") == "reviews-v2"
    assert only(w, host="reviews.default.svc.cluster.local:9090") == "reviews-v2"
    assert only(w, host="reviews:9080") == "reviews-v1"


def test_source_labels_match(weft, reviews):
    config = reviews.yaml + virtual_service("reviews", """
        - match:
          - sourceLabels: {app: productpage}
          route:
          - destination: {host: reviews, subset: v2}
        - route:
          - destination: {host: reviews, subset: v1}
        """)
    pp = weft(config, name="productpage", labels={"app": "productpage", "version": "v1"})
    other = weft(config, name="ratings", labels={"app": "ratings"})
    assert only(pp) == "reviews-v2"
    assert only(other) == "reviews-v1"


def test_routes_are_tried_in_order(weft, reviews):
    # Both routes match /api/x with the header; the first one listed wins.
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - uri: {prefix: /api}
          route:
          - destination: {host: reviews, subset: v2}
        - match:
          - headers:
              end-user: {exact: jason}
          route:
          - destination: {host: reviews, subset: v3}
        """))
    assert only(w, path="/api/x", headers=["end-user: jason"]) == "reviews-v2"
    assert only(w, path="/other", headers=["end-user: jason"]) == "reviews-v3"


def test_match_conditions_and_or(weft, reviews):
    # Fields of one match are ANDed; entries of the match list are ORed.
    w = weft(reviews.yaml + virtual_service("reviews", """
        - match:
          - uri: {prefix: /a}
            headers:
              x-tier: {exact: gold}
          - uri: {prefix: /b}
          route:
          - destination: {host: reviews, subset: v2}
        - route:
          - destination: {host: reviews, subset: v1}
        """))
    assert only(w, path="/a", headers=["x-tier: gold"]) == "reviews-v2"
    assert only(w, path="/a") == "reviews-v1"
    assert only(w, path="/b") == "reviews-v2"
    assert only(w, path="/c", headers=["x-tier: gold"]) == "reviews-v1"


# --------------------------------------------------------------------------
# hosts

ALIASES = ["reviews", "reviews:9080", "reviews.default", "reviews.default:9080",
           "reviews.default.svc", "reviews.default.svc:9080",
           "reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080",
           "240.240.0.10", "240.240.0.10:9080", "Reviews.Default:9080"]


@pytest.fixture
def ratings(weft, backend):
    """A proxy in namespace default; `reviews` (address 240.240.0.10) has
    one backend and no VirtualService, `ratings` one backend."""
    rv, ra = backend("reviews-v1"), backend("ratings-v1")
    yaml = (service_entry("reviews", addresses=["240.240.0.10"])
            + workload_entry("reviews-v1", rv.port, "reviews", "v1")
            + service_entry("ratings")
            + workload_entry("ratings-v1", ra.port, "ratings", "v1"))
    return weft(yaml)


@pytest.mark.parametrize("host", ALIASES)
def test_host_aliases_origin_form(ratings, host):
    r = curl(ratings.out_url + "/x", host=host)
    assert r.status == 200 and r.backend == "reviews-v1", (host, r)
    assert r.json()["path"] == "/x"


@pytest.mark.parametrize("target", ["http://reviews.default:9080/x", "http://reviews:9080/x",
                                    "http://reviews.default.svc.cluster.local:9080/x",
                                    "http://240.240.0.10:9080/x"])
def test_absolute_form(ratings, target):
    r = curl(target, proxy=ratings.proxy)
    assert r.status == 200 and r.backend == "reviews-v1", (target, r)
    # the backend gets origin-form with the path, not the absolute URL
    assert r.json()["path"] == "/x", r.json()


def test_service_without_virtual_service_routes_to_itself(ratings):
    r = curl(ratings.out_url + "/rate", host="ratings")
    assert r.status == 200 and r.backend == "ratings-v1", r
    r = curl(ratings.out_url + "/rate", host="ratings.default.svc.cluster.local:9080")
    assert r.status == 200 and r.backend == "ratings-v1", r


def test_short_name_only_in_own_namespace(weft, backend):
    b = backend("reviews-v1")
    w = weft(service_entry("reviews") + workload_entry("reviews-v1", b.port, "reviews", "v1"),
             namespace="other")
    r = curl(w.out_url + "/", host="reviews")
    assert r.status == 404 and "NR" in r.text, r
    for host in ("reviews.default", "reviews.default.svc.cluster.local:9080"):
        r = curl(w.out_url + "/", host=host)
        assert r.status == 200 and r.backend == "reviews-v1", (host, r)


def test_wrong_port_is_not_routed(ratings):
    r = curl(ratings.out_url + "/", host="reviews:9999")
    assert r.status == 404 and "NR" in r.text, r


# --------------------------------------------------------------------------
# local replies: NR, UH, UF

@pytest.mark.parametrize("host", ["nosuch", "nosuch.default:9080",
                                  "nosuch.default.svc.cluster.local:9080", "reviews.other"])
def test_unknown_host_404_nr(ratings, host):
    r = curl(ratings.out_url + "/", host=host)
    assert r.status == 404, r
    assert "NR" in r.text, r


def test_unknown_host_absolute_form_404(ratings):
    r = curl("http://nosuch.default:9080/", proxy=ratings.proxy)
    assert r.status == 404 and "NR" in r.text, r


def test_no_endpoint_503_uh(weft):
    # A service whose selector matches no WorkloadEntry has no endpoint.
    w = weft(service_entry("empty", selector={"app": "nothing-has-this-label"}))
    r = curl(w.out_url + "/", host="empty")
    assert r.status == 503, r
    assert "UH" in r.text, r


def test_subset_without_endpoint_503_uh(weft, backend):
    b = backend("reviews-v1")
    yaml = (service_entry("reviews") + workload_entry("reviews-v1", b.port, "reviews", "v1")
            + destination_rule("reviews", subsets=("v1", "v2"))
            + virtual_service("reviews", """
                - route:
                  - destination: {host: reviews, subset: v2}
                """))
    w = weft(yaml)
    r = curl(w.out_url + "/", host="reviews")
    assert r.status == 503 and "UH" in r.text, r


def test_connect_failure_503_uf(weft):
    dead = free_port()  # nothing listens there
    w = weft(service_entry("dead") + workload_entry("dead-v1", dead, "dead", "v1"))
    r = curl(w.out_url + "/", host="dead")
    assert r.status == 503, r
    assert "UF" in r.text, r
    # and the proxy keeps serving
    r = curl(w.out_url + "/", host="dead")
    assert r.status == 503 and "UF" in r.text, r


# --------------------------------------------------------------------------
# load balancing and the registry

def three_endpoints(backend, lb):
    bs = [backend("pool-%d" % i) for i in range(3)]
    yaml = (service_entry("pool")
            + "".join(workload_entry("pool-%d" % i, b.port, "pool") for i, b in enumerate(bs))
            + destination_rule("pool", subsets=(), lb=lb))
    return bs, yaml


def test_round_robin_spreads_evenly(weft, backend):
    bs, yaml = three_endpoints(backend, "ROUND_ROBIN")
    w = weft(yaml)
    n = 300
    c = served(w, n, host="pool")
    assert set(c) == {b.name for b in bs}, c
    for b in bs:
        assert abs(c[b.name] - n / 3) <= 3, "round robin over 3 endpoints: %s" % dict(c)


@pytest.mark.parametrize("lb", ["RANDOM", "LEAST_REQUEST"])
def test_random_and_least_request_use_every_endpoint(weft, backend, lb):
    bs, yaml = three_endpoints(backend, lb)
    w = weft(yaml)
    n = 600
    c = served(w, n, host="pool")
    for b in bs:
        assert abs(c[b.name] - n / 3) <= five_sigma(n, 1 / 3), "%s: %s" % (lb, dict(c))


def test_service_entry_inline_endpoints(weft, backend):
    a, b = backend("inline-a"), backend("inline-b")
    w = weft(service_entry("inline", endpoints=[("127.0.0.1", {"http": a.port}),
                                               ("127.0.0.1", {"http": b.port})]))
    c = served(w, 20, host="inline")
    assert set(c) == {"inline-a", "inline-b"}, c


def test_service_entry_dns_localhost(weft, backend):
    b = backend("dns-v1")
    w = weft(service_entry("dns", resolution="DNS", endpoints=[("localhost", {"http": b.port})]))
    assert only(w, host="dns") == "dns-v1"


def test_external_service_entry_host(weft, backend):
    # A ServiceEntry for an external name: routed by that exact host.
    b = backend("ext")
    yaml = service_entry("ext", host="api.example.com", ports=((80, "http"),),
                         endpoints=[("127.0.0.1", {"http": b.port})])
    w = weft(yaml)
    assert only(w, host="api.example.com") == "ext"
    r = curl("http://api.example.com/v1", proxy=w.proxy)
    assert r.status == 200 and r.backend == "ext", r


# --------------------------------------------------------------------------
# inbound

def test_inbound_forwards_to_app_port(weft, backend):
    app = backend("app")
    w = weft("", app_port=app.port, labels={"app": "reviews", "version": "v1"})
    for host in ("reviews:9080", "anything.example", "10.0.0.1:1234"):
        r = curl(w.in_url + "/in?q=1", host=host, headers=["x-test: 1"])
        assert r.status == 200 and r.backend == "app", (host, r)
        got = r.json()
        assert got["path"] == "/in?q=1" and got["headers"]["x-test"] == "1", got
    r = curl(w.in_url + "/echo", host="reviews", data=b"payload")
    assert r.status == 200 and r.body == b"payload", r


def test_inbound_app_down_503_uf(weft):
    w = weft("", app_port=free_port())
    r = curl(w.in_url + "/", host="reviews")
    assert r.status == 503 and "UF" in r.text, r


def test_two_hop_through_peer_proxy(weft, backend):
    # app -> client proxy (outbound) -> server proxy (inbound) -> app,
    # the path every request of the demo takes.
    app = backend("reviews-v1")
    server = weft("", name="server", app_port=app.port, labels={"app": "reviews", "version": "v1"})
    yaml = service_entry("reviews") + workload_entry("reviews-v1", server.in_port, "reviews", "v1")
    client = weft(yaml, name="client", labels={"app": "productpage"})
    r = curl(client.out_url + "/hop", host="reviews:9080")
    assert r.status == 200 and r.backend == "reviews-v1", r
    assert r.json()["path"] == "/hop"


# --------------------------------------------------------------------------
# the demo

def test_demo_once(weft_bin, tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "conf" / "demo" / "demo.py"),
                        "--weft", weft_bin, "--once"],
                       capture_output=True, text=True, timeout=180, cwd=str(REPO), env=CHILD_ENV)
    assert p.returncode == 0, "demo failed (%d)\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout, p.stderr)
    out = p.stdout
    for word in ("v1", "v2", "v3", "jason", "404", "NR"):
        assert word in out, "demo output lacks %r:\n%s" % (word, out)
    assert "Traceback" not in p.stderr, p.stderr


def test_demo_config_validates(weft_bin):
    p = subprocess.run([weft_bin, "validate", str(REPO / "conf" / "demo")],
                       capture_output=True, text=True, timeout=60, env=CHILD_ENV)
    assert p.returncode == 0, p.stdout + p.stderr
