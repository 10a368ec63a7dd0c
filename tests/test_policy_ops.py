"""Operators' side of policies: hot reload under load, admin endpoints, explain, diff."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import ROOT, Gateway

BASE = """version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  cloud-a: {{tier: cloud, litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length, threshold: 0.5}}
routes:
  - name: private
    when: {{pii: true}}
    targets: [edge-a]
    edge_only: true
  - name: code
    when: {{model: auto, last_user: "(?i)\\\\bdef |\\\\bclass "}}
    targets: [cloud-a]
  - name: auto
    when: {{model: auto}}
    simple: [edge-a, cloud-a]
    complex: [cloud-a, edge-a]
degrade: {{reply: "busy {n}"}}
"""

INVALID = [
    "version: 1\nmodels: {\n  broken\n",                                   # YAML syntax
    "version: 1\nmodels:\n  e: {tier: edge, litellm: {model: openai/e, api_base: 'http://h/v1'}}\n"
    "routes:\n  - {name: r, targets: [missing]}\n",                       # unknown model
    "version: 1\nmodels:\n  e: {tier: edge, litellm: {model: openai/e, api_base: 'http://h/v1'}}\n"
    "routes:\n  - {name: r, when: {last_user: '(['}, targets: [e]}\n",   # bad regex
    "version: 1\nmodels:\n  c: {tier: cloud, litellm: {model: openai/gpt-4o, api_key: env:NO_SUCH_SECRET_X}}\n",
]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(BASE.format(url=upstream.url, n=0), tmp_module)
    yield gateway
    gateway.stop()


def test_reload_under_load_never_fails_a_request(gw, mock, tmp_path):
    path = gw.policy_path
    valid_since: list[tuple[float, str]] = [(0.0, digest(path.read_text()))]
    failures, versions = [], []
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                r = http.post(gw.base + "/v1/chat/completions",
                              json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
                if r.status_code != 200 or r.headers.get("x-gateway-degraded"):
                    failures.append((r.status_code, r.text[:200]))
                versions.append((time.monotonic(), r.headers["x-gateway-policy-version"][:12]))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 201):
            valid = i % 3 != 0
            text = BASE.format(url=mock.url, n=i) if valid else INVALID[i % len(INVALID)]
            method = ("rewrite", "rename", "symlink")[i % 3]
            if valid:
                valid_since.append((time.monotonic(), digest(text)))
            if method == "rewrite":
                if path.is_symlink():
                    path.unlink()
                path.write_text(text)
            elif method == "rename":
                tmp = path.with_name(f".tmp-{i}")
                tmp.write_text(text)
                os.replace(tmp, path)
            else:  # Kubernetes ConfigMap style: a new file, then the link swapped atomically
                target = tmp_path / f"v{i}" / "policy.yaml"
                target.parent.mkdir()
                target.write_text(text)
                link = path.with_name(f".link-{i}")
                link.symlink_to(target)
                os.replace(link, path)
            time.sleep(0.03 if i % 10 else 0.6)  # let some edits land one by one, others pile up
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert len(versions) > 100
    for at, version in versions:
        allowed = {h for t, h in valid_since if t <= at}
        assert version in allowed, f"response carried {version}, which was not a valid policy at that time"
    # The last valid edit is what serves now.
    last_valid = BASE.format(url=mock.url, n=max(i for i in range(1, 201) if i % 3 != 0))
    current = httpx.get(gw.base + "/admin/policy", headers=gw.admin()).json()
    assert current["version"].startswith(digest(last_valid))


def test_bad_edit_is_reported_with_file_line_and_old_policy_keeps_serving(gw, mock):
    before = httpx.get(gw.base + "/admin/policy", headers=gw.admin()).json()["version"]
    gw.policy_path.write_text(INVALID[1])
    deadline = time.monotonic() + 5
    state = {}
    while time.monotonic() < deadline:
        state = httpx.get(gw.base + "/admin/policy", headers=gw.admin()).json()
        if state["last_error"] and not state["last_reload"]["ok"]:
            break
        time.sleep(0.1)
    assert state["version"] == before
    assert state["last_error"]["errors"] == [f"{gw.policy_path}:5: routes[0] (r).targets: unknown model 'missing'"]
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["x-gateway-policy-version"] == before
    assert 'gateway_policy_reloads_total{result="rejected"}' in httpx.get(gw.base + "/metrics").text
    gw.write_policy(BASE.format(url=mock.url, n=999))


def test_admin_reload_and_sighup(gw, mock):
    gw.write_policy(BASE.format(url=mock.url, n=1000))
    r = httpx.post(gw.base + "/admin/reload", headers=gw.admin())
    assert r.status_code == 200 and r.json()["ok"]
    assert r.json()["version"].startswith(digest(BASE.format(url=mock.url, n=1000)))
    gw.write_policy(BASE.format(url=mock.url, n=1001))
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        version = httpx.get(gw.base + "/admin/policy", headers=gw.admin()).json()["version"]
        if version.startswith(digest(BASE.format(url=mock.url, n=1001))):
            break
        time.sleep(0.05)
    else:
        pytest.fail("SIGHUP did not reload the policy")


def test_admin_endpoints_need_the_key(gw):
    for method, path in (("GET", "/admin/policy"), ("POST", "/admin/reload"), ("POST", "/admin/explain"),
                         ("GET", "/admin/usage"), ("GET", "/admin/status")):
        r = httpx.request(method, gw.base + path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key"
        r = httpx.request(method, gw.base + path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401


def test_explain_endpoint_calls_no_upstream(gw, mock):
    r = httpx.post(gw.base + "/admin/explain", headers=gw.admin(), json={
        "model": "auto", "messages": [{"role": "user", "content": "Mail me at jane.doe@example.com"}]})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["route"] == "private" and d["edge_only"] is True
    assert d["signals"]["pii"] == ["email"]
    assert [c["model"] for c in d["chain"]] == ["edge-a"]
    assert any("pii" in reason for reason in d["reasons"])
    r = httpx.post(gw.base + "/admin/explain", headers=gw.admin(), json={
        "model": "auto", "messages": [{"role": "user", "content": "def f(x): return x  # why slow?"}]})
    assert r.json()["route"] == "code"
    assert mock.requests() == []


def test_pii_request_stays_on_edge_even_when_edge_fails(gw, mock):
    gw.write_policy(BASE.format(url=mock.url, n=2000))
    httpx.post(gw.base + "/admin/reload", headers=gw.admin())
    mock.script("edge-a", [], default={"status": 500})
    r = httpx.post(gw.base + "/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "My card is 4111 1111 1111 1111"}]})
    assert r.status_code == 200 and r.headers["x-gateway-degraded"] == "true"
    assert r.headers["x-gateway-route"] == "private"
    assert mock.requests("cloud-a") == []
    assert len(mock.requests("edge-a")) >= 1


def test_cli_explain_and_diff(tmp_path, upstream):
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text(BASE.format(url=upstream.url, n=1))
    new.write_text(BASE.format(url=upstream.url, n=1).replace("threshold: 0.5", "threshold: 0.01"))
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}))
    run = subprocess.run([sys.executable, "-m", "gateway", "policy", "explain", "--policy", str(old),
                          "--request", str(request)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    d = json.loads(run.stdout)
    assert d["route"] == "auto" and d["complexity"] == "simple" and d["chain"][0]["model"] == "edge-a"
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(json.dumps({"model": "auto", "messages": [{"role": "user", "content": c}]})
                                for c in ["hi", "hello there", "def f(): pass", "a" * 300]))
    run = subprocess.run([sys.executable, "-m", "gateway", "policy", "diff", str(old), str(new), "--requests",
                          str(sample)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "4 requests replayed" in run.stdout
    assert "tier   changes for 2 (50.0%)" in run.stdout
    assert "edge -> cloud: 2" in run.stdout


def _reload_lines(gateway: Gateway) -> list[dict]:
    lines = []
    for line in gateway.log_path.read_text(errors="replace").splitlines():
        if '"policy_reload"' in line:
            lines.append(json.loads(line))
    return lines


def _wait_version(gateway: Gateway, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(gateway.base + "/admin/policy", headers=gateway.admin()).json()["version"].startswith(digest(text)):
            return
        time.sleep(0.05)
    pytest.fail("the policy edit was not reloaded")


def test_reload_only_when_the_policy_content_changes(upstream, tmp_path):
    """Files coming and going beside the policy, a touch, or a rewrite with the same bytes reload nothing;
    a real edit reloads once, also through a ConfigMap-style symlink swap."""
    folder = tmp_path / "conf"
    folder.mkdir()
    gateway = Gateway(BASE.format(url=upstream.url, n=1), folder)
    try:
        time.sleep(0.6)
        assert _reload_lines(gateway) == []
        for i in range(5):
            (folder / f"other-{i}.txt").write_text("x")
            time.sleep(0.1)
        for i in range(5):
            (folder / f"other-{i}.txt").unlink()
        (folder / ".swp").write_text("editor")
        os.replace(folder / ".swp", folder / "notes.txt")
        os.utime(gateway.policy_path)
        gateway.policy_path.write_text(gateway.policy_path.read_text())  # same bytes again
        time.sleep(1.5)  # several polls and debounces
        assert _reload_lines(gateway) == []

        edit = BASE.format(url=upstream.url, n=2)
        gateway.write_policy(edit)
        _wait_version(gateway, edit)
        time.sleep(1.0)
        assert [(r["ok"], r["trigger"]) for r in _reload_lines(gateway)] == [(True, "file change")]

        # Kubernetes ConfigMap: the policy path is a symlink into a data folder that is swapped atomically.
        swapped = BASE.format(url=upstream.url, n=3)
        for name, text in (("v1", edit), ("v2", swapped)):
            (tmp_path / name).mkdir()
            (tmp_path / name / "policy.yaml").write_text(text)
        link = folder / ".tmp-link"
        link.symlink_to(tmp_path / "v1" / "policy.yaml")  # same content as now: no reload
        os.replace(link, gateway.policy_path)
        time.sleep(1.0)
        assert len(_reload_lines(gateway)) == 1
        link.symlink_to(tmp_path / "v2" / "policy.yaml")
        os.replace(link, gateway.policy_path)
        _wait_version(gateway, swapped)
        time.sleep(1.0)
        assert len(_reload_lines(gateway)) == 2
    finally:
        gateway.stop()


def _documents(text: str) -> list[dict]:
    decoder, docs, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        doc, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        docs.append(doc)
        at = end
    return docs


def test_one_traffic_reader_for_diff_explain_and_calibrate(tmp_path, upstream):
    """`{"prompt": ...}` lines and chat request bodies are the same sample to every command that reads one."""
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text(BASE.format(url=upstream.url, n=1))
    new.write_text(BASE.format(url=upstream.url, n=1).replace("threshold: 0.5", "threshold: 0.01"))
    prompts = ["hi", "hello there", "def f(): pass", "a" * 300, "Prove that there are infinitely many primes."]
    as_prompts = tmp_path / "prompts.jsonl"
    as_prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    as_bodies = tmp_path / "bodies.jsonl"
    as_bodies.write_text("".join(json.dumps({"model": "auto", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": p}]}) + "\n" for p in prompts))

    def gateway(*args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT,
                             timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stdout

    diffs = [gateway("policy", "diff", str(old), str(new), "--requests", str(path))
             for path in (as_prompts, as_bodies)]
    assert "5 requests replayed" in diffs[0]
    assert "tier   changes for" in diffs[0]
    assert diffs[0] == diffs[1]
    thresholds = [gateway("classify", "--calibrate", str(path), "--cloud-share", "0.4")
                  for path in (as_prompts, as_bodies)]
    assert float(thresholds[0]) == float(thresholds[1])
    explained = [_documents(gateway("policy", "explain", "--policy", str(old), "--request", str(path)))
                 for path in (as_prompts, as_bodies)]
    assert [d["route"] for d in explained[0]] == [d["route"] for d in explained[1]]
    assert [d["route"] for d in explained[0]] == ["auto", "auto", "code", "auto", "auto"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"messages": "hi"}\n')
    run = subprocess.run([sys.executable, "-m", "gateway", "policy", "diff", str(old), str(new), "--requests",
                          str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and "line 2" in run.stderr
