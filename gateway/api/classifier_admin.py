"""Hot promotion and rollback of the classifier (admin): POST /admin/classifier/promote and /rollback.

Promote body: ``{"model": "<folder written by gateway learn, or an ONNX model>", "holdout": "store" | "<F.jsonl
path on this host>", "force": false}``. The candidate is compared with the running classifier on pairwise
outcomes held back from its training (``store``: the gateway's stored outcomes whose prompts are not in the
candidate's ``trained_on.sha256``). It replaces the running one only if ``promote.decide`` says so under the
policy's ``feedback.promote_margin`` (or with ``force``); otherwise it is kept aside with its report. The swap
is hot (requests being scored finish on the old model), audited, counted in metrics and shown in
/admin/status. With Redis, the running model (its path, which every replica must be able to read) is published
in the Store and every worker and replica follows it within FOLLOW_S seconds (one started later too, after
loading GATEWAY_CLASSIFIER_MODEL or the shipped model).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.validate import parse_json
from gateway.errors import ApiError
from gateway.observability import metrics
from gateway.observability.logs import audit

HISTORY = 10
ACTIVE_KEY = "classifier-active"
FOLLOW_S = 2.0
_FOREVER_S = 10 * 365 * 86400.0
log = logging.getLogger("gateway")


class ClassifierSlot:
    """The running classifier of one kind, the one it replaced, and the last promotion attempts."""

    def __init__(self, scoring: dict, make: Callable[[Any], Any], kind: str = "onnx") -> None:
        self._scoring = scoring
        self._make = make  # scorer -> the ScoringKind the router uses
        self.kind = kind
        self.previous: Any = None
        self.history: list[dict] = []

    @property
    def running(self) -> Any:
        return self._scoring[self.kind].scorer

    def swap(self, scorer: Any) -> None:
        self.previous = self.running
        self._scoring[self.kind] = self._make(scorer)

    def record(self, entry: dict) -> None:
        self.history = [*self.history[-(HISTORY - 1):], entry]

    async def publish(self, store: Any) -> None:
        """Tell the other workers and replicas which model runs now (they load it from the same path)."""
        running = self.running
        await store.cache_set(ACTIVE_KEY, orjson.dumps({"path": str(getattr(running, "path", "")),
                                                         "version": running.version}), _FOREVER_S)

    async def follow(self, store: Any, interval: float = FOLLOW_S) -> None:
        """Swap to the model another worker published; a model that does not load is logged once."""
        from gateway.classify import ClassifierLoadError, load_scorer

        failed: set[str] = set()
        while True:
            await asyncio.sleep(interval)
            raw = await store.cache_get(ACTIVE_KEY)
            if not raw:
                continue
            try:
                info = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            version, path = info.get("version"), info.get("path")
            if version == self.running.version or version in failed or not path:
                continue
            try:
                scorer = await asyncio.to_thread(load_scorer, "onnx", path)
            except ClassifierLoadError as exc:
                failed.add(version)
                log.warning("cannot follow the published classifier %s: %s", version, exc)
                continue
            if scorer.version != version:
                failed.add(version)
                log.warning("published classifier %s is %s at %s: not followed", version, scorer.version, path)
                continue
            previous = self.running.version
            self.swap(scorer)
            audit("classifier_followed", running=version, previous=previous)

    def status(self) -> dict:
        return {"kind": self.kind, "version": getattr(self.running, "version", None),
                "path": str(getattr(self.running, "path", "")) or None,
                "previous": getattr(self.previous, "version", None) if self.previous is not None else None,
                "last_promotion": self.history[-1] if self.history else None}


def _json(data: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


def classifier_endpoints(runtime, slot: ClassifierSlot) -> dict:
    async def promote(request: Request) -> Response:
        from gateway.classify import ClassifierLoadError, load_scorer
        from gateway.classify.learn import LearnError, read_feedback
        from gateway.classify.promote import (
            PromotionError,
            compare,
            decide,
            holdout_from_feedback,
            trained_digests,
        )
        from gateway.observability.outcomes import to_feedback

        body = parse_json(await request.body())
        path, holdout, force = body.get("model"), body.get("holdout", "store"), body.get("force", False)
        if not isinstance(path, str) or not path:
            raise ApiError(400, '"model" is required: the folder written by `gateway learn`.', param="model",
                           code="missing_required_parameter")
        if not isinstance(holdout, str) or not isinstance(force, bool):
            raise ApiError(400, '"holdout" must be "store" or a file path; "force" a boolean.', param="holdout",
                           code="invalid_value")
        try:
            candidate = await asyncio.to_thread(load_scorer, "onnx", path)
        except ClassifierLoadError as exc:
            raise ApiError(400, f"The candidate classifier did not load: {exc}", param="model",
                           code="invalid_model") from None
        policy = runtime.policies.current
        exclude = trained_digests(path)
        try:
            if holdout == "store":
                lines, _ = to_feedback(runtime.outcomes.read(policy.feedback.retention_days))
            else:
                prompts, edge, cloud = read_feedback(holdout)
                lines = [{"prompt": p, "edge_quality": e, "cloud_quality": c} for p, e, c in zip(prompts, edge, cloud)]
            prompts, edge, cloud = holdout_from_feedback(lines, exclude)
            result = await asyncio.to_thread(compare, slot.running, candidate, prompts, edge, cloud)
        except (PromotionError, LearnError) as exc:
            raise ApiError(409, f"Cannot compare the candidate: {exc}", code="no_holdout") from None
        ok, reason = decide(result, policy.feedback.promote_margin)
        promoted = ok or force
        entry = {"at": time.time(), "candidate": candidate.version, "running": slot.running.version,
                 "model": path, "holdout": holdout, "held_out": len(exclude), **result,
                 "margin": policy.feedback.promote_margin, "promoted": promoted,
                 "reason": reason + (" (forced)" if force and not ok else "")}
        if promoted:
            slot.swap(candidate)
            await slot.publish(runtime.store)
        slot.record(entry)
        metrics.CLASSIFIER_PROMOTIONS.labels("promoted" if promoted else "kept_aside").inc()
        audit("classifier_promotion", **{k: v for k, v in entry.items() if k != "at"})
        return _json(entry)

    async def rollback(request: Request) -> Response:
        if slot.previous is None:
            raise ApiError(409, "No previous classifier to roll back to.", code="nothing_to_roll_back")
        current = slot.running
        slot.swap(slot.previous)
        await slot.publish(runtime.store)
        entry = {"at": time.time(), "rollback": True, "running": slot.running.version, "from": current.version}
        slot.record(entry)
        metrics.CLASSIFIER_PROMOTIONS.labels("rolled_back").inc()
        audit("classifier_rollback", running=slot.running.version, previous=current.version)
        return _json(entry)

    return {"promote": promote, "rollback": rollback}
