"""Shared fixtures: the mock upstream and the gateway as real processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "test-admin-key"

_ONE_MODEL_POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{url}", api_key: test}}
classifier: {{kind: length}}
routes:
  - name: auto
    when: {{model: auto}}
    targets: [edge-a]
retry: {{attempts: 1}}
"""


def one_model_policy(url: str) -> str:
    """The smallest useful policy: `auto` goes to one edge model at `url`, no retries."""
    return _ONE_MODEL_POLICY.format(url=url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dead_port():
    """A port that refuses connections for the whole session: bound, never listening, so no server
    started later by the suite can take it (a merely free port can be reused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode} before answering {url}:\n{out[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class MockUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        # Its output goes to a file: a pipe nobody reads fills up (aiohttp logs every reset connection), and
        # the mock then blocks on its next log line and stops answering.
        self._log = tempfile.NamedTemporaryFile(prefix=f"mock-upstream-{self.port}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_upstream.py"), "--port",
                                      str(self.port)], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            _wait_http(self.base + "/v1/models", self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{Path(self._log.name).read_text(errors='replace')[-3000:]}") from None

    def script(self, model: str = "*", actions: list | None = None, default: dict | None | str = "keep") -> None:
        spec = {"model": model, "actions": actions or []}
        if default != "keep":
            spec["default"] = default
        httpx.post(self.base + "/_script", json=spec, timeout=5).raise_for_status()

    def requests(self, model: str | None = None) -> list[dict]:
        items = httpx.get(self.base + "/_requests", timeout=5).json()
        return [r for r in items if model is None or r["model"] == model]

    def reset(self) -> None:
        httpx.post(self.base + "/_reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


class Gateway:
    """`gateway serve` in its own process, on a policy written by the test."""

    def __init__(self, policy: str, tmp: Path, env: dict | None = None, extra_args: list | None = None,
                 port: int | None = None, wait: bool = True) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.policy_path = tmp / f"policy-{self.port}.yaml"
        self.policy_path.write_text(textwrap.dedent(policy))
        full_env = {**os.environ, "GATEWAY_ADMIN_KEY": ADMIN_KEY, "GATEWAY_LOG_REQUESTS": "false",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log_path = tmp / f"gateway-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--policy", str(self.policy_path), "--port", str(self.port),
             *(extra_args or [])], cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            try:
                _wait_http(self.base + "/healthz", self.proc, timeout=60)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def write_policy(self, text: str) -> None:
        self.policy_path.write_text(textwrap.dedent(text))

    def admin(self) -> dict:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()


@pytest.fixture(scope="session")
def upstream():
    mock = MockUpstream()
    yield mock
    mock.stop()


@pytest.fixture
def mock(upstream):
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory):
    return tmp_path_factory.mktemp("gw")
