"""Services used by the tests (also loaded by ``zmicro run tests/services.py:Name``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import zmicro


class Probe(zmicro.Service):
    """Handlers that sleep, block, raise and record what happened to them."""

    name = "probe"
    max_concurrency = 64
    max_queued = 256

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.release = asyncio.Event()
        self.release_thread = threading.Event()
        self.seen_remaining: list[float] = []
        self.seen_trace: list[str | None] = []

    @zmicro.rpc
    async def echo(self, value: Any) -> Any:
        return value

    @zmicro.rpc
    async def delayed(self, i: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return i

    @zmicro.rpc
    async def sleep(self, seconds: float, tag: str = "") -> str:
        self.started.append(tag)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.append(tag)
            raise
        return tag

    @zmicro.rpc
    async def wait_release(self, tag: str = "") -> str:
        self.started.append(tag)
        await self.release.wait()
        return tag

    @zmicro.rpc
    def block(self, seconds: float) -> float:
        """A plain def that blocks its thread."""
        time.sleep(seconds)
        return seconds

    @zmicro.rpc
    async def fail(self, message: str) -> None:
        raise ValueError(message)

    @zmicro.rpc
    async def bad_result(self) -> Any:
        return object()

    @zmicro.rpc
    async def remaining(self) -> float:
        left = zmicro.remaining_time()
        assert left is not None
        self.seen_remaining.append(left)
        return left


class Front(zmicro.Service):
    """Calls Probe from inside a handler (nested calls inherit the deadline)."""

    name = "front"

    def __init__(self, backend: str = "") -> None:
        self.backend = backend

    async def on_start(self) -> None:
        self.client = zmicro.Client(self.backend)

    async def on_stop(self) -> None:
        await self.client.aclose()

    @zmicro.rpc
    async def relay_remaining(self) -> float:
        return float(await self.client.probe.remaining())

    @zmicro.rpc
    async def relay_sleep(self, seconds: float) -> str:
        return str(await self.client.probe.sleep(seconds=seconds, tag="nested", _timeout=60))


class Slow(zmicro.Service):
    """For process tests: a call that takes a while."""

    name = "slow"

    @zmicro.rpc
    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @zmicro.rpc
    async def hello(self) -> str:
        return "hi"


class Tagged(zmicro.Service):
    """One instance among several: says which one it is, after an optional delay."""

    name = "tagged"

    def __init__(self, tag: str, delay: float = 0.0) -> None:
        self.tag = tag
        self.delay = delay
        self.runs = 0

    @zmicro.rpc(idempotent=True)
    async def whoami(self) -> str:
        self.runs += 1
        await asyncio.sleep(self.delay)
        return self.tag

    @zmicro.rpc
    async def bump(self) -> int:
        """Not idempotent: every run counts."""
        self.runs += 1
        await asyncio.sleep(self.delay)
        return self.runs


class Sizes(zmicro.Service):
    """Results and arguments of any size, and a parameter named like a client option."""

    name = "sizes"

    @zmicro.rpc
    async def blob(self, size: int) -> bytes:
        return b"x" * size

    @zmicro.rpc
    async def length(self, data: bytes) -> int:
        return len(data)

    @zmicro.rpc
    async def keys(self, args: dict[str, int]) -> list[str]:
        return sorted(args)
