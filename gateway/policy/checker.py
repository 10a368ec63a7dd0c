"""The line-aware checker every section compiler uses: typed access to YAML values, errors as `file:line`.

Errors are collected, not raised, so that one pass reports every problem of a policy at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, overload

from gateway.policy.durations import parse_duration
from gateway.policy.yamlsrc import Located, LocatedList

@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyInvalid(Exception):
    def __init__(self, errors: list[PolicyError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def item_line(items: list | None, i: int) -> int:
    return items.item_lines[i] if isinstance(items, LocatedList) else 1


class Checker:
    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.errors: list[PolicyError] = []

    def err(self, line: int, message: str) -> None:
        self.errors.append(PolicyError(self.file, line or 1, message))

    # -- typed field access ------------------------------------------------------------------------
    def line_of(self, mapping, key) -> int:
        if isinstance(mapping, Located):
            return mapping.key_lines.get(key, mapping.line)
        return 1

    def mapping(self, value, line: int, where: str) -> Any:
        """The value when it is a mapping (a `Located` from the YAML loader), else None (error noted)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            self.err(line, f"{where} must be a mapping, got {_kind(value)}")
            return None
        return value

    def unknown_keys(self, mapping: dict, allowed: set, where: str) -> None:
        for key in mapping:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                self.err(self.line_of(mapping, key), f"unknown key {key!r} in {where}{hint}")

    def get(self, mapping, key, kind: type | tuple, where: str, default=None):
        if not isinstance(mapping, dict) or key not in mapping or mapping[key] is None:
            return default
        value = mapping[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            self.err(self.line_of(mapping, key), f"{where}.{key} must be {_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.err(self.line_of(mapping, key), f"{where}.{key} must be {_name(kind)}, got {_kind(value)}")
            return default
        return value

    @overload
    def duration(self, mapping, key, where: str, default: float) -> float: ...

    @overload
    def duration(self, mapping, key, where: str, default: None) -> float | None: ...

    def duration(self, mapping, key, where: str, default: float | None) -> float | None:
        if not isinstance(mapping, dict) or mapping.get(key) is None:
            return default
        try:
            return parse_duration(mapping[key])
        except ValueError as exc:
            self.err(self.line_of(mapping, key), f"{where}.{key}: {exc}")
            return default

    def number(self, mapping, key, where: str, default, lo=None, hi=None, integer=False):
        value = self.get(mapping, key, int if integer else (int, float), where)
        if value is None:
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.err(self.line_of(mapping, key), f"{where}.{key} must be {bounds}, got {value}")
            return default
        return value

    def names(self, mapping, key, where: str) -> tuple[list[str], list[int]]:
        """A string or a list of strings, with the line of each item."""
        value = mapping.get(key) if isinstance(mapping, dict) else None
        line = self.line_of(mapping, key)
        if value is None:
            return [], []
        if isinstance(value, str):
            return [value], [line]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            lines = getattr(value, "item_lines", [line] * len(value))
            return list(value), list(lines)
        self.err(line, f"{where}.{key} must be a name or a list of names")
        return [], []

    def secret(self, value: Any, line: int, where: str) -> tuple[Any, str | None]:
        """Resolve `env:NAME` (or `env:NAME:-default`); returns (value, missing variable name or None)."""
        if isinstance(value, str) and value.startswith("env:"):
            name, _, default = value[4:].partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.err(line, f"{where}: {value!r} is not a valid env:NAME reference")
                return None, None
            resolved = self.env.get(name) or default
            return (resolved, None) if resolved else (None, name)
        return value, None

    def regex(self, value, line: int, where: str) -> re.Pattern | None:
        if not isinstance(value, str):
            self.err(line, f"{where} must be a regular expression string")
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.err(line, f"{where}: regular expression does not compile: {exc}")
            return None


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__).replace(
        "Located", "a mapping").replace("LocatedList", "a list")


def _name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping",
             list: "a list"}
    return " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))


def did_you_mean(word: str, allowed) -> str:
    import difflib

    match = difflib.get_close_matches(word, [str(a) for a in allowed], n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


