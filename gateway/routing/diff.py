"""Dry run of a new policy: route a sample of requests under both policies and count what changes."""

from __future__ import annotations

from collections import Counter

from gateway.policy.schema import Policy
from gateway.request import Request


async def _outcome(router, policy: Policy, body: dict) -> dict:
    model = body.get("model")
    messages = body["messages"] if isinstance(body.get("messages"), list) else []
    request = Request(body, b"", model if isinstance(model, str) else "", bool(body.get("stream")), messages, {})
    try:
        decision, plan, _ = await router.decide(policy, request)
    except Exception as exc:  # noqa: BLE001 - an unroutable request is a result too
        return {"route": f"error: {type(exc).__name__}", "tier": "-", "model": "-"}
    first = plan.targets[0].name if plan.targets else "-"
    return {"route": decision.route, "tier": decision.tier, "model": first}


async def diff_policies(router, old: Policy, new: Policy, requests: list[dict]) -> dict:
    changed: Counter[str] = Counter()
    examples: dict[str, list] = {"route": [], "tier": [], "model": []}
    moves: Counter[tuple[str, str, str]] = Counter()
    for i, body in enumerate(requests):
        a = await _outcome(router, old, body)
        b = await _outcome(router, new, body)
        for field in ("route", "tier", "model"):
            if a[field] != b[field]:
                changed[field] += 1
                moves[(field, a[field], b[field])] += 1
                examples[field].append({"index": i, "old": a[field], "new": b[field],
                                        "prompt": _preview(body)})
    return {"total": len(requests), "changed": dict(changed), "moves": moves, "examples": examples}


def _preview(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            text = message["content"].replace("\n", " ")
            return text[:80] + ("…" if len(text) > 80 else "")
    return ""


def format_diff(report: dict, examples: int = 3) -> str:
    total = report["total"]
    lines = [f"{total} requests replayed"]
    for field in ("route", "tier", "model"):
        n = report["changed"].get(field, 0)
        share = f"{100 * n / total:.1f}%" if total else "0%"
        lines.append(f"  {field:<6} changes for {n} ({share})")
        for (f, old, new), count in report["moves"].most_common():
            if f == field:
                lines.append(f"      {old} -> {new}: {count}")
        for ex in report["examples"][field][:examples]:
            lines.append(f"      e.g. #{ex['index']} {ex['old']} -> {ex['new']}: {ex['prompt']!r}")
    return "\n".join(lines)
