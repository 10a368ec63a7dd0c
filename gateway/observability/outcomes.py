"""Outcomes: what clients said about answers (POST /v1/feedback), kept to learn the operator's model pair.

Two records:

- the *request record*, written when an answer was sent: route, tier, model, classifier score and
  version, policy version, the caller's key name and, only where the policy's ``feedback.store_prompts``
  is on, the text the classifier scored. It lives in the Store's cache (shared through Redis when
  configured) for ``feedback.window_s``, so feedback can reach any replica.
- the *outcome*, written when feedback arrives: the request record plus the score in [0, 1]; or, for a
  shadow comparison (``gateway.execution.shadow``), both tiers' qualities as the judge saw them. Outcomes are
  appended to a JSONL file (``GATEWAY_OUTCOMES_PATH``) or, without one, kept in memory; either way at most
  ``feedback.max_records`` of them, none older than ``feedback.retention_days``.

``to_feedback`` turns outcomes into the pairwise lines ``gateway learn`` reads (see its docstring).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson

_REQ_PREFIX = "outcome-req:"
_COMPACT_EVERY_S = 3600.0


class OutcomeLog:
    """Request records (in the Store) and outcomes (a JSONL file, or memory), with retention."""

    def __init__(self, store: Any, path: str = "", clock=time.time) -> None:
        self.store = store
        self.path = path
        self._clock = clock
        self._memory: deque[dict] = deque()
        self._appended = 0
        self._last_compact = clock()

    # request records

    async def remember(self, request_id: str, record: dict, window_s: float) -> None:
        await self.store.cache_set(_REQ_PREFIX + request_id, orjson.dumps(record), window_s)

    async def lookup(self, request_id: str) -> dict | None:
        raw = await self.store.cache_get(_REQ_PREFIX + request_id)
        return orjson.loads(raw) if raw else None

    async def remember_raw(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.store.cache_set(_REQ_PREFIX + key, value, ttl_s)

    async def lookup_raw(self, key: str) -> bytes | None:
        return await self.store.cache_get(_REQ_PREFIX + key)

    # outcomes

    def append(self, outcome: dict, retention_days: float, max_records: int) -> None:
        if not self.path:
            self._memory.append(outcome)
            while len(self._memory) > max_records:
                self._memory.popleft()
            return
        line = orjson.dumps(outcome) + b"\n"
        for _ in range(5):
            with open(self.path, "ab") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                if os.fstat(fh.fileno()).st_ino != os.stat(self.path).st_ino:
                    continue  # compacted (replaced) while we waited for the lock: open the new file
                fh.write(line)
                break
        self._appended += 1
        now = self._clock()
        if self._appended > max_records // 10 or now - self._last_compact > _COMPACT_EVERY_S:
            self.compact(retention_days, max_records)

    def compact(self, retention_days: float, max_records: int) -> None:
        """Drop outcomes older than the retention and all but the newest `max_records` (file rewritten)."""
        self._appended, self._last_compact = 0, self._clock()
        if not self.path:
            return
        cutoff = self._clock() - retention_days * 86400.0
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            kept = [line for line in fh.read().splitlines() if line.strip() and _at(line) >= cutoff]
            kept = kept[-max_records:]
            tmp = f"{self.path}.tmp{os.getpid()}"
            with open(tmp, "wb") as out:
                out.write(b"".join(line + b"\n" for line in kept))
            os.replace(tmp, self.path)

    def read(self, retention_days: float | None = None) -> list[dict]:
        cutoff = self._clock() - retention_days * 86400.0 if retention_days is not None else float("-inf")
        if not self.path:
            return [o for o in self._memory if o.get("at", 0) >= cutoff]
        if not os.path.exists(self.path):
            return []
        return [o for o in read_outcomes(self.path) if o.get("at", 0) >= cutoff]


def _at(line: bytes) -> float:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return float(orjson.loads(line).get("at", 0))
    return 0.0


def read_outcomes(path: str) -> list[dict]:
    """Outcome records of a JSONL file; unreadable lines are skipped (a torn last line after a crash)."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                with contextlib.suppress(ValueError):
                    obj = orjson.loads(line)
                    if isinstance(obj, dict):
                        out.append(obj)
    return out


def to_feedback(outcomes: Iterable[dict]) -> tuple[list[dict], dict]:
    """Pairwise feedback lines {prompt, edge_quality, cloud_quality} from single-answer outcomes.

    An outcome rates one answer, from one tier, with a `score`; a shadow comparison (``kind: shadow``) rates
    both, with `edge_quality` and `cloud_quality`. Outcomes are grouped by prompt (the latest per request id,
    ratings and shadow comparisons apart); a prompt rated on both tiers gets each tier's mean score; a prompt
    rated on one tier only gets, for the other, that tier's mean score over all outcomes (the best guess of
    its quality without a comparison). Outcomes without a stored prompt (the policy did not allow it) are
    counted and skipped.
    """
    latest: dict[tuple[str, bool], dict] = {}
    for o in outcomes:
        latest[(str(o.get("request_id")), o.get("kind") == "shadow")] = o
    by_prompt: dict[str, dict[str, list[float]]] = {}
    tier_scores: dict[str, list[float]] = {"edge": [], "cloud": []}
    skipped = {"no_prompt": 0, "no_tier": 0}
    for o in latest.values():
        pair = _pair(o)
        if pair is not None:
            scores = {"edge": pair[0], "cloud": pair[1]}
        else:
            tier, score = o.get("tier"), o.get("score")
            if tier not in tier_scores or not isinstance(score, (int, float)) or not _number(score):
                skipped["no_tier"] += 1
                continue
            scores = {str(tier): float(score)}
        for tier, score in scores.items():
            tier_scores[tier].append(score)
        prompt = o.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            skipped["no_prompt"] += 1
            continue
        rated = by_prompt.setdefault(prompt, {"edge": [], "cloud": []})
        for tier, score in scores.items():
            rated[tier].append(score)
    means = {t: (sum(v) / len(v) if v else 0.5) for t, v in tier_scores.items()}
    lines = []
    for prompt, sc in by_prompt.items():
        edge = sum(sc["edge"]) / len(sc["edge"]) if sc["edge"] else means["edge"]
        cloud = sum(sc["cloud"]) / len(sc["cloud"]) if sc["cloud"] else means["cloud"]
        lines.append({"prompt": prompt, "edge_quality": round(edge, 6), "cloud_quality": round(cloud, 6),
                      "rated": sorted(t for t in sc if sc[t])})
    return lines, {"outcomes": len(latest), "prompts": len(lines), "skipped": skipped,
                   "tier_means": means}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0


def _pair(outcome: dict) -> tuple[float, float] | None:
    """(edge, cloud) quality of an outcome that rates both tiers (a shadow comparison), else None."""
    edge, cloud = outcome.get("edge_quality"), outcome.get("cloud_quality")
    if isinstance(edge, (int, float)) and isinstance(cloud, (int, float)) and _number(edge) and _number(cloud):
        return float(edge), float(cloud)
    return None
