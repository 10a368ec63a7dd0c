"""The rest of a stream once execution has committed to its upstream.

`relay` sends the held opening and every later piece, encoded by the client's dialect, within the request's
deadline; it gives the deployment's in-flight slot back and closes the upstream when the stream ends, however
it ends. A failure after the first byte is returned as an error kind (the dialect then ends its stream with an
explicit error event), never a silent clean end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.execution.replay import StreamAssembler
from gateway.providers.base import Usage, estimated_usage
from gateway.request import OPENAI

log = logging.getLogger("gateway.stream")

DEADLINE = "deadline"  # the error kind of a stream cut by the request's deadline


@dataclass(slots=True)
class StreamEnd:
    usage: Usage
    error: str | None = None         # the error kind that cut the stream, None when it ended well
    completion: bytes | None = None  # the answer as a chat.completion, when assembling was asked and possible


async def relay(outcome, encode: Callable[[bytes], bytes], send: Callable[[bytes], Awaitable[None]],
                assemble: bool, prompt_estimate: int) -> StreamEnd:
    """Send `outcome.stream` to the client: `encode` turns one piece (a chunk's JSON, or whole SSE events when
    the stream is `framed`) into the client's bytes, `send` writes them."""
    stream = outcome.stream
    framed = getattr(stream, "framed", False)
    assembler = StreamAssembler() if assemble and getattr(stream, "dialect", OPENAI) == OPENAI else None
    add = (assembler.add_events if framed else assembler.add) if assembler is not None else None
    error: str | None = None
    try:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(loop.time() + (outcome.deadline - time.monotonic())):
            held = outcome.held  # the opening the executor validated and held back
            if add is not None:
                for piece in held:
                    add(piece)
            first = b"".join(encode(piece) for piece in held)
            if first:
                await send(first)
            while not outcome.stream_ended:
                try:
                    piece = await stream.__anext__()
                except StopAsyncIteration:
                    break
                if add is not None:
                    add(piece)
                data = encode(piece)
                if data:
                    await send(data)
    except TimeoutError:
        error = DEADLINE
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - any upstream failure mid-stream is reported, never swallowed
        error = str(getattr(exc, "kind", "stream_error"))
        if not hasattr(exc, "kind"):
            log.exception("stream failed")
        else:  # the upstream's words (hosts, addresses) go to the log; the client gets the kind
            log.warning("stream failed after it started: %s", getattr(exc, "message", exc))
    finally:
        await stream.aclose()
        outcome.release()
    usage = stream.usage or estimated_usage(prompt_estimate, getattr(stream, "text_chars", 0))
    completion = assembler.completion() if assembler is not None and error is None else None
    return StreamEnd(usage, error, completion)
