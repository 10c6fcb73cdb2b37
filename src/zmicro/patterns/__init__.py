"""Thin asyncio drivers, one per messaging pattern, each reading its socket with one reader."""

from __future__ import annotations

from ._rpc_client import RpcConnection as RpcConnection
from ._rpc_server import Dispatcher as Dispatcher
from ._rpc_server import RpcServer as RpcServer

__all__ = ("Dispatcher", "RpcConnection", "RpcServer")
