"""RPC rows over ZeroMQ: the raw pyzmq floors and zmicro itself.

    python -m benchmarks.rpc_zmq serve KEY            # prints READY {"endpoint": ...}
    python -m benchmarks.rpc_zmq client KEY --endpoint E --inflight N --seconds S ...

The raw servers decode each request with msgspec and encode the reply, as the smallest
real service would; their clients encode the payload, match replies in order (one
DEALER connection keeps them in order) and decode them. zmicro's server is
``zmicro run benchmarks.rpc_zmq:Echo``; its client is ``zmicro.Client``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import deque
from typing import Any

import msgspec
import zmq
import zmq.asyncio

import zmicro

from . import _harness as h

_encode = msgspec.msgpack.Encoder().encode


class Item(msgspec.Struct):
    """The typed argument: the raw rows validate against it too, as zmicro does."""

    name: str
    id: int
    tags: list[str]
    price: float


_decode_item = msgspec.msgpack.Decoder(Item).decode
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


class Echo(zmicro.Service):
    """``zmicro run benchmarks.rpc_zmq:Echo``: the argument validated as ``Item``, sent back."""

    name = "echo"
    max_concurrency = 1024  # admission is not what this measures; 128 in flight must all run

    @zmicro.rpc
    async def echo(self, item: Item) -> Item:
        return item


# -- raw servers -----------------------------------------------------------------


async def _serve_future(stop: asyncio.Future[None]) -> None:
    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    async def loop() -> None:
        while True:
            peer, body = await sock.recv_multipart()
            await sock.send_multipart([peer, _encode(_decode_item(body))])

    task = asyncio.get_running_loop().create_task(loop())
    h.ready({"endpoint": f"tcp://127.0.0.1:{port}"})
    await stop
    task.cancel()
    sock.close(0)


async def _serve_drained(stop: asyncio.Future[None]) -> None:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    recv, send = sock.recv, sock.send

    def drain() -> None:  # the FD is edge-triggered: read (and answer) until EAGAIN
        while True:
            try:
                peer = recv(_NOBLOCK)
            except zmq.Again:
                return
            body = recv(_NOBLOCK)
            send(peer, _NOBLOCK_MORE)
            send(_encode(_decode_item(body)), _NOBLOCK)

    loop = asyncio.get_running_loop()
    loop.add_reader(sock.FD, drain)
    loop.call_soon(drain)
    h.ready({"endpoint": f"tcp://127.0.0.1:{port}"})
    await stop
    loop.remove_reader(sock.FD)
    sock.close(0)


# -- clients ---------------------------------------------------------------------


async def _client_future(
    endpoint: str, inflight: int, warmup: float, seconds: float, pid: int
) -> dict[str, float]:
    """zmq.asyncio as its docs show it: await send, await recv, replies in order."""
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.connect(endpoint)
    payload = h.PAYLOAD
    win = h.Window(warmup, seconds)
    sent_at: deque[int] = deque()
    ns, clock = time.perf_counter_ns, time.monotonic
    win.begin(pid)
    for _ in range(inflight):
        sent_at.append(ns())
        await sock.send(_encode(payload))
    while True:
        reply = _decode_item(await sock.recv())
        now = clock()
        win.record(sent_at.popleft(), ns(), now)
        if win.done(now):
            break
        assert reply.id == 123456
        sent_at.append(ns())
        await sock.send(_encode(payload))
    sock.close(0)
    return win.summary()


async def _client_drained(
    endpoint: str, inflight: int, warmup: float, seconds: float, pid: int
) -> dict[str, float]:
    """A plain DEALER read through ``loop.add_reader``, drained with NOBLOCK; a send per reply."""
    loop = asyncio.get_running_loop()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(endpoint)
    finished: asyncio.Future[None] = loop.create_future()
    payload = h.PAYLOAD
    win = h.Window(warmup, seconds)
    sent_at: deque[int] = deque()
    ns, clock = time.perf_counter_ns, time.monotonic

    def send() -> None:
        sent_at.append(ns())
        sock.send(_encode(payload), _NOBLOCK)

    def drain() -> None:  # until EAGAIN, also right after our own sends: they can eat the edge
        while not finished.done():
            try:
                reply = _decode_item(sock.recv(_NOBLOCK))
            except zmq.Again:
                return
            now = clock()
            win.record(sent_at.popleft(), ns(), now)
            assert reply.id == 123456
            if win.done(now):
                finished.set_result(None)
                return
            send()

    win.begin(pid)
    loop.add_reader(sock.FD, drain)
    for _ in range(inflight):
        send()
    drain()
    await finished
    loop.remove_reader(sock.FD)
    sock.close(0)
    return win.summary()


async def _client_zmicro(
    endpoint: str, inflight: int, warmup: float, seconds: float, pid: int
) -> dict[str, float]:
    async with zmicro.open_client(endpoint, timeout=30.0) as client:
        call, payload = client.call, h.PAYLOAD

        async def one() -> None:
            reply = await call("echo", "echo", item=payload)
            assert reply["id"] == 123456

        out = await h.drive(one, inflight, warmup, seconds, server_pids=(pid,))
        out.update({f"client_{k}": float(v) for k, v in _numeric(client.statistics()).items()})
        return out


def _numeric(stats: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# -- rows --------------------------------------------------------------------------

_SERVERS = {"raw-future": _serve_future, "raw-drained": _serve_drained, "raw-drained-uvloop": _serve_drained}
_CLIENTS = {
    "raw-future": _client_future,
    "raw-drained": _client_drained,
    "raw-drained-uvloop": _client_drained,
    "zmicro": _client_zmicro,
    "zmicro-uvloop": _client_zmicro,
}


def _server_cmd(key: str) -> list[str]:
    if key.startswith("zmicro"):
        cmd = [
            sys.executable,
            "-m",
            "zmicro",
            "run",
            "benchmarks.rpc_zmq:Echo",
            "--bind",
            "tcp://127.0.0.1:0",
        ]
        cmd += ["--registry", "none"]
        return cmd + (["--uvloop"] if key.endswith("uvloop") else ["--no-uvloop"])
    return h.module_cmd("rpc_zmq", "serve", key)


def _measure(key: str) -> h.Measure:
    def measure(point: h.Point, settings: h.Settings) -> dict[str, float]:
        with h.Proc(_server_cmd(key)) as srv:
            return h.run_rpc_client("rpc_zmq", key, srv, point, settings, "--endpoint", srv.info["endpoint"])

    return measure


ROWS = [
    h.Row("rpc", "raw-future", "raw pyzmq, zmq.asyncio", _measure("raw-future")),
    h.Row("rpc", "raw-drained", "raw pyzmq, add_reader + drain", _measure("raw-drained"), floor=True),
    h.Row(
        "rpc",
        "raw-drained-uvloop",
        "raw drained, uvloop",
        _measure("raw-drained-uvloop"),
        requires=("uvloop",),
    ),
    h.Row("rpc", "zmicro", "zmicro RPC", _measure("zmicro"), zmicro=True),
    h.Row(
        "rpc",
        "zmicro-uvloop",
        "zmicro RPC, uvloop",
        _measure("zmicro-uvloop"),
        requires=("uvloop",),
        zmicro=True,
    ),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rpc_zmq")
    ap.add_argument("role", choices=("serve", "client"))
    ap.add_argument("key", choices=sorted(_CLIENTS))
    ap.add_argument("--endpoint")
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--server-pid", type=int, default=0)
    args = ap.parse_args(argv)
    uvloop = args.key.endswith("uvloop")
    if args.role == "serve":
        h.run_until_terminated(_SERVERS[args.key], uvloop=uvloop)
        return 0
    client = _CLIENTS[args.key]
    with asyncio.Runner(loop_factory=h.loop_factory(uvloop)) as runner:
        out = runner.run(
            client(args.endpoint, args.inflight, args.warmup, args.seconds, args.server_pid or os.getpid())
        )
    h.result(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
