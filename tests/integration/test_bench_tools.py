"""The benchmark's fixed-rate load generator (tests/bench/rate.c): a smoke
test, so that ./dev bench does not rot between runs.  It must send every
request at the rate asked, count each answer, report ordered percentiles,
and fail loudly on an error answer or a server that goes away."""
import json
import os
import pathlib
import subprocess

import pytest

from conftest import WEFT_BIN, free_port

RATE = str(pathlib.Path(WEFT_BIN).parent / "bench-tools" / "rate")


@pytest.fixture
def rate_bin():
    if not os.access(RATE, os.X_OK):
        pytest.fail("%s is not built (scons builds tests/bench/*.c)" % RATE)
    return RATE


def run(rate_bin, port, path, *args):
    return subprocess.run([rate_bin] + list(args) + ["127.0.0.1:%d" % port, path],
                          capture_output=True, text=True, timeout=30)


def test_rate_sends_every_request_and_reports_percentiles(rate_bin, backend):
    b = backend("b")
    r = run(rate_bin, b.port, "/", "-r", "400", "-d", "1", "-w", "0.25", "-c", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # 1.25 s at 400/s: 500 sent, the 400 after the warm-up counted
    assert out["sent"] == 500 and out["counted"] == 400
    assert 0 < out["p50_us"] <= out["p90_us"] <= out["p99_us"] <= out["p999_us"] <= out["max_us"]


def test_rate_fails_on_an_error_answer(rate_bin, backend):
    b = backend("b")
    r = run(rate_bin, b.port, "/status?code=503", "-r", "100", "-d", "0.2", "-w", "0")
    assert r.returncode == 1
    assert "bad response: HTTP/1.1 503" in r.stderr


def test_rate_fails_when_the_server_is_not_there(rate_bin):
    r = run(rate_bin, free_port(), "/", "-r", "100", "-d", "0.2")
    assert r.returncode != 0
    assert "connect" in r.stderr
