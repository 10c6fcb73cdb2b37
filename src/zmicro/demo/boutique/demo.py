"""``zmicro demo``: start the whole boutique, shop in it with simulated users, report.

The exit code is 1 if any request failed, the audit found a problem, or a
service did not exit cleanly; ``--serve`` keeps the shop up for a person instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..._client import Client
from .launcher import Boutique, launch
from .loadgen import LoadResult, run_load
from .report import Audit, RpcSnapshot, audit, route_table, rpc_snapshot, rpc_table
from .wiring import make_client

__all__ = ("run_boutique_demo",)


def _progress_line(result: LoadResult, duration: float) -> Text:
    elapsed = time.monotonic() - result.started
    done = min(1.0, elapsed / duration) if duration > 0 else 1.0
    bar = "█" * int(done * 30) + "░" * (30 - int(done * 30))
    text = Text(f"{bar} {elapsed:5.1f}s/{duration:.0f}s  ")
    text.append(f"{result.requests:,} requests, {result.requests / max(elapsed, 1e-9):,.0f}/s, ")
    text.append(f"{result.failures} failures", style="red" if result.failures else "green")
    text.append(f", {result.checkouts} orders")
    return text


async def _shop(
    shop: Boutique, users: int, duration: float, console: Console
) -> tuple[LoadResult, RpcSnapshot, RpcSnapshot, Audit]:
    client = make_client(env={"ZMICRO_REGISTRY": shop.registry_url})
    try:
        orders_before = int((await client.checkout.order_log())["placed"])
        before = await rpc_snapshot(shop.endpoints)
        if console.is_terminal:
            with Live(console=console, refresh_per_second=4, transient=False) as live:

                def show(r: LoadResult) -> None:
                    live.update(_progress_line(r, duration))

                result = await run_load(shop.url, users=users, duration=duration, progress=show)
                live.update(_progress_line(result, duration))
        else:
            last = [time.monotonic()]

            def every_5s(r: LoadResult) -> None:
                if time.monotonic() - last[0] >= 5.0 and time.monotonic() - r.started < duration:
                    last[0] = time.monotonic()
                    console.print(_progress_line(r, duration))

            result = await run_load(shop.url, users=users, duration=duration, progress=every_5s)
            console.print(_progress_line(result, duration))
        after = await rpc_snapshot(shop.endpoints)
        await wait_for_confirmations(client)
        checked = await audit(client, result, orders_before)
    finally:
        await client.aclose()
    return result, before, after, checked


async def wait_for_confirmations(client: Client, within: float = 20.0) -> None:
    """Confirmations are sent by queue workers after the order: let the queue catch up."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        placed = int((await client.checkout.order_log(limit=0))["placed"])
        sent = int((await client.email.sent_confirmations())["total"])
        if sent >= placed:
            return
        await asyncio.sleep(0.2)


def _serve(shop: Boutique, console: Console) -> int:
    console.print(f"\n[bold green]The shop is open:[/] {shop.url}")
    console.print(f"(Ctrl-C to stop; service logs in {shop.log_dir})")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the shop ...")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM unwind through the launcher, which stops every service process.

    Set explicitly: a process started in the background may inherit an ignored SIGINT,
    and SIGTERM would otherwise end this process and leave the services running.
    """
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupt),
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_boutique_demo(
    *, users: int = 10, duration: float = 15.0, serve: bool = False, port: int | None = None, console: Console
) -> int:
    """Start the boutique; then serve it (``serve``) or run the load and report. Returns the exit code."""
    with _stop_on_signals():
        try:
            return _run(users, duration, serve, port, console)
        except KeyboardInterrupt:
            console.print("interrupted; every service process was stopped")
            return 130


def _run(users: int, duration: float, serve: bool, port: int | None, console: Console) -> int:
    console.print("[bold]zmicro demo[/]: Online Boutique, ten services in separate processes, over ZeroMQ")
    with launch(http_port=port if port is not None else (8080 if serve else 0)) as shop:
        console.print(
            f"started {len(shop.instances)} processes in {shop.started_in:.1f}s "
            f"({', '.join(f'{n} x{len(eps)}' if len(eps) > 1 else n for n, eps in shop.endpoints.items())}); "
            f"shop at {shop.url}"
        )
        if serve:
            return _serve(shop, console)
        console.print(f"{users} simulated shoppers for {duration:.0f}s ...")
        result, before, after, checked = asyncio.run(_shop(shop, users, duration, console))
    exit_codes = {f"{i.service}-{i.index}": i.exit_code for i in shop.instances if i.exit_code != 0}
    console.print(route_table(result))
    console.print(rpc_table(before, after, result.seconds))
    console.print(
        f"orders placed {checked.orders_placed}, checkouts completed {checked.checkouts}, "
        f"confirmation emails {checked.confirmations}; "
        f"carts emptied by checkout: {checked.carts_checked} shoppers checked"
    )
    for route, stats in result.routes.items():
        if stats.errors:
            console.print(f"[red]{route}: {dict(stats.errors)}[/]")
    for problem in checked.problems:
        console.print(f"[red]audit: {problem}[/]")
    if exit_codes:
        console.print(f"[red]services that did not exit cleanly: {exit_codes}[/]")
    if result.failures or checked.problems or exit_codes or result.requests == 0:
        console.print(f"[red bold]demo FAILED[/] (service logs in {shop.log_dir})")
        return 1
    console.print(f"[green bold]demo OK[/]: {result.requests:,} requests, zero failures")
    shutil.rmtree(shop.log_dir, ignore_errors=True)  # kept only when something went wrong
    return 0
