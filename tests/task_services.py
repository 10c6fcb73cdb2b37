"""Task handlers used by the work-queue tests (also run with ``zmicro run tests/task_services.py:Name``)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import msgspec

import zmicro


class Job(msgspec.Struct):
    n: int
    sleep: float = 0.0


class Recorder(zmicro.Service):
    """Records every job it finishes; in a process, also appends ``n`` to ``$TASKS_LOG``."""

    name = "recorder"

    def __init__(self) -> None:
        self.done: list[int] = []
        self.deliveries: list[int] = []
        self.changed = asyncio.Event()
        path = os.environ.get("TASKS_LOG")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if path else None

    @zmicro.task("jobs.record", concurrency=4, retry_delay=0.05, max_retry_delay=0.2)
    async def record(self, job: Job) -> None:
        if job.sleep:
            await asyncio.sleep(job.sleep)
        self.done.append(job.n)
        if self._fd is not None:
            os.write(self._fd, f"{job.n}\n".encode())
        self.changed.set()

    async def on_stop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class Flaky(zmicro.Service):
    """``jobs.poison`` always raises; ``jobs.ok`` always works."""

    name = "flaky"

    def __init__(self) -> None:
        self.ok: list[int] = []
        self.poison_calls = 0

    @zmicro.task("jobs.poison", concurrency=2, max_deliveries=3, retry_delay=0.05, max_retry_delay=0.1)
    async def poison(self, job: Job) -> None:
        self.poison_calls += 1
        raise ValueError(f"cannot handle job {job.n}")

    @zmicro.task("jobs.ok", concurrency=2)
    async def ok_job(self, job: Job) -> None:
        self.ok.append(job.n)


class Slow(zmicro.Service):
    """One slot, slow handler: must never hold more work than it runs."""

    name = "slow"

    def __init__(self) -> None:
        self.done: list[int] = []

    @zmicro.task("jobs.shared", concurrency=1)
    async def work(self, job: Job) -> None:
        await asyncio.sleep(0.3)
        self.done.append(job.n)


class Fast(zmicro.Service):
    name = "fast"

    def __init__(self) -> None:
        self.done: list[int] = []

    @zmicro.task("jobs.shared", concurrency=4)
    async def work(self, job: Job) -> None:
        await asyncio.sleep(0.005)
        self.done.append(job.n)


class Blocking(zmicro.Service):
    """A plain ``def`` handler: runs in a thread."""

    name = "blocking"

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.done: list[int] = []

    @zmicro.task("jobs.blocking", concurrency=2)
    def work(self, job: Job) -> None:
        time.sleep(job.sleep)
        self.threads.add(threading.current_thread().name)
        self.done.append(job.n)


def stored_ids(path: Path) -> set[int]:
    """Task ids committed to the database file, read by a connection of our own."""
    db = sqlite3.connect(path)
    try:
        return {int(r[0]) for r in db.execute("SELECT id FROM tasks")}
    finally:
        db.close()
