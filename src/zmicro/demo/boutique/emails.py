"""The email service: renders the order confirmation; logging it is the sending.

``order_placed`` has the shape of an event handler (one argument: the "order
placed" event) and is a plain ``def``, so it runs on the server's worker threads.
It drops a repeated delivery of the same order, as a handler fed by an
at-least-once queue must.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import msgspec

import zmicro

from .model import OrderIds, OrderPlaced
from .money import format_money, multiply

__all__ = ("EmailService", "SentConfirmations", "render_confirmation")

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

    @zmicro.rpc
    def order_placed(self, event: OrderPlaced) -> None:
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
