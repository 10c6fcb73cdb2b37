"""What discovery is: instances of services, and registries that list and watch them.

An ``Instance`` is one running copy of a service, reachable at ``endpoint``. ``meta``
carries small facts other parts of zmicro read: which events an instance publishes,
which tasks it works on, its load. Every backend (embedded registry, DNS SRV, static
list) implements ``Registry``; callers only ever see this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import msgspec

__all__ = ("Instance", "Registry", "Watcher")


class Instance(msgspec.Struct, frozen=True, omit_defaults=True):
    service: str
    instance_id: str
    endpoint: str
    meta: dict[str, str] = {}


Watcher = Callable[[list[Instance]], None]
"""Called with the full list of instances each time it changes."""


class Registry(abc.ABC):
    """Where instances are registered and found."""

    @abc.abstractmethod
    async def register(self, instance: Instance) -> None:
        """Announce ``instance`` and keep it announced (renewing a lease) until deregistered."""

    @abc.abstractmethod
    async def deregister(self, instance: Instance) -> None:
        """Withdraw ``instance`` at once (graceful shutdown does this first)."""

    @abc.abstractmethod
    async def instances(self) -> list[Instance]:
        """Every instance known now."""

    async def lookup(self, service: str) -> list[Instance]:
        """The instances of one service."""
        return [i for i in await self.instances() if i.service == service]

    @abc.abstractmethod
    def watch(self, callback: Watcher) -> Callable[[], None]:
        """Call ``callback`` with the full list whenever it changes; returns an unsubscribe function."""

    async def aclose(self) -> None:  # noqa: B027  # optional: most backends hold nothing
        """Stop renewing and watching."""
