"""Helpers for testing zmicro services, shipped to users (also a pytest plugin).

With zmicro installed, pytest gets two fixtures:

``zmicro_server``
    ``server = await zmicro_server(MyService(), max_message_bytes=...)`` serves the
    services on an ephemeral loopback port; stopped at the end of the test.
``zmicro_client``
    ``client = await zmicro_client(server.endpoint)``; closed at the end of the test.

Outside pytest, ``serve(...)`` is the same as ``open_server`` on a free loopback port.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from ._client import Client
from ._server import Server
from ._service import Service

__all__ = ("serve",)


@contextlib.asynccontextmanager
async def serve(*services: Service | type[Service], **options: Any) -> AsyncIterator[Server]:
    """Serve ``services`` on ``tcp://127.0.0.1`` with a free port for the block's duration."""
    server = Server(services, bind=options.pop("bind", "tcp://127.0.0.1:0"), **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=options.get("grace", 1.0))


ServerFactory = Callable[..., Awaitable[Server]]
ClientFactory = Callable[..., Awaitable[Client]]

try:  # the fixtures need pytest and pytest-asyncio; the helpers above do not
    import pytest_asyncio
except ImportError:  # pragma: no cover - plain installs without the test extra
    pass
else:

    @pytest_asyncio.fixture
    async def zmicro_server() -> AsyncIterator[ServerFactory]:
        servers: list[Server] = []

        async def start(*services: Service | type[Service], **options: Any) -> Server:
            options.setdefault("grace", 1.0)
            server = Server(services, bind=options.pop("bind", "tcp://127.0.0.1:0"), **options)
            await server.start()
            servers.append(server)
            return server

        yield start
        for server in reversed(servers):
            await server.stop()

    @pytest_asyncio.fixture
    async def zmicro_client() -> AsyncIterator[ClientFactory]:
        clients: list[Client] = []

        async def make(endpoints: str | Mapping[str, str], **options: Any) -> Client:
            client = Client(endpoints, **options)
            clients.append(client)
            return client

        yield make
        for client in clients:
            await client.aclose()
