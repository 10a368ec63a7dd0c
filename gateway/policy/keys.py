"""The `auth:` section: client API keys (stored as sha256 digests), their groups, limits and model allow-lists."""

from __future__ import annotations

import hashlib
import re

from gateway.policy.checker import Checker, did_you_mean, item_line
from gateway.policy.routes import all_models, model_matches
from gateway.policy.schema import KeySpec
from gateway.policy.sections import cloud_budget

def _key_models(c: Checker, item, where: str, models: dict, routes: list) -> tuple[str, ...] | None:
    """A key's `models:` allow-list: names a client may send as `model` (auto, aliases, route models, globs)."""
    if "models" not in item:
        return None
    names, lines = c.names(item, "models", where)
    if not names:
        c.err(c.line_of(item, "models"), f"{where}.models must name at least one model (or leave it out)")
        return None
    route_models = tuple(m for r in routes for m in all_models(r.when))
    for name, line in zip(names, lines):
        if any(ch in name for ch in "*?["):
            continue
        if name != "auto" and name not in models and not model_matches(route_models, name):
            known = ["auto", *models, *(m for m in route_models if not any(ch in m for ch in "*?["))]
            c.err(line, f"{where}.models: unknown model {name!r}{did_you_mean(name, known)} (use auto, a model of "
                        f"`models`, or a model named by a route's `when.model`)")
    return tuple(names)


def compile_keys(c: Checker, spec, line: int, models: dict | None = None,
          routes: list | None = None) -> tuple[bool, tuple[KeySpec, ...]]:
    spec = c.mapping(spec, line, "auth")
    if spec is None:
        return False, ()
    c.unknown_keys(spec, {"required", "keys"}, "auth")
    required = bool(c.get(spec, "required", bool, "auth", True))
    items = spec.get("keys") or []
    if not isinstance(items, list):
        c.err(c.line_of(spec, "keys"), "auth.keys must be a list")
        return required, ()
    result, names = [], set()
    for i, item in enumerate(items):
        where = f"auth.keys[{i}]"
        item = c.mapping(item, item_line(items, i), where)
        if item is None:
            continue
        c.unknown_keys(item, {"name", "key", "sha256", "group", "rpm", "tpm", "models", "cloud_budget_usd"}, where)
        name = c.get(item, "name", str, where)
        if not name:
            c.err(item.line, f"{where}: `name` is required")
            continue
        if name in names:
            c.err(c.line_of(item, "name"), f"{where}: duplicate key name {name!r}")
        names.add(name)
        digest = None
        if item.get("sha256") is not None:
            value = c.get(item, "sha256", str, where, "")
            if not re.fullmatch(r"[0-9a-f]{64}", value or ""):
                c.err(c.line_of(item, "sha256"), f"{where}.sha256 must be 64 lowercase hex digits")
            else:
                digest = bytes.fromhex(value)
        elif item.get("key") is not None:
            raw = item["key"]
            if not (isinstance(raw, str) and raw.startswith("env:")):
                c.err(c.line_of(item, "key"), f"{where}.key must be an env:NAME reference (or give sha256)")
            else:
                value, absent = c.secret(raw, c.line_of(item, "key"), f"{where}.key")
                if absent:
                    c.err(c.line_of(item, "key"), f"{where}.key: environment variable {absent} is not set")
                elif value:
                    digest = hashlib.sha256(value.encode()).digest()
        else:
            c.err(item.line, f"{where}: give `sha256` of the key or `key: env:NAME`")
        if digest is not None:
            result.append(KeySpec(
                name=name, digest=digest, group=c.get(item, "group", str, where, "default"),
                rpm=c.number(item, "rpm", where, None, 1, None, True),
                tpm=c.number(item, "tpm", where, None, 1, None, True),
                models=_key_models(c, item, where, models or {}, routes or []),
                cloud_budget_usd=cloud_budget(c, item, where),
            ))
    if required and not items:
        c.err(spec.line, "auth.required is true but no keys are defined")
    return required, tuple(result)


