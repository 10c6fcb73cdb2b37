"""The publishing side of events, on the RPC server's ROUTER socket (one port per instance).

Subscribers connect to the publisher's ordinary endpoint and send SUBSCRIBE; the
publisher answers SUBSCRIBED and from then on sends that subscriber its stream of
EVENTs, numbered. Each peer has its own queue in libzmq, bounded by the send high-water
mark; ROUTER_MANDATORY makes a full queue an immediate "full" instead of a silent drop,
so a slow subscriber meets the publisher's policy:

- ``"drop"``: skip it, count it (it sees the gap); everyone else is unaffected;
- ``"raise"``: skip it, count it, and raise ``SlowSubscriberError`` after the others got it;
- ``"wait"``: retry with a short backoff until it takes the event or ``wait_timeout`` passes
  (then as ``"raise"``). Waiting publishes are bounded in number and keep their order.

A subscriber that is not connected at all (known from the registry, or gone) is always
skipped and counted: the policies are about slow subscribers, not absent ones.

Small events (up to 1 KiB) for one subscriber that are published in the same loop turn
leave together, in BATCH messages of up to 64 events and 16 KiB: one send instead of one
per event. The send high-water mark counts messages, so it then bounds batches. Each stream's
queue of events not yet handed to libzmq is bounded (``max_pending``); a subscriber
whose queue is full counts as slow, exactly as one whose libzmq queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Literal

from .. import protocol as p
from .._errors import OverloadedError, SlowSubscriberError, UnavailableError
from ..transport import SendResult
from ._rpc_server import RpcServer

__all__ = ("EventPublisherCore", "Policy")

log = logging.getLogger("zmicro.events")

Policy = Literal["drop", "raise", "wait"]
_encode_int = p.encode_value
_FLUSH_AT = 64  # events queued for one subscriber that leave at once, without waiting for the turn's end
# The send high-water mark counts messages, and a BATCH is one: only small events are
# coalesced, into batches of at most 16 KiB, so a full libzmq queue holds at most about
# 16 times the bytes it would hold event by event, and large events keep exact pushback.
_BATCH_BYTES, _SOLO_BYTES = 16 * 1024, 1024
_RETRY_MIN, _RETRY_MAX = 0.0005, 0.02  # backoff while a subscriber's libzmq queue is full
POLICIES: tuple[Policy, ...] = ("drop", "raise", "wait")


class EventPublisherCore:
    """Numbered events to every subscriber stream of one server. One per server."""

    def __init__(
        self,
        rpc: RpcServer,
        *,
        max_streams: int = 10_000,
        detached_ttl: float = 60.0,
        max_pending: int = 64,
    ) -> None:
        self._rpc = rpc
        self.max_pending = max_pending
        # Events numbered and accepted but not yet handed to libzmq, per stream, in order.
        self._pending: dict[p.StreamKey, tuple[p.Stream, list[bytes]]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._retry_delay = _RETRY_MIN
        self.epoch = random.SystemRandom().randrange(1, 2**63)
        self.table = p.StreamTable(max_streams, detached_ttl)
        self.counters: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._wait_lock = asyncio.Lock()
        self._waiting = 0
        self.registry_synced = True
        self.closed = False
        rpc.handlers[p.Subscribe] = self._on_subscribe
        rpc.before_flush.append(self.flush)

    # -- subscribers -----------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_subscribe(self, peer: bytes, msg: p.Subscribe) -> None:
        # What was accepted for the old connection goes out first (or is counted as lost),
        # so that SUBSCRIBED's last number covers exactly what was handed to libzmq.
        self.flush()
        key = (msg.service, msg.instance_id)
        if not msg.subscriptions:
            if self.table.unsubscribe(key) is not None:
                self.counters["unsubscribes"] += 1
                self._notify()
            return
        try:
            stream = self.table.subscribe(
                key, peer, [(s.prefix, s.mode) for s in msg.subscriptions], time.monotonic()
            )
        except OverloadedError as exc:
            self.counters["subscribes_rejected"] += 1
            self._rpc.send_error(peer, 0, "overloaded", str(exc))
            return
        self.counters["subscribes"] += 1
        if self._rpc.send_frame(peer, p.encode_subscribed(msg.service, self.epoch, stream.seq)) is not (
            SendResult.SENT
        ):
            self.counters["acks_not_sent"] += 1  # the subscriber asks again until answered
        self._notify()

    def expect(self, known: dict[p.StreamKey, tuple[tuple[str, str], ...]]) -> None:
        """The registry's list of subscribers changed."""
        self.table.expect(known, time.monotonic())
        self.registry_synced = True
        self._notify()

    def missing(self, expect: Mapping[str, int] | None = None) -> list[str]:
        """Subscribers the publisher should know but that have not subscribed (yet)."""
        if not self.registry_synced:
            return ["<the registry's first list>"]
        streams = self.table.streams()
        out = [f"{s.service}/{s.instance_id}" for s in streams if s.from_registry and s.peer is None]
        for service, count in (expect or {}).items():
            have = sum(1 for s in streams if s.service == service and s.peer is not None)
            if have < count:
                out.append(f"{service} ({have} of {count} instances)")
        return out

    async def wait_ready(
        self,
        timeout: float,  # noqa: ASYNC109  # the handshake is bounded: the bound is part of the call
        expect: Mapping[str, int] | None = None,
    ) -> None:
        """Block until every known subscriber (and ``expect``: service -> instances) subscribed."""
        deadline = time.monotonic() + timeout
        while missing := self.missing(expect):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"subscribers not connected after {timeout}s: {', '.join(missing)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    def expire(self) -> None:
        if self.table.expire(time.monotonic()):
            self._notify()

    # -- publishing ------------------------------------------------------------

    def _try(
        self, target: p.Target, topic: str, payload: bytes, parts: dict[tuple[str, bool], tuple[bytes, bytes]]
    ) -> bool:
        """Queue one copy for the first candidate that has room. False when all connected were full.

        ``parts`` caches the event's encoding around its number, per (service, group), for
        the streams of one publish: the payload is copied once per stream, encoded once.
        """
        for stream in target.candidates:
            if stream.peer is None:
                continue
            entry = self._pending.get(stream.key)
            if entry is None:
                entry = self._pending[stream.key] = (stream, [])
            elif entry[0] is not stream:  # the stream was forgotten and made anew
                self._flush_one(*entry)
                entry = self._pending[stream.key] = (stream, [])
            queued = entry[1]
            if len(queued) >= self.max_pending:
                continue  # not taking events: as full as a full libzmq queue
            stream.seq += 1
            stream.sent += 1
            key = (stream.service, target.group)
            head_tail = parts.get(key)
            if head_tail is None:
                head_tail = p.event_parts(stream.service, self.epoch, target.group, topic, payload)
                parts[key] = head_tail
            queued.append(head_tail[0] + _encode_int(stream.seq) + head_tail[1])
            if len(queued) >= _FLUSH_AT:
                self._flush_one(stream, queued)
            elif self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
            return True
        return False

    def flush(self) -> None:
        """Hand every queued event to libzmq, several to a message; retry later what does not fit."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        blocked = False
        for key, (stream, queued) in list(self._pending.items()):
            if queued:
                blocked |= not self._flush_one(stream, queued)
            if not queued:
                del self._pending[key]
        if blocked and not self.closed:
            # A subscriber's libzmq queue is full: look again soon, backing off while it stays so.
            self._flush_handle = asyncio.get_running_loop().call_later(self._retry_delay, self.flush)
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        else:
            self._retry_delay = _RETRY_MIN

    def _flush_one(self, stream: p.Stream, queued: list[bytes]) -> bool:
        """Send what ``stream`` has queued; False if its libzmq queue is full (the rest waits)."""
        done = 0
        try:
            peer = stream.peer
            if peer is None:
                self._lost(stream, len(queued))
                done = len(queued)
                return True
            for message, count in p.pack(queued, _BATCH_BYTES, _FLUSH_AT, _SOLO_BYTES):
                result = self._rpc.send_frame(peer, message)
                if result is SendResult.SENT:
                    done += count
                    if count > 1:
                        self.counters["batches_out"] += 1
                    continue
                if result is SendResult.UNROUTABLE:
                    self.counters["peers_gone"] += 1
                    self.table.detach(stream, time.monotonic())
                    self._lost(stream, len(queued) - done)
                    done = len(queued)
                    return True
                return False
            return True
        finally:
            del queued[:done]

    def _lost(self, stream: p.Stream, count: int) -> None:
        # Accepted, then the subscriber went away before libzmq had them: counted, and the
        # subscriber sees the gap in the numbers when it comes back.
        if count:
            stream.sent -= count
            stream.dropped += count
            self.counters["dropped_disconnected"] += count

    def _drop(self, target: p.Target) -> str:
        # The number is used up on the stream that should have had the event, so that
        # subscriber sees exactly what it missed.
        stream = target.candidates[0]
        stream.seq += 1
        stream.dropped += 1
        self.counters["dropped_full" if stream.peer is not None else "dropped_not_connected"] += 1
        return f"{stream.service}/{stream.instance_id}"

    def _publish_now(self, topic: str, payload: bytes) -> tuple[int, list[p.Target]]:
        if self.closed:
            raise UnavailableError("the event publisher is stopped")
        self.counters["published"] += 1
        targets = self.table.targets(topic)
        if not targets:
            self.counters["unheard"] += 1  # nobody subscribes to it: not a loss
        sent, slow = 0, []
        parts: dict[tuple[str, bool], tuple[bytes, bytes]] = {}
        for target in targets:
            if self._try(target, topic, payload, parts):
                sent += 1
            elif any(s.peer is not None for s in target.candidates):
                slow.append(target)
            else:
                self._drop(target)
        self.counters["deliveries"] += sent
        return sent, slow

    def _give_up(self, slow: list[p.Target], policy: Policy, topic: str) -> None:
        names = [self._drop(t) for t in slow]
        if policy != "drop":
            self.counters["raised"] += 1
            raise SlowSubscriberError(
                f"event {topic!r} not taken by {len(names)} slow subscriber(s): {', '.join(names[:5])}",
                details={"subscribers": ",".join(names)},
            )

    def publish_nowait(self, topic: str, payload: bytes, policy: Policy) -> int:
        """Publish without waiting ("wait" acts as "raise"). Returns how many copies were sent."""
        sent, slow = self._publish_now(topic, payload)
        if slow:
            self._give_up(slow, policy, topic)
        return sent

    async def publish(self, topic: str, payload: bytes, policy: Policy, wait_timeout: float) -> int:
        if policy != "wait":
            return self.publish_nowait(topic, payload, policy)
        if self._waiting >= 1000:
            self.counters["raised"] += 1
            raise SlowSubscriberError(f"event {topic!r}: 1000 publishes already wait for slow subscribers")
        self._waiting += 1
        try:
            async with self._wait_lock:  # one at a time, so events keep their order
                sent, slow = self._publish_now(topic, payload)
                if not slow:
                    return sent
                self.counters["waited"] += 1
                deadline = time.monotonic() + wait_timeout
                delay = 0.0005
                while slow and time.monotonic() < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.02)
                    still = []
                    parts: dict[tuple[str, bool], tuple[bytes, bytes]] = {}
                    for target in slow:
                        if self._try(target, topic, payload, parts):
                            sent += 1
                            self.counters["deliveries"] += 1
                        elif any(s.peer is not None for s in target.candidates):
                            still.append(target)
                        else:
                            self._drop(target)
                    slow = still
                if slow:
                    self.counters["wait_timeouts"] += 1
                    self._give_up(slow, policy, topic)
                return sent
        finally:
            self._waiting -= 1

    def statistics(self) -> dict[str, object]:
        streams = self.table.streams()
        return {
            **self.counters,
            "epoch": self.epoch,
            "streams": len(streams),
            "streams_connected": sum(1 for s in streams if s.peer is not None),
            "streams_expired": self.table.expired,
            "waiting": self._waiting,
            "pending": sum(len(q) for _, q in self._pending.values()),
            "per_stream": {
                f"{s.service}/{s.instance_id}": {
                    "seq": s.seq,
                    "sent": s.sent,
                    "dropped": s.dropped,
                    "connected": s.peer is not None,
                }
                for s in streams[:100]
            },
        }

    def close(self) -> None:
        self.flush()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.closed = True
        self._rpc.handlers.pop(p.Subscribe, None)
        with contextlib.suppress(ValueError):
            self._rpc.before_flush.remove(self.flush)
        self._notify()
