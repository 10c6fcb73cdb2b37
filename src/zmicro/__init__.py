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

# Work queues: registers the task worker and queue statistics components with the server.
from . import (
    _event_components,  # noqa: F401  # registers the event components with the server
    _worker,  # noqa: F401  # imported for its registration only
)
from ._client import (
    BlockingClient as BlockingClient,
)
from ._client import (
    Client as Client,
)
from ._client import (
    connect as connect,
)
from ._client import (
    open_client as open_client,
)
from ._context import remaining as remaining_time
from ._errors import (
    CallError as CallError,
)
from ._errors import (
    ClientClosedError as ClientClosedError,
)
from ._errors import (
    ConfigurationError as ConfigurationError,
)
from ._errors import (
    DeadlineExceededError as DeadlineExceededError,
)
from ._errors import (
    InvalidArgumentError as InvalidArgumentError,
)
from ._errors import (
    NoSuchMethodError as NoSuchMethodError,
)
from ._errors import (
    NoSuchServiceError as NoSuchServiceError,
)
from ._errors import (
    OverloadedError as OverloadedError,
)
from ._errors import (
    PeerLostError as PeerLostError,
)
from ._errors import (
    ProtocolError as ProtocolError,
)
from ._errors import (
    RemoteError as RemoteError,
)
from ._errors import (
    RemoteProtocolError as RemoteProtocolError,
)
from ._errors import SlowSubscriberError as SlowSubscriberError
from ._errors import (
    UnavailableError as UnavailableError,
)
from ._errors import (
    ZmicroError as ZmicroError,
)
from ._events import EventInfo as EventInfo
from ._events import EventPublisher as EventPublisher
from ._events import Publisher as Publisher
from ._events import event_handler as event_handler
from ._server import Server as Server
from ._server import open_server as open_server
from ._server import run as run
from ._service import Service as Service
from ._service import rpc as rpc
from ._tasks import task as task
from ._version import __version__ as __version__
from .queue import TaskQueue as TaskQueue
from .transport import SocketOptions as SocketOptions

__all__ = (
    "BlockingClient",
    "CallError",
    "Client",
    "ClientClosedError",
    "ConfigurationError",
    "DeadlineExceededError",
    "EventInfo",
    "EventPublisher",
    "InvalidArgumentError",
    "NoSuchMethodError",
    "NoSuchServiceError",
    "OverloadedError",
    "PeerLostError",
    "ProtocolError",
    "Publisher",
    "RemoteError",
    "RemoteProtocolError",
    "Server",
    "Service",
    "SlowSubscriberError",
    "SocketOptions",
    "TaskQueue",
    "UnavailableError",
    "ZmicroError",
    "__version__",
    "connect",
    "event_handler",
    "open_client",
    "open_server",
    "remaining_time",
    "rpc",
    "run",
    "task",
)
