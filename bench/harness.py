"""The benchmark harness's moving parts: build and run the C load generator, start pinned and niced
processes, read their CPU time and RSS, wait until a server answers, stop what was started.

Standard library only, so the runners work from any Python 3.10+; the servers they start run with the
project's Python (locate.find_python)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from locate import BENCH, bench_tmp

LOADGEN_SRC = os.path.join(BENCH, "loadgen.c")
CHAT_BODY = {"model": "mock", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
MARKERS = {"json": "chat.completion", "stream": "[DONE]"}


def build_loadgen(out_dir: str | None = None) -> str:
    """$LOADGEN if set, else bench/loadgen.c compiled with `cc -O2` into a temp dir (one binary per source
    version, reused while the source is unchanged)."""
    if os.environ.get("LOADGEN"):
        return os.environ["LOADGEN"]
    with open(LOADGEN_SRC, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out_dir = out_dir or os.path.join(bench_tmp(), "bin")
    binary = os.path.join(out_dir, f"loadgen-{digest}")
    if os.access(binary, os.X_OK):
        return binary
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc) to build bench/loadgen.c")
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{binary}.{os.getpid()}.tmp"
    subprocess.run([cc, "-O2", "-o", tmp, LOADGEN_SRC, "-lm"], check=True)
    os.replace(tmp, binary)
    return binary


def write_bodies(out_dir: str) -> dict[str, str]:
    """The request body files for both modes: {"json": path, "stream": path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for mode in ("json", "stream"):
        body = dict(CHAT_BODY, stream=True) if mode == "stream" else CHAT_BODY
        paths[mode] = os.path.join(out_dir, f"body_{mode}.json")
        with open(paths[mode], "w") as f:
            json.dump(body, f)
    return paths


def preexec(cpus: set[int] | None, nice: int) -> Callable[[], None]:
    """Run in the child: own session, pinned to `cpus`, niced (with its autogroup, which the scheduler
    weighs first; negative values need root and are skipped silently without it)."""
    def fn() -> None:
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
                with open("/proc/self/autogroup", "w") as f:
                    f.write(str(nice))
            except OSError:
                pass
    return fn


def run_loadgen(loadgen: str, url: str, body: str, marker: str, conc: int, duration: float, warmup: float,
                cpus: set[int] | None = None, nice: int = 0, requests: int = 0, timeout: float = 60,
                headers: list[str] | None = None) -> dict:
    """One load generator run; its JSON summary (see bench/loadgen.c)."""
    cmd = [loadgen, "-c", str(conc), "-d", str(duration), "-w", str(warmup), "-b", body, "-m", marker,
           "-t", str(timeout)]
    if requests:
        cmd += ["-n", str(requests)]
    for h in headers or []:
        cmd += ["-H", h]
    limit = warmup + (duration if duration > 0 else 3600) + 2 + timeout  # never outlive its caller's patience
    p = subprocess.run(cmd + [url], capture_output=True, text=True, preexec_fn=preexec(cpus, nice), timeout=limit)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pids(pid: int) -> list[int]:
    """pid and all its descendants (uvicorn's workers, a shell's children)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process tree."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / hz
        except (OSError, IndexError, ValueError):
            pass
    return total


def tree_rss_mb(pid: int) -> float:
    """VmRSS of the process tree in MB."""
    kb = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


def busy_cpu_s() -> float:
    """CPU seconds spent busy by the whole machine so far (from /proc/stat), to tell foreign load apart."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice_, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice_ + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def post(url: str, body: dict, headers: list[str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    hdrs = {"Content-Type": "application/json"}
    for h in headers or []:
        name, _, value = h.partition(":")
        hdrs[name.strip()] = value.strip()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=hdrs)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


@dataclass
class Server:
    """A started server process (own session, so stopping it stops its children)."""

    name: str
    proc: subprocess.Popen
    url: str
    log: str
    headers: list[str] = field(default_factory=list)
    rss_max_mb: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sample_rss(self) -> float:
        rss = tree_rss_mb(self.pid)
        self.rss_max_mb = max(self.rss_max_mb, rss)
        return rss

    def wait_ready(self, timeout: float = 120) -> None:
        """Until both a JSON and a streamed chat completion come back whole (status 200 + marker)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                s1, b1 = post(self.url, CHAT_BODY, self.headers)
                s2, b2 = post(self.url, dict(CHAT_BODY, stream=True), self.headers)
                if s1 == 200 and MARKERS["json"].encode() in b1 and s2 == 200 and MARKERS["stream"].encode() in b2:
                    return
                last = f"status {s1}/{s2}"
            except Exception as e:  # noqa: BLE001 - not up yet: connection refused, reset, 5xx
                last = e
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s ({last}); see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_server(name: str, cmd: list[str], url: str, log_dir: str, env: dict[str, str] | None = None,
                 cpus: set[int] | None = None, nice: int = 0, headers: list[str] | None = None,
                 cwd: str | None = None) -> Server:
    os.makedirs(log_dir, exist_ok=True)
    log = os.path.join(log_dir, f"{name}.log")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=dict(os.environ, **(env or {})), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=preexec(cpus, nice), cwd=cwd)
    return Server(name, proc, url, log, list(headers or []))
