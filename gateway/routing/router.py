"""Turn a request into a `Decision` and a `Plan` under one compiled policy. No upstream is called."""

from __future__ import annotations

import time
from typing import Callable, Protocol

from gateway.policy.compile import model_matches
from gateway.policy.schema import Policy, Route
from gateway.providers.base import EdgeLoad
from gateway.routing.matcher import evaluate
from gateway.routing.pii import PiiDetector, RegexPiiDetector
from gateway.routing.plan import Decision, Plan
from gateway.routing.request import ChatRequest
from gateway.routing.signals import Signals


class UnknownModel(Exception):
    """The client asked for a model the policy does not define (answered with a 404)."""


class NoRoute(Exception):
    """No route matched and the model is not a pinned alias (answered with a 400)."""


LoadFn = Callable[[str], "EdgeLoad | None"]


class Scoring(Protocol):
    """The classifier as routing sees it, for one classifier kind of the policy."""

    default_threshold: float

    async def score(self, text: str) -> float: ...

    def threshold_for_share(self, cloud_share: float) -> float: ...


class Router:
    """Stateless per request, except the spill-over hysteresis per route (local to this process)."""

    def __init__(self, scoring: Callable[[str], Scoring], edge_load: LoadFn | None = None,
                 pii_detector: PiiDetector | None = None, clock=time.monotonic) -> None:
        self._scoring = scoring  # classifier kind -> Scoring
        self._edge_load = edge_load or (lambda name: None)
        self.pii_detector = pii_detector or RegexPiiDetector()
        self._spilled_until: dict[str, float] = {}
        self._clock = clock

    def known_model(self, policy: Policy, model: str) -> bool:
        if model == "auto" or model in policy.models or model in policy.virtual_models:
            return True
        return any(r.when.models and model_matches(r.when.models, model) for r in policy.routes)

    def threshold(self, policy: Policy, route: Route | None) -> float:
        if route is not None and route.threshold is not None:
            return route.threshold
        spec = policy.classifier
        if spec.threshold is not None:
            return spec.threshold
        scoring = self._scoring(spec.kind)
        if spec.cloud_share is not None:
            return scoring.threshold_for_share(spec.cloud_share)
        return scoring.default_threshold

    async def decide(self, policy: Policy, request: ChatRequest) -> tuple[Decision, Plan, Signals]:
        if not self.known_model(policy, request.model):
            raise UnknownModel(request.model)
        signals = Signals(request, self.pii_detector)
        if policy.uses_score_in_match:
            await self._ensure_score(policy, signals)
        reasons: list[str] = []
        route = None
        for candidate in policy.routes:
            why: list[str] = []
            if evaluate(candidate.when, signals, why):
                route = candidate
                reasons = why or ["matches every request"]
                break
        if route is None:
            if request.model not in policy.models:
                raise NoRoute(request.model)
            return self._pinned(policy, request.model, signals)

        complexity = None
        chain = route.simple
        if route.split:
            score = await self._ensure_score(policy, signals)
            threshold = self.threshold(policy, route)
            complexity = "complex" if score >= threshold else "simple"
            chain = route.complex if complexity == "complex" else route.simple
            reasons.append(f"score {score:.3f} {'>=' if complexity == 'complex' else '<'} threshold {threshold:.3f}")
        chain, spill_reason = self._maybe_spill(policy, route, chain)
        if spill_reason:
            reasons.append(spill_reason)
        return self._build(policy, route, chain, complexity, reasons, signals)

    async def _ensure_score(self, policy: Policy, signals: Signals) -> float:
        if signals.score is None:
            spec = policy.classifier
            signals.score = await self._scoring(spec.kind).score(signals.classifier_text(spec.input, spec.max_chars))
        return signals.score

    def _maybe_spill(self, policy: Policy, route: Route, chain: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
        spill = route.spillover
        if spill is None or not chain or policy.models[chain[0]].tier != "edge":
            return chain, ""
        now = self._clock()
        load = self._edge_load(chain[0])
        saturated = load is not None and (
            (spill.queue_depth is not None and load.queue_depth >= spill.queue_depth)
            or (spill.expected_wait is not None and load.expected_wait_s >= spill.expected_wait)
        )
        if saturated:
            self._spilled_until[route.name] = now + spill.hold
        elif self._spilled_until.get(route.name, 0.0) <= now:
            return chain, ""
        # Hysteresis: once tripped, stay spilled for `hold` after the last saturated reading.
        rest = tuple(m for m in chain if m not in spill.to)
        depth = load.queue_depth if load else "?"
        return spill.to + rest, f"spilled over: edge queue {depth}"

    def _pinned(self, policy: Policy, alias: str, signals: Signals) -> tuple[Decision, Plan, Signals]:
        model = policy.models[alias]
        route = Route(
            name=f"model:{alias}", when=None,  # type: ignore[arg-type]  # never matched: chosen by name
            simple=(alias, *model.fallbacks), complex=(), split=False,
            threshold=None, edge_only=False, retry=policy.retry, degrade=policy.degrade, cache=None,
            spillover=None, deadline=policy.deadline,
        )
        return self._build(policy, route, route.simple, None, [f"model {alias!r} pinned"], signals)

    def _build(self, policy: Policy, route: Route, chain, complexity, reasons, signals):
        targets, skipped, seen = [], [], set()
        for name in chain:
            if name in seen:
                continue
            seen.add(name)
            model = policy.models[name]
            if not model.available:
                skipped.append((name, model.unavailable_reason))
            elif route.edge_only and model.tier != "edge":
                skipped.append((name, "edge_only"))  # policy check forbids this; kept as a second guard
            else:
                targets.append(model)
        tier = targets[0].tier if targets else (policy.models[chain[0]].tier if chain else "edge")
        for name, why in skipped:
            reasons.append(f"skipped {name}: {why}")
        decision = Decision(
            route=route.name, tier=tier, score=signals.score,
            threshold=self.threshold(policy, route) if route.split else None,
            complexity=complexity, reasons=tuple(reasons), policy_version=policy.version,
            skipped=tuple(skipped),
        )
        reference = next((policy.models[n] for n in route.complex + route.simple
                          if policy.models[n].tier == "cloud"), None)
        plan = Plan(
            targets=tuple(targets), skipped=tuple(skipped), edge_only=route.edge_only, retry=route.retry,
            degrade=route.degrade, deadline=route.deadline, cache=route.cache, route=route.name,
            reference=reference,
        )
        return decision, plan, signals
