"""The task worker: a server component that pulls work from the queue against credit and runs it.

A server whose services have ``@task`` handlers gets one ``TaskWorker`` (through
``COMPONENT_FACTORIES``). Credit is the number of free handler slots per task name: the
worker only ever asks the queue for as many tasks as it can start at once, so a slow
worker never sits on a backlog while others idle. Each outstanding ``fetch`` is a grant
of credit; when a handler finishes, its slot becomes a new grant at once. While a
handler runs, its lease is renewed; its outcome settles the delivery: success acks,
an exception nacks (retried later, dead after ``max_deliveries``), a payload that does
not validate is rejected straight to the dead letters. The acks (and nacks) of handlers
that finish in the same loop turn leave together in one ``ack_many`` (``nack_many``)
request, stored by the queue in one commit; each handler still waits for its own
answer. On shutdown the worker stops
fetching, lets running handlers finish within the grace period and hands back the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import random
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._client import Client
from ._errors import CallError, ConfigurationError, NoSuchMethodError, error_from_wire
from ._ratelog import RateLimitedLog
from ._server import COMPONENT_FACTORIES, Server
from ._service import Service
from ._tasks import QUEUE_SERVICE, TaskSpec, describe_tasks, retry_delay
from ._threads import DaemonThreadPool

__all__ = ("TaskWorker", "resolve_queue_endpoint")

log = logging.getLogger("zmicro.tasks")

_MAX_FETCHES = 16
_MAX_ERROR = 4096
_MAX_SETTLES = 512  # settles in one ack_many/nack_many request (the queue takes up to 1024)


@dataclass(slots=True)
class _Handler:
    instance: Service
    spec: TaskSpec
    running: int = 0
    granted: int = 0
    max_running: int = 0
    counters: Counter[str] = field(default_factory=Counter)

    @property
    def free(self) -> int:
        return self.spec.options.concurrency - self.running - self.granted


@dataclass(frozen=True, slots=True)
class _Delivery:
    name: str
    payload: bytes
    task_id: int = 0
    deliveries: int = 0
    token: int = 0

    @property
    def durable(self) -> bool:
        return self.task_id != 0


def resolve_queue_endpoint(server: Server) -> str | None:
    """Where this server's workers find the queue, without asking a registry.

    In order: a ``task_queue`` attribute on a hosted service, ``$ZMICRO_QUEUE``, a
    ``TaskQueue`` hosted by the same server. ``None``: ask the registry.
    """
    for instance, _spec in server.hosted():
        explicit = getattr(instance, "task_queue", None)
        if isinstance(explicit, str) and explicit:
            return explicit
    env = os.environ.get("ZMICRO_QUEUE")
    if env:
        return env
    for _instance, spec in server.hosted():
        if spec.name == QUEUE_SERVICE:
            return server.endpoint
    return None


class TaskWorker:
    """Runs the ``@task`` handlers of one server. ``statistics()`` is shown by ``zmicro info``."""

    name = "tasks"

    def __init__(
        self, server: Server, handlers: list[tuple[Service, TaskSpec]], *, wait: float = 1.0
    ) -> None:
        self._server = server
        self._handlers = {spec.name: _Handler(instance, spec) for instance, spec in handlers}
        self.worker_id = f"{server.instance_id}-{os.getpid()}"
        self.endpoint = resolve_queue_endpoint(server)
        if self.endpoint is None and server.registry is None:
            raise ConfigurationError(
                f"tasks {', '.join(self._handlers)} need a task queue: set ZMICRO_QUEUE=tcp://..., "
                f"host zmicro.queue:TaskQueue in the same server, or give the server a registry"
            )
        self.wait = wait
        self.lease = 30.0
        self.counters: Counter[str] = Counter()
        self._client: Client | None = None
        self._changed = asyncio.Event()
        self._stopping = False
        self._main: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._fetches: set[asyncio.Task[None]] = set()
        self._running: dict[asyncio.Task[None], _Delivery] = {}
        self._leases: set[tuple[int, int]] = set()  # (task id, token) of running handlers
        self._errors_in_a_row = 0
        self._ratelog = RateLimitedLog(log)
        sync = sum(h.spec.options.concurrency for h in self._handlers.values() if not h.spec.is_async)
        self._pool = DaemonThreadPool(sync, name="zmicro-task") if sync else None
        self._rng = random.Random()
        # Settles of this loop turn waiting to leave together, by method: (arguments, waiter).
        self._settles: dict[str, list[tuple[tuple[Any, ...], asyncio.Future[Any]]]] = {}
        self._settle_requests: set[asyncio.Task[None]] = set()
        # Off once the queue answers that it has no ack_many (an older one): one call per settle.
        self.batching = True

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._main = loop.create_task(self._run())

    async def _connect(self) -> Client:
        delay = 0.1
        while self.endpoint is None:
            registry = self._server.registry
            assert registry is not None
            try:
                found = await registry.lookup(QUEUE_SERVICE)
            except Exception:
                found = []
                log.warning("registry lookup of %s failed", QUEUE_SERVICE, exc_info=True)
            if found:
                self.endpoint = found[0].endpoint
                break
            self.counters["queue_not_found"] += 1
            self._ratelog.warning("lookup", f"no {QUEUE_SERVICE} in the registry yet; tasks wait")
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 5.0)
        self._client = Client({QUEUE_SERVICE: self.endpoint})
        return self._client

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._changed.set()
        client = self._client
        if client is not None:
            with contextlib.suppress(CallError):
                await client.call(QUEUE_SERVICE, "leave", worker=self.worker_id, _timeout=1.0)
        if self._fetches:
            await asyncio.wait(list(self._fetches), timeout=self.wait + 1.0)
        for task in list(self._fetches):
            task.cancel()
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        if self._running:
            await asyncio.wait(list(self._running), timeout=grace)
        leftover = list(self._leases)
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running), timeout=1.0)
        if leftover and client is not None:
            with contextlib.suppress(CallError):
                await client.call(QUEUE_SERVICE, "release", leases=leftover, _timeout=2.0)
                self.counters["released_shutdown"] += len(leftover)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if client is not None:
            await client.aclose()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- credit and fetching ---------------------------------------------------

    async def _run(self) -> None:
        await self._connect()
        while not self._stopping:
            self._changed.clear()
            credit = {name: h.free for name, h in self._handlers.items() if h.free > 0}
            if credit and len(self._fetches) < _MAX_FETCHES:
                for name, n in credit.items():
                    self._handlers[name].granted += n
                task = asyncio.get_running_loop().create_task(self._fetch(credit))
                self._fetches.add(task)
                task.add_done_callback(self._fetches.discard)
            await self._changed.wait()

    async def _fetch(self, credit: dict[str, int]) -> None:
        assert self._client is not None
        used: Counter[str] = Counter()
        try:
            reply = await self._client.call(
                QUEUE_SERVICE,
                "fetch",
                worker=self.worker_id,
                credit=credit,
                max_deliveries={n: self._handlers[n].spec.options.max_deliveries for n in credit},
                wait_ms=int(self.wait * 1000),
                _timeout=self.wait + 5.0,
            )
        except CallError as exc:
            self.counters["fetch_errors"] += 1
            self._errors_in_a_row += 1
            self._ratelog.warning("fetch", f"fetching tasks from {self.endpoint} failed: {exc.code}: {exc}")
            # Back off (credit stays granted meanwhile, so no other fetch races ahead).
            await asyncio.sleep(min(2.0, 0.05 * 2**self._errors_in_a_row) * self._rng.uniform(0.5, 1.0))
            reply = None
        except asyncio.CancelledError:
            reply = None
        else:
            self._errors_in_a_row = 0
        deliveries: list[_Delivery] = []
        if isinstance(reply, dict):
            self.lease = max(0.05, reply.get("lease_ms", 30_000) / 1000.0)
            if self._renewer is None:  # the lease length is known from the first answer on
                self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
            for task_id, name, payload, count, token in reply.get("tasks", ()):
                deliveries.append(_Delivery(name, payload, task_id, count, token))
            for name, payload in reply.get("stream", ()):
                deliveries.append(_Delivery(name, payload))
        to_release: list[tuple[int, int]] = []
        for d in deliveries:
            handler = self._handlers.get(d.name)
            if handler is None or used[d.name] >= credit.get(d.name, 0):
                self.counters["unexpected_deliveries"] += 1  # never asked for: give it back
                if d.durable:
                    to_release.append((d.task_id, d.token))
                continue
            used[d.name] += 1
            if self._stopping:
                if d.durable:
                    to_release.append((d.task_id, d.token))
                continue
            handler.granted -= 1
            handler.running += 1
            handler.max_running = max(handler.max_running, handler.running)
            if d.durable:
                self._leases.add((d.task_id, d.token))
            task = asyncio.get_running_loop().create_task(self._handle(handler, d))
            self._running[task] = d
            task.add_done_callback(self._finished)
        for name, n in credit.items():
            handler = self._handlers[name]
            handler.granted -= n - used[name] + (used[name] if self._stopping else 0)
        if to_release and self._client is not None:
            with contextlib.suppress(CallError):
                await self._client.call(QUEUE_SERVICE, "release", leases=to_release, _timeout=2.0)
        self._changed.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._changed.set()

    # -- running handlers ------------------------------------------------------

    async def _handle(self, handler: _Handler, d: _Delivery) -> None:
        counters = handler.counters
        try:
            try:
                payload = handler.spec.decoder.decode(d.payload)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                counters["invalid"] += 1
                if d.durable:
                    reason = f"payload does not validate for task {d.name!r}: {exc}"
                    await self._settle("reject", d, reason=reason)
                return
            func = getattr(handler.instance, handler.spec.attr)
            try:
                if handler.spec.is_async:
                    await func(payload)
                else:
                    assert self._pool is not None
                    ctx = contextvars.copy_context()
                    await asyncio.wrap_future(self._pool.submit(ctx.run, functools.partial(func, payload)))
            except asyncio.CancelledError:
                counters["cancelled_shutdown"] += 1
                raise
            except Exception as exc:
                counters["failed"] += 1
                log.debug("task %s #%s raised %r", d.name, d.task_id, exc)
                if d.durable:
                    text = "".join(traceback.format_exception(exc))[-_MAX_ERROR:]
                    delay = retry_delay(handler.spec.options, d.deliveries, self._rng)
                    await self._settle("nack", d, error=text, retry_after=delay)
                return
            counters["done"] += 1
            if d.durable:
                await self._settle("ack", d)
        finally:
            self._leases.discard((d.task_id, d.token))
            handler.running -= 1

    async def _settle(self, method: str, d: _Delivery, **kwargs: Any) -> None:
        """Tell the queue the outcome; a few tries, since a lost ack means the task runs again."""
        assert self._client is not None
        attempt = 0
        while attempt < 3:
            batched = self.batching and method in ("ack", "nack")
            try:
                if batched:
                    result = await self._batched(method, d, kwargs)
                else:
                    result = await self._client.call(
                        QUEUE_SERVICE, method, task_id=d.task_id, token=d.token, _timeout=5.0, **kwargs
                    )
            except NoSuchMethodError:
                if batched and not self.batching:
                    continue  # the queue has no ack_many: again, alone (not a failed try)
                self.counters["settle_errors"] += 1
                break
            except CallError as exc:
                self.counters["settle_errors"] += 1
                if exc.code in ("invalid_argument", "no_such_service"):
                    break
                await asyncio.sleep(0.1 * 2**attempt)
                attempt += 1
                continue
            if result is False or result == "stale":
                self.counters["stale_settles"] += 1  # our lease had run out: it may run twice
            elif result == "dead":
                self.counters["dead_lettered"] += 1
            return
        self._ratelog.warning("settle", f"could not {method} task {d.task_id}; its lease will expire")

    def _batched(self, method: str, d: _Delivery, kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Join this loop turn's ``ack_many``/``nack_many``; the future is this delivery's answer."""
        loop = asyncio.get_running_loop()
        args: tuple[Any, ...] = (d.task_id, d.token)
        if method == "nack":
            args += (kwargs.get("error", ""), float(kwargs.get("retry_after", 0.0)))
        batch = self._settles.get(method)
        if batch is None:
            batch = self._settles[method] = []
            # After the callbacks already due in this turn: the other handlers that finish
            # now join this request instead of making their own.
            loop.call_soon(self._send_settles, method, batch)
        waiter: asyncio.Future[Any] = loop.create_future()
        batch.append((args, waiter))
        if len(batch) >= _MAX_SETTLES:
            self._send_settles(method, batch)
        return waiter

    def _send_settles(self, method: str, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        if self._settles.get(method) is not batch:
            return  # already sent (it filled up)
        del self._settles[method]
        task = asyncio.get_running_loop().create_task(self._settle_request(method, batch))
        self._settle_requests.add(task)
        task.add_done_callback(self._settle_requests.discard)

    async def _settle_request(
        self, method: str, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]
    ) -> None:
        assert self._client is not None
        try:
            if len(batch) == 1:
                args = batch[0][0]
                kwargs: dict[str, Any] = {"task_id": args[0], "token": args[1]}
                if method == "nack":
                    kwargs.update(error=args[2], retry_after=args[3])
                answers = [await self._client.call(QUEUE_SERVICE, method, kwargs, _timeout=5.0)]
            else:
                self.counters["settle_batches"] += 1
                field = "leases" if method == "ack" else "items"
                answers = await self._client.call(
                    QUEUE_SERVICE, f"{method}_many", {field: [a for a, _ in batch]}, _timeout=5.0
                )
                if not isinstance(answers, list) or len(answers) != len(batch):
                    raise CallError(f"the queue answered {len(batch)} settles with {answers!r}")
        except BaseException as exc:
            if isinstance(exc, NoSuchMethodError) and len(batch) > 1:
                self.batching = False  # before the handlers hear of it: they settle again, alone
            err = exc if isinstance(exc, CallError) else CallError(f"settling failed: {exc!r}")
            for _args, waiter in batch:
                if not waiter.done():
                    # A copy each: one exception raised in many tasks would pile up their tracebacks.
                    waiter.set_exception(error_from_wire(err.code, err.message, err.details))
            if not isinstance(exc, Exception):
                raise
            return
        for (_args, waiter), answer in zip(batch, answers, strict=True):
            if not waiter.done():  # a handler cancelled at shutdown: its settle stands all the same
                waiter.set_result(answer)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if not self._leases or self._client is None:
                continue
            held = list(self._leases)
            try:
                reply = await self._client.call(
                    QUEUE_SERVICE,
                    "renew",
                    leases=held,
                    _timeout=max(1.0, self.lease / 3),
                )
            except CallError as exc:
                self.counters["renew_errors"] += 1
                self._ratelog.warning("renew", f"renewing leases failed: {exc.code}: {exc}")
                continue
            self.counters["renewals"] += 1
            lost = reply.get("lost", []) if isinstance(reply, dict) else []
            self.counters["leases_lost"] += len(lost)
            self._leases.difference_update((int(i), int(t)) for i, t in lost)

    # -- observing -------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        totals: Counter[str] = Counter(self.counters)
        for h in self._handlers.values():
            totals.update(h.counters)
        return {
            "worker": self.worker_id,
            "queue": self.endpoint,
            "counters": dict(totals),
            "tasks": {
                name: {
                    "concurrency": h.spec.options.concurrency,
                    "running": h.running,
                    "credit_out": h.granted,
                    "max_running": h.max_running,
                    **h.counters,
                }
                for name, h in self._handlers.items()
            },
        }

    def meta(self) -> dict[str, str]:
        return {"tasks": ",".join(sorted(self._handlers))}


def _task_worker(server: Server) -> TaskWorker | None:
    handlers: list[tuple[Service, TaskSpec]] = []
    seen: dict[str, str] = {}
    for instance, spec in server.hosted():
        for task_spec in describe_tasks(type(instance)):
            if task_spec.name in seen:
                raise ConfigurationError(
                    f"task {task_spec.name!r} is handled by both {seen[task_spec.name]} and {spec.name}"
                )
            seen[task_spec.name] = spec.name
            handlers.append((instance, task_spec))
    return TaskWorker(server, handlers) if handlers else None


COMPONENT_FACTORIES.append(_task_worker)
