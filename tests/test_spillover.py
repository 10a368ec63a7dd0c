"""Edge capacity awareness: spill to the cloud chain when the edge is saturated, with hysteresis."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from conftest import Gateway

POLICY = """
version: 1
models:
  edge-slow: {{tier: edge, litellm: {{model: openai/edge-slow, api_base: "{url}", api_key: t}}, timeout: 5s}}
  edge-probed:
    tier: edge
    litellm: {{model: openai/edge-probed, api_base: "{url}", api_key: t}}
    load: {{probe: llamacpp, interval: 200ms}}
  cloud-x: {{tier: cloud, litellm: {{model: openai/cloud-x, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length}}
routes:
  - name: auto
    when: {{model: auto}}
    targets: [edge-slow]
    spillover: {{queue_depth: 2, to: [cloud-x], hold: 3s}}
  - name: probed
    when: {{model: probed}}
    targets: [edge-probed]
    spillover: {{queue_depth: 3, to: [cloud-x], hold: 0s}}
retry: {{attempts: 1}}
"""


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(POLICY.format(url=upstream.url), tmp_module)
    yield gateway
    gateway.stop()


def ask(gw):
    return httpx.post(gw.base + "/v1/chat/completions", timeout=10,
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})


def test_saturated_edge_spills_to_cloud_and_holds(gw, mock):
    mock.script("edge-slow", [], default={"delay": 1.0})
    results = {}

    def one(i):
        results[i] = ask(gw)

    threads = []
    for i in range(6):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.08)
    for t in threads:
        t.join()
    models = [results[i].headers["x-gateway-model"] for i in range(6)]
    # All six arrive within the edge's 1 s answer time: the first three find 0, 1, 2 in flight (under the
    # queue bound), the next three find the edge queue 2 deep and spill.
    assert models.count("edge-slow") == 3 and models.count("cloud-x") == 3, models
    assert all(r.status_code == 200 for r in results.values())
    mock.script("edge-slow", [], default=None)
    # Hysteresis: the edge is idle again but the route stays spilled for `hold` (3 s) after the last
    # saturated reading, then comes back.
    assert ask(gw).headers["x-gateway-model"] == "cloud-x"
    time.sleep(3.2)
    assert ask(gw).headers["x-gateway-model"] == "edge-slow"


def test_explain_shows_the_spill_reason(gw, mock):
    mock.script("edge-slow", [], default={"delay": 0.8})
    threads = [threading.Thread(target=ask, args=(gw,)) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    d = httpx.post(gw.base + "/admin/explain", headers=gw.admin(),
                   json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).json()
    for t in threads:
        t.join()
    assert d["chain"][0]["model"] == "cloud-x"
    assert any(reason.startswith("spilled over: edge queue 2") for reason in d["reasons"])


def test_remote_edge_server_load_report_drives_spillover(gw, mock):
    def model_now():
        return httpx.post(gw.base + "/v1/chat/completions", timeout=10, json={
            "model": "probed", "messages": [{"role": "user", "content": "hi"}]}).headers["x-gateway-model"]

    def settles_on(model: str) -> bool:
        deadline = time.monotonic() + 5  # the probe polls every 200 ms; allow for a busy machine
        while time.monotonic() < deadline:
            if model_now() == model:
                return True
            time.sleep(0.1)
        return False

    assert model_now() == "edge-probed"
    # The llama.cpp server says it is busy with traffic from elsewhere: 1 running, 4 deferred.
    httpx.post(mock.base + "/_load", json={"processing": 1, "deferred": 4})
    assert settles_on("cloud-x")
    httpx.post(mock.base + "/_load", json={"processing": 0, "deferred": 0})
    assert settles_on("edge-probed")
