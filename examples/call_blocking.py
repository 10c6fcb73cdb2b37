"""Call the greeter from a plain script, no asyncio in sight.

Without an endpoint, the greeter is found by name in the registry.

    python examples/call_blocking.py [tcp://127.0.0.1:5555]
"""

from __future__ import annotations

import sys

import zmicro


def main(endpoint: str | None) -> None:
    with zmicro.connect(endpoint, timeout=5.0) as client:
        print(client.greeter.hello(who="script", times=2))
        print(client.greeter.crunch(n=1000))
        try:
            client.greeter.crunch(n=3_000_000, _timeout=0.01)
        except zmicro.DeadlineExceededError:
            print("deadline exceeded, as asked")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
