"""A fixed list of instances, from code, a file or the ``ZMICRO_STATIC`` environment variable.

Format of the text form: ``service=endpoint[,endpoint...][;service=...]``, for example
``cart=tcp://10.0.0.5:5555,tcp://10.0.0.6:5555;currency=tcp://10.0.0.7:5555``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._errors import ConfigurationError
from ._base import Instance, Registry, Watcher

__all__ = ("StaticRegistry", "parse_static")


def parse_static(text: str) -> list[Instance]:
    out: list[Instance] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        service, eq, endpoints = part.partition("=")
        if not eq or not service.strip() or not endpoints.strip():
            raise ConfigurationError(f"static registry: expected service=endpoint[,endpoint], got {part!r}")
        for n, ep in enumerate(filter(None, (e.strip() for e in endpoints.split(",")))):
            if "://" not in ep:
                raise ConfigurationError(f"static registry: {ep!r} is not an endpoint like tcp://host:port")
            out.append(Instance(service.strip(), f"{service.strip()}-{n}", ep))
    return out


class StaticRegistry(Registry):
    """Instances known in advance. ``register`` adds to the list (useful in tests)."""

    def __init__(self, instances: Iterable[Instance] | str = ()) -> None:
        self._instances: dict[str, Instance] = {
            i.instance_id: i for i in (parse_static(instances) if isinstance(instances, str) else instances)
        }
        self._watchers: list[Watcher] = []

    async def register(self, instance: Instance) -> None:
        self._instances[instance.instance_id] = instance
        self._notify()

    async def deregister(self, instance: Instance) -> None:
        if self._instances.pop(instance.instance_id, None) is not None:
            self._notify()

    async def instances(self) -> list[Instance]:
        return list(self._instances.values())

    def watch(self, callback: Watcher) -> Callable[[], None]:
        self._watchers.append(callback)
        callback(list(self._instances.values()))
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    def _notify(self) -> None:
        snapshot = list(self._instances.values())
        for watcher in list(self._watchers):
            watcher(snapshot)
