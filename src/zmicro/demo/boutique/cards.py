"""Credit card checks for the payment service: Luhn checksum, brand, expiry. Pure.

``today`` is a parameter so tests choose the date; the service passes the real one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

__all__ = (
    "ACCEPTED_BRANDS",
    "CardError",
    "CardInfo",
    "card_brand",
    "is_expired",
    "luhn_valid",
    "normalize_number",
    "validate_card",
)

ACCEPTED_BRANDS = frozenset({"visa", "mastercard"})


class CardError(ValueError):
    """The card cannot be charged; the message says why, in words a shopper understands."""


@dataclass(frozen=True, slots=True)
class CardInfo:
    brand: str
    last_four: str


def normalize_number(number: str) -> str:
    """Digits only: spaces and dashes are allowed as separators, anything else is an error."""
    digits = number.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit():
        raise CardError("the card number must contain only digits, spaces and dashes")
    if not 12 <= len(digits) <= 19:
        raise CardError(f"the card number has {len(digits)} digits; expected 12 to 19")
    return digits


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum: every second digit from the right doubled, digits summed, total % 10 == 0."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The card network from the number's prefix and length, or ``None`` if unknown."""
    n = len(digits)
    if digits.startswith("4") and n in (13, 16, 19):
        return "visa"
    if n == 16 and (51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720):
        return "mastercard"
    if n == 15 and digits[:2] in ("34", "37"):
        return "amex"
    if n in (16, 19) and (digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649):
        return "discover"
    if 16 <= n <= 19 and 3528 <= int(digits[:4]) <= 3589:
        return "jcb"
    return None


def is_expired(month: int, year: int, today: datetime.date) -> bool:
    """A card is good through the last day of its expiry month."""
    return (year, month) < (today.year, today.month)


def validate_card(number: str, month: int, year: int, cvv: int, today: datetime.date) -> CardInfo:
    """Check a card the way the payment service must; raise ``CardError`` with the reason."""
    digits = normalize_number(number)
    if not luhn_valid(digits):
        raise CardError("the card number is not valid (checksum failed)")
    brand = card_brand(digits)
    if brand not in ACCEPTED_BRANDS:
        what = "this card type" if brand is None else brand
        raise CardError(f"{what} is not accepted; use VISA or MasterCard")
    if not 1 <= month <= 12:
        raise CardError(f"expiration month must be 1 to 12, got {month}")
    if is_expired(month, year, today):
        raise CardError(f"the card expired in {month:02d}/{year}")
    if not 0 <= cvv <= 9999:
        raise CardError("the CVV must be 3 or 4 digits")
    return CardInfo(brand, digits[-4:])
