"""The benchmark harness in bench/ works: the C load generator builds, drives the mock upstream through the
reference pass-through in both modes without errors, and counts what is wrong as errors. No timings."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import harness  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    os.environ.pop("LOADGEN", None)
    loadgen = harness.build_loadgen(str(tmp / "bin"))
    bodies = harness.write_bodies(str(tmp))
    mock_port, proxy_port = harness.free_port(), harness.free_port()
    base = f"http://127.0.0.1:{mock_port}/v1"
    servers = [
        harness.start_server("mock", [sys.executable, os.path.join(BENCH, "mock_openai.py"), "--port",
                                      str(mock_port), "--chunks", "5"], f"{base}/chat/completions", str(tmp)),
        harness.start_server("ref", [sys.executable, os.path.join(BENCH, "ref_proxy.py"), "--port",
                                     str(proxy_port), "--upstream", base],
                             f"http://127.0.0.1:{proxy_port}/v1/chat/completions", str(tmp)),
    ]
    try:
        for s in servers:
            s.wait_ready(timeout=30)
        yield loadgen, bodies, servers[0], servers[1]
    finally:
        for s in servers:
            s.stop()


@pytest.mark.parametrize("mode", ["json", "stream"])
def test_loadgen_through_reference_proxy(setup, mode):
    loadgen, bodies, _mock, ref = setup
    res = harness.run_loadgen(loadgen, ref.url, bodies[mode], harness.MARKERS[mode], conc=2, duration=1.0,
                              warmup=0.2)
    assert res["requests"] > 0
    assert res["errors"] == 0, res
    assert res["ok"] == res["requests"]
    assert res["completed_total"] >= res["requests"]
    assert 0 < res["lat_p50_us"] <= res["lat_p99_us"] <= res["lat_max_us"]
    assert 0 < res["ttfb_p50_us"] <= res["lat_p99_us"]


def test_loadgen_counts_bad_answers_as_errors(setup):
    loadgen, bodies, mock, _ref = setup
    missing = mock.url.replace("/chat/completions", "/no-such-route")
    res = harness.run_loadgen(loadgen, missing, bodies["json"], "chat.completion", conc=2, duration=0.5, warmup=0)
    assert res["err_status"] > 0 and res["ok"] == 0  # the mock's 404
    res = harness.run_loadgen(loadgen, mock.url, bodies["json"], "[DONE]", conc=2, duration=0.5, warmup=0)
    assert res["err_invalid"] > 0 and res["ok"] == 0  # a JSON answer has no [DONE]
    res = harness.run_loadgen(loadgen, mock.url, bodies["stream"], "[DONE]", conc=1, requests=7, duration=0,
                              warmup=0)
    assert res["completed_total"] == 7 and res["errors"] == 0


def test_loadgen_reconnects_after_a_closed_port(setup):
    loadgen, bodies, _mock, _ref = setup
    res = harness.run_loadgen(loadgen, f"http://127.0.0.1:{harness.free_port()}/v1/chat/completions",
                              bodies["json"], "chat.completion", conc=2, duration=0.3, warmup=0)
    assert res["requests"] == 0 and res["err_connect"] > 1  # it kept retrying and did not hang or crash
    res = harness.run_loadgen(loadgen, f"http://127.0.0.1:{harness.free_port()}/v1/chat/completions",
                              bodies["json"], "chat.completion", conc=2, requests=5, duration=0, warmup=0)
    assert res["completed_total"] == 0 and res["errors"] >= 5  # a request budget also ends a failing run
