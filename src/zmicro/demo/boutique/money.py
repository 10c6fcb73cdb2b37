"""Money as the boutique's data carries it: a currency code, whole units and nanos.

Pure and exact: amounts are handled as integer nanos (billionths of a unit) and
rates as ``Fraction``, so nothing goes through a float. A valid amount has
``|nanos| < 10**9`` and units and nanos of the same sign (either may be zero),
which is what every function here returns.

Conversion goes through EUR with the table's rates (how many of a currency one
EUR buys): ``amount / rate[from] * rate[to]``, computed exactly and rounded once
to the nearest nano, halves away from zero, so converting ``-x`` gives exactly
``-(converting x)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Annotated

import msgspec

__all__ = (
    "NANOS_PER_UNIT",
    "Money",
    "MoneyError",
    "add",
    "convert",
    "format_money",
    "from_nanos",
    "is_valid",
    "multiply",
    "negate",
    "parse_rates",
    "sum_money",
    "to_nanos",
    "zero",
)

NANOS_PER_UNIT = 1_000_000_000
_MAX_NANOS = NANOS_PER_UNIT - 1

Nanos = Annotated[int, msgspec.Meta(ge=-_MAX_NANOS, le=_MAX_NANOS)]
CurrencyCode = Annotated[str, msgspec.Meta(min_length=3, max_length=3, pattern="^[A-Z]{3}$")]


class Money(msgspec.Struct, frozen=True, rename="camel"):
    """An amount of one currency: ``units`` whole units plus ``nanos`` billionths."""

    currency_code: CurrencyCode
    units: int
    nanos: Nanos = 0


class MoneyError(ValueError):
    """An amount that is not valid, or two amounts that cannot be combined."""


def is_valid(m: Money) -> bool:
    if not -_MAX_NANOS <= m.nanos <= _MAX_NANOS:
        return False
    return not ((m.units > 0 and m.nanos < 0) or (m.units < 0 and m.nanos > 0))


def _check(m: Money) -> None:
    if not is_valid(m):
        raise MoneyError(
            f"invalid amount {m.currency_code} units={m.units} nanos={m.nanos}: "
            "nanos must be within ±999999999 and have the sign of units"
        )


def to_nanos(m: Money) -> int:
    """The whole amount in nanos (exact)."""
    _check(m)
    return m.units * NANOS_PER_UNIT + m.nanos


def from_nanos(currency_code: str, total: int) -> Money:
    """The valid ``Money`` for ``total`` nanos: units and nanos carry the same sign."""
    sign = -1 if total < 0 else 1
    units, nanos = divmod(abs(total), NANOS_PER_UNIT)
    return Money(currency_code, sign * units, sign * nanos)


def zero(currency_code: str) -> Money:
    return Money(currency_code, 0, 0)


def add(a: Money, b: Money) -> Money:
    if a.currency_code != b.currency_code:
        raise MoneyError(f"cannot add {a.currency_code} and {b.currency_code}")
    return from_nanos(a.currency_code, to_nanos(a) + to_nanos(b))


def negate(m: Money) -> Money:
    return from_nanos(m.currency_code, -to_nanos(m))


def multiply(m: Money, n: int) -> Money:
    return from_nanos(m.currency_code, to_nanos(m) * n)


def sum_money(currency_code: str, amounts: Iterable[Money]) -> Money:
    total = zero(currency_code)
    for m in amounts:
        total = add(total, m)
    return total


def parse_rates(table: Mapping[str, str]) -> dict[str, Fraction]:
    """The rate table as exact fractions: ``{"USD": "1.1305"}`` -> ``{"USD": Fraction(2261, 2000)}``."""
    rates: dict[str, Fraction] = {}
    for code, text in table.items():
        rate = Fraction(text)
        if rate <= 0:
            raise MoneyError(f"rate of {code} must be positive, got {text!r}")
        rates[code] = rate
    return rates


def _round_half_away(x: Fraction) -> int:
    sign = -1 if x < 0 else 1
    return sign * int(abs(x) + Fraction(1, 2))


def convert(m: Money, to_code: str, rates: Mapping[str, Fraction]) -> Money:
    """``m`` in ``to_code``, through EUR, rounded once to the nearest nano."""
    try:
        rate_from, rate_to = rates[m.currency_code], rates[to_code]
    except KeyError as exc:
        raise MoneyError(f"unsupported currency {exc.args[0]!r}") from None
    total = to_nanos(m)
    if m.currency_code == to_code:
        return from_nanos(to_code, total)
    return from_nanos(to_code, _round_half_away(Fraction(total) * rate_to / rate_from))


_SYMBOLS = {"USD": "$", "EUR": "€", "JPY": "¥", "GBP": "£", "TRY": "₺", "CAD": "CA$"}


def format_money(m: Money) -> str:
    """For people: ``$1,234.56`` (cents truncated, as the original shop shows prices)."""
    total = to_nanos(m)
    units, nanos = divmod(abs(total), NANOS_PER_UNIT)
    symbol = _SYMBOLS.get(m.currency_code, m.currency_code + " ")
    return f"{'-' if total < 0 else ''}{symbol}{units:,}.{nanos // 10_000_000:02d}"
