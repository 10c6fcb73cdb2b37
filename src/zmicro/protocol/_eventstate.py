"""The bookkeeping of events, without sockets: who subscribes, how streams are numbered, gaps.

A *stream* is what one publisher sends to one subscriber instance of one service. The
publisher numbers the events of each stream 1, 2, 3, ... and an event it could not
deliver (queue full, peer gone, not connected yet) still uses up its number. The
subscriber therefore sees every missed event as a hole in the numbers, and counts it:
each number of an epoch is either delivered once or counted once as a gap.

``StreamTable`` is the publisher's side (which streams get an event, and their numbers);
``GapTracker`` is the subscriber's side of one stream. Time is passed in as ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._errors import OverloadedError

__all__ = ("GapTracker", "Stream", "StreamKey", "StreamTable", "Target")

StreamKey = tuple[str, str]
"""(subscribing service, subscriber instance id)."""


@dataclass(slots=True, eq=False)
class Stream:
    service: str
    instance_id: str
    peer: bytes | None = None
    """Routing id of the subscriber's connection; None while it is not connected."""
    subscriptions: tuple[tuple[str, str], ...] = ()
    seq: int = 0
    """The number of the last event assigned to this stream."""
    sent: int = 0
    dropped: int = 0
    detached_at: float | None = None
    from_registry: bool = False
    """Known from the registry (so expected, and forgotten when the registry forgets it)."""

    @property
    def key(self) -> StreamKey:
        return (self.service, self.instance_id)

    def wants(self, topic: str, group: bool) -> bool:
        mode = "group" if group else "broadcast"
        return any(m == mode and topic.startswith(prefix) for prefix, m in self.subscriptions)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(slots=True)
class Target:
    """One copy of an event: to ``candidates[0]``, or (group) to the next that can take it."""

    group: bool
    candidates: list[Stream] = field(default_factory=list)


class StreamTable:
    """The publisher's streams, bounded; says which streams get an event with a given topic."""

    def __init__(self, max_streams: int = 10_000, detached_ttl: float = 60.0) -> None:
        self.max_streams = max_streams
        self.detached_ttl = detached_ttl
        self._streams: dict[StreamKey, Stream] = {}
        self._rr: dict[str, int] = {}
        self._cache: dict[str, list[tuple[str, bool, list[Stream]]]] = {}
        self._solos: dict[int, Target] = {}
        self.expired = 0

    def __len__(self) -> int:
        return len(self._streams)

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    def get(self, key: StreamKey) -> Stream | None:
        return self._streams.get(key)

    def _add(self, key: StreamKey) -> Stream:
        stream = self._streams.get(key)
        if stream is None:
            if len(self._streams) >= self.max_streams:
                raise OverloadedError(f"the publisher already has {self.max_streams} subscriber streams")
            stream = self._streams[key] = Stream(*key)
            self._forget()
        return stream

    def subscribe(
        self, key: StreamKey, peer: bytes, subscriptions: Sequence[tuple[str, str]], now: float
    ) -> Stream:
        """A subscriber (re)connected. Its numbering continues: the gap is its to see."""
        stream = self._add(key)
        stream.peer = peer
        stream.detached_at = None
        if tuple(subscriptions) != stream.subscriptions:
            stream.subscriptions = tuple(subscriptions)
            self._forget()
        return stream

    def unsubscribe(self, key: StreamKey) -> Stream | None:
        stream = self._streams.pop(key, None)
        if stream is not None:
            self._forget()
        return stream

    def expect(self, known: dict[StreamKey, tuple[tuple[str, str], ...]], now: float) -> None:
        """The registry's view of the subscribers: add streams for new ones, drop vanished ones."""
        for key, subscriptions in known.items():
            stream = self._streams.get(key)
            if stream is None:
                if len(self._streams) >= self.max_streams:
                    continue
                stream = self._add(key)
                stream.detached_at = now
            if stream.peer is None and stream.subscriptions != subscriptions:
                stream.subscriptions = subscriptions
                self._forget()
            stream.from_registry = True
        for key, stream in list(self._streams.items()):
            if stream.from_registry and key not in known:
                self.unsubscribe(key)

    def detach(self, stream: Stream, now: float) -> None:
        """Its connection is gone; keep numbering so that the subscriber sees what it missed."""
        stream.peer = None
        if stream.detached_at is None:
            stream.detached_at = now

    def expire(self, now: float) -> int:
        """Forget streams that stayed detached too long (unless the registry still lists them)."""
        gone = [
            key
            for key, s in self._streams.items()
            if s.peer is None
            and not s.from_registry
            and s.detached_at is not None
            and now - s.detached_at > self.detached_ttl
        ]
        for key in gone:
            self.unsubscribe(key)
        self.expired += len(gone)
        return len(gone)

    def targets(self, topic: str) -> list[Target]:
        """The copies an event with ``topic`` must make: one per broadcast subscriber instance,
        one per subscribing group (service), candidates in round-robin order, connected first."""
        plan = self._cache.get(topic)
        if plan is None:
            plan = self._plan(topic)
            if len(self._cache) >= 1024:
                self._forget()
            self._cache[topic] = plan
        out: list[Target] = []
        for service, group, streams in plan:
            if not group:
                out.append(self._solo(streams[0]))
                continue
            start = self._rr.get(service, 0)
            self._rr[service] = start + 1
            n = len(streams)
            ordered = [streams[(start + i) % n] for i in range(n)]
            ordered.sort(key=lambda s: s.peer is None)  # stable: keeps the rotation among equals
            out.append(Target(True, ordered))
        return out

    def _forget(self) -> None:
        self._cache.clear()
        self._solos.clear()

    def _solo(self, stream: Stream) -> Target:
        # A broadcast copy always goes to the same stream: one Target each, made once.
        target = self._solos.get(id(stream))
        if target is None or target.candidates[0] is not stream:
            target = self._solos[id(stream)] = Target(False, [stream])
        return target

    def _plan(self, topic: str) -> list[tuple[str, bool, list[Stream]]]:
        plan: list[tuple[str, bool, list[Stream]]] = []
        groups: dict[str, list[Stream]] = {}
        for stream in self._streams.values():
            if stream.wants(topic, group=False):
                plan.append((stream.service, False, [stream]))
            if stream.wants(topic, group=True):
                groups.setdefault(stream.service, []).append(stream)
        plan.extend((service, True, streams) for service, streams in groups.items())
        return plan


class GapTracker:
    """The subscriber's view of one stream: which numbers arrived, which were missed.

    Invariant: for the current epoch, every number up to ``last`` was either delivered
    (``on_event`` returned a gap count, not None) or counted once in ``gaps``.
    """

    __slots__ = ("epoch", "gaps", "last", "pending_gap", "restarted", "restarts", "stale")

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.last = 0
        self.gaps = 0
        self.pending_gap = 0
        """Missed events not yet reported to a handler (reported with the next event)."""
        self.restarts = 0
        self.restarted = False
        self.stale = 0

    def _new_epoch(self, epoch: int) -> None:
        if self.epoch is not None:
            # The publisher restarted: what its old process still held is lost, uncounted.
            self.restarts += 1
            self.restarted = True
        self.epoch = epoch
        self.last = 0

    def on_ack(self, epoch: int, last_seq: int) -> int:
        """The publisher confirmed the stream; numbers up to ``last_seq`` were missed if not seen."""
        if epoch != self.epoch:
            self._new_epoch(epoch)
        missed = max(0, last_seq - self.last)
        if missed:
            self.gaps += missed
            self.pending_gap += missed
            self.last = last_seq
        return missed

    def on_event(self, epoch: int, seq: int) -> int | None:
        """An event arrived: the number of events missed just before it, or None to drop it
        (an older epoch's straggler, or a number already delivered or counted as missed)."""
        if epoch != self.epoch:
            if self.epoch is not None:
                self.stale += 1  # only a SUBSCRIBED answer may switch epochs
                return None
            self._new_epoch(epoch)
        if seq <= self.last:
            self.stale += 1
            return None
        missed = seq - self.last - 1
        self.gaps += missed
        self.last = seq
        gap = self.pending_gap + missed
        self.pending_gap = 0
        return gap

    def shed(self, gap: int, restarted: bool) -> None:
        """An event ``on_event`` passed on was dropped locally after all: it is missed too,
        and what was to be reported with it is reported with the next one."""
        self.gaps += 1
        self.pending_gap += gap + 1
        self.restarted = self.restarted or restarted

    def take_restarted(self) -> bool:
        restarted, self.restarted = self.restarted, False
        return restarted
