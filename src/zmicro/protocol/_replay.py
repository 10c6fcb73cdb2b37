"""The server's memory of idempotency keys: a repeated request gets the first outcome. Pure.

A caller that retries a call with the same idempotency key (after "peer lost", say)
must not run the handler twice. While the first attempt runs, repeats join it; once
it has ended, repeats get its stored outcome. The memory is bounded in entries and
in time; outcomes that say nothing about the work (deadline, cancellation, shutdown)
are not stored, so a later attempt may run.
"""

from __future__ import annotations

import collections
import enum
from typing import Any, Generic, TypeVar

__all__ = ("ReplayCache", "ReplayVerdict")

K = TypeVar("K")
W = TypeVar("W")


class ReplayVerdict(enum.Enum):
    NEW = "new"
    """Run it: nobody ran this key (or its memory has expired)."""
    JOINED = "joined"
    """The first attempt is running; the waiter will be answered with its outcome."""
    CACHED = "cached"
    """The first attempt has ended; answer with the stored outcome."""


class ReplayCache(Generic[K, W]):
    """
    >>> cache: ReplayCache[str, str] = ReplayCache(max_entries=10, ttl=60)
    >>> cache.begin("k", "first", now=0)[0].value
    'new'
    >>> cache.begin("k", "second", now=1)[0].value
    'joined'
    >>> cache.finish("k", ("ok", 42), store=True, now=2)
    ['first', 'second']
    >>> cache.begin("k", "third", now=3)
    (<ReplayVerdict.CACHED: 'cached'>, ('ok', 42))
    """

    def __init__(self, max_entries: int = 10_000, ttl: float = 600.0) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._running: dict[K, list[W]] = {}
        self._done: collections.OrderedDict[K, tuple[float, Any]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._running) + len(self._done)

    def begin(self, key: K, waiter: W, now: float) -> tuple[ReplayVerdict, Any]:
        self._expire(now)
        done = self._done.get(key)
        if done is not None:
            return ReplayVerdict.CACHED, done[1]
        waiters = self._running.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return ReplayVerdict.JOINED, None
        if len(self._running) >= self.max_entries:
            return ReplayVerdict.NEW, None  # too many at once to remember: run it unremembered
        self._running[key] = [waiter]
        return ReplayVerdict.NEW, None

    def finish(self, key: K, outcome: Any, *, store: bool, now: float) -> list[W]:
        """The first attempt ended; returns every waiter (the first one included)."""
        waiters = self._running.pop(key, [])
        if store:
            self._done[key] = (now + self.ttl, outcome)
            self._done.move_to_end(key)
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)
        return waiters

    def _expire(self, now: float) -> None:
        done = self._done
        while done:
            key, (expires, _) = next(iter(done.items()))
            if expires > now:
                break
            del done[key]
