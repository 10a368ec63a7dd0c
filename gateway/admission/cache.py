"""Exact response cache keys: the normalised request, the chosen chain, the policy version and the caller's
key (tenants never share entries). The cache stores the final `chat.completion`; `execution/replay.py` answers
a stream request from it as a stream."""

from __future__ import annotations

import hashlib

import orjson

_NOT_IN_KEY = {"stream", "stream_options", "user", "metadata"}


def cache_key(body: dict, chain: tuple[str, ...], policy_hash: str, tenant: str | None) -> str:
    normal = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    digest = hashlib.sha256(orjson.dumps([normal, chain, policy_hash, tenant or ""],
                                         option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"cache:{digest}"
