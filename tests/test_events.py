"""Events over real sockets on loopback: delivery modes, readiness, gaps, slow-subscriber policies."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import zmicro
from conftest import free_port
from event_services import Fast, Gate, Orders, Tally
from zmicro.discovery import StaticRegistry
from zmicro.testing import ClientFactory, ServerFactory

pytestmark = pytest.mark.timeout(60)

BLOB = "x" * 8000
# Small queues fill fast; a long heartbeat timeout lets a held subscriber push back for up
# to 10 s (a third of it) before it starts shedding.
SMALL = zmicro.SocketOptions(send_hwm=1000, recv_hwm=8, heartbeat_timeout_ms=30_000)


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def pub_stats(server: zmicro.Server) -> dict[str, Any]:
    return server.statistics()["components"]["events.publisher"]  # type: ignore[no-any-return]


def sub_stats(server: zmicro.Server) -> dict[str, Any]:
    return server.statistics()["components"]["events.subscriber"]  # type: ignore[no-any-return]


def stream_of(publisher: zmicro.Server, subscriber: zmicro.Server, service: str) -> dict[str, Any]:
    return pub_stats(publisher)["per_stream"][f"{service}/{service}-{subscriber.instance_id}"]  # type: ignore[no-any-return]


# -- delivery modes ------------------------------------------------------------------


async def test_group_and_broadcast_with_three_instances(zmicro_server: ServerFactory) -> None:
    registry = StaticRegistry()
    tallies = [Tally() for _ in range(3)]
    subs = [await zmicro_server(t, registry=registry) for t in tallies]
    pub = await zmicro_server(Orders(), registry=registry)
    events = pub.services["orders"].events
    await events.wait_ready(timeout=10)  # the three tallies are known from the registry
    for i in range(90):
        assert await events.publish("order.placed", {"id": i, "total": 1}) == 4  # 3 broadcast + 1 group
    await eventually(
        lambda: sum(len(t.group) for t in tallies) == 90 and all(len(t.broadcast) == 90 for t in tallies)
    )
    await asyncio.sleep(0.1)  # nothing more arrives
    assert sorted(i for t in tallies for i in t.group) == list(range(90))  # each exactly once
    assert [len(t.group) for t in tallies] == [30, 30, 30]  # round robin
    assert all(sorted(t.broadcast) == list(range(90)) for t in tallies)
    for sub in subs:
        assert sub_stats(sub)["gaps"] == 0
    assert pub_stats(pub)["deliveries"] == 360


async def test_prefix_matching_and_topics_nobody_wants(zmicro_server: ServerFactory) -> None:
    pub = await zmicro_server(Orders())
    tally = Tally()
    await zmicro_server(tally, event_sources=[pub.endpoint])
    events = pub.services["orders"].events
    await events.wait_ready(timeout=10, expect={"tally": 1})
    assert await events.publish("order.placed", {"id": 1, "total": 2}) == 2
    assert await events.publish("orders-are-not-order.", {"id": 2, "total": 2}) == 0
    assert await events.publish("invoice.sent", {"id": 3, "total": 2}) == 0
    await eventually(lambda: tally.group == [1] and tally.broadcast == [1])
    assert pub_stats(pub)["unheard"] == 2


async def test_handler_learns_topic_and_info(zmicro_server: ServerFactory) -> None:
    pub = await zmicro_server(Orders())
    tally = Tally()
    await zmicro_server(tally, event_sources=[pub.endpoint])
    events = pub.services["orders"].events
    await events.wait_ready(timeout=10, expect={"tally": 1})
    for i in range(3):
        await events.publish("order.placed", {"id": i, "total": 0})
    await eventually(lambda: len(tally.infos) == 3)
    info = tally.infos[-1]
    # The instance's stream carried a group copy and a broadcast copy of each event: 6 numbers.
    assert (info.topic, info.seq, info.gap, info.group, info.publisher) == (
        "order.placed",
        6,
        0,
        True,
        pub.endpoint,
    )


# -- readiness --------------------------------------------------------------------------


async def test_publishing_right_after_start_loses_nothing_with_the_handshake(
    zmicro_server: ServerFactory,
) -> None:
    registry = StaticRegistry()
    tallies = [Tally() for _ in range(3)]
    for t in tallies:
        await zmicro_server(t, registry=registry)
    pub = await zmicro_server(Orders(), registry=registry)  # the newcomer: subscribers connect to it now
    events = pub.services["orders"].events
    await events.wait_ready(timeout=10)
    for i in range(200):
        await events.publish("order.placed", {"id": i, "total": 0})
    await eventually(lambda: all(len(t.broadcast) == 200 for t in tallies))
    assert sum(len(t.group) for t in tallies) == 200
    assert pub_stats(pub).get("dropped_not_connected", 0) == 0


async def test_without_the_handshake_early_events_are_counted_as_gaps(zmicro_server: ServerFactory) -> None:
    registry = StaticRegistry()
    fast = Fast()
    sub = await zmicro_server(fast, registry=registry)
    pub = await zmicro_server(Orders(), registry=registry)
    events = pub.services["orders"].events
    for i in range(50):  # at once: the subscriber is known (registry) but not connected yet
        await events.publish("t", {"i": i})
    await events.wait_ready(timeout=10)
    await events.publish("t", {"i": 50})
    await eventually(lambda: 50 in fast.got)
    stream = stream_of(pub, sub, "fast")
    assert stream["seq"] == 51
    assert stream["dropped"] > 0
    stats = sub_stats(sub)
    # Every number is delivered or counted as missed, and both ends agree on the count.
    assert len(fast.got) + stats["gaps"] == 51
    assert stats["gaps"] == stream["dropped"] == pub_stats(pub)["dropped_not_connected"]


async def test_wait_ready_names_who_is_missing(zmicro_server: ServerFactory) -> None:
    pub = await zmicro_server(Orders())
    with pytest.raises(TimeoutError, match=r"tally \(0 of 2 instances\)"):
        await pub.services["orders"].events.wait_ready(timeout=0.3, expect={"tally": 2})


# -- slow subscribers ------------------------------------------------------------------


class Pub(zmicro.Service):
    name = "pub"
    events = zmicro.EventPublisher(policy="drop")


async def slow_and_fast(zmicro_server: ServerFactory) -> tuple[zmicro.Server, zmicro.Server, Gate, Fast]:
    pub = await zmicro_server(Pub(), socket_options=SMALL)
    gate, fast = Gate(), Fast()
    slow_server = await zmicro_server(gate, socket_options=SMALL, event_sources=[pub.endpoint])
    await zmicro_server(fast, event_sources=[pub.endpoint])
    await pub.services["pub"].events.wait_ready(timeout=10, expect={"gate": 1, "fast": 1})
    return pub, slow_server, gate, fast


async def fill(pub: zmicro.Server, *, limit: int = 5000) -> int:
    """Publish until the held subscriber's queue at the publisher is full; returns the count."""
    events = pub.services["pub"].events
    for i in range(limit):
        try:
            await events.publish("t", {"i": i, "b": BLOB})
        except zmicro.SlowSubscriberError:
            return i + 1
        if pub_stats(pub).get("dropped_full"):
            return i + 1
        await asyncio.sleep(0)  # a fast subscriber keeps up when the publisher lets it
    raise AssertionError(f"the held subscriber took {limit} events")


async def test_drop_policy_counts_exactly_and_never_stalls_the_fast(zmicro_server: ServerFactory) -> None:
    pub, slow_server, gate, fast = await slow_and_fast(zmicro_server)
    tracemalloc.start()
    try:
        n = await fill(pub)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n, n + 1000):
            await pub.services["pub"].events.publish("t", {"i": i, "b": BLOB})
            sub = sub_stats(slow_server)
            assert sub["queued"] <= sub["max_queued"]  # the held subscriber's memory stays bounded
            await asyncio.sleep(0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    total = n + 1000
    assert grown < 2_000_000, f"memory grew by {grown} bytes for 8 MB of dropped events"
    # The fast subscriber got everything, even while the slow one was full.
    # The fast subscriber was not held back: it got everything it was sent, and (with the
    # publisher yielding between events) nearly everything, while the slow one missed most.
    fast_dropped = sum(v["dropped"] for k, v in pub_stats(pub)["per_stream"].items() if k.startswith("fast/"))
    await eventually(lambda: len(fast.got) + fast_dropped == total)
    dropped = stream_of(pub, slow_server, "gate")["dropped"]
    assert dropped >= 900
    assert fast_dropped < dropped
    # Let the slow one go; one more event shows it everything it missed.
    gate.open.set()
    await pub.services["pub"].events.publish("t", {"i": total, "b": ""}, policy="wait")
    await eventually(lambda: total in gate.got)
    stats = sub_stats(slow_server)
    assert len(gate.got) + stats["gaps"] == total + 1
    assert stats["gaps"] == dropped == sum(gate.gaps)
    assert gate.got == sorted(gate.got)  # in order
    assert stream_of(pub, slow_server, "gate")["seq"] == total + 1


async def test_raise_policy_raises_after_the_others_got_it(zmicro_server: ServerFactory) -> None:
    pub, slow_server, gate, fast = await slow_and_fast(zmicro_server)
    events = pub.services["pub"].events
    n = 0

    async def until_it_raises() -> None:
        nonlocal n
        for n in range(1, 5001):  # n is read after the loop
            await events.publish("t", {"i": n, "b": BLOB}, policy="raise")
            await asyncio.sleep(0)

    with pytest.raises(zmicro.SlowSubscriberError) as info:
        await until_it_raises()
    assert f"gate/gate-{slow_server.instance_id}" in info.value.subscribers
    assert isinstance(info.value, zmicro.OverloadedError)
    # The others got it, the event that raised included (unless they too were full).
    fast_dropped = sum(v["dropped"] for k, v in pub_stats(pub)["per_stream"].items() if k.startswith("fast/"))
    await eventually(lambda: len(fast.got) + fast_dropped == n)
    assert pub_stats(pub)["raised"] == 1
    gate.open.set()
    await events.publish("t", {"i": 0, "b": ""}, policy="wait")
    await eventually(lambda: len(gate.got) + sub_stats(slow_server)["gaps"] == n + 1)
    assert sub_stats(slow_server)["gaps"] == 1


async def test_wait_policy_waits_for_the_slow_one_and_loses_nothing(zmicro_server: ServerFactory) -> None:
    pub, slow_server, gate, fast = await slow_and_fast(zmicro_server)
    events = pub.services["pub"].events
    total = 1500

    async def publish_all() -> None:
        for i in range(total):
            await events.publish("t", {"i": i, "b": BLOB}, policy="wait")

    task = asyncio.create_task(publish_all())
    await eventually(lambda: pub_stats(pub).get("waited", 0) > 0)
    await asyncio.sleep(0.3)
    assert not task.done()  # held back by the slow subscriber, not dropping
    assert sub_stats(slow_server)["queued"] <= sub_stats(slow_server)["max_queued"]
    gate.open.set()
    await asyncio.wait_for(task, 30)
    await eventually(lambda: len(gate.got) == total and len(fast.got) == total, within=20)
    assert gate.got == list(range(total))
    assert sub_stats(slow_server)["gaps"] == 0
    assert pub_stats(pub).get("dropped_full", 0) == 0


async def test_wait_policy_gives_up_after_its_timeout(zmicro_server: ServerFactory) -> None:
    pub, slow_server, gate, _ = await slow_and_fast(zmicro_server)
    events = pub.services["pub"].events
    events.declaration.wait_timeout = 0.2

    async def until_it_raises() -> None:
        for i in range(5000):
            await events.publish("t", {"i": i, "b": BLOB}, policy="wait")

    with pytest.raises(zmicro.SlowSubscriberError):
        await until_it_raises()
    stats = pub_stats(pub)
    assert stats["wait_timeouts"] == 1
    assert stream_of(pub, slow_server, "gate")["dropped"] == 1
    gate.open.set()


async def test_a_long_stall_sheds_at_the_subscriber_and_keeps_the_connection(
    zmicro_server: ServerFactory,
) -> None:
    short = zmicro.SocketOptions(send_hwm=200, recv_hwm=8, heartbeat_timeout_ms=1500)  # pushes back 0.5 s
    pub = await zmicro_server(Pub(), socket_options=short)
    gate = Gate()
    slow_server = await zmicro_server(gate, socket_options=short, event_sources=[pub.endpoint])
    events = pub.services["pub"].events
    await events.wait_ready(timeout=10, expect={"gate": 1})
    total = 0
    deadline = time.monotonic() + 4.0  # held well past the heartbeat timeout
    while time.monotonic() < deadline and total < 20_000:
        await events.publish("t", {"i": total, "b": "y" * 100})
        total += 1
        await asyncio.sleep(0.0005)
    stats = sub_stats(slow_server)
    assert stats["pause_expired"] >= 1
    assert stats["shed"] > 0
    assert stats["queued"] <= stats["max_queued"]
    assert stats["sources"][pub.endpoint].get("disconnects", 0) == 0  # liveness did not share its fate
    gate.open.set()
    await events.publish("t", {"i": total, "b": ""}, policy="wait")
    await eventually(lambda: total in gate.got)
    stats = sub_stats(slow_server)
    assert len(gate.got) + stats["gaps"] == total + 1
    assert sum(gate.gaps) == stats["gaps"]


# -- failures on the subscriber side ---------------------------------------------------------


class Picky(zmicro.Service):
    name = "picky"

    def __init__(self) -> None:
        self.got: list[int] = []

    @zmicro.event_handler("n")
    def number(self, event: int) -> None:  # plain def: runs in a thread
        if event < 0:
            raise ValueError("negative")
        self.got.append(event)


async def test_bad_events_and_handler_errors_are_counted_not_fatal(zmicro_server: ServerFactory) -> None:
    pub = await zmicro_server(Pub())
    picky = Picky()
    sub = await zmicro_server(picky, event_sources=[pub.endpoint])
    events = pub.services["pub"].events
    await events.wait_ready(timeout=10, expect={"picky": 1})
    for value in (1, "two", -3, 4, {"x": 5}, 6):
        await events.publish("n", value)
    await eventually(lambda: picky.got == [1, 4, 6])
    stats = sub_stats(sub)
    assert stats["invalid_events"] == 2
    assert stats["handler_errors"] == 1
    assert stats["handled"] == 3


async def test_publisher_restart_is_seen(zmicro_server: ServerFactory) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    fast = Fast()
    first = zmicro.Server([Pub()], bind=endpoint, grace=0.5)
    await first.start()
    sub = await zmicro_server(fast, event_sources=[endpoint])
    try:
        await first.services["pub"].events.wait_ready(timeout=10, expect={"fast": 1})
        await first.services["pub"].events.publish("t", {"i": 1})
        await eventually(lambda: fast.got == [1])
    finally:
        await first.stop()
    second = zmicro.Server([Pub()], bind=endpoint, grace=0.5)
    for _ in range(50):  # libzmq releases the old listener in the background
        try:
            await second.start()
            break
        except zmicro.ConfigurationError:
            await asyncio.sleep(0.05)
    try:
        await second.services["pub"].events.wait_ready(timeout=10, expect={"fast": 1})
        await second.services["pub"].events.publish("t", {"i": 2})
        await eventually(lambda: fast.got == [1, 2])
    finally:
        await second.stop()
    assert sub_stats(sub)["publisher_restarts"] == 1
    assert sub_stats(sub)["gaps"] == 0


async def test_a_stopped_subscriber_unsubscribes(zmicro_server: ServerFactory) -> None:
    pub = await zmicro_server(Pub())
    sub = zmicro.Server([Fast()], event_sources=[pub.endpoint], grace=0.5)
    await sub.start()
    try:
        await pub.services["pub"].events.wait_ready(timeout=10, expect={"fast": 1})
    finally:
        await sub.stop()
    await eventually(lambda: pub_stats(pub)["streams"] == 0)
    assert pub_stats(pub)["unsubscribes"] == 1


# -- API edges ---------------------------------------------------------------------------


async def test_publish_outside_a_served_service_is_unavailable() -> None:
    with pytest.raises(zmicro.UnavailableError):
        await Pub().events.publish("t", 1)


async def test_bad_topics_and_payloads_fail_at_the_publisher(zmicro_server: ServerFactory) -> None:
    pub = await zmicro_server(Pub())
    events = pub.services["pub"].events
    with pytest.raises(ValueError, match="topic"):
        await events.publish("", 1)
    with pytest.raises(ValueError, match="topic"):
        await events.publish("x" * 256, 1)
    with pytest.raises(TypeError, match="cannot be encoded"):
        await events.publish("t", object())
    with pytest.raises(ValueError, match="limit"):
        await events.publish("t", "x" * (2 * 1024 * 1024))


def test_bad_handler_signatures_are_refused() -> None:
    class TooMany(zmicro.Service):
        name = "too-many"

        @zmicro.event_handler("x")
        async def handle(self, a: int, b: int) -> None: ...

    from zmicro._events import describe_event_handlers

    with pytest.raises(zmicro.ConfigurationError, match="one parameter too many"):
        describe_event_handlers(TooMany)
    with pytest.raises(zmicro.ConfigurationError):
        zmicro.EventPublisher(policy="sometimes")  # type: ignore[arg-type]


async def test_server_with_a_bad_handler_does_not_start_or_leak() -> None:
    class Bad(zmicro.Service):
        name = "bad"

        @zmicro.event_handler("x")
        async def handle(self, a: int, b: int) -> None: ...

    server = zmicro.Server([Bad()])
    with pytest.raises(zmicro.ConfigurationError):
        await server.start()


async def test_builtin_publish(zmicro_server: ServerFactory, zmicro_client: ClientFactory) -> None:
    pub = await zmicro_server(Pub())
    fast = Fast()
    await zmicro_server(fast, event_sources=[pub.endpoint])
    await pub.services["pub"].events.wait_ready(timeout=10, expect={"fast": 1})
    client = await zmicro_client(pub.endpoint)
    assert await client.call("_zmicro", "publish", topic="t", event={"i": 7}) == {"deliveries": 1}
    await eventually(lambda: fast.got == [7])
    with pytest.raises(zmicro.InvalidArgumentError):
        await client.call("_zmicro", "publish", topic="", event=1)


async def test_many_events_group_counts_stay_exact(zmicro_server: ServerFactory) -> None:
    registry = StaticRegistry()
    tallies = [Tally() for _ in range(3)]
    for t in tallies:
        await zmicro_server(t, registry=registry)
    pub = await zmicro_server(Orders(), registry=registry)
    events = pub.services["orders"].events
    await events.wait_ready(timeout=10)
    for i in range(3000):
        await events.publish("order.placed", {"id": i, "total": 0})
        if i % 100 == 0:
            await asyncio.sleep(0)
    await eventually(lambda: sum(len(t.group) for t in tallies) == 3000, within=30)
    assert Counter(i for t in tallies for i in t.group) == Counter(range(3000))
