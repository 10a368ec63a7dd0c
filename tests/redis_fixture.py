"""Start and stop a throwaway redis-server for tests (no persistence, free port).

    from redis_fixture import start_redis, stop_redis, redis_server   # or tests.redis_fixture

    proc, url = start_redis()          # or start_redis(port) to restart on the same port
    ...
    stop_redis(proc)

`redis_server` is a pytest fixture (import it into a test module to use it) yielding the URL; it skips
the test when redis-server is not on PATH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = "redis-server not on PATH (install it: apt-get install -y redis-server)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(port: int | None = None, timeout_s: float = 10.0) -> tuple[subprocess.Popen, str]:
    """Start redis-server on `port` (a free one when None); return (process, "redis://127.0.0.1:port/0")
    once it answers PING."""
    if REDIS_SERVER is None:
        raise RuntimeError(SKIP_REASON)
    port = port or free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while not _answers_ping(port):
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} (port {port} in use?)")
        if time.monotonic() > deadline:
            stop_redis(proc)
            raise RuntimeError(f"redis-server did not answer on port {port} within {timeout_s} s")
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def stop_redis(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """Stop a server from `start_redis` (SIGTERM, then SIGKILL) and wait for it to exit."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def kill_redis(proc: subprocess.Popen) -> None:
    """Kill a server abruptly (SIGKILL), as a crash would."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def redis_server():
    """URL of a fresh redis-server, stopped after the test."""
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    proc, url = start_redis()
    try:
        yield url
    finally:
        stop_redis(proc)
