"""The caller's side under faults: late replies, 20,000 timeouts, a server killed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

import zmicro
from conftest import free_port, zmicro_run
from zmicro import protocol as p

HERE = Path(__file__).parent


@contextlib.asynccontextmanager
async def fake_server(behaviour: str, delay: float = 0.2) -> AsyncIterator[str]:
    """A raw ROUTER that answers late ('late') or never ('blackhole')."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    async def reply_later(peer: bytes, req: p.Request) -> None:
        await asyncio.sleep(delay)
        await sock.send_multipart([peer, p.encode_reply(req.id, p.decode_value(req.args)["value"])])

    async def loop() -> None:
        tasks = set()
        while True:
            peer, body = await sock.recv_multipart()
            msg = p.decode(body)
            if behaviour == "late" and isinstance(msg, p.Request):
                t = asyncio.ensure_future(reply_later(peer, msg))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

    task = asyncio.ensure_future(loop())
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close(linger=0)
        ctx.term()


@pytest.mark.timeout(30)
async def test_late_reply_is_dropped_counted_and_never_misdelivered() -> None:
    async with fake_server("late", delay=0.3) as endpoint, zmicro.open_client(endpoint) as client:
        with pytest.raises(zmicro.DeadlineExceededError):
            await client.call("x", "echo", value="first", _timeout=0.1)
        # The late reply to "first" arrives while this call waits: it must not take it.
        assert await client.call("x", "echo", value="second", _timeout=5) == "second"
        stats = client.statistics()[endpoint]
        assert stats["late_replies"] == 1
        assert stats["pending"] == 0


@pytest.mark.timeout(120)
async def test_twenty_thousand_timeouts_leave_nothing_behind() -> None:
    async with fake_server("blackhole") as endpoint, zmicro.open_client(endpoint) as client:

        async def burst(n: int) -> None:
            results = await asyncio.gather(
                *(client.call("x", "echo", value=i, _timeout=0.005) for i in range(n)),
                return_exceptions=True,
            )
            assert all(isinstance(r, zmicro.DeadlineExceededError) for r in results)

        conn = client.connection(endpoint)
        await burst(2_000)  # warm up allocator pools and caches
        tracemalloc.start()
        try:
            await burst(2_000)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(8):
                await burst(2_000)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        stats = conn.statistics()
        assert stats["pending"] == 0
        # Each call expired, either waiting for its reply or (under this load) before it was sent.
        assert stats["expired"] + stats.get("expired_before_send", 0) == 20_000
        assert len(conn._table._heap) == 0
        assert after - before < 512 * 1024, f"memory grew by {after - before} bytes"


@pytest.mark.timeout(60)
async def test_server_killed_mid_call_then_restarted() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    async with zmicro.open_client(endpoint, timeout=5) as client:
        with zmicro_run("services.py:Slow", "--bind", endpoint, "--grace", "1") as (proc, _):
            assert await client.slow.hello() == "hi"
            pending = asyncio.ensure_future(client.slow.sleep(seconds=30, _timeout=5))
            await asyncio.sleep(0.3)
            os.kill(proc.pid, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises((zmicro.PeerLostError, zmicro.DeadlineExceededError)) as info:
                await pending
            assert loop.time() - t0 <= 5.5
        # The connection dropped: the call was failed as "peer lost", not left to its deadline.
        assert isinstance(info.value, zmicro.PeerLostError)
        with zmicro_run("services.py:Slow", "--bind", endpoint, "--grace", "1"):
            # Same client, same connection object: it reconnects by itself.
            assert await client.slow.hello(_timeout=10) == "hi"
        stats = client.statistics()[endpoint]
        assert stats["peer_lost"] == 1
        assert stats["pending"] == 0
