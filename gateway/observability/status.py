"""What `/admin/status` and the dashboard show: traffic of the last five minutes, breakers, today's cost and
savings, the daily cloud budgets and the shadow budget with what is spent of them, policy and classifier."""

from __future__ import annotations

import time

WINDOW_S = 300


async def dashboard_status(rt) -> dict:
    now = time.time()
    window = [r for r in rt.recent if r[0] > now - WINDOW_S]  # (time, latency ms, tier, status, degraded, model)
    latencies = sorted(r[1] for r in window)

    def pct(p: float):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    tiers: dict[str, int] = {}
    models: dict[str, int] = {}
    for _, _, tier, _, _, model in window:
        tiers[tier] = tiers.get(tier, 0) + 1
        if model:
            models[model] = models.get(model, 0) + 1
    holder = rt.policies
    policy = holder.current
    usage = await rt.accountant.report(1)
    today: dict = (next(iter(usage.values()), None) or {}).get("all", {})
    return {
        "window_s": WINDOW_S, "requests": len(window), "tiers": tiers, "models": models,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)},
        "error_rate": (sum(1 for r in window if r[3] >= 500) / len(window)) if window else 0.0,
        "degraded_rate": (sum(1 for r in window if r[4]) / len(window)) if window else 0.0,
        "breakers": await rt.breakers.states(),
        "cost_today_usd": today.get("cost_usd", 0.0), "reference_cost_today_usd": today.get("reference_cost_usd", 0.0),
        "savings_today_usd": today.get("savings_usd", 0.0),
        "budgets": await _budgets(rt, policy),
        "shadow": await _shadow(rt, policy),
        "policy_version": policy.version,
        "last_reload_ok": holder.last_result.ok,
        "last_reload_error": None if holder.last_error is None else holder.last_error.errors,
        "redis": "off" if not rt.settings.redis_url else ("ok" if rt.store.healthy else "degraded"),
        "classifier": rt.classifier.status(),
    }


async def _budgets(rt, policy) -> list[dict]:
    """Every daily cloud budget of the policy (per key, per route) with today's cloud spend against it."""
    found = [("key", k.name, k.cloud_budget_usd) for k in policy.keys if k.cloud_budget_usd is not None]
    found += [("route", r.name, r.cloud_budget_usd) for r in policy.routes if r.cloud_budget_usd is not None]
    out = []
    for scope, name, budget in found:
        spent = await rt.accountant.cloud_spent(f"{scope}={name}")
        out.append({"scope": scope, "name": name, "budget_usd": budget, "spent_usd": round(spent, 8),
                    "reached": spent >= budget})
    return out


async def _shadow(rt, policy) -> dict | None:
    spec = policy.feedback.shadow if policy.feedback.enabled else None
    if spec is None:
        return None
    return {"rate": spec.rate, "daily_budget_usd": spec.daily_budget_usd,
            "spent_today_usd": round(await rt.shadow.spent_today(), 8)}
