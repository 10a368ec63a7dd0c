"""Upstreams that do not speak the OpenAI API, called through litellm (imported only when needed).

litellm must run offline here: the environment variables below are set before its first import.
"""

from __future__ import annotations

import asyncio
import os

import orjson

from gateway.providers.base import Completion, UpstreamCall, Usage
from gateway.providers.errors import UpstreamError, kind_for_status

_OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MODE": "PRODUCTION", "HF_HUB_OFFLINE": "1"}
_litellm = None

# Fields of the request body that the gateway itself owns; everything else is passed to litellm.
_OWN_FIELDS = {"model", "messages", "stream"}


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

    def load(self):
        return None

    async def aclose(self) -> None:
        return None

    def _kwargs(self, call: UpstreamCall) -> dict:
        kwargs = {k: v for k, v in call.body.items() if k not in _OWN_FIELDS}
        kwargs.update(self._params)
        kwargs["model"] = call.model
        kwargs["messages"] = call.body.get("messages", [])
        kwargs["timeout"] = call.deadlines.attempt
        kwargs["num_retries"] = 0  # retries are the executor's job
        return kwargs

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
