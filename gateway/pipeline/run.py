"""`Pipeline.run`: from a neutral `Request` to a neutral result, the same for every dialect.

Admission (model allow-list, token and request limits), routing, the response cache, execution (retries,
fallbacks, breakers, deadlines, the stream's opening) and the degrade decision; `settle` finishes the work
an answer leaves once it went out (cache, token-limit correction). Everything known about the request goes
into its `Record` for accounting. Wire formats are not known here: dialects parse before and encode after.
"""

from __future__ import annotations

import dataclasses
import logging

from gateway.admission.cache import cache_key
from gateway.admission.keys import check_model
from gateway.errors import ApiError
from gateway.execution.degrade import degrade
from gateway.execution.stream import StreamEnd
from gateway.observability import metrics
from gateway.observability.cost import cost_of
from gateway.pipeline.accounting import conversation_key
from gateway.pipeline.headers import decision_headers
from gateway.pipeline.record import Record, Settlement
from gateway.pipeline.result import Canned, Failure, Reply, Result, Streamed
from gateway.request import OPENAI, Request
from gateway.routing.router import BadShareHeader, NoRoute, UnknownModel
from gateway.routing.signals import estimate_tokens

log = logging.getLogger("gateway.pipeline")


class Pipeline:
    def __init__(self, runtime) -> None:
        self.rt = runtime

    async def run(self, request: Request, key, record: Record, arrived: float) -> Result:
        """Raises ApiError for a request the gateway refuses before any upstream is called."""
        rt, policy = self.rt, record.policy
        check_model(key, request.model)
        # Per-key limits before routing, whose work (personal-data scan, classifier) grows with the prompt.
        record.prompt_estimate = prompt_tokens = estimate_tokens(request.messages)
        body = request.body
        estimate = prompt_tokens + int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        counted = await rt.limiter.admit(policy, key, None, estimate)
        try:
            decision, plan, signals = await rt.router.decide(policy, request)
        except UnknownModel:
            raise ApiError(404, f"The model '{request.model}' does not exist. Use 'auto' or one of: "
                                f"{', '.join(policy.model_names())}.", param="model", code="model_not_found") from None
        except NoRoute:
            raise ApiError(400, f"No route of the policy matches this request for model '{request.model}'.",
                           param="model", code="no_route") from None
        except BadShareHeader as exc:
            raise ApiError(400, f"The x-gateway-cloud-share header must be a number between 0 and 1, got "
                                f"{exc.args[0]!r}.", param="x-gateway-cloud-share", code="invalid_value") from None
        if request.native_only:
            decision, plan = _dialect_targets(request, decision, plan)
        record.decision, record.reference, record.key = decision, plan.reference, request.key_name
        if policy.log_prompts:
            record.prompt = request.messages
        if policy.feedback.enabled:  # for outcomes: what was asked, and which conversation (regenerations)
            record.asked_model, record.conversation = request.model, conversation_key(request.messages)
            if policy.feedback.store_prompts:
                record.feedback_prompt = signals.classifier_text(policy.classifier.input, policy.classifier.max_chars)
            if rt.shadow.sample(policy, decision):  # compared with the other tier after the answer
                record.shadow = request
        if decision.score is not None:
            metrics.CLASSIFIER_SCORE.observe(decision.score)
        counted += await rt.limiter.admit(policy, None, plan.targets[0].name if plan.targets else None, estimate)
        ckey = None
        if plan.cache is not None:
            ckey = cache_key(body, tuple(t.name for t in plan.targets), policy.content_hash, request.key_name)
            cached = await rt.store.cache_get(ckey)
            metrics.CACHE.labels("hit" if cached else "miss").inc()
            record.cache = "hit" if cached else "miss"
            if cached is not None:
                return Reply(cached, decision_headers(request.request_id, policy.version, decision)
                             + [(b"x-gateway-cache", b"hit")])
        outcome = await rt.executor.run(request, plan, policy.breaker, arrived)
        record.outcome = outcome
        headers = decision_headers(request.request_id, policy.version, decision, outcome)
        if outcome.client_error is not None:
            error = outcome.client_error
            given = error.body.get("error") if isinstance(error.body, dict) else None
            payload = given if isinstance(given, dict) else {"message": error.message, "type": "invalid_request_error",
                                                             "param": None, "code": str(error.kind)}
            return Failure(error.status or 400, payload, headers)
        if outcome.failed is not None:
            return self._degraded(request, plan, outcome, record)
        if record.cache == "miss":
            headers.append((b"x-gateway-cache", b"miss"))
        completion = outcome.completion
        if completion is not None and completion.dialect != OPENAI:
            ckey = None  # the cache holds chat.completions, which every dialect can replay
        record.settlement = Settlement(counted, estimate, ckey, plan.cache.ttl if plan.cache is not None else 0.0)
        if completion is not None:
            record.cost = cost_of(outcome.model, completion.usage)
            headers.append((b"x-gateway-cost", f"{record.cost:.8f}".encode()))
            return Reply(completion.body, headers, completion.dialect)
        return Streamed(outcome, headers, assemble=ckey is not None or record.shadow is not None)

    def _degraded(self, request: Request, plan, outcome, record: Record) -> Result:
        rt, policy = self.rt, record.policy
        verdict = degrade(plan, outcome)
        if verdict.status == 502:
            log.error("every target of route '%s' refused the gateway's credentials (%s)", plan.route, verdict.reason)
        else:
            log.warning("every target of route %s failed (request %s): %s", plan.route, request.request_id,
                        verdict.reason)
        record.degraded = verdict.reason  # the full reason is for the log and the hand-off; clients see the kind
        metrics.DEGRADED.labels(plan.route, verdict.kind).inc()
        rt.handoff.send(plan.degrade, {"request_id": request.request_id, "route": plan.route,
                                       "reason": verdict.reason, "messages": request.messages,
                                       "key": request.key_name})
        headers = decision_headers(request.request_id, policy.version, record.decision, outcome,
                                   degraded=verdict.kind if verdict.marked else None)
        if verdict.retry_after is not None:
            headers.append((b"retry-after", str(verdict.retry_after).encode()))
        if verdict.reply is not None:
            return Canned(verdict.reply, headers)
        error = ApiError(verdict.status, verdict.message, code=verdict.code, type=verdict.type)
        return Failure(verdict.status, error.payload(), headers)

    async def settle(self, record: Record, end: StreamEnd | None = None) -> None:
        """After the answer went out: cache it, and correct the token limits by the usage it really had."""
        settlement, outcome = record.settlement, record.outcome
        if settlement is None or outcome is None:
            return
        answer = None
        if end is not None:
            record.usage, record.stream_error, record.answer_body = end.usage, end.error, end.completion
            answer = end.completion
        elif outcome.completion is not None:
            answer = outcome.completion.body
            record.usage = outcome.completion.usage
            if record.policy.log_prompts:
                record.answer = answer.decode("utf-8", "replace")
        if answer is not None and settlement.cache_key is not None:
            await self.rt.store.cache_set(settlement.cache_key, answer, settlement.ttl)
        if record.usage is not None:
            await self.rt.limiter.correct(settlement.counted, settlement.estimate, record.usage.total_tokens)


def _dialect_targets(request: Request, decision, plan):
    """Keep the targets that speak the client's dialect, for a request holding parts only they can take;
    a 400 naming the first such part when the route has none."""
    kept = tuple(t for t in plan.targets if t.dialect == request.dialect)
    if not kept:
        field, what = request.native_only[0]
        raise ApiError(400, f"'{field}': {what} can only go to an upstream that speaks this API natively, and "
                            f"route '{plan.route}' has none among its targets.", param=field, code="unsupported_content")
    left_out = tuple((t.name, f"cannot take {request.native_only[0][1]}") for t in plan.targets
                     if t.dialect != request.dialect)
    return (dataclasses.replace(decision, skipped=decision.skipped + left_out),
            dataclasses.replace(plan, targets=kept, skipped=plan.skipped + left_out))
