"""How the boutique's services find each other: by name, through one helper.

Every service that calls others gets its client from ``make_client()``; nothing
else in the boutique knows where a service lives. Today the name-to-endpoints map
comes from the ``ZMICRO_STATIC`` environment variable (``service=ep[,ep];...``,
set by the launcher) and a name with several instances uses its first endpoint.
When the registry and client-side load balancing land, only this module changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from ..._client import Client
from ...discovery import parse_static

__all__ = ("ENV_VAR", "convert", "format_static", "make_client", "static_endpoints")

ENV_VAR = "ZMICRO_STATIC"
T = TypeVar("T")


def static_endpoints(text: str) -> dict[str, list[str]]:
    """``"a=tcp://x:1,tcp://x:2;b=tcp://x:3"`` -> ``{"a": [...], "b": [...]}``."""
    out: dict[str, list[str]] = {}
    for instance in parse_static(text):
        out.setdefault(instance.service, []).append(instance.endpoint)
    return out


def format_static(endpoints: Mapping[str, list[str]]) -> str:
    return ";".join(f"{name}={','.join(eps)}" for name, eps in endpoints.items() if eps)


def make_client(*, timeout: float = 5.0, env: Mapping[str, str] | None = None) -> Client:
    """The client a boutique service uses to call the others by name."""
    text = (os.environ if env is None else env).get(ENV_VAR, "")
    return Client({name: eps[0] for name, eps in static_endpoints(text).items()}, timeout=timeout)


def convert(value: Any, type_: type[T]) -> T:
    """A call's result (plain MessagePack values) as the typed struct the caller expects."""
    return msgspec.convert(value, type_)
