"""weft validate: exit codes and exact diagnostic lines.

Runs the real binary (env WEFT_BIN, default build/weft) on the sample
resources, the unit-test fixtures and files written here, and checks the
contract documented in docs/config.md:

  * every problem is one stdout line `file:line:col: Kind/ns/name: field: message`
  * no problem: `ok: N resources in M files`, exit 0
  * problems: exit 1
  * no PATH or an unreadable PATH: one line on stderr, exit 2
"""
import os
import subprocess
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEFT = os.environ.get("WEFT_BIN", os.path.join(REPO, "build", "weft"))
FIXTURES = os.path.join("tests", "unit", "testdata", "config")

pytestmark = pytest.mark.skipif(
    not os.access(WEFT, os.X_OK), reason="weft binary not built: %s" % WEFT)


def validate(*paths, cwd=REPO):
    p = subprocess.run([WEFT, "validate", *paths], cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout, p.stderr


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text).lstrip("\n"))


def test_samples_are_valid():
    rc, out, err = validate("conf/samples")
    assert (rc, out) == (0, "ok: 10 resources in 10 files\n"), err


def test_good_fixtures_directory():
    rc, out, _ = validate(os.path.join(FIXTURES, "good"))
    assert (rc, out) == (0, "ok: 14 resources in 3 files\n")


def test_several_paths_count_files_and_resources():
    rc, out, _ = validate("conf/samples/virtualservice.yaml", "conf/samples/destinationrule.yaml")
    assert (rc, out) == (0, "ok: 2 resources in 2 files\n")


def test_dangling_subset_exact_line(tmp_path):
    # Positions are those of the offending value: "v3" is at line 12, column 17.
    write(str(tmp_path / "conf" / "x.yaml"), """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
              weight: 50
            - destination:
                host: reviews
                subset: v3
              weight: 50
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          subsets:
          - name: v1
            labels: {version: v1}
        """)
    rc, out, err = validate("conf/x.yaml", cwd=str(tmp_path))
    assert rc == 1, err
    assert out.splitlines() == [
        'conf/x.yaml:12:17: VirtualService/default/reviews: '
        'spec.http[0].route[1].destination.subset: subset "v3" is not defined by any '
        'DestinationRule for host reviews.default.svc.cluster.local',
    ]
    assert err == ""


def test_bad_fixture_lines():
    path = os.path.join(FIXTURES, "bad", "weights.yaml")
    rc, out, _ = validate(path)
    assert rc == 1
    assert out.splitlines() == [
        path + ":9:5: VirtualService/default/weights: spec.http[0].route: weights add up to "
        "110; with more than one weighted destination they must add up to 100",
        path + ":18:15: VirtualService/default/weights: spec.http[1].route[0].weight: weight -10 "
        "is negative; weights are percentages 0..100",
        path + ":21:15: VirtualService/default/weights: spec.http[1].route[1].weight: weight 110 "
        "is over 100; weights are percentages 0..100",
        path + ":31:5: VirtualService/default/weights: spec.tcp[0].route: weights add up to 90; "
        "with more than one weighted destination they must add up to 100",
    ]


def test_duplicate_across_files_points_at_second():
    a = os.path.join(FIXTURES, "bad", "duplicates-a.yaml")
    b = os.path.join(FIXTURES, "bad", "duplicates-b.yaml")
    rc, out, _ = validate(a, b)
    assert rc == 1
    assert out.splitlines() == [
        b + ":5:9: VirtualService/default/reviews: metadata.name: duplicate VirtualService "
        "default/reviews (first defined at " + a + ":4:9)",
    ]


def test_malformed_yaml_and_other_files_together(tmp_path):
    write(str(tmp_path / "a.yaml"), """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: broken
         spec: {}
        """)
    write(str(tmp_path / "b.yaml"), """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: prod}
        spec:
          host: ratings
          trafficPolicy:
            loadBalancer: {simple: FASTEST}
        """)
    rc, out, _ = validate(".", cwd=str(tmp_path))
    assert rc == 1
    assert out.splitlines() == [
        "./a.yaml:5:2: -: -: invalid YAML: did not find expected key (while parsing a block "
        "mapping at line 1 column 1)",
        "./b.yaml:7:28: DestinationRule/prod/ratings: spec.trafficPolicy.loadBalancer.simple: "
        'invalid value "FASTEST"; allowed values: UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, '
        "ROUND_ROBIN, LEAST_REQUEST",
    ]


def test_unknown_field_wrong_type_and_short_host(tmp_path):
    write(str(tmp_path / "vs.yaml"), """
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata: {name: api, namespace: payments}
        spec:
          hosts: payments-api
          htpp: []
        """)
    rc, out, _ = validate("vs.yaml", cwd=str(tmp_path))
    assert rc == 1
    assert out.splitlines() == [
        "vs.yaml:5:10: VirtualService/payments/api: spec.hosts: expected a list, got a string",
        'vs.yaml:6:3: VirtualService/payments/api: spec.htpp: unknown field "htpp"; did you '
        'mean "http"?',
    ]


def test_empty_directory_is_ok(tmp_path):
    rc, out, _ = validate(str(tmp_path))
    assert (rc, out) == (0, "ok: 0 resources in 0 files\n")


def test_no_path_is_usage_error():
    rc, out, err = validate()
    assert rc == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and "validate" in err


def test_unreadable_path_is_usage_error(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    rc, out, err = validate(os.path.join(FIXTURES, "good"), missing)
    assert rc == 2
    assert out == ""
    assert err.splitlines() == ["weft validate: cannot read %s: No such file or directory"
                                % missing]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_usage_error(tmp_path):
    f = tmp_path / "secret.yaml"
    f.write_text("kind: MeshConfig\n")
    f.chmod(0)
    rc, out, err = validate(str(f))
    assert rc == 2
    assert err.splitlines() == ["weft validate: cannot read %s: Permission denied" % f]
