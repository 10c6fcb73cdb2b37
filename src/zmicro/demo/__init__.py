"""The demos. ``zmicro demo`` runs the Online Boutique (``demo.boutique``); the
``Greeter`` here is the smallest service, used by the docs and tests.
"""

from __future__ import annotations

from .. import _service

__all__ = ("Greeter",)


class Greeter(_service.Service):
    """The demo service."""

    name = "greeter"

    @_service.rpc
    async def hello(self, who: str, times: int = 1) -> str:
        """Greet `who`, `times` times."""
        return " ".join([f"Hello, {who}!"] * times)

    @_service.rpc
    def crunch(self, n: int) -> int:
        """Sum of squares below n, in the thread pool."""
        return sum(i * i for i in range(n)) % 2**63  # stays a 64-bit integer on the wire
