"""Does a route's `when` hold for a request? Returns the reasons, for decision headers and explain."""

from __future__ import annotations

from gateway.policy.compile import model_matches
from gateway.policy.schema import Band, Match
from gateway.routing.signals import Signals


def _band(band: Band) -> str:
    if band.min is not None and band.max is not None:
        return f"in [{band.min:g}, {band.max:g}]"
    return f">= {band.min:g}" if band.min is not None else f"<= {band.max:g}"


def evaluate(match: Match, s: Signals, why: list[str] | None = None) -> bool:
    """True when every condition set in `match` holds. Appends a reason per checked condition to `why`."""
    req = s.request

    def note(ok: bool, text: str) -> bool:
        if why is not None:
            why.append(("" if ok else "not ") + text)
        return ok

    if match.models is not None and not note(model_matches(match.models, req.model), f"model {req.model!r}"):
        return False
    if match.keys is not None and not note(req.key_name in match.keys, f"key {req.key_name!r}"):
        return False
    if match.groups is not None and not note(req.key_group in match.groups, f"group {req.key_group!r}"):
        return False
    for name, pattern in match.headers:
        value = req.headers.get(name)
        if not note(value is not None and pattern.search(value) is not None, f"header {name}"):
            return False
    if match.messages is not None:
        n = len(req.messages)
        if not note(match.messages.contains(n), f"messages {n} {_band(match.messages)}"):
            return False
    if match.tokens is not None:
        n = s.estimated_tokens
        if not note(match.tokens.contains(n), f"~{n} tokens {_band(match.tokens)}"):
            return False
    if match.tools is not None and not note(s.has_tools == match.tools, f"tools={s.has_tools}"):
        return False
    if match.images is not None and not note(s.has_images == match.images, f"images={s.has_images}"):
        return False
    if match.last_user is not None:
        if not note(match.last_user.search(s.last_user) is not None, f"last_user ~ /{match.last_user.pattern}/"):
            return False
    if match.score is not None:
        score = s.score if s.score is not None else 0.0
        if not note(match.score.contains(score), f"score {score:.3f} {_band(match.score)}"):
            return False
    if match.pii is not None:
        unreadable = sorted(s.unscannable) if match.pii_unscannable else []
        found = bool(unreadable) or bool(s.pii)
        seen = f"unscannable {unreadable}" if unreadable else (sorted(s.pii) or "none")
        if not note(found == match.pii, f"pii={seen}"):
            return False
    if match.pii_kinds is not None:
        unreadable = sorted(s.unscannable) if match.pii_unscannable else []
        hit = [f"unscannable {unreadable}"] if unreadable else sorted(s.pii.intersection(match.pii_kinds))
        if not note(bool(hit), f"pii {hit or 'none'} of {list(match.pii_kinds)}"):
            return False
    if match.any:
        sub: list[str] = []
        ok = any(evaluate(part, s, sub) for part in match.any)
        if not note(ok, "any(" + "; ".join(sub) + ")"):
            return False
    for part in match.none:
        sub = []
        if evaluate(part, s, sub):
            note(False, "not(" + "; ".join(sub) + ")")
            return False
    return True
