"""Client API keys: stored as sha256 digests in the policy, compared in constant time; each key may be
limited to a list of models."""

from __future__ import annotations

import hashlib
import hmac

from gateway.errors import ApiError
from gateway.policy.compile import model_matches
from gateway.policy.schema import KeySpec, Policy


def bearer(headers: dict) -> str | None:
    value = headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return headers.get("api-key") or headers.get("x-api-key")


def authenticate(policy: Policy, headers: dict, model: str | None = None) -> KeySpec | None:
    """The caller's key, None when the policy does not ask for keys; raises 401 otherwise, and 403 when
    `model` is given and the key may not use it."""
    presented = bearer(headers)
    if not policy.auth_required:
        key = find_key(policy, presented) if presented and policy.keys else None
    elif not presented:
        raise ApiError(401, "Missing API key: send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
                       code="invalid_api_key")
    else:
        key = find_key(policy, presented)
        if key is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    if model is not None:
        check_model(key, model)
    return key


def check_model(key: KeySpec | None, model: str) -> None:
    """403 in OpenAI's shape when the key has a `models` list that does not include `model`."""
    if key is None or key.models is None or model_matches(key.models, model):
        return
    allowed = ", ".join(m for m in key.models)
    raise ApiError(403, f"This API key may not use the model '{model[:200]}'. It may use: {allowed}.",
                   param="model", code="model_not_allowed")


def find_key(policy: Policy, presented: str) -> KeySpec | None:
    """The policy's key with this value, or None."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for key in policy.keys:  # look at every key so the time taken does not depend on which one matched
        if hmac.compare_digest(key.digest, digest):
            found = key
    return found
