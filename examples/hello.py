"""The smallest zmicro service: run it with

    zmicro run examples/hello.py:Greeter --bind tcp://127.0.0.1:5555

and call it with

    zmicro call tcp://127.0.0.1:5555 greeter.hello who=world times=2
"""

from __future__ import annotations

import zmicro


class Greeter(zmicro.Service):
    """Says hello, and crunches numbers to show a plain-def handler off the event loop."""

    name = "greeter"

    @zmicro.rpc
    async def hello(self, who: str, times: int = 1) -> str:
        """Greet `who`, `times` times."""
        return " ".join([f"Hello, {who}!"] * times)

    @zmicro.rpc
    def crunch(self, n: int) -> int:
        """Sum of squares below n; a plain def, so it runs in the thread pool."""
        return sum(i * i for i in range(n)) % 2**63  # stays a 64-bit integer on the wire
