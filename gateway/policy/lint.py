"""Warnings about policies that load but may not do what they seem to: printed by `gateway policy check`,
never a reason to refuse a policy."""

from __future__ import annotations

import fnmatch

from gateway.policy.checker import PolicyError
from gateway.policy.clients import CLIENT_KINDS
from gateway.policy.schema import Match, Policy


def policy_warnings(policy: Policy) -> list[PolicyError]:
    return _ignored_parameters(policy) + _pii_routes_shadowed(policy)


def _ignored_parameters(policy: Policy) -> list[PolicyError]:
    """Parameters a model's client never reads (a `temperature` written for the native client, say)."""
    found = []
    for model in policy.models.values():
        kind = CLIENT_KINDS.get(model.client)
        if kind is None or not kind.ignores_others:
            continue
        ignored = sorted({key for d in model.deployments for key in d.params} - set(kind.reads))
        if ignored:
            found.append(PolicyError(
                policy.source, model.line,
                f"warning: models.{model.name}: the {kind.name} client does not read "
                f"{', '.join(ignored)} (it reads {', '.join(kind.reads)}); write `client: litellm` to hand "
                f"every parameter to litellm"))
    return found


def _pii_routes_shadowed(policy: Policy) -> list[PolicyError]:
    """A route that asks for personal data but comes after a route that can take the same requests first
    (routes are tried in order), unless that route keeps what it takes on the edge."""
    found = []
    for index, route in enumerate(policy.routes):
        if not _requires_pii(route.when):
            continue
        for earlier in policy.routes[:index]:
            if earlier.edge_only or not _may_overlap(earlier.when, route.when):
                continue
            chain = ", ".join(dict.fromkeys(earlier.simple + earlier.complex))
            found.append(PolicyError(
                policy.source, route.line,
                f"warning: route {route.name!r} asks for personal data, but route {earlier.name!r} (line "
                f"{earlier.line}) comes first and can match the same requests; they would go to {chain}. "
                f"Move {route.name!r} up, or narrow {earlier.name!r}."))
    return found


def _requires_pii(match: Match) -> bool:
    return match.pii is True or match.pii_kinds is not None


def _may_overlap(first: Match, later: Match) -> bool:
    """False only when some condition of `first` plainly excludes every request `later` matches."""
    if first.pii is False and _requires_pii(later):
        return False
    if any(part == Match(pii=True) for part in first.none):
        return False
    if first.models is not None and later.models is not None and not any(
        _names_meet(a, b) for a in first.models for b in later.models
    ):
        return False
    for a, b in ((first.keys, later.keys), (first.groups, later.groups)):
        if a is not None and b is not None and not set(a) & set(b):
            return False
    for x, y in ((first.tools, later.tools), (first.images, later.images)):
        if x is not None and y is not None and x != y:
            return False
    return True


def _names_meet(a: str, b: str) -> bool:
    if _GLOB.intersection(a) and _GLOB.intersection(b):
        return True  # two patterns: assume some name fits both
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


_GLOB = frozenset("*?[")

