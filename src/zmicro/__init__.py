"""zmicro: microservices in Python over ZeroMQ.

Write a plain class, mark its methods, serve it, call it by name::

    import zmicro

    class Greeter(zmicro.Service):
        name = "greeter"

        @zmicro.rpc
        async def hello(self, who: str) -> str:
            return f"Hello, {who}!"

    async with zmicro.open_server(Greeter(), bind="tcp://127.0.0.1:0") as server:
        async with zmicro.open_client(server.endpoint) as client:
            print(await client.greeter.hello(who="world"))
"""

from __future__ import annotations

from ._client import (
    BlockingClient as BlockingClient,
    Client as Client,
    connect as connect,
    open_client as open_client,
)
from ._context import remaining as remaining_time
from ._errors import (
    CallError as CallError,
    ClientClosedError as ClientClosedError,
    ConfigurationError as ConfigurationError,
    DeadlineExceededError as DeadlineExceededError,
    InvalidArgumentError as InvalidArgumentError,
    NoSuchMethodError as NoSuchMethodError,
    NoSuchServiceError as NoSuchServiceError,
    OverloadedError as OverloadedError,
    PeerLostError as PeerLostError,
    ProtocolError as ProtocolError,
    RemoteError as RemoteError,
    RemoteProtocolError as RemoteProtocolError,
    UnavailableError as UnavailableError,
    ZmicroError as ZmicroError,
)
from ._server import Server as Server, open_server as open_server, run as run
from ._service import Service as Service, rpc as rpc
from ._version import __version__ as __version__
from .transport import SocketOptions as SocketOptions

__all__ = (
    "BlockingClient",
    "CallError",
    "Client",
    "ClientClosedError",
    "ConfigurationError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "NoSuchMethodError",
    "NoSuchServiceError",
    "OverloadedError",
    "PeerLostError",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "Server",
    "Service",
    "SocketOptions",
    "UnavailableError",
    "ZmicroError",
    "__version__",
    "connect",
    "open_client",
    "open_server",
    "remaining_time",
    "rpc",
    "run",
)
