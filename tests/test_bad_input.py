"""Hostile and broken peers, over real TCP sockets on 127.0.0.1.

Every test puts a misbehaving peer (a raw pyzmq socket, or a plain TCP stream) next to
a well-behaved zmicro client on the same server, and checks three things: the bad input
is counted under the right key in ``server.statistics()["counters"]``; when the sender
can be addressed it gets an ERROR with code ``protocol_error``; and the well-behaved
client is still served afterwards. The last tests turn it around: a fake server (a raw
ROUTER) misbehaves towards a zmicro client.

Every wait has a timeout; every socket and stream is closed by the fixture that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio

import zmicro
from zmicro import protocol as p

WAIT = 3.0
"""Seconds any single wait in these tests may take before it counts as a failure."""


def frame(kind: int, body: Any, *, version: int = p.VERSION, signature: bytes = p.SIGNATURE) -> bytes:
    """A message frame with an arbitrary header and a MessagePack-encoded body."""
    return signature + bytes((version, kind)) + msgspec.msgpack.encode(body)


def valid_request(request_id: int = 1, **args: Any) -> bytes:
    return p.encode_request(request_id, "greeter", "hello", p.Headers(5_000), args or {"who": "raw"})


class Greeter(zmicro.Service):
    """The service under attack."""

    name = "greeter"

    @zmicro.rpc
    async def hello(self, who: str, times: int = 1) -> str:
        return " ".join([f"Hello, {who}!"] * times)

    @zmicro.rpc
    async def unencodable(self, what: str) -> Any:
        values: dict[str, Any] = {"object": object(), "surrogate": "\udcff", "huge_int": 2**70}
        return values[what]

    @zmicro.rpc
    async def explode(self, why: str) -> str:
        raise ValueError(why)

    @zmicro.rpc
    def explode_in_thread(self, why: str) -> str:
        raise KeyError(why)

    @zmicro.rpc
    async def explode_with_filename(self, raw_name: str) -> str:
        # A file name that is not UTF-8, as os.listdir / os.fsdecode hand it over.
        name = os.fsdecode(raw_name.encode("latin-1"))
        raise ValueError(f"cannot process {name}")


class Fragile(Greeter):
    """One handler at a time, so a leaked concurrency slot shows up at the next call."""

    name = "greeter"
    max_concurrency = 1
    max_queued = 4


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[zmicro.Server]:
    async with zmicro.open_server(Greeter(), bind="tcp://127.0.0.1:0", grace=1.0) as srv:
        yield srv


@pytest.fixture
async def client(server: zmicro.Server) -> AsyncIterator[zmicro.Client]:
    """A well-behaved client, already connected (one call made) before the attack starts."""
    async with zmicro.open_client(server.endpoint, timeout=WAIT) as cl:
        await assert_serving(cl)
        yield cl


@pytest.fixture
async def zsocket() -> AsyncIterator[Callable[[int], zmq.asyncio.Socket]]:
    """Makes raw pyzmq sockets on a private context; closes them all (LINGER 0)."""
    ctx = zmq.asyncio.Context()
    opened: list[zmq.asyncio.Socket] = []

    def make(socket_type: int) -> zmq.asyncio.Socket:
        sock = ctx.socket(socket_type)
        sock.setsockopt(zmq.LINGER, 0)
        opened.append(sock)
        return sock

    try:
        yield make
    finally:
        for sock in opened:
            sock.close(linger=0)
        ctx.term()


@pytest.fixture
def dealer(server: zmicro.Server, zsocket: Callable[[int], zmq.asyncio.Socket]) -> zmq.asyncio.Socket:
    """The misbehaving peer: a raw DEALER connected to the server."""
    sock = zsocket(zmq.DEALER)
    sock.connect(server.endpoint)
    return sock


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def tcp_stream() -> AsyncIterator[Callable[[str], Awaitable[Streams]]]:
    """Opens plain asyncio TCP streams to a tcp:// endpoint; closes every one of them."""
    writers: list[asyncio.StreamWriter] = []

    async def connect(endpoint: str) -> Streams:
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), WAIT)
        writers.append(writer)
        return reader, writer

    try:
        yield connect
    finally:
        for writer in writers:
            await close_writer(writer)


# -- helpers -----------------------------------------------------------------------------


async def close_writer(writer: asyncio.StreamWriter) -> None:
    if writer.is_closing():
        return
    writer.close()
    with contextlib.suppress(ConnectionError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), WAIT)


async def assert_serving(client: zmicro.Client, who: str = "after") -> None:
    async with asyncio.timeout(WAIT):
        assert await client.greeter.hello(who=who) == f"Hello, {who}!"


async def recv_frames(sock: zmq.asyncio.Socket, within: float = WAIT) -> list[bytes]:
    """One message, or AssertionError after ``within`` seconds; no receive is ever cancelled."""
    if not await sock.poll(int(within * 1000), zmq.POLLIN):
        raise AssertionError(f"no message within {within} s")
    return await sock.recv_multipart(zmq.NOBLOCK)


async def recv_messages(sock: zmq.asyncio.Socket, count: int, within: float = WAIT) -> list[p.Message]:
    """``count`` messages in order, whether they came one by one or coalesced in BATCHes."""
    out: list[p.Message] = []
    while len(out) < count:
        msg = p.decode((await recv_frames(sock, within))[0])
        out.extend(p.decode(m) for m in msg.messages) if isinstance(msg, p.Batch) else out.append(msg)
    return out


async def expect_protocol_error(sock: zmq.asyncio.Socket, request_id: int = 0) -> p.ErrorReply:
    frames = await recv_frames(sock)
    assert len(frames) == 1, frames
    msg = p.decode(frames[0])
    assert isinstance(msg, p.ErrorReply), msg
    assert msg.code == "protocol_error", msg
    assert msg.id == request_id, msg
    assert msg.message
    return msg


async def expect_silence(sock: zmq.asyncio.Socket, seconds: float = 0.2) -> None:
    events = await sock.poll(int(seconds * 1000), zmq.POLLIN)
    if events:
        raise AssertionError(f"unexpected message: {await sock.recv_multipart(zmq.NOBLOCK)!r}")


def counters(server: zmicro.Server) -> dict[str, int]:
    return dict(server.statistics()["counters"])


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = before.keys() | after.keys()
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until it holds; ``TimeoutError`` after ``WAIT`` seconds."""
    async with asyncio.timeout(WAIT):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


async def wait_counter(server: zmicro.Server, key: str, at_least: int) -> dict[str, int]:
    try:
        await wait_until(lambda: counters(server).get(key, 0) >= at_least)
    except TimeoutError:
        raise AssertionError(f"counter {key!r} never reached {at_least}: {counters(server)}") from None
    return counters(server)


# Counters that move on every exchange of the well-behaved client or on connection events.
_NOISE = {
    "messages_in",
    "requests",
    "builtin_requests",
    "replies",
    "connections",
    "disconnections",
    "batches_in",
    "batches_out",
}


def bad_input_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in delta(before, after).items() if k not in _NOISE}


# -- the server against broken peers -----------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([valid_request(1), b"extra"], id="2-frames"),
        pytest.param([valid_request(2), b"extra", b"more"], id="3-frames"),
        pytest.param([b"", valid_request(3)], id="req-style-empty-delimiter"),
    ],
)
async def test_multi_frame_message_is_malformed(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket, frames: list[bytes]
) -> None:
    before = counters(server)
    await dealer.send_multipart(frames)
    err = await expect_protocol_error(dealer)
    assert f"got {len(frames)}" in err.message
    assert bad_input_delta(before, counters(server)) == {"malformed": 1, "errors_out.protocol_error": 1}
    await assert_serving(client)


async def test_garbage_flood_is_counted_every_time_and_logged_rarely(
    server: zmicro.Server,
    client: zmicro.Client,
    dealer: zmq.asyncio.Socket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="zmicro.server")
    rng = random.Random(20240601)
    garbage: list[bytes] = []
    expected_ids: list[int] = []
    while len(garbage) < 200:
        body = rng.randbytes(rng.randrange(0, 64))
        if rng.random() < 0.5:
            # A valid header in front of noise goes deeper into the decoder.
            body = p.SIGNATURE + bytes((p.VERSION, rng.choice(list(p.Kind)))) + body
        try:
            p.decode(body)
        except zmicro.ProtocolError as exc:
            garbage.append(body)
            expected_ids.append(exc.request_id)
        # (noise that happens to be a valid message is skipped: the seed makes this stable)

    before = counters(server)
    for body in garbage:
        await dealer.send(body)
    replies = await recv_messages(dealer, len(garbage))

    assert all(isinstance(r, p.ErrorReply) and r.code == "protocol_error" for r in replies)
    assert [r.id for r in replies if isinstance(r, p.ErrorReply)] == expected_ids
    after = counters(server)
    assert bad_input_delta(before, after) == {"malformed": 200, "errors_out.protocol_error": 200}
    assert after["messages_in"] - before["messages_in"] == 200

    warnings = [
        r
        for r in caplog.records
        if r.name == "zmicro.server" and r.levelno == logging.WARNING and "malformed" in r.getMessage()
    ]
    assert 1 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    await assert_serving(client)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(valid_request(5)[:-3], id="truncated-args"),
        pytest.param(valid_request(5)[:6], id="truncated-after-first-byte"),
        pytest.param(valid_request(5)[:4], id="header-only"),
        pytest.param(valid_request(5)[:3], id="shorter-than-header"),
        pytest.param(b"", id="empty-frame"),
        pytest.param(p.SIGNATURE + bytes((p.VERSION, p.Kind.REQUEST)) + b"\xc1", id="never-used-byte"),
    ],
)
async def test_truncated_or_undecodable_body_is_malformed(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket, body: bytes
) -> None:
    before = counters(server)
    await dealer.send(body)
    await expect_protocol_error(dealer, request_id=0)
    assert bad_input_delta(before, counters(server)) == {"malformed": 1, "errors_out.protocol_error": 1}
    await assert_serving(client)


_HEADERS = {"deadline_ms": 5_000}


@pytest.mark.parametrize(
    ("body", "request_id"),
    [
        pytest.param([7, 123, "hello", _HEADERS, {}], 7, id="service-is-int"),
        pytest.param([8, "greeter", ["hello"], _HEADERS, {}], 8, id="method-is-list"),
        pytest.param([9, "greeter", "hello", "soon", {}], 9, id="headers-is-str"),
        pytest.param([10, "greeter", "hello", {"deadline_ms": "soon"}, {}], 10, id="deadline-is-str"),
        pytest.param([11, "greeter", "hello", {"deadline_ms": 2**40}, {}], 11, id="deadline-too-big"),
        pytest.param([12, "greeter", "hello", {}, {}], 12, id="headers-missing-deadline"),
        pytest.param([13, "", "hello", _HEADERS, {}], 13, id="empty-service-name"),
        pytest.param([14, "greeter", "x" * 300, _HEADERS, {}], 14, id="method-name-too-long"),
        pytest.param([15, "greeter"], 15, id="too-few-fields"),
        pytest.param([2**63 - 1, 1, 2, 3, 4], 2**63 - 1, id="largest-id"),
        # No usable id: the error cannot name a request.
        pytest.param([0, "greeter", "hello", _HEADERS, {}], 0, id="id-zero"),
        pytest.param([-4, "greeter", "hello", _HEADERS, {}], 0, id="id-negative"),
        pytest.param([2**64 - 1, "greeter", "hello", _HEADERS, {}], 0, id="id-too-big"),
        pytest.param(["7", "greeter", "hello", _HEADERS, {}], 0, id="id-is-str"),
        pytest.param({"id": 7}, 0, id="map-not-array"),
    ],
)
async def test_request_with_wrong_field_types_is_answered_with_its_id(
    server: zmicro.Server,
    client: zmicro.Client,
    dealer: zmq.asyncio.Socket,
    body: Any,
    request_id: int,
) -> None:
    before = counters(server)
    await dealer.send(frame(p.Kind.REQUEST, body))
    err = await expect_protocol_error(dealer, request_id=request_id)
    assert "REQUEST" in err.message
    assert bad_input_delta(before, counters(server)) == {"malformed": 1, "errors_out.protocol_error": 1}
    await assert_serving(client)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(b"ZM\x02\x01" + valid_request(21)[4:], "version 2", id="version-2"),
        pytest.param(b"ZM\x00\x01" + valid_request(22)[4:], "version 0", id="version-0"),
        pytest.param(b"ZM\xff\x01" + valid_request(23)[4:], "version 255", id="version-255"),
        pytest.param(b"MZ\x01\x01" + valid_request(24)[4:], "signature", id="bad-signature"),
        pytest.param(b"ZM\x01\x0b" + valid_request(25)[4:], "kind 11", id="unknown-kind"),
        pytest.param(b"ZM\x01\x00" + valid_request(26)[4:], "kind 0", id="kind-zero"),
    ],
)
async def test_wrong_version_or_header_is_malformed(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket, body: bytes, needle: str
) -> None:
    before = counters(server)
    await dealer.send(body)
    err = await expect_protocol_error(dealer, request_id=0)
    assert needle in err.message
    assert bad_input_delta(before, counters(server)) == {"malformed": 1, "errors_out.protocol_error": 1}
    await assert_serving(client)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(p.encode_reply(31, "hi"), id="REPLY"),
        pytest.param(p.encode_error(32, "remote_error", "boom"), id="ERROR"),
        pytest.param(p.encode_error(0, "protocol_error", "you too"), id="ERROR-id-0"),
        pytest.param(p.encode_pong(33), id="PONG"),
    ],
)
async def test_message_a_server_does_not_accept_is_unexpected(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket, body: bytes
) -> None:
    before = counters(server)
    await dealer.send(body)
    err = await expect_protocol_error(dealer, request_id=0)
    assert "does not accept" in err.message
    assert bad_input_delta(before, counters(server)) == {"unexpected": 1, "errors_out.protocol_error": 1}
    await assert_serving(client)


async def test_a_batch_is_handled_message_by_message(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket
) -> None:
    """Good requests in a BATCH are served; a bad one among them gets its own error."""
    bad = p.SIGNATURE + bytes((p.VERSION, p.Kind.REQUEST)) + msgspec.msgpack.encode([7, "greeter", 5])
    nested = p.encode_batch([valid_request(9, who="nested")])
    before = counters(server)
    await dealer.send(p.encode_batch([valid_request(5, who="a"), bad, nested, valid_request(6, who="b")]))
    replies = await recv_messages(dealer, 4)
    by_id = {r.id: r for r in replies if isinstance(r, p.Reply | p.ErrorReply)}
    assert p.decode_value(by_id[5].result) == "Hello, a!"  # type: ignore[union-attr]
    assert p.decode_value(by_id[6].result) == "Hello, b!"  # type: ignore[union-attr]
    assert isinstance(by_id[7], p.ErrorReply) and by_id[7].code == "protocol_error"
    assert isinstance(by_id[0], p.ErrorReply) and "inside a BATCH" in by_id[0].message
    delta = bad_input_delta(before, counters(server))
    assert delta == {"malformed": 2, "errors_out.protocol_error": 2}, delta
    await assert_serving(client)


@pytest.mark.parametrize(
    "body",
    [
        frame(p.Kind.BATCH, [[]]),
        frame(p.Kind.BATCH, [[b"x"] * (p.MAX_BATCH + 1)]),
        frame(p.Kind.BATCH, [["not bytes"]]),
    ],
    ids=["empty", "too-many", "not-bytes"],
)
async def test_a_bad_batch_is_one_protocol_error(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket, body: bytes
) -> None:
    await dealer.send(body)
    await expect_protocol_error(dealer)
    await assert_serving(client)


async def test_ping_from_a_raw_peer_gets_a_pong(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket
) -> None:
    """Control case: the raw peer itself is understood when it speaks the protocol."""
    await dealer.send(p.encode_ping(99))
    assert p.decode((await recv_frames(dealer))[0]) == p.Pong(99)
    await dealer.send(valid_request(41, who="raw"))
    reply = p.decode((await recv_frames(dealer))[0])
    assert isinstance(reply, p.Reply)
    assert reply.id == 41
    assert p.decode_value(reply.result) == "Hello, raw!"
    await assert_serving(client)


async def test_cancel_for_unknown_id_is_counted_and_not_answered(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket
) -> None:
    before = counters(server)
    await dealer.send(p.encode_cancel(424242))
    after = await wait_counter(server, "cancel_unknown", before.get("cancel_unknown", 0) + 1)
    assert bad_input_delta(before, after) == {"cancel_unknown": 1, "cancels_in": 1}
    await expect_silence(dealer)
    await assert_serving(client)


async def test_message_over_max_message_bytes_is_answered_as_oversized(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket
) -> None:
    assert server._rpc is not None
    limit = server._rpc.max_message_bytes
    assert limit == 1024 * 1024
    socket_limit = server._options.max_message_bytes
    body = valid_request(51, who="x" * (limit + limit // 2))
    assert limit < len(body) < socket_limit

    before = counters(server)
    await dealer.send(body)
    err = await expect_protocol_error(dealer, request_id=51)  # the id is read so the caller is answered
    assert f"exceeds {limit}" in err.message
    assert bad_input_delta(before, counters(server)) == {"oversized": 1, "errors_out.protocol_error": 1}

    # A message of exactly the limit is still accepted (the limit is inclusive).
    probe = limit - 100
    overhead = len(valid_request(52, who="y" * probe)) - probe
    at_limit = valid_request(52, who="y" * (limit - overhead))
    assert len(at_limit) == limit
    await dealer.send(at_limit)
    reply = p.decode((await recv_frames(dealer))[0])
    assert isinstance(reply, p.Reply)
    assert reply.id == 52
    await assert_serving(client)


async def test_message_over_socket_maxmsgsize_drops_only_that_connection(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket
) -> None:
    socket_limit = server._options.max_message_bytes
    body = valid_request(61, who="z" * (socket_limit + 1024))
    assert len(body) > socket_limit

    # Make sure the raw peer is connected (a PONG came back) before it misbehaves.
    await dealer.send(p.encode_ping(1))
    assert p.decode((await recv_frames(dealer))[0]) == p.Pong(1)

    before = counters(server)
    await dealer.send(body)
    after = await wait_counter(server, "disconnections", before.get("disconnections", 0) + 1)
    # libzmq drops the connection before zmicro sees a byte of it: nothing to count or answer.
    assert bad_input_delta(before, after) == {}
    assert after["messages_in"] == before["messages_in"]
    await expect_silence(dealer)
    await assert_serving(client)

    # The peer reconnects on its own and is served again once it behaves.
    await dealer.send(p.encode_ping(2))
    assert p.decode((await recv_frames(dealer))[0]) == p.Pong(2)


async def test_http_request_on_the_port_fails_the_handshake(
    server: zmicro.Server, client: zmicro.Client, tcp_stream: Callable[[str], Awaitable[Streams]]
) -> None:
    before = counters(server)
    reader, writer = await tcp_stream(server.endpoint)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    # libzmq sends its ZMTP greeting (signature byte 0xFF first) and never speaks HTTP;
    # the failed handshake is reported when the HTTP client gives up and hangs up.
    greeting = await asyncio.wait_for(reader.read(10), WAIT)
    assert greeting[:1] == b"\xff"
    assert b"HTTP" not in greeting
    await close_writer(writer)

    after = await wait_counter(server, "handshake_failed", before.get("handshake_failed", 0) + 1)
    assert bad_input_delta(before, after) == {"handshake_failed": 1}
    await assert_serving(client)


async def test_silent_tcp_client_does_not_disturb_the_server(
    server: zmicro.Server, client: zmicro.Client, tcp_stream: Callable[[str], Awaitable[Streams]]
) -> None:
    before = counters(server)
    _, writer = await tcp_stream(server.endpoint)
    # While the silent connection is open, others are served.
    await assert_serving(client, who="during")
    await close_writer(writer)
    after = await wait_counter(server, "disconnections", before.get("disconnections", 0) + 1)
    # Nothing was sent: at most a failed handshake may be counted, never bad messages.
    assert set(bad_input_delta(before, after)) <= {"handshake_failed"}
    await assert_serving(client)


async def test_several_kinds_of_bad_input_on_one_connection(
    server: zmicro.Server, client: zmicro.Client, dealer: zmq.asyncio.Socket
) -> None:
    """Bad input does not poison the connection it came on: a good request still works."""
    before = counters(server)
    await dealer.send_multipart([b"a", b"b"])
    await expect_protocol_error(dealer)
    await dealer.send(b"\x00\x01garbage")
    await expect_protocol_error(dealer)
    await dealer.send(frame(p.Kind.REQUEST, [71, 1, 2, 3, 4]))
    await expect_protocol_error(dealer, request_id=71)
    await dealer.send(p.encode_reply(72, None))
    await expect_protocol_error(dealer)
    await dealer.send(valid_request(73, who="still me"))
    reply = p.decode((await recv_frames(dealer))[0])
    assert isinstance(reply, p.Reply)
    assert (reply.id, p.decode_value(reply.result)) == (73, "Hello, still me!")
    assert bad_input_delta(before, counters(server)) == {
        "malformed": 3,
        "unexpected": 1,
        "errors_out.protocol_error": 4,
    }
    await assert_serving(client)


# -- handlers that fail ------------------------------------------------------------------


@pytest.mark.parametrize("what", ["object", "surrogate", "huge_int"])
async def test_unencodable_result_is_a_prompt_remote_error(
    server: zmicro.Server, client: zmicro.Client, what: str
) -> None:
    before = counters(server)
    async with asyncio.timeout(WAIT):
        with pytest.raises(zmicro.RemoteError) as info:
            await client.greeter.unencodable(what=what, _timeout=WAIT + 5)
    assert "could not be encoded" in info.value.message
    assert "greeter.unencodable" in info.value.message
    assert info.value.type_name == "EncodeError"
    assert delta(before, counters(server)).get("unencodable_results") == 1
    await assert_serving(client)


@pytest.mark.parametrize(
    ("method", "type_name", "message", "function"),
    [
        ("explode", "ValueError", "boom", "explode"),
        ("explode_in_thread", "KeyError", "'boom'", "explode_in_thread"),
    ],
)
async def test_handler_exception_is_a_remote_error_with_traceback(
    server: zmicro.Server,
    client: zmicro.Client,
    method: str,
    type_name: str,
    message: str,
    function: str,
) -> None:
    before = counters(server)
    async with asyncio.timeout(WAIT):
        with pytest.raises(zmicro.RemoteError) as info:
            await client.call("greeter", method, why="boom")
    err = info.value
    assert err.code == "remote_error"
    assert err.type_name == type_name
    assert err.message == message
    assert f"in {function}" in err.remote_traceback
    assert f"{type_name}: {message}" in err.remote_traceback
    assert str(err) == f"{type_name}: {message}"
    assert delta(before, counters(server)).get("handler_errors") == 1
    await assert_serving(client)


async def test_handler_exception_with_undecodable_filename_is_a_prompt_remote_error() -> None:
    """A message carrying a surrogate-escaped file name (os.fsdecode of non-UTF-8 bytes)."""
    async with (
        zmicro.open_server(Fragile(), bind="tcp://127.0.0.1:0", grace=1.0) as server,
        zmicro.open_client(server.endpoint, timeout=WAIT) as client,
    ):
        await assert_serving(client, who="before")
        first: BaseException | None = None
        try:
            await client.greeter.explode_with_filename(raw_name="caf\xe9.txt", _timeout=1.0)
        except BaseException as exc:
            first = exc
        second: BaseException | str
        try:
            second = await client.greeter.hello(who="after", _timeout=1.0)
        except BaseException as exc:
            second = exc
        assert isinstance(first, zmicro.RemoteError), (
            f"expected a prompt RemoteError, got {first!r}; the next call gave {second!r}"
        )
        assert first.type_name == "ValueError"
        assert "cannot process" in first.message
        assert second == "Hello, after!"


# -- a zmicro client against a broken server ----------------------------------------------


@pytest.fixture
def fake_server(zsocket: Callable[[int], zmq.asyncio.Socket]) -> zmq.asyncio.Socket:
    router = zsocket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    return router


def endpoint_of(sock: zmq.asyncio.Socket) -> str:
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)


_queued_requests: dict[int, list[tuple[bytes, p.Message]]] = {}


async def next_request(router: zmq.asyncio.Socket) -> tuple[bytes, p.Request]:
    """The next request a client sent, whether alone or coalesced with others in a BATCH."""
    queued = _queued_requests.setdefault(id(router), [])
    if not queued:
        peer, body = await recv_frames(router)
        msg = p.decode(body)
        queued.extend((peer, p.decode(m)) for m in msg.messages) if isinstance(
            msg, p.Batch
        ) else queued.append((peer, msg))
    peer, msg = queued.pop(0)
    assert isinstance(msg, p.Request), msg
    return peer, msg


def client_stats(client: zmicro.Client) -> dict[str, int]:
    (stats,) = client.statistics().values()
    return stats


async def wait_client(client: zmicro.Client, key: str, at_least: int) -> dict[str, int]:
    try:
        await wait_until(lambda: client_stats(client).get(key, 0) >= at_least)
    except TimeoutError:
        raise AssertionError(
            f"client counter {key!r} never reached {at_least}: {client_stats(client)}"
        ) from None
    return client_stats(client)


async def test_client_survives_garbage_unknown_and_duplicate_replies(
    fake_server: zmq.asyncio.Socket,
) -> None:
    async with zmicro.open_client(endpoint_of(fake_server), timeout=WAIT) as client:
        first = asyncio.create_task(client.greeter.hello(who="one"))
        second = asyncio.create_task(client.greeter.hello(who="two"))
        try:
            peer, req1 = await next_request(fake_server)
            peer2, req2 = await next_request(fake_server)
            assert peer2 == peer
            assert req1.id != req2.id
            unknown = max(req1.id, req2.id) + 1000

            # Garbage of every sort: none of it may resolve either pending call.
            await fake_server.send_multipart([peer, b"\x00\x01\x02 not zmicro"])
            await fake_server.send_multipart([peer, b""])
            await fake_server.send_multipart([peer, b"ZM\x07\x02" + p.encode_reply(req1.id, "v7")[4:]])
            await fake_server.send_multipart([peer, p.SIGNATURE + bytes((p.VERSION, p.Kind.REPLY)) + b"\xc1"])
            await fake_server.send_multipart([peer, p.encode_reply(req1.id, "two frames"), b"extra"])
            await wait_client(client, "malformed", 5)

            # A well-formed reply for an id nobody waits for.
            await fake_server.send_multipart([peer, p.encode_reply(unknown, "not yours")])
            await fake_server.send_multipart([peer, p.encode_error(unknown + 1, "remote_error", "nor this")])
            await wait_client(client, "late_replies", 2)

            # Kinds a client does not accept, and an error that names no request.
            await fake_server.send_multipart([peer, p.encode_request(req1.id, "x", "y", p.Headers(1), {})])
            await fake_server.send_multipart([peer, p.encode_cancel(req1.id)])
            await fake_server.send_multipart([peer, p.encode_ping(5)])
            await wait_client(client, "unexpected", 3)
            await fake_server.send_multipart([peer, p.encode_error(0, "protocol_error", "who are you")])
            await wait_client(client, "errors_without_id", 1)

            await asyncio.sleep(0.05)
            assert not first.done()
            assert not second.done()
            assert client_stats(client)["pending"] == 2

            # The right reply resolves the right call, and only it.
            await fake_server.send_multipart([peer, p.encode_reply(req2.id, "for two")])
            assert await asyncio.wait_for(second, WAIT) == "for two"
            assert not first.done()

            # A duplicate of that reply is dropped and counted, not given to the other call.
            await fake_server.send_multipart([peer, p.encode_reply(req2.id, "again")])
            stats = await wait_client(client, "late_replies", 3)
            assert not first.done()

            await fake_server.send_multipart([peer, p.encode_reply(req1.id, "for one")])
            assert await asyncio.wait_for(first, WAIT) == "for one"
        finally:
            for task in (first, second):
                task.cancel()
            await asyncio.gather(first, second, return_exceptions=True)

        stats = client_stats(client)
        assert stats["malformed"] == 5
        assert stats["late_replies"] == 3
        assert stats["unexpected"] == 3
        assert stats["errors_without_id"] == 1
        assert stats["pending"] == 0
        assert stats.get("peer_lost", 0) == 0


async def test_client_fails_a_call_whose_reply_is_broken_but_names_it(
    fake_server: zmq.asyncio.Socket,
) -> None:
    """A REPLY body that does not decode but whose id is readable ends that call at once."""
    async with zmicro.open_client(endpoint_of(fake_server), timeout=WAIT) as client:
        call = asyncio.create_task(client.greeter.hello(who="one"))
        other = asyncio.create_task(client.greeter.hello(who="two"))
        try:
            peer, req = await next_request(fake_server)
            _, req_other = await next_request(fake_server)
            await fake_server.send_multipart([peer, frame(p.Kind.REPLY, [req.id])])  # result missing
            with pytest.raises(zmicro.ZmicroError):
                await asyncio.wait_for(call, WAIT)
            assert not other.done()
            await fake_server.send_multipart([peer, p.encode_reply(req_other.id, "fine")])
            assert await asyncio.wait_for(other, WAIT) == "fine"
        finally:
            for task in (call, other):
                task.cancel()
            await asyncio.gather(call, other, return_exceptions=True)
        assert client_stats(client)["malformed"] == 1
