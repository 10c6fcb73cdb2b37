"""Connection events of a socket (connected, disconnected, handshake failed), read like messages.

A DEALER uses them to fail calls at once with "peer lost" when its connection drops,
instead of leaving them to their deadline; a ROUTER counts handshakes that failed
(an HTTP client on the port, a peer speaking another protocol).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from ._driver import SocketDriver

__all__ = ("ConnectionMonitor",)

log = logging.getLogger("zmicro.transport")

_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class ConnectionMonitor:
    """Calls ``on_event(kind, endpoint)`` with kind in {"up", "down", "handshake_failed"}."""

    def __init__(self, sock: zmq.Socket[bytes], on_event: Callable[[str, str], None]) -> None:
        self._on_event = on_event
        self._sock = sock
        monitor = sock.get_monitor_socket(_EVENTS)
        self._driver = SocketDriver(monitor, self._on_message)

    def start(self) -> None:
        self._driver.start()

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            event = parse_monitor_message(frames)
        except Exception:  # a malformed event must not stop the reader
            log.exception("unreadable monitor event")
            return
        code = event["event"]
        raw: object = event["endpoint"]
        endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)
        if code == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._on_event("up", endpoint)
        elif code == zmq.EVENT_DISCONNECTED:
            self._on_event("down", endpoint)
        elif code & (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        ):
            self._on_event("handshake_failed", endpoint)

    def close(self) -> None:
        if not self._driver.closed:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._driver.close(linger_ms=0)
