"""The ``zmicro`` command: run, call, info, demo, version."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .._client import open_client
from .._errors import CallError, ConfigurationError, ZmicroError
from .._server import Server, _run
from .._version import __version__
from ..transport import libzmq_version, require_libzmq
from ._args import parse_call_args, parse_target
from ._events import publish, subscribe
from ._loading import load_service

__all__ = ("main",)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        raise click.UsageError("--uvloop needs the uvloop package: pip install 'zmicro[uvloop]'") from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmicro")
@click.option("--log-level", default="WARNING", show_default=True, help="Python logging level.")
def cli(log_level: str) -> None:
    """zmicro: microservices over ZeroMQ."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        require_libzmq()
    except ConfigurationError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--bind",
    "binds",
    multiple=True,
    default=["tcp://127.0.0.1:5555"],
    show_default=True,
    help="Endpoint to serve on (repeatable); port 0 picks a free one.",
)
@click.option(
    "--grace", default=10.0, show_default=True, help="Seconds in-flight calls get to finish on shutdown."
)
@click.option("--max-message-bytes", default=1024 * 1024, show_default=True, help="Largest request accepted.")
@click.option("--uvloop", is_flag=True, help="Run on uvloop (faster event loop).")
@click.option(
    "--events-from",
    "event_sources",
    multiple=True,
    help="Publisher endpoint to take events from (repeatable).",
)
def run(
    targets: tuple[str, ...],
    binds: tuple[str, ...],
    grace: float,
    max_message_bytes: int,
    uvloop: bool,
    event_sources: tuple[str, ...],
) -> None:
    """Serve services: TARGET is FILE.py:Class or module:Class (several allowed).

    Stops cleanly on Ctrl-C or SIGTERM: intake stops, running calls get GRACE seconds.
    """
    try:
        classes = [load_service(t) for t in targets]
        server = Server(
            classes,
            bind=list(binds),
            grace=grace,
            max_message_bytes=max_message_bytes,
            event_sources=list(event_sources),
        )
    except ZmicroError as exc:
        raise click.UsageError(str(exc)) from None
    if uvloop:
        _install_uvloop()

    def ready(srv: Server) -> None:
        names = ", ".join(srv.services)
        # One parseable line on stdout: tools and tests read the real endpoint from it.
        print(f"zmicro: serving {names} on {' '.join(srv.endpoints)}", flush=True)

    try:
        asyncio.run(_run(server, ready))
    except ConfigurationError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


async def _call(endpoint: str, service: str, method: str, args: dict[str, Any], seconds: float) -> Any:
    async with open_client(endpoint, timeout=seconds) as client:
        return await client.call(service, method, args)


def _fail(exc: CallError) -> None:
    err.print(f"[red]{exc.code}[/]: {exc.message}")
    tb = exc.details.get("traceback")
    if tb:
        err.print(tb, markup=False, highlight=False)
    sys.exit(1)


@cli.command()
@click.argument("endpoint")
@click.argument("target")
@click.argument("args", nargs=-1)
@click.option("--timeout", default=10.0, show_default=True, help="Deadline of the call in seconds.")
def call(endpoint: str, target: str, args: tuple[str, ...], timeout: float) -> None:
    """Call SERVICE.METHOD at ENDPOINT with key=value ARGS (or one JSON object); print the result as JSON."""
    try:
        service, method = parse_target(target)
        kwargs = parse_call_args(args)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        result = asyncio.run(_call(endpoint, service, method, kwargs, timeout))
    except CallError as exc:
        _fail(exc)
        return
    click.echo(json.dumps(result, ensure_ascii=False, default=repr))


@cli.command()
@click.argument("endpoint")
@click.option("--timeout", default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw description as JSON.")
def info(endpoint: str, timeout: float, as_json: bool) -> None:
    """Describe the services at ENDPOINT: methods, signatures, docs, and live counters."""

    async def fetch() -> tuple[Any, Any]:
        async with open_client(endpoint, timeout=timeout) as client:
            return (
                await client.call("_zmicro", "describe"),
                await client.call("_zmicro", "stats"),
            )

    try:
        desc, stats = asyncio.run(fetch())
    except CallError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps({"describe": desc, "stats": stats}, indent=2))
        return
    out.print(
        f"[bold]{endpoint}[/]  zmicro {desc['zmicro']}, libzmq {desc['libzmq']}, up {stats['uptime_s']:.0f}s"
    )
    for svc in desc["services"]:
        live = stats["services"].get(svc["name"], {})
        table = Table(
            title=f"{svc['name']}  (max {svc['max_concurrency']} running, {svc['max_queued']} "
            f"queued; now {live.get('active', 0)} running, {live.get('queued', 0)} queued)",
            title_justify="left",
            expand=False,
        )
        table.add_column("method", style="bold cyan")
        table.add_column("signature")
        table.add_column("runs on")
        table.add_column("doc")
        for m in svc["methods"]:
            name = m["name"] + (" (idempotent)" if m["idempotent"] else "")
            table.add_row(name, m["params"], m["runs_on"], (m["doc"] or "").split("\n")[0])
        out.print(table)
    counters = stats.get("counters", {})
    if counters:
        table = Table(title="counters", title_justify="left")
        table.add_column("name")
        table.add_column("value", justify="right")
        for key in sorted(counters):
            table.add_row(key, str(counters[key]))
        out.print(table)
    for name, component in stats.get("components", {}).items():
        table = Table(title=name, title_justify="left")
        table.add_column("name")
        table.add_column("value", justify="right")
        for key, value in _flatten(component):
            table.add_row(key, str(value))
        out.print(table)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(value, dict):
        return [(prefix, value)]
    rows: list[tuple[str, Any]] = []
    for key in sorted(value, key=str):
        rows.extend(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
    return rows


@cli.command()
@click.option("--calls", default=20_000, show_default=True, help="Calls in the throughput phase.")
@click.option("--concurrency", default=128, show_default=True, help="Calls in flight at once.")
@click.option("--uvloop", is_flag=True, help="Run the load generator on uvloop.")
def demo(calls: int, concurrency: int, uvloop: bool) -> None:
    """Start a demo service in its own process, drive real calls through it, report speed and errors."""
    from ..demo import run_demo

    if uvloop:
        _install_uvloop()
    sys.exit(run_demo(calls=calls, concurrency=concurrency, console=out))


@cli.command()
def version() -> None:
    """Print the versions of zmicro and libzmq."""
    click.echo(f"zmicro {__version__}, libzmq {'.'.join(map(str, libzmq_version()))}")


cli.add_command(publish)
cli.add_command(subscribe)


def main() -> None:
    cli(prog_name="zmicro")
