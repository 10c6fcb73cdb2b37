"""The producer side of work queues: ``Client.submit`` (durable) and ``Client.send`` (fire-and-forget).

``submit`` returns once the queue has committed the task. When the queue for that name
is full (or the queue service is overloaded) the policy decides: ``"wait"`` retries
with exponential backoff and jitter until the call's deadline, ``"raise"`` raises
``OverloadedError`` at once, ``"drop"`` returns ``None`` and counts the drop.

``send`` never waits: it puts the message in a bounded local buffer that one flusher
task drains in batches to the queue's in-memory stream buffer. A full local buffer, a
full remote buffer and a failed batch are all drops, and all counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ._errors import (
    CallError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidArgumentError,
    OverloadedError,
    PeerLostError,
    UnavailableError,
)
from ._tasks import QUEUE_SERVICE

if TYPE_CHECKING:
    from ._client import Client

__all__ = ("OnFull", "Producer")

OnFull = Literal["wait", "raise", "drop"]

_encoder = msgspec.msgpack.Encoder()


def encode_payload(name: str, payload: Any) -> bytes:
    try:
        return _encoder.encode(payload)
    except Exception as exc:
        raise InvalidArgumentError(f"payload for task {name!r} cannot be encoded: {exc}") from None


class Producer:
    """What one ``Client`` needs to hand work over; created on its first ``submit`` or ``send``."""

    def __init__(self, client: Client, *, max_buffered: int = 10_000, batch: int = 256) -> None:
        self._client = client
        self.max_buffered = max_buffered
        self.batch = batch
        self._buffers: dict[str, deque[bytes]] = {}
        self._buffered = 0
        self._flusher: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self.counters: Counter[str] = Counter()

    async def submit(
        self,
        name: str,
        payload: Any,
        *,
        on_full: OnFull = "wait",
        ttl: float | None = None,
        key: str | None = None,
        seconds: float | None = None,
    ) -> int | None:
        if on_full not in ("wait", "raise", "drop"):
            raise ConfigurationError(f"on_full must be 'wait', 'raise' or 'drop', not {on_full!r}")
        data = encode_payload(name, payload)
        deadline = time.monotonic() + (self._client.timeout if seconds is None else seconds)
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.counters["submit_wait_expired"] += 1
                raise DeadlineExceededError(f"task {name!r}: the queue stayed full until the deadline")
            try:
                task_id = await self._client.call(
                    QUEUE_SERVICE, "submit", name=name, payload=data, ttl=ttl, key=key, _timeout=left
                )
            except OverloadedError:
                self.counters["submit_full"] += 1
                if on_full == "raise":
                    raise
                if on_full == "drop":
                    self.counters["submit_dropped"] += 1
                    return None
            except UnavailableError:
                # Refused before it was stored (shutting down, not reachable): safe to retry.
                self.counters["submit_unavailable"] += 1
                if on_full != "wait":
                    raise
            except PeerLostError:
                # Maybe stored, maybe not: only a key makes a second try safe (no duplicate).
                self.counters["submit_peer_lost"] += 1
                if key is None or on_full != "wait":
                    raise
            else:
                self.counters["submitted"] += 1
                return int(task_id)
            delay = min(2.0, 0.01 * 2**attempt) * self._rng.uniform(0.5, 1.0)
            attempt += 1
            self.counters["submit_retries"] += 1
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    def send(self, name: str, payload: Any) -> bool:
        """Buffer one fire-and-forget message; ``False`` when it was dropped (buffer full)."""
        data = encode_payload(name, payload)
        if self._buffered >= self.max_buffered:
            self.counters["send_dropped_local"] += 1
            return False
        self._buffers.setdefault(name, deque()).append(data)
        self._buffered += 1
        self.counters["send_buffered"] += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return True

    async def _flush(self) -> None:
        while self._buffers:
            name, buf = next(iter(self._buffers.items()))
            items = [buf.popleft() for _ in range(min(self.batch, len(buf)))]
            if not buf:
                del self._buffers[name]
            self._buffered -= len(items)
            try:
                result = await self._client.call(QUEUE_SERVICE, "push", name=name, items=items, _timeout=5.0)
            except CallError as exc:
                self.counters["send_failed"] += len(items)
                self.counters[f"send_failed.{exc.code}"] += len(items)
                continue
            self.counters["sent"] += int(result.get("accepted", 0))
            self.counters["send_dropped_remote"] += int(result.get("dropped", 0))

    @property
    def buffered(self) -> int:
        return self._buffered

    def statistics(self) -> dict[str, int]:
        return {**self.counters, "buffered": self._buffered}

    async def aclose(self, grace: float = 1.0) -> None:
        """Give buffered messages ``grace`` seconds to leave, then drop (and count) the rest."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(asyncio.TimeoutError, CallError):
                await asyncio.wait_for(asyncio.shield(flusher), grace)
            if not flusher.done():
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
        self.counters["send_dropped_close"] += self._buffered
        self._buffers.clear()
        self._buffered = 0
