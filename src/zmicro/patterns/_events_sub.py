"""The subscribing side of events: one DEALER connection to one publisher's endpoint.

On every (re)connect it sends SUBSCRIBE for each subscribing service it carries, and
repeats it until SUBSCRIBED comes back. Each EVENT is checked against the stream's
numbering (``GapTracker``), so what was missed is counted and reported with the next
event that arrives. ``pause``/``resume`` stop and restart reading: a subscriber whose
handlers fall behind pushes back to the publisher instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import protocol as p
from .._errors import ProtocolError
from .._ratelog import RateLimitedLog
from ..transport import ConnectionMonitor, SendResult, SocketDriver, SocketOptions, new_dealer

__all__ = ("EventSource", "Received", "SubscriberIdentity")

log = logging.getLogger("zmicro.events")

_RESUBSCRIBE_S = 0.5


@dataclass(frozen=True, slots=True)
class SubscriberIdentity:
    service: str
    instance_id: str
    subscriptions: tuple[tuple[str, str], ...]
    """(prefix, mode) pairs, mode "broadcast" or "group"."""


@dataclass(frozen=True, slots=True)
class Received:
    """An event as handed over: the message, and what was missed on its stream just before it."""

    source: str
    event: p.Event
    gap: int
    publisher_restarted: bool


class EventSource:
    """The events one publisher endpoint sends to the given subscribers."""

    def __init__(
        self,
        endpoint: str,
        options: SocketOptions,
        subscribers: Sequence[SubscriberIdentity],
        on_event: Callable[[Received], None],
        *,
        on_ack: Callable[[EventSource], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._subscribers = {s.service: s for s in subscribers}
        self._on_event = on_event
        self._on_ack = on_ack
        self.trackers = {s.service: p.GapTracker() for s in subscribers}
        self.acked: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.connected = False
        self.closed = False
        self._ratelog = RateLimitedLog(log)
        self._socket = new_dealer(options)
        self._driver = SocketDriver(self._socket, self._on_message)
        self._monitor = ConnectionMonitor(self._socket, self._on_connection_event)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._monitor.start()
        self._driver.start()
        self._socket.connect(endpoint)

    @property
    def subscribed(self) -> bool:
        """Every subscriber on this connection has been confirmed by the publisher."""
        return self.connected and self.acked >= self._subscribers.keys()

    def pause(self) -> None:
        self._driver.pause()

    def resume(self) -> None:
        self._driver.resume()

    def _subscribe(self) -> None:
        self._timer = None
        if self.closed or not self.connected:
            return
        for service, ident in self._subscribers.items():
            if service in self.acked:
                continue
            body = p.encode_subscribe(service, ident.instance_id, list(ident.subscriptions))
            if self._driver.send([body]) is SendResult.SENT:
                self.counters["subscribes_sent"] += 1
        if not self.subscribed:
            self._timer = self._loop.call_later(_RESUBSCRIBE_S, self._subscribe)

    def _on_connection_event(self, kind: str, endpoint: str) -> None:
        if kind == "up":
            self.connected = True
            self.counters["connects"] += 1
            self.acked.clear()  # a new connection: the publisher must hear from us again
            if self._timer is not None:
                self._timer.cancel()
            self._subscribe()
        elif kind == "down":
            self.connected = False
            self.acked.clear()
            self.counters["disconnects"] += 1
        elif kind == "handshake_failed":
            self.counters["handshake_failed"] += 1

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self.counters["malformed"] += 1
            return
        for msg in p.decode_each(frames[0]):
            if type(msg) is ProtocolError:
                self.counters["malformed"] += 1
                self._ratelog.warning("malformed", f"{self.endpoint}: undecodable message: {msg}")
            else:
                self._handle(msg)  # type: ignore[arg-type]

    def _handle(self, msg: p.Message) -> None:
        if type(msg) is p.Event:
            tracker = self.trackers.get(msg.service)
            if tracker is None:
                self.counters["unexpected"] += 1
                return
            gap = tracker.on_event(msg.epoch, msg.seq)
            if gap is None:
                self.counters["stale"] += 1
                return
            self.counters["events"] += 1
            self._on_event(Received(self.endpoint, msg, gap, tracker.take_restarted()))
        elif type(msg) is p.Subscribed:
            tracker = self.trackers.get(msg.service)
            if tracker is None:
                self.counters["unexpected"] += 1
                return
            tracker.on_ack(msg.epoch, msg.last_seq)
            self.acked.add(msg.service)
            if self._on_ack is not None:
                self._on_ack(self)
        elif type(msg) is p.ErrorReply:
            self.counters["errors"] += 1
            self._ratelog.warning("error", f"{self.endpoint} refused: {msg.code}: {msg.message}")
        else:
            self.counters["unexpected"] += 1

    def statistics(self) -> dict[str, object]:
        return {
            **self.counters,
            "connected": self.connected,
            "subscribed": self.subscribed,
            "streams": {
                service: {
                    "epoch": t.epoch or 0,
                    "last_seq": t.last,
                    "gaps": t.gaps,
                    "publisher_restarts": t.restarts,
                    "stale": t.stale,
                }
                for service, t in self.trackers.items()
            },
        }

    def close(self, linger_ms: int = 200, *, unsubscribe: bool = True) -> None:
        """Tell the publisher we are leaving (best effort), then close with a bounded LINGER."""
        if self.closed:
            return
        if unsubscribe and self.connected:
            for service, ident in self._subscribers.items():
                self._driver.send([p.encode_subscribe(service, ident.instance_id, [])])
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._monitor.close()
        self._driver.close(linger_ms)
