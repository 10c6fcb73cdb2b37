"""RPC, an event and a task, found by name: the README's example, runnable.

    zmicro run examples/shop.py:Orders examples/shop.py:Emails examples/shop.py:Audit \
        zmicro.queue:TaskQueue
    zmicro call orders.place item=book qty=2

`zmicro run` starts the embedded registry if none is running; services find each
other (and the task queue) by name through it.
"""

from __future__ import annotations

import logging
import uuid

import msgspec

import zmicro

log = logging.getLogger("shop")


class Placed(msgspec.Struct):
    id: str
    item: str
    qty: int


class Orders(zmicro.Service):
    name = "orders"
    events = zmicro.EventPublisher(policy="wait")  # never drop an order event; wait (bounded)

    @zmicro.rpc
    async def place(self, item: str, qty: int = 1) -> str:
        """Place an order and announce it."""
        if qty < 1:
            raise zmicro.InvalidArgumentError("qty must be at least 1", details={"field": "qty"})
        oid = uuid.uuid4().hex[:8]
        await self.events.publish("order.placed", Placed(oid, item, qty))
        return oid


class Emails(zmicro.Service):
    name = "emails"

    async def on_start(self) -> None:
        self.client = zmicro.Client()  # finds the task queue by name

    async def on_stop(self) -> None:
        await self.client.aclose()

    @zmicro.event_handler("order.placed")  # one instance of "emails" gets each event
    async def on_placed(self, event: Placed) -> None:
        await self.client.submit("email.send", event, key=event.id)  # durable; once per order

    @zmicro.task("email.send", concurrency=4)  # a pool of four; acked when it returns
    def send(self, event: Placed) -> None:
        log.warning("confirmation for order %s: %d x %s", event.id, event.qty, event.item)


class Audit(zmicro.Service):
    name = "audit"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @zmicro.event_handler("order.", broadcast=True)  # every instance, every "order.*" event
    async def record(self, topic: str, event: dict[str, object], info: zmicro.EventInfo) -> None:
        if info.gap:
            log.warning("missed %d events before this one", info.gap)
        self.seen.append(f"{topic} {event['id']}")

    @zmicro.rpc(idempotent=True)
    async def recent(self) -> list[str]:
        return self.seen[-10:]
