"""EmbeddedProvider: the Provider API (complete, stream, load, start, aclose) over the embedded model.

It admits a request (parse the body, set its deadlines, queue it) on the event loop and waits for what the
worker thread reports; the model itself is loaded once, on start() or the first request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from ..base import Completion, EdgeLoad, UpstreamCall
from ..errors import UpstreamError
from . import render
from .generate import check_queue_wait, generate
from .job import Job
from .model import LoadedModel, load_model
from .request import parse_messages, parse_params
from .stream import EmbeddedStream
from .worker import Worker

log = logging.getLogger(__name__)


class EmbeddedProvider:
    """Provider for the in-process llama.cpp edge model (see the package docstring)."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        alias: str = "smollm2-135m",
        n_ctx: int = 2048,
        n_threads: int = 1,
        max_queue: int = 8,
        max_tokens_default: int = 256,
    ) -> None:
        self.model_path = model_path
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_queue = max_queue
        self.max_tokens_default = max_tokens_default
        self.requests_total = 0
        self.rejected_total = 0
        self._model: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._worker = Worker(alias, max_queue, max_tokens_default, self._run)

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model now (off the event loop) instead of on the first request."""
        await asyncio.to_thread(self._ensure_model)
        self._worker.start()

    async def aclose(self) -> None:
        if not await self._worker.aclose():
            return  # the worker is still inside a llama.cpp call: leave the model to the daemon thread
        with self._load_lock:
            model, self._model = self._model, None
        if model is not None:
            model.llm.close()

    def _ensure_model(self) -> LoadedModel:
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is not None:
                return self._model
            if self._worker.closed:
                raise UpstreamError("unavailable", "embedded model is shut down", status=503)
            self._model = load_model(self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads, alias=self.alias)
            return self._model

    @property
    def _running(self) -> Job | None:
        """The request the model is working on, if any."""
        return self._worker.running

    # -- on the worker thread ------------------------------------------------------------------------------

    def _run(self, job: Job) -> tuple:
        """Run one request to its final event; failures are reported in that event, never raised."""
        try:
            check_queue_wait(job)
            return generate(self._ensure_model(), job, n_ctx=self.n_ctx, alias=self.alias)
        except UpstreamError as exc:
            return ("error", exc)
        except Exception as exc:  # llama.cpp failures: report, reset the context, keep serving
            log.exception("embedded model %s failed", self.alias)
            try:
                if self._model is not None:
                    self._model.llm.reset()
            except Exception:
                pass
            return ("error", UpstreamError("server", f"embedded model failed: {exc}", status=500))

    # -- the Provider API ----------------------------------------------------------------------------------

    def _submit(self, call: UpstreamCall, stream: bool) -> Job:
        if self._worker.closed:
            raise UpstreamError("unavailable", "embedded model is shut down", status=503)
        body = call.body if isinstance(call.body, dict) else {}
        messages = parse_messages(body)
        params = parse_params(body, self.max_tokens_default)
        now = time.monotonic()
        deadlines = call.deadlines
        first_token_deadline = now + deadlines.first_token if stream and deadlines.first_token else None
        deadline = now + deadlines.attempt if not stream and deadlines.attempt else None
        job = Job(messages, params, stream, asyncio.get_running_loop(), first_token_deadline, deadline)
        try:
            self._worker.admit(job)
        except UpstreamError:
            self.rejected_total += 1
            raise
        self.requests_total += 1
        return job

    def load(self) -> EdgeLoad:
        return self._worker.load()

    async def complete(self, call: UpstreamCall) -> Completion:
        job = self._submit(call, stream=False)
        try:
            event = await job.next_event(job.deadline, f"no answer within {call.deadlines.attempt}s")
        except BaseException:
            self._worker.cancel(job, "abandoned")
            raise
        if event[0] == "error":
            raise event[1]
        _, finish, usage, text = event
        return Completion.from_dict(render.completion(job, self.alias, finish, usage, text))

    async def stream(self, call: UpstreamCall) -> EmbeddedStream:
        job = self._submit(call, stream=True)
        options = call.body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        stream = EmbeddedStream(job, self.alias, self._worker.cancel, include_usage, call.deadlines.attempt)
        await stream.wait_first_token(f"no first token within {call.deadlines.first_token}s")
        return stream
