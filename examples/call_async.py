"""Call the greeter from asyncio: many calls in flight on one connection.

Without an endpoint, the greeter is found by name in the registry.

    python examples/call_async.py [tcp://127.0.0.1:5555]
"""

from __future__ import annotations

import asyncio
import sys

import zmicro


async def main(endpoint: str | None) -> None:
    async with zmicro.open_client(endpoint, timeout=5.0) as client:
        print(await client.call("greeter", "hello", who="world"))
        # 100 calls at once, one connection, replies matched by request id.
        replies = await asyncio.gather(*(client.greeter.hello(who=str(i)) for i in range(100)))
        print(f"{len(replies)} replies, last: {replies[-1]}")
        try:
            await client.greeter.hello(who=42)  # wrong type: the server names the field
        except zmicro.InvalidArgumentError as exc:
            print(f"invalid argument: {exc.field}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
