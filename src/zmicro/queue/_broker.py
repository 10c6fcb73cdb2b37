"""The task broker: a zmicro service named ``zmicro.queue`` that stores, leases and redelivers work.

Producers call ``submit`` (durable: stored in SQLite before the call returns) or ``push``
(fire-and-forget: a bounded in-memory buffer, drops counted). Workers long-poll
``fetch`` with their credit, the number of handler slots they have free, so work only
ever goes to a worker that can start it now; each task delivery is a lease the worker
renews while its handler runs and settles with ``ack``/``nack``/``reject``/``release``.
A lease that runs out (worker killed, frozen, cut off) is a failed delivery: the task
goes back to the queue for another worker, or to the dead letters after its
``max_deliveries``. Riding on RPC gives the broker deadlines, error codes, overload
answers and bad-input handling for free.

Run one with ``zmicro run zmicro.queue:TaskQueue --bind tcp://127.0.0.1:5570``; the
``ZMICRO_QUEUE_DB``, ``ZMICRO_QUEUE_LEASE`` and ``ZMICRO_QUEUE_MAX_PENDING`` environment
variables set its options when it is created without arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from .._context import remaining
from .._errors import ConfigurationError, InvalidArgumentError, OverloadedError
from .._server import COMPONENT_FACTORIES, Server
from .._service import Service, rpc
from .._tasks import QUEUE_SERVICE
from ..protocol import MAX_NAME_LENGTH
from ._store import QueueFullError, TaskStore

__all__ = ("TaskQueue", "default_path")

log = logging.getLogger("zmicro.queue")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_MAX_CREDIT = 1_000
_MAX_STREAMS = 1_000
_POLL = 0.25  # waiting fetches look again this often (retries whose delay has passed)
_MAX_GROUP = 512  # writes in one shared transaction: past it, commit at once (short loop stalls)
_MAX_HOLD = 1.0  # a paced submit waits at most this long for room, then is stored anyway
_MAX_HELD = 512  # paced submits held at once; more are not held (they would crowd out fetches and acks)
_MAX_ITEMS = 1024  # tasks in one submit_many / ack_many / nack_many: bounds one transaction's stall
_CONSUMED = 2.0  # a name counts as being consumed this long after a fetch asked for it
_INT64 = 1 << 63

_T = TypeVar("_T")
_P = ParamSpec("_P")


def default_path() -> Path:
    """``$ZMICRO_QUEUE_DB``, else ``$XDG_DATA_HOME/zmicro/queue.db`` (``~/.local/share/...``)."""
    env = os.environ.get("ZMICRO_QUEUE_DB")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "zmicro" / "queue.db"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_Held = tuple[asyncio.Future[bool], int]  # a paced submit's wake-up (True: admitted) and its task count


def _give_up(held: deque[_Held], entry: _Held) -> None:
    """A held submit waited long enough: out of the line, and on to be stored."""
    with contextlib.suppress(ValueError):
        held.remove(entry)
    if not entry[0].done():
        entry[0].set_result(False)


def _check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"invalid task name {name!r}", details={"field": "name"})


def _check_lease(task_id: int, token: int) -> None:
    # SQLite cannot bind these: refused before any write, so a shared transaction is not disturbed.
    if not (-_INT64 <= task_id < _INT64 and -_INT64 <= token < _INT64):
        raise InvalidArgumentError("task id or token out of range", details={"field": "token"})


class TaskQueue(Service):
    """Durable work queues with leases, redelivery and dead letters.

    Example::

        queue = zmicro.TaskQueue("/var/lib/app/queue.db", lease=30.0)
        async with zmicro.open_server(queue, bind="tcp://127.0.0.1:5570"):
            ...

    ``path`` is the SQLite file (``":memory:"`` keeps nothing across restarts: tests).
    ``lease`` is how long a worker may stay silent before its task goes to another one.
    ``max_pending`` bounds the stored tasks of each name: past it ``submit`` is answered
    "overloaded". ``soft_max_pending`` paces intake: past it, while workers take that
    name, a submit waits (up to a second) until as many tasks have left as arrive, so
    deliveries and acks get the queue's time instead of a growing backlog.
    ``max_stream`` bounds the fire-and-forget buffer of each name.
    ``synchronous`` is SQLite's: ``"NORMAL"`` survives a crash of this process,
    ``"FULL"`` also a power loss (an fsync per accepted task).
    """

    name = QUEUE_SERVICE
    # Each waiting worker holds one long-poll: leave room for many.
    max_concurrency = 1024
    max_queued = 1024

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        lease: float | None = None,
        max_pending: int | None = None,
        max_deliveries: int = 5,
        max_stream: int = 10_000,
        synchronous: str = "NORMAL",
        soft_max_pending: int = 10_000,
    ) -> None:
        self.path = str(path if path is not None else default_path())
        self.lease = float(lease if lease is not None else os.environ.get("ZMICRO_QUEUE_LEASE", 30.0))
        self.max_pending = int(
            max_pending if max_pending is not None else os.environ.get("ZMICRO_QUEUE_MAX_PENDING", 100_000)
        )
        if self.lease <= 0 or self.max_pending < 1 or max_deliveries < 1 or max_stream < 1:
            raise ConfigurationError(
                "TaskQueue: lease, max_pending, max_deliveries and max_stream must be positive"
            )
        self.max_deliveries = max_deliveries
        self.max_stream = max_stream
        self.soft_max_pending = soft_max_pending
        self.synchronous = synchronous
        self._store: TaskStore | None = None
        self._streams: dict[str, deque[bytes]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._by_worker: dict[str, set[asyncio.Future[None]]] = {}
        self._leaving: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.counters: Counter[str] = Counter()
        # Group commit: the writes of one loop turn share a transaction; each waits here for its COMMIT.
        self._group: list[asyncio.Future[None]] | None = None
        # Pacing: submits held until tasks of their name leave (each with how many tasks it
        # brings), and when each name was last fetched.
        self._held: dict[str, deque[_Held]] = {}
        self._held_count = 0
        self._fetched: dict[str, float] = {}

    @property
    def store(self) -> TaskStore:
        if self._store is None:
            raise RuntimeError("the task queue is not started")
        return self._store

    async def on_start(self) -> None:
        self._store = TaskStore(
            self.path, synchronous=self.synchronous, default_max_deliveries=self.max_deliveries
        )
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        log.info("task queue in %s (lease %.1fs)", self.path, self.lease)

    async def on_stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._wake_all()
        if self._group is not None:
            self._commit(self._group)  # writes already made must not be lost with their answers
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- group commit ----------------------------------------------------------

    async def _write(self, op: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``op`` (a store write) in this loop turn's shared transaction; return after its COMMIT.

        The first write of a turn begins the transaction and schedules the commit for the
        next turn, after every handler that was ready in this one has written: one COMMIT
        for all of them. If the commit (or any write in it) fails, every writer gets the error.
        """
        group = self._group
        if group is None:
            group = self._open()
        result = self._run(group, op, *args, **kwargs)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        group.append(fut)
        if len(group) >= _MAX_GROUP:
            self._commit(group)
        await fut
        return result

    def _open(self) -> list[asyncio.Future[None]]:
        self.store.begin()
        group: list[asyncio.Future[None]] = []
        self._group = group
        asyncio.get_running_loop().call_soon(self._commit, group)
        return group

    def _run(
        self, group: list[asyncio.Future[None]], op: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``op(...)`` in the shared transaction of ``group``; its failure is everybody's in it."""
        try:
            return op(*args, **kwargs)
        except BaseException as exc:
            if not self.store.shared:  # the store rolled everything back: tell the others
                self._fail(group, exc)
            raise

    def _commit(self, group: list[asyncio.Future[None]]) -> None:
        if self._group is not group:
            return  # committed early (full), or failed
        self._group = None
        try:
            self.store.commit()
        except Exception as exc:
            log.exception("committing %d writes failed", len(group))
            self._fail(group, exc, current=False)
            return
        for fut in group:
            if not fut.done():  # a cancelled writer: its write stands, nobody hears of it
                fut.set_result(None)
        if self._held:
            self._admit()

    def _fail(self, group: list[asyncio.Future[None]], exc: BaseException, *, current: bool = True) -> None:
        if current and self._group is group:
            self._group = None
        for fut in group:
            if not fut.done():
                fut.set_exception(exc)

    async def _settled(self) -> None:
        """Wait for the open shared transaction, if any: reads then see only committed state."""
        if self._group is not None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._group.append(fut)
            with contextlib.suppress(Exception):  # its failure is the writers' news, not ours
                await fut

    async def _sweep(self) -> None:
        interval = min(max(self.lease / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                for name in await self._write(self.store.expire_leases, time.time()):
                    self._wake(name)
            except Exception:  # a bad moment of the database must not end the sweeping
                log.exception("expiring leases failed")

    # -- waiting workers -------------------------------------------------------

    def _wake(self, name: str) -> None:
        for fut in self._waiters.get(name, ()):
            if not fut.done():
                fut.set_result(None)

    def _wake_all(self) -> None:
        for name in list(self._waiters):
            self._wake(name)

    async def _wait(self, worker: str, names: list[str], seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        for name in names:
            self._waiters.setdefault(name, set()).add(fut)
        mine = self._by_worker.setdefault(worker, set())
        mine.add(fut)
        timer = loop.call_later(seconds, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            mine.discard(fut)
            if not mine:
                self._by_worker.pop(worker, None)
            for name in names:
                waiters = self._waiters.get(name)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del self._waiters[name]

    # -- pacing ----------------------------------------------------------------
    #
    # Intake is much cheaper than delivery, so a steady stream of submits would take
    # most of the queue's time and grow a backlog while workers starve. Past
    # ``soft_max_pending`` stored tasks of a name that workers are taking, a submit waits
    # for room before it is stored: the producer is slowed to the rate tasks leave.

    def _paced(self, name: str) -> bool:
        return self._room_for(name) <= 0

    def _room_for(self, name: str) -> int:
        """How many more tasks of ``name`` may be stored before pacing holds them (large: no pacing)."""
        if self._held_count >= _MAX_HELD:
            return _INT64
        fetched = self._fetched.get(name)
        if fetched is None or time.monotonic() - fetched >= _CONSUMED:
            return _INT64
        return self.soft_max_pending - self.store.pending(name)

    async def _room(self, name: str, count: int = 1) -> bool:
        """Wait until ``name`` is below its soft bound again, at most ``_MAX_HOLD`` (and the deadline).

        ``count`` is how many tasks the held request brings: a batch takes that much room.
        True: admitted because there is room; False: waited long enough, store it anyway.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (fut, count)
        held = self._held.setdefault(name, deque())
        held.append(entry)
        self._held_count += 1
        self.counters["submits_paced"] += count
        hold = min(_MAX_HOLD, max(0.0, (remaining() or _MAX_HOLD) - 0.1))
        timer = loop.call_later(hold, _give_up, held, entry)
        try:
            return await fut
        finally:
            timer.cancel()
            self._held_count -= 1
            if fut.cancelled():
                with contextlib.suppress(ValueError):
                    held.remove(entry)
            if not held and self._held.get(name) is held:
                del self._held[name]

    def _admit(self) -> None:
        """After a commit: let as many held submits go as there is room below the soft bound."""
        store = self.store
        for name, held in list(self._held.items()):
            room = self.soft_max_pending - store.pending(name)
            # The first in line goes whenever there is any room, even a batch larger than it:
            # waiting for room for all of it could hold a big batch behind small ones for good.
            while held and room > 0:
                fut, count = held.popleft()
                if not fut.done():
                    fut.set_result(True)
                    room -= count
            if not held:
                del self._held[name]

    # -- producers -------------------------------------------------------------

    @rpc
    async def submit(
        self, name: str, payload: bytes, ttl: float | None = None, key: str | None = None
    ) -> int:
        """Store one task durably; the answer means it is committed. Full: "overloaded"."""
        _check_name(name)
        if ttl is not None and ttl <= 0:
            raise InvalidArgumentError("ttl must be positive", details={"field": "ttl"})
        if self._paced(name):
            await self._room(name)
        try:
            task_id, _ = await self._write(
                self.store.enqueue,
                name,
                payload,
                now=time.time(),
                max_pending=self.max_pending,
                ttl=ttl,
                key=key,
            )
        except QueueFullError:
            raise OverloadedError(
                f"task queue {name!r} is full ({self.max_pending} pending); retry later"
            ) from None
        self._wake(name)
        return task_id

    @rpc
    async def submit_many(
        self, name: str, items: list[tuple[bytes, float | None, str | None]]
    ) -> list[int | dict[str, str]]:
        """Store several tasks of ``name``, each ``(payload, ttl, key)``, in one commit.

        The answer has one entry per item, in order: the task's id (committed), or an error
        ``{"code", "message"}`` for that item alone (``overloaded`` when the name is full,
        ``invalid_argument``). A client's submits made together arrive here as one request,
        which costs the queue a fraction of one request per task.
        """
        _check_name(name)
        if len(items) > _MAX_ITEMS:
            raise InvalidArgumentError(f"at most {_MAX_ITEMS} items per request", details={"field": "items"})
        out: list[int | dict[str, str]] = []
        good: list[tuple[bytes, float | None, str | None]] = []
        where: list[int] = []
        for i, item in enumerate(items):
            ttl = item[1]
            if ttl is not None and ttl <= 0:
                out.append({"code": "invalid_argument", "message": "ttl must be positive", "field": "ttl"})
                continue
            out.append(0)  # replaced below
            good.append(item)
            where.append(i)
        ids: list[int | None] = []
        rest = good
        while rest:
            # Paced like single submits, a part at a time: a batch may not jump the soft bound
            # in one go, and what is stored early is committed (and worked on) at once.
            take = len(rest)
            room = self._room_for(name)
            if room <= 0:
                room = (
                    self.soft_max_pending - self.store.pending(name) if await self._room(name, take) else take
                )
            take = min(take, max(1, room))
            part = await self._write(
                self.store.enqueue_many, name, rest[:take], now=time.time(), max_pending=self.max_pending
            )
            ids += part
            rest = rest[take:]
            if any(task_id is not None for task_id in part):
                self._wake(name)
        for i, task_id in zip(where, ids, strict=True):
            if task_id is None:
                out[i] = {
                    "code": "overloaded",
                    "message": f"task queue {name!r} is full ({self.max_pending} pending); retry later",
                }
            else:
                out[i] = task_id
        return out

    @rpc
    async def push(self, name: str, items: list[bytes]) -> dict[str, int]:
        """Fire-and-forget messages: kept in memory, bounded; what does not fit is dropped and counted."""
        _check_name(name)
        buf = self._streams.get(name)
        if buf is None:
            if len(self._streams) >= _MAX_STREAMS:
                self.counters["stream_dropped"] += len(items)
                return {"accepted": 0, "dropped": len(items)}
            buf = self._streams[name] = deque()
        room = max(0, self.max_stream - len(buf))
        buf.extend(items[:room])
        dropped = len(items) - min(room, len(items))
        self.counters["stream_accepted"] += len(items) - dropped
        self.counters["stream_dropped"] += dropped
        if len(items) > dropped:
            self._wake(name)
        return {"accepted": len(items) - dropped, "dropped": dropped}

    # -- workers ---------------------------------------------------------------

    @rpc
    async def fetch(
        self,
        worker: str,
        credit: dict[str, int],
        max_deliveries: dict[str, int] | None = None,
        wait_ms: int = 1000,
    ) -> dict[str, Any]:
        """Up to ``credit[name]`` deliveries per name; waits up to ``wait_ms`` when there is none."""
        for name in credit:
            _check_name(name)
        credit = {n: min(c, _MAX_CREDIT) for n, c in credit.items() if c > 0}
        limits = max_deliveries or {}
        mono = time.monotonic()
        for name in credit:
            self._fetched[name] = mono
        budget = min(wait_ms / 1000.0, max(0.0, (remaining() or 0.0) - 0.5))
        until = time.monotonic() + budget
        while True:
            tasks: list[list[Any]] = []
            stream: list[list[Any]] = []
            if worker not in self._leaving:
                now = time.time()
                claimed = 0
                store = self.store
                group = self._group
                if group is None:
                    group = self._open()
                for name, n in credit.items():
                    # Claimed in the shared transaction, answered only once that is committed below.
                    leases = self._run(
                        group,
                        store.claim,
                        name,
                        n,
                        now=now,
                        lease=self.lease,
                        max_deliveries=limits.get(name),
                    )
                    tasks.extend([x.id, x.name, x.payload, x.deliveries, x.token] for x in leases)
                    claimed += len(leases)
                    left = n - len(leases)
                    buf = self._streams.get(name)
                    while buf and left > 0:
                        stream.append([name, buf.popleft()])
                        left -= 1
                    if buf is not None and not buf:
                        del self._streams[name]
                if claimed:
                    await self._write(_nothing)
            left_s = until - time.monotonic()
            if tasks or stream or left_s <= 0 or worker in self._leaving or self._store is None:
                self.counters["fetches"] += 1
                self.counters["stream_delivered"] += len(stream)
                return {"lease_ms": int(self.lease * 1000), "tasks": tasks, "stream": stream}
            await self._wait(worker, list(credit), min(left_s, _POLL))

    @rpc
    async def ack(self, task_id: int, token: int) -> bool:
        """The handler finished: the task is done and removed. False: the lease was already lost."""
        _check_lease(task_id, token)
        return await self._write(self.store.ack, task_id, token)

    @rpc
    async def ack_many(self, leases: list[tuple[int, int]]) -> list[bool]:
        """``ack`` each ``(task id, token)``, all in one commit; one answer per lease, in order."""
        if len(leases) > _MAX_ITEMS:
            raise InvalidArgumentError(f"at most {_MAX_ITEMS} per request", details={"field": "leases"})
        for task_id, token in leases:
            _check_lease(task_id, token)
        return await self._write(self.store.ack_many, leases)

    @rpc
    async def nack_many(self, items: list[tuple[int, int, str, float]]) -> list[str]:
        """``nack`` each ``(task id, token, error, retry_after)`` in one commit; one answer per item."""
        if len(items) > _MAX_ITEMS:
            raise InvalidArgumentError(f"at most {_MAX_ITEMS} items per request", details={"field": "items"})
        for task_id, token, _error, _retry in items:
            _check_lease(task_id, token)
        return await self._write(self.store.nack_many, items, now=time.time())

    @rpc
    async def nack(self, task_id: int, token: int, error: str = "", retry_after: float = 0.0) -> str:
        """The handler raised: a failed delivery. Answers ``retry``, ``dead`` or ``stale``."""
        _check_lease(task_id, token)
        return await self._write(
            self.store.nack, task_id, token, error, now=time.time(), retry_after=retry_after
        )

    @rpc
    async def reject(self, task_id: int, token: int, reason: str) -> bool:
        """The payload cannot be handled (does not validate): straight to the dead letters."""
        _check_lease(task_id, token)
        return await self._write(self.store.reject, task_id, token, reason, now=time.time())

    @rpc
    async def release(self, leases: list[tuple[int, int]]) -> int:
        """Hand deliveries back unrun (worker stopping); they are not counted as tries."""
        for task_id, token in leases:
            _check_lease(task_id, token)
        released = await self._write(self.store.release_many, leases)
        self._wake_all()
        return released

    @rpc
    async def renew(self, leases: list[tuple[int, int]]) -> dict[str, Any]:
        """Extend the leases of running handlers; ``lost`` lists those this worker no longer holds."""
        for task_id, token in leases:
            _check_lease(task_id, token)
        lost = await self._write(self.store.renew, leases, now=time.time(), lease=self.lease)
        return {"lost": lost, "lease_ms": int(self.lease * 1000)}

    @rpc
    async def leave(self, worker: str) -> None:
        """The worker is stopping: its waiting fetches return at once, empty."""
        now = time.monotonic()
        self._leaving = {w: t for w, t in self._leaving.items() if now - t < 60.0}
        self._leaving[worker] = now
        for fut in self._by_worker.get(worker, ()):
            if not fut.done():
                fut.set_result(None)

    # -- operators -------------------------------------------------------------

    @rpc(idempotent=True)
    async def stats(self) -> dict[str, Any]:
        """Counters since start, depth per task name, fire-and-forget buffers."""
        await self._settled()
        return self.statistics()

    def statistics(self) -> dict[str, Any]:
        counters = Counter(self.counters)
        if self._store is not None:
            counters.update(self._store.counters)
        return {
            "path": self.path,
            "lease_s": self.lease,
            "max_pending": self.max_pending,
            "counters": dict(counters),
            "tasks": self._store.depth(time.time()) if self._store is not None else {},
            "stream": {name: len(buf) for name, buf in self._streams.items()},
            "waiting_fetches": len({id(f) for ws in self._waiters.values() for f in ws}),
        }

    @rpc(idempotent=True)
    async def dead(self, name: str | None = None, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Dead letters, oldest first: id, name, payload, deliveries, reason, last error, times."""
        await self._settled()
        return self.store.dead_letters(name=name, after=after, limit=limit)

    @rpc
    async def replay(
        self, ids: list[int] | None = None, everything: bool = False, name: str | None = None
    ) -> int:
        """Put dead letters back in the queue (``ids``, or ``everything`` optionally of one ``name``)."""
        if ids is None and not everything:
            raise InvalidArgumentError("give ids, or everything=true", details={"field": "ids"})
        count = await self._write(self.store.replay, ids, name=name, now=time.time())
        self._wake_all()
        return count

    @rpc
    async def purge(
        self, ids: list[int] | None = None, everything: bool = False, name: str | None = None
    ) -> int:
        """Delete dead letters for good (``ids``, or ``everything`` optionally of one ``name``)."""
        if ids is None and not everything:
            raise InvalidArgumentError("give ids, or everything=true", details={"field": "ids"})
        return await self._write(self.store.purge, ids, name=name)


def _nothing() -> None:
    """A write that adds nothing: waits for the COMMIT of what this turn already wrote."""


class _QueueComponent:
    """Shows the broker's counters in ``server.statistics()`` (and so in ``zmicro info``)."""

    name = "queue"

    def __init__(self, queue: TaskQueue) -> None:
        self._queue = queue

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        return None

    def statistics(self) -> dict[str, Any]:
        return self._queue.statistics()

    def meta(self) -> dict[str, str]:
        return {"queue": "1"}


def _queue_component(server: Server) -> _QueueComponent | None:
    for instance, _spec in server.hosted():
        if isinstance(instance, TaskQueue):
            return _QueueComponent(instance)
    return None


COMPONENT_FACTORIES.append(_queue_component)
