"""After each answer: metrics, the request log line, usage and cost, and the records feedback learns from."""

from __future__ import annotations

import hashlib
import time

import orjson

from gateway.observability import metrics
from gateway.observability.cost import cost_of
from gateway.pipeline.record import Record


def request_record(record: Record) -> dict | None:
    """What the gateway remembers of an answered request for later feedback (None: nothing to rate)."""
    policy, decision, outcome = record.policy, record.decision, record.outcome
    if decision is None or record.status != 200 or outcome is None or outcome.model is None:
        return None
    remembered = {"at": time.time(), "route": decision.route, "tier": outcome.model.tier, "model": outcome.model.name,
              "policy_version": policy.version, "classifier_score": decision.score,
              "classifier_version": decision.classifier,
              "key": record.key, "asked_model": record.asked_model, "conversation": record.conversation}
    if policy.feedback.store_prompts and record.feedback_prompt is not None:
        remembered["prompt"] = record.feedback_prompt
    return remembered


def conversation_key(messages: list) -> str:
    """Identifies a conversation by its messages (a regenerate re-sends the same ones)."""
    return hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


async def on_answer(outcomes, request_id: str, record: dict, policy) -> None:
    """Remember an answered request for feedback; record an implicit outcome for the answer it repeats."""
    spec = policy.feedback
    await outcomes.remember(request_id, record, spec.window_s)
    conversation = record.get("conversation")
    if not spec.implicit or not conversation:
        return
    ckey = f"conv:{record.get('key')}:{conversation}"
    previous_id = await outcomes.lookup_raw(ckey)
    await outcomes.remember_raw(ckey, request_id.encode(), spec.implicit_window_s)
    if previous_id is None:
        return
    previous = await outcomes.lookup(previous_id.decode())
    if previous is None or time.time() - float(previous.get("at", 0)) > spec.implicit_window_s:
        return
    if previous.get("tier") == "edge" and record.get("tier") == "cloud" and record.get("asked_model") != "auto" \
            and record.get("asked_model") != previous.get("asked_model"):
        kind = "escalated"
    elif record.get("asked_model") == previous.get("asked_model"):
        kind = "regenerated"
    else:
        return
    outcomes.append({**previous, "request_id": previous_id.decode(), "kind": kind, "score": 0.0, "at": time.time(),
                     "answered_at": previous.get("at"), "followed_by": request_id},
                    spec.retention_days, spec.max_records)


class Accounting:
    """Turns each finished request's `Record` into metrics, a log line, usage, and feedback records."""

    def __init__(self, runtime) -> None:
        self.rt = runtime

    def finish(self, record: Record, elapsed: float) -> None:
        """Metrics, the request log line, usage, feedback records; runs after the answer was sent."""
        rt, policy, request_id = self.rt, record.policy, record.request_id
        decision, outcome = record.decision, record.outcome
        model = outcome.model if outcome is not None else None
        route = decision.route if decision is not None else "-"
        tier = model.tier if model is not None else (decision.tier if decision is not None else "-")
        status = record.status
        degraded = record.degraded is not None
        metrics.child(metrics.REQUESTS, route, tier, model.name if model else "-", str(status),
                    "true" if degraded else "false").inc()
        usage = record.usage
        cost = record.cost
        if cost is None:
            cost = cost_of(model, usage) if model is not None else 0.0
        elapsed_ms = round(elapsed * 1e3, 3)
        if rt.request_log.enabled:
            line: dict = {"request_id": request_id, "policy_version": policy.version, "route": route, "tier": tier,
                    "dialect": record.dialect, "model": model.name if model else None, "status": status, "latency_ms": elapsed_ms,
                    "score": decision.score if decision is not None else None,
                    "attempts": outcome.tries if outcome is not None else 0,
                    "fallbacks": outcome.fallbacks if outcome is not None else 0,
                    "degraded": record.degraded, "cache": record.cache,
                    "prompt_tokens": usage.prompt_tokens if usage else 0,
                    "completion_tokens": usage.completion_tokens if usage else 0, "cost_usd": cost}
            if record.stream_error:
                line["stream_error"] = record.stream_error
            if record.prompt is not None:  # only when the policy opts in (logging.prompts)
                line["prompt"] = record.prompt
                line["answer"] = record.answer
            rt.request_log.write(line)
        if policy.feedback.enabled:
            remembered = request_record(record)
            if remembered is not None:
                rt.in_background(on_answer(rt.outcomes, request_id, remembered, policy))
            rt.shadow.submit(record)
        rt.recent.append((time.time(), elapsed_ms, tier, status, degraded,
                          model.name if model else ("canned" if degraded else None)))
        if len(rt.recent) > 2000:
            del rt.recent[:1000]
        if decision is not None and decision.conversation and status == 200 and model is not None \
                and model.tier == "cloud" and policy.sticky_ttl is not None:
            # Later turns of this conversation stay on the cloud tier (routing reads this back).
            rt.in_background(rt.store.cache_set(decision.conversation, b"cloud", policy.sticky_ttl))
        if decision is not None and status == 200:
            reference = record.reference
            ref_cost = cost_of(reference, usage) if reference is not None and usage is not None else cost
            rt.accountant.record(
                key=record.key, route=route, model=model.name if model else "canned", tier=tier,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                cost=cost, reference_cost=ref_cost, degraded=degraded)
