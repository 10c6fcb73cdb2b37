"""What every benchmark row shares: processes, timing, CPU and memory readings, percentiles.

A row measures one point (say "RPC, 128 calls in flight") by starting the processes it
needs and returning a dict of numbers. Rows never print; the suite collects, repeats,
takes medians and renders. Server and client always run in separate processes and talk
over loopback TCP.

Process protocol, shared by every row module (``python -m benchmarks.<module> ROLE ...``):

- a long-running role (a server, a subscriber, a worker) prints one line
  ``READY {json}`` on stdout when it is ready, then runs until SIGTERM;
- a measuring role (a client) prints one line ``RESULT {json}`` at the end and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAYLOAD: dict[str, Any] = {
    "name": "zmicro benchmark",
    "id": 123456,
    "tags": ["a", "bb", "ccc"],
    "price": 19.99,
}
"""The small typed argument every RPC row sends and gets back (about 100 bytes as JSON)."""

_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    seconds: float = 3.0
    """Measured time per point."""
    warmup: float = 0.5
    """Untimed load before each measured point, on the same connection."""
    repeat: int = 3
    overload_seconds: float = 10.0


@dataclass(frozen=True)
class Point:
    """One column group of a pattern: e.g. ``Point("rpc", "128 in flight", inflight=128)``."""

    pattern: str
    label: str
    params: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.params[key]


Measure = Callable[[Point, Settings], dict[str, float]]


@dataclass(frozen=True)
class Row:
    """One contender in one pattern."""

    pattern: str
    """"rpc", "events", "tasks" or "overload"."""
    key: str
    """Short name for ``--rows``, unique in its pattern (e.g. "zmicro", "grpc")."""
    label: str
    measure: Measure
    floor: bool = False
    """The reference of its pattern: every other row's ratio is taken to it."""
    requires: tuple[str, ...] = ()
    """Modules that must import (the bench extra); the row is skipped, with the reason, if not."""
    available: Callable[[], str | None] | None = None
    """Extra check; returns why the row cannot run here (e.g. "no RabbitMQ server"), or None."""
    zmicro: bool = False
    """A zmicro row (checked against the targets), as opposed to a raw floor or a peer."""
    hint: str = "pip install -e .[bench]"
    """How to get what ``requires`` names."""

    def unavailable(self) -> str | None:
        import importlib.util

        for mod in self.requires:
            # Found, not imported: some peers patch the standard library when imported.
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"{mod} not installed; {self.hint}"
        return self.available() if self.available is not None else None


# -- processes -----------------------------------------------------------------


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{_ROOT}{os.pathsep}{path}" if path else str(_ROOT),
        "ZMICRO_REGISTRY": "none",
    }


class Proc:
    """A long-running helper process that printed ``READY {json}``; stopped with SIGTERM."""

    def __init__(self, cmd: list[str], timeout: float = 30.0) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env())
        self.info: dict[str, Any] = {}
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = _readline(self.proc, deadline)
            if line is None:
                self.stop()
                raise RuntimeError(f"{' '.join(cmd)} did not become ready")
            if line.startswith("READY "):
                self.info = json.loads(line[6:])
                break
            if line.startswith("zmicro: serving ") and " on " in line:  # ``zmicro run`` itself
                self.info = {"endpoint": line.rsplit(" on ", 1)[1].split()[0]}
                break

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _readline(proc: subprocess.Popen[str], deadline: float) -> str | None:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return None
            line = proc.stdout.readline()
            if not line:
                return None
            return line.rstrip("\n")
    finally:
        sel.close()


def module_cmd(module: str, *args: object, python: list[str] | None = None) -> list[str]:
    """``python -m benchmarks.<module> args...`` (``python`` may prefix e.g. taskset)."""
    return [*(python or [sys.executable]), "-m", f"benchmarks.{module}", *map(str, args)]


def start(module: str, *args: object, timeout: float = 30.0) -> Proc:
    return Proc(module_cmd(module, *args), timeout)


@contextlib.contextmanager
def started(module: str, *args: object, count: int = 1, timeout: float = 30.0) -> Iterator[list[Proc]]:
    """Start ``count`` copies of a long-running role; stop them all on exit."""
    procs: list[Proc] = []
    try:
        for _ in range(count):
            procs.append(start(module, *args, timeout=timeout))
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def run_client(module: str, *args: object, timeout: float = 120.0) -> dict[str, Any]:
    """Run a measuring role to its end and return its ``RESULT`` dict."""
    cmd = module_cmd(module, *args)
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode} without a result:\n{done.stderr[-2000:]}")


def run_rpc_client(
    module: str,
    key: str,
    server: Proc,
    point: Point,
    settings: Settings,
    *address: object,
    slack: float = 60.0,
) -> dict[str, Any]:
    """One RPC point: ``python -m benchmarks.<module> client KEY ADDRESS...`` against ``server``."""
    return run_client(
        module,
        "client",
        key,
        *address,
        "--inflight",
        point["inflight"],
        "--seconds",
        settings.seconds,
        "--warmup",
        settings.warmup,
        "--server-pid",
        server.pid,
        timeout=settings.warmup + settings.seconds + slack,
    )


def ready(info: dict[str, Any]) -> None:
    """Called by a long-running role once it can serve."""
    print("READY " + json.dumps(info), flush=True)


def result(values: dict[str, Any]) -> None:
    """Called by a measuring role at its end."""
    print("RESULT " + json.dumps(values), flush=True)


def run_until_terminated(
    main: Callable[[asyncio.Future[None]], Awaitable[None]], *, uvloop: bool = False
) -> None:
    """Run ``main(stop)`` on a new loop; ``stop`` resolves on SIGTERM or SIGINT."""

    async def wrapper() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        await main(stop)

    with asyncio.Runner(loop_factory=loop_factory(uvloop)) as runner:
        runner.run(wrapper())


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    import uvloop

    return uvloop.new_event_loop  # type: ignore[no-any-return]


# -- readings ------------------------------------------------------------------


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) of a process, from Linux's /proc."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int | None = None, *, peak: bool = False) -> int:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), from /proc."""
    key = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class Window:
    """Counts operations and their latencies inside the measured window only."""

    warmup: float
    seconds: float
    started: float = 0.0
    measuring_from: float = 0.0
    until: float = 0.0
    ops: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    cpu_from: dict[int, float] = field(default_factory=dict)
    cpu_used: dict[int, float] = field(default_factory=dict)
    pids: tuple[int, ...] = ()

    def begin(self, *pids: int) -> None:
        self.pids = (os.getpid(), *pids)
        self.started = time.monotonic()
        self.measuring_from = self.started + self.warmup
        self.until = self.measuring_from + self.seconds
        self._cpu_started = False

    def done(self, now: float) -> bool:
        """Call after each operation with ``time.monotonic()``; True once time is up."""
        if not self._cpu_started and now >= self.measuring_from:
            self._cpu_started = True
            self.cpu_from = {pid: cpu_seconds(pid) for pid in self.pids}
        if now >= self.until:
            if not self.cpu_used and self._cpu_started:
                self.cpu_used = {pid: cpu_seconds(pid) - t for pid, t in self.cpu_from.items()}
            return True
        return False

    def record(self, start_ns: int, end_ns: int, now: float) -> None:
        if self.measuring_from <= now < self.until:
            self.ops += 1
            self.latencies_ns.append(end_ns - start_ns)

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies_ns)
        out = {
            "rate": self.ops / self.seconds,
            "p50_us": percentile(lat, 0.50) / 1000 if lat else float("nan"),
            "p99_us": percentile(lat, 0.99) / 1000 if lat else float("nan"),
            "ops": float(self.ops),
        }
        if self.ops and self.cpu_used:
            own = self.cpu_used.get(os.getpid(), 0.0)
            others = sum(v for k, v in self.cpu_used.items() if k != os.getpid())
            out["cpu_client_us"] = own / self.ops * 1e6
            out["cpu_server_us"] = others / self.ops * 1e6
        return out


async def drive(
    call: Callable[[], Awaitable[object]],
    inflight: int,
    warmup: float,
    seconds: float,
    *,
    server_pids: tuple[int, ...] = (),
) -> dict[str, float]:
    """``inflight`` tasks each awaiting ``call()`` back to back, for warmup + seconds.

    Used by every asyncio client row, so all of them are timed the same way; each
    call's latency counts only if it finished inside the measured window.
    """
    win = Window(warmup, seconds)
    win.begin(*server_pids)
    clock, ns = time.monotonic, time.perf_counter_ns

    async def worker() -> None:
        while True:
            t0 = ns()
            await call()
            now = clock()
            win.record(t0, ns(), now)
            if win.done(now):
                return

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return win.summary()


RPC_POINTS = [Point("rpc", f"{n} in flight", {"inflight": n}) for n in (1, 16, 128)]
EVENT_POINTS = [Point("events", f"{n} subscriber{'s' if n > 1 else ''}", {"subscribers": n}) for n in (1, 4)]
TASK_POINTS = [Point("tasks", "2 workers", {"workers": 2})]
OVERLOAD_POINTS = [Point("overload", "10x capacity", {"factor": 10})]
POINTS = {"rpc": RPC_POINTS, "events": EVENT_POINTS, "tasks": TASK_POINTS, "overload": OVERLOAD_POINTS}
