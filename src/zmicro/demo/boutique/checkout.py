"""The checkout service: places an order by calling cart, catalog, currency, shipping and payment.

After the order is paid, shipped and the cart emptied, it publishes an
"order.placed" event; it does not know who listens (the email service does).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import OrderedDict
from typing import Annotated

import msgspec

import zmicro

from .model import Address, Cart, CreditCard, Order, OrderIds, OrderItem, OrderPlaced, PlacedOrder, Product
from .money import Money, add, multiply, sum_money
from .wiring import convert, make_client

__all__ = ("ORDER_PLACED", "Checkout", "OrderLog")

ORDER_PLACED = "order.placed"

log = logging.getLogger("zmicro.demo.boutique.checkout")


class OrderLog(msgspec.Struct, frozen=True):
    placed: int
    announce_failures: int
    recent: list[PlacedOrder]
    """The last orders placed, newest last (as many as asked for)."""


class Checkout(zmicro.Service):
    """Place orders; ``order_log`` lists what was placed (for checks and the demo's report)."""

    name = "checkout"
    keep_recent = 100_000
    # "wait": an order event is never dropped for a slow subscriber, only delayed (bounded).
    events = zmicro.EventPublisher(policy="wait", wait_timeout=5.0)

    def __init__(self) -> None:
        self._recent: OrderedDict[str, str] = OrderedDict()  # order id -> user id, oldest first
        self._placed = 0
        self._announce_failures = 0
        self._subscribers_ready = False

    async def on_start(self) -> None:
        self.client = make_client()

    async def on_stop(self) -> None:
        await self.client.aclose()

    async def _price(self, product_id: str, currency: str) -> Money:
        product = convert(await self.client.productcatalog.get_product(id=product_id), Product)
        return convert(await self.client.currency.convert(money=product.price_usd, to_code=currency), Money)

    @zmicro.rpc
    async def place_order(
        self, user_id: str, user_currency: str, address: Address, email: str, credit_card: CreditCard
    ) -> Order:
        """Charge the card for the user's cart plus shipping, ship it, empty the cart, announce it."""
        c = self.client
        cart = convert(await c.cart.get_cart(user_id=user_id), Cart)
        if not cart.items:
            raise zmicro.InvalidArgumentError("the cart is empty", details={"field": "user_id"})
        prices, quote = await asyncio.gather(
            asyncio.gather(*(self._price(item.product_id, user_currency) for item in cart.items)),
            c.shipping.get_quote(address=address, items=cart.items),
        )
        shipping_cost = convert(await c.currency.convert(money=quote, to_code=user_currency), Money)
        items = [OrderItem(item, price) for item, price in zip(cart.items, prices, strict=True)]
        subtotal = sum_money(user_currency, (multiply(line.cost, line.item.quantity) for line in items))
        total = add(subtotal, shipping_cost)
        await c.payment.charge(amount=total, credit_card=credit_card)
        tracking_id = str(await c.shipping.ship_order(address=address, items=cart.items))
        await c.cart.empty_cart(user_id=user_id)
        order = Order(str(uuid.uuid4()), tracking_id, shipping_cost, address, items, total)
        self._placed += 1
        self._recent[order.order_id] = user_id
        if len(self._recent) > self.keep_recent:
            self._recent.popitem(last=False)
        await self.announce_order_placed(OrderPlaced(email, user_id, order))
        return order

    async def announce_order_placed(self, event: OrderPlaced) -> None:
        """Publish "order.placed". The order stands even if nobody hears of it (counted)."""
        try:
            if not self._subscribers_ready:
                # Once: the subscribers the registry lists (the email service) are connected.
                with contextlib.suppress(TimeoutError):
                    await self.events.wait_ready(5.0)
                self._subscribers_ready = True
            if await self.events.publish(ORDER_PLACED, event) == 0:
                self._announce_failures += 1
                log.warning(
                    "order %s placed, but nobody subscribes to %s", event.order.order_id, ORDER_PLACED
                )
        except zmicro.CallError as exc:
            self._announce_failures += 1
            log.warning("order %s placed, but announcing it failed: %s", event.order.order_id, exc)

    @zmicro.rpc(idempotent=True)
    async def order_log(self, limit: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 100) -> OrderLog:
        """How many orders were placed, and the last ``limit`` with their users."""
        recent = list(itertools.islice(reversed(self._recent.items()), limit))[::-1]
        return OrderLog(self._placed, self._announce_failures, [PlacedOrder(o, u) for o, u in recent])

    @zmicro.rpc(idempotent=True)
    async def find_orders(self, order_ids: OrderIds) -> list[PlacedOrder]:
        """Those of ``order_ids`` that were placed here (among the most recent ones)."""
        return [PlacedOrder(oid, self._recent[oid]) for oid in order_ids if oid in self._recent]
