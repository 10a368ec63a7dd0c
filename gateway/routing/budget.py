"""Daily cloud budgets: when a key's or a route's cloud spend of the UTC day reaches its
`cloud_budget_usd`, requests that would start on a cloud model start on the route's edge models instead.

The spend is the cloud-tier cost the usage accountant records per key and per route and day (in the Store,
so every replica sees the others' spend within about a second). The budget never makes a request fail:
the cloud models stay in the chain behind the edge ones (a dead edge still gets answered), and a route with
no edge model answers from the cloud as before, saying so in the decision's reasons.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

SpendFn = Callable[[str], Awaitable[float]]  # "key=NAME" | "route=NAME" -> today's cloud spend in USD

SPENT = "spent"                  # x-gateway-budget: the request was moved to the edge
SPENT_NO_EDGE = "spent-no-edge"  # x-gateway-budget: spent, but the route has no edge model to move to


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    scope: str        # "key" | "route"
    name: str
    spent: float
    budget: float


async def spent_budget(spend: SpendFn, key: tuple[str, float | None] | None,
                       route: tuple[str, float | None]) -> BudgetCheck | None:
    """The first of the key's and the route's budgets that today's cloud spend has reached, else None."""
    for scope, pair in (("key", key), ("route", route)):
        if pair is None:
            continue
        name, budget = pair
        if budget is None:
            continue
        spent = await spend(f"{scope}={name}")
        if spent >= budget:
            return BudgetCheck(scope, name, spent, budget)
    return None


def edge_first(chain: tuple[str, ...], route_models: tuple[str, ...], tiers: Callable[[str], str],
               ) -> tuple[str, ...] | None:
    """The chain with the route's edge models first and its cloud models behind them; None when the route
    has no edge model."""
    edge = [n for n in (*chain, *route_models) if tiers(n) == "edge"]
    if not edge:
        return None
    rest = [n for n in chain if tiers(n) != "edge"]
    return tuple(dict.fromkeys([*edge, *rest]))
