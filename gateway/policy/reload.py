"""Hot reload: watch the policy file and its directory, debounce, validate fully, swap atomically.

A bad edit never replaces the running policy: the error (file:line) is kept for the admin endpoint, logged
and counted. Requests hold the `Policy` object they started with, so a swap never changes one in flight.
The watcher polls `stat()` of the resolved path and the directory, which sees in-place rewrites, editors'
write-temp-and-rename, and Kubernetes ConfigMap symlink swaps alike; it then reloads only when the bytes
of the policy file differ from the last ones it loaded, so other files coming and going in the folder, or
a touch, reload nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field

from gateway.policy.compile import PolicyInvalid, load_policy
from gateway.policy.schema import Policy

log = logging.getLogger("gateway.policy")


@dataclass
class ReloadResult:
    ok: bool
    at: float
    version: str | None = None
    errors: list[str] = field(default_factory=list)
    trigger: str = ""


class PolicyHolder:
    def __init__(self, path: str, env: dict | None = None, on_result=None) -> None:
        self.path = path
        self._env = env
        self.current: Policy = load_policy(path, env)   # the first load must succeed, or we do not start
        self.last_result = ReloadResult(True, time.time(), self.current.version, trigger="start")
        self.last_error: ReloadResult | None = None
        self._on_result = on_result
        self._signature = self._stat()
        self._content = self._digest()   # of the bytes last loaded (or rejected)
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def _stat(self):
        """What changes when the file's content is replaced in any of the usual ways."""
        try:
            real = os.path.realpath(self.path)
            st = os.stat(real)
            directory = os.stat(os.path.dirname(os.path.abspath(self.path)) or ".")
            return (real, st.st_ino, st.st_mtime_ns, st.st_size, directory.st_mtime_ns)
        except OSError:
            return None

    def _digest(self) -> str | None:
        """SHA-256 of the policy file's bytes (the policy format has no includes: one file is all of it)."""
        try:
            with open(self.path, "rb") as fh:
                return hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return None

    async def reload(self, trigger: str = "manual") -> ReloadResult:
        async with self._lock:
            self._content = self._digest()
            try:
                policy = await asyncio.to_thread(load_policy, self.path, self._env)
            except PolicyInvalid as exc:
                result = ReloadResult(False, time.time(), self.current.version, [str(e) for e in exc.errors], trigger)
                self.last_error = result
                log.error("policy reload rejected, still serving %s: %s", self.current.version,
                          "; ".join(result.errors))
            else:
                previous = self.current
                if policy.content_hash == previous.content_hash:
                    result = ReloadResult(True, time.time(), previous.version, trigger=trigger)
                else:
                    self.current = policy
                    result = ReloadResult(True, time.time(), policy.version, trigger=trigger)
                    log.info("policy reloaded: %s -> %s (%s)", previous.version, policy.version, trigger)
            self.last_result = result
            if self._on_result is not None:
                self._on_result(result, self)
            return result

    def start_watching(self, interval: float = 0.25, debounce: float = 0.15) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(interval, debounce))

    async def _watch(self, interval: float, debounce: float) -> None:
        while True:
            await asyncio.sleep(interval)
            signature = self._stat()
            if signature == self._signature:
                continue
            # Debounce: wait until the file stops changing (editors write in several steps).
            while True:
                await asyncio.sleep(debounce)
                again = self._stat()
                if again == signature:
                    break
                signature = again
            self._signature = signature
            if signature is None:
                continue  # the file is gone for now (mid-swap); keep serving and keep watching
            content = self._digest()
            if content is None or content == self._content:
                continue  # the folder or the file's times changed, not the policy
            try:
                await self.reload("file change")
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("policy watcher error")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
