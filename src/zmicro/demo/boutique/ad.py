"""The ad service: short text ads matching the categories in view, else one at random."""

from __future__ import annotations

import random

import zmicro

from .model import Ad

__all__ = ("ADS", "AdService")

ADS: dict[str, list[Ad]] = {
    "clothing": [Ad("/product/66VCHSJNUP", "Tank top for sale. 20% off.")],
    "accessories": [Ad("/product/1YMWWN1N4O", "Watch for sale. Buy one, get second kit for free")],
    "footwear": [Ad("/product/L9ECAV7KIM", "Loafers for sale. Buy one, get second one for free")],
    "hair": [Ad("/product/2ZYFJ3GM2N", "Hairdryer for sale. 50% off.")],
    "decor": [Ad("/product/0PUK6V6EV0", "Candle holder for sale. 30% off.")],
    "kitchen": [
        Ad("/product/9SIQT8TOJO", "Bamboo glass jar for sale. 10% off."),
        Ad("/product/6E92ZMYYFZ", "Mug for sale. Buy two, get third one for free"),
    ],
}


class AdService(zmicro.Service):
    """Ads by context keyword (product categories)."""

    name = "ad"
    max_ads = 2

    @zmicro.rpc(idempotent=True)
    async def get_ads(self, context_keys: list[str]) -> list[Ad]:
        """Ads for the given categories; a random one when none match."""
        found = [ad for key in dict.fromkeys(context_keys) for ad in ADS.get(key.casefold(), [])]
        if not found:
            found = [random.choice([ad for ads in ADS.values() for ad in ads])]
        return found[: self.max_ads]
