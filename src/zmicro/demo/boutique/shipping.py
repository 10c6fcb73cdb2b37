"""The shipping service: a quote in USD and a tracking id for shipped orders."""

from __future__ import annotations

import random
import string

import zmicro

from .model import Address, CartItem
from .money import Money

__all__ = ("Shipping", "quote_for")


def quote_for(items: list[CartItem]) -> Money:
    """The fixed rule: free for an empty order, else $8.99 plus $0.50 per item beyond the tenth."""
    count = sum(i.quantity for i in items)
    if count == 0:
        return Money("USD", 0, 0)
    cents = 899 + 50 * max(0, count - 10)
    return Money("USD", cents // 100, (cents % 100) * 10_000_000)


def _tracking_id() -> str:
    letters = "".join(random.choices(string.ascii_uppercase, k=2))
    digits = "".join(random.choices(string.digits, k=10))
    return f"{letters}-{digits[:5]}-{digits[5:]}"


class Shipping(zmicro.Service):
    """Quotes and shipments. Shipping is simulated: it returns a tracking id."""

    name = "shipping"

    @zmicro.rpc(idempotent=True)
    async def get_quote(self, address: Address, items: list[CartItem]) -> Money:
        """The shipping cost in USD for ``items`` to ``address``."""
        return quote_for(items)

    @zmicro.rpc
    async def ship_order(self, address: Address, items: list[CartItem]) -> str:
        """Ship ``items`` to ``address``; returns the tracking id."""
        if not items:
            raise zmicro.InvalidArgumentError("nothing to ship", details={"field": "items"})
        return _tracking_id()
