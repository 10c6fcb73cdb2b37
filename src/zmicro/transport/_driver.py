"""Drive a ZeroMQ socket from an asyncio loop with one reader and no Future per message.

The socket's file descriptor is registered with ``loop.add_reader``; each wake-up drains
the socket with non-blocking receives. The descriptor is edge-triggered and any
operation on the socket (a send included) may consume the edge, so after every send the
driver reads ``EVENTS`` and schedules a drain when a message is waiting. Measured, this
is about twice as fast as ``zmq.asyncio``'s Future per message, and no receive is ever
cancelled (a cancelled receive can lose a message).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable

import zmq

__all__ = ("SendResult", "SocketDriver")

log = logging.getLogger("zmicro.transport")

_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_COPY_THRESHOLD = 64 * 1024  # below this libzmq copies anyway; above, hand over the buffer


class SendResult(enum.Enum):
    SENT = "sent"
    FULL = "full"
    """High-water mark reached, or (with IMMEDIATE) no connected peer: nothing was queued."""
    UNROUTABLE = "unroutable"
    """A ROUTER has no connection with that identity (the caller is gone)."""


class SocketDriver:
    """Reads every message of ``sock`` into ``on_message``; tells ``on_writable`` when it can send.

    All calls must come from the loop's thread; the socket never leaves it.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        on_message: Callable[[list[bytes]], None],
        *,
        on_writable: Callable[[], None] | None = None,
        on_drained: Callable[[], None] | None = None,
        batch: int = 512,
    ) -> None:
        self.socket = sock
        self._on_message = on_message
        self._on_writable = on_writable
        # Called after every drain pass that read something: the owner's moment to send
        # what the messages just read produced, together, instead of one send per reply.
        self._on_drained = on_drained
        self._batch = batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._sent_since_look = False
        self.want_writable = False
        self.closed = False
        self.paused = False
        """While set, nothing is read: messages wait in libzmq, bounded by the receive HWM."""

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.socket.FD, self._drain)
        self.kick()  # messages may already be waiting, with the edge long gone

    def kick(self) -> None:
        """Schedule one look at the socket soon; cheap to call after every send."""
        if not self._scheduled and not self.closed and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._kicked)

    def _kicked(self) -> None:
        # Reading EVENTS re-arms the edge-triggered descriptor, and costs about half of a
        # receive that ends in EAGAIN: drain only when there is something to do.
        self._scheduled = False
        self._sent_since_look = False
        if self.closed or self.paused:
            return
        try:
            events = self.socket.getsockopt(_EVENTS)
        except zmq.ZMQError:
            return
        if events & _POLLIN or (self.want_writable and events & _POLLOUT):  # type: ignore[operator]
            self._drain()

    def pause(self) -> None:
        """Stop reading (backpressure): the peer's sends then meet the high-water mark."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.kick()

    def send(self, frames: list[bytes]) -> SendResult:
        """Send without blocking; says whether the message was queued, and if not, why."""
        sock = self.socket
        try:
            # Frame by frame with int flags: what send_multipart does, minus its per-call
            # checks. A multipart message is atomic: only its first frame can meet EAGAIN.
            last = len(frames) - 1
            for i, frame in enumerate(frames):
                flags = _NOBLOCK if i == last else _NOBLOCK_MORE
                if len(frame) < _COPY_THRESHOLD:
                    sock.send(frame, flags)
                else:
                    sock.send(frame, flags, copy=False)
        except zmq.Again:
            self.kick()
            return SendResult.FULL
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return SendResult.UNROUTABLE
            raise
        if self._scheduled:
            pass  # a look at the socket is already coming
        elif self._sent_since_look:
            self.kick()  # many sends in a row: one look after them all
        else:
            # The send may have eaten the edge of a message that just arrived. Reading
            # EVENTS now re-arms the descriptor and says whether to drain: a lone send
            # (a reply, a call on an idle connection) costs no extra loop turn.
            self._sent_since_look = True
            try:
                events = sock.getsockopt(_EVENTS)
            except zmq.ZMQError:
                return SendResult.SENT
            if events & _POLLIN or (self.want_writable and events & _POLLOUT):  # type: ignore[operator]
                self.kick()
        return SendResult.SENT

    def _drain(self) -> None:
        self._scheduled = False
        self._sent_since_look = False
        if self.closed or self.paused:
            return
        sock, on_message = self.socket, self._on_message
        read = 0
        try:
            while read < self._batch and not self.paused:
                if read == 1 and not int(sock.getsockopt(_EVENTS)) & _POLLIN:
                    # One message was all (the usual case at low load): asking EVENTS, which
                    # also re-arms the descriptor, costs a third of a receive that fails.
                    break
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                read += 1
                on_message(frames)
            else:
                if not self.paused:
                    # Yield to the loop so one busy socket cannot starve everything else.
                    self.kick()
            if (
                self.want_writable
                and self._on_writable is not None
                and int(sock.getsockopt(_EVENTS)) & _POLLOUT
            ):
                self._on_writable()
        except zmq.ZMQError as exc:
            if exc.errno == zmq.ENOTSOCK or self.closed:
                return
            log.exception("socket error while reading; reader keeps running")
            self.kick()
        finally:
            if read and self._on_drained is not None and not self.closed:
                self._on_drained()

    def close(self, linger_ms: int | None = None) -> None:
        """Stop reading and close the socket with a bounded LINGER."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.socket.FD)
        self.socket.close(linger=linger_ms)
