"""The client kinds an operator may write as `client:` in a model entry: what each speaks and what it needs.

This is the configuration side only (no provider code is imported here): one row per kind says which model
ids it speaks, the upstream's model name, the parameters it reads and their defaults, and the dialect of its
upstream, which tells the pipeline whether a client's bytes can pass through untouched. The data plane keeps
a registry of factories under the same names (`gateway.providers.kinds`); start-up refuses a policy whose
kind has no factory there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OPENAI_PREFIXES = ("openai/", "hosted_vllm/")
DEFAULT_OPENAI_BASE = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_BASE = "https://api.anthropic.com"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class ClientKind:
    name: str
    dialect: str                                  # the API its upstream speaks: "openai" | "anthropic"
    summary: str
    prefixes: tuple[str, ...] = ()                # model ids it speaks; () = any id (litellm's catalogue)
    strip_prefix: bool = False                    # the upstream gets the name without the provider prefix
    api_base: Mapping[str, str | None] = field(default_factory=dict)  # default by prefix; None: must be given
    defaults: Mapping[str, str] = field(default_factory=dict)         # defaults of its other parameters
    required: tuple[str, ...] = ()                # parameters every deployment must have
    reads: tuple[str, ...] = ()                   # the parameters it uses itself
    ignores_others: bool = False                  # other parameters have no effect (a policy warning says so)
    embeds: bool = False                          # can serve `kind: embedding` models
    in_process: bool = False                      # runs in the gateway (its options are the `embedded:` block)

    def speaks(self, model_id: str) -> bool:
        return not self.prefixes or model_id.startswith(self.prefixes)

    def upstream_model(self, model_id: str) -> str:
        return model_id.split("/", 1)[1] if self.strip_prefix and "/" in model_id else model_id


CLIENT_KINDS: dict[str, ClientKind] = {kind.name: kind for kind in (
    ClientKind("native", "openai", "the gateway's pooled HTTP client to an OpenAI-compatible server; the "
               "client's bytes pass through when nothing changes",
               prefixes=OPENAI_PREFIXES, strip_prefix=True,
               api_base={"openai/": DEFAULT_OPENAI_BASE, "hosted_vllm/": None},
               reads=("model", "api_base", "api_key", "extra_headers"), ignores_others=True, embeds=True),
    ClientKind("anthropic", "anthropic", "the gateway's pooled HTTP client to Anthropic's Messages API; "
               "Messages requests pass through, others are translated",
               prefixes=("anthropic/",), strip_prefix=True,
               api_base={"anthropic/": DEFAULT_ANTHROPIC_BASE},
               defaults={"anthropic_version": DEFAULT_ANTHROPIC_VERSION}, required=("api_key",),
               reads=("model", "api_base", "api_key", "anthropic_version")),  # the rest: for its litellm fallback
    ClientKind("litellm", "openai", "litellm.acompletion, for any provider litellm knows (imported only "
               "when a policy needs it)", embeds=True),
    ClientKind("embedded", "openai", "the in-process llama.cpp model of an `embedded:` block", in_process=True),
)}

WRITABLE = ("auto", *(k.name for k in CLIENT_KINDS.values() if not k.in_process))


def auto_kind(model_id: str, embedding: bool = False) -> ClientKind:
    """What `client: auto` picks: the first kind in the table that speaks the id (and embeds, for embedding
    models), so that ids with a native client get it and every other id goes to litellm."""
    for kind in CLIENT_KINDS.values():
        if not kind.in_process and kind.speaks(model_id) and (kind.embeds or not embedding):
            return kind
    return CLIENT_KINDS["litellm"]
