"""Settings from the environment (GATEWAY_*) and command-line flags; read once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    policy: str = "policies/default.yaml"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    redis_url: str = ""
    redis_timeout: float = 0.05
    admin_key: str = ""
    max_body_bytes: int = 4 * 1024 * 1024
    max_upstream_body_bytes: int = 16 * 1024 * 1024    # a non-streamed upstream answer; over it: "oversized"
    max_upstream_event_bytes: int = 1024 * 1024        # one SSE event of an upstream stream
    log_level: str = "info"
    log_requests: bool = True
    watch_policy: bool = True
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    classifier_model: str = ""       # a model file to use instead of the shipped one, or a `gateway learn` folder
    outcomes_path: str = ""          # JSONL file for feedback outcomes (empty: kept in memory)
    env: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "env":
                continue
            raw = environ.get(f"GATEWAY_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default)
            try:
                values[f.name] = _bool(raw) if kind is bool else kind(raw)  # type: ignore[misc]
            except ValueError:
                raise SystemExit(f"GATEWAY_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.policy == cls.policy and not os.path.exists(settings.policy):
            # Installed from a wheel and run outside the repository: use the packaged default policy.
            settings.policy = os.path.join(os.path.dirname(__file__), "policies", "default.yaml")
        return settings
