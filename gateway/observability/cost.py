"""Prices per token: the policy's own figures first, else litellm's bundled price table.

The table is read from litellm's JSON file without importing litellm (which costs 2 s and 160 MB), once,
and only the two price fields of each model are kept.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import lru_cache

from gateway.policy.schema import ModelSpec
from gateway.providers.base import Usage


@lru_cache(maxsize=1)
def _table() -> dict[str, tuple[float, float]]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = os.path.join(spec.submodule_search_locations[0], "model_prices_and_context_window_backup.json")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {name: (float(entry.get("input_cost_per_token") or 0.0), float(entry.get("output_cost_per_token") or 0.0))
            for name, entry in raw.items() if isinstance(entry, dict) and "input_cost_per_token" in entry}


def prices(model: ModelSpec) -> tuple[float, float]:
    """(input, output) USD per token; edge models without configured prices cost 0."""
    if model.cost_input_per_mtok is not None or model.cost_output_per_mtok is not None:
        return ((model.cost_input_per_mtok or 0.0) / 1e6, (model.cost_output_per_mtok or 0.0) / 1e6)
    if model.tier == "edge":
        return (0.0, 0.0)
    model_id = model.deployments[0].params.get("model", model.upstream_model) if model.deployments else ""
    table = _table()
    for name in (model_id, model_id.split("/", 1)[-1], model.upstream_model):
        if name in table:
            return table[name]
    return (0.0, 0.0)


def cost_of(model: ModelSpec, usage: Usage | None) -> float:
    if usage is None:
        return 0.0
    price_in, price_out = prices(model)
    return usage.prompt_tokens * price_in + usage.completion_tokens * price_out
