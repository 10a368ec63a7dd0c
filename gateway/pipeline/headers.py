"""Decision headers (DESIGN §3), sent on every answer and before a stream's first byte.

Every header value the gateway sends passes through `header_value`: printable ASCII only, bounded length.
Nothing an upstream wrote goes into a header; a degraded answer names the error kind (`degraded_reason`),
and the upstream's own message goes to the log.
"""

from __future__ import annotations

import re

from gateway.providers.errors import degraded_reason

_UNSAFE = re.compile(r"[^\x20-\x7e]+")


def header_value(value: object, limit: int = 200) -> bytes:
    """A safe header value: runs of control, non-ASCII or DEL characters become one '?', cut to `limit`."""
    text = str(value)
    if not (text.isascii() and text.isprintable()):  # the common case (policy names, ids) skips the regex
        text = _UNSAFE.sub("?", text)
    text = text.strip()
    return text[:limit].encode("ascii")


def decision_headers(request_id: str, policy_version: str, decision=None, outcome=None,
                     degraded: str | None = None) -> list[tuple[bytes, bytes]]:
    """`degraded` is an error kind (see `degraded_reason`), never an upstream's message."""
    h = [(b"x-request-id", header_value(request_id)), (b"x-gateway-policy-version", header_value(policy_version))]
    if decision is not None:
        h.append((b"x-gateway-route", header_value(decision.route)))
        tier = decision.tier
        if outcome is not None and outcome.model is not None:
            tier = outcome.model.tier
            h.append((b"x-gateway-model", header_value(outcome.model.name)))
            h.append((b"x-gateway-deployment", header_value(outcome.deployment)))
        h.append((b"x-gateway-tier", header_value(tier)))
        if decision.score is not None:
            h.append((b"x-gateway-complexity", f"{decision.score:.4f}".encode()))
            if decision.classifier:
                h.append((b"x-gateway-classifier", decision.classifier.encode()))
        if decision.skipped:
            h.append((b"x-gateway-skipped", header_value("; ".join(f"{n}={w}" for n, w in decision.skipped), 300)))
        if decision.complexity is not None:
            h.append((b"x-gateway-complexity-class", header_value(decision.complexity)))
        if decision.sticky is not None:
            h.append((b"x-gateway-sticky", decision.sticky.encode()))
        if decision.budget is not None:
            h.append((b"x-gateway-budget", decision.budget.encode()))
    if outcome is not None:
        h.append((b"x-gateway-attempts", str(outcome.tries).encode()))
        h.append((b"x-gateway-fallbacks", str(outcome.fallbacks).encode()))
    if degraded:
        h.append((b"x-gateway-degraded", b"true"))
        h.append((b"x-gateway-degraded-reason", header_value(degraded_reason(degraded))))
    return h
