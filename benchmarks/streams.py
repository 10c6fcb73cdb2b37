"""Event and work-queue rows: raw pyzmq PUB/SUB and PUSH/PULL floors against zmicro.

    python -m benchmarks.streams ROLE ...

Long-running roles (``raw-sub``, ``zpub``, ``zsub``, ``raw-worker``, ``zqueue``,
``zworker``) print ``READY {json}`` and run until SIGTERM; measuring roles
(``raw-pub``, ``zevents``, ``raw-producer``, ``zproducer``) print ``RESULT {json}``.

Rates are taken from counters read at the receiving side together with that side's own
monotonic clock (system-wide on Linux), so the window is the receiver's and the time a
sample request takes does not skew the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from typing import Any

import msgspec
import zmq

import zmicro
from benchmarks import _harness as harness
from benchmarks._harness import PAYLOAD, Point, Row, Settings

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
_LOCAL = "tcp://127.0.0.1"
_TOPIC = "bench.tick"
_TASK = "bench.noop"
_WORKER_CONCURRENCY = 64
"""Handler slots per zmicro worker: enough that the ack round trip is not the limit."""
_SUBMITTERS = 256
"""Submits in flight at the zmicro producer."""
_RAW_WINDOW = 1000
"""Tasks in flight at the raw producer (about what the zmicro side has in the queue's pipeline)."""


def _exit_on_term() -> None:
    """Synchronous roles: SIGTERM ends them cleanly (raised out of whatever zmq call blocks)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


class Tick(msgspec.Struct):
    """The event and task payload: harness.PAYLOAD plus a sequence number."""

    seq: int
    name: str
    id: int
    tags: list[str]
    price: float


def _message(seq: int) -> dict[str, Any]:
    return {"seq": seq, **PAYLOAD}


# -- raw PUB/SUB ---------------------------------------------------------------


def raw_sub() -> None:
    """A SUB socket counting messages; a REP socket answers ``{"n", "t"}`` samples."""
    _exit_on_term()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    data_port = sub.bind_to_random_port(_LOCAL)
    rep = ctx.socket(zmq.REP)
    control_port = rep.bind_to_random_port(_LOCAL)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(rep, zmq.POLLIN)
    harness.ready({"data": f"{_LOCAL}:{data_port}", "control": f"{_LOCAL}:{control_port}"})
    n = 0
    while True:
        poller.poll(100)
        # Bounded drain, so a sample request is answered within a few ms even under flood.
        for _ in range(1000):
            try:
                _decode(sub.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
            n += 1
        with contextlib.suppress(zmq.Again):
            rep.recv(zmq.NOBLOCK)
            rep.send(_encode({"n": n, "t": time.monotonic()}))


def _sample(reqs: list[zmq.Socket[bytes]], timeout_ms: int = 5000) -> list[dict[str, float]]:
    for req in reqs:
        req.send(b"?")
    out = []
    for req in reqs:
        if not req.poll(timeout_ms):
            raise TimeoutError("a subscriber did not answer a sample request")
        out.append(_decode(req.recv()))
    return out


def _window_rates(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[float]:
    return [(y["n"] - x["n"]) / max(1e-9, y["t"] - x["t"]) for x, y in zip(a, b, strict=True)]


def raw_pub(args: argparse.Namespace) -> None:
    """Publishes as fast as a synchronous PUB socket takes messages; samples the subscribers."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    for ep in args.data:
        pub.connect(ep)
    reqs = []
    for ep in args.control:
        req = ctx.socket(zmq.REQ)
        req.connect(ep)
        reqs.append(req)
    seq = 0
    # Handshake: publish until every subscriber has seen something (no slow-joiner loss in the window).
    deadline = time.monotonic() + 15.0
    while True:
        for _ in range(10):
            seq += 1
            pub.send(_encode(_message(seq)))
        if all(s["n"] > 0 for s in _sample(reqs)):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("subscribers never received anything")
        time.sleep(0.01)
    time.sleep(0.05)  # let the handshake messages drain, then take the base for the loss count
    base = _sample(reqs)
    sent = 0
    start = time.monotonic()
    warm_end, end = start + args.warmup, start + args.warmup + args.seconds
    first: list[dict[str, float]] | None = None
    send, clock = pub.send, time.monotonic
    while True:
        for _ in range(128):  # read the clock once per batch
            seq += 1
            send(_encode(_message(seq)))
        sent += 128
        now = clock()
        if first is None and now >= warm_end:
            first = _sample(reqs)
        elif now >= end:
            break
    assert first is not None
    last = _sample(reqs)
    # Wait until the subscribers stop counting: what is still buffered is not lost.
    final = last
    for _ in range(100):
        time.sleep(0.05)
        again = _sample(reqs)
        if [s["n"] for s in again] == [s["n"] for s in final]:
            break
        final = again
    rates = _window_rates(first, last)
    lost = [1.0 - (f["n"] - b["n"]) / sent for f, b in zip(final, base, strict=True)]
    harness.result(
        {
            "rate": statistics.median(rates),
            "rate_min": min(rates),
            "sent_rate": sent / (clock() - start),
            "lost": statistics.median(lost),
            "lost_max": max(lost),
        }
    )
    for sock in [pub, *reqs]:
        sock.close(0)
    ctx.term()


def measure_raw_pubsub(point: Point, settings: Settings) -> dict[str, float]:
    n = point["subscribers"]
    with harness.started("streams", "raw-sub", count=n) as subs:
        return harness.run_client(
            "streams",
            "raw-pub",
            "--data",
            *[s.info["data"] for s in subs],
            "--control",
            *[s.info["control"] for s in subs],
            "--warmup",
            settings.warmup,
            "--seconds",
            settings.seconds,
            timeout=60 + settings.warmup + settings.seconds,
        )


# -- zmicro events -------------------------------------------------------------


class BenchPublisher(zmicro.Service):
    """Publishes ``bench.tick`` events under the "wait" policy: a full subscriber slows it, never loses."""

    name = "bench-pub"
    events = zmicro.EventPublisher(policy="wait", wait_timeout=10.0)

    def __init__(self) -> None:
        self.task: asyncio.Task[int] | None = None

    async def _blast(self, seconds: float) -> int:
        seq = 0
        until = time.monotonic() + seconds
        publish = self.events.publish
        while time.monotonic() < until:
            for _ in range(256):
                seq += 1
                await publish(_TOPIC, _message(seq))
            # publish() does not yield while subscribers keep up: let the server's loop run.
            await asyncio.sleep(0)
        return seq

    @zmicro.rpc
    async def start(self, subscribers: int, seconds: float) -> None:
        await self.events.wait_ready(timeout=15.0, expect={BenchSubscriber.name: subscribers})
        self.task = asyncio.get_running_loop().create_task(self._blast(seconds))

    @zmicro.rpc
    async def finish(self) -> dict[str, Any]:
        assert self.task is not None
        sent = await self.task
        stats = self.events.statistics()
        stats.pop("per_stream", None)
        return {"sent": sent, **stats}


class BenchSubscriber(zmicro.Service):
    """Every instance gets every event (broadcast); validates it and counts it."""

    name = "bench-sub"

    def __init__(self) -> None:
        self.n = 0
        self.server: zmicro.Server | None = None

    @zmicro.event_handler(_TOPIC, broadcast=True)
    async def on_tick(self, event: Tick) -> None:
        self.n += 1

    @zmicro.rpc
    async def count(self) -> dict[str, float]:
        assert self.server is not None
        sub = self.server.statistics()["components"].get("events.subscriber", {})
        return {"n": self.n, "t": time.monotonic(), "gaps": sub.get("gaps", 0), "shed": sub.get("shed", 0)}


async def _serve(server: zmicro.Server, info: dict[str, Any], stop: asyncio.Future[None]) -> None:
    await server.start()
    try:
        harness.ready({"endpoint": server.endpoint, **info})
        await stop
    finally:
        await server.stop(1.0)


def zpub() -> None:
    harness.run_until_terminated(lambda stop: _serve(zmicro.Server([BenchPublisher()]), {}, stop))


def zsub(args: argparse.Namespace) -> None:
    svc = BenchSubscriber()
    server = zmicro.Server([svc], event_sources=[args.events_from])
    svc.server = server
    harness.run_until_terminated(lambda stop: _serve(server, {}, stop))


async def _zevents(args: argparse.Namespace) -> dict[str, float]:
    pub = zmicro.Client(args.pub, timeout=30.0)
    subs = [zmicro.Client(ep, timeout=10.0) for ep in args.subs]

    async def sample() -> list[dict[str, float]]:
        return list(await asyncio.gather(*(c.call(BenchSubscriber.name, "count") for c in subs)))

    try:
        await pub.call(
            BenchPublisher.name, "start", subscribers=len(subs), seconds=args.warmup + args.seconds
        )
        await asyncio.sleep(args.warmup)
        first = await sample()
        await asyncio.sleep(args.seconds)
        last = await sample()
        stats = await pub.call(BenchPublisher.name, "finish", _timeout=30.0)
        # Let the subscribers handle what is still queued, then read their loss counters.
        final = last
        for _ in range(100):
            await asyncio.sleep(0.05)
            again = await sample()
            if [s["n"] for s in again] == [s["n"] for s in final]:
                break
            final = again
    finally:
        for c in [pub, *subs]:
            await c.aclose()
    rates = _window_rates(first, last)
    got = [s["n"] for s in final]
    return {
        "rate": statistics.median(rates),
        "rate_min": min(rates),
        "published": float(stats["sent"]),
        "lost": 1.0 - statistics.median(got) / max(1, stats["sent"]),
        "gaps": float(sum(s["gaps"] for s in final)),
        "shed": float(sum(s["shed"] for s in final)),
        "dropped_full": float(stats.get("dropped_full", 0)),
        "waited": float(stats.get("waited", 0)),
        "wait_timeouts": float(stats.get("wait_timeouts", 0)),
    }


def measure_zmicro_events(point: Point, settings: Settings) -> dict[str, float]:
    n = point["subscribers"]
    with (
        harness.started("streams", "zpub") as (pub,),
        harness.started("streams", "zsub", "--events-from", pub.info["endpoint"], count=n) as subs,
    ):
        return harness.run_client(
            "streams",
            "zevents",
            "--pub",
            pub.info["endpoint"],
            "--subs",
            *[s.info["endpoint"] for s in subs],
            "--warmup",
            settings.warmup,
            "--seconds",
            settings.seconds,
            timeout=90 + settings.warmup + settings.seconds,
        )


# -- raw PUSH/PULL with acks -----------------------------------------------------


def raw_worker() -> None:
    """PULL tasks, decode each, PUSH back an ack with its number."""
    _exit_on_term()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    task_port = pull.bind_to_random_port(_LOCAL)
    acks = ctx.socket(zmq.PUSH)
    ack_port = acks.bind_to_random_port(_LOCAL)
    harness.ready({"tasks": f"{_LOCAL}:{task_port}", "acks": f"{_LOCAL}:{ack_port}"})
    while True:
        task = _decode(pull.recv())
        acks.send(_encode(task["seq"]))


def raw_producer(args: argparse.Namespace) -> None:
    """Keeps ``window`` tasks in flight over PUSH; counts the acks that come back in the window."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    pull = ctx.socket(zmq.PULL)
    for ep in args.tasks:
        push.connect(ep)
    for ep in args.acks:
        pull.connect(ep)
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    win = harness.Window(args.warmup, args.seconds)
    win.begin(*args.pids)
    seq = inflight = acked = 0
    clock = time.monotonic
    while True:
        while inflight < args.window:
            try:
                push.send(_encode(_message(seq + 1)), zmq.NOBLOCK)
            except zmq.Again:
                break
            seq += 1
            inflight += 1
        poller.poll(100)
        while True:
            try:
                _decode(pull.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
            inflight -= 1
            now = clock()
            if win.measuring_from <= now < win.until:
                acked += 1
        if win.done(clock()):
            break
    out = {"rate": acked / args.seconds, "ops": float(acked)}
    if win.cpu_used and acked:
        own = win.cpu_used.pop(os.getpid(), 0.0)
        out["cpu_client_us"] = own / acked * 1e6
        out["cpu_server_us"] = sum(win.cpu_used.values()) / acked * 1e6
    harness.result(out)
    push.close(0)
    pull.close(0)
    ctx.term()


def measure_raw_pushpull(point: Point, settings: Settings) -> dict[str, float]:
    with harness.started("streams", "raw-worker", count=point["workers"]) as workers:
        return harness.run_client(
            "streams",
            "raw-producer",
            "--tasks",
            *[w.info["tasks"] for w in workers],
            "--acks",
            *[w.info["acks"] for w in workers],
            "--pids",
            *[w.pid for w in workers],
            "--warmup",
            settings.warmup,
            "--seconds",
            settings.seconds,
            "--window",
            _RAW_WINDOW,
            timeout=60 + settings.warmup + settings.seconds,
        )


# -- zmicro work queue -----------------------------------------------------------


def zqueue() -> None:
    """The TaskQueue broker on a fresh SQLite file with its default durability (WAL, synchronous=NORMAL)."""
    tmp = tempfile.mkdtemp(prefix="zmicro-bench-queue-")
    try:
        queue = zmicro.TaskQueue(os.path.join(tmp, "queue.db"))
        info = {"synchronous": queue.synchronous}
        harness.run_until_terminated(lambda stop: _serve(zmicro.Server([queue]), info, stop))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BenchWorker(zmicro.Service):
    """A trivial task handler: validate the payload, count it."""

    name = "bench-worker"

    def __init__(self, queue: str) -> None:
        self.task_queue = queue  # a static endpoint: no registry in benchmarks
        self.n = 0

    @zmicro.task(_TASK, concurrency=_WORKER_CONCURRENCY)
    async def noop(self, job: Tick) -> None:
        self.n += 1

    @zmicro.rpc
    async def count(self) -> dict[str, float]:
        return {"n": self.n, "t": time.monotonic()}


def zworker(args: argparse.Namespace) -> None:
    harness.run_until_terminated(lambda stop: _serve(zmicro.Server([BenchWorker(args.queue)]), {}, stop))


async def _zproducer(args: argparse.Namespace) -> dict[str, float]:
    client = zmicro.Client({"zmicro.queue": args.queue}, timeout=30.0)
    workers = [zmicro.Client(ep, timeout=10.0) for ep in args.workers]
    submitted = 0
    stop = False

    async def submitter() -> None:
        nonlocal submitted
        while not stop:
            await client.submit(_TASK, _message(submitted), on_full="wait")
            submitted += 1

    async def sample() -> list[dict[str, float]]:
        return list(await asyncio.gather(*(w.call(BenchWorker.name, "count") for w in workers)))

    tasks = [asyncio.get_running_loop().create_task(submitter()) for _ in range(_SUBMITTERS)]
    try:
        await asyncio.sleep(args.warmup)
        first, q0, s0 = await sample(), await client.call("zmicro.queue", "stats"), submitted
        cpu0 = {pid: harness.cpu_seconds(pid) for pid in args.pids}
        await asyncio.sleep(args.seconds)
        last, q1, s1 = await sample(), await client.call("zmicro.queue", "stats"), submitted
        cpu = {pid: harness.cpu_seconds(pid) - t for pid, t in cpu0.items()}
    finally:
        stop = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            t.cancel()
        for c in [client, *workers]:
            await c.aclose()
    rate = sum(_window_rates(first, last))
    acked = q1["counters"].get("acked", 0) - q0["counters"].get("acked", 0)
    done = sum(y["n"] - x["n"] for x, y in zip(first, last, strict=True))
    return {
        "rate": rate,
        "acked_rate_queue": acked / args.seconds,
        "submit_rate": (s1 - s0) / args.seconds,
        "backlog": float(sum(v.get("ready", 0) for v in q1.get("tasks", {}).values())),
        "cpu_queue_us": cpu[args.pids[0]] / max(1, done) * 1e6,
        "cpu_workers_us": sum(cpu[p] for p in args.pids[1:]) / max(1, done) * 1e6,
    }


def measure_zmicro_tasks(point: Point, settings: Settings) -> dict[str, float]:
    with harness.started("streams", "zqueue") as (queue,):
        endpoint = queue.info["endpoint"]
        with harness.started("streams", "zworker", "--queue", endpoint, count=point["workers"]) as workers:
            return harness.run_client(
                "streams",
                "zproducer",
                "--queue",
                endpoint,
                "--workers",
                *[w.info["endpoint"] for w in workers],
                "--pids",
                queue.pid,
                *[w.pid for w in workers],
                "--warmup",
                settings.warmup,
                "--seconds",
                settings.seconds,
                timeout=90 + settings.warmup + settings.seconds,
            )


ROWS: list[Row] = [
    Row("events", "raw-pubsub", "raw pyzmq PUB/SUB (synchronous)", measure_raw_pubsub, floor=True),
    Row("events", "zmicro", "zmicro events (broadcast, 'wait' policy)", measure_zmicro_events, zmicro=True),
    Row("tasks", "raw-pushpull", "raw pyzmq PUSH/PULL + ack", measure_raw_pushpull, floor=True),
    Row(
        "tasks",
        "zmicro",
        "zmicro work queue (TaskQueue, acked; SQLite WAL, synchronous=NORMAL)",
        measure_zmicro_tasks,
        zmicro=True,
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams")
    parser.add_argument(
        "role",
        choices=[
            "raw-sub", "raw-pub", "zpub", "zsub", "zevents",
            "raw-worker", "raw-producer", "zqueue", "zworker", "zproducer",
        ],
    )  # fmt: skip
    parser.add_argument("--data", nargs="*", default=[])
    parser.add_argument("--control", nargs="*", default=[])
    parser.add_argument("--pub", default="")
    parser.add_argument("--subs", nargs="*", default=[])
    parser.add_argument("--events-from", default="")
    parser.add_argument("--tasks", nargs="*", default=[])
    parser.add_argument("--acks", nargs="*", default=[])
    parser.add_argument("--queue", default="")
    parser.add_argument("--workers", nargs="*", default=[])
    parser.add_argument("--pids", nargs="*", type=int, default=[])
    parser.add_argument("--window", type=int, default=_RAW_WINDOW)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    role: str = args.role
    if role == "raw-sub":
        raw_sub()
    elif role == "raw-pub":
        raw_pub(args)
    elif role == "zpub":
        zpub()
    elif role == "zsub":
        zsub(args)
    elif role == "zevents":
        harness.result(asyncio.run(_zevents(args)))
    elif role == "raw-worker":
        raw_worker()
    elif role == "raw-producer":
        raw_producer(args)
    elif role == "zqueue":
        zqueue()
    elif role == "zworker":
        zworker(args)
    elif role == "zproducer":
        harness.result(asyncio.run(_zproducer(args)))


if __name__ == "__main__":
    main()
