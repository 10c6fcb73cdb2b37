"""The server components that make events work: a publisher and a subscriber per server.

``EventPublisherComponent`` exists when a hosted service declares an ``EventPublisher``:
it shares the server's ROUTER socket, binds each declaration to the server, learns the
expected subscribers from the registry (``meta["subscribes"]``), advertises
``meta["events"] = "1"`` and answers ``_zmicro.publish``.

``EventSubscriberComponent`` exists when a hosted service has ``@event_handler``
methods: it connects to every publisher the registry lists (and to the server's
``event_sources``), runs handlers with bounded concurrency from a bounded queue, and
stops reading (so publishers meet their policy) while that queue is full.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec

from . import _server
from ._errors import UnavailableError
from ._events import EventInfo, EventPublisher, HandlerSpec, describe_event_handlers, event_publishers
from ._events import encode_event_payload as _encode
from ._ratelog import RateLimitedLog
from ._service import Service
from .discovery import Instance
from .patterns import EventPublisherCore, EventSource, Received, SubscriberIdentity

if TYPE_CHECKING:
    from ._server import Server

__all__ = ("EventPublisherComponent", "EventSubscriberComponent")

log = logging.getLogger("zmicro.events")

_MAINTAIN_S = 5.0


def _subscribers_in(instances: list[Instance]) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    """Subscriber streams the registry announces: ``meta["subscribes"]`` = {service: [[prefix, mode]]}."""
    known: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    for inst in instances:
        raw = inst.meta.get("subscribes")
        if not raw:
            continue
        try:
            subs = json.loads(raw).get(inst.service)
            if subs:
                known[(inst.service, inst.instance_id)] = tuple((str(pr), str(m)) for pr, m in subs)
        except (ValueError, TypeError, AttributeError):
            log.warning("ignoring unreadable meta 'subscribes' of %s", inst.instance_id)
    return known


class EventPublisherComponent:
    name = "events.publisher"

    def __init__(self, server: Server, declared: list[tuple[Service, EventPublisher]]) -> None:
        self._server = server
        self._declared = declared
        self.core: EventPublisherCore | None = None
        self._unwatch: Any = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        server = self._server
        core = self.core = EventPublisherCore(server.rpc)
        for instance, decl in self._declared:
            decl.bind(instance, core, server.rpc.max_message_bytes)
        if server.registry is not None:
            core.registry_synced = False
            self._unwatch = server.registry.watch(lambda found: core.expect(_subscribers_in(found)))
        server.builtins["publish"] = self._publish_builtin
        self._maintain()

    def _maintain(self) -> None:
        if self.core is not None and not self.core.closed:
            self.core.expire()
            self._timer = asyncio.get_running_loop().call_later(_MAINTAIN_S, self._maintain)

    def _publish_builtin(self, args: dict[str, Any]) -> dict[str, int]:
        """``_zmicro.publish(topic, event)``: publish as the server's first publisher, without waiting."""
        if self.core is None or self.core.closed:
            raise UnavailableError("the event publisher is stopped")
        topic = args.get("topic")
        if not isinstance(topic, str):
            raise ValueError("publish needs a string `topic`")
        payload = _encode(topic, args.get("event"), self._server.rpc.max_message_bytes)
        return {"deliveries": self.core.publish_nowait(topic, payload, self._declared[0][1].policy)}

    async def stop(self, grace: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._unwatch is not None:
            self._unwatch()
        self._server.builtins.pop("publish", None)
        if self.core is not None:
            self.core.close()

    def statistics(self) -> dict[str, Any]:
        return self.core.statistics() if self.core is not None else {}

    def meta(self) -> dict[str, str]:
        return {"events": "1"}


class EventSubscriberComponent:
    name = "events.subscriber"

    def __init__(self, server: Server, handlers: dict[str, tuple[Service, list[HandlerSpec]]]) -> None:
        self._server = server
        self._handlers = handlers
        self._identities = [
            SubscriberIdentity(
                service,
                f"{service}-{server.instance_id}",
                tuple(sorted({(h.prefix, h.mode) for h in specs})),
            )
            for service, (_, specs) in handlers.items()
        ]
        instances = [inst for inst, _ in handlers.values()]
        self.max_concurrency = max(int(getattr(i, "event_concurrency", 16)) for i in instances)
        self.max_queued = max(int(getattr(i, "event_queue", 1024)) for i in instances)
        self.sources: dict[str, EventSource] = {}
        self._queue: collections.deque[tuple[HandlerSpec, Service, Received]] = collections.deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._running = 0
        self._paused = False
        self._shedding = False
        self._pause_timer: asyncio.TimerHandle | None = None
        # Heartbeats travel behind the data: a connection not read for a heartbeat timeout
        # is declared dead. Pushing back stops well before that.
        self.max_pause = min(
            max(float(getattr(i, "event_max_pause", 10.0)) for i in instances),
            server.socket_options.heartbeat_timeout_ms / 3000,
        )
        self.counters: Counter[str] = Counter()
        self._ratelog = RateLimitedLog(log)
        self._unwatch: Any = None
        self._closing = False
        self._acked = asyncio.Event()

    # -- publishers ------------------------------------------------------------

    async def start(self) -> None:
        for endpoint in self._server.event_sources:
            self._connect(endpoint)
        if self._server.registry is not None:
            self._unwatch = self._server.registry.watch(self._on_registry)

    def _connect(self, endpoint: str) -> None:
        if endpoint not in self.sources and not self._closing:
            self.sources[endpoint] = EventSource(
                endpoint, self._server.socket_options, self._identities, self._on_event, on_ack=self._on_ack
            )
            if self._paused:
                self.sources[endpoint].pause()

    def _on_registry(self, instances: list[Instance]) -> None:
        wanted = {i.endpoint for i in instances if i.meta.get("events") == "1"}
        wanted.update(self._server.event_sources)
        for endpoint in wanted:
            self._connect(endpoint)
        for endpoint in list(self.sources):
            if endpoint not in wanted:
                self.sources.pop(endpoint).close()

    def _on_ack(self, source: EventSource) -> None:
        self._acked.set()
        self._acked = asyncio.Event()

    async def wait_subscribed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109  # bounded by design
        """Wait until every known publisher confirmed the subscriptions (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while not all(s.subscribed for s in self.sources.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("not every publisher confirmed the subscriptions")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), min(remaining, 0.2))

    # -- handling ----------------------------------------------------------------

    def _on_event(self, received: Received) -> None:
        entry = self._handlers.get(received.event.service)
        if entry is None:
            self.counters["unhandled"] += 1
            return
        instance, specs = entry
        ev = received.event
        if self._shedding and len(self._queue) >= self.max_queued:
            # Pushing back lasted as long as liveness allows: now the overflow is shed
            # here, and counted as missed on its stream like any other gap.
            self.counters["shed"] += 1
            source = self.sources.get(received.source)
            if source is not None:
                source.trackers[ev.service].shed(received.gap, received.publisher_restarted)
            return
        matched = False
        for spec in specs:
            if spec.matches(ev.topic, ev.group):
                self._queue.append((spec, instance, received))
                matched = True
        if not matched:
            self.counters["unhandled"] += 1
            return
        if len(self._queue) >= self.max_queued and not (self._paused or self._shedding):
            self._pause()
        while self._queue and self._running < self.max_concurrency:
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    def _pause(self) -> None:
        # Push back instead of growing: the publishers meet their high-water mark. Only
        # for a while: a connection that is not read cannot answer heartbeats either.
        self._paused = True
        self.counters["paused"] += 1
        for source in self.sources.values():
            source.pause()
        self._pause_timer = asyncio.get_running_loop().call_later(self.max_pause, self._pause_expired)

    def _pause_expired(self) -> None:
        if self._paused:
            self.counters["pause_expired"] += 1
            self._paused, self._shedding = False, True
            for source in self.sources.values():
                source.resume()

    def _drained(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        was_paused, self._paused, self._shedding = self._paused, False, False
        if was_paused:
            for source in self.sources.values():
                source.resume()

    async def _work(self) -> None:
        try:
            while self._queue:
                spec, instance, received = self._queue.popleft()
                if (self._paused or self._shedding) and len(self._queue) <= self.max_queued // 2:
                    self._drained()
                await self._run(spec, instance, received)
        finally:
            self._running -= 1

    async def _run(self, spec: HandlerSpec, instance: Service, received: Received) -> None:
        ev = received.event
        kwargs: dict[str, Any] = {}
        if spec.payload_param is not None:
            try:
                kwargs[spec.payload_param] = spec.decoder.decode(ev.payload)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self.counters["invalid_events"] += 1
                self._ratelog.warning("invalid", f"{spec.attr}: event {ev.topic!r} rejected: {exc}")
                return
        if spec.topic_param is not None:
            kwargs[spec.topic_param] = ev.topic
        if spec.info_param is not None:
            kwargs[spec.info_param] = EventInfo(
                ev.topic, ev.seq, received.gap, received.publisher_restarted, received.source, ev.group
            )
        func = getattr(instance, spec.attr)
        try:
            if spec.is_async:
                await func(**kwargs)
            else:
                await asyncio.to_thread(func, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["handler_errors"] += 1
            self._ratelog.warning("handler", f"{spec.attr} raised on {ev.topic!r}: {exc!r}")
        else:
            self.counters["handled"] += 1

    # -- lifecycle -----------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        self._closing = True
        if self._pause_timer is not None:
            self._pause_timer.cancel()
        if self._unwatch is not None:
            self._unwatch()
        for source in self.sources.values():
            source.close()
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=grace)
        for task in list(self._workers):
            task.cancel()
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=1.0)
        self.counters["dropped_shutdown"] += len(self._queue)
        self._queue.clear()

    def statistics(self) -> dict[str, Any]:
        sources = {ep: s.statistics() for ep, s in self.sources.items()}
        gaps = sum(t.gaps for s in self.sources.values() for t in s.trackers.values())
        restarts = sum(t.restarts for s in self.sources.values() for t in s.trackers.values())
        return {
            **self.counters,
            "gaps": gaps,
            "publisher_restarts": restarts,
            "queued": len(self._queue),
            "running": self._running,
            "max_queued": self.max_queued,
            "max_concurrency": self.max_concurrency,
            "sources": sources,
        }

    def meta(self) -> dict[str, str]:
        subs = {i.service: [list(s) for s in i.subscriptions] for i in self._identities}
        return {"subscribes": json.dumps(subs, separators=(",", ":"))}


def _publisher_factory(server: Server) -> EventPublisherComponent | None:
    declared = [(inst, decl) for inst, spec in server.hosted() for decl in event_publishers(type(inst))]
    return EventPublisherComponent(server, declared) if declared else None


def _subscriber_factory(server: Server) -> EventSubscriberComponent | None:
    handlers = {
        spec.name: (inst, hs) for inst, spec in server.hosted() if (hs := describe_event_handlers(type(inst)))
    }
    return EventSubscriberComponent(server, handlers) if handlers else None


_server.COMPONENT_FACTORIES.extend((_publisher_factory, _subscriber_factory))
