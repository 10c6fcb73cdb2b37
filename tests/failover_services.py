"""The service the failover tests run in real processes, and a small client for partition tests.

Served with ``zmicro run tests/failover_services.py:Failover``. Every answer carries the
pid of the process that gave it, so a test can tell which instance answered.

Run as a script (``python tests/failover_services.py ENDPOINT``) it is a client that calls
``failover.slow`` at a fixed endpoint in a loop, from a few concurrent workers, and prints
one JSON line per outcome until SIGTERM (or a bounded time) ends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import zmicro


class Failover(zmicro.Service):
    """Methods with known costs and known retry safety, each telling which process ran it."""

    name = "failover"
    max_concurrency = 64
    max_queued = 256

    def __init__(self) -> None:
        self.recorded = 0

    @zmicro.rpc(idempotent=True)
    async def pid(self) -> int:
        """The pid of this instance."""
        return os.getpid()

    @zmicro.rpc(idempotent=True)
    async def lookup(self, n: int, delay: float = 0.0) -> dict[str, int]:
        """Safe to repeat: reads nothing, changes nothing."""
        if delay > 0:
            await asyncio.sleep(delay)
        return {"n": n, "pid": os.getpid()}

    @zmicro.rpc
    async def record(self, n: int, delay: float = 0.0) -> dict[str, int]:
        """Not safe to repeat: counts every call it runs."""
        if delay > 0:
            await asyncio.sleep(delay)
        self.recorded += 1
        return {"n": n, "pid": os.getpid(), "recorded": self.recorded}

    @zmicro.rpc
    async def slow(self, seconds: float) -> int:
        """Not safe to repeat; takes ``seconds`` on the event loop without blocking it."""
        await asyncio.sleep(seconds)
        return os.getpid()

    @zmicro.rpc
    def burn(self, seconds: float) -> dict[str, int]:
        """A plain def that keeps a CPU busy (and holds the GIL most of the time) for ``seconds``."""
        end = time.monotonic() + seconds
        loops = 0
        while time.monotonic() < end:
            for _ in range(1000):
                loops += 1
        return {"pid": os.getpid(), "loops": loops}


async def _partition_client(
    endpoint: str, workers: int, *, seconds: float, deadline: float, limit: float
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(limit, stop.set)  # never outlive the test that started it by much

    async with zmicro.open_client({"failover": endpoint}, timeout=deadline) as client:

        async def worker(w: int) -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                t0 = time.monotonic()
                try:
                    await client.call("failover", "slow", seconds=seconds)
                    outcome = "ok"
                except zmicro.CallError as exc:
                    outcome = type(exc).__name__
                t1 = time.monotonic()
                line = {"worker": w, "i": i, "t0": t0, "t1": t1, "outcome": outcome}
                print(json.dumps(line), flush=True)
                if outcome != "ok":
                    await asyncio.sleep(0.1)  # a failed call comes back at once: do not spin

        await asyncio.gather(*(worker(w) for w in range(workers)))


if __name__ == "__main__":
    _endpoint = sys.argv[1]
    _workers = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    asyncio.run(_partition_client(_endpoint, _workers, seconds=1.0, deadline=6.0, limit=90.0))
