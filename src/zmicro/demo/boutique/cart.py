"""The cart service: each user's cart, in memory (one instance holds all carts)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated

import msgspec

import zmicro

from .model import Cart, CartItem, Quantity

__all__ = ("CartService",)

_UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
_ProductId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class CartService(zmicro.Service):
    """Add items, read a cart, empty it. Bounded: the oldest carts go when there are too many."""

    name = "cart"
    max_carts = 100_000
    max_lines = 100
    max_quantity = 1000

    def __init__(self) -> None:
        # user -> product -> quantity; recently used carts at the end
        self.carts: OrderedDict[str, dict[str, int]] = OrderedDict()

    @zmicro.rpc
    async def add_item(self, user_id: _UserId, product_id: _ProductId, quantity: Quantity) -> None:
        """Add ``quantity`` of a product to the user's cart (adds up with what is there)."""
        lines = self.carts.setdefault(user_id, {})
        self.carts.move_to_end(user_id)
        if product_id not in lines and len(lines) >= self.max_lines:
            raise zmicro.InvalidArgumentError(f"a cart holds at most {self.max_lines} different products")
        total = lines.get(product_id, 0) + quantity
        if total > self.max_quantity:
            raise zmicro.InvalidArgumentError(
                f"at most {self.max_quantity} of one product per cart", details={"field": "quantity"}
            )
        lines[product_id] = total
        while len(self.carts) > self.max_carts:
            self.carts.popitem(last=False)

    @zmicro.rpc(idempotent=True)
    async def get_cart(self, user_id: _UserId) -> Cart:
        """The user's cart (empty if the user has none)."""
        lines = self.carts.get(user_id, {})
        return Cart(user_id, [CartItem(pid, qty) for pid, qty in lines.items()])

    @zmicro.rpc(idempotent=True)
    async def empty_cart(self, user_id: _UserId) -> None:
        """Remove every item from the user's cart."""
        self.carts.pop(user_id, None)
