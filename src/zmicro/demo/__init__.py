"""The demos. ``zmicro demo`` runs the Online Boutique (``demo.boutique``); this module
holds ``zmicro bench``: one greeter service in its own process, driven hard.

The bench exercises the path every user takes (a separate server process, TCP on
loopback, one client connection with many calls in flight) and reports throughput,
latency and failures; any failure makes the exit code 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from .. import _service
from .._client import Client, open_client
from .._errors import CallError

__all__ = ("Greeter", "run_bench")


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


@dataclass
class _Phase:
    name: str
    calls: int = 0
    failures: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3


def start_server(target: str = "zmicro.demo:Greeter") -> tuple[subprocess.Popen[str], str]:
    """Start ``zmicro run TARGET`` on a free port; return the process and its endpoint."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zmicro",
            "run",
            target,
            "--bind",
            "tcp://127.0.0.1:0",
            "--grace",
            "5",
            "--registry",
            "none",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "zmicro: serving NAMES on ENDPOINT"
    if " on " not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.rsplit(" on ", 1)[1].split()[0]


async def _drive(client: Client, phase: _Phase, total: int, concurrency: int, method: str) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                if method == "hello":
                    await client.greeter.hello(who="demo", times=2)
                else:
                    await client.greeter.crunch(n=2000)
            except CallError as exc:
                phase.failures += 1
                phase.errors[exc.code] = phase.errors.get(exc.code, 0) + 1
            phase.latencies.append(time.perf_counter() - t0)
            phase.calls += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - t0


async def _main(endpoint: str, calls: int, concurrency: int) -> list[_Phase]:
    phases = [
        _Phase(f"hello, {concurrency} in flight"),
        _Phase("hello, 1 in flight"),
        _Phase("crunch (thread pool), 16 in flight"),
    ]
    async with open_client(endpoint, timeout=10.0) as client:
        await client.call("_zmicro", "ping")
        await _drive(client, phases[0], calls, concurrency, "hello")
        await _drive(client, phases[1], max(200, calls // 20), 1, "hello")
        await _drive(client, phases[2], max(100, calls // 50), 16, "crunch")
    return phases


def run_bench(*, calls: int = 20_000, concurrency: int = 128, console: Console | None = None) -> int:
    console = console or Console()
    console.print("[bold]zmicro bench[/]: starting the greeter service in its own process ...")
    proc, endpoint = start_server()
    try:
        console.print(f"service up at {endpoint}; driving calls over one connection ...")
        phases = asyncio.run(_main(endpoint, calls, concurrency))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -9
    table = Table(title="zmicro bench: RPC over TCP loopback, separate processes", title_justify="left")
    for col in ("phase", "calls", "failures", "calls/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for ph in phases:
        table.add_row(
            ph.name,
            str(ph.calls),
            str(ph.failures),
            f"{ph.calls / ph.seconds:,.0f}",
            f"{ph.pct(0.5):.3f}",
            f"{ph.pct(0.99):.3f}",
        )
    console.print(table)
    failures = sum(ph.failures for ph in phases)
    for ph in phases:
        if ph.errors:
            console.print(f"[red]{ph.name}: errors {ph.errors}[/]")
    console.print(f"server exited with code {code} after SIGTERM")
    if failures or code != 0:
        console.print("[red bold]bench FAILED[/]")
        return 1
    console.print("[green bold]bench OK[/]: zero failures")
    return 0
