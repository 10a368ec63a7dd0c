"""The `models:` section: model specs, their deployments and secrets, and the client each is called with."""

from __future__ import annotations

import re

from gateway.edge_weights import embedded_runtime_missing
from gateway.policy.checker import Checker, did_you_mean
from gateway.policy.clients import CLIENT_KINDS, WRITABLE, ClientKind, auto_kind
from gateway.policy.schema import Deployment, ModelSpec
from gateway.policy.yamlsrc import LocatedList

_MODEL_KEYS = {"tier", "litellm", "embedded", "client", "deployments", "timeout", "connect_timeout",
               "first_token_timeout", "optional", "cost", "fallbacks", "description", "load", "kind"}
MODEL_KINDS = ("chat", "embedding")
LOAD_PROBES = ("llamacpp", "llamacpp-metrics", "llamacpp-slots", "vllm")
_DEPLOYMENT_RESERVED = {"weight", "name"}


def compile_model(c: Checker, name: str, spec, line: int) -> ModelSpec | None:
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
        client, upstream_model = CLIENT_KINDS["embedded"], options["alias"]
        deployments: tuple[Deployment, ...] = (Deployment(f"{name}#0", {"model": upstream_model}),)
        not_installed = embedded_runtime_missing(options["gguf"])
    else:
        options = {}
        model_id = c.get(params, "model", str, f"{where}.litellm")
        if model_id is None:
            c.err(params.line, f"{where}.litellm.model is required (a litellm model id, e.g. openai/gpt-4o)")
            model_id = "unknown"
        client = _client_kind(c, spec, model_id, kind == "embedding", where)
        upstream_model = client.upstream_model(model_id)

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
        if not missing and client.speaks(model_id):  # else reported above; one error per cause
            _check_params(c, client, model_id, deployments_list, line, where)
        else:
            _fill_defaults(client, model_id, deployments_list)
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
        client=client.name,
        dialect=client.dialect,
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




def compile_models(c: Checker, data) -> dict[str, ModelSpec]:
    """Every entry of `models:`, then the `fallbacks` between them."""
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
        model = compile_model(c, name, spec, c.line_of(model_section, name))
        if model is not None:
            models[name] = model
    for model in models.values():
        for fb in model.fallbacks:
            if fb not in models:
                c.err(model.line, f"models.{model.name}.fallbacks: unknown model {fb!r}{did_you_mean(fb, models)}")
            elif models[fb].kind != model.kind:
                c.err(model.line, f"models.{model.name}.fallbacks: {fb!r} is a {models[fb].kind} model, "
                                  f"{model.name!r} a {model.kind} model")
    return models


def _client_kind(c: Checker, spec, model_id: str, embedding: bool, where: str) -> ClientKind:
    """The kind the entry's `client:` names (or `auto` picks for the model id), checked against the id."""
    name = c.get(spec, "client", str, where, "auto")
    if name not in WRITABLE:
        c.err(c.line_of(spec, "client"), f"{where}.client must be {', '.join(WRITABLE[:-1])} or {WRITABLE[-1]}")
        name = "auto"
    if name == "auto":
        return auto_kind(model_id, embedding)
    kind = CLIENT_KINDS[name]
    if not kind.speaks(model_id):
        c.err(c.line_of(spec, "client"),
              f"{where}: the {kind.name} client speaks the {_API[kind.dialect]} only; use a model id starting "
              f"with {' or '.join(kind.prefixes)}")
    elif embedding and not kind.embeds:
        c.err(c.line_of(spec, "client"), f"{where}: the {kind.name} client cannot serve embeddings")
    return kind


_API = {"openai": "OpenAI API", "anthropic": "Anthropic Messages API"}


def _fill_defaults(kind: ClientKind, model_id: str, deployments: list[Deployment]) -> None:
    prefix = model_id.split("/")[0] + "/"
    for d in deployments:
        if prefix in kind.api_base:
            d.params.setdefault("api_base", kind.api_base[prefix])
        for key, value in kind.defaults.items():
            d.params.setdefault(key, value)


def _check_params(c: Checker, kind: ClientKind, model_id: str, deployments: list[Deployment], line: int,
                  where: str) -> None:
    """Defaults filled in, then every deployment has what its client cannot call without (once per problem)."""
    _fill_defaults(kind, model_id, deployments)
    provider = model_id.split("/")[0]
    needed = (("api_base",) if kind.api_base else ()) + kind.required
    for key in needed:
        if any(not d.params.get(key) for d in deployments):
            c.err(line, f"{where}: {provider} models need litellm.{key}"
                        + (f" (e.g. env:{provider.upper()}_API_KEY)" if key == "api_key" else ""))
