"""The `routes:` section: match conditions (`when`), target chains, spillover, cache and cloud budgets."""

from __future__ import annotations

import fnmatch
from dataclasses import replace

from gateway.policy.checker import Checker, did_you_mean, item_line
from gateway.policy.schema import Band, CacheSpec, Match, Route, SpilloverSpec
from gateway.policy.sections import cloud_budget, compile_degrade, compile_retry

PII_KINDS = ("email", "phone", "card", "iban", "national_id")

def _band(c: Checker, value, line: int, where: str, integer: bool) -> Band | None:
    spec = c.mapping(value, line, where)
    if spec is None:
        return None
    c.unknown_keys(spec, {"min", "max"}, where)
    lo = c.number(spec, "min", where, None, 0, None, integer)
    hi = c.number(spec, "max", where, None, 0, None, integer)
    if lo is not None and hi is not None and lo > hi:
        c.err(spec.line, f"{where}: min {lo} is above max {hi}")
    return Band(lo, hi)


_WHEN_KEYS = {"model", "key", "group", "header", "messages", "tokens", "tools", "images", "last_user",
              "score", "pii", "any", "not"}


def compile_match(c: Checker, spec, line: int, where: str) -> Match:
    if spec is None:
        return Match()
    spec = c.mapping(spec, line, where)
    if spec is None:
        return Match()
    c.unknown_keys(spec, _WHEN_KEYS, where)
    models, _ = c.names(spec, "model", where)
    keys, _ = c.names(spec, "key", where)
    groups, _ = c.names(spec, "group", where)
    headers = []
    header_spec = c.mapping(spec.get("header"), c.line_of(spec, "header"), f"{where}.header")
    for name, pattern in (header_spec or {}).items():
        compiled = c.regex(pattern, c.line_of(header_spec, name), f"{where}.header.{name}")
        if compiled is not None:
            headers.append((str(name).lower(), compiled))
    last_user = None
    if spec.get("last_user") is not None:
        last_user = c.regex(spec["last_user"], c.line_of(spec, "last_user"), f"{where}.last_user")
    pii, pii_kinds = None, None
    value = spec.get("pii")
    if isinstance(value, bool):
        pii = value
    elif value is not None:
        kinds, kind_lines = c.names(spec, "pii", where)
        for kind, kind_line in zip(kinds, kind_lines):
            if kind not in PII_KINDS:
                c.err(kind_line, f"{where}.pii: unknown kind {kind!r} (use {', '.join(PII_KINDS)})")
        pii_kinds = tuple(kinds)
    score = _band(c, spec.get("score"), c.line_of(spec, "score"), f"{where}.score", False)
    if score is not None and ((score.min or 0) > 1 or (score.max is not None and score.max > 1)):
        c.err(c.line_of(spec, "score"), f"{where}.score: scores are between 0 and 1")

    def parts(key: str) -> tuple[Match, ...]:
        value = spec.get(key)
        if value is None:
            return ()
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            c.err(c.line_of(spec, key), f"{where}.{key} must be a list of conditions")
            return ()
        lines = getattr(value, "item_lines", [c.line_of(spec, key)] * len(value))
        return tuple(compile_match(c, v, ln, f"{where}.{key}[{i}]") for i, (v, ln) in enumerate(zip(value, lines)))

    return Match(
        models=tuple(models) or None,
        keys=tuple(keys) or None,
        groups=tuple(groups) or None,
        headers=tuple(headers),
        messages=_band(c, spec.get("messages"), c.line_of(spec, "messages"), f"{where}.messages", True),
        tokens=_band(c, spec.get("tokens"), c.line_of(spec, "tokens"), f"{where}.tokens", True),
        tools=c.get(spec, "tools", bool, where),
        images=c.get(spec, "images", bool, where),
        last_user=last_user,
        score=score,
        pii=pii,
        pii_kinds=pii_kinds,
        any=parts("any"),
        none=parts("not"),
    )


_ROUTE_KEYS = {"name", "when", "targets", "simple", "complex", "threshold", "edge_only", "retry", "degrade",
               "cache", "spillover", "deadline", "description", "unscannable", "cloud_budget_usd"}


def _chain(c: Checker, route, key: str, where: str, models: dict) -> tuple[str, ...]:
    names, lines = c.names(route, key, where)
    for n, ln in zip(names, lines):
        if n not in models:
            c.err(ln, f"{where}.{key}: unknown model {n!r}{did_you_mean(n, models)}")
        elif models[n].kind != "chat":
            c.err(ln, f"{where}.{key}: {n!r} is an embedding model; routes send chat requests "
                      f"(embeddings name their model on /v1/embeddings)")
    if key in route and not names:
        c.err(c.line_of(route, key), f"{where}.{key} must list at least one model")
    return tuple(names)


def compile_route(c: Checker, spec, line: int, index: int, models: dict, defaults: dict) -> Route | None:
    where = f"routes[{index}]"
    spec = c.mapping(spec, line, where)
    if spec is None:
        return None
    c.unknown_keys(spec, _ROUTE_KEYS, where)
    name = c.get(spec, "name", str, where)
    if not name:
        c.err(spec.line, f"{where}: `name` is required")
        name = f"route{index}"
    where = f"routes[{index}] ({name})"
    targets = _chain(c, spec, "targets", where, models)
    simple = _chain(c, spec, "simple", where, models)
    complex_ = _chain(c, spec, "complex", where, models)
    split = bool(simple or complex_)
    if targets and split:
        c.err(spec.line, f"{where}: give either `targets` or `simple`/`complex`, not both")
    if split and not (simple and complex_):
        c.err(spec.line, f"{where}: `simple` and `complex` go together")
    if not targets and not split:
        c.err(spec.line, f"{where}: needs `targets` or `simple` and `complex`")
    if targets:
        simple = complex_ = targets
    edge_only = bool(c.get(spec, "edge_only", bool, where, False))
    degrade = compile_degrade(c, spec.get("degrade"), c.line_of(spec, "degrade"), f"{where}.degrade",
                       defaults["degrade"])
    spill = None
    spill_spec = c.mapping(spec.get("spillover"), c.line_of(spec, "spillover"), f"{where}.spillover")
    if spill_spec is not None:
        c.unknown_keys(spill_spec, {"queue_depth", "expected_wait", "to", "hold"}, f"{where}.spillover")
        to = _chain(c, spill_spec, "to", f"{where}.spillover", models)
        if not to:
            c.err(spill_spec.line, f"{where}.spillover.to must list the models to spill to")
        queue_depth = c.number(spill_spec, "queue_depth", f"{where}.spillover", None, 0, None, True)
        wait = c.duration(spill_spec, "expected_wait", f"{where}.spillover", None)
        if queue_depth is None and wait is None:
            c.err(spill_spec.line, f"{where}.spillover needs queue_depth or expected_wait")
        spill = SpilloverSpec(queue_depth, wait, to, c.duration(spill_spec, "hold", f"{where}.spillover", 10.0))
    if edge_only:
        chains = {"targets": simple} if targets else {"simple": simple, "complex": complex_}
        if spill:
            chains["spillover.to"] = spill.to
        for key, chain in chains.items():
            for n in chain:
                for reached in _reachable(n, models):
                    m = models.get(reached)
                    if m is not None and m.tier != "edge":
                        via = "" if reached == n else f" (through the fallbacks of {n!r})"
                        c.err(c.line_of(spec, "edge_only"),
                              f"{where}: edge_only route can reach cloud model {reached!r} in {key}{via}")
        if degrade.webhook and not degrade.webhook_internal:
            c.err(c.line_of(spec, "edge_only"),
                  f"{where}: edge_only route posts conversations to a webhook; mark it `webhook_internal: true` "
                  f"if that endpoint stays on premises")
    cache = None
    cache_spec = c.mapping(spec.get("cache"), c.line_of(spec, "cache"), f"{where}.cache")
    if cache_spec is not None:
        c.unknown_keys(cache_spec, {"ttl"}, f"{where}.cache")
        cache = CacheSpec(c.duration(cache_spec, "ttl", f"{where}.cache", 300.0))
    threshold = c.number(spec, "threshold", where, None, 0.0, 1.0)
    when = compile_match(c, spec.get("when"), c.line_of(spec, "when"), f"{where}.when")
    unscannable = c.get(spec, "unscannable", str, where, "ignore")
    if unscannable not in ("personal", "ignore"):
        c.err(c.line_of(spec, "unscannable"), f"{where}.unscannable must be personal or ignore")
    elif unscannable == "personal":
        if when.uses_pii:
            when = _unscannable_is_personal(when)
        else:
            c.err(c.line_of(spec, "unscannable"),
                  f"{where}: `unscannable: personal` applies to the pii conditions of `when`, and there are none")
    return Route(
        name=name,
        when=when,
        simple=simple,
        complex=complex_,
        split=split and simple != complex_,
        threshold=threshold,
        edge_only=edge_only,
        retry=compile_retry(c, spec.get("retry"), c.line_of(spec, "retry"), f"{where}.retry", defaults["retry"]),
        degrade=degrade,
        cache=cache,
        spillover=spill,
        deadline=c.duration(spec, "deadline", where, defaults["deadline"]),
        line=line,
        cloud_budget_usd=cloud_budget(c, spec, where, edge_only),
    )


def _unscannable_is_personal(match: Match) -> Match:
    """The same conditions, with image, audio and file parts counting as personal data in each pii test."""
    return replace(match, pii_unscannable=match.pii is not None or match.pii_kinds is not None,
                   any=tuple(map(_unscannable_is_personal, match.any)),
                   none=tuple(map(_unscannable_is_personal, match.none)))


def _reachable(name: str, models: dict) -> list[str]:
    """The model and every model its `fallbacks` can lead to."""
    seen, todo = [], [name]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.append(n)
        m = models.get(n)
        if m is not None:
            todo.extend(m.fallbacks)
    return seen

def all_models(match: Match):
    yield from match.models or ()
    for part in match.any + match.none:
        yield from all_models(part)


def model_matches(patterns: tuple[str, ...], model: str) -> bool:
    return any(p == model or (any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(model, p)) for p in patterns)




def compile_routes(c: Checker, data, models: dict, defaults: dict) -> list[Route]:
    """Every entry of `routes:` in order (first match wins); route names must be unique."""
    routes = []
    route_items = data.get("routes")
    if route_items is not None and not isinstance(route_items, list):
        c.err(c.line_of(data, "routes"), "`routes` must be a list")
        route_items = []
    for i, item in enumerate(route_items or []):
        route = compile_route(c, item, item_line(route_items, i), i, models, defaults)
        if route is not None:
            routes.append(route)
    seen_names: dict[str, int] = {}
    for route in routes:
        if route.name in seen_names:
            c.err(route.line, f"route name {route.name!r} is already used on line {seen_names[route.name]}")
        seen_names.setdefault(route.name, route.line)
    return routes
