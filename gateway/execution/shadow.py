"""Shadow comparisons (`feedback.shadow`): after the client was answered, a sample of requests also goes to the
other tier, and a judge model compares the two answers, in both orders, ties allowed. The verdict is stored as
an outcome with both qualities, which `gateway learn --from-store` reads as it is.

Only routes that split between two chains are shadowed, and never an `edge_only` route or one that matches
personal data (`pii` / `pii_kinds`): such a prompt must not reach another tier for a comparison. The spend of
the shadow and judge calls is reserved before the calls (an estimate) and corrected after them, against a
daily (UTC) budget kept in the Store, so replicas share it. The work runs in background tasks, at most
MAX_RUNNING at a time and MAX_PENDING waiting; more are dropped (counted as `busy`). Shadow calls go to the
providers directly, once per deployment with a closed breaker, and do not count in the breakers: optional
traffic must not open a breaker for the clients' traffic.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.observability import metrics
from gateway.observability.cost import prices
from gateway.policy.schema import Match, ModelSpec, Policy, Route
from gateway.providers.base import Completion, Deadlines, UpstreamCall, Usage
from gateway.providers.errors import UpstreamError
from gateway.request import message_text

log = logging.getLogger("gateway")

MAX_RUNNING = 4
MAX_PENDING = 64
# A cloud model with no price in the policy or litellm's table counts at this (USD per input, output token):
# high on purpose, so an unpriced model uses the budget up early rather than never.
UNPRICED_PER_TOKEN = (10.0 / 1e6, 30.0 / 1e6)
SPEND_KEY = "shadow-spend:"
_DAY_S = 86400.0
_CONVERSATION_CHARS = 6000
_ANSWER_CHARS = 4000

JUDGE_SYSTEM = ("You are an impartial judge. You compare two answers to the same conversation and decide which "
                "one serves the user better: correct, complete, helpful and following the instructions. Length "
                "is no merit by itself, and the order of the answers says nothing. Reply with one word: A, B or tie.")
JUDGE_USER = ("[Conversation]\n{conversation}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
              "Which answer is better? Reply with exactly one word: A, B or tie.")
_VERDICT = re.compile(r"[\W_]*(?:answer\s*)?(a|b|tie)\b", re.IGNORECASE)


def personal(match: Match | None) -> bool:
    """Does a route's `when` select personal data (a `pii: true` or `pii_kinds` condition, or one of `any`)?"""
    if match is None:
        return False
    return match.pii is True or match.pii_kinds is not None or any(personal(m) for m in match.any)


def route_of(policy: Policy, name: str) -> Route | None:
    return next((r for r in policy.routes if r.name == name), None)


def other_tier_targets(policy: Policy, route: Route, complexity: str | None, answered: ModelSpec) -> list[ModelSpec]:
    """Models of the other tier to shadow with, in order: the route's other chain, then its own chain (for an
    answer that crossed tiers through a fallback or a spill-over). None for routes that must not leave the
    edge or carry personal data, nor for routes that do not split."""
    if route.edge_only or personal(route.when) or not route.split or complexity is None:
        return []
    other = "edge" if answered.tier == "cloud" else "cloud"
    own, opposite = (route.complex, route.simple) if complexity == "complex" else (route.simple, route.complex)
    out: list[ModelSpec] = []
    for name in (*opposite, *own):
        model = policy.models.get(name)
        if model is not None and model not in out and model.tier == other and model.available and model.kind == "chat":
            out.append(model)
    return out


def call_cost(model: ModelSpec, usage: Usage) -> float:
    price_in, price_out = prices(model)
    unpriced = model.cost_input_per_mtok is None and model.cost_output_per_mtok is None
    if model.tier == "cloud" and unpriced and price_in == 0.0 and price_out == 0.0:
        price_in, price_out = UNPRICED_PER_TOKEN
    return usage.prompt_tokens * price_in + usage.completion_tokens * price_out


def answer_text(body: bytes | None) -> str | None:
    """The assistant's text (or its tool calls, as JSON) of a chat.completion body; None when it has neither."""
    if not body:
        return None
    try:
        data = orjson.loads(body)
        message = data["choices"][0]["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    text = content if isinstance(content, str) else message_text(message)
    if message.get("tool_calls"):
        text = (text + "\n" if text else "") + orjson.dumps(message["tool_calls"]).decode()
    return text or None


def conversation_text(messages: list) -> str:
    lines = [f"{m.get('role', '?')}: {message_text(m)}" for m in messages if isinstance(m, dict)]
    text = "\n".join(lines)
    return text if len(text) <= _CONVERSATION_CHARS else "…" + text[-_CONVERSATION_CHARS:]


def judge_body(conversation: str, a: str, b: str, max_tokens: int) -> dict:
    user = JUDGE_USER.format(conversation=conversation, a=a[:_ANSWER_CHARS], b=b[:_ANSWER_CHARS])
    return {"messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}],
            "temperature": 0, "max_tokens": max_tokens}


def parse_verdict(reply: str | None) -> str | None:
    """"A", "B" or "tie" from the judge's reply; None when it gave none of them."""
    found = _VERDICT.match(reply or "")
    if found is None:
        return None
    word = found.group(1).lower()
    return "tie" if word == "tie" else word.upper()


def combine(first: str, second: str) -> tuple[float, float]:
    """(edge, cloud) qualities from the verdicts of the two orders: first A=edge B=cloud, second A=cloud B=edge.
    The same winner both times scores 1 / 0; a tie or an inconsistent pair 0.5 / 0.5."""
    winner_first = {"A": "edge", "B": "cloud"}.get(first)
    winner_second = {"A": "cloud", "B": "edge"}.get(second)
    if winner_first is not None and winner_first == winner_second:
        return (1.0, 0.0) if winner_first == "edge" else (0.0, 1.0)
    return 0.5, 0.5


def shadow_body(body: dict, max_tokens: int) -> dict:
    """The client's request for the other tier: not streamed, one answer, at most `max_tokens`."""
    out = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n", "max_completion_tokens")}
    asked = body.get("max_tokens") or body.get("max_completion_tokens")
    out["max_tokens"] = min(int(asked), max_tokens) if isinstance(asked, int) and asked > 0 else max_tokens
    return out


class Shadow:
    """Samples requests for a shadow comparison and runs the comparisons in the background."""

    def __init__(self, providers: Any, breakers: Any, store: Any, outcomes: Any,
                 rng: Callable[[], float] = random.random, clock: Callable[[], float] = time.time) -> None:
        self.providers = providers
        self.breakers = breakers
        self.store = store
        self.outcomes = outcomes
        self._rng = rng
        self._clock = clock
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self._pending = 0
        self._tasks: set[asyncio.Task] = set()

    def sample(self, policy: Policy, decision: Any) -> bool:
        """Is this request (routed, not yet answered) drawn for a shadow comparison?"""
        spec = policy.feedback.shadow
        if spec is None or not policy.feedback.enabled or decision is None or decision.complexity is None:
            return False
        if spec.rate <= 0.0 or spec.daily_budget_usd <= 0.0:
            return False
        route = route_of(policy, decision.route)
        if route is None or route.edge_only or personal(route.when) or not route.split:
            return False
        return spec.rate >= 1.0 or self._rng() < spec.rate

    async def spent_today(self) -> float:
        """Shadow and judge spend of the (UTC) day so far, in USD, across replicas sharing the Store."""
        key = SPEND_KEY + time.strftime("%Y-%m-%d", time.gmtime(self._clock()))
        return (await self.store.window_take(key, 0.0, 1e18, _DAY_S)).used

    def submit(self, record: Any) -> None:
        """After the answer was sent: start the comparison of a sampled request that was answered in full
        (`record` is the request's pipeline Record)."""
        request, policy, request_id = record.shadow, record.policy, record.request_id
        decision, outcome = record.decision, record.outcome
        if request is None or decision is None or outcome is None or outcome.model is None:
            return
        if record.status != 200 or record.degraded or record.stream_error:
            return
        body = outcome.completion.body if outcome.completion is not None else record.answer_body
        answer = answer_text(body)
        if answer is None:
            return
        if self._pending >= MAX_PENDING:
            metrics.SHADOW_CALLS.labels(decision.route, "-", "busy").inc()
            return
        self._pending += 1
        task = asyncio.get_running_loop().create_task(
            self._run(request_id, policy, decision, request, outcome.model, answer, record.feedback_prompt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait for the running comparisons (up to `timeout`), then cancel what is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, request_id: str, policy: Policy, decision: Any, request: Any, answered: ModelSpec,
                   answer: str, prompt: str | None) -> None:
        try:
            async with self._slots:
                await self._compare(request_id, policy, decision, request, answered, answer, prompt)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed comparison must never reach the client's side
            log.exception("shadow comparison of request %s failed", request_id)
        finally:
            self._pending -= 1

    async def _compare(self, request_id: str, policy: Policy, decision: Any, request: Any, answered: ModelSpec,
                       answer: str, prompt: str | None) -> None:
        spec = policy.feedback.shadow
        route = route_of(policy, decision.route)
        if spec is None or route is None:
            return
        targets = other_tier_targets(policy, route, decision.complexity, answered)
        judge = policy.models.get(spec.judge)
        if not targets or judge is None or not judge.available:
            metrics.SHADOW_CALLS.labels(route.name, "-", "no_target").inc()
            return
        conversation = conversation_text(request.messages)
        prompt_tokens = max(1, len(conversation) // 4)
        judge_in = (len(JUDGE_SYSTEM) + len(JUDGE_USER) + len(conversation) + len(answer[:_ANSWER_CHARS])) // 4 \
            + spec.max_tokens
        estimate = call_cost(targets[0], Usage(prompt_tokens, spec.max_tokens)) \
            + 2 * call_cost(judge, Usage(judge_in, spec.max_tokens))
        key = SPEND_KEY + time.strftime("%Y-%m-%d", time.gmtime(self._clock()))
        taken = await self.store.window_take(key, estimate, spec.daily_budget_usd, _DAY_S)
        if not taken.allowed:
            metrics.SHADOW_CALLS.labels(route.name, targets[0].name, "budget").inc()
            return
        spent = 0.0
        try:
            other: str | None = None
            shadow_model = targets[0]
            body = shadow_body(request.body, spec.max_tokens)
            for shadow_model in targets:
                completion = await self._call(policy, shadow_model, body, route.deadline)
                if completion is None:
                    metrics.SHADOW_CALLS.labels(route.name, shadow_model.name, "error").inc()
                    continue
                other = answer_text(completion.body)
                spent += self._spend(shadow_model, completion, prompt_tokens, other)
                metrics.SHADOW_CALLS.labels(route.name, shadow_model.name, "ok").inc()
                break
            if other is None:
                return
            edge_answer, cloud_answer = (answer, other) if answered.tier == "edge" else (other, answer)
            replies = await asyncio.gather(*(
                self._call(policy, judge, judge_body(conversation, a, b, spec.max_tokens), policy.deadline)
                for a, b in ((edge_answer, cloud_answer), (cloud_answer, edge_answer))))
            verdicts = []
            for reply in replies:
                text = answer_text(reply.body) if reply is not None else None
                if reply is not None:
                    spent += self._spend(judge, reply, judge_in - spec.max_tokens, text)
                verdicts.append(parse_verdict(text))
            first, second = verdicts
            if first is None or second is None:
                metrics.SHADOW_VERDICTS.labels("invalid").inc()
                return
            edge_q, cloud_q = combine(first, second)
            metrics.SHADOW_VERDICTS.labels("tie" if edge_q == cloud_q else ("edge" if edge_q > cloud_q else
                                                                            "cloud")).inc()
            edge_model, cloud_model = (answered, shadow_model) if answered.tier == "edge" else (shadow_model, answered)
            record = {"request_id": request_id, "kind": "shadow", "source": "shadow", "at": self._clock(),
                      "route": route.name, "tier": answered.tier, "model": answered.name,
                      "edge_model": edge_model.name, "cloud_model": cloud_model.name, "judge": judge.name,
                      "edge_quality": edge_q, "cloud_quality": cloud_q, "verdicts": [first, second],
                      "policy_version": policy.version, "classifier_version": decision.classifier,
                      "classifier_score": decision.score, "shadow_cost_usd": round(spent, 8)}
            if policy.feedback.store_prompts and prompt is not None:
                record["prompt"] = prompt
            self.outcomes.append(record, policy.feedback.retention_days, policy.feedback.max_records)
        finally:
            await self.store.window_adjust(key, spent - estimate, _DAY_S)

    def _spend(self, model: ModelSpec, completion: Completion, prompt_tokens: int, text: str | None) -> float:
        """The cost of one call: its reported usage, else an estimate (about 4 characters a token)."""
        usage = completion.usage or Usage(prompt_tokens, (len(text or "") + 3) // 4, estimated=True)
        cost = call_cost(model, usage)
        if cost:
            metrics.SHADOW_COST.labels(model.name).inc(cost)
        return cost

    async def _call(self, policy: Policy, model: ModelSpec, body: dict, deadline: float) -> Completion | None:
        """One non-streamed call, to each deployment with a closed breaker in turn until one answers."""
        in_flight = self.providers.in_flight
        for deployment in model.deployments:
            if await self.breakers.is_open(policy.breaker, deployment.name):
                continue
            provider = self.providers.get(model, deployment)
            deadlines = Deadlines(connect=min(model.connect_timeout, deadline), attempt=min(model.timeout, deadline),
                                  first_token=min(model.first_token_timeout, deadline))
            in_flight[deployment.name] = in_flight.get(deployment.name, 0) + 1
            try:
                async with asyncio.timeout(deadline):
                    return await provider.complete(UpstreamCall(body, model.upstream_model, False, deadlines, None))
            except (UpstreamError, TimeoutError) as exc:
                log.info("shadow call to %s failed: %s", deployment.name, getattr(exc, "kind", "timeout"))
            finally:
                in_flight[deployment.name] = in_flight.get(deployment.name, 1) - 1
        return None
