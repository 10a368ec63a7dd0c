"""Embedding calls to one deployment: OpenAI-compatible servers directly (the body passes through with the
upstream's model name; no redirect followed, the answer's size capped), other upstreams through litellm.
Raises only `UpstreamError`, classified as the chat providers classify theirs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from gateway.policy.schema import Deployment, ModelSpec
from gateway.providers.base import Completion, Deadlines, Usage, token_count
from gateway.providers.errors import UpstreamError
from gateway.providers.http import post, read_json
from gateway.providers.native import openai_error

EMBEDDING_PARAMS = frozenset({"dimensions", "encoding_format", "user"})  # besides model and input
Embedder = Callable[[aiohttp.ClientSession, ModelSpec, Deployment, dict, Deadlines, int],
                    Awaitable[tuple[bytes, object]]]


async def embed(session: aiohttp.ClientSession, model: ModelSpec, deployment: Deployment, body: dict,
                deadlines: Deadlines, max_body: int) -> Completion:
    """The upstream's `list` of embeddings as JSON bytes (model name as the upstream gave it), with its usage."""
    call = EMBEDDERS.get(model.client)
    if call is None:
        raise UpstreamError("bad_request", f"model {model.name!r} cannot serve embeddings", status=400)
    raw, data = await call(session, model, deployment, body, deadlines, max_body)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UpstreamError("malformed", "the upstream answer has no embeddings", status=200)
    usage = data.get("usage")
    tokens = (usage.get("prompt_tokens") or usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
    return Completion(raw, Usage(token_count(tokens), 0))


async def _native(session: aiohttp.ClientSession, model: ModelSpec, deployment: Deployment, body: dict,
                  deadlines: Deadlines, max_body: int) -> tuple[bytes, object]:
    params = deployment.params
    headers = {"Content-Type": "application/json"}
    if params.get("api_key"):
        headers["Authorization"] = f"Bearer {params['api_key']}"
    headers.update(params.get("extra_headers") or {})
    url = str(params["api_base"]).rstrip("/") + "/embeddings"
    data = orjson.dumps({**body, "model": model.upstream_model})
    response = await post(session, url, data, headers, deadlines, False, openai_error)
    return await read_json(response, max_body)


async def _litellm(session: aiohttp.ClientSession, model: ModelSpec, deployment: Deployment, body: dict,
                   deadlines: Deadlines, max_body: int) -> tuple[bytes, object]:
    from gateway.providers.litellm_client import _translate as litellm_error
    from gateway.providers.litellm_client import import_litellm

    litellm = import_litellm()
    # Only the embedding request's own parameters come from the client: a destination, a key, headers or
    # callbacks come from the policy alone.
    kwargs = {k: v for k, v in body.items() if k in EMBEDDING_PARAMS}
    kwargs.update({k: v for k, v in deployment.params.items() if v is not None})
    try:
        response = await litellm.aembedding(**kwargs, input=body["input"], timeout=deadlines.attempt, num_retries=0)
    except BaseException as exc:  # noqa: BLE001 - classified (a cancellation is passed through)
        raise litellm_error(exc) from None
    data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
    data.pop("_hidden_params", None)
    raw = orjson.dumps(data)
    if len(raw) > max_body:
        raise UpstreamError("oversized", f"the upstream answer is over the cap of {max_body} bytes", status=200)
    return raw, data


# The client kinds that serve `kind: embedding` models (`policy.clients` marks them `embeds`), and how.
EMBEDDERS: dict[str, Embedder] = {"native": _native, "litellm": _litellm}
