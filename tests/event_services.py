"""Services used by the event tests (also run as processes: ``zmicro run tests/event_services.py:Name``)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

import zmicro


class Orders(zmicro.Service):
    """Publishes; ``burst`` waits for the expected subscribers, then publishes ``n`` events."""

    name = "orders"
    events = zmicro.EventPublisher(policy="drop")

    @zmicro.rpc
    async def burst(
        self, n: int, expect: dict[str, int] | None = None, topic: str = "order.placed", size: int = 0
    ) -> int:
        await self.events.wait_ready(timeout=15.0, expect=expect)
        sent = 0
        blob = "x" * size
        for i in range(n):
            event: dict[str, Any] = {"id": i, "total": i * 10}
            if size:
                event["blob"] = blob
            sent += await self.events.publish(topic, event)
        return sent


class Placed(msgspec.Struct):
    id: int
    total: int


class Tally(zmicro.Service):
    """Counts what it gets: group events on "order.", broadcast events on "audit."."""

    name = "tally"

    def __init__(self) -> None:
        self.group: list[int] = []
        self.broadcast: list[int] = []
        self.infos: list[zmicro.EventInfo] = []

    @zmicro.event_handler("order.")
    async def on_order(self, event: Placed, info: zmicro.EventInfo) -> None:
        self.group.append(event.id)
        self.infos.append(info)

    @zmicro.event_handler("order.", broadcast=True)
    async def on_any_order(self, topic: str, event: Any) -> None:
        self.broadcast.append(event["id"])

    @zmicro.rpc
    async def counts(self) -> dict[str, int]:
        return {"group": len(self.group), "broadcast": len(self.broadcast)}


class Gate(zmicro.Service):
    """A subscriber that can be held: its one handler waits while the gate is closed."""

    name = "gate"
    event_concurrency = 1
    event_queue = 4

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.got: list[int] = []
        self.gaps: list[int] = []

    @zmicro.event_handler("", broadcast=True)
    async def on_event(self, event: dict[str, Any], info: zmicro.EventInfo) -> None:
        await self.open.wait()
        self.got.append(event["i"])
        self.gaps.append(info.gap)


class Fast(zmicro.Service):
    name = "fast"

    def __init__(self) -> None:
        self.got: list[int] = []

    @zmicro.event_handler("", broadcast=True)
    async def on_event(self, event: dict[str, Any]) -> None:
        self.got.append(event["i"])


class Recorder(zmicro.Service):
    """Records every event it gets and the gaps it was told about."""

    name = "recorder"

    def __init__(self) -> None:
        self.got = 0
        self.gaps = 0
        self.restarts = 0

    @zmicro.event_handler("", broadcast=True)
    async def on_event(self, info: zmicro.EventInfo) -> None:
        self.got += 1
        self.gaps += info.gap
        self.restarts += info.publisher_restarted

    @zmicro.rpc
    async def counts(self) -> dict[str, int]:
        return {"got": self.got, "gaps": self.gaps, "restarts": self.restarts}
