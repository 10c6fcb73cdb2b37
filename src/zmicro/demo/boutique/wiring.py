"""How the boutique's services find each other: by name, through one helper.

Every service that calls others gets its client from ``make_client()``; nothing
else in the boutique knows where a service lives. The launcher runs an embedded
registry and names it in ``ZMICRO_REGISTRY``; every call then finds the instances of
its service there and goes to the least loaded one. A fixed map in ``ZMICRO_STATIC``
(``service=ep[,ep];...``) takes precedence, for tests that wire services by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from ..._client import Client
from ...discovery import parse_static, registry_from_url

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
    env = os.environ if env is None else env
    text = env.get(ENV_VAR, "")
    if text:
        return Client(static_endpoints(text), timeout=timeout)
    return Client(registry=registry_from_url(env.get("ZMICRO_REGISTRY", "")), timeout=timeout)


def convert(value: Any, type_: type[T]) -> T:
    """A call's result (plain MessagePack values) as the typed struct the caller expects."""
    return msgspec.convert(value, type_)
