"""The embedded registry: a zmicro service that lists instances, and the client backend for it.

Zero configuration on one machine: ``zmicro run`` starts one on ``tcp://127.0.0.1:5550``
when none answers (or run ``zmicro registry``). Instances register with a lease and
renew it; a lease that is not renewed expires. A lease alone would let a process whose
RPC socket is dead stay listed through the side channel that renews it, so the registry
also probes every instance *through its data path* (a ``_zmicro.ping`` RPC on the
instance's own endpoint) and lists it only while those probes succeed. Watchers
long-poll ``watch`` and hear of a change as soon as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from .._errors import CallError, ZmicroError
from .._ratelog import RateLimitedLog
from .._service import Service, rpc
from ..patterns import RpcConnection
from ..transport import SocketOptions
from ._base import Instance, Registry, Watcher

__all__ = ("DEFAULT_REGISTRY_ENDPOINT", "EmbeddedRegistry", "Entry", "RegistryService", "Snapshot")

log = logging.getLogger("zmicro.registry")

DEFAULT_REGISTRY_ENDPOINT = "tcp://127.0.0.1:5550"
SERVICE_NAME = "zmicro.registry"


class Entry(msgspec.Struct, frozen=True):
    instance: Instance
    state: str
    """"up" while probes through the instance's endpoint succeed, "down" after repeated failures."""


class Snapshot(msgspec.Struct, frozen=True):
    epoch: str
    """Changes when the registry restarts, so that watchers know to take the whole list again."""
    version: int
    entries: list[Entry]


class _Record:
    __slots__ = ("expires", "failures", "instance", "state")

    def __init__(self, instance: Instance, expires: float) -> None:
        self.instance = instance
        self.expires = expires
        self.state = "up"
        self.failures = 0


class RegistryService(Service):
    """The registry itself. Serve it with ``zmicro registry`` (or ``zmicro run``, which starts one)."""

    name = SERVICE_NAME
    max_concurrency = 1024  # watchers wait here; each is cheap
    max_queued = 1024

    def __init__(self, *, probe_interval: float = 1.0, probe_failures: int = 3) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self.version = 0
        self._records: dict[str, _Record] = {}
        self._changed = asyncio.Event()
        self._probe_interval = probe_interval
        self._probe_failures = probe_failures
        self._probes: dict[str, RpcConnection] = {}
        self._task: asyncio.Task[None] | None = None
        self.idle_since = time.monotonic()

    async def on_start(self) -> None:
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._maintain())

    async def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in self._probes.values():
            conn.close()
        self._probes.clear()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()
        if self._records:
            self.idle_since = time.monotonic()

    def snapshot(self) -> Snapshot:
        entries = [Entry(r.instance, r.state) for r in self._records.values()]
        return Snapshot(self.epoch, self.version, entries)

    @rpc(idempotent=True)
    async def register(self, instance: Instance, ttl_ms: int = 10_000) -> int:
        """Add or renew an instance for ``ttl_ms`` milliseconds."""
        expires = time.monotonic() + max(ttl_ms, 500) / 1000.0
        record = self._records.get(instance.instance_id)
        if record is None or record.instance != instance:
            self._records[instance.instance_id] = _Record(instance, expires)
            log.info("registered %s at %s", instance.instance_id, instance.endpoint)
            self._bump()
        else:
            record.expires = expires
        return self.version

    @rpc(idempotent=True)
    async def deregister(self, instance_id: str) -> int:
        """Remove an instance at once (graceful shutdown)."""
        if self._records.pop(instance_id, None) is not None:
            log.info("deregistered %s", instance_id)
            self._bump()
        return self.version

    @rpc(idempotent=True)
    async def list(self) -> Snapshot:
        """Every instance with its state."""
        return self.snapshot()

    @rpc(idempotent=True)
    async def watch(self, epoch: str, since: int, wait_ms: int = 10_000) -> Snapshot:
        """Return as soon as the list differs from version ``since`` of ``epoch``, or after ``wait_ms``."""
        if epoch == self.epoch and since == self.version:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(wait_ms, 30_000) / 1000.0)
        return self.snapshot()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            try:
                await self._expire_and_probe()
            except Exception:
                log.exception("registry maintenance failed; retrying")

    async def _expire_and_probe(self) -> None:
        now = time.monotonic()
        expired = [iid for iid, r in self._records.items() if r.expires <= now]
        for iid in expired:
            log.info("lease of %s expired", iid)
            del self._records[iid]
        if expired:
            self._bump()
        endpoints = {r.instance.endpoint for r in self._records.values()}
        for ep in [ep for ep in self._probes if ep not in endpoints]:
            self._probes.pop(ep).close()
        if not endpoints:
            return
        results = await asyncio.gather(*(self._probe(ep) for ep in endpoints))
        alive = dict(zip(endpoints, results, strict=True))
        changed = False
        for record in self._records.values():
            ok = alive.get(record.instance.endpoint, False)
            record.failures = 0 if ok else record.failures + 1
            state = "up" if ok else ("down" if record.failures >= self._probe_failures else record.state)
            if state != record.state:
                log.warning("%s is %s", record.instance.instance_id, state)
                record.state = state
                changed = True
        if changed:
            self._bump()

    async def _probe(self, endpoint: str) -> bool:
        conn = self._probes.get(endpoint)
        if conn is None:
            conn = self._probes[endpoint] = RpcConnection(endpoint, SocketOptions())
        try:
            await conn.call("_zmicro", "ping", {}, deadline=time.monotonic() + self._probe_interval * 0.9)
        except ZmicroError:
            return False
        return True


class EmbeddedRegistry(Registry):
    """Client side of the embedded registry: register with renewal, watch by long polling."""

    def __init__(
        self, endpoint: str = DEFAULT_REGISTRY_ENDPOINT, *, ttl: float = 10.0, renew_interval: float = 2.0
    ) -> None:
        self.endpoint = endpoint
        self._ttl_ms = int(ttl * 1000)
        self._renew_interval = renew_interval
        self._conn: RpcConnection | None = None
        self._mine: dict[str, Instance] = {}
        self._watchers: list[Watcher] = []
        self._current: list[Instance] | None = None
        self._epoch = ""
        self._version = -1
        self._tasks: list[asyncio.Task[None]] = []
        self._renewer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._ratelog = RateLimitedLog(log)
        self._rand = random.Random()

    async def _call(self, method: str, within: float = 3.0, **args: Any) -> Any:
        if self._conn is None:
            self._conn = RpcConnection(self.endpoint, SocketOptions())
        return await self._conn.call(SERVICE_NAME, method, args, deadline=time.monotonic() + within)

    async def ping(self, within: float = 1.0) -> bool:
        """Whether a registry answers at the endpoint."""
        try:
            await self._call("list", within=within)
        except ZmicroError:
            return False
        return True

    async def register(self, instance: Instance) -> None:
        self._mine[instance.instance_id] = instance
        await self._call("register", instance=instance, ttl_ms=self._ttl_ms)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever())

    async def deregister(self, instance: Instance) -> None:
        self._mine.pop(instance.instance_id, None)
        await self._call("deregister", instance_id=instance.instance_id)

    async def instances(self) -> list[Instance]:
        if self._current is not None:
            return list(self._current)
        snap = msgspec.convert(await self._call("list"), Snapshot)
        return [e.instance for e in snap.entries if e.state == "up"]

    async def entries(self) -> Snapshot:
        """Every instance with its state (for ``zmicro ls``)."""
        return msgspec.convert(await self._call("list"), Snapshot)

    def watch(self, callback: Watcher) -> Callable[[], None]:
        self._watchers.append(callback)
        if self._current is not None:
            callback(list(self._current))
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_forever())

        def unwatch() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return unwatch

    async def _watch_forever(self) -> None:
        failures = 0
        while True:
            try:
                raw = await self._call(
                    "watch", within=12.0, epoch=self._epoch, since=self._version, wait_ms=10_000
                )
                snap = msgspec.convert(raw, Snapshot)
            except CallError as exc:
                failures += 1
                self._ratelog.warning("watch", f"registry {self.endpoint} did not answer a watch: {exc}")
                # Reconnects back off with jitter: an outage must not become a stampede.
                await asyncio.sleep(self._rand.uniform(0, min(2.0, 0.1 * 2**failures)))
                continue
            failures = 0
            if (snap.epoch, snap.version) != (self._epoch, self._version):
                self._epoch, self._version = snap.epoch, snap.version
                self._current = [e.instance for e in snap.entries if e.state == "up"]
                for cb in list(self._watchers):
                    cb(list(self._current))

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._renew_interval * self._rand.uniform(0.8, 1.0))
            for instance in list(self._mine.values()):
                try:
                    await self._call("register", instance=instance, ttl_ms=self._ttl_ms)
                except CallError as exc:
                    self._ratelog.warning("renew", f"could not renew {instance.instance_id}: {exc}")

    async def aclose(self) -> None:
        for task in (self._renewer, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._renewer = self._watcher = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def registry_endpoint_from_env() -> str:
    return os.environ.get("ZMICRO_REGISTRY", DEFAULT_REGISTRY_ENDPOINT)
