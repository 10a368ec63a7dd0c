"""Embedding calls to one deployment: OpenAI-compatible servers directly (the body passes through with the
upstream's model name), other upstreams through litellm. Raises only `UpstreamError`, classified as the chat
providers classify theirs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from gateway.policy.schema import Deployment, ModelSpec
from gateway.providers.errors import UpstreamError
from gateway.providers.native import _http_error, _translate


async def embed(session: aiohttp.ClientSession, model: ModelSpec, deployment: Deployment, body: dict) -> bytes:
    """The upstream's `list` of embeddings as JSON bytes (model name as the upstream gave it)."""
    call = EMBEDDERS.get(model.client)
    if call is None:
        raise UpstreamError("bad_request", f"model {model.name!r} cannot serve embeddings", status=400)
    return await call(session, model, deployment, body)


async def _native(session: aiohttp.ClientSession, model: ModelSpec, deployment: Deployment, body: dict) -> bytes:
    params = deployment.params
    headers = {"Content-Type": "application/json"}
    if params.get("api_key"):
        headers["Authorization"] = f"Bearer {params['api_key']}"
    headers.update(params.get("extra_headers") or {})
    url = str(params["api_base"]).rstrip("/") + "/embeddings"
    timeout = aiohttp.ClientTimeout(total=model.timeout, connect=model.connect_timeout,
                                    sock_connect=model.connect_timeout)
    try:
        async with session.post(url, data=orjson.dumps({**body, "model": model.upstream_model}), headers=headers,
                                timeout=timeout) as response:
            raw = await response.read()
            if response.status != 200:
                raise _http_error(response.status, raw, response.headers)
    except BaseException as exc:  # noqa: BLE001 - classified (a cancellation is passed through)
        raise _translate(exc) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("malformed", "the upstream answered with invalid JSON", status=200) from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UpstreamError("malformed", "the upstream answer has no embeddings", status=200)
    return raw


async def _litellm(model: ModelSpec, deployment: Deployment, body: dict) -> bytes:
    from gateway.providers.litellm_client import _translate as litellm_error
    from gateway.providers.litellm_client import import_litellm

    litellm = import_litellm()
    kwargs = {k: v for k, v in body.items() if k not in ("model", "input")}
    kwargs.update({k: v for k, v in deployment.params.items() if v is not None})
    try:
        response = await litellm.aembedding(**kwargs, input=body["input"], timeout=model.timeout, num_retries=0)
    except BaseException as exc:  # noqa: BLE001 - classified (a cancellation is passed through)
        raise litellm_error(exc) from None
    data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
    data.pop("_hidden_params", None)
    return orjson.dumps(data)


# The client kinds that serve `kind: embedding` models (`policy.clients` marks them `embeds`), and how.
EMBEDDERS: dict[str, Callable[[aiohttp.ClientSession, ModelSpec, Deployment, dict], Awaitable[bytes]]] = {
    "native": _native,
    "litellm": lambda session, model, deployment, body: _litellm(model, deployment, body),
}
