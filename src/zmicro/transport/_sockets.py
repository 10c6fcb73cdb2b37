"""ZeroMQ context and sockets with zmicro's options: bounded everything, heartbeats, LINGER.

This package is the only place in zmicro that imports ``zmq``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import zmq

from .._errors import ConfigurationError

__all__ = (
    "MIN_LIBZMQ",
    "SocketOptions",
    "bind",
    "get_context",
    "libzmq_version",
    "new_dealer",
    "new_router",
    "require_libzmq",
)

MIN_LIBZMQ = (4, 3, 5)


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketOptions:
    """Options every zmicro socket gets. Defaults favour bounded memory and fast failure."""

    max_message_bytes: int = 4 * 1024 * 1024
    """Larger messages make libzmq drop the connection; zmicro checks a smaller limit itself."""
    send_hwm: int = 10_000
    recv_hwm: int = 10_000
    linger_ms: int = 500
    """How long ``close`` may wait to flush; bounded so shutdown never hangs."""
    heartbeat_ivl_ms: int = 1_000
    heartbeat_timeout_ms: int = 3_000
    """A peer silent this long at the ZMTP level (dead, frozen, partitioned) is disconnected."""
    handshake_ivl_ms: int = 5_000
    """A peer that has not completed the ZMTP handshake by then (an HTTP client, say) is dropped."""
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2_000


def libzmq_version() -> tuple[int, int, int]:
    major, minor, patch = zmq.zmq_version_info()
    return (major, minor, patch)


def require_libzmq(found: tuple[int, int, int] | None = None) -> None:
    """Refuse to run on a libzmq with known bugs that zmicro's guarantees depend on."""
    found = libzmq_version() if found is None else found
    if found < MIN_LIBZMQ:
        have = ".".join(map(str, found))
        need = ".".join(map(str, MIN_LIBZMQ))
        raise ConfigurationError(
            f"zmicro needs libzmq >= {need}, but pyzmq is linked against libzmq {have}; "
            "install a pyzmq wheel (which bundles a current libzmq) or upgrade libzmq"
        )


_lock = threading.Lock()
_context: zmq.Context[zmq.Socket[bytes]] | None = None
_context_pid = 0


def get_context() -> zmq.Context[zmq.Socket[bytes]]:
    """The process's context, created anew after a fork (a context never crosses one)."""
    global _context, _context_pid
    with _lock:
        if _context is None or _context_pid != os.getpid() or _context.closed:
            require_libzmq()
            _context = zmq.Context()
            _context_pid = os.getpid()
        return _context


def _apply(sock: zmq.Socket[bytes], options: SocketOptions) -> None:
    sock.setsockopt(zmq.LINGER, options.linger_ms)
    sock.setsockopt(zmq.SNDHWM, options.send_hwm)
    sock.setsockopt(zmq.RCVHWM, options.recv_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, options.max_message_bytes)
    sock.setsockopt(zmq.HEARTBEAT_IVL, options.heartbeat_ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, options.heartbeat_timeout_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, options.heartbeat_timeout_ms)
    sock.setsockopt(zmq.HANDSHAKE_IVL, options.handshake_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, options.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, options.reconnect_ivl_max_ms)


def new_router(options: SocketOptions) -> zmq.Socket[bytes]:
    """A server socket. Unroutable replies raise instead of vanishing, so they can be counted."""
    sock = get_context().socket(zmq.ROUTER)
    _apply(sock, options)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


def new_dealer(options: SocketOptions) -> zmq.Socket[bytes]:
    """A client socket. IMMEDIATE: never queue a request for a peer that is not connected."""
    sock = get_context().socket(zmq.DEALER)
    _apply(sock, options)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    return sock


def bind(sock: zmq.Socket[bytes], endpoint: str) -> str:
    """Bind and return the concrete endpoint (the real port when ``:0`` or ``:*`` was asked)."""
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        endpoint = endpoint[:-1] + "*"
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        hint = "" if "://" in endpoint else f" (endpoints are written tcp://{endpoint})"
        raise ConfigurationError(f"cannot bind {endpoint}: {exc}{hint}") from None
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)
