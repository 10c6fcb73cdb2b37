"""The currency service: the codes of the rate table, and exact conversion through EUR."""

from __future__ import annotations

import zmicro

from .data import load_rates
from .money import Money, MoneyError
from .money import convert as convert_money

__all__ = ("Currency",)


class Currency(zmicro.Service):
    """Supported currency codes and conversion between them (see ``money.convert``)."""

    name = "currency"

    def __init__(self) -> None:
        self.rates = load_rates()

    @zmicro.rpc(idempotent=True)
    async def supported_currencies(self) -> list[str]:
        """The currency codes of the rate table, in the table's order."""
        return list(self.rates)

    @zmicro.rpc(idempotent=True)
    async def convert(self, money: Money, to_code: str) -> Money:
        """``money`` expressed in ``to_code``, exact to the nano."""
        if to_code not in self.rates:
            raise zmicro.InvalidArgumentError(
                f"unsupported currency {to_code!r}", details={"field": "to_code"}
            )
        try:
            return convert_money(money, to_code, self.rates)
        except MoneyError as exc:
            raise zmicro.InvalidArgumentError(str(exc), details={"field": "money"}) from None
