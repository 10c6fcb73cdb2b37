"""The protocol v1 codec: round trips, hostile input, and the examples in docs/protocol.md.

Pure tests: no sockets, no event loop. The contract under test is the one in
``docs/protocol.md``: ``decode`` turns any bytes into a message or a ``ProtocolError``
(with the request id when it can be recovered), and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmicro import ProtocolError, ZmicroError
from zmicro.protocol import (
    MAX_NAME_LENGTH,
    SIGNATURE,
    VERSION,
    Batch,
    Cancel,
    ErrorReply,
    Event,
    Headers,
    Kind,
    Ping,
    Pong,
    Reply,
    Request,
    Subscribe,
    Subscribed,
    decode,
    decode_value,
    encode_batch,
    encode_cancel,
    encode_error,
    encode_ping,
    encode_pong,
    encode_reply,
    encode_request,
    encode_value,
)

MAX_ID = 2**63 - 1
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
MESSAGE_TYPES = (Request, Reply, ErrorReply, Cancel, Ping, Pong, Subscribe, Subscribed, Event)

# Moderate example counts: the whole module should run in a few seconds. No example
# database, so running the tests leaves nothing behind.
fast = settings(max_examples=150, deadline=None, database=None)
fuzz = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

_mp = msgspec.msgpack.Encoder()


def header(kind: int, *, version: int = VERSION) -> bytes:
    return SIGNATURE + bytes((version, kind))


def frame(kind: int, body: Any) -> bytes:
    """A message built by hand: a valid header, then ``body`` MessagePack-encoded."""
    return header(kind) + _mp.encode(body)


def decode_or_protocol_error(data: bytes) -> ProtocolError | None:
    """Decode; a ``ProtocolError`` is returned, any other exception propagates (= test failure)."""
    try:
        msg = decode(data)
    except ProtocolError as exc:
        error = exc
    else:
        assert type(msg) in MESSAGE_TYPES
        return None
    assert isinstance(error.request_id, int)
    assert 0 <= error.request_id <= MAX_ID
    return error


def protocol_error(data: bytes) -> ProtocolError:
    exc = decode_or_protocol_error(data)
    assert exc is not None, f"{data!r} decoded without error"
    return exc


# -- strategies ---------------------------------------------------------------

ids = st.integers(1, MAX_ID)
nonces = st.integers(0, MAX_ID)
names = st.text(min_size=1, max_size=MAX_NAME_LENGTH)
short_texts = st.none() | st.text(max_size=80)
headers = st.builds(
    Headers,
    deadline_ms=st.integers(-(2**31), 2**31 - 1),
    traceparent=short_texts,
    idempotency_key=short_texts,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
args_maps = st.dictionaries(st.text(max_size=16), values, max_size=5)
# Values a hostile peer could send: also maps with non-str keys, and extension types.
hostile_scalars = scalars | st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=12))
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(max_size=12) | st.integers(-(2**63), 2**64 - 1), inner, max_size=4)
    ),
    max_leaves=10,
)


# -- constants ------------------------------------------------------------------


def test_constants_match_the_spec() -> None:
    assert SIGNATURE == b"ZM"
    assert VERSION == 1
    assert MAX_NAME_LENGTH == 255
    assert {k.name: k.value for k in Kind} == {
        "REQUEST": 1,
        "REPLY": 2,
        "ERROR": 3,
        "CANCEL": 4,
        "PING": 5,
        "PONG": 6,
        "SUBSCRIBE": 7,
        "SUBSCRIBED": 8,
        "EVENT": 9,
        "BATCH": 10,
    }
    assert issubclass(ProtocolError, ZmicroError)


# -- round trips ------------------------------------------------------------------


@fast
@given(ids, names, names, headers, args_maps)
def test_request_round_trip(
    request_id: int, service: str, method: str, hdrs: Headers, args: dict[str, Any]
) -> None:
    data = encode_request(request_id, service, method, hdrs, args)
    assert data[:4] == b"ZM\x01\x01"
    msg = decode(data)
    assert type(msg) is Request
    assert (msg.id, msg.service, msg.method, msg.headers) == (request_id, service, method, hdrs)
    assert decode_value(msg.args) == args


@fast
@given(ids, values)
def test_reply_round_trip(request_id: int, result: Any) -> None:
    data = encode_reply(request_id, result)
    assert data[:4] == b"ZM\x01\x02"
    msg = decode(data)
    assert type(msg) is Reply
    assert msg.id == request_id
    assert decode_value(msg.result) == result


@fast
@given(
    st.integers(0, MAX_ID),
    names,
    st.text(max_size=200),
    st.none() | st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4),
)
def test_error_round_trip(request_id: int, code: str, message: str, details: dict[str, str] | None) -> None:
    data = encode_error(request_id, code, message, details)
    assert data[:4] == b"ZM\x01\x03"
    msg = decode(data)
    assert msg == ErrorReply(request_id, code, message, details or {})


@fast
@given(ids)
def test_cancel_round_trip(request_id: int) -> None:
    data = encode_cancel(request_id)
    assert data[:4] == b"ZM\x01\x04"
    assert decode(data) == Cancel(request_id)


@fast
@given(nonces)
def test_ping_pong_round_trip(nonce: int) -> None:
    ping, pong = encode_ping(nonce), encode_pong(nonce)
    assert ping[:4] == b"ZM\x01\x05"
    assert pong[:4] == b"ZM\x01\x06"
    assert decode(ping) == Ping(nonce)
    assert decode(pong) == Pong(nonce)


@fast
@given(values)
def test_value_round_trip(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


def test_decode_accepts_memoryview_and_bytearray() -> None:
    data = encode_cancel(9)
    assert decode(memoryview(data)) == Cancel(9)
    assert decode(memoryview(b"xx" + data)[2:]) == Cancel(9)
    assert decode(bytearray(data)) == Cancel(9)


def test_headers_absent_and_nil_optional_keys_are_equivalent() -> None:
    a = decode(frame(Kind.REQUEST, [1, "s", "m", {"deadline_ms": 5}, {}]))
    b = decode(frame(Kind.REQUEST, [1, "s", "m", {"deadline_ms": 5, "traceparent": None}, {}]))
    assert isinstance(a, Request)
    assert isinstance(b, Request)
    assert a.headers == b.headers == Headers(5)


def test_encoder_omits_unset_headers() -> None:
    data = encode_request(1, "s", "m", Headers(7), {})
    assert data == frame(Kind.REQUEST, [1, "s", "m", {"deadline_ms": 7}, {}])


# -- forward compatibility ------------------------------------------------------


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.lists(hostile_values, min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=12), hostile_values),
)
def test_extra_trailing_elements_and_unknown_header_keys_are_ignored(
    extra: list[Any], more_headers: dict[str, Any]
) -> None:
    hdrs = {**{k: v for k, v in more_headers.items() if k not in Headers.__struct_fields__}, "deadline_ms": 9}
    cases = [
        (Kind.REQUEST, [3, "svc", "meth", hdrs, {"a": 1}], (3, "svc", "meth", Headers(9))),
        (Kind.REPLY, [3, [1, 2]], (3,)),
        (Kind.ERROR, [3, "overloaded", "busy", {"k": "v"}], (3, "overloaded", "busy", {"k": "v"})),
        (Kind.CANCEL, [3], (3,)),
        (Kind.PING, [3], (3,)),
        (Kind.PONG, [3], (3,)),
    ]
    for kind, fields, expected in cases:
        msg = decode(frame(kind, fields + extra))
        assert type(msg) is MESSAGE_TYPES[kind - 1]
        got = tuple(getattr(msg, f) for f in msg.__struct_fields__ if f not in ("args", "result"))
        assert got == expected
        if isinstance(msg, Request):
            assert decode_value(msg.args) == {"a": 1}
        if isinstance(msg, Reply):
            assert decode_value(msg.result) == [1, 2]


def test_error_details_may_be_omitted() -> None:
    msg = decode(frame(Kind.ERROR, [0, "protocol_error", "bad"]))
    assert msg == ErrorReply(0, "protocol_error", "bad", {})


# -- hostile input: only ever ProtocolError ----------------------------------------


@fuzz
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    decode_or_protocol_error(data)


@fuzz
@given(st.sampled_from(list(Kind)), st.binary(max_size=300))
def test_arbitrary_body_after_valid_header_raises_only_protocol_error(kind: Kind, body: bytes) -> None:
    decode_or_protocol_error(header(kind) + body)


@fuzz
@given(st.sampled_from(list(Kind)), hostile_values)
def test_arbitrary_msgpack_value_after_valid_header_raises_only_protocol_error(
    kind: Kind, value: Any
) -> None:
    decode_or_protocol_error(frame(kind, value))


@fuzz
@given(st.sampled_from(list(Kind)), st.lists(hostile_values, max_size=6))
def test_arbitrary_msgpack_array_after_valid_header_raises_only_protocol_error(
    kind: Kind, fields: list[Any]
) -> None:
    decode_or_protocol_error(frame(kind, fields))


_VALID = [
    encode_request(5, "greeter", "hello", Headers(2000, "tp", "key"), {"who": "world", "n": [1, 2.5, None]}),
    encode_reply(5, {"greeting": "Hello", "list": [True, b"\x00"]}),
    encode_error(5, "remote_error", "boom", {"type": "ValueError", "traceback": "..."}),
    encode_cancel(5),
    encode_ping(5),
    encode_pong(5),
]


@fuzz
@given(st.sampled_from(_VALID), st.data())
def test_mutated_valid_messages_raise_only_protocol_error(valid: bytes, data: st.DataObject) -> None:
    buf = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]), label="op")
        i = data.draw(st.integers(0, max(len(buf) - 1, 0)), label="index")
        if op == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and buf:
            del buf[i]
        elif op == "truncate":
            del buf[i:]
    decode_or_protocol_error(bytes(buf))


@pytest.mark.parametrize(
    "data",
    [
        # Deep nesting (about 1000 levels and more) is valid MessagePack; a few kilobytes,
        # far below the 1 MiB message limit. It must not escape as anything else.
        pytest.param(header(Kind.REQUEST) + b"\x91" * 5000 + b"\xc0", id="request-deep-array-as-body"),
        pytest.param(header(Kind.PING) + b"\x91" * 5000 + b"\xc0", id="ping-deep-array-as-body"),
        pytest.param(
            header(Kind.REQUEST)
            + b"\x95\x01\xa1s\xa1m\x81\xabdeadline_ms\x05"  # [1, "s", "m", {"deadline_ms": 5}, <args>]
            + b"\x91" * 5000
            + b"\xc0",
            id="request-deep-args",
        ),
        pytest.param(
            header(Kind.REPLY) + b"\x92\x01" + b"\x81\xa1k" * 5000 + b"\xc0", id="reply-deep-result"
        ),
    ],
)
def test_deeply_nested_input_raises_only_protocol_error(data: bytes) -> None:
    decode_or_protocol_error(data)


# -- specific malformed inputs -----------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"Z", b"ZM", b"ZM\x01"])
def test_short_input(data: bytes) -> None:
    exc = protocol_error(data)
    assert "too short" in str(exc)
    assert exc.request_id == 0


@pytest.mark.parametrize("sig", [b"XX", b"MZ", b"zm", b"\x00\x00", b"Z\x00"])
def test_bad_signature(sig: bytes) -> None:
    exc = protocol_error(sig + encode_cancel(1)[2:])
    assert "signature" in str(exc)
    assert exc.request_id == 0


@pytest.mark.parametrize("version", [0, 2, 0x7F, 0xFF])
def test_wrong_version(version: int) -> None:
    exc = protocol_error(b"ZM" + bytes((version,)) + encode_request(1, "s", "m", Headers(1), {})[3:])
    assert "version" in str(exc)
    assert exc.request_id == 0


@pytest.mark.parametrize("kind", [0, 11, 12, 0x80, 0xFF])
def test_unknown_kind(kind: int) -> None:
    exc = protocol_error(header(kind) + _mp.encode([1]))
    assert "kind" in str(exc)
    assert exc.request_id == 0


@pytest.mark.parametrize(
    "valid",
    [
        encode_request(77, "greeter", "hello", Headers(2000, "tp"), {"who": "world"}),
        encode_reply(77, "Hello, world!"),
        encode_error(77, "overloaded", "busy", {"a": "b"}),
    ],
)
def test_truncated_msgpack(valid: bytes) -> None:
    for cut in range(4, len(valid)):
        exc = protocol_error(valid[:cut])
        assert exc.request_id == 0, cut  # not well-formed: no id to recover


def test_trailing_bytes_after_body() -> None:
    exc = protocol_error(encode_cancel(3) + b"\x00")
    assert exc.request_id == 0


@pytest.mark.parametrize(
    "bad_id",
    [0, -1, -(2**63), MAX_ID + 1, 2**64 - 1, True, 1.0, "1", None],
    ids=["zero", "minus-one", "min-int64", "2**63", "max-uint64", "bool", "float", "str", "nil"],
)
def test_bad_request_id(bad_id: Any) -> None:
    exc = protocol_error(frame(Kind.REQUEST, [bad_id, "s", "m", {"deadline_ms": 5}, {}]))
    assert exc.request_id == 0
    for kind in (Kind.REPLY, Kind.CANCEL):
        assert protocol_error(frame(kind, [bad_id, None][: 2 if kind == Kind.REPLY else 1])).request_id == 0


def test_id_limits_accepted() -> None:
    assert decode(encode_cancel(1)) == Cancel(1)
    assert decode(encode_cancel(MAX_ID)) == Cancel(MAX_ID)
    assert decode(encode_error(0, "protocol_error", "x")) == ErrorReply(0, "protocol_error", "x")
    assert decode(encode_ping(0)) == Ping(0)
    protocol_error(frame(Kind.ERROR, [-1, "c", "m"]))
    protocol_error(frame(Kind.PING, [-1]))
    protocol_error(frame(Kind.PONG, [MAX_ID + 1]))


@pytest.mark.parametrize("field", ["service", "method"])
def test_name_length(field: str) -> None:
    def req(name: str) -> bytes:
        service, method = (name, "m") if field == "service" else ("s", name)
        return encode_request(42, service, method, Headers(5), {})

    ok = decode(req("é" * MAX_NAME_LENGTH))  # characters, not bytes
    assert getattr(ok, field) == "é" * MAX_NAME_LENGTH
    for bad in ("", "x" * (MAX_NAME_LENGTH + 1)):
        exc = protocol_error(req(bad))
        assert exc.request_id == 42


def test_error_code_length() -> None:
    assert decode(encode_error(1, "c" * MAX_NAME_LENGTH, "m")) == ErrorReply(1, "c" * MAX_NAME_LENGTH, "m")
    assert protocol_error(encode_error(1, "c" * (MAX_NAME_LENGTH + 1), "m")).request_id == 1
    assert protocol_error(encode_error(1, "", "m")).request_id == 1


def test_missing_deadline_ms() -> None:
    exc = protocol_error(frame(Kind.REQUEST, [12, "s", "m", {"traceparent": "tp"}, {}]))
    assert "deadline_ms" in str(exc)
    assert exc.request_id == 12


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([1234, 5, "m", {"deadline_ms": 5}, {}], id="service-int"),
        pytest.param([1234, b"s", "m", {"deadline_ms": 5}, {}], id="service-bin"),
        pytest.param([1234, "s", None, {"deadline_ms": 5}, {}], id="method-nil"),
        pytest.param([1234, "s", "m", [5], {}], id="headers-array"),
        pytest.param([1234, "s", "m", None, {}], id="headers-nil"),
        pytest.param([1234, "s", "m", {"deadline_ms": 5.0}, {}], id="deadline-float"),
        pytest.param([1234, "s", "m", {"deadline_ms": "5"}, {}], id="deadline-str"),
        pytest.param([1234, "s", "m", {"deadline_ms": 2**31}, {}], id="deadline-too-big"),
        pytest.param([1234, "s", "m", {"deadline_ms": -(2**31) - 1}, {}], id="deadline-too-small"),
        pytest.param(
            [1234, "s", "m", {"deadline_ms": 5, "traceparent": "t" * 1025}, {}], id="traceparent-long"
        ),
        pytest.param([1234, "s", "m", {"deadline_ms": 5, "idempotency_key": 7}, {}], id="idempotency-int"),
        pytest.param([1234, "s", "m", {"deadline_ms": 5, 3: "x"}, {}], id="header-int-key"),
        pytest.param([1234, "s", "m", {"deadline_ms": 5}], id="args-missing"),
        pytest.param([1234], id="only-id"),
    ],
)
def test_request_id_recovered_when_a_field_is_bad(fields: list[Any]) -> None:
    exc = protocol_error(frame(Kind.REQUEST, fields))
    assert exc.request_id == 1234
    assert "REQUEST" in str(exc)


def test_request_id_recovered_for_other_kinds() -> None:
    assert protocol_error(frame(Kind.REPLY, [66])).request_id == 66
    assert protocol_error(frame(Kind.ERROR, [66, "", "m"])).request_id == 66
    assert protocol_error(frame(Kind.ERROR, [66, "c", "m", None])).request_id == 66
    assert protocol_error(frame(Kind.ERROR, [66, "c", "m", {"k": 1}])).request_id == 66


def test_header_limits_accepted() -> None:
    for deadline in (-(2**31), 0, 2**31 - 1):
        msg = decode(encode_request(1, "s", "m", Headers(deadline, "t" * 1024, "k" * 1024), {}))
        assert isinstance(msg, Request)
        assert msg.headers == Headers(deadline, "t" * 1024, "k" * 1024)


def test_invalid_utf8_string() -> None:
    body = b"\x95\x01\xa2\xff\xfe\xa1m\x81\xabdeadline_ms\x01\x80"  # service = invalid UTF-8
    assert protocol_error(header(Kind.REQUEST) + body).request_id == 1


def test_body_must_be_an_array() -> None:
    for kind in Kind:
        assert protocol_error(frame(kind, {"id": 1})).request_id == 0
        assert protocol_error(header(kind)).request_id == 0  # empty body


def test_args_are_not_checked_by_the_codec() -> None:
    # A non-map ``args`` is valid MessagePack: the server answers invalid_argument later.
    msg = decode(frame(Kind.REQUEST, [1, "s", "m", {"deadline_ms": 5}, [1, 2]]))
    assert isinstance(msg, Request)
    assert decode_value(msg.args) == [1, 2]


def test_decode_value_rejects_malformed_payload() -> None:
    with pytest.raises(ProtocolError):
        decode_value(b"\xc1")
    with pytest.raises(ProtocolError):
        decode_value(b"\x92\x01")


# -- the worked examples in docs/protocol.md ------------------------------------

_DOC_EXAMPLES = {
    "request": encode_request(1, "greeter", "hello", Headers(deadline_ms=2000), {"who": "world"}),
    "reply": encode_reply(1, "Hello, world!"),
    "request-traceparent": encode_request(
        2,
        "greeter",
        "hello",
        Headers(deadline_ms=1500, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        {},
    ),
    "error": encode_error(
        2,
        "invalid_argument",
        "invalid argument `who` for hello: Object missing required field `who`",
        {"field": "who"},
    ),
    "cancel": encode_cancel(1),
    "ping": encode_ping(7),
    "pong": encode_pong(7),
    "batch": encode_batch([encode_cancel(1), encode_cancel(2)]),
}

# A marker comment, then a fenced block: offsets end in ":", the rest are hex byte pairs.
_HEXDUMP = re.compile(r"<!--\s*hexdump:\s*([\w-]+)\s*-->\s*\n```[^\n]*\n(.*?)\n```", re.DOTALL)


def _doc_hexdumps() -> dict[str, bytes]:
    dumps: dict[str, bytes] = {}
    for name, block in _HEXDUMP.findall(DOC.read_text(encoding="utf-8")):
        tokens = [t for t in block.split() if not t.endswith(":")]
        assert all(re.fullmatch(r"[0-9a-fA-F]{2}", t) for t in tokens), (name, tokens)
        assert name not in dumps, f"two hexdump blocks named {name!r}"
        dumps[name] = bytes.fromhex("".join(tokens))
    return dumps


def test_doc_hexdumps_match_the_encoder() -> None:
    dumps = _doc_hexdumps()
    assert set(dumps) == set(_DOC_EXAMPLES)
    for name, expected in _DOC_EXAMPLES.items():
        assert dumps[name] == expected, f"docs/protocol.md hexdump {name!r} differs from the encoder"


def test_doc_hexdump_offsets_are_right() -> None:
    text = DOC.read_text(encoding="utf-8")
    for _, block in _HEXDUMP.findall(text):
        position = 0
        for line in block.splitlines():
            offset, *pairs = line.split()
            assert offset == f"{position:04x}:"
            position += len(pairs)


def test_doc_examples_decode_to_what_the_doc_says() -> None:
    dumps = _doc_hexdumps()
    req = decode(dumps["request"])
    assert isinstance(req, Request)
    assert (req.id, req.service, req.method, req.headers.deadline_ms) == (1, "greeter", "hello", 2000)
    assert decode_value(req.args) == {"who": "world"}
    rep = decode(dumps["reply"])
    assert isinstance(rep, Reply)
    assert (rep.id, decode_value(rep.result)) == (1, "Hello, world!")


# -- BATCH ----------------------------------------------------------------------------


frames_strategy = st.lists(
    st.builds(encode_cancel, st.integers(1, 2**63 - 1))
    | st.builds(encode_reply, st.integers(1, 2**63 - 1), st.text(max_size=300)),
    min_size=1,
    max_size=300,
)


@given(frames_strategy, st.integers(64, 4096), st.integers(1, 64))
def test_pack_keeps_every_frame_in_order_within_the_limits(
    frames: list[bytes], max_bytes: int, count: int
) -> None:
    from zmicro.protocol import decode_each, pack

    packed = pack(frames, max_bytes=max_bytes, max_count=count)
    assert sum(n for _, n in packed) == len(frames)
    out: list[bytes] = []
    for message, n in packed:
        msg = decode(message)
        if isinstance(msg, Batch):
            assert 2 <= n == len(msg.messages) <= count
            assert len(message) <= max_bytes + 16 or n == 1
            out.extend(msg.messages)
        else:
            assert n == 1
            out.append(message)
        assert len(list(decode_each(message))) == n
    assert out == frames


def test_batch_inside_batch_is_an_error_that_does_not_hide_the_rest() -> None:
    from zmicro.protocol import decode_each

    inner = encode_batch([encode_cancel(1), encode_cancel(2)])
    got = list(decode_each(encode_batch([encode_cancel(3), inner, b"junk", encode_cancel(4)])))
    assert got[0] == Cancel(3) and got[3] == Cancel(4)
    assert isinstance(got[1], ProtocolError) and "inside a BATCH" in str(got[1])
    assert isinstance(got[2], ProtocolError)


def test_a_big_frame_goes_alone() -> None:
    from zmicro.protocol import pack

    small, big = encode_cancel(1), encode_reply(2, "x" * 5000)
    packed = pack([small, small, big, small], max_bytes=64 * 1024, solo_bytes=1024)
    assert [n for _, n in packed] == [2, 1, 1]
    assert packed[1][0] == big


@given(
    st.text(min_size=1, max_size=40),
    st.integers(1, 2**63 - 1),
    st.integers(1, 2**63 - 1),
    st.booleans(),
    st.text(min_size=1, max_size=60),
    hostile_values,
)
def test_event_parts_around_the_number_are_the_event(
    service: str, epoch: int, seq: int, group: bool, topic: str, value: object
) -> None:
    from zmicro.protocol import encode_event, encode_value, event_parts

    payload = encode_value(value)
    head, tail = event_parts(service, epoch, group, topic, payload)
    assert head + encode_value(seq) + tail == encode_event(service, epoch, seq, group, topic, payload)
