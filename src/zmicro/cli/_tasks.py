"""``zmicro tasks``: look at a task queue and act on its dead letters."""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .._client import open_client
from .._errors import CallError
from .._tasks import QUEUE_SERVICE

__all__ = ("flatten", "tasks")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", "1")]``: nested statistics as rows."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key in sorted(value, key=str):
            rows.extend(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, str(value))]


def _call(endpoint: str, method: str, timeout: float, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with open_client({QUEUE_SERVICE: endpoint}, timeout=timeout) as client:
            return await client.call(QUEUE_SERVICE, method, kwargs)

    try:
        return asyncio.run(go())
    except CallError as exc:
        err.print(f"[red]{exc.code}[/]: {exc.message}")
        sys.exit(1)


@click.group()
def tasks() -> None:
    """Inspect a task queue (zmicro.queue) and replay or purge its dead letters."""


@tasks.command()
@click.argument("endpoint")
@click.option("--timeout", default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw statistics as JSON.")
def stats(endpoint: str, timeout: float, as_json: bool) -> None:
    """Counters (accepted, delivered, redelivered, failed, dead-lettered, expired, dropped) and depths."""
    result = _call(endpoint, "stats", timeout)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    depth = Table(title="tasks", title_justify="left")
    for column in ("name", "ready", "delayed", "leased", "dead"):
        depth.add_column(column, justify="left" if column == "name" else "right")
    for name, row in sorted(result["tasks"].items()):
        depth.add_row(name, *(str(row[k]) for k in ("ready", "delayed", "leased", "dead")))
    out.print(depth)
    table = Table(title="counters since start", title_justify="left")
    table.add_column("name")
    table.add_column("value", justify="right")
    for key, value in sorted(result["counters"].items()):
        table.add_row(key, str(value))
    out.print(table)
    if result.get("stream"):
        out.print("fire-and-forget buffered: " + ", ".join(f"{k}={v}" for k, v in result["stream"].items()))


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


@tasks.command()
@click.argument("endpoint")
@click.option("--name", default=None, help="Only this task name.")
@click.option("--limit", default=50, show_default=True)
@click.option("--after", default=0, show_default=True, help="Only ids above this (paging).")
@click.option("--timeout", default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (payloads as hex).")
def dead(endpoint: str, name: str | None, limit: int, after: int, timeout: float, as_json: bool) -> None:
    """List dead letters: id, task, deliveries, why, and the last error."""
    rows = _call(endpoint, "dead", timeout, name=name, limit=limit, after=after)
    if as_json:
        click.echo(json.dumps([{**r, "payload": r["payload"].hex()} for r in rows], indent=2))
        return
    table = Table(title=f"dead letters at {endpoint}", title_justify="left")
    for column in ("id", "task", "deliveries", "reason", "died", "last error"):
        table.add_column(column)
    for r in rows:
        last = (r["error"] or "").strip().splitlines()
        cells = (str(r["id"]), r["name"], str(r["deliveries"]), r["reason"], _when(r["died_at"]))
        table.add_row(*cells, last[-1] if last else "")
    out.print(table)


def _ids_or_all(ids: tuple[int, ...], every: bool) -> dict[str, Any]:
    if bool(ids) == every:
        raise click.UsageError("give dead-letter IDS, or --all (not both)")
    return {"everything": True} if every else {"ids": list(ids)}


@tasks.command()
@click.argument("endpoint")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Every dead letter (of --name, if given).")
@click.option("--name", default=None, help="Only this task name.")
@click.option("--timeout", default=5.0, show_default=True)
def replay(endpoint: str, ids: tuple[int, ...], every: bool, name: str | None, timeout: float) -> None:
    """Put dead letters back in the queue with a fresh delivery count."""
    count = _call(endpoint, "replay", timeout, name=name, **_ids_or_all(ids, every))
    click.echo(f"replayed {count}")


@tasks.command()
@click.argument("endpoint")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Every dead letter (of --name, if given).")
@click.option("--name", default=None, help="Only this task name.")
@click.option("--timeout", default=5.0, show_default=True)
def purge(endpoint: str, ids: tuple[int, ...], every: bool, name: str | None, timeout: float) -> None:
    """Delete dead letters for good."""
    count = _call(endpoint, "purge", timeout, name=name, **_ids_or_all(ids, every))
    click.echo(f"purged {count}")
