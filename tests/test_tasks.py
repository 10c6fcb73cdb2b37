"""Work queues in one process over loopback TCP: delivery, credit, leases, dead letters, backpressure."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import zmicro
from task_services import Blocking, Fast, Flaky, Job, Recorder, Slow
from zmicro._worker import _task_worker
from zmicro.discovery import StaticRegistry
from zmicro.queue import TaskStore
from zmicro.testing import ClientFactory, ServerFactory

pytestmark = pytest.mark.timeout(60)

Q = "zmicro.queue"


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # the state polled has no event to wait on
            await asyncio.sleep(0.01)


async def broker(zmicro_server: ServerFactory, **options: Any) -> tuple[zmicro.TaskQueue, zmicro.Server]:
    options.setdefault("lease", 1.0)
    server_options = {k: options.pop(k) for k in ("registry",) if k in options}
    queue = zmicro.TaskQueue(options.pop("path", ":memory:"), **options)
    return queue, await zmicro_server(queue, **server_options)


async def worker(
    zmicro_server: ServerFactory, service: zmicro.Service, queue: zmicro.Server
) -> zmicro.Server:
    service.task_queue = queue.endpoint  # type: ignore[attr-defined]
    return await zmicro_server(service)


def counters(queue: zmicro.TaskQueue) -> dict[str, int]:
    return queue.statistics()["counters"]  # type: ignore[no-any-return]


async def test_every_submitted_task_runs_and_is_acked(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server)
    rec = Recorder()
    ws = await worker(zmicro_server, rec, qs)
    client = await zmicro_client(qs.endpoint)
    ids = [await client.submit("jobs.record", Job(i)) for i in range(200)]
    assert len(set(ids)) == 200
    await until(lambda: len(rec.done) == 200)
    await until(lambda: counters(queue).get("acked") == 200)
    assert sorted(rec.done) == list(range(200))
    assert queue.statistics()["tasks"] == {}
    stats = ws.statistics()["components"]["tasks"]
    assert stats["counters"]["done"] == 200
    assert stats["tasks"]["jobs.record"]["max_running"] <= 4  # never beyond its credit
    assert client.task_statistics()["submitted"] == 200
    assert "queue" in qs.statistics()["components"]


async def test_invalid_payload_is_dead_lettered_at_once(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server)
    rec = Recorder()
    await worker(zmicro_server, rec, qs)
    client = await zmicro_client(qs.endpoint)
    bad = await client.submit("jobs.record", {"n": "not a number"})
    await client.submit("jobs.record", Job(1))
    await until(lambda: rec.done == [1] and counters(queue).get("dead_lettered") == 1)
    [dead] = await client.call(Q, "dead")
    assert dead["id"] == bad
    assert dead["reason"] == "invalid"
    assert "Expected `int`" in dead["error"]
    assert dead["deliveries"] == 1
    assert msgspec.msgpack.decode(dead["payload"]) == {"n": "not a number"}
    assert counters(queue)["invalid"] == 1


async def test_poison_task_goes_dead_after_max_deliveries_without_blocking_others(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server)
    flaky = Flaky()
    ws = await worker(zmicro_server, flaky, qs)
    client = await zmicro_client(qs.endpoint)
    poison = await client.submit("jobs.poison", Job(666))
    for i in range(50):
        await client.submit("jobs.ok", Job(i))
    await until(lambda: len(flaky.ok) == 50 and counters(queue).get("dead_lettered") == 1)
    assert flaky.poison_calls == 3  # max_deliveries=3
    [dead] = await client.call(Q, "dead", name="jobs.poison")
    assert (dead["id"], dead["reason"], dead["deliveries"]) == (poison, "failed", 3)
    assert "ValueError: cannot handle job 666" in dead["error"]
    c = counters(queue)
    assert (c["failed"], c["redelivered"]) == (3, 2)
    assert ws.statistics()["components"]["tasks"]["tasks"]["jobs.poison"]["failed"] == 3

    # Replay puts it back with a fresh count: three more tries, dead again; purge ends it.
    assert await client.call(Q, "replay", ids=[poison]) == 1
    await until(lambda: flaky.poison_calls == 6 and counters(queue).get("dead_lettered") == 2)
    with pytest.raises(zmicro.InvalidArgumentError):
        await client.call(Q, "purge")  # neither ids nor everything: refused
    assert await client.call(Q, "purge", everything=True) == 1
    assert await client.call(Q, "dead") == []


async def test_expired_lease_is_redelivered_with_its_delivery_count(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server, lease=0.3)
    client = await zmicro_client(qs.endpoint)
    task_id = await client.submit("jobs.record", Job(7))
    # A worker that takes the task and then goes silent (frozen, killed, cut off).
    first = await client.call(Q, "fetch", worker="frozen", credit={"jobs.record": 1}, wait_ms=0)
    [[tid, _name, _payload, deliveries, token]] = first["tasks"]
    assert (tid, deliveries) == (task_id, 1)
    second = await client.call(Q, "fetch", worker="other", credit={"jobs.record": 1}, wait_ms=3000)
    [[tid2, _, _, deliveries2, token2]] = second["tasks"]
    assert (tid2, deliveries2) == (task_id, 2)
    assert await client.call(Q, "ack", task_id=tid, token=token) is False  # the lease was lost
    assert await client.call(Q, "ack", task_id=tid2, token=token2) is True
    c = counters(queue)
    assert (c["lease_expired"], c["redelivered"], c["stale_settles"], c["acked"]) == (1, 1, 1, 1)


async def test_lease_is_renewed_while_a_long_handler_runs(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server, lease=0.3)
    rec = Recorder()
    await worker(zmicro_server, rec, qs)
    client = await zmicro_client(qs.endpoint)
    await client.submit("jobs.record", Job(1, sleep=1.2))  # four leases long
    await until(lambda: rec.done == [1] and counters(queue).get("acked") == 1)
    assert counters(queue).get("lease_expired", 0) == 0
    assert counters(queue).get("redelivered", 0) == 0


async def test_slow_worker_gets_no_more_than_it_can_run(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    _, qs = await broker(zmicro_server)
    slow, fast = Slow(), Fast()
    slow_server = await worker(zmicro_server, slow, qs)
    await worker(zmicro_server, fast, qs)
    client = await zmicro_client(qs.endpoint)
    for i in range(60):
        await client.submit("jobs.shared", Job(i))
    await until(lambda: len(slow.done) + len(fast.done) == 60)
    assert sorted(slow.done + fast.done) == list(range(60))
    held = slow_server.statistics()["components"]["tasks"]["tasks"]["jobs.shared"]
    assert held["max_running"] == 1  # one slot: it never held a backlog
    assert len(slow.done) < len(fast.done)


async def test_submit_policies_when_the_queue_is_full(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server, max_pending=5)
    client = await zmicro_client(qs.endpoint)
    for i in range(5):
        assert await client.submit("jobs.record", Job(i), on_full="raise") is not None
    with pytest.raises(zmicro.OverloadedError, match="full"):
        await client.submit("jobs.record", Job(5), on_full="raise")
    assert await client.submit("jobs.record", Job(5), on_full="drop") is None
    with pytest.raises(zmicro.DeadlineExceededError):
        await client.submit("jobs.record", Job(5), _timeout=0.3)  # "wait" is the default
    # Waiting succeeds as soon as a worker makes room.
    waiting = asyncio.ensure_future(client.submit("jobs.record", Job(5), _timeout=10))
    rec = Recorder()
    await worker(zmicro_server, rec, qs)
    assert await waiting is not None
    await until(lambda: len(rec.done) == 6)
    stats = client.task_statistics()
    assert stats["submit_dropped"] == 1
    assert stats["submit_wait_expired"] == 1
    assert stats["submit_full"] >= 3
    assert counters(queue)["rejected_full"] >= 3
    with pytest.raises(zmicro.ConfigurationError):
        await client.submit("jobs.record", Job(1), on_full="later")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["drop", "wait"])
async def test_producer_at_ten_times_capacity_keeps_memory_flat(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory, policy: str
) -> None:
    bound = 40
    queue, qs = await broker(zmicro_server, max_pending=bound)
    rec = Recorder()
    ws = await worker(zmicro_server, rec, qs)
    client = await zmicro_client(qs.endpoint)
    deepest = 0

    async def produce(n: int, start: int) -> list[int | None]:
        # Eight producers at once, each as fast as the queue answers: far above what one
        # worker with four slots of 10 ms each can take.
        nonlocal deepest
        out: list[int | None] = []
        for i in range(start, start + n):
            out.append(await client.submit("jobs.record", Job(i, sleep=0.01), on_full=policy, _timeout=30))  # type: ignore[arg-type]
            deepest = max(deepest, queue.store.pending("jobs.record"))
        return out

    async def burst(n: int, start: int) -> list[int | None]:
        parts = await asyncio.gather(*(produce(n // 8, start + k * (n // 8)) for k in range(8)))
        return [x for part in parts for x in part]

    await burst(400, 0)  # warm up
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        accepted = await burst(1600, 400)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert deepest <= bound
    assert after - before < 1024 * 1024, f"memory grew by {after - before} bytes"
    stats = client.task_statistics()
    if policy == "drop":
        assert stats["submit_dropped"] > 0
        assert stats["submit_dropped"] + stats["submitted"] == 2000
        kept = sum(1 for x in accepted if x is not None)
        await until(lambda: len(rec.done) >= kept, 30)
    else:
        assert stats.get("submit_dropped", 0) == 0
        assert all(x is not None for x in accepted)
        assert stats["submit_full"] > 0  # it did have to wait
        await until(lambda: len(rec.done) == 2000, 30)
    await until(lambda: counters(queue).get("acked") == stats["submitted"], 30)
    assert ws.statistics()["components"]["tasks"]["tasks"]["jobs.record"]["max_running"] <= 4


async def test_expired_tasks_are_dropped_and_counted(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server)
    client = await zmicro_client(qs.endpoint)
    await client.submit("jobs.record", Job(1), ttl=0.05)
    await client.submit("jobs.record", Job(2))
    await asyncio.sleep(0.2)
    rec = Recorder()
    await worker(zmicro_server, rec, qs)
    await until(lambda: rec.done == [2] and counters(queue).get("acked") == 1)
    assert counters(queue)["expired"] == 1


async def test_idempotency_key_stores_a_task_once(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server)
    client = await zmicro_client(qs.endpoint)
    a = await client.submit("jobs.record", Job(1), key="order-17")
    b = await client.submit("jobs.record", Job(1), key="order-17")
    assert a == b
    assert queue.store.pending("jobs.record") == 1
    assert counters(queue)["duplicates"] == 1


async def test_fire_and_forget_send_counts_every_drop(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server, max_stream=10)
    client = await zmicro_client(qs.endpoint)
    for i in range(100):
        assert client.send("jobs.record", Job(i)) is True
    await until(lambda: client.task_statistics().get("send_dropped_remote") == 90)
    assert counters(queue)["stream_dropped"] == 90
    assert queue.statistics()["stream"] == {"jobs.record": 10}
    rec = Recorder()
    ws = await worker(zmicro_server, rec, qs)
    await until(lambda: len(rec.done) == 10)
    assert counters(queue).get("acked", 0) == 0  # no acks for fire-and-forget
    assert ws.statistics()["components"]["tasks"]["counters"]["done"] == 10

    # The local buffer is bounded too: past it, send() drops at once and says so.
    client._tasks().max_buffered = 3
    results = [client.send("jobs.record", Job(i)) for i in range(10)]
    assert results.count(False) >= 7
    assert client.task_statistics()["send_dropped_local"] >= 7


async def test_accepted_tasks_survive_a_broker_restart(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory, tmp_path: Path
) -> None:
    path = tmp_path / "queue.db"
    first = zmicro.TaskQueue(path, lease=1.0)
    async with zmicro.open_server(first) as qs, zmicro.open_client(qs.endpoint) as client:
        for i in range(10):
            await client.submit("jobs.record", Job(i))
    queue, qs2 = await broker(zmicro_server, path=path)
    assert queue.statistics()["tasks"]["jobs.record"]["ready"] == 10
    rec = Recorder()
    await worker(zmicro_server, rec, qs2)
    await until(lambda: sorted(rec.done) == list(range(10)))


async def test_stopping_worker_hands_back_unfinished_tasks(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue, qs = await broker(zmicro_server, lease=5.0)
    client = await zmicro_client(qs.endpoint)
    first = Recorder()
    first.task_queue = qs.endpoint  # type: ignore[attr-defined]
    await client.submit("jobs.record", Job(1, sleep=30))
    async with zmicro.open_server(first, grace=0.2) as ws:
        await until(lambda: ws.statistics()["components"]["tasks"]["tasks"]["jobs.record"]["running"] == 1)
    # Given back at shutdown, not left to a 5 s lease, and not counted as a failed try.
    await until(lambda: counters(queue).get("released") == 1)
    [[_, _, _, deliveries, _]] = (
        await client.call(Q, "fetch", worker="w2", credit={"jobs.record": 1}, wait_ms=1000)
    )["tasks"]
    assert deliveries == 1


async def test_plain_def_handler_runs_in_a_thread(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    _, qs = await broker(zmicro_server)
    svc = Blocking()
    await worker(zmicro_server, svc, qs)
    client = await zmicro_client(qs.endpoint)
    for i in range(4):
        await client.submit("jobs.blocking", Job(i, sleep=0.05))
    await until(lambda: len(svc.done) == 4)
    assert all(t.startswith("zmicro-task") for t in svc.threads)


async def test_worker_finds_the_queue_through_the_registry(
    zmicro_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZMICRO_QUEUE", raising=False)
    registry = StaticRegistry()
    _, qs = await broker(zmicro_server, registry=registry)
    rec = Recorder()
    await zmicro_server(rec, registry=registry)
    with zmicro.connect(qs.endpoint) as blocking:
        task_id = await asyncio.to_thread(blocking.submit, "jobs.record", Job(3))
    assert task_id is not None
    await until(lambda: rec.done == [3])


def test_task_declarations_are_checked() -> None:
    with pytest.raises(zmicro.ConfigurationError, match="invalid task name"):
        zmicro.task("bad name")
    with pytest.raises(zmicro.ConfigurationError, match="concurrency"):
        zmicro.task("x", concurrency=0)

    class TwoArgs(zmicro.Service):
        name = "two"

        @zmicro.task("x")
        async def handle(self, a: int, b: int) -> None: ...

    server = zmicro.Server([TwoArgs()])
    with pytest.raises(zmicro.ConfigurationError, match="exactly one argument"):
        _task_worker(server)


def test_a_worker_without_any_queue_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZMICRO_QUEUE", raising=False)
    server = zmicro.Server([Recorder()])
    with pytest.raises(zmicro.ConfigurationError, match="ZMICRO_QUEUE"):
        _task_worker(server)


def test_store_leases_by_token_and_counts_everything() -> None:
    store = TaskStore(":memory:", default_max_deliveries=2)
    a, _ = store.enqueue("t", b"\x01", now=0.0, max_pending=10)
    [lease] = store.claim("t", 5, now=1.0, lease=10.0)
    assert store.claim("t", 5, now=1.0, lease=10.0) == []  # leased: nobody else gets it
    assert store.expire_leases(now=5.0) == []
    assert store.expire_leases(now=12.0) == ["t"]  # first failed delivery
    [again] = store.claim("t", 5, now=12.0, lease=10.0)
    assert again.deliveries == 2
    assert store.ack(lease.id, lease.token) is False
    assert store.nack(again.id, again.token, "boom", now=13.0, retry_after=0.0) == "dead"
    [dead] = store.dead_letters()
    assert (dead["id"], dead["reason"], dead["error"]) == (a, "failed", "boom")
    assert store.replay([a], now=20.0) == 1
    [fresh] = store.claim("t", 1, now=20.0, lease=1.0)
    assert fresh.deliveries == 1
    assert store.ack(fresh.id, fresh.token) is True
    assert store.pending("t") == 0
    c = store.counters
    assert (c["lease_expired"], c["dead_lettered"], c["replayed"], c["stale_settles"]) == (1, 1, 1, 1)
    store.close()
