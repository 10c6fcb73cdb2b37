"""Thin asyncio drivers, one per messaging pattern, each reading its socket with one reader."""

from __future__ import annotations

from ._events_pub import EventPublisherCore as EventPublisherCore
from ._events_pub import Policy as Policy
from ._events_sub import EventSource as EventSource
from ._events_sub import Received as Received
from ._events_sub import SubscriberIdentity as SubscriberIdentity
from ._rpc_client import RpcConnection as RpcConnection
from ._rpc_server import Dispatcher as Dispatcher
from ._rpc_server import RpcServer as RpcServer

__all__ = (
    "Dispatcher",
    "EventPublisherCore",
    "EventSource",
    "Policy",
    "Received",
    "RpcConnection",
    "RpcServer",
    "SubscriberIdentity",
)
