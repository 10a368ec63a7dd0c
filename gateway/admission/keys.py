"""Client API keys: stored as sha256 digests in the policy, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from gateway.errors import ApiError
from gateway.policy.schema import KeySpec, Policy


def bearer(headers: dict) -> str | None:
    value = headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return headers.get("api-key") or headers.get("x-api-key")


def authenticate(policy: Policy, headers: dict) -> KeySpec | None:
    """The caller's key, None when the policy does not ask for keys; raises 401 otherwise."""
    if not policy.auth_required:
        presented = bearer(headers)
        return find_key(policy, presented) if presented and policy.keys else None
    presented = bearer(headers)
    if not presented:
        raise ApiError(401, "Missing API key: send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
                       code="invalid_api_key")
    key = find_key(policy, presented)
    if key is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    return key


def find_key(policy: Policy, presented: str) -> KeySpec | None:
    """The policy's key with this value, or None."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for key in policy.keys:  # look at every key so the time taken does not depend on which one matched
        if hmac.compare_digest(key.digest, digest):
            found = key
    return found
