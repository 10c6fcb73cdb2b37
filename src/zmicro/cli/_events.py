"""``zmicro publish`` and ``zmicro subscribe``: events from a shell."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from typing import Any

import click

from .. import protocol as p
from .._client import open_client
from .._errors import CallError, ProtocolError
from ..patterns import EventSource, Received, SubscriberIdentity
from ..transport import SocketOptions

__all__ = ("publish", "subscribe")


@click.command()
@click.argument("endpoint")
@click.argument("topic")
@click.argument("event", default="null")
@click.option("--timeout", default=10.0, show_default=True, help="Deadline of the call in seconds.")
def publish(endpoint: str, topic: str, event: str, timeout: float) -> None:
    """Publish EVENT (JSON) on TOPIC through the server at ENDPOINT (it must have an EventPublisher).

    Prints how many subscriber instances the event was sent to.
    """
    try:
        value = json.loads(event)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"EVENT is not valid JSON: {exc}") from None

    async def go() -> Any:
        async with open_client(endpoint, timeout=timeout) as client:
            return await client.call("_zmicro", "publish", topic=topic, event=value)

    try:
        result = asyncio.run(go())
    except CallError as exc:
        click.echo(f"{exc.code}: {exc.message}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result))


@click.command()
@click.argument("endpoint")
@click.argument("prefix", default="")
@click.option("--count", type=int, default=0, help="Exit after this many events (0: no limit).")
@click.option("--duration", type=float, default=0.0, help="Exit after this many seconds (0: no limit).")
@click.option("--group", default="", help="Join the group of this service name (one member gets each event).")
def subscribe(endpoint: str, prefix: str, count: int, duration: float, group: str) -> None:
    """Print events whose topic starts with PREFIX, published at ENDPOINT, as JSON lines.

    Each line has topic, event, seq and gap (events missed just before this one).
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(endpoint, prefix, count, duration, group))


async def _tail(endpoint: str, prefix: str, count: int, duration: float, group: str) -> None:
    done = asyncio.Event()
    seen = 0

    def on_event(received: Received) -> None:
        nonlocal seen
        ev = received.event
        try:
            value = p.decode_value(ev.payload)
        except ProtocolError:
            value = None
        line = {"topic": ev.topic, "event": value, "seq": ev.seq, "gap": received.gap}
        if received.publisher_restarted:
            line["publisher_restarted"] = True
        click.echo(json.dumps(line, ensure_ascii=False, default=repr))
        seen += 1
        if count and seen >= count:
            done.set()

    def on_ack(source: EventSource) -> None:
        click.echo(f"zmicro: subscribed to {prefix!r} at {endpoint}", err=True)

    service = group or "zmicro-cli"
    ident = SubscriberIdentity(
        service, f"{service}-cli-{uuid.uuid4().hex[:8]}", ((prefix, "group" if group else "broadcast"),)
    )
    source = EventSource(endpoint, SocketOptions(), [ident], on_event, on_ack=on_ack)
    try:
        deadline = time.monotonic() + duration if duration else None
        while not done.is_set():
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                await asyncio.wait_for(done.wait(), wait)
            except TimeoutError:
                continue
    finally:
        source.close()
