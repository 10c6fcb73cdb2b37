"""Pick the registry backend from a URL-like string, by default from ``ZMICRO_REGISTRY``.

- unset, or ``tcp://HOST:PORT``: the embedded registry (default ``tcp://127.0.0.1:5550``)
- ``dns:DOMAIN`` or ``dns:DOMAIN@NAMESERVER[:PORT]``: DNS SRV records (Kubernetes, Consul)
- ``static:SERVICE=ENDPOINT[,ENDPOINT];...``: a fixed list
- ``none``: no registry (only explicit endpoints work)
"""

from __future__ import annotations

import os

from .._errors import ConfigurationError
from ._base import Registry
from ._static import StaticRegistry

__all__ = ("default_registry", "registry_from_url")


def registry_from_url(url: str) -> Registry:
    from ._dns import DnsSrvRegistry
    from ._embedded import EmbeddedRegistry

    url = url.strip()
    if url in ("", "none"):
        return StaticRegistry([])
    if url.startswith(("tcp://", "ipc://", "inproc://")):
        return EmbeddedRegistry(url)
    if url.startswith("static:"):
        return StaticRegistry(url[len("static:") :])
    if url.startswith("dns:"):
        return DnsSrvRegistry.from_url(url)
    raise ConfigurationError(
        f"unknown registry {url!r}: use tcp://..., dns:DOMAIN[@NS[:PORT]], static:... or none"
    )


def default_registry() -> Registry:
    """The registry named by ``ZMICRO_REGISTRY``, else the embedded one on this machine."""
    return registry_from_url(os.environ.get("ZMICRO_REGISTRY", "tcp://127.0.0.1:5550"))
