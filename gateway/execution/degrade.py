"""The degrade decision (a canned reply or an error, once every target failed) and the hand-off webhook.

The decision is neutral: each dialect writes the canned reply in its own format."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson

from gateway.providers.errors import degraded_reason
from gateway.policy.schema import DegradeSpec
from gateway.routing.plan import Plan

log = logging.getLogger("gateway.degrade")


@dataclass(frozen=True, slots=True)
class Degraded:
    """What to answer when every target failed: the policy's canned reply (status 200), or an error."""

    kind: str                    # the last failure's error kind (what `x-gateway-degraded-reason` names)
    reason: str                  # the kind and the upstream's message, for the log and the hand-off only
    status: int
    reply: str | None = None     # the canned text, when status is 200
    message: str = ""            # the error's message, otherwise
    code: str | None = None
    type: str | None = None
    retry_after: int | None = None
    marked: bool = True          # the answer carries x-gateway-degraded


def degrade(plan: Plan, outcome) -> Degraded:
    """The degrade decision for a request whose every target failed (`outcome.failed` is the last error)."""
    error = outcome.failed
    kind = str(error.kind)
    reason = f"{kind}: {error.message}"[:180]
    retry_after = plan.degrade.retry_after
    wait = None if retry_after is None else max(1, round(retry_after))
    if outcome.auth_refused:
        # An operator error, not a busy upstream: no canned reply hides it (the metric
        # gateway_upstream_auth_refused_total counts each refusal for alerting).
        return Degraded(kind, reason, 502, message="Every target refused the gateway's credentials (401/403 "
                        "upstream); the gateway's operator must fix its provider keys.",
                        code="upstream_auth_failed", type="api_error", marked=False)
    if plan.edge_only and kind == "overloaded":
        # Edge-only requests are never spilled: a saturated edge answers 429 with when to come back.
        wait = max(1, round(error.retry_after or retry_after or 1))
        return Degraded(kind, reason, 429, message="The edge model is saturated and this request must stay on "
                        f"the edge; retry in {wait}s.", code="edge_saturated", retry_after=wait)
    if plan.degrade.reply is None:
        return Degraded(kind, reason, 503, message=f"Every target of route '{plan.route}' failed "
                        f"({degraded_reason(kind)}).", code="upstreams_unavailable",
                        retry_after=30 if wait is None else wait)
    return Degraded(kind, reason, 200, reply=plan.degrade.reply, retry_after=wait)


class HandOff:
    """Posts the conversation of a degraded request to a webhook, in the background, with retries."""

    def __init__(self, session_factory, attempts: int = 3) -> None:
        self._session_factory = session_factory
        self._attempts = attempts
        self._tasks: set[asyncio.Task] = set()

    def send(self, spec: DegradeSpec, payload: dict) -> None:
        if not spec.webhook:
            return
        task = asyncio.get_running_loop().create_task(self._post(spec.webhook, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, payload: dict) -> None:
        import aiohttp

        body = orjson.dumps(payload)
        for attempt in range(self._attempts):
            try:
                async with self._session_factory().post(
                        url, data=body, headers={"Content-Type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=10), allow_redirects=False) as response:
                    if response.status < 500:
                        if response.status >= 400:
                            log.warning("hand-off webhook refused the conversation: %s", response.status)
                        return
            except Exception as exc:  # noqa: BLE001 - a webhook failure must never reach a client
                log.warning("hand-off webhook failed (try %d): %s", attempt + 1, exc)
            await asyncio.sleep(0.5 * 2 ** attempt)

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
