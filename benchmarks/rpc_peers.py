"""RPC rows for the peers a user would pick instead of zmicro, each written as its docs recommend.

    python -m benchmarks.rpc_peers serve KEY
    python -m benchmarks.rpc_peers client KEY --port P --inflight N --seconds S --warmup W --server-pid PID

Every row echoes the harness PAYLOAD: the server is one process, the client another, over
loopback TCP (nameko goes through a RabbitMQ broker on 127.0.0.1:5672 instead).

- grpc: grpc.aio server and channel, unary calls; msgpack (msgspec) instead of protobuf so that
  no generated code is needed, but registered the way generated code registers its methods;
- aiohttp: a JSON POST handler and one keep-alive ClientSession;
- zerorpc: its gevent server and client, one greenlet per call in flight;
- raw-tcp: asyncio Protocols and 4-byte length-prefixed msgpack frames on one connection, a
  ceiling for what Python does over TCP (the server echoes frames unchanged, like the raw
  pyzmq floor rows);
- nameko: a nameko service and its standalone cluster proxy, when a broker is reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks import _harness as harness
from benchmarks._harness import PAYLOAD, Point, Row, Settings, Window

_encode: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
_decode: Callable[[bytes], Any] = msgspec.msgpack.Decoder().decode

_HOST = "127.0.0.1"
_SLACK = 30.0
"""Seconds a run may take beyond warmup + measured time before it counts as hung."""

_GRPC_SERVICE = "zmicro.bench.Echo"
_GRPC_METHOD = f"/{_GRPC_SERVICE}/Echo"

_RABBITMQ_PORT = 5672
_NAMEKO_CONFIG: dict[str, Any] = {"AMQP_URI": f"pyamqp://guest:guest@{_HOST}:{_RABBITMQ_PORT}/"}


def _check(reply: Any) -> None:
    if reply != PAYLOAD:
        raise RuntimeError(f"echo returned {reply!r}, expected {PAYLOAD!r}")


def _bound(args: argparse.Namespace) -> float:
    return float(args.warmup + args.seconds + _SLACK)


# -- grpc.aio --------------------------------------------------------------------


async def _serve_grpc(stop: asyncio.Future[None]) -> None:
    import grpc

    async def echo(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return request

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            echo, request_deserializer=_decode, response_serializer=_encode
        )
    }
    server = grpc.aio.server()
    # Both registrations, as protoc-generated code does: registered methods skip the generic lookup.
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_GRPC_SERVICE, handlers),))
    server.add_registered_method_handlers(_GRPC_SERVICE, handlers)
    port = server.add_insecure_port(f"{_HOST}:0")
    await server.start()
    harness.ready({"port": port})
    await stop
    await server.stop(grace=1.0)


async def _client_grpc(args: argparse.Namespace) -> dict[str, float]:
    import grpc

    async with grpc.aio.insecure_channel(f"{_HOST}:{args.port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10.0)
        stub = channel.unary_unary(
            _GRPC_METHOD, request_serializer=_encode, response_deserializer=_decode, _registered_method=True
        )

        def call() -> Any:
            return stub(PAYLOAD, timeout=_SLACK)  # gRPC's docs: always set a deadline

        _check(await call())
        return await asyncio.wait_for(
            harness.drive(call, args.inflight, args.warmup, args.seconds, server_pids=(args.server_pid,)),
            _bound(args),
        )


# -- aiohttp -----------------------------------------------------------------------


async def _serve_aiohttp(stop: asyncio.Future[None]) -> None:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_post("/echo", echo)
    # Default runner settings: the access log stays off as long as logging is not configured.
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, _HOST, 0)
    await site.start()
    harness.ready({"port": runner.addresses[0][1]})
    await stop
    await runner.cleanup()


async def _client_aiohttp(args: argparse.Namespace) -> dict[str, float]:
    import aiohttp

    # One session for the whole run; HTTP/1.1 has no multiplexing, so one connection per call in flight.
    connector = aiohttp.TCPConnector(limit=max(100, args.inflight))
    timeout = aiohttp.ClientTimeout(total=_SLACK)
    async with aiohttp.ClientSession(
        f"http://{_HOST}:{args.port}", connector=connector, timeout=timeout
    ) as s:

        async def call() -> Any:
            async with s.post("/echo", json=PAYLOAD) as resp:
                resp.raise_for_status()
                return await resp.json()

        _check(await call())
        return await asyncio.wait_for(
            harness.drive(call, args.inflight, args.warmup, args.seconds, server_pids=(args.server_pid,)),
            _bound(args),
        )


# -- zerorpc (gevent) --------------------------------------------------------------


class _ZerorpcEcho:
    def echo(self, value: Any) -> Any:
        return value


def _serve_zerorpc() -> None:
    import gevent
    import zerorpc
    import zmq

    server = zerorpc.Server(_ZerorpcEcho())
    server.bind(f"tcp://{_HOST}:*")
    # zerorpc does not report the port ZeroMQ picked; its socket does.
    endpoint = server._events._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    harness.ready({"port": int(endpoint.rsplit(":", 1)[1])})
    server.run()
    server.close()


def _client_zerorpc(args: argparse.Namespace) -> dict[str, float]:
    import gevent
    import zerorpc

    client = zerorpc.Client(timeout=_SLACK)  # zerorpc's defaults otherwise (heartbeat 5 s)
    client.connect(f"tcp://{_HOST}:{args.port}")
    try:
        _check(client.echo(PAYLOAD))
        win = Window(args.warmup, args.seconds)
        win.begin(args.server_pid)
        clock, ns = time.monotonic, time.perf_counter_ns

        # The same timing as harness.drive(), in greenlets: each makes one call after another.
        def worker() -> None:
            while True:
                t0 = ns()
                client.echo(PAYLOAD)
                now = clock()
                win.record(t0, ns(), now)
                if win.done(now):
                    return

        workers = [gevent.spawn(worker) for _ in range(args.inflight)]
        gevent.joinall(workers, timeout=_bound(args), raise_error=True)
        if not all(w.ready() for w in workers):
            gevent.killall(workers)
            raise TimeoutError(f"zerorpc client did not finish within {_bound(args)} s")
        return win.summary()
    finally:
        client.close()


# -- raw asyncio TCP, length-prefixed msgpack --------------------------------------------

_HEADER = struct.Struct(">I")


class _FrameBuffer:
    """Splits a byte stream into 4-byte length-prefixed frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def complete(self, data: bytes) -> int:
        """Append ``data``; return how many leading bytes of ``self.buf`` form whole frames."""
        buf = self.buf
        buf += data
        end, size, unpack = 0, len(buf), _HEADER.unpack_from
        while end + 4 <= size:
            (n,) = unpack(buf, end)
            if end + 4 + n > size:
                break
            end += 4 + n
        return end


class _EchoServerProtocol(asyncio.Protocol):
    """Echoes every whole frame back unchanged, all that one read brought in one write."""

    def __init__(self) -> None:
        self.frames = _FrameBuffer()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        end = self.frames.complete(data)
        if end and self.transport is not None:
            buf = self.frames.buf
            self.transport.write(bytes(buf[:end]))
            del buf[:end]


async def _serve_raw_tcp(stop: asyncio.Future[None]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoServerProtocol, _HOST, 0)  # asyncio sets TCP_NODELAY
    harness.ready({"port": server.sockets[0].getsockname()[1]})
    await stop
    server.close()
    await server.wait_closed()


class _EchoClientProtocol(asyncio.Protocol):
    """Keeps ``inflight`` frames outstanding on one connection; replies come back in order,
    so a FIFO of send times gives each one's latency. No futures or tasks: callbacks only."""

    def __init__(self, win: Window, inflight: int, server_pid: int, finished: asyncio.Future[None]) -> None:
        self.win, self.inflight, self.server_pid, self.finished = win, inflight, server_pid, finished
        self.frames = _FrameBuffer()
        self.sent_at: deque[int] = deque()
        self.transport: asyncio.Transport | None = None
        self.checked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def start(self) -> None:
        self.win.begin(self.server_pid)
        self._send(self.inflight)

    def _send(self, count: int) -> None:
        assert self.transport is not None
        parts: list[bytes] = []
        ns = time.perf_counter_ns
        for _ in range(count):
            body = _encode(PAYLOAD)  # encoded per call, as a real caller would
            parts += (_HEADER.pack(len(body)), body)
            self.sent_at.append(ns())
        self.transport.write(b"".join(parts))

    def data_received(self, data: bytes) -> None:
        if self.finished.done():
            return
        end = self.frames.complete(data)
        if not end:
            return
        buf, win, sent_at = self.frames.buf, self.win, self.sent_at
        clock, ns, unpack = time.monotonic, time.perf_counter_ns, _HEADER.unpack_from
        view, pos, replies = memoryview(buf), 0, 0
        try:
            while pos < end:
                (n,) = unpack(view, pos)
                reply = _decode(view[pos + 4 : pos + 4 + n])
                pos += 4 + n
                if not self.checked:
                    _check(reply)
                    self.checked = True
                now = clock()
                win.record(sent_at.popleft(), ns(), now)
                replies += 1
                if win.done(now):
                    self.finished.set_result(None)
                    return
        except Exception as exc:
            self.finished.set_exception(exc)
            return
        finally:
            view.release()
            del buf[:end]
        self._send(replies)  # one write for every reply this read brought

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_exception(exc or ConnectionError("server closed the connection"))


async def _client_raw_tcp(args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    win = Window(args.warmup, args.seconds)
    transport, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: _EchoClientProtocol(win, args.inflight, args.server_pid, finished), _HOST, args.port
        ),
        10.0,
    )
    try:
        proto.start()
        await asyncio.wait_for(finished, _bound(args))
    finally:
        transport.close()
    return win.summary()


# -- nameko over RabbitMQ -------------------------------------------------------------


def _rabbitmq_reachable() -> str | None:
    try:
        with socket.create_connection((_HOST, _RABBITMQ_PORT), timeout=0.5):
            return None
    except OSError:
        return f"no RabbitMQ server on {_HOST}:{_RABBITMQ_PORT}"


def _serve_nameko() -> None:
    import eventlet

    eventlet.monkey_patch()  # what `nameko run` does before it loads a service
    from nameko.rpc import rpc
    from nameko.runners import ServiceRunner

    class EchoService:
        name = "echo_service"

        @rpc  # type: ignore[misc]
        def echo(self, value: Any) -> Any:
            return value

    runner = ServiceRunner(config=_NAMEKO_CONFIG)
    runner.add_service(EchoService)
    runner.start()

    def shutdown(signum: int, frame: object) -> None:
        eventlet.spawn_n(runner.stop)  # stop() waits for workers; not from inside a signal handler

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    harness.ready({"port": _RABBITMQ_PORT})
    runner.wait()


def _client_nameko(args: argparse.Namespace) -> dict[str, float]:
    from nameko.standalone.rpc import ClusterRpcProxy

    # The standalone proxy is single-threaded: N calls in flight are N call_async() replies,
    # collected in the order they were sent (the echo service answers in order too).
    with ClusterRpcProxy(_NAMEKO_CONFIG, timeout=_SLACK) as cluster:
        echo = cluster.echo_service.echo
        _check(echo(PAYLOAD))
        win = Window(args.warmup, args.seconds)
        win.begin(args.server_pid)
        clock, ns = time.monotonic, time.perf_counter_ns
        pending: deque[tuple[int, Any]] = deque(
            (ns(), echo.call_async(PAYLOAD)) for _ in range(args.inflight)
        )
        while True:
            t0, reply = pending.popleft()
            reply.result()
            now = clock()
            win.record(t0, ns(), now)
            if win.done(now):
                break
            pending.append((ns(), echo.call_async(PAYLOAD)))
        for _, reply in pending:  # leave no reply behind on the broker
            reply.result()
        return win.summary()


# -- rows -----------------------------------------------------------------------------


def _measure(key: str) -> Callable[[Point, Settings], dict[str, float]]:
    def measure(point: Point, settings: Settings) -> dict[str, float]:
        with harness.start("rpc_peers", "serve", key) as srv:
            port = ("--port", srv.info["port"])
            return harness.run_rpc_client("rpc_peers", key, srv, point, settings, *port, slack=2 * _SLACK)

    return measure


ROWS: list[Row] = [
    Row("rpc", "grpc", "grpcio asyncio (grpc.aio) unary", _measure("grpc"), requires=("grpc",)),
    Row("rpc", "aiohttp", "aiohttp JSON over HTTP (keep-alive)", _measure("aiohttp"), requires=("aiohttp",)),
    Row("rpc", "zerorpc", "zerorpc", _measure("zerorpc"), requires=("zerorpc", "gevent")),
    Row("rpc", "raw-tcp", "raw asyncio TCP, length-prefixed msgpack", _measure("raw-tcp")),
    Row(
        "rpc",
        "nameko",
        "nameko over RabbitMQ",
        _measure("nameko"),
        requires=("nameko",),
        hint="pip install nameko (not in the bench extra: it needs eventlet) and run a RabbitMQ server",
        available=_rabbitmq_reachable,
    ),
]
"""Each row runs at any point of harness.RPC_POINTS; none is the floor (raw pyzmq is)."""

_ASYNC_SERVERS = {"grpc": _serve_grpc, "aiohttp": _serve_aiohttp, "raw-tcp": _serve_raw_tcp}
_SYNC_SERVERS = {"zerorpc": _serve_zerorpc, "nameko": _serve_nameko}
_ASYNC_CLIENTS = {"grpc": _client_grpc, "aiohttp": _client_aiohttp, "raw-tcp": _client_raw_tcp}
_SYNC_CLIENTS = {"zerorpc": _client_zerorpc, "nameko": _client_nameko}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=("serve", "client"))
    ap.add_argument("key", choices=[row.key for row in ROWS])
    ap.add_argument("--port", type=int)
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=Settings.seconds)
    ap.add_argument("--warmup", type=float, default=Settings.warmup)
    ap.add_argument("--server-pid", type=int, default=0)
    args = ap.parse_args(argv)
    if args.role == "serve":
        if args.key in _ASYNC_SERVERS:
            harness.run_until_terminated(_ASYNC_SERVERS[args.key])
        else:
            _SYNC_SERVERS[args.key]()
        return
    if args.port is None or not args.server_pid:
        ap.error("client needs --port and --server-pid")
    if args.key in _ASYNC_CLIENTS:
        summary = asyncio.run(_ASYNC_CLIENTS[args.key](args))
    else:
        summary = _SYNC_CLIENTS[args.key](args)
    harness.result(summary)


if __name__ == "__main__":
    main()
