"""Opening the GGUF with llama.cpp, and what a generation needs from it besides the weights: the
end-of-generation tokens and the chat template that turns messages into a prompt.

llama-cpp-python is imported here only, when the model is first loaded, so the gateway runs without it
until an embedded deployment is used.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.edge_weights import default_gguf_path

from ..errors import UpstreamError

log = logging.getLogger(__name__)

ChatFormatter = Callable[[list[dict]], tuple[str, bool]]  # messages -> (prompt text, add_bos)


@dataclass(slots=True, frozen=True)
class LoadedModel:
    llm: Any                  # llama_cpp.Llama (not thread-safe: one worker thread uses it)
    eog: frozenset[int]       # end-of-generation token ids
    no_eog: list[Callable]    # logits processors for ignore_eos: never sample an end-of-generation token
    format: ChatFormatter


def load_model(model_path: str | None, *, n_ctx: int, n_threads: int, alias: str) -> LoadedModel:
    """Load the GGUF at `model_path` (default: the shipped weights); UpstreamError 503 if it cannot be."""
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
        path = model_path or default_gguf_path()
        started = time.monotonic()
        llm = Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
    except (OSError, ValueError) as exc:
        raise UpstreamError("unavailable", f"cannot load the embedded model: {exc}", status=503) from exc
    try:
        vocab = llm._model.vocab
        eog = frozenset(t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))
    except AttributeError:  # private API moved: fall back to the EOS token
        eog = frozenset({llm.token_eos()})
    eog = eog or frozenset({llm.token_eos()})
    eog_ids = sorted(eog)

    def no_eog(input_ids, scores):
        scores[eog_ids] = -math.inf
        return scores

    model = LoadedModel(llm=llm, eog=eog, no_eog=[no_eog], format=_chat_formatter(llm, llama_chat_format))
    log.info("embedded model %s loaded from %s in %.2fs", alias, path, time.monotonic() - started)
    return model


def _chat_formatter(llm: Any, llama_chat_format: Any) -> ChatFormatter:
    """The GGUF's own chat template (ChatML when it has none)."""

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
