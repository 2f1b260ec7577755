"""The command line: --help, --version, one-line usage errors with exit
code 2, roles not built yet, and a proxy that refuses a bad configuration
(exit 1, every problem with its location) instead of starting."""
import re
import socket

import pytest

from conftest import (curl, dedent, destination_rule, free_port, run_weft, sanitizer_lines,
                      service_entry, virtual_service, workload_entry)


def one_line_error(p):
    err = p.stderr.strip("\n")
    assert p.returncode == 2, "exit %d, want 2\nstderr: %s" % (p.returncode, p.stderr)
    assert len(err.splitlines()) == 1, "want one line on stderr, got:\n" + p.stderr
    assert err.startswith("weft: "), err
    assert not sanitizer_lines(p.stderr)
    return err


def test_help(weft_bin):
    p = run_weft(["--help"])
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for role in ("istiod", "proxy", "gateway", "ca"):
        assert re.search(r"\b%s\b" % role, out), "--help does not list role %s:\n%s" % (role, out)
    for flag in ("--role", "--config-dir", "--namespace", "--service-account", "--labels",
                 "--outbound", "--inbound", "--app-port", "--admin", "--concurrency",
                 "--plugin-dir", "--module-dir", "--log-level"):
        assert flag in out, "--help does not list %s:\n%s" % (flag, out)
    assert "validate" in out, "--help should mention `weft validate`"


def test_version(weft_bin):
    p = run_weft(["--version"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "weft 0.1.0", p.stdout


@pytest.mark.parametrize("args", [
    [],
    ["--role=nope"],
    ["--role"],
    ["--role=proxy", "--bogus"],
    ["--role=proxy", "--bogus=1"],
    ["--role=proxy", "--concurrency=abc"],
    ["--role=proxy", "--concurrency", "abc"],
    ["--role=proxy", "--concurrency=-3"],
    ["--role=proxy", "--app-port=70000"],
    ["--role=proxy", "--app-port=port"],
    ["--role=proxy", "--outbound=127.0.0.1:99999"],
    ["--role=proxy", "--outbound=nowhere"],
    ["--role=proxy", "--admin=127.0.0.1:"],
    ["--role=proxy", "--labels=novalue"],
    ["--role=proxy", "--log-level=loud"],
    ["--role=proxy", "--seed=x"],
    ["--role=proxy", "--concurrency"],
    ["proxy"],
], ids=lambda a: " ".join(a) or "no-args")
def test_usage_errors_exit_2(weft_bin, tmp_path, args):
    if args and args[0].startswith("--role=proxy"):
        # Valid everything else, so the flag under test is the only fault.
        args = args[:1] + ["--config-dir", str(tmp_path)] + args[1:]
    err = one_line_error(run_weft(args))
    assert len(err) < 300, "an error line should be short: " + err


def test_usage_error_names_the_flag(weft_bin, tmp_path):
    err = one_line_error(run_weft(["--role=proxy", "--config-dir", str(tmp_path), "--frobnicate"]))
    assert "--frobnicate" in err, err
    err = one_line_error(run_weft(["--role=proxy", "--config-dir", str(tmp_path),
                                   "--concurrency=abc"]))
    assert "concurrency" in err and "abc" in err, err
    err = one_line_error(run_weft(["--role=nope"]))
    assert "nope" in err, err


@pytest.mark.parametrize("role", ["istiod", "ca"])
def test_cert_lifetimes_checked_alike(weft_bin, tmp_path, role):
    """Both roles that run a CA take --cert-ttl and --max-cert-ttl by the
    same rules: each from a second to ten years, the default no longer than
    the longest."""
    base = ["--role=" + role, "--ca-dir", str(tmp_path / "ca")]
    if role == "istiod":
        base += ["--config-dir", str(tmp_path)]
    cases = [(["--cert-ttl", "48h", "--max-cert-ttl", "24h"], "longer than --max-cert-ttl"),
             (["--cert-ttl", "10ms"], "shorter than a second"),
             (["--max-cert-ttl", "100000h"], "longer than 87600h"),
             (["--cert-ttl", "soon"], "--cert-ttl")]
    for extra, want in cases:
        err = one_line_error(run_weft(base + extra))
        assert want in err, (extra, err)
    assert not (tmp_path / "ca").exists(), "a usage error still created the CA directory"


@pytest.mark.parametrize("role", ["gateway"])
def test_roles_not_built_yet(weft_bin, role):
    err = one_line_error(run_weft(["--role=" + role]))
    assert "not built yet" in err, err
    err = one_line_error(run_weft(["--role", role]))
    assert "not built yet" in err, err


def test_both_flag_spellings_start_a_proxy(weft, backend):
    # The Weft helper mixes "--flag=value" and "--flag value"; here every
    # flag is given the other way round.
    b = backend("reviews-v1")
    w = weft(service_entry("reviews") + workload_entry("reviews-v1", b.port, "reviews", "v1"),
             start=False)
    w.start(argv=[w.binary, "--role", "proxy", "--config-dir=" + str(w.config_dir),
                  "--namespace=default", "--service-account", "default",
                  "--outbound", "127.0.0.1:%d" % w.out_port,
                  "--inbound=127.0.0.1:%d" % w.in_port,
                  "--admin", "127.0.0.1:%d" % w.admin_port, "--concurrency=1",
                  "--labels", "app=productpage,version=v1", "--log-level", "warn"])
    assert curl(w.out_url + "/", host="reviews").status == 200


def test_empty_config_dir_starts(weft):
    w = weft(None)
    r = curl(w.out_url + "/", host="anything")
    assert r.status == 404 and "NR" in r.text


# --------------------------------------------------------------------------
# configuration errors: refused with their location, the proxy not started

DIAG = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): "
                  r"(?P<res>[A-Za-z]+/[^/\s]+/[^:\s]+): (?P<field>[^:\s]+): (?P<msg>.+)$")


def diagnostics(text):
    return [m.groupdict() for m in map(DIAG.match, text.splitlines()) if m]


def refused(weft, files, **kw):
    w = weft(files=files, start=False)
    w.start(wait=False, **kw)
    rc = w.wait_exit()
    assert rc == 1, "weft exited %d on a bad config, want 1\n%s" % (rc, w.describe())
    return w, w.stderr()


def line_of(text, needle):
    for i, l in enumerate(dedent(text).splitlines(), 1):
        if needle in l:
            return i
    raise AssertionError(needle)


def test_dangling_subset_refused_with_location(weft, backend):
    b = backend("reviews-v1")
    vs = virtual_service("reviews", """
        - route:
          - destination: {host: reviews, subset: v9}
        """)
    good = (service_entry("reviews") + workload_entry("reviews-v1", b.port, "reviews", "v1")
            + destination_rule("reviews", subsets=("v1",)))
    w, err = refused(weft, {"00-good.yaml": good, "10-routes.yaml": vs})
    ds = diagnostics(err)
    assert ds, "no `file:line:col: Kind/ns/name: field: message` line on stderr:\n" + err
    d = [d for d in ds if d["res"] == "VirtualService/default/reviews"]
    assert d, err
    d = d[0]
    assert d["file"].endswith("10-routes.yaml"), d
    assert int(d["line"]) == line_of(vs, "subset: v9"), (d, vs)
    assert "subset" in d["field"] and "v9" in d["msg"] + d["field"] + err, d


def test_unknown_field_and_bad_enum_all_reported(weft):
    bad = dedent("""
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata:
          name: reviews
          namespace: default
        spec:
          hosts: [reviews.default.svc.cluster.local]
          ports:
          - number: 9080
            name: http
            protocol: HTTP
          resolution: SOMETIMES
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata:
          name: ratings
          namespace: default
        spec:
          host: ratings
          trafic: {}
        """)
    w, err = refused(weft, {"bad.yaml": bad})
    ds = diagnostics(err)
    by_res = {d["res"]: d for d in ds}
    se = by_res.get("ServiceEntry/default/reviews")
    dr = by_res.get("DestinationRule/default/ratings")
    assert se and dr, "want one diagnostic per broken resource:\n" + err
    assert int(se["line"]) == line_of(bad, "resolution: SOMETIMES") and "resolution" in se["field"], se
    assert int(dr["line"]) == line_of(bad, "trafic:") and "trafic" in dr["field"] + dr["msg"], dr
    assert int(se["col"]) >= 1 and int(dr["col"]) >= 1


def test_malformed_yaml_refused(weft):
    bad = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: [unclosed\n"
    w, err = refused(weft, {"broken.yaml": bad})
    assert re.search(r"broken\.yaml:\d+:\d+: ", err), err


def test_wrong_type_refused(weft):
    bad = dedent("""
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata:
          name: reviews
          namespace: default
        spec:
          hosts: [reviews.default.svc.cluster.local]
          ports:
          - number: ninety
            name: http
        """)
    w, err = refused(weft, {"types.yaml": bad})
    d = [d for d in diagnostics(err) if d["res"] == "ServiceEntry/default/reviews"]
    assert d and int(d[0]["line"]) == line_of(bad, "number: ninety"), err


def test_missing_config_dir(weft_bin, tmp_path):
    missing = str(tmp_path / "no-such-dir")
    p = run_weft(["--role=proxy", "--config-dir", missing,
                  "--outbound=127.0.0.1:%d" % free_port(), "--inbound=127.0.0.1:%d" % free_port(),
                  "--admin=127.0.0.1:%d" % free_port()])
    assert p.returncode in (1, 2), (p.returncode, p.stderr)
    assert missing in p.stderr, p.stderr


def test_port_in_use(weft):
    w = weft(None, start=False)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", w.out_port))
    blocker.listen(1)
    try:
        w.start(wait=False)
        rc = w.wait_exit()
        assert rc != 0, "weft started though its outbound port was taken"
        assert str(w.out_port) in w.stderr(), w.stderr()
    finally:
        blocker.close()
