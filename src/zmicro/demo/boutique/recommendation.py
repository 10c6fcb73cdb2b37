"""The recommendation service: a few other products than the ones in view."""

from __future__ import annotations

import random

import zmicro

from .model import Product
from .wiring import convert, make_client

__all__ = ("Recommendation",)


class Recommendation(zmicro.Service):
    """Up to five product ids the shopper is not looking at, picked at random from the catalog."""

    name = "recommendation"
    max_results = 5

    async def on_start(self) -> None:
        self.client = make_client()

    async def on_stop(self) -> None:
        await self.client.aclose()

    @zmicro.rpc(idempotent=True)
    async def list_recommendations(self, user_id: str, product_ids: list[str]) -> list[str]:
        """Product ids other than ``product_ids``, at most five, in random order."""
        products = convert(await self.client.productcatalog.list_products(), list[Product])
        in_view = set(product_ids)
        others = [p.id for p in products if p.id not in in_view]
        return random.sample(others, min(self.max_results, len(others)))
