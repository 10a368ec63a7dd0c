"""Load of REMOTE edge servers, for capacity-aware routing.

Two sources:

* What the server exposes, parsed into `EdgeLoad` by pure functions (unit-testable without a server):
  - llama.cpp `llama-server` `GET /metrics` (needs `--metrics`; Prometheus text):
    `llamacpp:requests_processing`, `llamacpp:requests_deferred`, `llamacpp:predicted_tokens_seconds`
    -> `parse_llamacpp_metrics(text)`
  - llama.cpp `GET /slots` (JSON list, one object per slot with `is_processing`, or `state` in older
    builds) -> `parse_llamacpp_slots(data)`
  - vLLM `GET /metrics`: `vllm:num_requests_running`, `vllm:num_requests_waiting` (summed over the
    label sets, e.g. several engines) and, when present, `vllm:avg_generation_throughput_toks_per_s`
    -> `parse_vllm_metrics(text)`
  `poll_remote_load(session_or_url, kind)` fetches and parses one of them with a short timeout and
  returns None when the server does not tell (endpoint disabled, down, slow, unparsable).
* What the gateway itself knows: `InFlightEstimator` counts the requests the gateway has sent to a
  target (the caller increments and decrements it) and estimates the wait from a moving average of
  request durations. It works for any server, including `python -m llama_cpp.server`, which exposes
  neither endpoint.

Expected-wait figures are estimates: a server with `slots` parallel slots that has `queued` requests
waiting starts a new request after about `(queued + 1) * mean_request_s / slots` seconds once all its
slots are busy.
"""

from __future__ import annotations

import math
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .base import EdgeLoad

__all__ = [
    "InFlightEstimator",
    "parse_llamacpp_metrics",
    "parse_llamacpp_slots",
    "parse_prometheus",
    "parse_vllm_metrics",
    "poll_remote_load",
]

# `name{labels} value [timestamp]`; label values may contain spaces and escaped quotes.
_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?'
    r'\s+(?P<value>\S+)(?:\s+\S+)?\s*$'
)


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum of the samples of each metric name in Prometheus text format (labels are summed over).

    Comment lines and samples whose value is not a number (or NaN) are skipped.
    """
    totals: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        name = match["name"]
        totals[name] = totals.get(name, 0.0) + value
    return totals


def _wait(queued: int, busy: int, slots: int | None, mean_request_s: float | None) -> float:
    """Estimated seconds before a new request starts, or 0 when it cannot be estimated / a slot is free."""
    if not mean_request_s or mean_request_s <= 0:
        return 0.0
    capacity = slots if slots else max(busy, 1)
    if queued <= 0 and busy < capacity:
        return 0.0
    if queued <= 0 and not slots:
        return 0.0  # busy count known, slot count not: cannot tell whether one is free
    return (queued + 1) * mean_request_s / capacity


def parse_llamacpp_metrics(text: str, *, slots: int | None = None,
                           mean_request_s: float | None = None) -> EdgeLoad:
    """EdgeLoad from llama-server's `/metrics` text. Raises ValueError if it has no llama.cpp request gauges.

    `slots` (the server's `--parallel`) and `mean_request_s` (e.g. from an InFlightEstimator) are only used
    for the expected-wait estimate, which is 0 without them.
    """
    metrics = parse_prometheus(text)
    if "llamacpp:requests_processing" not in metrics and "llamacpp:requests_deferred" not in metrics:
        raise ValueError("no llamacpp:requests_processing / llamacpp:requests_deferred in the metrics")
    processing = int(metrics.get("llamacpp:requests_processing", 0))
    deferred = int(metrics.get("llamacpp:requests_deferred", 0))
    return EdgeLoad(
        queue_depth=deferred,
        in_flight=processing + deferred,
        tokens_per_second=float(metrics.get("llamacpp:predicted_tokens_seconds", 0.0)),
        expected_wait_s=_wait(deferred, processing, slots, mean_request_s),
    )


def _slot_busy(slot: dict) -> bool:
    if "is_processing" in slot:
        return bool(slot["is_processing"])
    state = slot.get("state")  # older llama.cpp: 0 idle, 1 processing
    return isinstance(state, (int, float)) and state != 0


def parse_llamacpp_slots(data: Any, *, mean_request_s: float | None = None,
                         tokens_per_second: float | None = None) -> EdgeLoad:
    """EdgeLoad from llama-server's `/slots` JSON (a list of slot objects). Raises ValueError on other shapes.

    `/slots` shows busy slots, not the requests deferred behind them, so `queue_depth` is 0. When every
    slot is busy, the expected wait is the shortest remaining budget (`next_token.n_remain`) divided by
    `tokens_per_second` if both are known, else `mean_request_s / slots` if given, else 0.
    """
    if isinstance(data, dict) and isinstance(data.get("slots"), list):
        data = data["slots"]
    if not isinstance(data, list) or not all(isinstance(slot, dict) for slot in data):
        raise ValueError("/slots must be a JSON list of slot objects")
    busy_slots = [slot for slot in data if _slot_busy(slot)]
    busy = len(busy_slots)
    wait = 0.0
    if data and busy == len(data):
        remaining = []
        for slot in busy_slots:
            nxt = slot.get("next_token")
            if isinstance(nxt, list) and nxt:
                nxt = nxt[0]
            if isinstance(nxt, dict) and isinstance(nxt.get("n_remain"), (int, float)) and nxt["n_remain"] >= 0:
                remaining.append(float(nxt["n_remain"]))
        if remaining and tokens_per_second and tokens_per_second > 0:
            wait = min(remaining) / tokens_per_second
        elif mean_request_s and mean_request_s > 0:
            wait = mean_request_s / len(data)
    return EdgeLoad(queue_depth=0, in_flight=busy, tokens_per_second=float(tokens_per_second or 0.0),
                    expected_wait_s=wait)


def parse_vllm_metrics(text: str, *, slots: int | None = None,
                       mean_request_s: float | None = None) -> EdgeLoad:
    """EdgeLoad from vLLM's `/metrics` text. Raises ValueError if it has no vLLM request gauges.

    vLLM batches continuously, so "running" requests share the GPU rather than occupy slots; `slots`
    (e.g. `--max-num-seqs`) and `mean_request_s` only feed the expected-wait estimate.
    """
    metrics = parse_prometheus(text)
    if "vllm:num_requests_running" not in metrics and "vllm:num_requests_waiting" not in metrics:
        raise ValueError("no vllm:num_requests_running / vllm:num_requests_waiting in the metrics")
    running = int(metrics.get("vllm:num_requests_running", 0))
    waiting = int(metrics.get("vllm:num_requests_waiting", 0))
    return EdgeLoad(
        queue_depth=waiting,
        in_flight=running + waiting,
        tokens_per_second=float(metrics.get("vllm:avg_generation_throughput_toks_per_s", 0.0)),
        expected_wait_s=_wait(waiting, running, slots, mean_request_s),
    )


# ---------------------------------------------------------------------------------------------------------

_KINDS = {
    "llamacpp": ("/metrics", "/slots"),   # metrics first (has the deferred count), slots as fallback
    "llamacpp-metrics": ("/metrics",),
    "llamacpp-slots": ("/slots",),
    "vllm": ("/metrics",),
}


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


async def poll_remote_load(
    session_or_url: Any,
    kind: str,
    *,
    base_url: str | None = None,
    timeout: float = 1.0,
    slots: int | None = None,
    mean_request_s: float | None = None,
) -> EdgeLoad | None:
    """Fetch a remote edge server's load, or None if it does not tell (or does not answer within `timeout`).

    `session_or_url` is either the server's base URL (`http://host:8080` or `.../v1`; a short-lived aiohttp
    session is used) or an `aiohttp.ClientSession`, with `base_url` giving the server (or none when the
    session was created with one). `kind`: "llamacpp" (tries /metrics, then /slots), "llamacpp-metrics",
    "llamacpp-slots" or "vllm".
    """
    import aiohttp

    if kind not in _KINDS:
        raise ValueError(f"unknown edge server kind {kind!r}; expected one of {sorted(_KINDS)}")
    own = isinstance(session_or_url, str)
    base = _base(session_or_url if own else (base_url or ""))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    session = aiohttp.ClientSession(timeout=client_timeout) if own else session_or_url
    try:
        for path in _KINDS[kind]:
            try:
                async with session.get(base + path, timeout=client_timeout, allow_redirects=False) as response:
                    if response.status != 200:
                        continue
                    if path == "/slots":
                        data = await response.json(content_type=None)
                        return parse_llamacpp_slots(data, mean_request_s=mean_request_s)
                    text = await response.text()
                    if kind == "vllm":
                        return parse_vllm_metrics(text, slots=slots, mean_request_s=mean_request_s)
                    return parse_llamacpp_metrics(text, slots=slots, mean_request_s=mean_request_s)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
        return None
    finally:
        if own:
            await session.close()


# ---------------------------------------------------------------------------------------------------------


class InFlightEstimator:
    """The gateway's own view of a target's load: requests it has in flight there, and how long they take.

    The caller brackets every request: `t = est.start()` ... `est.finish(t, completion_tokens=n)` (or
    `with est.track() as rec: ...; rec.completion_tokens = n`). Durations feed an exponentially weighted
    moving average (`alpha`); until the first request ends, `prior_request_s` stands in. With `slots`
    parallel slots at the target, requests beyond `slots` are counted as queued, and a new request is
    expected to wait `(queued + 1) * mean / slots` seconds once all slots are busy.
    Thread-safe; cheap enough to call on every request.
    """

    def __init__(self, slots: int = 1, *, alpha: float = 0.2, prior_request_s: float = 2.0,
                 clock=time.monotonic) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.slots = slots
        self.alpha = alpha
        self.prior_request_s = prior_request_s
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._mean_s: float | None = None
        self._tps: float | None = None
        self.completed = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def mean_request_s(self) -> float:
        return self._mean_s if self._mean_s is not None else self.prior_request_s

    @property
    def tokens_per_second(self) -> float:
        return self._tps or 0.0

    def start(self) -> float:
        """Count a request as in flight; returns its start time, to pass to `finish`."""
        with self._lock:
            self._in_flight += 1
        return self._clock()

    def finish(self, started: float, *, completion_tokens: int | None = None,
               first_token_at: float | None = None, record: bool = True) -> None:
        """The request started at `started` has ended. `record=False` (failed or cancelled requests) only
        decrements: a request cut short says little about how long requests take."""
        now = self._clock()
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if not record:
                return
            self.completed += 1
            duration = max(0.0, now - started)
            a = self.alpha
            self._mean_s = duration if self._mean_s is None else a * duration + (1 - a) * self._mean_s
            if completion_tokens and completion_tokens > 1:
                begin = first_token_at if first_token_at is not None else started
                span = now - begin
                tokens = completion_tokens - 1 if first_token_at is not None else completion_tokens
                if span > 0:
                    rate = tokens / span
                    self._tps = rate if self._tps is None else a * rate + (1 - a) * self._tps

    @contextmanager
    def track(self) -> Iterator["_Record"]:
        """`with est.track() as rec:` counts the block as one request; set `rec.completion_tokens` (and
        optionally `rec.first_token_at`, a value of the estimator's clock) inside. An exception leaving the
        block decrements without recording the duration."""
        rec = _Record()
        started = self.start()
        try:
            yield rec
        except BaseException:
            self.finish(started, record=False)
            raise
        self.finish(started, completion_tokens=rec.completion_tokens, first_token_at=rec.first_token_at)

    def expected_wait_s(self, in_flight: int | None = None) -> float:
        n = self._in_flight if in_flight is None else in_flight
        if n < self.slots:
            return 0.0
        queued = n - self.slots
        return (queued + 1) * self.mean_request_s / self.slots

    def load(self, remote: EdgeLoad | None = None) -> EdgeLoad:
        """Our estimate, combined with what the server reported (`remote`, e.g. from poll_remote_load), which
        also sees other clients' requests: the larger counts win, the server's rate when it gives one."""
        in_flight = self._in_flight
        queue = max(0, in_flight - self.slots)
        tps = self.tokens_per_second
        wait = self.expected_wait_s(in_flight)
        if remote is not None:
            in_flight = max(in_flight, remote.in_flight)
            queue = max(queue, remote.queue_depth)
            tps = remote.tokens_per_second or tps
            wait = max(wait, remote.expected_wait_s, self.expected_wait_s(in_flight))
        return EdgeLoad(queue_depth=queue, in_flight=in_flight, tokens_per_second=round(tps, 2),
                        expected_wait_s=round(wait, 3))


class _Record:
    __slots__ = ("completion_tokens", "first_token_at")

    def __init__(self) -> None:
        self.completion_tokens: int | None = None
        self.first_token_at: float | None = None
