"""Upstreams that do not speak the OpenAI API, called through litellm (imported only when needed).

litellm must run offline here: the environment variables below are set before its first import.
"""

from __future__ import annotations

import asyncio
import logging
import os

import orjson

from gateway.providers.base import Completion, UpstreamCall, Usage
from gateway.providers.errors import UpstreamError, kind_for_status

_OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MODE": "PRODUCTION", "HF_HUB_OFFLINE": "1"}
_litellm = None

# The OpenAI chat request parameters a client may set on this path; litellm maps each one to the provider
# (and drops those a provider cannot take). Nothing else of the body reaches litellm: its other keyword
# arguments choose where and how a call goes (api_base, base_url, api_key, extra_headers, headers,
# custom_llm_provider, callbacks, mock_response, timeout, num_retries, router settings, ...), and those come
# from the policy alone.
CLIENT_PARAMS = frozenset({
    "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "user", "stream_options", "modalities", "audio",
    "reasoning_effort", "prediction", "service_tier", "verbosity", "safety_identifier", "web_search_options",
    "functions", "function_call", "store", "prompt_cache_key", "prompt_cache_retention", "metadata",
})
# litellm keeps `metadata` for its own logging: the client's goes to the upstream as a body field.
_BODY_ONLY = frozenset({"metadata"})
_OPENAI_PROVIDERS = frozenset({"openai", "custom_openai", "hosted_vllm", "azure", "openai_like"})


def import_litellm():
    """Import litellm once, offline-safe (no cost-map fetch, no .env loading, no Hub tokenizers)."""
    global _litellm
    if _litellm is None:
        for key, value in _OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
        import litellm

        litellm.disable_hf_tokenizer_download = True
        litellm.suppress_debug_info = True
        litellm.drop_params = True
        litellm.telemetry = False
        _litellm = litellm
    return _litellm


class LitellmProvider:
    def __init__(self, params: dict) -> None:
        self._params = {k: v for k, v in params.items() if v is not None}
        self._providers: dict[str, tuple[str, frozenset]] = {}
        self._clients: dict[str, tuple[asyncio.AbstractEventLoop, object]] = {}

    def load(self):
        return None

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        loop = asyncio.get_running_loop()
        for owner, client in clients.values():
            close = getattr(client, "close", None)
            if owner is loop and close is not None:
                try:
                    await close()
                except Exception as exc:  # noqa: BLE001 - closing is best effort at shutdown
                    logging.getLogger("gateway.providers").debug("closing a litellm client failed: %s", exc)

    def _kwargs(self, call: UpstreamCall) -> dict:
        """litellm's arguments: allow-listed client parameters, then the policy's parameters and the
        gateway's own (model, messages, timeout, no retries, a client that follows no redirect), which no
        body field can override."""
        body = call.body
        provider, as_body = self._provider(call.model)
        kwargs, extra = {}, {}
        for name in CLIENT_PARAMS.intersection(body):
            value = body[name]
            if value is None:
                continue
            if name in as_body:
                extra[name] = value
            elif name not in _BODY_ONLY:
                kwargs[name] = value
        kwargs.update(self._params)
        if extra:
            own = self._params.get("extra_body")
            kwargs["extra_body"] = {**extra, **own} if isinstance(own, dict) else extra
        kwargs["model"] = call.model
        kwargs["messages"] = body.get("messages", [])
        kwargs["timeout"] = call.deadlines.attempt
        kwargs["num_retries"] = 0  # retries are the executor's job
        client = self._client(provider)
        if client is not None:
            kwargs["client"] = client
        return kwargs

    def _provider(self, model: str) -> tuple[str, frozenset]:
        """litellm's provider for this model, and the client parameters to send as plain body fields
        (`extra_body`): for a provider that speaks the OpenAI API, those litellm would drop for it (e.g.
        `user` for a model name litellm does not know) and `metadata`, so that the upstream gets what the
        native path would send; none for other providers."""
        known = self._providers.get(model)
        if known is None:
            litellm = import_litellm()
            try:
                name, provider = litellm.get_llm_provider(
                    model, custom_llm_provider=self._params.get("custom_llm_provider"),
                    api_base=self._params.get("api_base"))[:2]
                supported = litellm.get_supported_openai_params(model=name, custom_llm_provider=provider) or []
            except Exception:  # noqa: BLE001 - a provider litellm cannot name: send only what it maps
                provider, supported = "", []
            fields = (CLIENT_PARAMS - frozenset(supported)) | _BODY_ONLY if provider in _OPENAI_PROVIDERS \
                else frozenset()
            known = self._providers[model] = (provider, fields)
        return known

    def _client(self, provider: str):
        """An HTTP client for litellm that never follows a redirect (litellm's own clients do, and a
        redirect would carry the operator's key or the conversation to a host the policy does not name).
        One per event loop. None for providers whose client kind is not known here (litellm then uses its
        own client): OpenAI and OpenAI-compatible custom endpoints, Anthropic and vLLM are covered."""
        loop = asyncio.get_running_loop()
        cached = self._clients.get(provider)
        if cached is not None and cached[0] is loop:
            return cached[1]
        client = _no_redirect_client(provider, self._params)
        self._clients[provider] = (loop, client)
        return client

    async def complete(self, call: UpstreamCall) -> Completion:
        litellm = import_litellm()
        try:
            response = await litellm.acompletion(**self._kwargs(call), stream=False)
        except BaseException as exc:
            raise _translate(exc) from None
        data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
        data.pop("_hidden_params", None)
        return Completion.from_dict(data)

    async def stream(self, call: UpstreamCall) -> "LitellmStream":
        litellm = import_litellm()
        try:
            wrapper = await litellm.acompletion(**self._kwargs(call), stream=True)
        except BaseException as exc:
            raise _translate(exc) from None
        return LitellmStream(wrapper, call.deadlines.attempt)


class LitellmStream:
    def __init__(self, wrapper, idle_timeout: float | None) -> None:
        self._wrapper = wrapper
        self._iter = wrapper.__aiter__()
        self._idle = idle_timeout
        self.usage: Usage | None = None

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        try:
            async with asyncio.timeout(self._idle):
                chunk = await self._iter.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            raise _translate(exc, in_stream=True) from None
        data = chunk.model_dump(exclude_none=True) if hasattr(chunk, "model_dump") else dict(chunk)
        usage = Usage.from_dict(data.get("usage"))
        if usage is not None:
            self.usage = usage
        return orjson.dumps(data)

    async def aclose(self) -> None:
        close = getattr(self._wrapper, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:
                pass


def _no_redirect_client(provider: str, params: dict):
    """The client object litellm takes as `client=` for this provider, built not to follow redirects."""
    if provider in ("openai", "custom_openai"):
        import openai

        env = os.environ  # where litellm looks when the policy gives no key or base URL
        return openai.AsyncOpenAI(api_key=params.get("api_key") or env.get("OPENAI_API_KEY") or "none",
                                  base_url=params.get("api_base") or params.get("base_url")
                                  or env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_BASE") or None,
                                  organization=params.get("organization"), max_retries=0,
                                  http_client=openai.DefaultAsyncHttpxClient(follow_redirects=False))
    if provider in ("anthropic", "hosted_vllm"):  # litellm's own HTTP handler serves these
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        handler = AsyncHTTPHandler()
        handler.follow_redirects = False  # read again whenever the handler rebuilds its httpx client
        handler.client.follow_redirects = False
        return handler
    return None


def _translate(exc: BaseException, in_stream: bool = False) -> BaseException:
    if isinstance(exc, (UpstreamError, asyncio.CancelledError)):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamError("timeout", "the upstream did not answer in time")
    name = type(exc).__name__
    message = str(exc)[:500]
    status = getattr(exc, "status_code", None)
    if name == "ContextWindowExceededError":
        return UpstreamError("context_window", message, status=status or 400)
    if name == "ContentPolicyViolationError":
        return UpstreamError("content_policy", message, status=status or 400)
    if name in ("Timeout", "APITimeoutError"):
        return UpstreamError("timeout", message, status=status)
    # litellm reports a refused or broken connection as a 500 "Connection error."
    if name in ("APIConnectionError",) or isinstance(exc, (ConnectionError, OSError)) or \
            "connection error" in message.lower():
        return UpstreamError("stream_cut" if in_stream else "connect", message, status=status)
    if isinstance(status, int):
        retry_after = None
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            from gateway.providers.errors import parse_retry_after

            retry_after = parse_retry_after(headers)
        return UpstreamError(kind_for_status(status, message), message, status=status, retry_after=retry_after)
    return UpstreamError("server", f"{name}: {message}")
