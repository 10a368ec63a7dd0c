"""Upstreams that do not speak the OpenAI API, called through litellm (imported only when needed).

litellm must run offline here: the environment variables below are set before its first import.
"""

from __future__ import annotations

import asyncio
import logging
import os

import orjson

from gateway.providers import capped_http
from gateway.providers.base import Completion, UpstreamCall, Usage, asks_usage, with_usage
from gateway.providers.capped_http import capped_client
from gateway.providers.errors import UpstreamError, kind_for_status

MAX_BODY_BYTES = 16 * 1024 * 1024   # a non-streamed answer
MAX_EVENT_BYTES = 1024 * 1024       # one stream chunk
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
        # Per-request work the gateway does not use, on the event loop: logging every call (at INFO, twice)
        # and assembling each stream again for logging callbacks.
        litellm.disable_streaming_logging = True
        litellm.turn_off_message_logging = True
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        litellm.aclient_session = capped_client()  # size caps and no redirects on OpenAI-compatible calls
        _litellm = litellm
    return _litellm


async def warm_up() -> None:
    """Import litellm and make a plain, a streamed and a failing call through `acompletion` against a
    loopback server started for this alone, so that the first client request pays for neither the import nor the
    lazy set-up inside litellm (seconds of blocking work). Runs before the gateway says it is ready."""
    from aiohttp import web

    litellm = await asyncio.to_thread(import_litellm)

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("model") == "gateway-warm-up-error":
            return web.json_response({"error": {"message": "warm-up", "type": "server_error"}}, status=500)
        base = {"id": "chatcmpl-warm-up", "created": 0, "model": body.get("model", "warm-up")}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if not body.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**base, "object": "chat.completion.chunk"}
        for choices, extra in (([{"index": 0, "delta": {"role": "assistant", "content": "ok"}}], {}),
                               ([{"index": 0, "delta": {}, "finish_reason": "stop"}], {}), ([], {"usage": usage})):
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": choices, **extra}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        kwargs = {"model": "openai/gateway-warm-up", "api_base": f"http://127.0.0.1:{port}/v1", "api_key": "warm-up",
                  "messages": [{"role": "user", "content": "warm up"}], "timeout": 30, "num_retries": 0}
        await litellm.acompletion(**kwargs)
        wrapper = await litellm.acompletion(**kwargs, stream=True, stream_options={"include_usage": True})
        async for _ in wrapper:
            pass
        try:  # the error path too: litellm maps errors with code it imports on first use
            await litellm.acompletion(**{**kwargs, "model": "openai/gateway-warm-up-error"})
        except Exception as exc:  # noqa: BLE001 - the error is the point
            _translate(exc)
    finally:
        await runner.cleanup()


class LitellmProvider:
    def __init__(self, params: dict, max_body: int = MAX_BODY_BYTES, max_event: int = MAX_EVENT_BYTES) -> None:
        self._params = {k: v for k, v in params.items() if v is not None}
        self._providers: dict[str, tuple[str, frozenset]] = {}
        self._clients: dict[str, tuple[asyncio.AbstractEventLoop, object]] = {}
        self._max_body = max_body
        self._max_event = max_event
        capped_http.LIMITS.update(body=max_body, event=max_event)

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
        completion = Completion.from_dict(data)
        if len(completion.body) > self._max_body:
            raise UpstreamError("oversized", f"the upstream answer is over the cap of {self._max_body} bytes",
                                status=200)
        return completion

    async def stream(self, call: UpstreamCall) -> "LitellmStream":
        litellm = import_litellm()
        kwargs = self._kwargs(call)
        kwargs["stream_options"] = with_usage(call.body)["stream_options"]  # usage for every stream
        try:
            wrapper = await litellm.acompletion(**kwargs, stream=True)
        except BaseException as exc:
            raise _translate(exc) from None
        return LitellmStream(wrapper, call.deadlines.attempt, strip_usage=not asks_usage(call.body),
                             max_event=self._max_event)


_NO_FLAG = object()


class LitellmStream:
    """litellm's chunks as JSON bytes. litellm closes a stream that had no events (an empty 200, an HTML
    page) or that ended without a finish_reason with a chunk it makes up (`finish_reason: "stop"`); that
    chunk is recognised here and turned into an upstream failure, so it is never a "successful" answer."""

    def __init__(self, wrapper, idle_timeout: float | None, strip_usage: bool = False,
                 max_event: int = MAX_EVENT_BYTES) -> None:
        self._wrapper = wrapper
        self._iter = wrapper.__aiter__()
        self._idle = idle_timeout
        self._strip_usage = strip_usage  # the gateway asked for usage, not the client: drop the usage chunk
        self._max_event = max_event
        self._content = False
        self.usage: Usage | None = None
        self.text_chars = 0

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                async with asyncio.timeout(self._idle):
                    chunk = await self._iter.__anext__()
            except StopAsyncIteration:
                raise
            except BaseException as exc:
                raise _translate(exc, in_stream=True) from None
            data = chunk.model_dump(exclude_none=True) if hasattr(chunk, "model_dump") else dict(chunk)
            usage = Usage.from_dict(data.get("usage"))
            choices = data.get("choices") or []
            if usage is not None:
                self.usage = usage
                if self._strip_usage:
                    del data["usage"]
                    if not any(c.get("finish_reason") or _has_text(c.get("delta")) for c in choices):
                        continue  # the usage chunk the gateway asked for on its own account
            for choice in choices:
                delta = choice.get("delta")
                if _has_text(delta):
                    self._content = True
                    self.text_chars += _chars(delta)
                if choice.get("finish_reason") and self._made_up():
                    raise UpstreamError("stream_cut" if self._content else "malformed",
                                        "the upstream stream ended without a finish_reason" if self._content
                                        else "the upstream stream had no events", status=200)
            try:
                payload = orjson.dumps(data)
            except orjson.JSONEncodeError:  # an integer past 64 bits, say
                raise UpstreamError("malformed", "an upstream stream event cannot be encoded as JSON",
                                    status=200) from None
            if len(payload) > self._max_event:
                raise UpstreamError("oversized", f"an upstream stream event is over the cap of {self._max_event} "
                                                 "bytes", status=200)
            return payload

    def _made_up(self) -> bool:
        """litellm's closing chunk for a stream whose upstream sent no finish_reason."""
        w = self._wrapper
        received = getattr(w, "received_finish_reason", _NO_FLAG)
        if received is _NO_FLAG:
            return False  # a litellm that does not say: trust it
        return received is None and getattr(w, "intermittent_finish_reason", None) is None and \
            not getattr(w, "received_any_finish_reason", False)

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
                                  http_client=capped_client())  # type: ignore[arg-type]  # caps, no redirects
    if provider in ("anthropic", "hosted_vllm"):  # litellm's own HTTP handler serves these
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        handler = AsyncHTTPHandler()
        handler.follow_redirects = False  # read again whenever the handler rebuilds its httpx client
        handler.client.follow_redirects = False
        return handler
    return None


def _chars(delta: dict) -> int:
    """Characters of content and tool-call arguments in one delta (odd types, an upstream's fault, count 0)."""
    content = delta.get("content")
    calls = delta.get("tool_calls")
    n = len(content) if isinstance(content, str) else 0
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        n += len(arguments) if isinstance(arguments, str) else 0
    return n


def _has_text(delta) -> bool:
    return isinstance(delta, dict) and bool(delta.get("content") or delta.get("tool_calls")
                                            or delta.get("function_call") or delta.get("refusal"))


def _over_cap(exc: BaseException | None) -> str | None:
    """The size-cap message, if the capped transport stopped this answer (litellm and the openai SDK wrap
    the error, sometimes with a text of their own)."""
    seen = 0
    while exc is not None and seen < 8:
        text = str(exc)
        if capped_http.MARKER in text:
            return text.split(capped_http.MARKER + ": ", 1)[-1][:300]
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "original_exception", None)
        seen += 1
    return None


def _translate(exc: BaseException, in_stream: bool = False) -> BaseException:
    if isinstance(exc, (UpstreamError, asyncio.CancelledError)):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamError("timeout", "the upstream did not answer in time")
    name = type(exc).__name__
    message = str(exc)[:500]
    over = _over_cap(exc)
    if over is not None:
        return UpstreamError("oversized", over, status=200)
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
