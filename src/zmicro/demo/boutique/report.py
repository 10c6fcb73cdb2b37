"""What the demo reports: per-route HTTP figures, per-service RPC figures, and an audit.

``rpc_snapshot`` reads each instance's built-in ``_zmicro.stats``; the RPC table
shows the difference between two snapshots, so that only the load is counted.
``audit`` checks the shop's state against what the load generator saw: one order
per completed checkout, one confirmation email per order, and, for every user who
checked out, a cart holding exactly what it added after its last checkout (so the
checkout emptied it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from ..._client import Client, open_client
from .checkout import OrderLog
from .emails import SentConfirmations
from .loadgen import LoadResult, RouteStats
from .model import Cart
from .wiring import convert

__all__ = ("Audit", "RpcSnapshot", "audit", "route_table", "rpc_snapshot", "rpc_table")

_BATCH = 1000  # order ids per query (the services' bound)

RpcSnapshot = dict[str, list[dict[str, Any]]]
"""service name -> the ``_zmicro.stats`` of each of its instances, in endpoint order."""


async def rpc_snapshot(endpoints: Mapping[str, list[str]]) -> RpcSnapshot:
    async def one(endpoint: str) -> dict[str, Any]:
        async with open_client(endpoint, timeout=5.0) as client:
            stats: dict[str, Any] = await client.call("_zmicro", "stats")
            return stats

    names = list(endpoints)
    results = await asyncio.gather(*(asyncio.gather(*(one(ep) for ep in endpoints[n])) for n in names))
    return {n: list(r) for n, r in zip(names, results, strict=True)}


def _count(stats: dict[str, Any], prefix: str) -> int:
    counters: dict[str, int] = stats.get("counters", {})
    return sum(v for k, v in counters.items() if k == prefix or k.startswith(prefix + "."))


def route_table(result: LoadResult) -> Table:
    table = Table(title="HTTP routes (load generator's view)", title_justify="left")
    table.add_column("route", no_wrap=True)
    for col in ("requests", "failures", "p50 ms", "p99 ms", "req/s"):
        table.add_column(col, justify="right")
    seconds = max(result.seconds, 1e-9)
    everything = [x for r in result.routes.values() for x in r.latencies]
    for name, r in [*result.routes.items(), ("all", None)]:
        if r is None:
            r = RouteStats(result.requests, result.failures, everything)
        style = "bold" if name == "all" else ("red" if r.failures else "")
        table.add_row(
            name,
            f"{r.requests:,}",
            f"{r.failures:,}",
            f"{r.percentile(0.5):.1f}",
            f"{r.percentile(0.99):.1f}",
            f"{r.requests / seconds:,.1f}",
            style=style,
        )
    return table


def rpc_table(before: RpcSnapshot, after: RpcSnapshot, seconds: float) -> Table:
    table = Table(title="Internal RPC per service (servers' counters during the load)", title_justify="left")
    table.add_column("service", no_wrap=True)
    for col in ("inst.", "calls", "per instance", "errors", "overload", "calls/s"):
        table.add_column(col, justify="right", no_wrap=col == "per instance")
    total_calls = 0
    for name in after:
        if name == "frontend":
            continue  # the load generator's view above covers it; its RPC is only the launcher's
        pairs = list(zip(after[name], before[name], strict=True))
        # Real calls only: health probes and these stats calls are counted apart by the server.
        calls = [_count(a, "requests") - _count(b, "requests") for a, b in pairs]
        errors = sum(_count(a, "errors_out") - _count(b, "errors_out") for a, b in pairs)
        overloaded = sum(_count(a, "overloaded") - _count(b, "overloaded") for a, b in pairs)
        total_calls += sum(calls)
        table.add_row(
            name,
            str(len(calls)),
            f"{sum(calls):,}",
            " + ".join(f"{c:,}" for c in calls) if len(calls) > 1 else "",
            f"{errors:,}",
            f"{overloaded:,}",
            f"{sum(calls) / max(seconds, 1e-9):,.1f}",
        )
    table.add_row(
        "all", "", f"{total_calls:,}", "", "", "", f"{total_calls / max(seconds, 1e-9):,.1f}", style="bold"
    )
    return table


@dataclass
class Audit:
    checkouts: int = 0
    orders_placed: int = 0
    confirmations: int = 0
    carts_checked: int = 0
    problems: list[str] = field(default_factory=list)


async def audit(client: Client, result: LoadResult, orders_before: int = 0) -> Audit:
    """Compare the shop's state with what the load generator saw (see the module docstring)."""
    found = Audit(checkouts=result.checkouts)
    log = convert(await client.checkout.order_log(limit=0), OrderLog)
    sent = convert(await client.email.sent_confirmations(), SentConfirmations)
    found.orders_placed = log.placed - orders_before
    if found.orders_placed != result.checkouts:
        found.problems.append(
            f"{found.orders_placed} orders placed but {result.checkouts} checkouts completed"
        )
    known = 0
    for start in range(0, len(result.order_ids), _BATCH):
        batch = result.order_ids[start : start + _BATCH]
        known += len(await client.checkout.find_orders(order_ids=batch))
        found.confirmations += len(await client.email.confirmed(order_ids=batch))
    if known != len(result.order_ids):
        found.problems.append(
            f"{len(result.order_ids) - known} order ids shown to shoppers unknown to checkout"
        )
    if found.confirmations != len(result.order_ids):
        found.problems.append(f"{found.confirmations} confirmation emails for {len(result.order_ids)} orders")
    if sent.duplicates:
        found.problems.append(f"{sent.duplicates} duplicate confirmations")
    if log.announce_failures:
        found.problems.append(f"{log.announce_failures} orders could not be announced")
    checked = [u for u in result.users if u.checkouts and u.expected_cart is not None and u.session_id]
    carts = await asyncio.gather(*(client.cart.get_cart(user_id=u.session_id) for u in checked))
    found.carts_checked = len(checked)
    wrong = 0
    for user, raw in zip(checked, carts, strict=True):
        held = {item.product_id: item.quantity for item in convert(raw, Cart).items}
        wrong += held != user.expected_cart
    if wrong:
        found.problems.append(f"{wrong} carts do not hold what was added after the last checkout")
    return found
