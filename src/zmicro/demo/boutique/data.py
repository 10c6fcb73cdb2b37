"""The reference data shipped in ``data/``: the product catalogue and the EUR rate table."""

from __future__ import annotations

import functools
import json
from fractions import Fraction
from importlib import resources

import msgspec

from .model import Product
from .money import parse_rates

__all__ = ("load_products", "load_rates")


class _Catalog(msgspec.Struct):
    products: list[Product]


def _read(name: str) -> bytes:
    return (resources.files(__package__) / "data" / name).read_bytes()


@functools.cache
def load_products() -> tuple[Product, ...]:
    return tuple(msgspec.json.decode(_read("products.json"), type=_Catalog).products)


@functools.cache
def load_rates() -> dict[str, Fraction]:
    table = json.loads(_read("currency_conversion.json"))
    return parse_rates({str(k): str(v) for k, v in table.items()})
