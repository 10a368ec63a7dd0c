"""The client kinds a policy may name and the provider kinds the data plane registers: one table each, in step."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import types

import pytest

from gateway.policy import compile_policy
from gateway.policy.clients import CLIENT_KINDS, auto_kind
from gateway.providers import kinds
from gateway.providers.embeddings import EMBEDDERS
from gateway.providers.native import NativeOpenAIProvider
from gateway.providers.registry import Providers

POLICY = """\
models:
  edge: {tier: edge, litellm: {model: openai/small, api_base: "http://127.0.0.1:9/v1"}}
  claude: {tier: cloud, litellm: {model: anthropic/claude-x, api_key: sk-ant}}
  claude-litellm: {tier: cloud, client: litellm, litellm: {model: anthropic/claude-x, api_key: sk-ant}}
routes:
  - {name: r, when: {model: auto}, targets: [edge, claude, claude-litellm]}
"""


def test_every_client_kind_has_a_provider_kind_that_agrees():
    registered = kinds.registered()
    assert set(CLIENT_KINDS) <= set(registered), set(CLIENT_KINDS) - set(registered)
    for name, client in CLIENT_KINDS.items():
        provider = registered[name]
        assert provider.dialect == client.dialect, name
        assert provider.in_process == client.in_process, name
        assert (name in EMBEDDERS) == client.embeds, name


def test_auto_picks_by_model_id():
    assert auto_kind("openai/gpt-4o").name == "native"
    assert auto_kind("hosted_vllm/qwen").name == "native"
    assert auto_kind("anthropic/claude-x").name == "anthropic"
    assert auto_kind("anthropic/claude-x", embedding=True).name == "litellm"
    assert auto_kind("bedrock/claude-x").name == "litellm"


def test_a_policy_kind_without_a_provider_stops_the_start():
    policy = compile_policy(POLICY, "p.yaml", {})
    kinds.check_policy(policy)  # the built-in kinds are all there
    models = dict(policy.models)
    models["edge"] = dataclasses.replace(models["edge"], client="carrier-pigeon")
    models["claude"] = dataclasses.replace(models["claude"], dialect="openai")
    broken = dataclasses.replace(policy, models=models)
    with pytest.raises(kinds.ProviderKindMissing) as info:
        asyncio.run(Providers().start(broken))
    message = str(info.value)
    assert "model 'edge': no provider is registered for client kind 'carrier-pigeon'" in message
    assert "model 'claude': the anthropic provider speaks anthropic, the policy expects openai" in message


def test_providers_build_through_the_registry(monkeypatch):
    """The anthropic factory hands its provider the pooled session, the deployment's parameters (litellm's
    share for a fallback) and the body caps; the provider module is imported only when a model needs it."""
    made = []

    class FakeAnthropic:
        def __init__(self, session, api_base, api_key, anthropic_version, params, **caps):
            made.append((session, api_base, api_key, anthropic_version, params, caps))

        async def aclose(self):
            pass

    module = types.ModuleType("gateway.providers.anthropic_native")
    module.AnthropicProvider = FakeAnthropic  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.providers.anthropic_native", module)
    policy = compile_policy(POLICY, "p.yaml", {})
    providers = Providers(max_body=1 << 20, max_event=1 << 16)

    edge = policy.models["edge"]
    native = providers.get(edge, edge.deployments[0])
    assert isinstance(native, NativeOpenAIProvider)
    assert providers.get(edge, edge.deployments[0]) is native  # one instance per deployment's parameters

    claude = policy.models["claude"]
    provider = providers.get(claude, claude.deployments[0])
    assert isinstance(provider, FakeAnthropic)
    assert made == [(providers.session, "https://api.anthropic.com", "sk-ant", "2023-06-01",
                     {"model": "anthropic/claude-x", "api_key": "sk-ant", "api_base": "https://api.anthropic.com"},
                     {"max_body": 1 << 20, "max_event": 1 << 16})]
    assert providers.get(claude, claude.deployments[0]) is provider and len(made) == 1

    via = policy.models["claude-litellm"]
    assert type(providers.get(via, via.deployments[0])).__name__ == "LitellmProvider"
    asyncio.run(providers.aclose())
