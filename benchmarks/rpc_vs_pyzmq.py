"""zmicro RPC against raw pyzmq echo, side by side, server and client in separate processes.

    python benchmarks/rpc_vs_pyzmq.py [--calls 20000] [--window 128] [--repeat 3] [--pin]

Every row echoes a small dict over loopback TCP on one DEALER connection. The client
measures round trips per second with ``--window`` calls in flight, then latency with one
call in flight. Rounds alternate the rows (a new server process each time) so that
background load hits every row alike; the median of the rounds is reported, with the
ratio of each row to the raw drained pyzmq row. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
import zmq
import zmq.asyncio
from rich.console import Console
from rich.table import Table

import zmicro

PAYLOAD: dict[str, Any] = {"value": "hello", "n": 1}
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class Echo(zmicro.Service):
    """The zmicro server: ``zmicro run benchmarks/rpc_vs_pyzmq.py:Echo``."""

    name = "echo"

    @zmicro.rpc
    async def echo(self, value: Any) -> Any:
        return value


async def _serve_raw(kind: str) -> None:
    """A raw ROUTER echo server (``--serve future|drained``): frames go back unchanged."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    if kind == "future":
        asock = zmq.asyncio.Context().socket(zmq.ROUTER)
        port = asock.bind_to_random_port("tcp://127.0.0.1")

        async def echo_forever() -> None:
            while True:
                await asock.send_multipart(await asock.recv_multipart(copy=False), copy=False)

        task = loop.create_task(echo_forever())
    else:
        sock = zmq.Context().socket(zmq.ROUTER)
        port = sock.bind_to_random_port("tcp://127.0.0.1")

        def drain() -> None:  # the FD is edge-triggered: read (and answer) until EAGAIN
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)

        loop.add_reader(sock.FD, drain)
        loop.call_soon(drain)
    print(f"serving raw-{kind} on tcp://127.0.0.1:{port}", flush=True)
    await stop
    if kind == "future":
        task.cancel()


class Driver(Protocol):  # one connection; run() times `total` calls, `window` in flight
    async def run(self, total: int, window: int, lat: list[int]) -> float: ...
    async def aclose(self) -> None: ...


class _Raw:
    """Encodes the dict, the server echoes the bytes, decodes the reply; replies come in order."""

    def __init__(self, endpoint: str, ctx: zmq.Context[Any]) -> None:
        self.ctx, self.sock = ctx, ctx.socket(zmq.DEALER)
        self.sock.connect(endpoint)
        self.sent_at: deque[int] = deque()

    def _reply(self, data: bytes, lat: list[int]) -> None:
        assert _decode(data) == PAYLOAD
        lat.append(time.perf_counter_ns() - self.sent_at.popleft())

    async def aclose(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class FutureDriver(_Raw):
    """zmq.asyncio: every send and every receive is a Future."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint, zmq.asyncio.Context())

    async def run(self, total: int, window: int, lat: list[int]) -> float:
        sock, sent, t0 = self.sock, 0, time.perf_counter()
        for done in range(-min(window, total), total):
            if done >= 0:
                self._reply(await sock.recv(), lat)
            if sent < total:
                self.sent_at.append(time.perf_counter_ns())
                await sock.send(_encode(PAYLOAD))
                sent += 1
        return time.perf_counter() - t0


class DrainedDriver(_Raw):
    """A plain socket read through ``loop.add_reader`` and drained with NOBLOCK receives."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint, zmq.Context())

    async def run(self, total: int, window: int, lat: list[int]) -> float:
        loop, sock = asyncio.get_running_loop(), self.sock
        finished: asyncio.Future[None] = loop.create_future()
        sent = done = 0

        def send() -> None:
            nonlocal sent
            self.sent_at.append(time.perf_counter_ns())
            sock.send(_encode(PAYLOAD), zmq.NOBLOCK)
            sent += 1

        def drain() -> None:  # until EAGAIN, also right after our own sends: they can eat the edge
            nonlocal done
            while done < total:
                try:
                    self._reply(sock.recv(zmq.NOBLOCK), lat)
                except zmq.Again:
                    return
                done += 1
                if sent < total:
                    send()
            if not finished.done():
                finished.set_result(None)

        t0 = time.perf_counter()
        loop.add_reader(sock.FD, drain)
        try:
            while sent < min(window, total):
                send()
            drain()
            await finished
        finally:
            loop.remove_reader(sock.FD)
        return time.perf_counter() - t0


class ZmicroDriver:
    """zmicro.Client: ``window`` tasks, each making one call after another."""

    def __init__(self, endpoint: str) -> None:
        self.client = zmicro.Client(endpoint, timeout=30.0)

    async def run(self, total: int, window: int, lat: list[int]) -> float:
        call, remaining = self.client.call, total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter_ns()
                assert await call("echo", "echo", value=PAYLOAD) == PAYLOAD
                lat.append(time.perf_counter_ns() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(window, total))))
        return time.perf_counter() - t0

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True)
class Row:
    label: str
    server: list[str]
    driver: Callable[[str], Driver]
    uvloop: bool = False


_SELF = [sys.executable, os.path.abspath(__file__)]
_ZMICRO = [sys.executable, "-m", "zmicro", "run", f"{_SELF[1]}:Echo", "--bind", "tcp://127.0.0.1:0"]
_RAW = [*_SELF, "--serve"]
ROWS: dict[str, Row] = {
    "raw-future": Row("raw pyzmq, zmq.asyncio Futures", [*_RAW, "future"], FutureDriver),
    "raw-drained": Row("raw pyzmq, add_reader + drain", [*_RAW, "drained"], DrainedDriver),
    "raw-drained-uvloop": Row("raw drained, uvloop", [*_RAW, "drained", "--uvloop"], DrainedDriver, True),
    "zmicro": Row("zmicro RPC", _ZMICRO, ZmicroDriver),
    "zmicro-uvloop": Row("zmicro RPC, uvloop", [*_ZMICRO, "--uvloop"], ZmicroDriver, True),
}
BASELINE = "raw-drained"


@dataclass
class Result:
    rate: list[float] = field(default_factory=list)  # calls/s with --window in flight, one per round
    p50: list[float] = field(default_factory=list)  # µs with one call in flight
    p99: list[float] = field(default_factory=list)
    cpu_server: list[float] = field(default_factory=list)  # CPU µs per call, --window in flight
    cpu_client: list[float] = field(default_factory=list)


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of another process, from Linux's /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(ns: list[int], q: float) -> float:
    return sorted(ns)[min(len(ns) - 1, int(q * len(ns)))] / 1000.0


async def _measure(row: Row, server: int, endpoint: str, args: argparse.Namespace, out: Result) -> None:
    driver = row.driver(endpoint)
    try:
        await driver.run(args.warmup, args.window, [])
        if args.mode != "latency":
            cpu = time.process_time(), _cpu_seconds(server)
            out.rate.append(args.calls / await driver.run(args.calls, args.window, []))
            out.cpu_client.append((time.process_time() - cpu[0]) / args.calls * 1e6)
            out.cpu_server.append((_cpu_seconds(server) - cpu[1]) / args.calls * 1e6)
        if args.mode != "throughput":
            lat: list[int] = []
            await driver.run(args.latency_calls, 1, lat)
            out.p50.append(_pct(lat, 0.50))
            out.p99.append(_pct(lat, 0.99))
    finally:
        await driver.aclose()


def _start(cmd: list[str], profile: str | None) -> tuple[subprocess.Popen[str], str]:
    if profile and cmd[1:3] == ["-m", "zmicro"]:
        cmd = [sys.executable, "-m", "cProfile", "-o", profile, *cmd[1:]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "... serving NAMES on ENDPOINT"
    if " on " not in line:
        proc.kill()
        raise RuntimeError(f"server {cmd} did not start: {line!r}")
    return proc, line.rsplit(" on ", 1)[1].split()[0]


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    return __import__("uvloop").new_event_loop if use_uvloop else None


def run_rows(args: argparse.Namespace) -> dict[str, Result]:
    results = {name: Result() for name in args.rows}
    for _ in range(args.repeat):
        for name in args.rows:
            row = ROWS[name]
            proc, endpoint = _start(row.server, args.profile_server)
            try:
                with asyncio.Runner(loop_factory=_loop_factory(row.uvloop)) as runner:
                    runner.run(_measure(row, proc.pid, endpoint, args, results[name]))
            finally:
                proc.terminate()  # SIGTERM: a clean, bounded shutdown
                proc.wait(timeout=30)
    return results


def _pinned_latency(args: argparse.Namespace) -> dict[str, Result]:
    """The latency pass again with the client, the servers and their threads all on CPU 0."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pinned.json"
        cmd = ["taskset", "-c", "0", *_SELF, "--mode", "latency", "--json", str(out), "--rows"]
        cmd += [",".join(args.rows), "--repeat", str(args.repeat), "--warmup", str(args.warmup)]
        cmd += ["--latency-calls", str(args.latency_calls)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return {k: Result(**v) for k, v in json.loads(out.read_text()).items()}


def _cell(x: list[float], base: list[float] | None = None) -> str:
    if not x or (base is not None and not base):
        return "-"
    m = statistics.median(x)
    return f"{m / statistics.median(base):.2f}x" if base is not None else f"{m:,.0f}"


def _total(r: Result) -> list[float]:
    return [s + c for s, c in zip(r.cpu_server, r.cpu_client, strict=True)]


def render(args: argparse.Namespace, res: dict[str, Result], pinned: dict[str, Result]) -> Table:
    table = Table(
        title=f"echo {PAYLOAD} over loopback TCP, separate processes, median of {args.repeat} "
        f"(pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs)",
        title_justify="left",
    )
    table.add_column("row", no_wrap=True)
    cols = [f"calls/s, {args.window} in flight", "vs raw", "CPU µs/call server+client", "vs raw"]
    cols += ["p50 µs, 1 in flight", "p99 µs", "vs raw"]
    for col in cols + (["pinned p50 µs", "pinned p99 µs", "vs raw"] if pinned else []):
        table.add_column(col, justify="right")
    base, pbase = res.get(BASELINE, Result()), pinned.get(BASELINE, Result())
    for name, r in res.items():
        cpu = f"{_cell(r.cpu_server)} + {_cell(r.cpu_client)}" if r.cpu_server else "-"
        cells = [_cell(r.rate), _cell(r.rate, base.rate), cpu, _cell(_total(r), _total(base))]
        cells += [_cell(r.p50), _cell(r.p99), _cell(r.p50, base.p50)]
        if pinned:
            p = pinned.get(name, Result())
            cells += [_cell(p.p50), _cell(p.p99), _cell(p.p50, pbase.p50)]
        table.add_row(ROWS[name].label, *cells)
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000, help="calls per throughput measurement")
    ap.add_argument("--latency-calls", type=int, default=5_000, help="calls per latency measurement")
    ap.add_argument("--window", type=int, default=128, help="calls in flight when measuring throughput")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--warmup", type=int, default=2_000, help="untimed calls on each new connection")
    ap.add_argument("--rows", type=lambda s: s.split(","), default=list(ROWS), help=",".join(ROWS))
    ap.add_argument("--mode", choices=("all", "throughput", "latency"), default="all")
    ap.add_argument("--pin", action="store_true", help="also measure latency with all processes on CPU 0")
    ap.add_argument("--json", help="write the per-round results to this file")
    ap.add_argument("--profile-server", metavar="FILE", help="run zmicro servers under cProfile into FILE")
    ap.add_argument("--serve", choices=("future", "drained"), help=argparse.SUPPRESS)
    ap.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if set(args.rows) - set(ROWS):
        ap.error(f"unknown rows in {args.rows}; choose from {', '.join(ROWS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        with asyncio.Runner(loop_factory=_loop_factory(args.uvloop)) as runner:
            runner.run(_serve_raw(args.serve))
        return 0
    results = run_rows(args)
    pinned = _pinned_latency(args) if args.pin and args.mode != "throughput" else {}
    if args.json:
        Path(args.json).write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=1))
    Console(width=None if sys.stdout.isatty() else 160).print(render(args, results, pinned))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
