"""RPC end to end over real TCP on loopback: results, ordering, arguments, errors, deadlines."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import zmicro
from services import Front, Probe
from zmicro import protocol as p
from zmicro.testing import ClientFactory, ServerFactory

pytestmark = pytest.mark.timeout(30)


async def test_call_and_proxy_forms(zmicro_server: ServerFactory, zmicro_client: ClientFactory) -> None:
    server = await zmicro_server(Probe())
    client = await zmicro_client(server.endpoint)
    assert await client.call("probe", "echo", value={"a": [1, 2]}) == {"a": [1, 2]}
    assert await client.call("probe", "echo", {"value": 3}) == 3
    assert await client.probe.echo(value="x") == "x"


async def test_many_in_flight_replies_matched_out_of_order(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    server = await zmicro_server(Probe())
    client = await zmicro_client(server.endpoint)
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.2) for _ in range(300)]
    finished: list[int] = []

    async def one(i: int) -> int:
        result = int(await client.probe.delayed(i=i, delay=delays[i]))
        finished.append(result)
        return result

    results = await asyncio.gather(*(one(i) for i in range(300)))
    assert results == list(range(300))  # each call got its own reply
    assert finished != sorted(finished)  # and they did arrive out of order
    stats = client.statistics()[server.endpoint]
    assert stats["pending"] == 0
    assert stats["late_replies"] == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"i": "one", "delay": 0}, "i"), ({"delay": 0}, "i"), ({"i": 1, "delay": 0, "extra": 1}, "extra")],
)
async def test_invalid_arguments_name_the_field(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory, kwargs: dict[str, object], field: str
) -> None:
    server = await zmicro_server(Probe())
    client = await zmicro_client(server.endpoint)
    with pytest.raises(zmicro.InvalidArgumentError) as info:
        await client.call("probe", "delayed", kwargs)
    assert info.value.field == field
    assert field in str(info.value)
    assert await client.probe.echo(value=1) == 1  # still serving


async def test_unencodable_argument_fails_locally(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    server = await zmicro_server(Probe())
    client = await zmicro_client(server.endpoint)
    with pytest.raises(zmicro.InvalidArgumentError, match="cannot be encoded"):
        await client.probe.echo(value=object())
    assert client.statistics()[server.endpoint]["pending"] == 0


async def test_distinct_outcomes(zmicro_server: ServerFactory, zmicro_client: ClientFactory) -> None:
    server = await zmicro_server(Probe())
    client = await zmicro_client(server.endpoint)
    with pytest.raises(zmicro.NoSuchServiceError):
        await client.nobody.echo(value=1)
    with pytest.raises(zmicro.NoSuchMethodError):
        await client.probe.nothing()
    with pytest.raises(zmicro.RemoteError) as info:
        await client.probe.fail(message="boom")
    assert info.value.type_name == "ValueError"
    assert info.value.message == "boom"
    assert "in fail" in info.value.remote_traceback
    with pytest.raises(zmicro.RemoteError, match="could not be encoded"):
        await client.probe.bad_result()
    with pytest.raises(zmicro.DeadlineExceededError):
        await client.probe.sleep(seconds=5, _timeout=0.1)
    # one root for all of them
    for cls in (
        zmicro.NoSuchServiceError,
        zmicro.OverloadedError,
        zmicro.PeerLostError,
        zmicro.ProtocolError,
    ):
        assert issubclass(cls, zmicro.ZmicroError)
    assert await client.probe.echo(value="alive") == "alive"


async def test_timeout_cancels_the_handler_and_client_keeps_working(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    probe = Probe()
    server = await zmicro_server(probe)
    client = await zmicro_client(server.endpoint)
    with pytest.raises(zmicro.DeadlineExceededError):
        await client.probe.sleep(seconds=10, tag="t1", _timeout=0.2)
    async with asyncio.timeout(5):
        while "t1" not in probe.cancelled:
            await asyncio.sleep(0.01)
    assert await client.probe.echo(value=2) == 2
    assert client.statistics()[server.endpoint]["pending"] == 0


async def test_caller_cancellation_sends_cancel(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    probe = Probe()
    server = await zmicro_server(probe)
    client = await zmicro_client(server.endpoint)
    call = asyncio.ensure_future(client.probe.sleep(seconds=30, tag="c1", _timeout=30))
    async with asyncio.timeout(5):
        while "c1" not in probe.started:
            await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    async with asyncio.timeout(5):
        while "c1" not in probe.cancelled:
            await asyncio.sleep(0.01)
    assert server.statistics()["counters"]["cancelled"] == 1
    assert client.statistics()[server.endpoint]["abandoned"] == 1


async def test_expired_request_is_not_started(zmicro_server: ServerFactory) -> None:
    """A request whose budget is already spent is answered without running the handler."""
    import zmq
    import zmq.asyncio

    probe = Probe()
    server = await zmicro_server(probe)
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.connect(server.endpoint)
        await sock.send(
            p.encode_request(1, "probe", "sleep", p.Headers(deadline_ms=0), {"seconds": 0, "tag": "x"})
        )
        reply = p.decode(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(reply, p.ErrorReply)
        assert (reply.id, reply.code) == (1, "deadline_exceeded")
        assert probe.started == []
        assert server.statistics()["counters"]["expired_on_arrival"] == 1
    finally:
        sock.close(linger=0)
        ctx.term()


async def test_request_that_expires_in_queue_is_not_started(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    probe = Probe()
    server = await zmicro_server(probe)
    server._hosted["probe"].admission.max_active = 1
    client = await zmicro_client(server.endpoint)
    first = asyncio.ensure_future(client.probe.wait_release(tag="first"))
    async with asyncio.timeout(5):
        while "first" not in probe.started:
            await asyncio.sleep(0.01)
    with pytest.raises(zmicro.DeadlineExceededError):
        await client.probe.sleep(seconds=0, tag="queued", _timeout=0.2)
    probe.release.set()
    assert await first == "first"
    assert await client.probe.echo(value=1) == 1
    assert "queued" not in probe.started


async def test_nested_call_inherits_remaining_budget(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    probe = Probe()
    backend = await zmicro_server(probe)
    front = await zmicro_server(Front(backend.endpoint))
    client = await zmicro_client(front.endpoint)
    left = await client.front.relay_remaining(_timeout=1.5)
    assert 0.5 < left <= 1.5
    # The nested call asked for 60 s, but its caller only has 0.3 s: it ends with it.
    t0 = time.monotonic()
    with pytest.raises(zmicro.DeadlineExceededError):
        await client.front.relay_sleep(seconds=30, _timeout=0.3)
    assert time.monotonic() - t0 < 10
    async with asyncio.timeout(5):
        while "nested" not in probe.cancelled:
            await asyncio.sleep(0.01)


async def test_plain_def_handler_does_not_block_the_service(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    server = await zmicro_server(Probe())
    client = await zmicro_client(server.endpoint)
    blocking = asyncio.ensure_future(client.probe.block(seconds=5))
    async with asyncio.timeout(10):
        while server.statistics()["running"] < 1:
            await asyncio.sleep(0.01)
    for i in range(50):
        assert await client.probe.echo(value=i) == i
    assert not blocking.done()  # 50 calls answered while one handler still blocks
    assert await blocking == 5


async def test_overload_is_answered_at_once(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    probe = Probe()
    server = await zmicro_server(probe)
    adm = server._hosted["probe"].admission
    adm.max_active, adm.max_queued = 2, 3
    client = await zmicro_client(server.endpoint)
    calls = [asyncio.ensure_future(client.probe.wait_release(tag=str(i))) for i in range(20)]
    async with asyncio.timeout(5):
        while sum(c.done() for c in calls) < 15:
            await asyncio.sleep(0.01)
    overloaded = [c for c in calls if c.done()]
    assert len(overloaded) == 15
    assert all(isinstance(c.exception(), zmicro.OverloadedError) for c in overloaded)
    probe.release.set()
    results = await asyncio.gather(*(c for c in calls if c not in overloaded))
    assert len(results) == 5
    assert server.statistics()["services"]["probe"]["rejected"] == 15


async def test_closing_client_fails_pending_calls_at_once(zmicro_server: ServerFactory) -> None:
    server = await zmicro_server(Probe())
    client = zmicro.Client(server.endpoint)
    calls = [asyncio.ensure_future(client.probe.sleep(seconds=30)) for _ in range(5)]
    await asyncio.sleep(0.2)
    await client.aclose()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2)
    assert all(isinstance(r, zmicro.ClientClosedError) for r in results)
    with pytest.raises(zmicro.ClientClosedError):
        await client.probe.echo(value=1)


async def test_describe_lists_methods_with_schema(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    server = await zmicro_server(Probe())
    client = await zmicro_client(server.endpoint)
    desc = await client.call("_zmicro", "describe")
    (svc,) = desc["services"]
    methods = {m["name"]: m for m in svc["methods"]}
    assert methods["delayed"]["params"] == "(i: int, delay: float) -> int"
    schema = methods["delayed"]["args_schema"]
    defs = next(iter(schema["$defs"].values()))
    assert defs["required"] == ["i", "delay"]
    assert methods["block"]["runs_on"] == "thread pool"
    assert methods["block"]["doc"] == "A plain def that blocks its thread."


def test_blocking_client() -> None:
    # The server runs on its own loop in a thread here, as a separate program would.
    import threading

    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        async with zmicro.open_server(Probe(), bind="tcp://127.0.0.1:0", grace=0.5) as server:
            box["ep"] = server.endpoint
            ready.set()
            while not box.get("stop"):
                await asyncio.sleep(0.02)

    t = threading.Thread(target=asyncio.run, args=(serve(),))
    t.start()
    try:
        assert ready.wait(10)
        with zmicro.connect(str(box["ep"])) as client:
            assert client.call("probe", "echo", value=5) == 5
            assert client.probe.echo(value="y") == "y"
            with pytest.raises(zmicro.DeadlineExceededError):
                client.call("probe", "sleep", seconds=5, _timeout=0.1)
            with pytest.raises(zmicro.InvalidArgumentError):
                client.probe.delayed(i="x", delay=0)
            assert client.probe.echo(value=6) == 6
    finally:
        box["stop"] = True
        t.join(10)


async def test_size_limits_fail_one_call_not_the_connection(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    from services import Sizes

    server = await zmicro_server(Sizes())
    client = await zmicro_client(server.endpoint)
    slow = asyncio.ensure_future(client.call("sizes", "blob", size=10))
    # A request past the limit is refused before it is sent: nothing else is disturbed.
    with pytest.raises(zmicro.InvalidArgumentError, match="exceeds"):
        await client.sizes.length(data=b"y" * (2 * 1024 * 1024))
    # A result past the limit is an error reply, not a dropped connection.
    with pytest.raises(zmicro.RemoteError) as info:
        await client.sizes.blob(size=3 * 1024 * 1024)
    assert info.value.type_name == "ResultTooLarge"
    assert await slow == b"x" * 10
    assert await client.sizes.length(data=b"z" * 1000) == 1000
    assert client.statistics()[server.endpoint].get("peer_lost", 0) == 0


async def test_a_parameter_named_args_is_just_an_argument(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    from services import Sizes

    server = await zmicro_server(Sizes())
    client = await zmicro_client(server.endpoint)
    assert await client.sizes.keys(args={"b": 1, "a": 2}) == ["a", "b"]
    assert await client.call("sizes", "keys", {"args": {"c": 3}}) == ["c"]


async def test_ten_times_capacity_keeps_memory_flat(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    """Callers sending 10x what the service can take get "overloaded"; nothing piles up."""
    import gc
    import tracemalloc

    probe = Probe()
    server = await zmicro_server(probe)
    adm = server._hosted["probe"].admission
    adm.max_active, adm.max_queued = 4, 8
    client = await zmicro_client(server.endpoint)
    capacity = adm.max_active + adm.max_queued
    deepest = 0

    async def burst() -> tuple[int, int]:
        nonlocal deepest
        calls = [client.probe.delayed(i=i, delay=0.01) for i in range(10 * capacity)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        deepest = max(deepest, adm.queued)
        overloaded = sum(isinstance(r, zmicro.OverloadedError) for r in results)
        assert all(isinstance(r, int | zmicro.OverloadedError) for r in results), results
        return len(results) - overloaded, overloaded

    await burst()  # warm up
    tracemalloc.start()
    try:
        await burst()
        gc.collect()  # failed calls' tracebacks form cycles: count what is really kept
        before = tracemalloc.get_traced_memory()[0]
        served = rejected = 0
        for _ in range(30):
            ok, over = await burst()
            served, rejected = served + ok, rejected + over
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert rejected > served  # most of a 10x load is turned away at once ...
    assert served >= 30 * capacity // 2  # ... while the service keeps working at capacity
    assert deepest <= adm.max_queued
    assert server.statistics()["running"] <= adm.max_active
    assert after - before < 256 * 1024, f"memory grew by {after - before} bytes"
