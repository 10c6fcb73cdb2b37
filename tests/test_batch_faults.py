"""BATCH messages, reply outboxes and coalesced requests under faults, over real TCP.

A server queues replies per caller and sends them together; a client queues requests
while others are in flight and sends them together; both unpack incoming BATCHes and
handle each inner message on its own. These tests push on the guarantees through those
paths: every request gets exactly one reply or error, deadlines hold (the server watches
them in 10 ms ticks), CANCEL stops a handler, bad input is answered and counted, drops
are counted, shutdown answers what it stops, and nothing accepted is lost silently.

Raw pyzmq DEALER sockets play misbehaving (or merely unusual) peers; ``zmicro.Client``
plays the well-behaved one. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio

import zmicro
from conftest import free_port, zmicro_run
from zmicro import protocol as p
from zmicro.transport import SocketOptions

WAIT = 5.0
"""Seconds any single wait may take before it counts as a failure (a busy 2-core machine)."""


class Batchy(zmicro.Service):
    """A service with every outcome a handler can have."""

    name = "batchy"
    max_concurrency = 64
    max_queued = 2048

    def __init__(self) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.cancelled_after: list[float] = []
        self.started = 0

    @zmicro.rpc
    async def hello(self, who: str) -> str:
        return f"Hello, {who}!"

    @zmicro.rpc
    async def add(self, a: int, b: int) -> int:
        return a + b

    @zmicro.rpc
    async def sleep(self, seconds: float) -> float:
        self.started += 1
        t0 = time.monotonic()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled_after.append(time.monotonic() - t0)
            raise
        return seconds

    @zmicro.rpc
    async def explode(self, why: str) -> str:
        raise ValueError(why)

    @zmicro.rpc
    async def unencodable(self) -> Any:
        return object()

    @zmicro.rpc
    async def big(self, size: int) -> bytes:
        return b"x" * size

    @zmicro.rpc
    def blocking(self, seconds: float, tag: int) -> int:
        time.sleep(seconds)
        return tag

    @zmicro.rpc
    async def once(self, key: str, seconds: float = 0.0) -> int:
        self.runs[key] += 1
        await asyncio.sleep(seconds)
        return self.runs[key]

    @zmicro.rpc
    async def once_unencodable(self, key: str) -> Any:
        self.runs[key] += 1
        return object()


class Narrow(Batchy):
    """Two handlers at a time and four waiting: the rest is refused as overloaded."""

    max_concurrency = 2
    max_queued = 4


class Single(Batchy):
    """One handler at a time: a leaked slot shows up at the next call."""

    max_concurrency = 1
    max_queued = 8


# -- fixtures ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(service: zmicro.Service, **options: Any) -> AsyncIterator[zmicro.Server]:
    options.setdefault("grace", 1.0)
    async with asyncio.timeout(WAIT * 3):
        async with zmicro.open_server(service, bind="tcp://127.0.0.1:0", **options) as srv:
            yield srv


@pytest.fixture
async def server() -> AsyncIterator[zmicro.Server]:
    async with serving(Batchy()) as srv:
        yield srv


@pytest.fixture
async def client(server: zmicro.Server) -> AsyncIterator[zmicro.Client]:
    async with zmicro.open_client(server.endpoint, timeout=WAIT) as cl:
        async with asyncio.timeout(WAIT):
            assert await cl.batchy.hello(who="warm") == "Hello, warm!"
        yield cl


@pytest.fixture
async def zsocket() -> AsyncIterator[Callable[..., zmq.asyncio.Socket]]:
    """Makes raw pyzmq sockets on a private context; closes them all (LINGER 0)."""
    ctx = zmq.asyncio.Context()
    opened: list[zmq.asyncio.Socket] = []

    def make(socket_type: int = zmq.DEALER, **sockopts: int) -> zmq.asyncio.Socket:
        sock = ctx.socket(socket_type)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in sockopts.items():
            sock.setsockopt(getattr(zmq, name), value)
        opened.append(sock)
        return sock

    try:
        yield make
    finally:
        for sock in opened:
            sock.close(linger=0)
        ctx.term()


@pytest.fixture
def dealer(server: zmicro.Server, zsocket: Callable[..., zmq.asyncio.Socket]) -> zmq.asyncio.Socket:
    sock = zsocket(zmq.DEALER)
    sock.connect(server.endpoint)
    return sock


# -- helpers -----------------------------------------------------------------------------


def req(
    request_id: int, method: str, deadline_ms: int = 5_000, idem: str | None = None, **args: Any
) -> bytes:
    return p.encode_request(request_id, "batchy", method, p.Headers(deadline_ms, idempotency_key=idem), args)


async def recv_frames(sock: zmq.asyncio.Socket, within: float = WAIT) -> list[bytes]:
    if not await sock.poll(int(within * 1000), zmq.POLLIN):
        raise AssertionError(f"no message within {within} s")
    return await sock.recv_multipart(zmq.NOBLOCK)


async def recv_messages(sock: zmq.asyncio.Socket, count: int, within: float = WAIT) -> list[p.Message]:
    """``count`` messages, unpacked from BATCHes, in order; AssertionError if they do not come."""
    out: list[p.Message] = []
    async with asyncio.timeout(within * 3):
        while len(out) < count:
            frames = await recv_frames(sock, within)
            assert len(frames) == 1, frames
            msg = p.decode(frames[0])
            if isinstance(msg, p.Batch):
                assert 1 < len(msg.messages) <= p.MAX_BATCH
                inner = [p.decode(m) for m in msg.messages]
                assert not any(isinstance(m, p.Batch) for m in inner)
                out.extend(inner)
            else:
                out.append(msg)
    return out


async def expect_silence(sock: zmq.asyncio.Socket, seconds: float = 0.3) -> None:
    if await sock.poll(int(seconds * 1000), zmq.POLLIN):
        raise AssertionError(f"unexpected message: {await sock.recv_multipart(zmq.NOBLOCK)!r}")


def by_id(messages: list[p.Message]) -> dict[int, p.Message]:
    """Replies and errors by request id, asserting each id was answered once."""
    out: dict[int, p.Message] = {}
    for msg in messages:
        assert isinstance(msg, (p.Reply, p.ErrorReply)), msg
        assert msg.id not in out, f"request {msg.id} answered twice: {out[msg.id]!r} and {msg!r}"
        out[msg.id] = msg
    return out


def counters(server: zmicro.Server) -> dict[str, int]:
    return dict(server.statistics()["counters"])


async def wait_until(predicate: Callable[[], bool], within: float = WAIT, what: str = "") -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"condition never held within {within} s {what}") from None


async def assert_serving(client: zmicro.Client, who: str = "after") -> None:
    async with asyncio.timeout(WAIT):
        assert await client.batchy.hello(who=who, _timeout=WAIT) == f"Hello, {who}!"


# -- many concurrent calls through one client ----------------------------------------------


async def test_mixed_outcomes_each_answered_once_with_the_right_error(
    server: zmicro.Server, client: zmicro.Client
) -> None:
    """Hundreds of concurrent calls with every kind of outcome, coalesced both ways."""
    kinds: list[tuple[str, dict[str, Any], Any]] = [
        ("hello", {"who": "a"}, "Hello, a!"),
        ("explode", {"why": "boom"}, zmicro.RemoteError),
        ("unencodable", {}, zmicro.RemoteError),
        ("add", {"a": "not a number", "b": 1}, zmicro.InvalidArgumentError),
        ("nope", {}, zmicro.NoSuchMethodError),
        ("sleep", {"seconds": 10.0, "_timeout": 0.3}, zmicro.DeadlineExceededError),
        ("blocking", {"seconds": 0.0, "tag": 7}, 7),
        ("add", {"a": 2, "b": 3}, 5),
    ]
    plan = [kinds[i % len(kinds)] for i in range(400)]
    async with asyncio.timeout(WAIT * 2):
        results = await asyncio.gather(
            *(client.call("batchy", method, **args) for method, args, _ in plan), return_exceptions=True
        )
    for (method, _, expected), got in zip(plan, results, strict=True):
        if isinstance(expected, type):
            assert type(got) is expected, (method, got)
        else:
            assert got == expected, (method, got)
    conn = client.connection(server.endpoint)
    stats = conn.statistics()
    assert stats["pending"] == 0 and stats["unsent"] == 0, stats
    assert stats.get("batches_out", 0) > 0, "400 concurrent calls never left together"
    c = counters(server)
    assert c.get("batches_in", 0) > 0
    assert c.get("batches_out", 0) > 0
    await wait_until(lambda: server.statistics()["running"] == 0, what="(handlers still running)")
    await assert_serving(client)


async def test_oversized_result_is_answered_with_one_error_only(
    server: zmicro.Server, client: zmicro.Client
) -> None:
    """A result over the server's limit becomes one ResultTooLarge error, and nothing else."""
    conn = client.connection(server.endpoint)
    with pytest.raises(zmicro.RemoteError) as info:
        await client.batchy.big(size=2 * 1024 * 1024)
    assert info.value.details.get("type") == "ResultTooLarge"
    await assert_serving(client)
    await asyncio.sleep(0.2)  # a stray second answer would be here by now
    assert conn.late_replies == 0, "the oversized result was sent after its error"
    assert counters(server).get("oversized_results") == 1


async def test_oversized_result_beyond_callers_limit_leaves_other_calls_alone(
    server: zmicro.Server, client: zmicro.Client
) -> None:
    """Past the caller's MAXMSGSIZE libzmq drops the whole connection: the result must not go."""
    async with asyncio.timeout(WAIT * 2):
        slow = asyncio.ensure_future(client.batchy.sleep(seconds=0.5))
        await wait_until(lambda: server.statistics()["running"] == 1)
        with pytest.raises(zmicro.RemoteError) as info:
            await client.batchy.big(size=5 * 1024 * 1024)
        assert info.value.details.get("type") == "ResultTooLarge"
        assert await slow == 0.5


async def test_unencodable_result_counted_as_error_not_as_reply(
    server: zmicro.Server, client: zmicro.Client
) -> None:
    before = counters(server)
    with pytest.raises(zmicro.RemoteError) as info:
        await client.batchy.unencodable()
    assert info.value.details.get("type") == "EncodeError"
    after = counters(server)
    assert after.get("unencodable_results", 0) - before.get("unencodable_results", 0) == 1
    assert after.get("replies", 0) == before.get("replies", 0), "an unencodable result counted as a reply"


# -- raw BATCHes from a peer ---------------------------------------------------------------


async def test_batch_of_mixed_requests_each_answered_once(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    frames = [
        req(1, "hello", who="one"),
        req(2, "explode", why="x"),
        req(3, "add", a="x", b=1),
        req(4, "nope"),
        req(5, "hello", deadline_ms=0, who="late"),
        req(6, "blocking", seconds=0.01, tag=6),
        p.encode_ping(42),
        req(7, "add", a=1, b=2),
    ]
    await dealer.send(p.encode_batch(frames))
    got = await recv_messages(dealer, 8)
    pongs = [m for m in got if isinstance(m, p.Pong)]
    assert [m.nonce for m in pongs] == [42]
    answers = by_id([m for m in got if not isinstance(m, p.Pong)])
    assert set(answers) == set(range(1, 8))
    assert isinstance(answers[1], p.Reply) and p.decode_value(answers[1].result) == "Hello, one!"
    assert isinstance(answers[2], p.ErrorReply) and answers[2].code == "remote_error"
    assert isinstance(answers[3], p.ErrorReply) and answers[3].code == "invalid_argument"
    assert isinstance(answers[4], p.ErrorReply) and answers[4].code == "no_such_method"
    assert isinstance(answers[5], p.ErrorReply) and answers[5].code == "deadline_exceeded"
    assert isinstance(answers[6], p.Reply) and p.decode_value(answers[6].result) == 6
    assert isinstance(answers[7], p.Reply) and p.decode_value(answers[7].result) == 3
    await expect_silence(dealer)
    assert counters(server).get("batches_in") == 1


async def test_bad_inner_messages_get_their_own_errors(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    bad_body = p.SIGNATURE + bytes((p.VERSION, p.Kind.REQUEST)) + msgspec.msgpack.encode([9, "batchy"])
    frames = [
        req(1, "hello", who="a"),
        bad_body,  # a REQUEST whose id can be read: answered with that id
        b"garbage",  # nothing readable: answered with id 0
        p.encode_batch([req(10, "hello", who="nested")]),  # no nesting
        p.encode_reply(3, "a reply is not for a server"),
        req(2, "hello", who="b"),
    ]
    before = counters(server)
    await dealer.send(p.encode_batch(frames))
    got = await recv_messages(dealer, 6)
    errors = [m for m in got if isinstance(m, p.ErrorReply)]
    assert sorted(e.id for e in errors) == [0, 0, 0, 9]
    assert all(e.code == "protocol_error" for e in errors)
    assert any("BATCH inside a BATCH" in e.message for e in errors)
    replies = by_id([m for m in got if isinstance(m, p.Reply)])
    assert set(replies) == {1, 2}, "good messages around bad ones must still be served"
    assert 10 not in replies
    after = counters(server)
    assert after.get("malformed", 0) - before.get("malformed", 0) == 3
    assert after.get("unexpected", 0) - before.get("unexpected", 0) == 1
    await expect_silence(dealer)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            p.SIGNATURE + bytes((p.VERSION, p.Kind.BATCH)) + msgspec.msgpack.encode(([],)), id="empty"
        ),
        pytest.param(
            p.SIGNATURE
            + bytes((p.VERSION, p.Kind.BATCH))
            + msgspec.msgpack.encode(([p.encode_ping(i) for i in range(p.MAX_BATCH + 1)],)),
            id="1025-items",
        ),
        pytest.param(
            p.SIGNATURE + bytes((p.VERSION, p.Kind.BATCH)) + msgspec.msgpack.encode((["text, not bin"],)),
            id="str-items",
        ),
    ],
)
async def test_malformed_batch_is_refused_whole(
    server: zmicro.Server, dealer: zmq.asyncio.Socket, client: zmicro.Client, body: bytes
) -> None:
    before = counters(server)
    await dealer.send(body)
    (err,) = await recv_messages(dealer, 1)
    assert isinstance(err, p.ErrorReply) and err.code == "protocol_error" and err.id == 0
    assert "BATCH" in err.message
    await expect_silence(dealer)
    assert counters(server).get("malformed", 0) - before.get("malformed", 0) == 1
    await assert_serving(client)


async def test_duplicate_request_ids_in_one_batch(server: zmicro.Server, dealer: zmq.asyncio.Socket) -> None:
    await dealer.send(p.encode_batch([req(1, "sleep", seconds=0.1), req(1, "hello", who="dup")]))
    got = await recv_messages(dealer, 2)
    errors = [m for m in got if isinstance(m, p.ErrorReply)]
    replies = [m for m in got if isinstance(m, p.Reply)]
    assert len(errors) == 1 and errors[0].id == 1 and errors[0].code == "protocol_error"
    assert "in use" in errors[0].message
    assert len(replies) == 1 and replies[0].id == 1 and p.decode_value(replies[0].result) == 0.1
    await expect_silence(dealer)


async def test_ping_inside_a_batch_is_answered_in_place(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    await dealer.send(p.encode_batch([p.encode_ping(1), req(5, "hello", who="p"), p.encode_ping(2)]))
    got = await recv_messages(dealer, 3)
    assert sorted(m.nonce for m in got if isinstance(m, p.Pong)) == [1, 2]
    assert [m.id for m in got if isinstance(m, p.Reply)] == [5]
    await expect_silence(dealer)


async def test_full_batch_against_a_narrow_service_every_request_answered(
    zsocket: Callable[..., zmq.asyncio.Socket],
) -> None:
    svc = Narrow()
    async with serving(svc) as srv:
        sock = zsocket(zmq.DEALER)
        sock.connect(srv.endpoint)
        n = p.MAX_BATCH
        await sock.send(p.encode_batch([req(i, "sleep", seconds=0.05) for i in range(1, n + 1)]))
        answers = by_id(await recv_messages(sock, n, within=WAIT))
        assert set(answers) == set(range(1, n + 1))
        overloaded = [m for m in answers.values() if isinstance(m, p.ErrorReply) and m.code == "overloaded"]
        ok = [m for m in answers.values() if isinstance(m, p.Reply)]
        assert len(ok) == 2 + 4  # two ran at once, four waited
        assert len(overloaded) == n - 6
        assert all(m.details.get("started") == "false" for m in overloaded)
        await expect_silence(sock)
        c = counters(srv)
        assert c["overloaded"] == n - 6
        assert c["requests"] == n
        assert srv.statistics()["services"]["batchy"] == {"active": 0, "queued": 0, "rejected": n - 6}


async def test_a_batch_over_the_message_limit_is_served_message_by_message(
    zsocket: Callable[..., zmq.asyncio.Socket],
) -> None:
    """The limit applies to each message in a BATCH; one over it gets its own error, with its id."""
    async with serving(Batchy(), max_message_bytes=16 * 1024) as srv:
        sock = zsocket(zmq.DEALER)
        sock.connect(srv.endpoint)
        frames = [req(i, "hello", who="x" * 4000) for i in range(1, 9)]
        frames.append(req(9, "hello", who="y" * 20_000))
        await sock.send(p.encode_batch(frames))
        answers = by_id(await recv_messages(sock, 9))
        assert all(isinstance(answers[i], p.Reply) for i in range(1, 9))
        err = answers[9]
        assert isinstance(err, p.ErrorReply) and err.code == "protocol_error"
        assert "exceeds" in err.message


async def test_coalesced_requests_each_under_the_limit_are_served(
    zsocket: Callable[..., zmq.asyncio.Socket],
) -> None:
    """Each request fits the server's limit; the client's own coalescing must not break that."""
    async with (
        serving(Batchy(), max_message_bytes=16 * 1024) as srv,
        zmicro.open_client(srv.endpoint, timeout=2.0) as cl,
    ):
        await assert_serving(cl)
        async with asyncio.timeout(WAIT):
            slow = asyncio.ensure_future(cl.batchy.sleep(seconds=0.3))  # so the next ones coalesce
            results = await asyncio.gather(
                *(cl.batchy.hello(who=str(i) + "x" * 6000) for i in range(8)), return_exceptions=True
            )
            await slow
        assert results == [f"Hello, {i}{'x' * 6000}!" for i in range(8)], [type(r) for r in results]


# -- CANCEL and deadlines -----------------------------------------------------------------


async def test_cancel_after_request_in_same_batch_frees_the_slot(
    zsocket: Callable[..., zmq.asyncio.Socket],
) -> None:
    svc = Single()
    async with serving(svc) as srv, zmicro.open_client(srv.endpoint, timeout=2.0) as cl:
        await assert_serving(cl)
        sock = zsocket(zmq.DEALER)
        sock.connect(srv.endpoint)
        await sock.send(p.encode_batch([req(1, "sleep", seconds=30.0), p.encode_cancel(1)]))
        await wait_until(lambda: counters(srv).get("cancels_in", 0) == 1)
        await expect_silence(sock)  # the caller asked: it waits for nothing
        # The handler must be gone and its slot free: this call must not wait behind it.
        await assert_serving(cl)
        assert srv.statistics()["running"] == 0
        assert counters(srv).get("cancelled") == 1


async def test_cancel_of_a_queued_request_in_same_batch(
    zsocket: Callable[..., zmq.asyncio.Socket],
) -> None:
    svc = Single()
    async with serving(svc) as srv:
        sock = zsocket(zmq.DEALER)
        sock.connect(srv.endpoint)
        frames = [
            req(1, "sleep", seconds=0.1),
            req(2, "sleep", seconds=30.0),
            p.encode_cancel(2),
            req(3, "hello", who="3"),
        ]
        await sock.send(p.encode_batch(frames))
        answers = by_id(await recv_messages(sock, 2))
        assert set(answers) == {1, 3}
        await expect_silence(sock)
        assert counters(srv).get("cancelled_queued") == 1
        assert svc.started == 1


async def test_idempotent_repeats_in_one_batch_run_once(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    svc = server.services["batchy"]
    assert isinstance(svc, Batchy)
    frames = [req(i, "once", idem="K", key="k", seconds=0.05) for i in range(1, 6)]
    await dealer.send(p.encode_batch(frames))
    answers = by_id(await recv_messages(dealer, 5))
    assert {
        i: p.decode_value(m.result) for i, m in answers.items() if isinstance(m, p.Reply)
    } == dict.fromkeys(range(1, 6), 1)
    assert svc.runs["k"] == 1
    # A later repeat with the same key is replayed, not run.
    await dealer.send(frames[0])
    (again,) = await recv_messages(dealer, 1)
    assert isinstance(again, p.Reply) and p.decode_value(again.result) == 1
    assert svc.runs["k"] == 1
    c = counters(server)
    assert c.get("joined_running") == 4 and c.get("replayed") == 1


async def test_idempotent_first_attempt_cancelled_in_batch_answers_the_joined_repeat(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    def r(i: int) -> bytes:
        return p.encode_request(
            i, "batchy", "once", p.Headers(5_000, idempotency_key="C"), {"key": "c", "seconds": 30.0}
        )

    await dealer.send(p.encode_batch([r(1), r(2), p.encode_cancel(1)]))
    (answer,) = await recv_messages(dealer, 1)
    assert isinstance(answer, p.ErrorReply) and answer.id == 2 and answer.code == "unavailable"
    await wait_until(lambda: server.statistics()["running"] == 0)


async def test_replayed_unencodable_result_does_not_lose_the_rest_of_the_batch(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    def r(i: int) -> bytes:
        return p.encode_request(
            i, "batchy", "once_unencodable", p.Headers(5_000, idempotency_key="U"), {"key": "u"}
        )

    await dealer.send(r(1))
    (first,) = await recv_messages(dealer, 1)
    assert isinstance(first, p.ErrorReply) and first.details.get("type") == "EncodeError"
    await dealer.send(p.encode_batch([r(2), req(3, "hello", who="after")]))
    answers = by_id(await recv_messages(dealer, 2))
    assert isinstance(answers[2], p.ErrorReply) and answers[2].details.get("type") == "EncodeError"
    assert isinstance(answers[3], p.Reply) and p.decode_value(answers[3].result) == "Hello, after!"


async def test_deadline_tick_cancels_a_running_handler_just_after_its_deadline(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    svc = server.services["batchy"]
    assert isinstance(svc, Batchy)
    budgets = [100 + 7 * i for i in range(30)]  # many ticks, some shared
    before = counters(server)
    await dealer.send(
        p.encode_batch([req(i + 1, "sleep", deadline_ms=b, seconds=30.0) for i, b in enumerate(budgets)])
    )
    answers = by_id(await recv_messages(dealer, len(budgets)))
    assert all(isinstance(m, p.ErrorReply) and m.code == "deadline_exceeded" for m in answers.values())
    assert len(svc.cancelled_after) == len(budgets)
    # Each handler ran at most its budget (it started after arrival) and was stopped within a
    # tick or so after it; the generous bound absorbs a busy machine's scheduling delays.
    lateness = sorted(elapsed - b / 1000 for elapsed, b in zip(svc.cancelled_after, budgets, strict=True))
    assert lateness[0] > -0.005, f"a handler was stopped before its deadline: {lateness[0]:.4f}s"
    assert lateness[len(lateness) // 2] < 0.06, f"median lateness {lateness[len(lateness) // 2]:.4f}s"
    assert lateness[-1] < 0.25, f"worst lateness {lateness[-1]:.4f}s"
    after = counters(server)
    assert after.get("expired_running", 0) - before.get("expired_running", 0) == len(budgets)
    assert server.statistics()["running"] == 0


async def test_deadline_of_thread_handler_answers_and_keeps_its_slot_until_the_thread_returns(
    zsocket: Callable[..., zmq.asyncio.Socket],
) -> None:
    svc = Single()
    async with serving(svc) as srv:
        sock = zsocket(zmq.DEALER)
        sock.connect(srv.endpoint)
        await sock.send(
            p.encode_batch(
                [req(1, "blocking", deadline_ms=100, seconds=0.4, tag=1), req(2, "hello", who="2")]
            )
        )
        t0 = time.monotonic()
        first = await recv_messages(sock, 1)
        assert (
            isinstance(first[0], p.ErrorReply) and first[0].id == 1 and first[0].code == "deadline_exceeded"
        )
        assert time.monotonic() - t0 < 0.35, "the deadline error waited for the thread"
        (second,) = await recv_messages(sock, 1)
        assert isinstance(second, p.Reply) and second.id == 2
        assert time.monotonic() - t0 >= 0.3, "a second handler ran while the first thread was busy"
        assert counters(srv).get("expired_running") == 1


async def test_thread_handlers_in_batches(zsocket: Callable[..., zmq.asyncio.Socket]) -> None:
    svc = type("Wide", (Batchy,), {"max_concurrency": 4, "max_queued": 100})()
    async with serving(svc) as srv:
        sock = zsocket(zmq.DEALER)
        sock.connect(srv.endpoint)
        await sock.send(p.encode_batch([req(i, "blocking", seconds=0.02, tag=i) for i in range(1, 41)]))
        answers = by_id(await recv_messages(sock, 40))
        assert {i: p.decode_value(m.result) for i, m in answers.items() if isinstance(m, p.Reply)} == {
            i: i for i in range(1, 41)
        }


# -- the client's queue -------------------------------------------------------------------


async def test_calls_queued_without_connection_cancelled_or_expired_never_reach_the_server() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    async with zmicro.open_client(endpoint, timeout=WAIT) as cl:
        conn = cl.connection(endpoint)
        kept = [asyncio.ensure_future(cl.batchy.hello(who=str(i), _timeout=WAIT * 2)) for i in range(10)]
        abandoned = [asyncio.ensure_future(cl.batchy.hello(who="gone", _timeout=WAIT * 2)) for _ in range(10)]
        expiring = [asyncio.ensure_future(cl.batchy.hello(who="late", _timeout=0.05)) for _ in range(10)]
        await wait_until(lambda: conn.statistics()["unsent"] == 30)
        for task in abandoned:
            task.cancel()
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(*expiring, *abandoned, return_exceptions=True)
        assert all(isinstance(r, zmicro.UnavailableError) for r in results[:10]), results[:10]
        assert all(isinstance(r, asyncio.CancelledError) for r in results[10:])
        assert conn.statistics()["unsent"] == 10
        async with _serve_at(endpoint) as srv:
            async with asyncio.timeout(WAIT * 2):
                assert await asyncio.gather(*kept) == [f"Hello, {i}!" for i in range(10)]
            c = counters(srv)
            assert c["requests"] == 10, c
            assert c.get("cancels_in", 0) == 0 and c.get("cancel_unknown", 0) == 0
        stats = conn.statistics()
        assert stats["unsent"] == 0 and stats["pending"] == 0
        assert stats["abandoned"] == 10 and stats["unreachable"] == 10


@contextlib.asynccontextmanager
async def _serve_at(endpoint: str) -> AsyncIterator[zmicro.Server]:
    async with asyncio.timeout(WAIT * 3):
        async with zmicro.open_server(Batchy(), bind=endpoint, grace=1.0) as srv:
            yield srv


async def test_client_closed_with_requests_queued_fails_them_all_at_once() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cl = zmicro.Client(endpoint, timeout=WAIT * 2)
    try:
        conn = cl.connection(endpoint)
        calls = [asyncio.ensure_future(cl.batchy.hello(who=str(i))) for i in range(50)]
        await wait_until(lambda: conn.statistics()["unsent"] == 50)
    finally:
        await cl.aclose()
    async with asyncio.timeout(1.0):
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, zmicro.ClientClosedError) for r in results), results
    assert conn.statistics()["unsent"] == 0


async def test_client_closed_while_coalesced_calls_are_in_flight(server: zmicro.Server) -> None:
    cl = zmicro.Client(server.endpoint, timeout=WAIT)
    try:
        await assert_serving(cl)
        calls = [asyncio.ensure_future(cl.batchy.sleep(seconds=0.2)) for _ in range(100)]
        await asyncio.sleep(0)  # they run up to their first wait: queued or sent
        await asyncio.sleep(0)
    finally:
        await cl.aclose()
    async with asyncio.timeout(1.0):
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, zmicro.ClientClosedError) for r in results), results
    # The server answers or cancels what did arrive, and stays healthy.
    await wait_until(lambda: server.statistics()["running"] == 0)


# -- the server's outbox ------------------------------------------------------------------


async def test_stop_answers_running_and_queued_calls_with_replies_in_the_outbox() -> None:
    svc = type("Tight", (Batchy,), {"max_concurrency": 10, "max_queued": 100})()
    srv = zmicro.Server([svc], bind="tcp://127.0.0.1:0", grace=0.3)
    await srv.start()
    try:
        async with zmicro.open_client(srv.endpoint, timeout=WAIT) as cl:
            await assert_serving(cl)
            quick = [asyncio.ensure_future(cl.batchy.sleep(seconds=0.05)) for _ in range(5)]
            stuck = [asyncio.ensure_future(cl.batchy.sleep(seconds=30.0)) for _ in range(5)]
            queued = [asyncio.ensure_future(cl.batchy.sleep(seconds=30.0)) for _ in range(40)]
            await wait_until(lambda: srv.statistics()["services"]["batchy"]["queued"] == 40)
            t0 = time.monotonic()
            async with asyncio.timeout(WAIT):
                await srv.stop()
            assert time.monotonic() - t0 < 3.0
            async with asyncio.timeout(WAIT):
                results = await asyncio.gather(*quick, *stuck, *queued, return_exceptions=True)
        assert results[:5] == [0.05] * 5
        assert all(isinstance(r, zmicro.UnavailableError) for r in results[5:]), results[5:]
        assert all(r.details.get("started") == "true" for r in results[5:10])
        assert all(r.details.get("started") == "false" for r in results[10:])
        c = counters(srv)
        assert c["cancelled_shutdown"] == 5 and c["rejected_shutdown"] == 40
    finally:
        await srv.stop()


async def test_replies_for_a_caller_gone_before_they_leave_are_counted(
    server: zmicro.Server, zsocket: Callable[..., zmq.asyncio.Socket], client: zmicro.Client
) -> None:
    sock = zsocket(zmq.DEALER)
    sock.connect(server.endpoint)
    before = counters(server)
    await sock.send(p.encode_batch([req(i, "sleep", seconds=0.4) for i in range(1, 21)]))
    await wait_until(lambda: server.statistics()["running"] == 20)
    sock.close(linger=0)
    await wait_until(lambda: counters(server).get("disconnections", 0) > before.get("disconnections", 0))
    await wait_until(lambda: counters(server).get("undeliverable", 0) - before.get("undeliverable", 0) == 20)
    await assert_serving(client)


async def test_slow_reader_drops_are_counted_and_everything_is_accounted_for(
    zsocket: Callable[..., zmq.asyncio.Socket],
) -> None:
    svc = type("Roomy", (Batchy,), {"max_concurrency": 64, "max_queued": 4096})()
    options = SocketOptions(max_message_bytes=4 * 1024 * 1024, send_hwm=2, recv_hwm=100)
    async with serving(svc, socket_options=options) as srv:
        sock = zsocket(zmq.DEALER, RCVHWM=1, RCVBUF=4096)
        sock.connect(srv.endpoint)
        n, size = 1000, 30_000
        for start in range(0, n, 250):
            await sock.send(p.encode_batch([req(i, "big", size=size) for i in range(start + 1, start + 251)]))
        await wait_until(
            lambda: counters(srv).get("replies", 0) == n and srv.statistics()["running"] == 0, within=WAIT * 2
        )
        dropped = counters(srv).get("reply_dropped_hwm", 0)
        assert dropped > 0, "a reader this slow should have made the server drop replies"
        received: list[p.Message] = []
        while await sock.poll(500, zmq.POLLIN):
            msg = p.decode((await sock.recv_multipart(zmq.NOBLOCK))[0])
            received.extend(p.decode(m) for m in msg.messages) if isinstance(
                msg, p.Batch
            ) else received.append(msg)
        answers = by_id(received)
        assert all(isinstance(m, p.Reply) for m in answers.values())
        assert len(answers) + dropped == n, (len(answers), dropped)


async def test_server_killed_with_calls_in_flight_fails_them_promptly() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    async with zmicro.open_client(endpoint, timeout=10) as cl:
        with zmicro_run("services.py:Slow", "--bind", endpoint, "--grace", "1") as (proc, _):
            async with asyncio.timeout(WAIT * 2):
                assert await cl.slow.hello() == "hi"
            calls = [asyncio.ensure_future(cl.slow.sleep(seconds=30)) for _ in range(40)]
            await asyncio.sleep(0.3)
            os.kill(proc.pid, signal.SIGKILL)
            async with asyncio.timeout(WAIT + 1):
                results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, zmicro.PeerLostError) for r in results), {type(r) for r in results}
        assert cl.statistics()[endpoint]["pending"] == 0


# -- bounded state --------------------------------------------------------------------------


async def test_finished_requests_leave_no_deadline_state_behind(
    server: zmicro.Server, dealer: zmq.asyncio.Socket
) -> None:
    """Requests with long deadlines, each in its own tick: once answered, nothing is kept."""
    n = 500
    await dealer.send(
        p.encode_batch([req(i, "hello", deadline_ms=600_000 + 20 * i, who="t") for i in range(1, n + 1)])
    )
    by_id(await recv_messages(dealer, n))
    await wait_until(lambda: server.statistics()["running"] == 0)
    assert len(server._ticks) < 10, f"{len(server._ticks)} deadline ticks kept for finished requests"
