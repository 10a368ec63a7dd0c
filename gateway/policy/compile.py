"""Validate a policy file fully and compile it into `schema.Policy`.

Every problem is reported as `file:line: message`, all of them at once. Nothing here touches the network
or the web stack; secrets (`env:NAME`) are resolved from the environment and never appear in messages.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, overload

from gateway.edge_weights import embedded_runtime_missing
from gateway.policy.durations import parse_duration
from gateway.policy.schema import (
    Band,
    BreakerSpec,
    CacheSpec,
    ClassifierSpec,
    DegradeSpec,
    Deployment,
    FeedbackSpec,
    KeySpec,
    LimitSpec,
    Match,
    ModelSpec,
    Policy,
    RetrySpec,
    Route,
    ShadowSpec,
    SpilloverSpec,
)
from gateway.policy.yamlsrc import Located, LocatedList, YamlSyntaxError, load_yaml

NATIVE_PREFIXES = ("openai/", "hosted_vllm/")
DEFAULT_OPENAI_BASE = "https://api.openai.com/v1"
PII_KINDS = ("email", "phone", "card", "iban", "national_id")
RETRY_ON = ("429", "5xx", "timeout", "connect", "408", "409")


@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyInvalid(Exception):
    def __init__(self, errors: list[PolicyError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def _item_line(items: list | None, i: int) -> int:
    return items.item_lines[i] if isinstance(items, LocatedList) else 1


class _Checker:
    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.errors: list[PolicyError] = []

    def err(self, line: int, message: str) -> None:
        self.errors.append(PolicyError(self.file, line or 1, message))

    # -- typed field access ------------------------------------------------------------------------
    def line_of(self, mapping, key) -> int:
        if isinstance(mapping, Located):
            return mapping.key_lines.get(key, mapping.line)
        return 1

    def mapping(self, value, line: int, where: str) -> Any:
        """The value when it is a mapping (a `Located` from the YAML loader), else None (error noted)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            self.err(line, f"{where} must be a mapping, got {_kind(value)}")
            return None
        return value

    def unknown_keys(self, mapping: dict, allowed: set, where: str) -> None:
        for key in mapping:
            if key not in allowed:
                hint = _close(str(key), allowed)
                self.err(self.line_of(mapping, key), f"unknown key {key!r} in {where}{hint}")

    def get(self, mapping, key, kind: type | tuple, where: str, default=None):
        if not isinstance(mapping, dict) or key not in mapping or mapping[key] is None:
            return default
        value = mapping[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            self.err(self.line_of(mapping, key), f"{where}.{key} must be {_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.err(self.line_of(mapping, key), f"{where}.{key} must be {_name(kind)}, got {_kind(value)}")
            return default
        return value

    @overload
    def duration(self, mapping, key, where: str, default: float) -> float: ...

    @overload
    def duration(self, mapping, key, where: str, default: None) -> float | None: ...

    def duration(self, mapping, key, where: str, default: float | None) -> float | None:
        if not isinstance(mapping, dict) or mapping.get(key) is None:
            return default
        try:
            return parse_duration(mapping[key])
        except ValueError as exc:
            self.err(self.line_of(mapping, key), f"{where}.{key}: {exc}")
            return default

    def number(self, mapping, key, where: str, default, lo=None, hi=None, integer=False):
        value = self.get(mapping, key, int if integer else (int, float), where)
        if value is None:
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.err(self.line_of(mapping, key), f"{where}.{key} must be {bounds}, got {value}")
            return default
        return value

    def names(self, mapping, key, where: str) -> tuple[list[str], list[int]]:
        """A string or a list of strings, with the line of each item."""
        value = mapping.get(key) if isinstance(mapping, dict) else None
        line = self.line_of(mapping, key)
        if value is None:
            return [], []
        if isinstance(value, str):
            return [value], [line]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            lines = getattr(value, "item_lines", [line] * len(value))
            return list(value), list(lines)
        self.err(line, f"{where}.{key} must be a name or a list of names")
        return [], []

    def secret(self, value: Any, line: int, where: str) -> tuple[Any, str | None]:
        """Resolve `env:NAME` (or `env:NAME:-default`); returns (value, missing variable name or None)."""
        if isinstance(value, str) and value.startswith("env:"):
            name, _, default = value[4:].partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.err(line, f"{where}: {value!r} is not a valid env:NAME reference")
                return None, None
            resolved = self.env.get(name) or default
            return (resolved, None) if resolved else (None, name)
        return value, None

    def regex(self, value, line: int, where: str) -> re.Pattern | None:
        if not isinstance(value, str):
            self.err(line, f"{where} must be a regular expression string")
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.err(line, f"{where}: regular expression does not compile: {exc}")
            return None


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__).replace(
        "Located", "a mapping").replace("LocatedList", "a list")


def _name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping",
             list: "a list"}
    return " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))


def _close(word: str, allowed) -> str:
    import difflib

    match = difflib.get_close_matches(word, [str(a) for a in allowed], n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# ---- sections -------------------------------------------------------------------------------------

_MODEL_KEYS = {"tier", "litellm", "embedded", "client", "deployments", "timeout", "connect_timeout",
               "first_token_timeout", "optional", "cost", "fallbacks", "description", "load", "kind"}
MODEL_KINDS = ("chat", "embedding")
LOAD_PROBES = ("llamacpp", "llamacpp-metrics", "llamacpp-slots", "vllm")
_DEPLOYMENT_RESERVED = {"weight", "name"}


def _model(c: _Checker, name: str, spec, line: int) -> ModelSpec | None:
    where = f"models.{name}"
    spec = c.mapping(spec, line, where)
    if spec is None:
        if line:
            c.err(line, f"{where} must be a mapping with at least `tier`")
        return None
    c.unknown_keys(spec, _MODEL_KEYS, where)
    tier = c.get(spec, "tier", str, where)
    if tier is None:
        c.err(line, f"{where}: `tier` is required (edge or cloud)")
    elif tier not in ("edge", "cloud"):
        c.err(c.line_of(spec, "tier"), f"{where}.tier must be edge or cloud, got {tier!r}")
    optional = bool(c.get(spec, "optional", bool, where, False))
    missing: list[str] = []
    kind = c.get(spec, "kind", str, where, "chat")
    if kind not in MODEL_KINDS:
        c.err(c.line_of(spec, "kind"), f"{where}.kind must be chat or embedding, got {kind!r}")
        kind = "chat"
    if kind == "embedding" and spec.get("embedded") is not None:
        c.err(c.line_of(spec, "kind"), f"{where}: the embedded model generates text and cannot embed; serve "
                                       f"embeddings from an OpenAI-compatible server (`litellm`)")
    not_installed = ""  # what this machine lacks to run the model (an install, not a policy error)

    embedded = c.mapping(spec.get("embedded"), c.line_of(spec, "embedded"), f"{where}.embedded")
    params = c.mapping(spec.get("litellm"), c.line_of(spec, "litellm"), f"{where}.litellm")
    if embedded is not None and params is not None:
        c.err(line, f"{where}: give either `litellm` or `embedded`, not both")
    if embedded is None and params is None:
        c.err(line, f"{where}: needs `litellm` parameters (or `embedded` for the in-process model)")
        return None

    if embedded is not None:
        c.unknown_keys(embedded, {"gguf", "alias", "n_ctx", "threads", "max_queue", "max_tokens"},
                       f"{where}.embedded")
        if tier == "cloud":
            c.err(c.line_of(spec, "tier"), f"{where}: an embedded model runs here, so its tier must be edge")
        options = {
            "gguf": c.get(embedded, "gguf", str, f"{where}.embedded", "default"),
            "alias": c.get(embedded, "alias", str, f"{where}.embedded", name),
            "n_ctx": c.number(embedded, "n_ctx", f"{where}.embedded", 2048, 128, 131072, True),
            "threads": c.number(embedded, "threads", f"{where}.embedded", 1, 1, 64, True),
            "max_queue": c.number(embedded, "max_queue", f"{where}.embedded", 8, 0, 10000, True),
            "max_tokens": c.number(embedded, "max_tokens", f"{where}.embedded", 256, 1, 32768, True),
        }
        client, upstream_model = "embedded", options["alias"]
        deployments: tuple[Deployment, ...] = (Deployment(f"{name}#0", {"model": upstream_model}),)
        not_installed = embedded_runtime_missing(options["gguf"])
    else:
        options = {}
        model_id = c.get(params, "model", str, f"{where}.litellm")
        if model_id is None:
            c.err(params.line, f"{where}.litellm.model is required (a litellm model id, e.g. openai/gpt-4o)")
            model_id = "unknown"
        client = c.get(spec, "client", str, where, "auto")
        if client not in ("auto", "native", "litellm"):
            c.err(c.line_of(spec, "client"), f"{where}.client must be auto, native or litellm")
            client = "auto"
        native_ok = model_id.startswith(NATIVE_PREFIXES)
        if client == "native" and not native_ok:
            c.err(c.line_of(spec, "client"),
                  f"{where}: the native client speaks the OpenAI API only; use a model id starting with "
                  f"{' or '.join(NATIVE_PREFIXES)}")
        if client == "auto":
            client = "native" if native_ok else "litellm"
        upstream_model = model_id.split("/", 1)[1] if client == "native" else model_id

        base = {}
        for key, value in params.items():
            resolved, absent = c.secret(value, c.line_of(params, key), f"{where}.litellm.{key}")
            if absent:
                missing.append(absent)
            base[key] = resolved
        items = spec.get("deployments")
        deployments_list, dropped = [], []
        if items is None:
            deployments_list.append(Deployment(f"{name}#0", base))
        elif not isinstance(items, list) or not items:
            c.err(c.line_of(spec, "deployments"), f"{where}.deployments must be a non-empty list")
        else:
            for i, item in enumerate(items):
                item_line = items.item_lines[i] if isinstance(items, LocatedList) else spec.line
                item = c.mapping(item, item_line, f"{where}.deployments[{i}]")
                if item is None:
                    continue
                merged, own_missing = dict(base), []
                for key, value in item.items():
                    if key in _DEPLOYMENT_RESERVED:
                        continue
                    resolved, absent = c.secret(value, c.line_of(item, key), f"{where}.deployments[{i}].{key}")
                    if absent:
                        own_missing.append(absent)
                    merged[key] = resolved
                weight = c.number(item, "weight", f"{where}.deployments[{i}]", 1.0, 0.0)
                dname = c.get(item, "name", str, f"{where}.deployments[{i}]", f"{name}#{i}")
                if own_missing and optional:
                    dropped.extend(own_missing)  # an optional model keeps its deployments that are set
                    continue
                missing.extend(own_missing)
                deployments_list.append(Deployment(dname, merged, float(weight)))
            if dropped and not deployments_list:
                missing.extend(dropped)
        if client == "native":
            for d in deployments_list:
                d.params.setdefault("api_base", DEFAULT_OPENAI_BASE if model_id.startswith("openai/") else None)
                if not d.params.get("api_base") and not missing:
                    c.err(line, f"{where}: {model_id.split('/')[0]} models need litellm.api_base")
        deployments = tuple(deployments_list)

    cost = c.mapping(spec.get("cost"), c.line_of(spec, "cost"), f"{where}.cost")
    if cost is not None:
        c.unknown_keys(cost, {"input_per_mtok", "output_per_mtok"}, f"{where}.cost")
    fallbacks, _ = c.names(spec, "fallbacks", where)
    probe, interval = None, 1.0
    load_spec = c.mapping(spec.get("load"), c.line_of(spec, "load"), f"{where}.load")
    if load_spec is not None:
        c.unknown_keys(load_spec, {"probe", "interval"}, f"{where}.load")
        probe = c.get(load_spec, "probe", str, f"{where}.load")
        if probe not in LOAD_PROBES:
            c.err(c.line_of(load_spec, "probe"), f"{where}.load.probe must be one of {', '.join(LOAD_PROBES)}")
            probe = None
        if embedded is not None:
            c.err(c.line_of(spec, "load"), f"{where}: the embedded model reports its own load; remove `load`")
        interval = c.duration(load_spec, "interval", f"{where}.load", 1.0)
    unavailable = ""
    if missing:
        names = ", ".join(sorted(set(missing)))
        if optional:
            unavailable = f"environment variable {names} is not set"
        else:
            c.err(line, f"{where}: environment variable {names} is not set "
                             f"(set it, or mark the model `optional: true` to skip it while unset)")
    unavailable = unavailable or not_installed
    return ModelSpec(
        name=name,
        tier=tier or "edge",
        client=client,
        upstream_model=upstream_model,
        deployments=deployments,
        timeout=c.duration(spec, "timeout", where, 60.0),
        connect_timeout=c.duration(spec, "connect_timeout", where, 5.0),
        first_token_timeout=c.duration(spec, "first_token_timeout", where, 30.0),
        available=not unavailable,
        unavailable_reason=unavailable,
        cost_input_per_mtok=c.number(cost, "input_per_mtok", f"{where}.cost", None, 0.0) if cost else None,
        cost_output_per_mtok=c.number(cost, "output_per_mtok", f"{where}.cost", None, 0.0) if cost else None,
        fallbacks=tuple(fallbacks),
        embedded=options,
        load_probe=probe,
        load_interval=interval,
        line=line,
        kind=kind,
    )


def _retry(c: _Checker, spec, line: int, where: str, base: RetrySpec) -> RetrySpec:
    spec = c.mapping(spec, line, where)
    if spec is None:
        return base
    c.unknown_keys(spec, {"attempts", "backoff", "on", "retry_after_cap"}, where)
    backoff = c.mapping(spec.get("backoff"), c.line_of(spec, "backoff"), f"{where}.backoff") or {}
    if backoff:
        c.unknown_keys(backoff, {"initial", "max", "jitter"}, f"{where}.backoff")
    jitter = c.get(backoff, "jitter", str, f"{where}.backoff", base.jitter)
    if jitter not in ("full", "none"):
        c.err(c.line_of(backoff, "jitter"), f"{where}.backoff.jitter must be full or none")
        jitter = base.jitter
    on = base.on
    if "on" in spec:
        raw_on = spec["on"]
        if isinstance(raw_on, LocatedList):  # status codes may be written as numbers: [429, 5xx]
            spec["on"] = LocatedList(str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in raw_on)
            spec["on"].line, spec["on"].item_lines = raw_on.line, raw_on.item_lines
        items, lines = c.names(spec, "on", where)
        for item, item_line in zip(items, lines):
            if item not in RETRY_ON:
                c.err(item_line, f"{where}.on: unknown condition {item!r} (use {', '.join(RETRY_ON)})")
        on = frozenset(items)
    return RetrySpec(
        attempts=c.number(spec, "attempts", where, base.attempts, 1, 20, True),
        initial=c.duration(backoff, "initial", f"{where}.backoff", base.initial),
        max_backoff=c.duration(backoff, "max", f"{where}.backoff", base.max_backoff),
        jitter=jitter,
        on=on,
        retry_after_cap=c.duration(spec, "retry_after_cap", where, base.retry_after_cap),
    )


def _degrade(c: _Checker, spec, line: int, where: str, base: DegradeSpec) -> DegradeSpec:
    spec = c.mapping(spec, line, where)
    if spec is None:
        return base
    c.unknown_keys(spec, {"reply", "retry_after", "webhook", "webhook_internal"}, where)
    webhook, absent = c.secret(c.get(spec, "webhook", str, where, base.webhook), c.line_of(spec, "webhook"),
                               f"{where}.webhook")
    if absent:
        c.err(c.line_of(spec, "webhook"), f"{where}.webhook: environment variable {absent} is not set")
    reply = c.get(spec, "reply", str, where, base.reply)
    if "reply" in spec and (spec["reply"] is None or str(spec["reply"]).strip().lower() == "none"):
        reply = None  # `reply: none` (or null): 503 with Retry-After, also over a policy-level reply
    return DegradeSpec(
        reply=reply,
        retry_after=c.duration(spec, "retry_after", where, base.retry_after),
        webhook=webhook,
        webhook_internal=bool(c.get(spec, "webhook_internal", bool, where, base.webhook_internal)),
    )


def _band(c: _Checker, value, line: int, where: str, integer: bool) -> Band | None:
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


def _match(c: _Checker, spec, line: int, where: str) -> Match:
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
        return tuple(_match(c, v, ln, f"{where}.{key}[{i}]") for i, (v, ln) in enumerate(zip(value, lines)))

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


def _chain(c: _Checker, route, key: str, where: str, models: dict) -> tuple[str, ...]:
    names, lines = c.names(route, key, where)
    for n, ln in zip(names, lines):
        if n not in models:
            c.err(ln, f"{where}.{key}: unknown model {n!r}{_close(n, models)}")
        elif models[n].kind != "chat":
            c.err(ln, f"{where}.{key}: {n!r} is an embedding model; routes send chat requests "
                      f"(embeddings name their model on /v1/embeddings)")
    if key in route and not names:
        c.err(c.line_of(route, key), f"{where}.{key} must list at least one model")
    return tuple(names)


def _route(c: _Checker, spec, line: int, index: int, models: dict, defaults: dict) -> Route | None:
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
    degrade = _degrade(c, spec.get("degrade"), c.line_of(spec, "degrade"), f"{where}.degrade",
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
    when = _match(c, spec.get("when"), c.line_of(spec, "when"), f"{where}.when")
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
        retry=_retry(c, spec.get("retry"), c.line_of(spec, "retry"), f"{where}.retry", defaults["retry"]),
        degrade=degrade,
        cache=cache,
        spillover=spill,
        deadline=c.duration(spec, "deadline", where, defaults["deadline"]),
        line=line,
        cloud_budget_usd=_budget(c, spec, where, edge_only),
    )


def _budget(c: _Checker, spec, where: str, edge_only: bool = False) -> float | None:
    """`cloud_budget_usd` of a route or a key: dollars of cloud spend per UTC day."""
    value = c.number(spec, "cloud_budget_usd", where, None, 0.0)
    if value is not None and edge_only:
        c.err(c.line_of(spec, "cloud_budget_usd"), f"{where}: an edge_only route never spends on the cloud; "
                                                   f"cloud_budget_usd has no effect here")
    return None if value is None else float(value)


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


def _key_models(c: _Checker, item, where: str, models: dict, routes: list) -> tuple[str, ...] | None:
    """A key's `models:` allow-list: names a client may send as `model` (auto, aliases, route models, globs)."""
    if "models" not in item:
        return None
    names, lines = c.names(item, "models", where)
    if not names:
        c.err(c.line_of(item, "models"), f"{where}.models must name at least one model (or leave it out)")
        return None
    route_models = tuple(m for r in routes for m in _all_models(r.when))
    for name, line in zip(names, lines):
        if any(ch in name for ch in "*?["):
            continue
        if name != "auto" and name not in models and not model_matches(route_models, name):
            known = ["auto", *models, *(m for m in route_models if not any(ch in m for ch in "*?["))]
            c.err(line, f"{where}.models: unknown model {name!r}{_close(name, known)} (use auto, a model of "
                        f"`models`, or a model named by a route's `when.model`)")
    return tuple(names)


def _keys(c: _Checker, spec, line: int, models: dict | None = None,
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
        item = c.mapping(item, _item_line(items, i), where)
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
                cloud_budget_usd=_budget(c, item, where),
            ))
    if required and not items:
        c.err(spec.line, "auth.required is true but no keys are defined")
    return required, tuple(result)


def compile_policy(text: str, source: str = "<policy>", env: dict | None = None,
                   loaded_at: float | None = None) -> Policy:
    """Validate and compile policy text. Raises PolicyInvalid with every error found."""
    c = _Checker(source, os.environ if env is None else env)
    try:
        data = load_yaml(text)
    except YamlSyntaxError as exc:
        raise PolicyInvalid([PolicyError(source, exc.line, exc.message)]) from None
    if data is None:
        raise PolicyInvalid([PolicyError(source, 1, "the policy file is empty")])
    if not isinstance(data, dict):
        raise PolicyInvalid([PolicyError(source, 1, "the policy must be a mapping at the top level")])
    c.unknown_keys(data, {"version", "models", "routes", "classifier", "retry", "breaker", "degrade",
                          "deadline", "auth", "limits", "logging", "feedback", "conversations", "responses"},
                   "the policy")
    version = data.get("version", 1)
    if version != 1:
        c.err(c.line_of(data, "version"), f"unsupported policy version {version!r} (this gateway reads 1)")

    models: dict[str, ModelSpec] = {}
    model_section = c.mapping(data.get("models"), c.line_of(data, "models"), "models")
    if not model_section:
        c.err(c.line_of(data, "models"), "`models` must define at least one model")
    for name, spec in (model_section or {}).items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", name):
            c.err(c.line_of(model_section, name), f"model name {name!r} must be letters, digits, . _ : / -")
            continue
        if name == "auto":
            c.err(c.line_of(model_section, name), "`auto` is reserved: it asks the gateway to route")
            continue
        model = _model(c, name, spec, c.line_of(model_section, name))
        if model is not None:
            models[name] = model
    for model in models.values():
        for fb in model.fallbacks:
            if fb not in models:
                c.err(model.line, f"models.{model.name}.fallbacks: unknown model {fb!r}{_close(fb, models)}")
            elif models[fb].kind != model.kind:
                c.err(model.line, f"models.{model.name}.fallbacks: {fb!r} is a {models[fb].kind} model, "
                                  f"{model.name!r} a {model.kind} model")

    retry = _retry(c, data.get("retry"), c.line_of(data, "retry"), "retry", RetrySpec())
    breaker_spec = c.mapping(data.get("breaker"), c.line_of(data, "breaker"), "breaker")
    breaker = BreakerSpec()
    if breaker_spec is not None:
        c.unknown_keys(breaker_spec, {"failures", "window", "cooldown", "enabled", "failure_ratio", "min_requests",
                                      "consecutive"}, "breaker")
        if "failures" in breaker_spec and "failure_ratio" in breaker_spec:
            c.err(c.line_of(breaker_spec, "failure_ratio"),
                  "breaker: give `failures` (count of failures) or `failure_ratio` (share of attempts), not both")
        for key in ("min_requests", "consecutive"):
            if key in breaker_spec and "failures" in breaker_spec:
                c.err(c.line_of(breaker_spec, key),
                      f"breaker.{key} belongs to the ratio mode; with `failures` (count mode) it has no effect")
        count_mode = "failures" in breaker_spec
        ratio = None if count_mode else c.number(breaker_spec, "failure_ratio", "breaker", 0.5, 0.01, 1.0)
        breaker = BreakerSpec(
            failures=c.number(breaker_spec, "failures", "breaker", 5, 1, None, True),
            window=c.duration(breaker_spec, "window", "breaker", 30.0),
            cooldown=c.duration(breaker_spec, "cooldown", "breaker", 20.0),
            enabled=bool(c.get(breaker_spec, "enabled", bool, "breaker", True)),
            failure_ratio=float(ratio) if ratio is not None else None,
            min_requests=c.number(breaker_spec, "min_requests", "breaker", 10, 1, None, True),
            consecutive=c.number(breaker_spec, "consecutive", "breaker", 5, 1, None, True),
        )
    degrade = _degrade(c, data.get("degrade"), c.line_of(data, "degrade"), "degrade", DegradeSpec())
    deadline = c.duration(data, "deadline", "the policy", 120.0)

    cls_spec = c.mapping(data.get("classifier"), c.line_of(data, "classifier"), "classifier")
    classifier = ClassifierSpec()
    if cls_spec is not None:
        c.unknown_keys(cls_spec, {"kind", "threshold", "cloud_share", "input", "max_chars", "hold_window",
                                  "allow_higher_share"}, "classifier")
        kind = c.get(cls_spec, "kind", str, "classifier", "onnx")
        if kind not in ("onnx", "length"):
            c.err(c.line_of(cls_spec, "kind"), "classifier.kind must be onnx or length")
            kind = "onnx"
        inp = c.get(cls_spec, "input", str, "classifier", "last_user")
        if inp not in ("last_user", "user", "all"):
            c.err(c.line_of(cls_spec, "input"), "classifier.input must be last_user, user or all")
            inp = "last_user"
        threshold = c.number(cls_spec, "threshold", "classifier", None, 0.0, 1.0)
        share = c.number(cls_spec, "cloud_share", "classifier", None, 0.0, 1.0)
        if threshold is not None and share is not None:
            c.err(cls_spec.line, "classifier: give threshold or cloud_share, not both")
        hold = c.number(cls_spec, "hold_window", "classifier", 0, 0, None, True)
        if hold and share is None:
            c.err(c.line_of(cls_spec, "hold_window"), "classifier.hold_window holds cloud_share: set cloud_share too")
        classifier = ClassifierSpec(kind, threshold, share, inp,
                                    c.number(cls_spec, "max_chars", "classifier", 4000, 100, None, True), hold,
                                    bool(c.get(cls_spec, "allow_higher_share", bool, "classifier", False)))

    defaults = {"retry": retry, "degrade": degrade, "deadline": deadline}
    routes = []
    route_items = data.get("routes")
    if route_items is not None and not isinstance(route_items, list):
        c.err(c.line_of(data, "routes"), "`routes` must be a list")
        route_items = []
    for i, item in enumerate(route_items or []):
        route = _route(c, item, _item_line(route_items, i), i, models, defaults)
        if route is not None:
            routes.append(route)
    seen_names: dict[str, int] = {}
    for route in routes:
        if route.name in seen_names:
            c.err(route.line, f"route name {route.name!r} is already used on line {seen_names[route.name]}")
        seen_names.setdefault(route.name, route.line)

    auth_required, keys = _keys(c, data.get("auth"), c.line_of(data, "auth"), models, routes)
    limits_spec = c.mapping(data.get("limits"), c.line_of(data, "limits"), "limits")
    model_limits, fail_open = {}, True
    if limits_spec is not None:
        c.unknown_keys(limits_spec, {"fail", "models"}, "limits")
        fail = c.get(limits_spec, "fail", str, "limits", "open")
        if fail not in ("open", "closed"):
            c.err(c.line_of(limits_spec, "fail"), "limits.fail must be open or closed")
        fail_open = fail != "closed"
        per_model = c.mapping(limits_spec.get("models"), c.line_of(limits_spec, "models"), "limits.models")
        for name, spec in (per_model or {}).items():
            if name not in models:
                c.err(c.line_of(per_model, name), f"limits.models: unknown model {name!r}")
                continue
            spec = c.mapping(spec, c.line_of(per_model, name), f"limits.models.{name}")
            if spec is not None:
                c.unknown_keys(spec, {"rpm", "tpm"}, f"limits.models.{name}")
                model_limits[name] = LimitSpec(c.number(spec, "rpm", f"limits.models.{name}", None, 1, None, True),
                                               c.number(spec, "tpm", f"limits.models.{name}", None, 1, None, True))
    logging_spec = c.mapping(data.get("logging"), c.line_of(data, "logging"), "logging") or {}
    if logging_spec:
        c.unknown_keys(logging_spec, {"prompts"}, "logging")
    log_prompts = bool(c.get(logging_spec, "prompts", bool, "logging", False))
    feedback_map = c.mapping(data.get("feedback"), c.line_of(data, "feedback"), "feedback") or {}
    if feedback_map:
        c.unknown_keys(feedback_map, {"enabled", "store_prompts", "window_s", "retention_days", "max_records",
                            "promote_margin", "implicit", "implicit_window_s", "shadow"}, "feedback")
    feedback = FeedbackSpec(bool(c.get(feedback_map, "enabled", bool, "feedback", "feedback" in data)),
                            bool(c.get(feedback_map, "store_prompts", bool, "feedback", False)),
                            float(c.number(feedback_map, "window_s", "feedback", 86400.0, 1, None)),
                            float(c.number(feedback_map, "retention_days", "feedback", 30.0, 0.001, None)),
                            int(c.number(feedback_map, "max_records", "feedback", 100_000, 1, None, True)),
                            float(c.number(feedback_map, "promote_margin", "feedback", 0.01, -1.0, 1.0)),
                            bool(c.get(feedback_map, "implicit", bool, "feedback", True)),
                            float(c.number(feedback_map, "implicit_window_s", "feedback", 120.0, 1, None)),
                            _shadow(c, feedback_map, models))
    conversations = c.mapping(data.get("conversations"), c.line_of(data, "conversations"), "conversations")
    if conversations is not None:
        c.unknown_keys(conversations, {"sticky", "ttl"}, "conversations")
    sticky_ttl: float | None = c.duration(conversations, "ttl", "conversations", 3600.0)
    if not c.get(conversations, "sticky", bool, "conversations", True):
        sticky_ttl = None
    responses = c.mapping(data.get("responses"), c.line_of(data, "responses"), "responses")
    if responses is not None:
        c.unknown_keys(responses, {"store", "ttl"}, "responses")
    responses_ttl: float | None = c.duration(responses, "ttl", "responses", 3600.0)
    if not c.get(responses, "store", bool, "responses", False):
        responses_ttl = None

    if c.errors:
        raise PolicyInvalid(c.errors)

    virtual = []
    for route in routes:
        for m in _all_models(route.when):
            if m != "auto" and m not in models and not any(ch in m for ch in "*?[") and m not in virtual:
                virtual.append(m)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    loaded_at = time.time() if loaded_at is None else loaded_at
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(loaded_at))
    return Policy(
        source=source,
        version=f"{digest}-{stamp}",
        content_hash=digest,
        models=models,
        routes=tuple(routes),
        classifier=classifier,
        retry=retry,
        breaker=breaker,
        degrade=degrade,
        deadline=deadline,
        auth_required=auth_required,
        keys=keys,
        model_limits=model_limits,
        limits_fail_open=fail_open,
        log_prompts=log_prompts,
        virtual_models=tuple(virtual),
        uses_score_in_match=any(r.when.uses_score for r in routes),
        uses_pii=any(r.when.uses_pii for r in routes),
        feedback=feedback,
        sticky_ttl=sticky_ttl,
        responses_ttl=responses_ttl,
    )


def _shadow(c: _Checker, feedback_map, models: dict[str, ModelSpec]) -> ShadowSpec | None:
    """`feedback.shadow`: rate, daily budget and the judge, a chat model of this policy."""
    spec = c.mapping(feedback_map.get("shadow"), c.line_of(feedback_map, "shadow"), "feedback.shadow")
    if spec is None:
        return None
    where = "feedback.shadow"
    c.unknown_keys(spec, {"rate", "daily_budget_usd", "judge", "max_tokens"}, where)
    for key in ("rate", "daily_budget_usd", "judge"):
        if spec.get(key) is None:
            c.err(spec.line, f"{where}.{key} is required")
    judge = c.get(spec, "judge", str, where)
    if judge is not None:
        model = models.get(judge)
        if model is None:
            c.err(c.line_of(spec, "judge"), f"{where}.judge: unknown model {judge!r}{_close(judge, models)}")
        elif model.kind != "chat":
            c.err(c.line_of(spec, "judge"), f"{where}.judge: {judge!r} is an {model.kind} model, not a chat model")
    rate = c.number(spec, "rate", where, None, 0.0, 1.0)
    budget = c.number(spec, "daily_budget_usd", where, None, 0.0, None)
    max_tokens = c.number(spec, "max_tokens", where, 512, 1, None, True)
    if judge is None or rate is None or budget is None:
        return None
    return ShadowSpec(float(rate), float(budget), judge, int(max_tokens))


def _all_models(match: Match):
    yield from match.models or ()
    for part in match.any + match.none:
        yield from _all_models(part)


def model_matches(patterns: tuple[str, ...], model: str) -> bool:
    return any(p == model or (any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(model, p)) for p in patterns)


def load_policy(path: str, env: dict | None = None) -> Policy:
    """Read and compile a policy file; raises PolicyInvalid (file errors included)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise PolicyInvalid([PolicyError(path, 1, f"cannot read the policy file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise PolicyInvalid([PolicyError(path, 1, "the policy file is not valid UTF-8")]) from None
    return compile_policy(text, path, env)
