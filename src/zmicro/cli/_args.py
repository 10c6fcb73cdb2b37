"""Parse ``zmicro call`` arguments: ``key=value`` pairs (JSON values where they parse) or one JSON object."""

from __future__ import annotations

import json
from typing import Any

__all__ = ("parse_call_args", "parse_target")


def parse_target(text: str) -> tuple[str, str]:
    service, dot, method = text.rpartition(".")
    if not dot or not service or not method:
        raise ValueError(f"expected SERVICE.METHOD, got {text!r}")
    return service, method


def parse_call_args(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["who=world", "times=2"]`` -> ``{"who": "world", "times": 2}``; ``['{"who": "x"}']`` works too."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            value = json.loads(items[0])
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not a valid JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("arguments must be a JSON object")
        return value
    args: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            args[key] = json.loads(raw)
        except json.JSONDecodeError:
            args[key] = raw  # a bare word is a string: who=world
    return args
