"""Server-side admission: at most N handlers at once, a bounded wait queue, then "overloaded".

Pure logic; the driver decides what "start" means. Keeping the queue bounded is what
keeps memory flat when callers send ten times what a service can handle.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ("Admission", "Verdict")

T = TypeVar("T")


class Verdict(enum.Enum):
    START = "start"
    QUEUED = "queued"
    REJECTED = "rejected"


class Admission(Generic[T]):
    """Counts active work and queues the excess up to a bound.

    >>> adm: Admission[str] = Admission(max_active=1, max_queued=1)
    >>> [adm.offer(x).value for x in "abc"]
    ['start', 'queued', 'rejected']
    >>> adm.finish()  # 'a' done: 'b' may start
    'b'
    """

    def __init__(self, max_active: int, max_queued: int) -> None:
        if max_active < 1 or max_queued < 0:
            raise ValueError("max_active must be >= 1 and max_queued >= 0")
        self.max_active = max_active
        self.max_queued = max_queued
        self.active = 0
        self._queue: collections.deque[T] = collections.deque()
        self.rejected = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, item: T) -> Verdict:
        if self.active < self.max_active:
            self.active += 1
            return Verdict.START
        if len(self._queue) < self.max_queued:
            self._queue.append(item)
            return Verdict.QUEUED
        self.rejected += 1
        return Verdict.REJECTED

    def finish(self) -> T | None:
        """One active item ended. Returns the next queued item, now counted active."""
        if self._queue:
            return self._queue.popleft()
        self.active -= 1
        return None

    def remove(self, match: Callable[[T], bool]) -> T | None:
        """Take the first queued item that ``match`` accepts (a cancelled request)."""
        for index, item in enumerate(self._queue):
            if match(item):
                del self._queue[index]  # by position: remove() would take the first *equal* item
                return item
        return None

    def take_queued(self) -> list[T]:
        """Empty the queue (shutdown) and return what was waiting."""
        items = list(self._queue)
        self._queue.clear()
        return items
