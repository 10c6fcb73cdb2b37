"""The producer side of work queues: ``Client.submit`` (durable) and ``Client.send`` (fire-and-forget).

``submit`` returns once the queue has committed the task. When the queue for that name
is full (or the queue service is overloaded) the policy decides: ``"wait"`` retries
with exponential backoff and jitter until the call's deadline, ``"raise"`` raises
``OverloadedError`` at once, ``"drop"`` returns ``None`` and counts the drop.

Submits made in the same event-loop turn (many coroutines submitting at once) leave
together as one ``submit_many`` request per task name: the queue stores them in one
commit and answers each item on its own, so every caller still gets its own id (only
once committed) or its own error, and applies its own policy to it.

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
    NoSuchMethodError,
    OverloadedError,
    PeerLostError,
    UnavailableError,
    error_from_wire,
)
from ._tasks import QUEUE_SERVICE

if TYPE_CHECKING:
    from ._client import Client

__all__ = ("OnFull", "Producer")

OnFull = Literal["wait", "raise", "drop"]

_encoder = msgspec.msgpack.Encoder()
# One submit_many carries at most this many tasks, or this many payload bytes: well inside
# the queue's limits (items per request, message size), and a short transaction there.
_MAX_ITEMS = 512
_MAX_BYTES = 256 * 1024


class _Outgoing:
    """Submits of one task name gathered in this loop turn, waiting to leave as one request."""

    __slots__ = ("bytes", "deadline", "items", "waiters")

    def __init__(self) -> None:
        self.items: list[tuple[bytes, float | None, str | None]] = []
        self.waiters: list[asyncio.Future[int]] = []
        self.bytes = 0
        self.deadline = 0.0


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
        self._outgoing: dict[str, _Outgoing] = {}
        self._flush_scheduled = False
        self._requests: set[asyncio.Task[None]] = set()
        # Off once the queue answers that it has no submit_many (an older one): one call per task.
        self.batching = True

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
                task_id = await self._submit_once(name, data, ttl, key, deadline)
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

    async def _submit_once(
        self, name: str, data: bytes, ttl: float | None, key: str | None, deadline: float
    ) -> int:
        """One try: through this turn's shared request, or alone when batching is off."""
        if self.batching:
            waiter = self._add(name, data, ttl, key, deadline)
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    return await waiter
            except TimeoutError:
                # The request carrying it may still store it: as with a call that timed out.
                raise DeadlineExceededError(f"submit of task {name!r}: no answer in time") from None
            except NoSuchMethodError:
                if self.batching:
                    raise
                # This very request found the queue without submit_many: once more, alone.
        left = deadline - time.monotonic()
        task_id = await self._client.call(
            QUEUE_SERVICE, "submit", name=name, payload=data, ttl=ttl, key=key, _timeout=max(left, 0.001)
        )
        return int(task_id)

    def _add(
        self, name: str, data: bytes, ttl: float | None, key: str | None, deadline: float
    ) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        out = self._outgoing.get(name)
        if out is not None and (len(out.items) >= _MAX_ITEMS or out.bytes + len(data) > _MAX_BYTES):
            self._send(name)  # full: it leaves now, this one starts the next
            out = None
        if out is None:
            out = self._outgoing[name] = _Outgoing()
        waiter: asyncio.Future[int] = loop.create_future()
        out.items.append((data, ttl, key))
        out.waiters.append(waiter)
        out.bytes += len(data)
        out.deadline = max(out.deadline, deadline)
        if not self._flush_scheduled:
            # After the callbacks already due in this turn: every submitter woken together
            # (the answers of the previous request, say) adds its task before this runs.
            self._flush_scheduled = True
            loop.call_soon(self._flush_submits)
        return waiter

    def _flush_submits(self) -> None:
        self._flush_scheduled = False
        for name in list(self._outgoing):
            self._send(name)

    def _send(self, name: str) -> None:
        out = self._outgoing.pop(name)
        task = asyncio.get_running_loop().create_task(self._request(name, out))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _request(self, name: str, out: _Outgoing) -> None:
        """One request for the gathered submits; each waiter gets its own id or error."""
        waiters = out.waiters
        left = max(out.deadline - time.monotonic(), 0.001)
        try:
            if len(out.items) == 1:
                # Alone: the plain call (cheaper to encode, and any queue version has it).
                data, ttl, key = out.items[0]
                answers: list[Any] = [
                    await self._client.call(
                        QUEUE_SERVICE, "submit", name=name, payload=data, ttl=ttl, key=key, _timeout=left
                    )
                ]
            else:
                self.counters["submit_batches"] += 1
                answers = await self._client.call(
                    QUEUE_SERVICE, "submit_many", name=name, items=out.items, _timeout=left
                )
        except NoSuchMethodError as exc:
            self.batching = False  # before the waiters hear of it: they try again alone
            _fail(waiters, exc)
            return
        except CallError as exc:
            # The whole request failed; each waiter applies its own policy to that.
            _fail(waiters, exc)
            return
        except asyncio.CancelledError:
            _fail(waiters, PeerLostError("the submit request was cancelled; the tasks may be stored"))
            raise
        if not isinstance(answers, list) or len(answers) != len(waiters):
            _fail(waiters, CallError(f"the queue answered {len(waiters)} submits with {answers!r}"))
            return
        for waiter, answer in zip(waiters, answers, strict=True):
            if waiter.done():
                continue  # its caller gave up (deadline, cancelled); the task may be stored all the same
            if isinstance(answer, int):
                waiter.set_result(answer)
            else:
                info = answer if isinstance(answer, dict) else {}
                details = {k: str(v) for k, v in info.items() if k not in ("code", "message")}
                code, message = str(info.get("code", "unknown")), str(info.get("message", answer))
                waiter.set_exception(error_from_wire(code, message, details))

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


def _fail(waiters: list[asyncio.Future[int]], exc: CallError) -> None:
    for waiter in waiters:
        if not waiter.done():
            # A copy each: one exception object raised in many tasks would pile up their tracebacks.
            copy = error_from_wire(exc.code, exc.message, exc.details)
            copy.__cause__ = exc.__cause__
            waiter.set_exception(copy)


def _loop_time(deadline: float) -> float:
    """A ``time.monotonic()`` deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
