"""Structured logs: one JSON line per request and per audit event. Prompts only if the policy opts in;
secrets never (the policy compiler resolves them into provider objects that are not logged)."""

from __future__ import annotations

import logging
import sys
import time

import orjson

_audit = logging.getLogger("gateway.audit")
_policy_version: dict[str, str | None] = {"value": None}


def set_policy_version(version: str) -> None:
    """Stamp every later log line with the policy version now serving."""
    _policy_version["value"] = version


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage(), "policy_version": _policy_version["value"]}
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RequestLog:
    """Writes request lines straight to a stream: cheaper than the logging machinery on the hot path."""

    def __init__(self, stream=None, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled

    def write(self, fields: dict) -> None:
        if self.enabled:
            fields["ts"] = round(time.time(), 3)
            self.stream.write(orjson.dumps(fields, default=str).decode() + "\n")


def audit(event: str, **fields) -> None:
    _audit.info(event, extra={"fields": {"audit": event, **fields}})
