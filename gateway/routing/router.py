"""Turn a request into a `Decision` and a `Plan` under one compiled policy. No upstream is called."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Protocol

import orjson

from gateway.policy.compile import model_matches
from gateway.policy.schema import Policy, Route
from gateway.providers.base import EdgeLoad
from gateway.routing.budget import SPENT, SPENT_NO_EDGE, SpendFn, edge_first, spent_budget
from gateway.routing.dial import ShareDial
from gateway.routing.matcher import evaluate
from gateway.routing.pii import PiiDetector, RegexPiiDetector
from gateway.routing.plan import Decision, Plan
from gateway.request import Request, message_text
from gateway.routing.signals import Signals


class UnknownModel(Exception):
    """The client asked for a model the policy does not define (answered with a 404)."""


class NoRoute(Exception):
    """No route matched and the model is not a pinned alias (answered with a 400)."""


class BadShareHeader(Exception):
    """`x-gateway-cloud-share` is not a number in [0, 1] (answered with a 400)."""


SHARE_HEADER = "x-gateway-cloud-share"


LoadFn = Callable[[str], "EdgeLoad | None"]
CONVERSATION_HEADER = "x-gateway-conversation"


def conversation_keys(request: Request) -> tuple[str, str | None]:
    """Store keys of a conversation: (this turn, the turn before it). With the client's
    `x-gateway-conversation` id both are that id. Otherwise this turn is the hash of its messages and the
    turn before is the hash of the messages up to the last assistant message: the request that assistant
    message answered. Scoped to the caller's API key and the model asked for."""
    given = request.headers.get(CONVERSATION_HEADER)
    if given:
        key = "conv:" + hashlib.sha256(orjson.dumps([request.key_name, request.model, "id", given])).hexdigest()
        return key, key
    turns: list[tuple] = []
    last: int | None = None
    for message in request.messages:
        role = message.get("role")
        if role == "assistant":
            last = len(turns)
        turns.append((role, message_text(message)))
    this_turn = "conv:" + hashlib.sha256(orjson.dumps([request.key_name, request.model, turns])).hexdigest()
    if last is None:
        return this_turn, None
    before = "conv:" + hashlib.sha256(orjson.dumps([request.key_name, request.model, turns[:last]])).hexdigest()
    return this_turn, before


class Scoring(Protocol):
    """The classifier as routing sees it, for one classifier kind of the policy."""

    default_threshold: float

    async def score(self, text: str) -> float: ...

    def threshold_for_share(self, cloud_share: float) -> float: ...


class Router:
    """Stateless per request, except the spill-over hysteresis per route (local to this process)."""

    def __init__(self, scoring: Callable[[str], Scoring], edge_load: LoadFn | None = None,
                 pii_detector: PiiDetector | None = None, clock=time.monotonic,
                 on_share: Callable[[str, float], None] | None = None, store=None,
                 spend: SpendFn | None = None, on_budget: Callable[[str, str], None] | None = None) -> None:
        self._scoring = scoring  # classifier kind -> Scoring
        self._store = store      # where conversations answered by the cloud tier are remembered
        self._edge_load = edge_load or (lambda name: None)
        self.pii_detector = pii_detector or RegexPiiDetector()
        self._spilled_until: dict[str, float] = {}
        self._clock = clock
        self.dial = ShareDial()  # holds `classifier.cloud_share` per route when `hold_window` is set
        self._dial_scores: str | None = None  # version of the classifier whose scores the dial's windows hold
        self._on_share = on_share or (lambda route, share: None)
        self._spend = spend          # today's cloud spend per "key=NAME" / "route=NAME" (daily budgets)
        self._on_budget = on_budget or (lambda scope, name: None)

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

    async def decide(self, policy: Policy, request: Request,
                     record: bool = True) -> tuple[Decision, Plan, Signals]:
        """`record=False` (explain): the decision does not count in the share dial's windows."""
        if not self.known_model(policy, request.model):
            raise UnknownModel(request.model)
        signals = Signals(request, self.pii_detector)
        if policy.uses_pii:
            await signals.prepare_pii()
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
            if request.model not in policy.models or policy.models[request.model].kind != "chat":
                raise NoRoute(request.model)
            return await self._pinned(policy, request, request.model, signals)

        complexity = None
        chain = route.simple
        threshold = None
        if route.split:
            score = await self._ensure_score(policy, signals)
            threshold = self.threshold(policy, route)
            spec = policy.classifier
            held = spec.hold_window > 0 and spec.cloud_share is not None and route.threshold is None
            if held:
                version = getattr(self._scoring(spec.kind), "version", None)
                if version != self._dial_scores:  # a promoted classifier scores on its own scale: start over
                    self.dial, self._dial_scores = ShareDial(), version
                threshold = self.dial.threshold(route.name, spec.cloud_share or 0.0, spec.hold_window, threshold)
            asked = request.headers.get(SHARE_HEADER)
            if asked is not None and route.threshold is None:
                threshold = self._asked_share(policy, route, asked, threshold, held, reasons)
            complexity = "complex" if score >= threshold else "simple"
            chain = route.complex if complexity == "complex" else route.simple
            reasons.append(f"score {score:.3f} {'>=' if complexity == 'complex' else '<'} threshold {threshold:.3f}"
                           + (f" (held at cloud share {spec.cloud_share:g})" if held else ""))
            if held and record:
                self._on_share(route.name, self.dial.observe(route.name, score, complexity == "complex",
                                                             spec.hold_window))
        chain, spill_reason = self._maybe_spill(policy, route, chain)
        if spill_reason:
            reasons.append(spill_reason)
        conversation, sticky_chain = await self._keep_tier(policy, request, chain, route.edge_only, reasons)
        chain, budget = await self._budget(policy, request, route, sticky_chain or chain, reasons, record)
        return self._build(policy, route, chain, complexity, reasons, signals,
                           threshold if route.split else None, conversation,
                           sticky_chain is not None and budget != SPENT, budget)

    async def _budget(self, policy: Policy, request: Request, route: Route, chain: tuple[str, ...],
                      reasons: list[str], record: bool = True) -> tuple[tuple[str, ...], str | None]:
        """A chain that would start on a cloud model starts on the route's edge models once the key's or the
        route's daily cloud budget is spent (see budget.py). Returns the chain and the x-gateway-budget value."""
        if self._spend is None or route.edge_only:
            return chain, None
        models = policy.models
        first = next((n for n in chain if models[n].available), None)
        if first is None or models[first].tier == "edge":
            return chain, None
        key_budget = None
        if request.key_name is not None:
            key_budget = next((k.cloud_budget_usd for k in policy.keys if k.name == request.key_name), None)
        if key_budget is None and route.cloud_budget_usd is None:
            return chain, None
        spent = await spent_budget(self._spend, (request.key_name or "-", key_budget),
                                   (route.name, route.cloud_budget_usd))
        if spent is None:
            return chain, None
        if record:
            self._on_budget(spent.scope, spent.name)
        what = f"daily cloud budget of {spent.scope} {spent.name!r} spent (${spent.spent:.4f} of ${spent.budget:g})"
        moved = edge_first(chain, route.simple + route.complex, lambda n: models[n].tier)
        if moved is None:
            reasons.append(what + ": the route has no edge model, answered by the cloud")
            return chain, SPENT_NO_EDGE
        reasons.append(what + ": edge models first")
        return moved, SPENT

    def _asked_share(self, policy: Policy, route: Route, asked: str, threshold: float, held: bool,
                     reasons: list[str]) -> float:
        """The threshold for the cloud share a client asked for: only a lower share than the policy's
        (a higher threshold) unless `classifier.allow_higher_share`."""
        try:
            share = float(asked)
        except ValueError:
            share = float("nan")
        if not 0.0 <= share <= 1.0:
            raise BadShareHeader(asked)
        spec = policy.classifier
        own = self._scoring(spec.kind).threshold_for_share(share)
        if held:
            own = self.dial.threshold(route.name, share, spec.hold_window, own)
        chosen = own if spec.allow_higher_share else max(threshold, own)
        reasons.append(f"cloud share {share:g} asked by the client"
                       + ("" if chosen == own else " (higher than the policy's: not granted)"))
        return chosen

    async def _keep_tier(self, policy: Policy, request: Request, chain: tuple[str, ...], edge_only: bool,
                         reasons: list[str]) -> tuple[str | None, tuple[str, ...] | None]:
        """Conversations never move down a tier: once the cloud tier answered a turn, the next turns skip the
        chain's edge models (provider state and prompt caches stay valid). Edge-only routes keep theirs:
        personal data outranks stickiness. Returns the key this turn is recorded under when the cloud
        answers it (None when the chain cannot reach the cloud), and the chain without its edge models when
        an earlier turn went to the cloud (else None)."""
        if self._store is None or policy.sticky_ttl is None or edge_only:
            return None, None
        models = policy.models
        cloud = tuple([n for n in chain if models[n].tier != "edge"])
        if not cloud:
            return None, None
        this_turn, turn_before = conversation_keys(request)
        if turn_before is None or len(cloud) == len(chain) or not any(models[n].available for n in cloud):
            return this_turn, None
        if await self._store.cache_get(turn_before) != b"cloud":
            return this_turn, None
        reasons.append("conversation answered by the cloud tier before: edge targets skipped")
        return this_turn, cloud

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

    async def _pinned(self, policy: Policy, request: Request, alias: str,
                      signals: Signals) -> tuple[Decision, Plan, Signals]:
        model = policy.models[alias]
        route = Route(
            name=f"model:{alias}", when=None,  # type: ignore[arg-type]  # never matched: chosen by name
            simple=(alias, *model.fallbacks), complex=(), split=False,
            threshold=None, edge_only=False, retry=policy.retry, degrade=policy.degrade, cache=None,
            spillover=None, deadline=policy.deadline, cloud_budget_usd=None,
        )
        reasons = [f"model {alias!r} pinned"]
        conversation, sticky_chain = await self._keep_tier(policy, request, route.simple, False, reasons)
        chain, budget = await self._budget(policy, request, route, sticky_chain or route.simple, reasons)
        return self._build(policy, route, chain, None, reasons, signals, conversation=conversation,
                           sticky=sticky_chain is not None and budget != SPENT, budget=budget)

    def _build(self, policy: Policy, route: Route, chain, complexity, reasons, signals,
               threshold: float | None = None, conversation: str | None = None, sticky: bool = False,
               budget: str | None = None):
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
            threshold=(threshold if threshold is not None else self.threshold(policy, route)) if route.split else None,
            complexity=complexity, reasons=tuple(reasons), policy_version=policy.version,
            skipped=tuple(skipped), conversation=conversation, sticky="cloud" if sticky else None, budget=budget,
            classifier=getattr(self._scoring(policy.classifier.kind), "version", None)
            if signals.score is not None else None,
        )
        reference = next((policy.models[n] for n in route.complex + route.simple
                          if policy.models[n].tier == "cloud"), None)
        plan = Plan(
            targets=tuple(targets), skipped=tuple(skipped), edge_only=route.edge_only, retry=route.retry,
            degrade=route.degrade, deadline=route.deadline, cache=route.cache, route=route.name,
            reference=reference,
        )
        return decision, plan, signals
