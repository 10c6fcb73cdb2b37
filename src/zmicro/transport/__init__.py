"""Sockets and their asyncio driver: the only part of zmicro that imports ``zmq``."""

from __future__ import annotations

from ._driver import SendResult as SendResult
from ._driver import SocketDriver as SocketDriver
from ._monitor import ConnectionMonitor as ConnectionMonitor
from ._sockets import (
    MIN_LIBZMQ as MIN_LIBZMQ,
)
from ._sockets import (
    SocketOptions as SocketOptions,
)
from ._sockets import (
    bind as bind,
)
from ._sockets import (
    get_context as get_context,
)
from ._sockets import (
    libzmq_version as libzmq_version,
)
from ._sockets import (
    new_dealer as new_dealer,
)
from ._sockets import (
    new_router as new_router,
)
from ._sockets import (
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
