"""Batched requests to the task queue: submits, acks and nacks made together share a request and a commit."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

import zmicro
from conftest import free_port
from task_services import Job, stored_ids
from test_tasks import until
from test_tasks_processes import zmicro_run
from zmicro.testing import ClientFactory, ServerFactory

pytestmark = pytest.mark.timeout(60)

Q = "zmicro.queue"


def counters(queue: zmicro.TaskQueue) -> dict[str, int]:
    return queue.statistics()["counters"]  # type: ignore[no-any-return]


def worker_stats(server: zmicro.Server) -> dict[str, Any]:
    return server.statistics()["components"]["tasks"]  # type: ignore[no-any-return]


class Gate(zmicro.Service):
    """Many slots; every handler waits for ``gate`` (the first time), so they finish together."""

    name = "gate"

    def __init__(self, queue: str) -> None:
        self.task_queue = queue
        self.gate = asyncio.Event()
        self.started: list[int] = []
        self.done: list[int] = []

    @zmicro.task("jobs.gate", concurrency=32)
    async def work(self, job: Job) -> None:
        self.started.append(job.n)
        await self.gate.wait()
        self.done.append(job.n)


class Failing(zmicro.Service):
    name = "failing"

    def __init__(self, queue: str) -> None:
        self.task_queue = queue
        self.calls = 0

    @zmicro.task("jobs.fail", concurrency=16, max_deliveries=2, retry_delay=0.01, max_retry_delay=0.02)
    async def work(self, job: Job) -> None:
        self.calls += 1
        raise ValueError(f"job {job.n} fails")


class OldQueue(zmicro.TaskQueue):
    """A queue from before the batched methods: clients must fall back to one call per task."""

    submit_many = None  # type: ignore[assignment]
    ack_many = None  # type: ignore[assignment]
    nack_many = None  # type: ignore[assignment]


async def test_submits_made_together_share_one_request_and_each_gets_its_own_committed_id(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory, tmp_path: Path
) -> None:
    path = tmp_path / "queue.db"
    queue = zmicro.TaskQueue(path, lease=1.0)
    qs = await zmicro_server(queue)
    commits: list[str] = []
    queue.store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    client = await zmicro_client(qs.endpoint)
    ids = await asyncio.gather(*(client.submit("jobs.record", Job(i)) for i in range(300)))
    assert len(set(ids)) == 300
    assert stored_ids(path) == set(ids)  # answered means committed
    assert len(commits) <= 2
    stats = client.task_statistics()
    assert stats["submit_batches"] == 1
    assert stats["submitted"] == 300
    assert counters(queue)["accepted"] == 300
    # Each caller got the id of its own payload.
    rows = dict(sqlite3.connect(path).execute("SELECT id, payload FROM tasks").fetchall())
    assert [msgspec.msgpack.decode(rows[i], type=Job).n for i in ids] == list(range(300))


async def test_per_item_errors_reach_the_right_caller_under_its_own_policy(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue = zmicro.TaskQueue(":memory:", lease=1.0, max_pending=5)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    results = await asyncio.gather(
        *(client.submit("jobs.record", Job(i), on_full="raise") for i in range(5)),
        client.submit("jobs.record", Job(5), ttl=-1.0),
        client.submit("jobs.record", Job(6), on_full="drop"),
        client.submit("jobs.record", Job(7), on_full="raise"),
        client.submit("jobs.record", Job(8), on_full="wait", _timeout=0.3),
        return_exceptions=True,
    )
    assert all(isinstance(r, int) for r in results[:5]), results
    assert isinstance(results[5], zmicro.InvalidArgumentError) and results[5].field == "ttl"
    assert results[6] is None
    assert isinstance(results[7], zmicro.OverloadedError)
    assert isinstance(results[8], zmicro.DeadlineExceededError)
    stats = client.task_statistics()
    assert stats["submit_dropped"] == 1
    assert stats["submit_retries"] >= 1  # the waiting one tried again, alone or in later batches
    assert counters(queue)["accepted"] == 5
    assert queue.store.pending("jobs.record") == 5


async def test_keys_and_ttls_hold_within_one_batch(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue = zmicro.TaskQueue(":memory:", lease=1.0)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    a1, b, a2, a3, short = await asyncio.gather(
        client.submit("jobs.gate", Job(1), key="a"),
        client.submit("jobs.gate", Job(2), key="b"),
        client.submit("jobs.gate", Job(3), key="a"),
        client.submit("jobs.gate", Job(4), key="a"),
        client.submit("jobs.gate", Job(5), ttl=0.05),
    )
    assert a1 == a2 == a3 != b
    assert counters(queue)["accepted"] == 3
    assert counters(queue)["duplicates"] == 2
    assert client.task_statistics()["submit_batches"] == 1
    await asyncio.sleep(0.1)  # the short one expires before any worker comes
    gate = Gate(qs.endpoint)
    gate.gate.set()
    await zmicro_server(gate)
    await until(lambda: sorted(gate.done) == [1, 2])
    await until(lambda: counters(queue).get("expired", 0) == 1)
    assert short not in (a1, b)


async def test_acks_of_handlers_finishing_together_leave_in_one_request_and_report_lost_leases(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory, tmp_path: Path
) -> None:
    path = tmp_path / "queue.db"
    queue = zmicro.TaskQueue(path, lease=1.0)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    ids = [await client.submit("jobs.gate", Job(i)) for i in range(20)]
    gate = Gate(qs.endpoint)
    ws = await zmicro_server(gate)
    await until(lambda: len(gate.started) == 20)
    # Half of the leases are lost meanwhile (as if they had run out and gone to another worker).
    lost = set(ids[::2])
    await queue._settled()
    queue.store._db.executemany("UPDATE tasks SET token = token + 1 WHERE id = ?", [(i,) for i in lost])
    gate.gate.set()
    await until(lambda: len(gate.done) == 20)
    await until(lambda: counters(queue).get("acked", 0) == 10)
    stats = worker_stats(ws)
    assert stats["counters"]["settle_batches"] >= 1
    await until(lambda: worker_stats(ws)["counters"].get("stale_settles", 0) == 10)
    assert counters(queue)["stale_settles"] == 10
    assert stored_ids(path) == lost  # the acked ones are gone for good, the lost ones are not
    # The lost leases run out and their tasks come back: nothing is lost.
    await until(lambda: len(gate.done) == 30 and not queue.store.pending("jobs.gate"))
    assert sorted(gate.done[20:]) == sorted(i for i in range(20) if ids[i] in lost)


async def test_nacks_of_handlers_failing_together_are_batched_and_counted(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue = zmicro.TaskQueue(":memory:", lease=1.0)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    await asyncio.gather(*(client.submit("jobs.fail", Job(i)) for i in range(16)))
    failing = Failing(qs.endpoint)
    ws = await zmicro_server(failing)
    await until(lambda: counters(queue).get("dead_lettered", 0) == 16)
    assert failing.calls == 32
    assert counters(queue)["failed"] == 32
    await until(lambda: worker_stats(ws)["counters"].get("dead_lettered", 0) == 16)
    assert worker_stats(ws)["counters"]["settle_batches"] >= 1
    dead = await client.call(Q, "dead", name="jobs.fail")
    assert len(dead) == 16 and all("fails" in d["error"] for d in dead)


async def test_batched_methods_answer_each_item(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue = zmicro.TaskQueue(":memory:", lease=5.0)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    answers = await client.call(
        Q, "submit_many", name="jobs.x", items=[[b"\x01", None, None], [b"\x02", 0, None]]
    )
    assert isinstance(answers[0], int) and answers[1]["code"] == "invalid_argument"
    await client.call(Q, "submit_many", name="jobs.x", items=[[b"\x03", None, None], [b"\x04", None, None]])
    reply = await client.call(Q, "fetch", worker="w", credit={"jobs.x": 3}, wait_ms=0)
    leases = [[t[0], t[4]] for t in reply["tasks"]]
    assert len(leases) == 3
    acked = await client.call(Q, "ack_many", leases=[leases[0], [leases[1][0], leases[1][1] + 1]])
    assert acked == [True, False]
    nacked = await client.call(Q, "nack_many", items=[[*leases[1], "boom", 0.0], [*leases[0], "late", 0.0]])
    assert nacked == ["retry", "stale"]
    with pytest.raises(zmicro.InvalidArgumentError):
        await client.call(Q, "ack_many", leases=[[1, 2**63]])
    with pytest.raises(zmicro.InvalidArgumentError):
        await client.call(Q, "submit_many", name="bad name", items=[[b"\x01", None, None]])
    c = counters(queue)
    assert (c["acked"], c["failed"], c["stale_settles"]) == (1, 1, 2)


async def test_producer_and_worker_fall_back_to_single_calls_with_an_older_queue(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue = OldQueue(":memory:", lease=1.0)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    ids = await asyncio.gather(*(client.submit("jobs.gate", Job(i)) for i in range(40)))
    assert len(set(ids)) == 40
    gate = Gate(qs.endpoint)
    gate.gate.set()
    ws = await zmicro_server(gate)
    await until(lambda: counters(queue).get("acked", 0) == 40)
    assert sorted(gate.done) == list(range(40))
    stats = worker_stats(ws)["counters"]
    assert stats.get("stale_settles", 0) == 0
    assert stats.get("settle_errors", 0) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_kill_9_with_batched_submits_and_acks_in_flight_loses_nothing(tmp_path: Path) -> None:
    """Answered submits and acks are on disk; unanswered acks may be redone, but no task is lost."""
    queue_ep = f"tcp://127.0.0.1:{free_port()}"
    db = tmp_path / "queue.db"
    queue_env = {"ZMICRO_QUEUE_DB": str(db), "ZMICRO_QUEUE_LEASE": "1"}
    submitted: set[int] = set()
    ack_sent: set[int] = set()
    ack_answered: set[int] = set()
    async with zmicro.open_client(queue_ep, timeout=10) as client:
        with zmicro_run("zmicro.queue:TaskQueue", queue_ep, **queue_env) as (broker, _):
            stop = False

            async def producer(k: int) -> None:
                i = 0
                while not stop:
                    task_id = await client.submit("jobs.record", Job(k * 1_000_000 + i))
                    assert task_id is not None
                    submitted.add(task_id)
                    i += 1

            async def consumer(k: int) -> None:
                while not stop:
                    reply = await client.call(
                        Q, "fetch", worker=f"w{k}", credit={"jobs.record": 64}, wait_ms=200
                    )
                    leases = [[t[0], t[4]] for t in reply["tasks"]]
                    if not leases:
                        continue
                    ack_sent.update(t for t, _ in leases)
                    # Several acks at once: they leave together in one request.
                    answers = await client.call(Q, "ack_many", leases=leases)
                    ack_answered.update(t for (t, _), ok in zip(leases, answers, strict=True) if ok)

            tasks = [asyncio.ensure_future(producer(k)) for k in range(128)]
            tasks += [asyncio.ensure_future(consumer(k)) for k in range(4)]
            async with asyncio.timeout(60):
                while len(ack_answered) < 3000 or client.task_statistics().get("submit_batches", 0) < 5:
                    await asyncio.sleep(0.005)
            os.kill(broker.pid, signal.SIGKILL)  # submits and acks in flight, a transaction maybe open
            broker.wait(10)
            stop = True
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        # Answers already on their way when it died end some loops cleanly; the rest were in flight.
        assert all(o is None or isinstance(o, zmicro.CallError) for o in outcomes), outcomes
        assert any(isinstance(o, zmicro.CallError) for o in outcomes)
        on_disk = stored_ids(db)
        assert not ack_answered & on_disk  # an answered ack is durable: the task is gone
        assert submitted <= on_disk | ack_sent  # an answered submit is stored, or was worked on
        # And a restarted queue serves every stored task, the unanswered acks' ones included.
        with zmicro_run("zmicro.queue:TaskQueue", queue_ep, **queue_env):
            stats = await client.call(Q, "stats", _timeout=10)
    depth = stats["tasks"].get("jobs.record", {})
    assert sum(depth.get(k, 0) for k in ("ready", "leased", "delayed")) == len(on_disk)
