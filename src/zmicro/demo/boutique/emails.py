"""The email service: renders the order confirmation; logging it is the sending.

The checkout publishes "order.placed"; one instance of this service gets each event
(group delivery) and turns it into a task on the work queue (``email.confirmation``,
keyed by the order id so it is stored once). A pool of workers sends it: a plain
``def`` handler, four at a time, acknowledged when sent, retried if it raises. The
queue delivers at least once, so the handler drops a repeated delivery of an order.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import msgspec

import zmicro

from .model import OrderIds, OrderPlaced
from .money import format_money, multiply
from .wiring import make_client

__all__ = ("CONFIRMATION_TASK", "EmailService", "SentConfirmations", "render_confirmation")

CONFIRMATION_TASK = "email.confirmation"
ORDER_PLACED = "order.placed"  # the checkout's event (named here too: no import between services)

log = logging.getLogger("zmicro.demo.boutique.email")


class SentConfirmations(msgspec.Struct, frozen=True):
    total: int
    duplicates: int


def render_confirmation(event: OrderPlaced) -> str:
    """The confirmation email as plain text."""
    order = event.order
    lines = [
        f"To: {event.email}",
        f"Subject: Your Online Boutique order {order.order_id}",
        "",
        "Thank you for your order!",
        "",
        f"Order:     {order.order_id}",
        f"Tracking:  {order.shipping_tracking_id}",
        "",
    ]
    for line in order.items:
        subtotal = multiply(line.cost, line.item.quantity)
        lines.append(f"  {line.item.quantity:>3} x {line.item.product_id}  {format_money(subtotal):>14}")
    a = order.shipping_address
    lines += [
        f"  Shipping       {format_money(order.shipping_cost):>14}",
        f"  Total          {format_money(order.total):>14}",
        "",
        "Ships to:",
        f"  {a.street_address}",
        f"  {a.zip_code} {a.city}, {a.state}",
        f"  {a.country}",
    ]
    return "\n".join(lines)


class EmailService(zmicro.Service):
    """Order confirmations; ``sent_confirmations`` counts them, ``confirmed`` tells which orders got one.

    It remembers the last ``keep_recent`` order ids (to drop repeated deliveries).
    """

    name = "email"
    keep_recent = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: deque[str] = deque(maxlen=self.keep_recent)
        self._seen: set[str] = set()
        self._total = 0
        self._duplicates = 0

    async def on_start(self) -> None:
        self.client = make_client()

    async def on_stop(self) -> None:
        await self.client.aclose()

    @zmicro.event_handler(ORDER_PLACED)
    async def on_order_placed(self, event: OrderPlaced) -> None:
        """An order was placed: queue its confirmation (stored once per order id)."""
        await self.client.submit(CONFIRMATION_TASK, event, key=event.order.order_id, _timeout=30.0)

    @zmicro.task(CONFIRMATION_TASK, concurrency=4)
    def send_confirmation(self, event: OrderPlaced) -> None:
        """Send the confirmation for one placed order (at most once per order id)."""
        order_id = event.order.order_id
        with self._lock:
            if order_id in self._seen:
                self._duplicates += 1
                return
            if len(self._recent) == self._recent.maxlen:
                self._seen.discard(self._recent[0])
            self._recent.append(order_id)
            self._seen.add(order_id)
            self._total += 1
        log.info("sending order confirmation\n%s", render_confirmation(event))

    @zmicro.rpc(idempotent=True)
    async def sent_confirmations(self) -> SentConfirmations:
        """How many confirmations went out, and how many repeated deliveries were dropped."""
        with self._lock:
            return SentConfirmations(self._total, self._duplicates)

    @zmicro.rpc(idempotent=True)
    async def confirmed(self, order_ids: OrderIds) -> list[str]:
        """Those of ``order_ids`` whose confirmation went out (among the most recent ones)."""
        with self._lock:
            return [oid for oid in order_ids if oid in self._seen]
