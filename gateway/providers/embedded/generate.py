"""One generation on the worker thread: the prompt, the token loop, stop sequences and streamed deltas.

The loop checks between tokens whether the request was cancelled or missed a deadline, so the model is free
for the next request within one token time (~15 ms); prefill (one llama.cpp call) is not interruptible.
While streaming, text that could be the start of a stop sequence is held back until it is known not to be.
"""

from __future__ import annotations

import codecs
import random
import time

from ..base import Usage
from ..errors import UpstreamError
from .job import Job, timeout_error
from .model import LoadedModel
from .request import bad_request


def check_queue_wait(job: Job) -> None:
    """Raise a timeout when `job` waited in the queue past one of its deadlines (before it starts)."""
    now = time.monotonic()
    if job.first_token_deadline is not None and now >= job.first_token_deadline:
        raise timeout_error(f"embedded model: waited {now - job.enqueued_at:.1f}s in the queue, past the first-token deadline")
    if job.deadline is not None and now >= job.deadline:
        raise timeout_error(f"embedded model: waited {now - job.enqueued_at:.1f}s in the queue, past the attempt deadline")


def generate(model: LoadedModel, job: Job, *, n_ctx: int, alias: str) -> tuple:
    """Run `job` on `model`, posting deltas when it streams; returns ("done", finish_reason, usage, text)."""
    llm = model.llm
    p = job.params
    try:
        prompt, add_bos = model.format(job.messages)
    except Exception as exc:  # the chat template rejected the conversation
        raise bad_request(f"cannot format the messages for {alias}: {exc}") from exc
    prompt_tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
    n_prompt = len(prompt_tokens)
    if n_prompt >= n_ctx:
        raise UpstreamError(
            "context_window",
            f"the prompt is {n_prompt} tokens, more than the {n_ctx}-token context window of {alias}",
            status=400,
        )
    max_tokens = min(p.max_tokens, n_ctx - n_prompt)
    job.max_tokens = max_tokens
    llm.set_seed(p.seed if p.seed is not None else random.getrandbits(32))

    eog = model.eog
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
        logits_processor=model.no_eog if p.ignore_eos else None,
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
                raise timeout_error(f"embedded model: no answer within the attempt deadline ({job.produced} tokens generated)")
            if (job.first_token_deadline is not None and not job.first_emitted
                    and now >= job.first_token_deadline):
                raise timeout_error("embedded model: no first token within the first-token deadline")
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
                    if safe > emitted:
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
