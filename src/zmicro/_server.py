"""The runtime: hosts service instances behind one RPC socket, with limits and bounded shutdown.

``Server`` is the ``Dispatcher`` of ``patterns.RpcServer``: it looks up the service and
method, validates arguments, admits the request (or answers "overloaded"), runs the
handler in a task (async) or in the thread pool (plain ``def``), enforces the deadline,
and turns every outcome into exactly one reply or error. ``open_server`` is the
async context manager most code wants; ``run`` is what ``zmicro run`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import signal
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol as p
from ._context import CallContext, set_current
from ._errors import CallError, ConfigurationError, InvalidArgumentError, ProtocolError
from ._service import MethodSpec, Service, ServiceSpec, describe_service
from ._threads import DaemonThreadPool
from ._version import __version__
from .discovery import Instance, Registry
from .patterns import RpcServer
from .transport import SocketOptions, libzmq_version

__all__ = ("COMPONENT_FACTORIES", "Component", "Server", "open_server", "run")

log = logging.getLogger("zmicro.server")

BUILTIN = "_zmicro"
# Codes a handler may raise on purpose and that reach the caller unchanged; any other
# exception is a remote error (a nested call's "no such method" must not look like ours).
_PASS_THROUGH = frozenset({"invalid_argument", "deadline_exceeded", "overloaded", "unavailable"})
_MAX_TRACEBACK = 16 * 1024
# Marks an error for a request whose handler never ran: any caller may safely retry it.
_NOT_STARTED = {"started": "false"}
# Outcomes worth remembering for an idempotency key: they say what the work did.
_REPLAYABLE = frozenset({"remote_error", "invalid_argument"})


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ raises still gets reported
        return f"<{type(exc).__qualname__} with an unprintable message>"


class Component(Protocol):
    """Something a server runs beside its RPC handlers (an event publisher, a task worker).

    Factories in ``COMPONENT_FACTORIES`` are called with the server once it has bound its
    socket; they return a component when the server's services need one, else ``None``.
    Components start after the RPC socket and stop before it closes.
    """

    name: str

    async def start(self) -> None: ...
    async def stop(self, grace: float) -> None: ...
    def statistics(self) -> dict[str, Any]: ...
    def meta(self) -> dict[str, str]:
        """Facts to publish in the registry with this server's instances."""
        ...


COMPONENT_FACTORIES: list[Callable[[Server], Component | None]] = []


@dataclass(slots=True)
class _Hosted:
    instance: Service
    spec: ServiceSpec
    admission: p.Admission[_Job]


@dataclass(slots=True)
class _Job:
    peer: bytes
    request_id: int
    hosted: _Hosted
    method: MethodSpec
    args: dict[str, Any]
    deadline: float
    traceparent: str | None
    replay_key: tuple[str, str, str] | None = None


@dataclass(slots=True)
class _Running:
    job: _Job
    tick: int
    """The deadline tick this request is watched under (see ``Server._watch``)."""
    task: asyncio.Task[None] = field(init=False)
    started: bool = False
    """The task's coroutine began. A task cancelled before that never runs its body."""
    cancel_reason: str | None = None
    """Who cancelled the handler first: "client", "deadline" or "shutdown"."""
    thread_future: list[ThreadFuture[Any]] = field(default_factory=list)


# Deadlines of running handlers are watched in ticks of this many seconds: one timer per
# tick in use instead of one per request, which costs a TimerHandle, a heap push and a
# cancel on every call. A handler is stopped at most one tick after its deadline.
_TICK = 0.01


class Server:
    """Serves service instances on one or more endpoints.

    Example::

        async with zmicro.open_server(Greeter(), bind="tcp://127.0.0.1:0") as server:
            print(server.endpoint)
    """

    def __init__(
        self,
        services: Iterable[Service | type[Service]],
        *,
        bind: str | Sequence[str] = "tcp://127.0.0.1:0",
        grace: float = 10.0,
        max_message_bytes: int = 1024 * 1024,
        socket_options: SocketOptions | None = None,
        thread_pool_size: int | None = None,
        registry: Registry | None = None,
        drain_delay: float = 1.0,
        event_sources: Sequence[str] = (),
    ) -> None:
        self._hosted: dict[str, _Hosted] = {}
        for svc in services:
            instance = svc() if isinstance(svc, type) else svc
            if not isinstance(instance, Service):
                raise ConfigurationError(f"{instance!r} is not a zmicro.Service")
            spec = describe_service(type(instance))
            if spec.name in self._hosted:
                raise ConfigurationError(f"two services named {spec.name!r} in one server")
            adm: p.Admission[_Job] = p.Admission(instance.max_concurrency, instance.max_queued)
            self._hosted[spec.name] = _Hosted(instance, spec, adm)
        if not self._hosted:
            raise ConfigurationError("a server needs at least one service")
        self._binds = [bind] if isinstance(bind, str) else list(bind)
        self.grace = grace
        self._options = socket_options or SocketOptions(
            max_message_bytes=max(2 * max_message_bytes, max_message_bytes + 65536)
        )
        self._max_message_bytes = max_message_bytes
        pool_size = thread_pool_size or min(64, sum(h.admission.max_active for h in self._hosted.values()))
        self._pool = DaemonThreadPool(max(1, pool_size))
        self._running: dict[tuple[bytes, int], _Running] = {}
        self._ticks: dict[int, tuple[set[tuple[bytes, int]], asyncio.TimerHandle]] = {}
        self._rpc: RpcServer | None = None
        self._accepting = False
        self._stopped: asyncio.Event | None = None
        self._stopping = False
        self.endpoints: list[str] = []
        self._started_at = 0.0
        self.components: list[Component] = []
        self._replay: p.ReplayCache[tuple[str, str, str], tuple[bytes, int]] = p.ReplayCache()
        self.registry = registry
        self.drain_delay = drain_delay
        self.instance_id = uuid.uuid4().hex[:12]
        self._registered: list[Instance] = []
        self.event_sources = list(event_sources)
        """Publisher endpoints to take events from, besides those the registry lists."""
        self.builtins: dict[str, Callable[[dict[str, Any]], Any]] = {}
        """Extra methods of the built-in service, added by components (``_zmicro.publish``)."""

    @property
    def endpoint(self) -> str:
        """The first bound endpoint, with its real port."""
        return self.endpoints[0]

    @property
    def services(self) -> dict[str, Service]:
        return {name: h.instance for name, h in self._hosted.items()}

    def hosted(self) -> list[tuple[Service, ServiceSpec]]:
        """Each service instance with its description (for components)."""
        return [(h.instance, h.spec) for h in self._hosted.values()]

    @property
    def socket_options(self) -> SocketOptions:
        return self._options

    @property
    def rpc(self) -> RpcServer:
        """The RPC socket driver; components (events, tasks) share its socket."""
        assert self._rpc is not None, "start() first"
        return self._rpc

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        for hosted in self._hosted.values():
            await hosted.instance.on_start()
        self._rpc = RpcServer(self, self._options, max_message_bytes=self._max_message_bytes)
        try:
            self.endpoints = [self._rpc.bind(ep) for ep in self._binds]
        except BaseException:
            self._rpc.close(0)
            raise
        self._rpc.start()
        try:
            for factory in COMPONENT_FACTORIES:
                component = factory(self)
                if component is not None:
                    await component.start()
                    self.components.append(component)
        except BaseException:
            # A service the components refuse (a bad handler signature): leave nothing open.
            for component in reversed(self.components):
                with contextlib.suppress(Exception):
                    await component.stop(0)
            self.components.clear()
            self._rpc.close(0)
            raise
        self._accepting = True
        self._started_at = time.monotonic()
        if self.registry is not None:
            meta: dict[str, str] = {}
            for component in self.components:
                meta.update(component.meta())
            for name, hosted in self._hosted.items():
                idempotent = ",".join(sorted(m.name for m in hosted.spec.methods.values() if m.idempotent))
                instance = Instance(
                    name, f"{name}-{self.instance_id}", self.endpoint, {**meta, "idempotent": idempotent}
                )
                await self.registry.register(instance)
                self._registered.append(instance)
        log.info("serving %s on %s", ", ".join(self._hosted), ", ".join(self.endpoints))

    async def wait_stopped(self) -> None:
        assert self._stopped is not None, "start() first"
        await self._stopped.wait()

    # -- Dispatcher ----------------------------------------------------------------

    def on_request(self, peer: bytes, req: p.Request) -> None:
        rpc = self._rpc
        assert rpc is not None
        if req.service == BUILTIN:
            # Health probes and introspection: counted apart, so "requests" is the real work.
            rpc.counters["builtin_requests"] += 1
            self._builtin(peer, req)
            return
        rpc.counters["requests"] += 1
        hosted = self._hosted.get(req.service)
        if hosted is None:
            rpc.send_error(
                peer,
                req.id,
                "no_such_service",
                f"no service {req.service!r} at this endpoint (it serves: {', '.join(sorted(self._hosted))})",
            )
            return
        method = hosted.spec.methods.get(req.method)
        if method is None:
            rpc.send_error(
                peer,
                req.id,
                "no_such_method",
                f"service {req.service!r} has no method {req.method!r} "
                f"(it has: {', '.join(sorted(hosted.spec.methods))})",
            )
            return
        if not self._accepting:
            rpc.send_error(peer, req.id, "unavailable", f"{req.service} is shutting down", _NOT_STARTED)
            return
        budget_ms = req.headers.deadline_ms
        if budget_ms <= 0:
            rpc.counters["expired_on_arrival"] += 1
            rpc.send_error(peer, req.id, "deadline_exceeded", "the request arrived with no time left")
            return
        if (peer, req.id) in self._running:
            rpc.send_error(peer, req.id, "protocol_error", f"request id {req.id} is already in use")
            return
        try:
            args = method.decode_args(req.args)
        except InvalidArgumentError as exc:
            rpc.send_error(peer, req.id, exc.code, exc.message, exc.details)
            return
        job = _Job(
            peer,
            req.id,
            hosted,
            method,
            args,
            time.monotonic() + budget_ms / 1000.0,
            req.headers.traceparent,
        )
        key = req.headers.idempotency_key
        if key is not None:
            job.replay_key = (req.service, req.method, key)
            seen, outcome = self._replay.begin(job.replay_key, (peer, req.id), time.monotonic())
            if seen is p.ReplayVerdict.CACHED:
                rpc.counters["replayed"] += 1
                self._deliver(peer, req.id, outcome, f"{req.service}.{req.method}")
                return
            if seen is p.ReplayVerdict.JOINED:
                rpc.counters["joined_running"] += 1
                return
        verdict = hosted.admission.offer(job)
        if verdict is p.Verdict.START:
            self._start(job)
        elif verdict is p.Verdict.REJECTED:
            rpc.counters["overloaded"] += 1
            adm = hosted.admission
            self._refuse(
                job,
                "overloaded",
                f"{req.service} is at capacity ({adm.max_active} running, "
                f"{adm.max_queued} queued); retry later",
                _NOT_STARTED,
            )

    def _refuse(
        self, job: _Job, code: str, message: str, details: dict[str, str] | None = None, *, reply: bool = True
    ) -> None:
        """Answer a request whose handler will not run (and any repeats of it that joined)."""
        waiters = [(job.peer, job.request_id)] if reply else []
        if job.replay_key is not None:
            joined = self._replay.finish(job.replay_key, None, store=False, now=time.monotonic())
            waiters = [w for w in joined if reply or w != (job.peer, job.request_id)]
        for peer, request_id in waiters:
            self.rpc.send_error(peer, request_id, code, message, details)

    def on_cancel(self, peer: bytes, request_id: int) -> None:
        rpc = self._rpc
        assert rpc is not None
        running = self._running.get((peer, request_id))
        if running is not None:
            self._cancel((peer, request_id), running, "client")
            return
        for hosted in self._hosted.values():
            job = hosted.admission.remove(lambda j: j.peer == peer and j.request_id == request_id)
            if job is not None:
                rpc.counters["cancelled_queued"] += 1
                self._refuse(job, "unavailable", "the first attempt with this key was cancelled", reply=False)
                return
        rpc.counters["cancel_unknown"] += 1

    # -- running handlers ------------------------------------------------------

    def _start(self, job: _Job) -> None:
        assert self._rpc is not None
        while True:
            remaining = job.deadline - time.monotonic()
            if remaining > 0:
                break
            # It waited in the queue past its deadline: nobody wants the answer any more.
            self._rpc.counters["expired_in_queue"] += 1
            self._refuse(job, "deadline_exceeded", "expired while queued")
            nxt = job.hosted.admission.finish()
            if nxt is None:
                return
            job = nxt
        key = (job.peer, job.request_id)
        if key in self._running:
            # The peer reused an id that is still running (two copies were queued).
            self._refuse(job, "protocol_error", f"request id {job.request_id} is in use")
            self._release(job.hosted)
            return
        running = _Running(job, self._watch(key, job.deadline))
        # The coroutine answers by itself when it ends: no done callback, no second turn.
        running.task = self._loop.create_task(self._run(key, running))
        self._running[key] = running

    def _watch(self, key: tuple[bytes, int], deadline: float) -> int:
        tick = int(deadline / _TICK) + 1
        entry = self._ticks.get(tick)
        if entry is None:
            delay = tick * _TICK - time.monotonic()
            timer = self._loop.call_at(self._loop.time() + delay, self._on_tick, tick)
            self._ticks[tick] = ({key}, timer)
        else:
            entry[0].add(key)
        return tick

    def _unwatch(self, key: tuple[bytes, int], tick: int) -> None:
        entry = self._ticks.get(tick)
        if entry is not None:
            keys, timer = entry
            keys.discard(key)
            if not keys:  # nothing left to watch in this tick: no timer, no state
                timer.cancel()
                del self._ticks[tick]

    def _on_tick(self, tick: int) -> None:
        entry = self._ticks.pop(tick, None)
        for key in entry[0] if entry is not None else ():
            running = self._running.get(key)
            if running is not None and running.cancel_reason is None:
                self._cancel(key, running, "deadline")

    def _cancel(self, key: tuple[bytes, int], running: _Running, reason: str) -> None:
        running.cancel_reason = running.cancel_reason or reason
        running.task.cancel()
        if not running.started:
            # Its coroutine never began, so it cannot answer: answer for it, here.
            self._finish(key, running, self._cancelled(running))

    async def _run(self, key: tuple[bytes, int], running: _Running) -> None:
        running.started = True
        job = running.job
        outcome: tuple[Any, ...] | None
        try:
            set_current(CallContext(job.deadline, job.traceparent, job.hosted.spec.name, job.method.name))
            func = getattr(job.hosted.instance, job.method.attr)
            if job.method.is_async:
                result = await func(**job.args)
            else:
                ctx = contextvars.copy_context()
                cf = self._pool.submit(ctx.run, functools.partial(func, **job.args))
                running.thread_future.append(cf)
                result = await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            outcome = self._cancelled(running)
        except Exception as exc:
            outcome = self._failed(job, exc)
        except BaseException:  # SystemExit, KeyboardInterrupt: free the slot, then let it go on
            self._finish(key, running, None)
            raise
        else:
            outcome = ("ok", result)
        self._finish(key, running, outcome)

    def _finish(self, key: tuple[bytes, int], running: _Running, outcome: tuple[Any, ...] | None) -> None:
        if self._running.get(key) is running:
            del self._running[key]
        self._unwatch(key, running.tick)
        # Nothing else running: no other reply could join this one, so it leaves at once
        # instead of a loop turn later. (Busy servers coalesce; idle ones answer at once.)
        idle = not self._running
        if idle:
            self.rpc.hold()
        try:
            try:
                self._answer(running, outcome)
            except Exception:  # answering must never leak the handler's slot
                log.exception("could not answer %s", key)
            self._release_after(running)
        finally:
            if idle:
                try:
                    self.rpc.flush()
                except Exception:
                    log.exception("could not send replies")

    def _answer(self, running: _Running, outcome: tuple[Any, ...] | None) -> None:
        job = running.job
        waiters = [(job.peer, job.request_id)]
        if job.replay_key is not None:
            # Repeats of this idempotency key that joined while it ran get the same answer.
            store = outcome is not None and (outcome[0] == "ok" or outcome[1] in _REPLAYABLE)
            waiters = self._replay.finish(job.replay_key, outcome, store=store, now=time.monotonic())
            if outcome is None and len(waiters) > 1:
                # The caller that cancelled is not answered (a CANCEL never is); the repeats are.
                waiters = [w for w in waiters if w != (job.peer, job.request_id)]
                outcome = (
                    "error",
                    "unavailable",
                    "the first attempt with this idempotency key was cancelled",
                    {},
                )
        if outcome is None:
            return
        what = f"{job.hosted.spec.name}.{job.method.name}"
        for peer, request_id in waiters:
            self._deliver(peer, request_id, outcome, what)

    def _deliver(self, peer: bytes, request_id: int, outcome: tuple[Any, ...], what: str) -> None:
        rpc = self._rpc
        assert rpc is not None
        if outcome[0] == "ok":
            rpc.send_reply(peer, request_id, outcome[1], what)
        else:
            _, code, message, details = outcome
            rpc.send_error(peer, request_id, code, message, details)

    def _cancelled(self, running: _Running) -> tuple[Any, ...] | None:
        """What the caller is told when the handler was cancelled, or None (nobody waits)."""
        rpc = self.rpc
        job = running.job
        what = f"{job.hosted.spec.name}.{job.method.name}"
        reason = running.cancel_reason
        if reason == "deadline":
            rpc.counters["expired_running"] += 1
            return ("error", "deadline_exceeded", f"{what} ran past its deadline", {})
        if reason == "shutdown":
            rpc.counters["cancelled_shutdown"] += 1
            return ("error", "unavailable", f"{what} was stopped by shutdown", {"started": "true"})
        if reason == "client":
            rpc.counters["cancelled"] += 1  # the caller asked; it waits for nothing
            return None
        # Cancelled from inside (it awaited something that was cancelled): say so.
        rpc.counters["handler_errors"] += 1
        return ("error", "remote_error", f"{what} was cancelled", {"type": "CancelledError"})

    def _failed(self, job: _Job, exc: Exception) -> tuple[Any, ...]:
        """What the caller is told when the handler raised."""
        if isinstance(exc, CallError) and exc.code in _PASS_THROUGH:
            # It ran: whatever a nested call said, this request must not look "not started".
            return ("error", exc.code, exc.message, {**exc.details, "started": "true"})
        self.rpc.counters["handler_errors"] += 1
        what = f"{job.hosted.spec.name}.{job.method.name}"
        tb = "".join(traceback.format_exception(exc))[-_MAX_TRACEBACK:]
        log.debug("%s raised %r", what, exc)
        return ("error", "remote_error", _safe_str(exc), {"type": type(exc).__qualname__, "traceback": tb})

    def _release_after(self, running: _Running) -> None:
        job = running.job
        thread = running.thread_future[0] if running.thread_future else None
        if thread is not None and not thread.done():
            # A cancelled plain-def handler keeps its thread until it returns; its slot
            # stays taken until then, so stuck threads cannot pile up without bound.
            thread.add_done_callback(lambda _f: self._release_threadsafe(job.hosted))
        else:
            self._release(job.hosted)

    def _release_threadsafe(self, hosted: _Hosted) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone after shutdown
            self._loop.call_soon_threadsafe(self._release, hosted)

    def _release(self, hosted: _Hosted) -> None:
        nxt = hosted.admission.finish()
        if nxt is not None:
            self._start(nxt)

    # -- built-in service ------------------------------------------------------

    def _builtin(self, peer: bytes, req: p.Request) -> None:
        rpc = self._rpc
        assert rpc is not None
        if req.method == "describe":
            rpc.send_reply(peer, req.id, self.describe(), "_zmicro.describe")
        elif req.method == "stats":
            rpc.send_reply(peer, req.id, self.statistics(), "_zmicro.stats")
        elif req.method == "ping":
            rpc.send_reply(peer, req.id, "pong", "_zmicro.ping")
        elif req.method in self.builtins:
            self._call_builtin(peer, req)
        else:
            have = ", ".join(["describe", "stats", "ping", *self.builtins])
            rpc.send_error(
                peer,
                req.id,
                "no_such_method",
                f"built-in service {BUILTIN!r} has {have}; not {req.method!r}",
            )

    def _call_builtin(self, peer: bytes, req: p.Request) -> None:
        rpc = self._rpc
        assert rpc is not None
        try:
            args = p.decode_value(req.args)
            if not isinstance(args, dict):
                raise InvalidArgumentError("arguments must be a map")
            result = self.builtins[req.method](args)
        except CallError as exc:
            rpc.send_error(peer, req.id, exc.code, exc.message, exc.details)
        except (ProtocolError, TypeError, ValueError) as exc:
            rpc.send_error(peer, req.id, "invalid_argument", _safe_str(exc))
        else:
            rpc.send_reply(peer, req.id, result, f"{BUILTIN}.{req.method}")

    def describe(self) -> dict[str, Any]:
        return {
            "zmicro": __version__,
            "libzmq": ".".join(map(str, libzmq_version())),
            "endpoints": self.endpoints,
            "services": [
                {
                    "name": h.spec.name,
                    "doc": h.spec.doc,
                    "max_concurrency": h.admission.max_active,
                    "max_queued": h.admission.max_queued,
                    "methods": [m.describe() for m in h.spec.methods.values()],
                }
                for h in self._hosted.values()
            ],
        }

    def statistics(self) -> dict[str, Any]:
        counters = dict(self._rpc.counters) if self._rpc else {}
        return {
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self._started_at else 0.0,
            "running": len(self._running),
            "services": {
                name: {
                    "active": h.admission.active,
                    "queued": h.admission.queued,
                    "rejected": h.admission.rejected,
                }
                for name, h in self._hosted.items()
            },
            "counters": counters,
            "components": {c.name: c.statistics() for c in self.components},
        }

    # -- shutdown --------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Stop intake, let running handlers finish within ``grace`` seconds, answer the rest, close."""
        if self._stopping:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        grace = self.grace if grace is None else grace
        # Leave the registry first, so that callers stop choosing this instance.
        if self.registry is not None:
            for instance in self._registered:
                try:
                    await asyncio.wait_for(self.registry.deregister(instance), timeout=2.0)
                except Exception:
                    log.warning("could not deregister %s", instance.instance_id, exc_info=True)
            if self._registered and self.drain_delay > 0:
                # Keep serving while watchers hear of the change, so that callers move
                # elsewhere before intake stops (the same idea as a pre-stop hook).
                await asyncio.sleep(min(self.drain_delay, grace))
            self._registered.clear()
        # Components (task workers, event subscribers) wind down while RPC intake is
        # still open: their last acknowledgements may go to a service in this process.
        started = time.monotonic()
        for component in reversed(self.components):
            try:
                await asyncio.wait_for(component.stop(grace), timeout=max(1.0, grace) + 1.0)
            except Exception:
                log.exception("component %r failed to stop", component)
        grace = max(0.5, grace - (time.monotonic() - started))
        self._accepting = False
        rpc = self._rpc
        if rpc is not None:
            for hosted in self._hosted.values():
                for job in hosted.admission.take_queued():
                    rpc.counters["rejected_shutdown"] += 1
                    self._refuse(job, "unavailable", "service is shutting down", _NOT_STARTED)
            tasks = [r.task for r in self._running.values()]
            if tasks:
                await asyncio.wait(tasks, timeout=grace)
            leftover = list(self._running.items())
            for key, running in leftover:
                self._cancel(key, running, "shutdown")
            if leftover:
                await asyncio.wait([r.task for _, r in leftover], timeout=1.0)
        for hosted in self._hosted.values():
            try:
                await asyncio.wait_for(hosted.instance.on_stop(), timeout=max(1.0, grace))
            except Exception:
                log.exception("%s.on_stop failed", hosted.spec.name)
        if rpc is not None:
            # A reply that reached the caller's machine but not yet its program is thrown
            # away by libzmq when the connection closes: give recent replies a moment.
            quiet = 0.2 - (time.monotonic() - rpc.last_reply_at)
            if quiet > 0:
                await asyncio.sleep(quiet)
            rpc.close(self._options.linger_ms)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._stopped is not None:
            self._stopped.set()
        log.info("stopped %s", ", ".join(self._hosted))


@contextlib.asynccontextmanager
async def open_server(
    *services: Service | type[Service], bind: str | Sequence[str] = "tcp://127.0.0.1:0", **options: Any
) -> AsyncIterator[Server]:
    """Serve ``services`` for the duration of the block; shut down (bounded) on exit."""
    server = Server(services, bind=bind, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _run(server: Server, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    await server.start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    if ready is not None:
        ready(server)
    try:
        await server.wait_stopped()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(
    *services: Service | type[Service],
    bind: str | Sequence[str] = "tcp://127.0.0.1:5555",
    ready: Any = None,
    **options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down within the grace period. Blocks."""
    server = Server(services, bind=bind, **options)
    asyncio.run(_run(server, ready))
