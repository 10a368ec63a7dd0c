"""POST /v1/messages/count_tokens: the gateway's own token estimate of a Messages request (the same estimate
routing and the token limits use), behind the same key check as the other endpoints."""

from __future__ import annotations

import orjson

from gateway.admission.keys import authenticate, check_model
from gateway.api.anthropic import AnthropicMessages, count_tokens_body
from gateway.api.dialect import JSON_TYPE
from gateway.api.endpoint import read_body
from gateway.api.validate import parse_json
from gateway.errors import ApiError
from gateway.request import Request
from gateway.routing.signals import Signals


class CountTokens:
    def __init__(self, runtime) -> None:
        self.rt = runtime
        self.dialect = AnthropicMessages()

    async def __call__(self, scope, receive, send) -> None:
        try:
            if scope["method"] != "POST":
                raise ApiError(405, "Use POST.", code="method_not_allowed", headers={"allow": "POST"})
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            key = authenticate(self.rt.policies.current, headers)
            raw = await read_body(receive, self.rt.settings.max_body_bytes, headers.get("content-length"))
            body = count_tokens_body(parse_json(raw))
            check_model(key, body["model"])
        except ApiError as exc:
            extra = [(k.encode(), str(v).encode()) for k, v in exc.headers.items()]
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", JSON_TYPE), *extra]})
            await send({"type": "http.response.body", "body": self.dialect.error(exc.status, {"error": exc.payload()})})
            return
        request = Request(body, b"", body["model"], False, body["messages"], headers)
        tokens = Signals(request, self.rt.router.pii_detector).estimated_tokens
        if body.get("tools"):
            tokens += len(orjson.dumps(body["tools"])) // 4
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", JSON_TYPE)]})
        await send({"type": "http.response.body", "body": orjson.dumps({"input_tokens": tokens})})
