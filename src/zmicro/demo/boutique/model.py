"""The messages the boutique's services exchange: msgspec structs, validated on every call.

``Product`` and ``Money`` keep the camelCase field names of the data files
(``priceUsd``, ``currencyCode``) so that the files decode straight into them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .money import Money

__all__ = (
    "Ad",
    "Address",
    "Cart",
    "CartItem",
    "CreditCard",
    "Order",
    "OrderIds",
    "OrderItem",
    "OrderPlaced",
    "PlacedOrder",
    "Product",
    "Quantity",
)

Quantity = Annotated[int, msgspec.Meta(ge=1, le=1000)]
OrderIds = Annotated[list[str], msgspec.Meta(max_length=1000)]
"""A batch of order ids in one query (bounded, so that a query and its answer stay small)."""
_Text = Annotated[str, msgspec.Meta(max_length=200)]


class Product(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    name: str
    description: str
    picture: str
    price_usd: Money
    categories: list[str]


class CartItem(msgspec.Struct, frozen=True):
    product_id: str
    quantity: Quantity


class Cart(msgspec.Struct, frozen=True):
    user_id: str
    items: list[CartItem]


class Address(msgspec.Struct, frozen=True):
    street_address: _Text
    city: _Text
    state: _Text
    country: _Text
    zip_code: _Text


class CreditCard(msgspec.Struct, frozen=True):
    number: Annotated[str, msgspec.Meta(max_length=40)]
    cvv: int
    expiration_year: int
    expiration_month: int


class OrderItem(msgspec.Struct, frozen=True):
    """A cart line as ordered: the price of one, in the shopper's currency."""

    item: CartItem
    cost: Money


class Order(msgspec.Struct, frozen=True):
    order_id: str
    shipping_tracking_id: str
    shipping_cost: Money
    shipping_address: Address
    items: list[OrderItem]
    total: Money


class OrderPlaced(msgspec.Struct, frozen=True):
    """The "order placed" event: what the confirmation email (and anyone else) needs."""

    email: str
    user_id: str
    order: Order


class PlacedOrder(msgspec.Struct, frozen=True):
    """One line of checkout's order log (used by the demo's consistency checks)."""

    order_id: str
    user_id: str


class Ad(msgspec.Struct, frozen=True):
    redirect_url: str
    text: str
