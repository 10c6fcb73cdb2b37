"""Shutdown is bounded and orderly, in-process and through ``zmicro run`` with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import zmicro
from conftest import zmicro_run
from services import Probe
from zmicro.testing import ClientFactory

HERE = Path(__file__).parent
pytestmark = pytest.mark.timeout(60)


async def test_in_flight_calls_finish_within_grace_queued_ones_are_told(
    zmicro_client: ClientFactory,
) -> None:
    probe = Probe()
    server = zmicro.Server([probe], bind="tcp://127.0.0.1:0", grace=5.0)
    await server.start()
    adm = server._hosted["probe"].admission
    adm.max_active = 1
    client = await zmicro_client(server.endpoint)
    running = asyncio.ensure_future(client.probe.sleep(seconds=0.5, tag="running"))
    async with asyncio.timeout(10):
        while "running" not in probe.started:
            await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(client.probe.sleep(seconds=0, tag="queued"))
    async with asyncio.timeout(10):
        while adm.queued < 1:
            await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(server.stop())
    await asyncio.sleep(0.05)
    assert await running == "running"  # finished within the grace period
    with pytest.raises(zmicro.UnavailableError):
        await queued
    await asyncio.wait_for(stopping, 5)
    assert "queued" not in probe.started


async def test_handler_past_grace_is_cancelled_and_its_caller_told(zmicro_client: ClientFactory) -> None:
    probe = Probe()
    server = zmicro.Server([probe], bind="tcp://127.0.0.1:0", grace=0.3)
    await server.start()
    client = await zmicro_client(server.endpoint)
    stuck = asyncio.ensure_future(client.probe.sleep(seconds=60, tag="stuck", _timeout=60))
    blocked = asyncio.ensure_future(client.probe.block(seconds=3, _timeout=60))
    async with asyncio.timeout(10):  # both handlers running (a busy machine may take a while)
        while server.statistics()["running"] < 2:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(server.stop(), 5)  # never hangs, even with a blocked thread
    with pytest.raises(zmicro.UnavailableError, match="shutdown"):
        await asyncio.wait_for(stuck, 2)
    with pytest.raises(zmicro.UnavailableError):
        await asyncio.wait_for(blocked, 2)
    assert "stuck" in probe.cancelled


def test_sigterm_stops_zmicro_run_cleanly() -> None:
    run = ("services.py:Slow", "services.py:Probe", "--bind", "tcp://127.0.0.1:0", "--grace", "2")
    with zmicro_run(*run) as (proc, line):
        assert line.startswith("zmicro: serving slow, probe on tcp://127.0.0.1:"), line
        with zmicro.connect(line.rsplit(" ", 1)[1].strip()) as client:
            assert client.slow.hello() == "hi"  # two services, one process
            assert client.probe.echo(value=1) == 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0


def test_sigterm_with_a_stuck_plain_def_handler_still_exits() -> None:
    errors: list[BaseException] = []
    run = ("services.py:Probe", "--bind", "tcp://127.0.0.1:0", "--grace", "0.5")
    with zmicro_run(*run) as (proc, line), zmicro.connect(line.rsplit(" ", 1)[1].strip()) as client:

        def blocked_call() -> None:
            try:
                client.probe.block(seconds=60, _timeout=60)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=blocked_call)
        t.start()
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        t.join(10)
    assert errors
    assert isinstance(errors[0], (zmicro.UnavailableError, zmicro.PeerLostError))
