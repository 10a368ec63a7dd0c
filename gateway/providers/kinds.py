"""The registry of provider kinds: for each `client` a policy may name, how to build its provider.

The policy side (`gateway.policy.clients`) says what an operator may write and which dialect each kind's
upstream speaks; this side says how to serve it. `Providers` looks kinds up here instead of switching on
their names, so adding an upstream kind is one `register` call. Provider modules are imported inside the
factories: a policy pays only for the kinds it uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from gateway.policy.clients import DEFAULT_ANTHROPIC_VERSION
from gateway.policy.schema import Deployment, ModelSpec, Policy
from gateway.providers.base import Provider


class ProviderHost(Protocol):
    """What a factory may use of `Providers`: the pooled HTTP session and the upstream body caps."""

    def session(self) -> aiohttp.ClientSession: ...

    @property
    def caps(self) -> dict[str, int]: ...


Factory = Callable[[ProviderHost, ModelSpec, Deployment], Provider]


@dataclass(frozen=True)
class WarmUp:
    """One-time set-up several kinds may share (it runs once per process, the first time a policy needs it)."""

    name: str
    run: Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ProviderKind:
    name: str
    dialect: str                       # must agree with the policy's table (checked at start and in tests)
    make: Factory
    in_process: bool = False           # one instance per model, loaded at start, reporting its own load
    warm_up: WarmUp | None = None


class ProviderKindMissing(Exception):
    """A policy names a client kind this process has no provider for (or one that speaks another dialect)."""


_KINDS: dict[str, ProviderKind] = {}


def register(kind: ProviderKind) -> ProviderKind:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"provider kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def registered() -> Mapping[str, ProviderKind]:
    return dict(_KINDS)


def lookup(name: str) -> ProviderKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ProviderKindMissing(f"no provider is registered for client kind {name!r} "
                                  f"(known: {', '.join(sorted(_KINDS))})") from None


def check_policy(policy: Policy) -> None:
    """Every model's kind has a provider here that speaks the dialect the policy compiled for it."""
    problems = []
    for model in policy.models.values():
        kind = _KINDS.get(model.client)
        if kind is None:
            problems.append(f"model {model.name!r}: no provider is registered for client kind {model.client!r} "
                            f"(known: {', '.join(sorted(_KINDS))})")
        elif kind.dialect != model.dialect:
            problems.append(f"model {model.name!r}: the {kind.name} provider speaks {kind.dialect}, the policy "
                            f"expects {model.dialect}")
    if problems:
        raise ProviderKindMissing("; ".join(problems))


# ---- the built-in kinds ------------------------------------------------------------------------------

def _native(providers: ProviderHost, model: ModelSpec, deployment: Deployment) -> Provider:
    from gateway.providers.native import NativeOpenAIProvider

    params = deployment.params
    return NativeOpenAIProvider(providers.session, params["api_base"], params.get("api_key"),
                                params.get("extra_headers"), **providers.caps)


def _anthropic(providers: ProviderHost, model: ModelSpec, deployment: Deployment) -> Provider:
    from gateway.providers.anthropic_native import AnthropicProvider

    params = deployment.params
    fallback = {k: v for k, v in params.items() if k != "anthropic_version"}  # what litellm takes
    provider: Provider = AnthropicProvider(providers.session, params["api_base"], params.get("api_key"),
                                           params.get("anthropic_version") or DEFAULT_ANTHROPIC_VERSION,
                                           fallback, **providers.caps)
    return provider


def _litellm(providers: ProviderHost, model: ModelSpec, deployment: Deployment) -> Provider:
    from gateway.providers.litellm_client import LitellmProvider

    return LitellmProvider(deployment.params, **providers.caps)


def _embedded(providers: ProviderHost, model: ModelSpec, deployment: Deployment) -> Provider:
    from gateway.providers.embedded import EmbeddedProvider

    options = model.embedded
    path = options.get("gguf", "default")
    return EmbeddedProvider(
        None if path == "default" else path,
        alias=options.get("alias", model.name),
        n_ctx=options.get("n_ctx", 2048),
        n_threads=options.get("threads", 1),
        max_queue=options.get("max_queue", 8),
        max_tokens_default=options.get("max_tokens", 256),
    )


async def _warm_litellm() -> None:
    """Import litellm and let it do its lazy set-up, so that no client request pays for it."""
    from gateway.providers.litellm_client import warm_up

    started = time.monotonic()
    try:
        await warm_up()
    except Exception:  # noqa: BLE001 - a failed warm-up costs the first request time, nothing more
        logging.getLogger("gateway.providers").exception("litellm warm-up failed")
    logging.getLogger("gateway.providers").info("litellm warmed up in %.1fs", time.monotonic() - started)


LITELLM_WARM_UP = WarmUp("litellm", _warm_litellm)

register(ProviderKind("native", "openai", _native))
# Requests it cannot pass through may go to litellm, so litellm is warmed for it too.
register(ProviderKind("anthropic", "anthropic", _anthropic, warm_up=LITELLM_WARM_UP))
register(ProviderKind("litellm", "openai", _litellm, warm_up=LITELLM_WARM_UP))
register(ProviderKind("embedded", "openai", _embedded, in_process=True))
