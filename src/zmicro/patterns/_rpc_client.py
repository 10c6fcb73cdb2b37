"""The caller side of RPC: one DEALER connection to one endpoint, many calls in flight.

Replies are matched to calls by request id through a ``CallTable``; one timer, armed
for the earliest deadline, expires calls; an expired or abandoned call sends CANCEL so
the server stops its handler. When the connection drops, calls already sent fail at
once with ``PeerLostError``; a call that cannot be sent yet (no connection, queue
full) waits in a bounded queue until its deadline.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections import Counter
from typing import Any

from .. import protocol as p
from .._errors import (
    ClientClosedError,
    DeadlineExceededError,
    InvalidArgumentError,
    OverloadedError,
    PeerLostError,
    ProtocolError,
    RemoteProtocolError,
    UnavailableError,
    error_from_wire,
)
from .._ratelog import RateLimitedLog
from ..transport import ConnectionMonitor, SendResult, SocketDriver, SocketOptions, new_dealer

__all__ = ("RpcConnection",)

log = logging.getLogger("zmicro.client")

_Waiter = asyncio.Future[Any]
# The wire carries the budget as a signed 32-bit count of milliseconds (about 24.8 days).
_MAX_BUDGET_MS = 2**31 - 1
# Coalesced requests leave once this many are waiting, without waiting for the loop's
# turn to end: one huge batch would leave the server idle while the client encodes it.
_FLUSH_AT = 32
# A server's MAXMSGSIZE is at least its message limit + 64 KiB, so a batch of this size
# always fits, whatever limit it set; each request in it is checked against that limit.
_BATCH_BYTES = 60 * 1024


class RpcConnection:
    """Calls to one endpoint. Create and use it on one event loop only."""

    def __init__(
        self,
        endpoint: str,
        options: SocketOptions,
        *,
        max_pending: int = 10_000,
        max_unsent: int = 1_000,
        max_request_bytes: int = 1024 * 1024,
    ) -> None:
        self.endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._table: p.CallTable[_Waiter] = p.CallTable(max_pending)
        self._socket = new_dealer(options)
        self._driver = SocketDriver(self._socket, self._on_message, on_writable=self._flush_unsent)
        self._monitor = ConnectionMonitor(self._socket, self._on_connection_event)
        # Requests that could not be handed to libzmq yet, oldest first.
        self._unsent: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._max_unsent = max_unsent
        # A server refuses requests past its limit (1 MiB by default), and past its socket
        # limit libzmq drops the connection with every call on it: check before sending.
        self.max_request_bytes = max_request_bytes
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._ratelog = RateLimitedLog(log)
        self.counters: Counter[str] = Counter()
        self.connected = False
        self.closed = False
        self._monitor.start()
        self._driver.start()
        self._socket.connect(endpoint)

    @property
    def pending(self) -> int:
        return len(self._table)

    @property
    def late_replies(self) -> int:
        return self._table.late_replies

    async def call(
        self,
        service: str,
        method: str,
        args: Any,
        *,
        deadline: float,
        traceparent: str | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send one request and wait for its reply; ``deadline`` is a ``time.monotonic()`` value."""
        if self.closed:
            raise ClientClosedError(f"the connection to {self.endpoint} is closed")
        budget_ms = min(int((deadline - time.monotonic()) * 1000), _MAX_BUDGET_MS)
        if budget_ms <= 0:
            self.counters["expired_before_send"] += 1
            raise DeadlineExceededError(f"{service}.{method}: deadline passed before the call was sent")
        waiter: _Waiter = self._loop.create_future()
        request_id = self._table.add(waiter, deadline)  # raises OverloadedError when full
        try:
            body = p.encode_request(
                request_id,
                service,
                method,
                p.Headers(budget_ms, traceparent, idempotency_key),
                args,
            )
        except Exception as exc:
            self._table.discard(request_id)
            raise InvalidArgumentError(f"{service}.{method}: arguments cannot be encoded: {exc}") from None
        if len(body) > self.max_request_bytes:
            self._table.discard(request_id)
            self.counters["rejected_too_large"] += 1
            raise InvalidArgumentError(
                f"{service}.{method}: request of {len(body)} bytes exceeds "
                f"the {self.max_request_bytes}-byte limit"
            )
        if self._driver.want_writable:
            # libzmq would not take the last ones (no connection, or its queue is full).
            if len(self._unsent) >= self._max_unsent:
                self._table.discard(request_id)
                self.counters["rejected_unsent_full"] += 1
                raise OverloadedError(
                    f"{service}.{method}: {self._max_unsent} requests already wait "
                    f"to be sent to {self.endpoint}",
                    details={"started": "false"},
                )
            self._unsent[request_id] = body
        elif self._unsent or len(self._table) > 1:
            # Other calls are in flight: this one leaves with whatever else the loop's
            # current turn produces, in one BATCH message (one send instead of many).
            unsent = self._unsent
            unsent[request_id] = body
            if len(unsent) >= _FLUSH_AT:
                self._flush_unsent()  # keep the pipe busy: the server starts on these now
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_unsent)
        elif self._driver.send([body]) is not SendResult.SENT:
            # An idle connection sends at once: coalescing must not cost a lone call latency.
            self._unsent[request_id] = body
            self._driver.want_writable = True
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        try:
            raw = await waiter
        except asyncio.CancelledError:
            # The caller gave up (its own timeout or cancellation): tell the server.
            if (not waiter.done() or waiter.cancelled()) and self._table.discard(request_id) is not None:
                self.counters["abandoned"] += 1
                self._cancel_remote(request_id)
            raise
        return p.decode_value(raw)

    # -- timers ----------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - time.monotonic())
        self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for request_id, waiter in self._table.expire(time.monotonic()):
            never_sent = request_id in self._unsent
            if not waiter.done():
                if never_sent:
                    # Not a slow peer: no peer at all. Say so rather than leave a bare timeout.
                    self.counters["unreachable"] += 1
                    waiter.set_exception(
                        UnavailableError(
                            f"{self.endpoint} could not be reached before the deadline (no connection)",
                            details={"started": "false", "reason": "unreachable"},
                        )
                    )
                else:
                    waiter.set_exception(
                        DeadlineExceededError(f"no reply from {self.endpoint} before the deadline")
                    )
            self._cancel_remote(request_id)
        nxt = self._table.next_deadline()
        if nxt is not None:
            self._arm(nxt)

    def _cancel_remote(self, request_id: int) -> None:
        if self._unsent.pop(request_id, None) is not None:
            return  # never sent: nothing to cancel over there
        if self._driver.send([p.encode_cancel(request_id)]) is not SendResult.SENT:
            self.counters["cancel_not_sent"] += 1

    # -- socket events ---------------------------------------------------------

    def _flush_unsent(self) -> None:
        """Hand queued requests to libzmq, several to a message; stop at the first refusal."""
        self._flush_scheduled = False
        unsent = self._unsent
        if not unsent:
            self._driver.want_writable = False
            return
        table = self._table
        live = [(rid, body) for rid, body in unsent.items() if rid in table]
        frames = [body for _, body in live]
        start = 0
        for message, count in p.pack(frames, _BATCH_BYTES):
            if self._driver.send([message]) is not SendResult.SENT:
                # Keep the rest, oldest first; the socket says when it can take more.
                unsent.clear()
                unsent.update(live[start:])
                self._driver.want_writable = True
                return
            if count > 1:
                self.counters["batches_out"] += 1
            start += count
        unsent.clear()
        self._driver.want_writable = False

    def _on_connection_event(self, kind: str, endpoint: str) -> None:
        if kind == "up":
            self.connected = True
            self.counters["connects"] += 1
            self._driver.kick()  # requests may be waiting for this connection
        elif kind == "down":
            self.connected = False
            self.counters["disconnects"] += 1
            self._fail_sent(PeerLostError(f"connection to {self.endpoint} lost during the call"))
        elif kind == "handshake_failed":
            self.counters["handshake_failed"] += 1

    def _fail_sent(self, error: Exception) -> None:
        """Fail every call that was handed to the lost connection; unsent ones keep waiting."""
        lost = [rid for rid in self._table.ids() if rid not in self._unsent]
        for request_id in lost:
            waiter = self._table.discard(request_id)
            if waiter is not None and not waiter.done():
                self.counters["peer_lost"] += 1
                waiter.set_exception(error)

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self.counters["malformed"] += 1
            self._ratelog.warning("malformed", f"{self.endpoint}: reply with {len(frames)} frames")
            return
        if p.is_batch(frames[0]):
            self.counters["batches_in"] += 1
        for msg in p.decode_each(frames[0]):
            if type(msg) is ProtocolError:
                self.counters["malformed"] += 1
                self._ratelog.warning("malformed", f"{self.endpoint}: undecodable reply: {msg}")
                if msg.request_id:
                    error = RemoteProtocolError(f"{self.endpoint} sent a bad reply: {msg}")
                    self._resolve(msg.request_id, error)
            else:
                self._handle(msg)  # type: ignore[arg-type]

    def _handle(self, msg: p.Message) -> None:
        if type(msg) is p.Reply:
            self._resolve(msg.id, None, msg.result)
        elif type(msg) is p.ErrorReply:
            error = error_from_wire(msg.code, msg.message, msg.details)
            if msg.id == 0:
                self.counters["errors_without_id"] += 1
                self._ratelog.warning("error0", f"{self.endpoint} reported: {msg.code}: {msg.message}")
            else:
                self._resolve(msg.id, error)
        elif type(msg) is p.Pong:
            self.counters["pongs"] += 1
        else:
            self.counters["unexpected"] += 1

    def _resolve(self, request_id: int, error: Exception | None, result: Any = None) -> None:
        waiter = self._table.pop(request_id)
        if waiter is None:
            # Late (its call already timed out), duplicate, or never ours: dropped and counted.
            return
        if waiter.done():
            return
        if error is None:
            waiter.set_result(result)
        else:
            waiter.set_exception(error)

    def close(self, linger_ms: int = 0) -> None:
        """Fail every pending call with ``ClientClosedError`` at once and close the socket."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for _, waiter in self._table.drain():
            if not waiter.done():
                waiter.set_exception(ClientClosedError(f"client closed; call to {self.endpoint} abandoned"))
        self._unsent.clear()
        self._monitor.close()
        self._driver.close(linger_ms)

    def statistics(self) -> dict[str, int]:
        out = dict(self.counters)
        out.update(
            pending=len(self._table),
            late_replies=self._table.late_replies,
            expired=self._table.expired,
            unsent=len(self._unsent),
        )
        return out
