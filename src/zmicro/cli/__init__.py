"""The ``zmicro`` command: run, call, info, demo, bench, version."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .._client import open_client
from .._errors import CallError, ConfigurationError, ZmicroError
from .._server import Server, _run
from .._version import __version__
from ..discovery import registry_from_url
from ..discovery._embedded import DEFAULT_REGISTRY_ENDPOINT, EmbeddedRegistry
from ..transport import libzmq_version, require_libzmq
from ._args import parse_call_args, parse_target
from ._discovery import ensure_embedded_registry, resolve_one, run_workers
from ._events import publish, subscribe
from ._loading import load_service
from ._tasks import flatten, tasks

__all__ = ("main",)

# Tables keep their numbers whole when the output goes to a file or a pipe (a CI log).
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def _install_uvloop(required: bool = True) -> bool:
    """Run on uvloop. ``required``: an error if it is not installed; else False."""
    try:
        import uvloop
    except ImportError:
        if not required:
            return False
        raise click.UsageError("--uvloop needs the uvloop package: pip install 'zmicro[uvloop]'") from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmicro")
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Python logging level.",
)
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
    default=["tcp://127.0.0.1:0"],
    show_default=True,
    help="Endpoint to serve on (repeatable); port 0 picks a free one (callers find it by name).",
)
@click.option(
    "--grace", default=10.0, show_default=True, help="Seconds in-flight calls get to finish on shutdown."
)
@click.option("--max-message-bytes", default=1024 * 1024, show_default=True, help="Largest request accepted.")
@click.option(
    "--registry",
    "registry_url",
    envvar="ZMICRO_REGISTRY",
    show_envvar=True,
    default=DEFAULT_REGISTRY_ENDPOINT,
    show_default=True,
    help="Where to register: tcp://... (embedded, started if none answers), dns:..., static:..., none.",
)
@click.option("--workers", default=1, show_default=True, help="Worker processes, each a separate instance.")
@click.option(
    "--uvloop/--no-uvloop",
    default=None,
    help="Run on uvloop, a faster event loop  [default: when it is installed]",
)
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
    registry_url: str,
    workers: int,
    uvloop: bool | None,
    event_sources: tuple[str, ...],
) -> None:
    """Serve services: TARGET is FILE.py:Class or module:Class (several allowed).

    Each instance registers under its service names so callers find it by name. Stops
    cleanly on Ctrl-C or SIGTERM: it leaves the registry, stops intake, gives running
    calls GRACE seconds, then exits.
    """
    if workers > 1:
        sys.exit(run_workers(workers, sys.argv))
    try:
        classes = [load_service(t) for t in targets]
        registry = registry_from_url(registry_url)
        if isinstance(registry, EmbeddedRegistry):
            ensure_embedded_registry(registry.endpoint)
        server = Server(
            classes,
            bind=list(binds),
            grace=grace,
            max_message_bytes=max_message_bytes,
            registry=registry,
            event_sources=list(event_sources),
        )
    except ZmicroError as exc:
        raise click.UsageError(str(exc)) from None
    if uvloop is not False:
        _install_uvloop(required=uvloop is True)

    def ready(srv: Server) -> None:
        names = ", ".join(srv.services)
        # One parseable line on stdout: tools and tests read the real endpoint from it.
        print(f"zmicro: serving {names} on {' '.join(srv.endpoints)}", flush=True)

    try:
        asyncio.run(_run(server, ready))
    except ConfigurationError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


async def _call(endpoint: str | None, service: str, method: str, args: dict[str, Any], seconds: float) -> Any:
    async with open_client(endpoint, timeout=seconds) as client:
        return await client.call(service, method, args)


def _check_endpoint_form(text: str) -> None:
    """``127.0.0.1:5555`` is a common slip for ``tcp://127.0.0.1:5555``: say so."""
    if "://" not in text and re.fullmatch(r"[\w.\-\[\]:]+:\d+", text):
        raise click.UsageError(f"{text!r} looks like an address: endpoints are written tcp://{text}")


def _fail(exc: CallError) -> None:
    err.print(f"[red]{exc.code}[/]: {exc.message}")
    tb = exc.details.get("traceback")
    if tb:
        err.print(tb, markup=False, highlight=False)
    sys.exit(1)


@cli.command()
@click.argument("parts", nargs=-1, required=True, metavar="[ENDPOINT] SERVICE.METHOD [ARGS]...")
@click.option("--timeout", default=10.0, show_default=True, help="Deadline of the call in seconds.")
def call(parts: tuple[str, ...], timeout: float) -> None:
    """Call SERVICE.METHOD with key=value ARGS (or one JSON object); print the result as JSON.

    With ENDPOINT (tcp://...) the call goes there; without it the service is found by
    name in the registry (ZMICRO_REGISTRY, else the embedded one). Values are read as
    JSON when they parse (times=2 is a number): quote a string that looks like one,
    as in who='"123"'.
    """
    _check_endpoint_form(parts[0])
    endpoint = parts[0] if "://" in parts[0] else None
    rest = parts[1:] if endpoint else parts
    if not rest:
        raise click.UsageError("missing SERVICE.METHOD")
    target, args = rest[0], rest[1:]
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
    except (ZmicroError, TimeoutError) as exc:  # bad options, no registry answering, ...
        err.print(f"[red]error:[/] {exc or type(exc).__name__}")
        sys.exit(2)
    click.echo(json.dumps(result, ensure_ascii=False, default=repr))


@cli.command()
@click.argument("target", metavar="ENDPOINT|SERVICE")
@click.option("--timeout", default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw description as JSON.")
def info(target: str, timeout: float, as_json: bool) -> None:
    """Describe the services at ENDPOINT (or at an instance of SERVICE found by name): methods,
    signatures, docs, and live counters."""

    _check_endpoint_form(target)

    async def fetch() -> tuple[Any, Any]:
        endpoint = target if "://" in target else await resolve_one(target, timeout)
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
    except (ZmicroError, TimeoutError) as exc:  # bad options, no registry answering, ...
        err.print(f"[red]error:[/] {exc or type(exc).__name__}")
        sys.exit(2)
    if as_json:
        click.echo(json.dumps({"describe": desc, "stats": stats}, indent=2))
        return
    where = desc["endpoints"][0] if desc["endpoints"] else target
    out.print(
        f"[bold]{where}[/]  zmicro {desc['zmicro']}, libzmq {desc['libzmq']}, up {stats['uptime_s']:.0f}s"
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
    for name, facts in sorted(stats.get("components", {}).items()):
        table = Table(title=f"component: {name}", title_justify="left")
        table.add_column("name")
        table.add_column("value", justify="right")
        for key, value in flatten(facts):
            table.add_row(key, value)
        out.print(table)


@cli.command()
@click.option(
    "--users", default=10, show_default=True, type=click.IntRange(1, 1000), help="Simulated shoppers."
)
@click.option(
    "--duration", default=15.0, show_default=True, type=click.FloatRange(1, 3600), help="Seconds of shopping."
)
@click.option("--serve", is_flag=True, help="Keep the shop open for a browser instead of running the load.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="HTTP port of the shop  [default: 8080 with --serve, else a free one]",
)
def demo(users: int, duration: float, serve: bool, port: int | None) -> None:
    """Run the Online Boutique: ten services in their own processes, a web shop, simulated shoppers.

    Reports requests, failures and latency per page and the RPC calls per service;
    exits 1 if anything failed. With --serve, prints the shop's URL and keeps it open.
    """
    from ..demo.boutique.demo import run_boutique_demo

    sys.exit(run_boutique_demo(users=users, duration=duration, serve=serve, port=port, console=out))


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the side-by-side benchmark suite (zmicro bench --help for its options).

    The suite lives in the source tree (benchmarks/) and needs the bench extra:
    pip install -e .[bench]
    """
    suite = _find_bench_suite()
    if suite is None:
        raise click.ClickException(
            "the benchmark suite ships with the source tree: run this from a clone of zmicro "
            "(pip install -e .[bench]), or run python -m benchmarks there"
        )
    sys.exit(suite(list(args)))


def _find_bench_suite() -> Any:
    """``benchmarks.suite.main`` from the clone this zmicro runs from, or from the working directory."""
    import importlib
    from pathlib import Path

    here = Path(__file__).resolve()
    for root in (here.parents[3], Path.cwd()):  # src/zmicro/cli/__init__.py -> the clone
        if (root / "benchmarks" / "suite.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module("benchmarks.suite").main
    return None


@cli.command()
def version() -> None:
    """Print the versions of zmicro and libzmq."""
    click.echo(f"zmicro {__version__}, libzmq {'.'.join(map(str, libzmq_version()))}")


cli.add_command(tasks)
cli.add_command(publish)
cli.add_command(subscribe)
from . import _discovery_commands  # noqa: E402,F401  # registers `registry` and `ls`


def main() -> None:
    cli(prog_name="zmicro")
