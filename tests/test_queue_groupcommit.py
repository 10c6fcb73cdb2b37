"""Group commit in the task queue: many writes share one COMMIT, and still "accepted means stored"."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import zmicro
from conftest import free_port
from task_services import Job, Recorder, stored_ids
from test_tasks_processes import zmicro_run
from zmicro.queue import TaskStore
from zmicro.testing import ClientFactory, ServerFactory

pytestmark = pytest.mark.timeout(60)

Q = "zmicro.queue"


async def test_concurrent_submits_share_commits_and_are_all_stored(
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
    # Answered means committed: another connection sees every one of them already.
    assert stored_ids(path) == set(ids)
    assert 1 <= len(commits) < 300 / 4  # a few shared transactions, not one per task
    assert queue.statistics()["counters"]["accepted"] == 300


async def test_a_failed_commit_fails_every_writer_in_it_and_undoes_their_counts(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory, tmp_path: Path
) -> None:
    path = tmp_path / "queue.db"
    queue = zmicro.TaskQueue(path, lease=1.0)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    kept = await client.submit("jobs.record", Job(0))
    store = queue.store
    real_commit = store.commit
    failures = 0

    def failing_commit() -> None:
        nonlocal failures
        failures += 1
        store.rollback()  # what a COMMIT that fails does: nothing of the transaction stays
        raise sqlite3.OperationalError("disk I/O error")

    store.commit = failing_commit  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(client.submit("jobs.record", Job(i), on_full="raise") for i in range(1, 51)), return_exceptions=True
    )
    store.commit = real_commit  # type: ignore[method-assign]
    assert failures >= 1
    assert all(isinstance(r, zmicro.RemoteError) for r in results), results
    assert "disk I/O error" in str(results[0])
    assert stored_ids(path) == {kept}
    assert store.pending("jobs.record") == 1
    assert queue.statistics()["counters"]["accepted"] == 1
    # The queue goes on: the next writes commit, and a worker gets exactly what was stored.
    later = await client.submit("jobs.record", Job(99))
    rec = Recorder()
    rec.task_queue = qs.endpoint  # type: ignore[attr-defined]
    await zmicro_server(rec)
    async with asyncio.timeout(10):
        while sorted(rec.done) != [0, 99] or store.pending("jobs.record"):
            await asyncio.sleep(0.01)
    assert stored_ids(path) == set()
    assert later != kept


def test_a_shared_transaction_rolls_back_with_its_counts() -> None:
    store = TaskStore(":memory:")
    a, _ = store.enqueue("t", b"a", now=0.0, max_pending=10)
    store.begin()
    store.enqueue("t", b"b", now=0.0, max_pending=10)
    [lease] = store.claim("t", 1, now=0.0, lease=5.0)
    assert lease.id == a
    assert store.pending("t") == 2
    store.rollback()
    assert store.pending("t") == 1
    assert store.counters["accepted"] == 1
    assert store.counters.get("delivered", 0) == 0
    [again] = store.claim("t", 5, now=0.0, lease=5.0)  # not leased after all
    assert (again.id, again.deliveries) == (a, 1)
    store.begin()
    assert store.ack(again.id, again.token) is True
    store.commit()
    assert store.pending("t") == 0
    store.close()


async def test_submits_are_paced_past_the_soft_bound_while_workers_take_the_name(
    zmicro_server: ServerFactory, zmicro_client: ClientFactory
) -> None:
    queue = zmicro.TaskQueue(":memory:", lease=1.0, soft_max_pending=5, max_pending=1000)
    qs = await zmicro_server(queue)
    client = await zmicro_client(qs.endpoint)
    # Nobody takes the name yet: nothing to wait for, so nothing is held.
    await asyncio.gather(*(client.submit("jobs.record", Job(i)) for i in range(10)))
    assert queue.statistics()["counters"].get("submits_paced", 0) == 0
    rec = Recorder()
    rec.task_queue = qs.endpoint  # type: ignore[attr-defined]
    await zmicro_server(rec)
    deepest = 0

    async def submit(i: int) -> Any:
        nonlocal deepest
        out = await client.submit("jobs.record", Job(i, sleep=0.005))
        deepest = max(deepest, queue.store.pending("jobs.record"))
        return out

    async with asyncio.timeout(10):
        while len(rec.done) < 10:
            await asyncio.sleep(0.01)
    ids = await asyncio.gather(*(submit(i) for i in range(10, 110)))
    assert len(set(ids)) == 100
    assert queue.statistics()["counters"]["submits_paced"] > 0
    assert deepest <= 2 * 5  # held near the soft bound instead of growing with intake
    async with asyncio.timeout(20):
        while len(rec.done) < 110:
            await asyncio.sleep(0.01)
    assert sorted(rec.done) == list(range(110))


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_every_answered_submit_survives_kill_9_mid_stream(tmp_path: Path) -> None:
    """Many submits in flight, group-committed; kill -9 the queue: every answered one is on disk."""
    queue_ep = f"tcp://127.0.0.1:{free_port()}"
    db = tmp_path / "queue.db"
    queue_env = {"ZMICRO_QUEUE_DB": str(db), "ZMICRO_QUEUE_LEASE": "1"}
    answered: list[int] = []
    async with zmicro.open_client(queue_ep, timeout=10) as client:
        with zmicro_run("zmicro.queue:TaskQueue", queue_ep, **queue_env) as (broker, _):

            async def producer(k: int) -> None:
                # Submits until one fails: the last one of each producer is in flight at the kill
                # or sent after it. Answers that arrived before the kill but are read after it
                # count as answered too (they were committed before they were sent).
                i = 0
                while True:
                    task_id = await client.submit("jobs.record", Job(k * 1_000_000 + i))
                    assert task_id is not None
                    answered.append(task_id)
                    i += 1

            producers = [asyncio.ensure_future(producer(k)) for k in range(128)]
            async with asyncio.timeout(30):
                while len(answered) < 3000:
                    await asyncio.sleep(0.005)
            os.kill(broker.pid, signal.SIGKILL)  # submits still in flight, a transaction maybe open
            await asyncio.to_thread(broker.wait, 10)
            async with asyncio.timeout(30):  # each fails at the latest when its call times out
                outcomes = await asyncio.gather(*producers, return_exceptions=True)
        assert all(isinstance(o, zmicro.CallError) for o in outcomes), outcomes
        on_disk = stored_ids(db)
        assert set(answered) <= on_disk
        # And a restarted queue serves them all.
        with zmicro_run("zmicro.queue:TaskQueue", queue_ep, **queue_env):
            stats = await client.call(Q, "stats", _timeout=10)
    assert stats["tasks"]["jobs.record"]["ready"] == len(on_disk)
