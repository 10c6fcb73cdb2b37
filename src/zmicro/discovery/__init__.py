"""Finding services by name: the registry interface and its backends."""

from __future__ import annotations

from ._base import Instance as Instance
from ._base import Registry as Registry
from ._base import Watcher as Watcher
from ._static import StaticRegistry as StaticRegistry
from ._static import parse_static as parse_static

__all__ = ("Instance", "Registry", "StaticRegistry", "Watcher", "parse_static")
