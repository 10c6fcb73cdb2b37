"""The payment service: checks the card and "charges" it (no money moves)."""

from __future__ import annotations

import datetime
import logging
import uuid

import zmicro

from .cards import CardError, validate_card
from .model import CreditCard
from .money import Money, to_nanos

__all__ = ("Payment",)

log = logging.getLogger("zmicro.demo.boutique.payment")


class Payment(zmicro.Service):
    """Charge a VISA or MasterCard that passes the Luhn check and has not expired."""

    name = "payment"

    @zmicro.rpc
    async def charge(self, amount: Money, credit_card: CreditCard) -> str:
        """Charge ``amount``; returns a transaction id. A card that cannot be used is an invalid argument."""
        try:
            info = validate_card(
                credit_card.number,
                credit_card.expiration_month,
                credit_card.expiration_year,
                credit_card.cvv,
                datetime.date.today(),
            )
        except CardError as exc:
            raise zmicro.InvalidArgumentError(
                f"card declined: {exc}", details={"field": "credit_card"}
            ) from None
        if to_nanos(amount) <= 0:
            raise zmicro.InvalidArgumentError(
                "the amount to charge must be positive", details={"field": "amount"}
            )
        transaction_id = str(uuid.uuid4())
        log.info("charged %s card ending %s: %s", info.brand, info.last_four, transaction_id)
        return transaction_id
