"""Events between separate processes on one machine, through the ``zmicro`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
ZMICRO_RUN = (sys.executable, "-m", "zmicro", "run")
pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def zmicro(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmicro", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def serve(self, target: str, *extra: str) -> str:
        proc = subprocess.Popen(
            [*ZMICRO_RUN, target, "--bind", "tcp://127.0.0.1:0", "--grace", "1", *extra],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=ENV,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("zmicro: serving"), line
        return line.rsplit(" ", 1)[1].strip()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                assert proc.wait(15) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                if proc.stdout is not None:
                    proc.stdout.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop()


def test_group_and_broadcast_between_processes(processes: Processes) -> None:
    pub = processes.serve("tests/event_services.py:Orders")
    tallies = [processes.serve("tests/event_services.py:Tally", "--events-from", pub) for _ in range(3)]
    # burst waits for the three subscribers (the readiness handshake), then publishes at once.
    r = zmicro("call", pub, "orders.burst", json.dumps({"n": 300, "expect": {"tally": 3}}))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 1200  # per event: 3 broadcast copies + 1 to the group
    counts = []
    for endpoint in tallies:
        for _ in range(50):
            r = zmicro("call", endpoint, "tally.counts")
            assert r.returncode == 0, r.stderr
            got = json.loads(r.stdout)
            if got["broadcast"] == 300:
                break
        counts.append(got)
    assert [c["broadcast"] for c in counts] == [300, 300, 300]
    assert sum(c["group"] for c in counts) == 300
    assert all(c["group"] == 100 for c in counts)  # round robin over three
    info = zmicro("info", pub)
    assert info.returncode == 0, info.stderr
    assert "events.publisher" in info.stdout and "deliveries" in info.stdout
    info = zmicro("info", tallies[0])
    assert "events.subscriber" in info.stdout and "gaps" in info.stdout


def test_cli_subscribe_and_publish(processes: Processes) -> None:
    pub = processes.serve("tests/event_services.py:Orders")
    tail = subprocess.Popen(
        [sys.executable, "-m", "zmicro", "subscribe", pub, "order.", "--count", "2", "--duration", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=ENV,
    )
    try:
        assert tail.stderr is not None
        assert "subscribed" in tail.stderr.readline()
        r = zmicro("publish", pub, "invoice.sent", '{"id": 0}')
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"deliveries": 0}  # nobody listens to invoices
        for i in (1, 2):
            r = zmicro("publish", pub, "order.placed", json.dumps({"id": i, "total": 5}))
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout) == {"deliveries": 1}
        out, _ = tail.communicate(timeout=20)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert tail.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        {"topic": "order.placed", "event": {"id": 1, "total": 5}, "seq": 1, "gap": 0},
        {"topic": "order.placed", "event": {"id": 2, "total": 5}, "seq": 2, "gap": 0},
    ]
    r = zmicro("publish", pub, "", "1")
    assert r.returncode == 1 and "invalid_argument" in r.stderr


def call_json(endpoint: str, target: str, args: dict[str, object] | None = None) -> object:
    r = zmicro("call", endpoint, target, json.dumps(args or {}))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_frozen_subscriber_process_sees_exactly_what_it_missed(processes: Processes) -> None:
    pub = processes.serve("tests/event_services.py:Orders")
    rec = processes.serve("tests/event_services.py:Recorder", "--events-from", pub)
    frozen = processes.procs[-1]
    assert call_json(pub, "orders.burst", {"n": 0, "expect": {"recorder": 1}}) == 0  # it has subscribed
    frozen.send_signal(signal.SIGSTOP)  # not reading at all: its queues fill, then events are dropped
    try:
        # Published in one go, far more than the queues between the processes hold.
        sent = call_json(pub, "orders.burst", {"n": 30_000, "size": 2000})
    finally:
        frozen.send_signal(signal.SIGCONT)
    r = zmicro("info", "--json", pub)
    publisher = json.loads(r.stdout)["stats"]["components"]["events.publisher"]
    stream = next(iter(publisher["per_stream"].values()))
    assert stream["dropped"] > 0  # the drop policy dropped, and counted
    assert sent == 30_000 - stream["dropped"]
    assert call_json(pub, "orders.burst", {"n": 1, "topic": "marker"}) == 1
    for _ in range(100):
        counts = call_json(rec, "recorder.counts")
        assert isinstance(counts, dict)
        if counts["got"] + counts["gaps"] >= 30_001:
            break
    # Every event is either handled or reported missing, exactly once.
    assert counts["got"] + counts["gaps"] == 30_001
    assert counts["gaps"] == stream["dropped"]
