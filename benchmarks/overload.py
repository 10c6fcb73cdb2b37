"""Overload rows: a server with a known capacity C, driven open-loop at ``factor`` x C.

    python -m benchmarks.overload server --kind zmicro|aiohttp
    python -m benchmarks.overload client --kind ... --endpoint ... --server-pid ...

The handler sleeps ``_HANDLER_SECONDS`` and at most ``_SLOTS`` run at once, so the
capacity is ``_SLOTS / _HANDLER_SECONDS`` calls/s. The client sends on a fixed
schedule whatever the answers (open loop), each call with a short deadline, and
samples the resident memory of both processes. A server with admission control
answers the excess "overloaded" at once and stays flat; one without queues it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import zmicro
from benchmarks import _harness as harness
from benchmarks._harness import Point, Row, Settings

_HANDLER_SECONDS = 0.005
_SLOTS = 2
_CAPACITY = _SLOTS / _HANDLER_SECONDS
"""Calls per second the server can complete: 400."""
_QUEUED = 8
"""zmicro's admission queue: waiting there costs at most _QUEUED / _CAPACITY = 20 ms."""
_DEADLINE = 0.1
"""Per-call deadline (seconds): a call not answered by then is of no use to its caller."""
_MAX_INFLIGHT = 1000
"""The client's own bound on calls in flight; at 10x it needs about rate x deadline = 400."""
_SAMPLE_EVERY = 0.25


class Slow(zmicro.Service):
    """A fixed-time handler behind a small admission limit."""

    name = "slow"
    max_concurrency = _SLOTS
    max_queued = _QUEUED

    @zmicro.rpc
    async def work(self, x: int) -> int:
        await asyncio.sleep(_HANDLER_SECONDS)
        return x


# -- servers ---------------------------------------------------------------------


async def _serve_zmicro(stop: asyncio.Future[None]) -> None:
    server = zmicro.Server([Slow()])
    await server.start()
    try:
        harness.ready({"endpoint": server.endpoint, "capacity": _CAPACITY})
        await stop
    finally:
        await server.stop(1.0)


async def _serve_aiohttp(stop: asyncio.Future[None]) -> None:
    from aiohttp import web

    # The same limit on handlers running at once, but no bound on those waiting for it.
    slots = asyncio.Semaphore(_SLOTS)
    running = 0

    async def work(request: web.Request) -> web.Response:
        nonlocal running
        body = await request.json()
        running += 1
        try:
            async with slots:
                await asyncio.sleep(_HANDLER_SECONDS)
        finally:
            running -= 1
        return web.json_response(body["x"])

    async def backlog(request: web.Request) -> web.Response:
        return web.json_response(running)

    app = web.Application()
    app.router.add_post("/work", work)
    app.router.add_get("/backlog", backlog)
    # The backlog of handlers would take minutes to drain: do not wait for it on SIGTERM.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024, shutdown_timeout=0.5)
    await site.start()
    port = runner.addresses[0][1]
    try:
        harness.ready({"endpoint": f"http://127.0.0.1:{port}/work", "capacity": _CAPACITY})
        await stop
    finally:
        await runner.cleanup()


# -- the open-loop client ------------------------------------------------------------


class _Caller:
    """One way of making a call; ``call`` returns the outcome: ok, overloaded, deadline or other."""

    async def call(self, x: int) -> str:
        raise NotImplementedError

    async def backlog(self) -> float:
        """Handlers the server holds (running or waiting) right now."""
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class _ZmicroCaller(_Caller):
    def __init__(self, endpoint: str) -> None:
        self.client = zmicro.Client(endpoint, timeout=_DEADLINE)

    async def call(self, x: int) -> str:
        try:
            await self.client.call(Slow.name, "work", x=x)
        except zmicro.OverloadedError:
            return "overloaded"
        except zmicro.DeadlineExceededError:
            return "deadline"
        except zmicro.CallError:
            return "other"
        return "ok"

    async def backlog(self) -> float:
        stats = await self.client.call("_zmicro", "stats", _timeout=5.0)
        slow = stats["services"][Slow.name]
        return float(slow["active"] + slow["queued"])

    async def aclose(self) -> None:
        await self.client.aclose()


class _AiohttpCaller(_Caller):
    def __init__(self, endpoint: str) -> None:
        import aiohttp

        self.endpoint = endpoint
        self.aiohttp = aiohttp
        # As many connections as calls in flight: the pool must not queue calls for us.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=_MAX_INFLIGHT),
            timeout=aiohttp.ClientTimeout(total=_DEADLINE),
        )

    async def call(self, x: int) -> str:
        try:
            async with self.session.post(self.endpoint, json={"x": x}) as resp:
                await resp.read()
                if resp.status == 200:
                    return "ok"
                return "overloaded" if resp.status in (429, 503) else "other"
        except TimeoutError:
            return "deadline"
        except self.aiohttp.ClientError:
            return "other"

    async def backlog(self) -> float:
        url = self.endpoint.rsplit("/", 1)[0] + "/backlog"
        async with self.session.get(url, timeout=self.aiohttp.ClientTimeout(total=5.0)) as resp:
            return float(await resp.json())

    async def aclose(self) -> None:
        await self.session.close()


async def _client(args: argparse.Namespace) -> dict[str, float]:
    caller: _Caller = _ZmicroCaller(args.endpoint) if args.kind == "zmicro" else _AiohttpCaller(args.endpoint)
    outcomes: Counter[str] = Counter()
    ok_ns: list[int] = []
    reject_ns: list[int] = []
    inflight: set[asyncio.Task[None]] = set()
    rss: list[tuple[float, int, int]] = []  # (seconds since start, server, client)
    loop = asyncio.get_running_loop()
    start = time.monotonic()

    async def one(x: int) -> None:
        t0 = time.perf_counter_ns()
        outcome = await caller.call(x)
        outcomes[outcome] += 1
        if outcome == "ok":
            ok_ns.append(time.perf_counter_ns() - t0)
        elif outcome == "overloaded":
            reject_ns.append(time.perf_counter_ns() - t0)

    async def sample_rss() -> None:
        while True:
            with contextlib.suppress(OSError):
                rss.append(
                    (time.monotonic() - start, harness.rss_bytes(args.server_pid), harness.rss_bytes())
                )
            await asyncio.sleep(_SAMPLE_EVERY)

    sampler = loop.create_task(sample_rss())
    sent = skipped = 0
    try:
        while (elapsed := time.monotonic() - start) < args.seconds:
            # Open loop: every call due by now goes out, however the earlier ones fared.
            due = int(elapsed * args.rate)
            while sent + skipped < due:
                if len(inflight) >= _MAX_INFLIGHT:
                    skipped += 1
                    continue
                sent += 1
                task = loop.create_task(one(sent))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            await asyncio.sleep(0.001)
        # What the server still holds once the load stops: bounded with admission control.
        backlog = await caller.backlog()
        if inflight:
            await asyncio.wait(inflight, timeout=_DEADLINE + 5.0)
        for task in inflight:
            task.cancel()
        await asyncio.sleep(_SAMPLE_EVERY)  # one more memory sample after the run
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await caller.aclose()
    return {**_summary(args, outcomes, sent, skipped, ok_ns, reject_ns, rss), "server_backlog_end": backlog}


def _summary(
    args: argparse.Namespace,
    outcomes: Counter[str],
    sent: int,
    skipped: int,
    ok_ns: list[int],
    reject_ns: list[int],
    rss: list[tuple[float, int, int]],
) -> dict[str, float]:
    mb = 1024 * 1024
    after_first = [r for r in rss if r[0] >= 1.0] or rss
    base_server, base_client = after_first[0][1], after_first[0][2]
    peak_server = max(r[1] for r in rss)
    peak_client = max(r[2] for r in rss)
    ok_sorted: list[float] = sorted(map(float, ok_ns))
    reject_sorted: list[float] = sorted(map(float, reject_ns))
    n = max(1, sent)
    return {
        "rate": outcomes["ok"] / args.seconds,
        "capacity": _CAPACITY,
        "offered_rate": sent / args.seconds,
        "sent": float(sent),
        "client_skipped": float(skipped),
        "ok_share": outcomes["ok"] / n,
        "overloaded_share": outcomes["overloaded"] / n,
        "deadline_share": outcomes["deadline"] / n,
        "other_share": outcomes["other"] / n,
        "unfinished_share": (sent - sum(outcomes.values())) / n,
        "ok_p50_ms": harness.percentile(ok_sorted, 0.5) / 1e6,
        "ok_p99_ms": harness.percentile(ok_sorted, 0.99) / 1e6,
        "reject_p50_ms": harness.percentile(reject_sorted, 0.5) / 1e6,
        "rss_server_peak_mb": peak_server / mb,
        "rss_client_peak_mb": peak_client / mb,
        "rss_server_growth_mb": (peak_server - base_server) / mb,
        "rss_client_growth_mb": (peak_client - base_client) / mb,
    }


def _measure(kind: str, point: Point, settings: Settings) -> dict[str, float]:
    with harness.started("overload", "server", "--kind", kind) as (server,):
        return harness.run_client(
            "overload",
            "client",
            "--kind",
            kind,
            "--endpoint",
            server.info["endpoint"],
            "--server-pid",
            server.pid,
            "--rate",
            point["factor"] * server.info["capacity"],
            "--seconds",
            settings.overload_seconds,
            timeout=60 + settings.overload_seconds,
        )


def measure_zmicro(point: Point, settings: Settings) -> dict[str, float]:
    return _measure("zmicro", point, settings)


def measure_aiohttp(point: Point, settings: Settings) -> dict[str, float]:
    return _measure("aiohttp", point, settings)


ROWS: list[Row] = [
    Row("overload", "zmicro", "zmicro, 10x capacity", measure_zmicro, floor=True, zmicro=True),
    Row(
        "overload",
        "aiohttp",
        "aiohttp, 10x capacity (no admission control)",
        measure_aiohttp,
        requires=("aiohttp",),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--kind", choices=["zmicro", "aiohttp"], default="zmicro")
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10 * _CAPACITY)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.role == "server":
        serve = _serve_zmicro if args.kind == "zmicro" else _serve_aiohttp
        harness.run_until_terminated(serve)
    else:
        result: dict[str, Any] = asyncio.run(_client(args))
        harness.result(result)


if __name__ == "__main__":
    main()
