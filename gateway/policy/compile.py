"""Validate a policy file fully and compile it into `schema.Policy`: the entry point over the section compilers.

Every problem is reported as `file:line: message`, all of them at once. Nothing here touches the network
or the web stack; secrets (`env:NAME`) are resolved from the environment and never appear in messages.
"""

from __future__ import annotations

import hashlib
import os
import time

from gateway.policy.checker import Checker, PolicyError, PolicyInvalid
from gateway.policy.keys import compile_keys
from gateway.policy.models import compile_models
from gateway.policy.routes import all_models, compile_routes, model_matches
from gateway.policy.schema import DegradeSpec, Policy, RetrySpec
from gateway.policy.sections import (
    compile_breaker,
    compile_classifier,
    compile_degrade,
    compile_feedback,
    compile_limits,
    compile_log_prompts,
    compile_retry,
    compile_ttls,
)
from gateway.policy.yamlsrc import YamlSyntaxError, load_yaml

__all__ = ["PolicyError", "PolicyInvalid", "compile_policy", "load_policy", "model_matches"]

_TOP_KEYS = {"version", "models", "routes", "classifier", "retry", "breaker", "degrade", "deadline", "auth",
             "limits", "logging", "feedback", "conversations", "responses"}


def compile_policy(text: str, source: str = "<policy>", env: dict | None = None,
                   loaded_at: float | None = None) -> Policy:
    """Validate and compile policy text. Raises PolicyInvalid with every error found."""
    c = Checker(source, os.environ if env is None else env)
    try:
        data = load_yaml(text)
    except YamlSyntaxError as exc:
        raise PolicyInvalid([PolicyError(source, exc.line, exc.message)]) from None
    if data is None:
        raise PolicyInvalid([PolicyError(source, 1, "the policy file is empty")])
    if not isinstance(data, dict):
        raise PolicyInvalid([PolicyError(source, 1, "the policy must be a mapping at the top level")])
    c.unknown_keys(data, _TOP_KEYS, "the policy")
    version = data.get("version", 1)
    if version != 1:
        c.err(c.line_of(data, "version"), f"unsupported policy version {version!r} (this gateway reads 1)")

    models = compile_models(c, data)
    retry = compile_retry(c, data.get("retry"), c.line_of(data, "retry"), "retry", RetrySpec())
    breaker = compile_breaker(c, data)
    degrade = compile_degrade(c, data.get("degrade"), c.line_of(data, "degrade"), "degrade", DegradeSpec())
    deadline = c.duration(data, "deadline", "the policy", 120.0)
    classifier = compile_classifier(c, data)
    routes = compile_routes(c, data, models, {"retry": retry, "degrade": degrade, "deadline": deadline})
    auth_required, keys = compile_keys(c, data.get("auth"), c.line_of(data, "auth"), models, routes)
    model_limits, fail_open = compile_limits(c, data, models)
    log_prompts = compile_log_prompts(c, data)
    feedback = compile_feedback(c, data, models)
    sticky_ttl, responses_ttl = compile_ttls(c, data)

    if c.errors:
        raise PolicyInvalid(c.errors)

    virtual: list[str] = []
    for route in routes:
        for m in all_models(route.when):
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
