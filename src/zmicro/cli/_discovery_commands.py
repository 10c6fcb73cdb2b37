"""``zmicro registry`` and ``zmicro ls``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import click
from rich.table import Table

from .._client import open_client
from .._errors import ZmicroError
from .._server import Server
from ..discovery import registry_from_url
from ..discovery._embedded import DEFAULT_REGISTRY_ENDPOINT, EmbeddedRegistry, RegistryService
from . import cli, err, out

__all__ = ("ls", "registry")


@cli.command()
@click.option("--bind", default=DEFAULT_REGISTRY_ENDPOINT, show_default=True, help="Endpoint to serve on.")
@click.option(
    "--idle-exit",
    default=0.0,
    show_default=True,
    help="Exit after this many seconds with no instances (0: never).",
)
@click.option("--probe-interval", default=1.0, show_default=True, help="Seconds between data-path probes.")
def registry(bind: str, idle_exit: float, probe_interval: float) -> None:
    """Run the embedded registry (``zmicro run`` starts one by itself when none answers)."""
    service = RegistryService(probe_interval=probe_interval)
    server = Server([service], bind=bind, grace=1.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            await server.start()
        except ZmicroError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise SystemExit(2) from None
        print(f"zmicro: serving zmicro.registry on {server.endpoint}", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_stopped(), 1.0)
                return
            idle = time.monotonic() - service.idle_since
            if idle_exit > 0 and not service.snapshot().entries and idle > idle_exit:
                await server.stop()
                return

    asyncio.run(main())


@cli.command()
@click.option(
    "--registry",
    "registry_url",
    envvar="ZMICRO_REGISTRY",
    default=DEFAULT_REGISTRY_ENDPOINT,
    show_default=True,
    help="Registry to list.",
)
@click.option("--timeout", default=3.0, show_default=True)
def ls(registry_url: str, timeout: float) -> None:
    """List services and their instances, with state and load."""

    async def fetch() -> list[dict[str, Any]]:
        reg = registry_from_url(registry_url)
        rows: list[dict[str, Any]] = []
        try:
            if isinstance(reg, EmbeddedRegistry):
                snap = await reg.entries()
                pairs = [(e.instance, e.state) for e in snap.entries]
            else:
                pairs = [(i, "up") for i in await reg.instances()]
        finally:
            await reg.aclose()
        async with open_client({}, timeout=timeout) as client:
            for inst, state in sorted(pairs, key=lambda p: (p[0].service, p[0].instance_id)):
                load = "?"
                if state == "up":
                    try:
                        stats = await client.connection(inst.endpoint).call(
                            "_zmicro", "stats", {}, deadline=time.monotonic() + timeout
                        )
                        svc = stats["services"].get(inst.service, {})
                        load = f"{svc.get('active', 0)} running, {svc.get('queued', 0)} queued"
                    except ZmicroError as exc:
                        load = f"unreachable ({type(exc).__name__})"
                rows.append(
                    {
                        "service": inst.service,
                        "instance": inst.instance_id,
                        "endpoint": inst.endpoint,
                        "state": state,
                        "load": load,
                    }
                )
        return rows

    try:
        rows = asyncio.run(fetch())
    except ZmicroError as exc:
        err.print(f"[red]error:[/] cannot list {registry_url}: {exc}")
        raise SystemExit(1) from None
    table = Table(title=f"services at {registry_url}", title_justify="left")
    for col in ("service", "instance", "endpoint", "state", "load"):
        table.add_column(col)
    for row in rows:
        style = "green" if row["state"] == "up" else "red"
        table.add_row(
            row["service"], row["instance"], row["endpoint"], f"[{style}]{row['state']}[/]", row["load"]
        )
    out.print(table)
