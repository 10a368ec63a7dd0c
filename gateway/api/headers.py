"""Decision headers (DESIGN §3), sent on every answer and before a stream's first byte."""

from __future__ import annotations


def decision_headers(request_id: str, policy_version: str, decision=None, outcome=None,
                     degraded: str | None = None) -> list[tuple[bytes, bytes]]:
    h = [(b"x-request-id", request_id.encode()), (b"x-gateway-policy-version", policy_version.encode())]
    if decision is not None:
        h.append((b"x-gateway-route", decision.route.encode()))
        tier = decision.tier
        if outcome is not None and outcome.model is not None:
            tier = outcome.model.tier
            h.append((b"x-gateway-model", outcome.model.name.encode()))
            h.append((b"x-gateway-deployment", outcome.deployment.encode()))
        h.append((b"x-gateway-tier", tier.encode()))
        if decision.score is not None:
            h.append((b"x-gateway-complexity", f"{decision.score:.4f}".encode()))
        if decision.skipped:
            h.append((b"x-gateway-skipped", "; ".join(f"{n}={w}" for n, w in decision.skipped).encode(
                "ascii", "replace")[:300]))
        if decision.complexity is not None:
            h.append((b"x-gateway-complexity-class", decision.complexity.encode()))
        if decision.sticky is not None:
            h.append((b"x-gateway-sticky", decision.sticky.encode()))
    if outcome is not None:
        h.append((b"x-gateway-attempts", str(outcome.tries).encode()))
        h.append((b"x-gateway-fallbacks", str(outcome.fallbacks).encode()))
    if degraded:
        h.append((b"x-gateway-degraded", b"true"))
        h.append((b"x-gateway-degraded-reason", degraded.encode("ascii", "replace")[:200]))
    return h
