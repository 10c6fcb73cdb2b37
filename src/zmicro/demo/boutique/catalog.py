"""The product catalog service: the nine products of ``data/products.json``, read-only."""

from __future__ import annotations

from typing import Annotated

import msgspec

import zmicro

from .data import load_products
from .model import Product

__all__ = ("ProductCatalog",)


class ProductCatalog(zmicro.Service):
    """List products, get one by id, search names and descriptions."""

    name = "productcatalog"

    def __init__(self) -> None:
        self.products = load_products()
        self.by_id = {p.id: p for p in self.products}

    @zmicro.rpc(idempotent=True)
    async def list_products(self) -> list[Product]:
        """Every product, in catalogue order."""
        return list(self.products)

    @zmicro.rpc(idempotent=True)
    async def get_product(self, id: str) -> Product:
        """One product; an unknown id is an invalid argument (field ``id``)."""
        product = self.by_id.get(id)
        if product is None:
            raise zmicro.InvalidArgumentError(f"no product with id {id!r}", details={"field": "id"})
        return product

    @zmicro.rpc(idempotent=True)
    async def search_products(self, query: Annotated[str, msgspec.Meta(max_length=200)]) -> list[Product]:
        """Products whose name or description contains ``query``, ignoring case."""
        q = query.casefold()
        return [p for p in self.products if q in p.name.casefold() or q in p.description.casefold()]
