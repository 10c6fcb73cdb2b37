"""The server side of RPC on a ROUTER socket: read, validate, hand over, reply, count.

One reader per socket. Every message is checked (frame count, size, decoding) before
anything else sees it; bad input is counted, logged at a limited rate and answered
with a protocol error whenever the sender can be addressed. What to do with a valid
request is the ``Dispatcher``'s business (the runtime).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from .. import protocol as p
from .._errors import ProtocolError
from .._ratelog import RateLimitedLog
from ..transport import (
    ConnectionMonitor,
    SendResult,
    SocketDriver,
    SocketOptions,
    bind,
    new_router,
)

__all__ = ("Dispatcher", "RpcServer")

log = logging.getLogger("zmicro.server")

# Replies leave in one message once this many wait for the same caller, even mid-drain:
# one huge batch would leave the caller idle while the server works through the rest.
_FLUSH_AT = 32


def _printable(text: object) -> str:
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


class Dispatcher(Protocol):
    def on_request(self, peer: bytes, request: p.Request) -> None: ...
    def on_cancel(self, peer: bytes, request_id: int) -> None: ...


class RpcServer:
    """Owns the ROUTER socket. ``counters`` holds every drop and every kind of bad input."""

    def __init__(self, dispatcher: Dispatcher, options: SocketOptions, *, max_message_bytes: int) -> None:
        self._dispatcher = dispatcher
        self._options = options
        # zmicro's own limit sits below the socket's MAXMSGSIZE so that an oversized
        # message can still be answered; past MAXMSGSIZE libzmq drops the connection.
        self.max_message_bytes = max_message_bytes
        self._socket = new_router(options)
        self._driver = SocketDriver(self._socket, self._on_message, on_drained=self.flush)
        self._monitor = ConnectionMonitor(self._socket, self._on_connection_event)
        self._ratelog = RateLimitedLog(log)
        self.counters: Counter[str] = Counter()
        self.endpoints: list[str] = []
        self.last_reply_at = 0.0
        # Replies wait here, per caller, until the current drain pass ends or the loop
        # turns once: all that is ready together leaves together, in one BATCH message.
        self._outbox: dict[bytes, list[bytes]] = {}
        self._held = False
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Other patterns sharing this socket (events, ...) handle their message kinds here.
        self.handlers: dict[type, Callable[[bytes, Any], None]] = {}
        # ... and send what they queued before any reply leaves, so that a caller who has
        # the reply knows the events its call published are on their way.
        self.before_flush: list[Callable[[], None]] = []

    def bind(self, endpoint: str) -> str:
        concrete = bind(self._socket, endpoint)
        self.endpoints.append(concrete)
        return concrete

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._monitor.start()
        self._driver.start()

    # -- input ---------------------------------------------------------------

    def _bad_input(self, kind: str, peer: bytes | None, message: str, request_id: int = 0) -> None:
        self.counters[kind] += 1
        self._ratelog.warning(kind, f"dropped bad input ({kind}): {message}")
        if peer is not None:
            self.send_error(peer, request_id, "protocol_error", message)

    def _on_message(self, frames: list[bytes]) -> None:
        self._held = True  # replies wait for the end of this drain pass (see flush)
        self.counters["messages_in"] += 1
        if len(frames) != 2:
            # Frame 0 is always the routing id that libzmq added; anything else is bad.
            self._bad_input("malformed", frames[0], f"expected 1 message frame, got {len(frames) - 1}")
            return
        peer, body = frames
        batch = p.is_batch(body)
        if len(body) > self.max_message_bytes and not batch:
            # Answer with the request's id when it can be read, so the caller is not left waiting.
            self._bad_input(
                "oversized",
                peer,
                f"message of {len(body)} bytes exceeds {self.max_message_bytes}",
                p.peek_request_id(body),
            )
            return
        if batch:
            # A BATCH may be larger than one message may (libzmq's MAXMSGSIZE bounds it);
            # each message in it is held to the limit on its own.
            self.counters["batches_in"] += 1
        for msg in p.decode_each(body, self.max_message_bytes):
            try:
                if type(msg) is ProtocolError:
                    self._bad_input("malformed", peer, str(msg), msg.request_id)
                else:
                    self._handle(peer, msg)  # type: ignore[arg-type]
            except Exception:  # one message must never cost the others of its batch or drain pass
                self.counters["internal_errors"] += 1
                log.exception("could not handle a message from a peer")

    def _handle(self, peer: bytes, msg: p.Message) -> None:
        if type(msg) is p.Request:
            self._dispatcher.on_request(peer, msg)
        elif type(msg) is p.Cancel:
            self.counters["cancels_in"] += 1
            self._dispatcher.on_cancel(peer, msg.id)
        elif type(msg) is p.Ping:
            self._send(peer, p.encode_pong(msg.nonce))
        else:
            handler = self.handlers.get(type(msg))
            if handler is not None:
                handler(peer, msg)
            else:
                self._bad_input("unexpected", peer, f"a server does not accept {type(msg).__name__}")

    def _on_connection_event(self, kind: str, endpoint: str) -> None:
        if kind == "handshake_failed":
            self._bad_input("handshake_failed", None, f"a peer failed the ZMTP handshake on {endpoint}")
        elif kind == "up":
            self.counters["connections"] += 1
        elif kind == "down":
            self.counters["disconnections"] += 1

    # -- output --------------------------------------------------------------

    def send_frame(self, peer: bytes, body: bytes) -> SendResult:
        """Send one message to ``peer`` as is; for patterns that share this socket."""
        return self._driver.send([peer, body])

    def _send(self, peer: bytes, body: bytes) -> None:
        queued = self._outbox.get(peer)
        if queued is None:
            self._outbox[peer] = [body]
        else:
            queued.append(body)
            if len(queued) >= _FLUSH_AT:
                self.flush()  # keep the pipe busy: the caller starts on these now
                return
        if not self._held and not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def hold(self) -> None:
        """Replies queued from now on wait for the caller's own ``flush()``: no loop turn is booked."""
        self._held = True

    def flush(self) -> None:
        """Send every queued reply now: one message per caller, a BATCH when there are several."""
        self._held = False
        self._flush_scheduled = False
        for hook in self.before_flush:
            hook()
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        if self._driver.closed:
            # A handler that ignored cancellation finished after shutdown: nobody to send to.
            self.counters["reply_after_close"] += sum(len(f) for f in outbox.values())
            return
        self.last_reply_at = time.monotonic()  # replies and errors alike (see Server.stop)
        send, counters = self._driver.send, self.counters
        for peer, frames in outbox.items():
            for message, count in p.pack(frames):
                result = send([peer, message])
                if result is SendResult.SENT:
                    if count > 1:
                        counters["batches_out"] += 1
                    continue
                # The caller is gone (unroutable) or not reading (its queue is full): nobody
                # can be told, so the replies are counted and dropped, never retried into memory.
                kind = "undeliverable" if result is SendResult.UNROUTABLE else "reply_dropped_hwm"
                counters[kind] += count

    def send_reply(self, peer: bytes, request_id: int, result: Any, what: str) -> None:
        try:
            body = p.encode_reply(request_id, result)
        except Exception as exc:  # whatever the encoder rejects becomes an error reply
            self.counters["unencodable_results"] += 1
            self.send_error(
                peer,
                request_id,
                "remote_error",
                f"the result of {what} could not be encoded: {exc}",
                {"type": "EncodeError"},
            )
            return
        if len(body) > self.max_message_bytes:
            # Past the caller's size limit libzmq would drop its whole connection, and every
            # other call on it: answer this one with an error instead.
            self.counters["oversized_results"] += 1
            self.send_error(
                peer,
                request_id,
                "remote_error",
                f"the result of {what} is {len(body)} bytes, over the {self.max_message_bytes}-byte limit",
                {"type": "ResultTooLarge"},
            )
            return
        self.counters["replies"] += 1
        self._send(peer, body)

    def send_error(
        self,
        peer: bytes,
        request_id: int,
        code: str,
        message: str,
        details: dict[str, str] | None = None,
    ) -> None:
        self.counters[f"errors_out.{code}"] += 1
        try:
            body = p.encode_error(request_id, code, message, details)
        except Exception:
            # Text that is not valid UTF-8 (a lone surrogate from a file name, say) must
            # still reach the caller: escape it rather than lose the reply.
            body = p.encode_error(
                request_id, code, _printable(message), {k: _printable(v) for k, v in (details or {}).items()}
            )
        self._send(peer, body)

    def close(self, linger_ms: int) -> None:
        self.flush()
        self._monitor.close()
        self._driver.close(linger_ms)
