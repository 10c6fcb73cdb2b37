"""Which connection carries a call: instances by service name, least outstanding requests first.

Instances come from a fixed map (one endpoint for everything, or service -> endpoints)
or from a ``Registry`` that is watched, so sockets are connected as instances appear
and retired as they go. One connection per endpoint is shared by every service that
lives there. A retired connection is closed only once its last call has ended, so an
instance that is draining still delivers the replies it owes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence

from ._errors import ClientClosedError, NoSuchServiceError
from .discovery import Instance, Registry
from .patterns import RpcConnection
from .transport import SocketOptions

__all__ = ("Router",)

log = logging.getLogger("zmicro.client")

# How long a call waits for a first instance of its service to appear in the registry.
_FIRST_INSTANCE_WAIT = 2.0


class Router:
    def __init__(
        self,
        static: str | Mapping[str, str | Sequence[str]] | None,
        registry: Registry | None,
        options: SocketOptions,
        max_pending: int,
        max_request_bytes: int = 1024 * 1024,
    ) -> None:
        self._default: str | None = static if isinstance(static, str) else None
        self._static: dict[str, list[str]] = {}
        if isinstance(static, Mapping):
            for service, eps in static.items():
                self._static[service] = [eps] if isinstance(eps, str) else list(eps)
        self._registry = registry
        self._options = options
        self._max_pending = max_pending
        self._max_request_bytes = max_request_bytes
        self._connections: dict[str, RpcConnection] = {}
        self._retired: dict[str, RpcConnection] = {}
        self._instances: dict[str, list[Instance]] = {}
        self._changed = asyncio.Event()
        self._unwatch: object = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._rand = random.Random()
        self._cooling: dict[str, float] = {}
        self.closed = False

    def add_static(self, service: str, endpoints: list[str]) -> None:
        """A fixed route for ``service`` unless one was given already (explicit wins)."""
        self._static.setdefault(service, endpoints)

    # -- instances -------------------------------------------------------------

    def _ensure_watching(self) -> None:
        if self._registry is not None and self._unwatch is None:
            self._unwatch = self._registry.watch(self._on_instances)

    def _on_instances(self, instances: list[Instance]) -> None:
        by_service: dict[str, list[Instance]] = {}
        for inst in instances:
            by_service.setdefault(inst.service, []).append(inst)
        self._instances = by_service
        wanted = {i.endpoint for i in instances} | {ep for eps in self._static.values() for ep in eps}
        if self._default:
            wanted.add(self._default)
        for endpoint in [ep for ep in self._connections if ep not in wanted]:
            self._retire(endpoint)
        self._changed.set()
        self._changed = asyncio.Event()

    def endpoints_for(self, service: str) -> list[str]:
        if service in self._static:
            return self._static[service]
        if self._registry is not None:
            return [i.endpoint for i in self._instances.get(service, ())]
        return [self._default] if self._default else []

    def is_idempotent(self, service: str, method: str) -> bool:
        """Whether the service's instances declare ``method`` safe to repeat."""
        for inst in self._instances.get(service, ()):
            if method in inst.meta.get("idempotent", "").split(","):
                return True
        return False

    # -- connections -----------------------------------------------------------

    def connection(self, endpoint: str) -> RpcConnection:
        if self.closed:
            raise ClientClosedError("the client is closed")
        conn = self._connections.get(endpoint)
        if conn is None:
            conn = self._retired.pop(endpoint, None) or RpcConnection(
                endpoint,
                self._options,
                max_pending=self._max_pending,
                max_request_bytes=self._max_request_bytes,
            )
            self._connections[endpoint] = conn
        return conn

    async def pick(self, service: str, avoid: set[str], deadline: float) -> RpcConnection:
        """The least loaded connected instance of ``service`` (avoiding ``avoid`` if possible)."""
        conn = self.pick_nowait(service, avoid)
        if conn is not None:
            return conn
        endpoints = await self._wait_for_instances(service, deadline)
        if not endpoints:
            raise NoSuchServiceError(f"no instance of service {service!r} is known")
        conn = self.pick_nowait(service, avoid)
        assert conn is not None
        return conn

    def pick_nowait(self, service: str, avoid: set[str]) -> RpcConnection | None:
        """``pick`` without waiting: ``None`` while a registry has not listed the service yet."""
        self._ensure_watching()
        endpoints = self.endpoints_for(service)
        if not endpoints:
            if self._registry is not None:
                return None
            raise NoSuchServiceError(f"no instance of service {service!r} is known")
        fresh = [ep for ep in endpoints if ep not in avoid] or endpoints
        if len(fresh) == 1:
            return self.connection(fresh[0])
        conns = [self.connection(ep) for ep in fresh]
        now = time.monotonic()
        cooling = self._cooling
        # Connected instances first, then those that did not just turn a call away, then
        # fewest calls in flight; ties broken at random.
        return min(
            conns,
            key=lambda c: (
                not c.connected,
                cooling.get(c.endpoint, 0.0) > now,
                c.pending,
                self._rand.random(),
            ),
        )

    def cool(self, endpoint: str, seconds: float = 1.0) -> None:
        """Prefer other instances for a while: this one just said it is overloaded or draining."""
        self._cooling[endpoint] = time.monotonic() + seconds
        if len(self._cooling) > 1024:
            now = time.monotonic()
            self._cooling = {ep: t for ep, t in self._cooling.items() if t > now}

    async def _wait_for_instances(self, service: str, deadline: float) -> list[str]:
        until = min(deadline, time.monotonic() + _FIRST_INSTANCE_WAIT)
        while not self.endpoints_for(service):
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                break
        return self.endpoints_for(service)

    def _retire(self, endpoint: str) -> None:
        conn = self._connections.pop(endpoint, None)
        if conn is None:
            return
        self._retired[endpoint] = conn
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if self._sweeper is None and not self.closed:
            self._sweeper = asyncio.get_running_loop().call_later(0.5, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        for endpoint, conn in list(self._retired.items()):
            if conn.pending == 0:
                del self._retired[endpoint]
                conn.close()
        if self._retired:
            self._schedule_sweep()

    def statistics(self) -> dict[str, dict[str, int]]:
        out = {ep: conn.statistics() for ep, conn in self._connections.items()}
        out.update({ep: {**conn.statistics(), "retired": 1} for ep, conn in self._retired.items()})
        return out

    async def aclose(self) -> None:
        """Close every connection, and the registry (a client owns the one it was given)."""
        self.close()
        if self._registry is not None:
            await self._registry.aclose()

    def close(self) -> None:
        self.closed = True
        if callable(self._unwatch):
            self._unwatch()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in [*self._connections.values(), *self._retired.values()]:
            conn.close()
        self._connections.clear()
        self._retired.clear()
