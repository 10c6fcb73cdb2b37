"""Sockets and their asyncio driver: the only part of zmicro that imports ``zmq``."""

from __future__ import annotations

from ._driver import SendResult as SendResult, SocketDriver as SocketDriver
from ._monitor import ConnectionMonitor as ConnectionMonitor
from ._sockets import (
    MIN_LIBZMQ as MIN_LIBZMQ,
    SocketOptions as SocketOptions,
    bind as bind,
    get_context as get_context,
    libzmq_version as libzmq_version,
    new_dealer as new_dealer,
    new_router as new_router,
    require_libzmq as require_libzmq,
)

__all__ = (
    "MIN_LIBZMQ",
    "ConnectionMonitor",
    "SendResult",
    "SocketDriver",
    "SocketOptions",
    "bind",
    "get_context",
    "libzmq_version",
    "new_dealer",
    "new_router",
    "require_libzmq",
)
