"""Finding services by name: the registry interface and its backends.

Backends: ``EmbeddedRegistry`` (the default on one machine), ``DnsSrvRegistry``
(Kubernetes headless services, Consul) and ``StaticRegistry`` (a fixed list).
``default_registry()`` picks one from ``ZMICRO_REGISTRY``.
"""

from __future__ import annotations

from ._base import Instance as Instance
from ._base import Registry as Registry
from ._base import Watcher as Watcher
from ._select import default_registry as default_registry
from ._select import registry_from_url as registry_from_url
from ._static import StaticRegistry as StaticRegistry
from ._static import parse_static as parse_static

__all__ = (
    "Instance",
    "Registry",
    "StaticRegistry",
    "Watcher",
    "default_registry",
    "parse_static",
    "registry_from_url",
)
