"""The caller's table of requests in flight: ids, deadlines, late replies. Pure logic.

The driver that owns the clock asks ``next_deadline()`` to arm one timer and calls
``expire(now)`` when it fires; a reply calls ``pop(id)``. A reply whose id is not in
the table (late, duplicate or made up) is counted and never handed to another call,
because ids are never reused by one table.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

from .._errors import OverloadedError

__all__ = ("CallTable",)

T = TypeVar("T")


class CallTable(Generic[T]):
    """Maps request id to a waiter, bounded in size, with deadline bookkeeping.

    >>> table: CallTable[str] = CallTable(max_pending=2)
    >>> rid = table.add("waiter", deadline=10.0)
    >>> table.pop(rid)
    'waiter'
    >>> table.pop(rid) is None  # a second (late) reply is dropped
    True
    >>> table.late_replies
    1
    """

    def __init__(self, max_pending: int = 10_000) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self._ids = itertools.count(1)
        self._calls: dict[int, tuple[float, T]] = {}
        # A min-heap of (deadline, id). Entries of calls that already ended stay
        # until they reach the top or the heap is compacted: cheaper than removal.
        self._heap: list[tuple[float, int]] = []
        self.late_replies = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._calls

    def add(self, waiter: T, deadline: float) -> int:
        """Register a call; returns its new id. Raises ``OverloadedError`` when full."""
        if len(self._calls) >= self.max_pending:
            raise OverloadedError(
                f"too many calls in flight ({self.max_pending})", details={"started": "false"}
            )
        request_id = next(self._ids)
        self._calls[request_id] = (deadline, waiter)
        heapq.heappush(self._heap, (deadline, request_id))
        if len(self._heap) > 2 * len(self._calls) + 64:
            self._compact()
        return request_id

    def pop(self, request_id: int) -> T | None:
        """Take the waiter for a reply; ``None`` (and counted) when nobody waits for it."""
        entry = self._calls.pop(request_id, None)
        if entry is None:
            self.late_replies += 1
            return None
        return entry[1]

    def discard(self, request_id: int) -> T | None:
        """Forget a call that ended locally (cancelled by its caller); not counted as late."""
        entry = self._calls.pop(request_id, None)
        return None if entry is None else entry[1]

    def next_deadline(self) -> float | None:
        """The earliest deadline of a call still pending, or ``None``."""
        heap = self._heap
        while heap and heap[0][1] not in self._calls:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[tuple[int, T]]:
        """Remove and return every call whose deadline is at or before ``now``."""
        heap, calls, out = self._heap, self._calls, []
        while heap and heap[0][0] <= now:
            _, request_id = heapq.heappop(heap)
            entry = calls.pop(request_id, None)
            if entry is not None:
                out.append((request_id, entry[1]))
        self.expired += len(out)
        return out

    def ids(self) -> list[int]:
        """Ids of every pending call, oldest first."""
        return list(self._calls)

    def drain(self) -> list[tuple[int, T]]:
        """Remove and return every pending call (the client is closing)."""
        out = [(rid, waiter) for rid, (_, waiter) in self._calls.items()]
        self._calls.clear()
        self._heap.clear()
        return out

    def _compact(self) -> None:
        self._heap = [(deadline, rid) for rid, (deadline, _) in self._calls.items()]
        heapq.heapify(self._heap)
