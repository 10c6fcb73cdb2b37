"""Encode and decode zmicro protocol v1 messages: pure, no sockets, no event loop.

A message is one ZeroMQ frame (after any routing envelope a ROUTER socket adds):

    offset 0  2 bytes  signature  b"ZM"
    offset 2  1 byte   version    0x01
    offset 3  1 byte   kind       see ``Kind``
    offset 4  ...      body       a MessagePack array whose fields depend on ``kind``

The signature leads the frame that carries the body instead of travelling in a
frame of its own: every extra frame costs more than the bytes it carries.
``docs/protocol.md`` is the normative description; this module implements it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Annotated, Any, Final, Literal

import msgspec

from .._errors import ProtocolError

__all__ = (
    "MAX_NAME_LENGTH",
    "SIGNATURE",
    "VERSION",
    "MAX_SUBSCRIPTIONS",
    "MAX_TOPIC_LENGTH",
    "MAX_BATCH",
    "Batch",
    "Cancel",
    "ErrorReply",
    "Event",
    "Headers",
    "Kind",
    "Message",
    "Ping",
    "Pong",
    "Reply",
    "Request",
    "Subscribe",
    "Subscribed",
    "Subscription",
    "decode",
    "decode_value",
    "decode_each",
    "is_batch",
    "encode_batch",
    "event_parts",
    "pack",
    "encode_cancel",
    "encode_error",
    "encode_event",
    "encode_ping",
    "encode_pong",
    "encode_reply",
    "encode_request",
    "encode_subscribe",
    "encode_subscribed",
    "encode_value",
    "peek_request_id",
)

SIGNATURE: Final = b"ZM"
VERSION: Final = 1
MAX_NAME_LENGTH: Final = 255
MAX_TOPIC_LENGTH: Final = 255
MAX_SUBSCRIPTIONS: Final = 256
MAX_BATCH: Final = 1024
"""Most messages one BATCH may carry."""
_MAX_ID: Final = 2**63 - 1
_HEADER_LEN: Final = 4


class Kind(enum.IntEnum):
    REQUEST = 1
    REPLY = 2
    ERROR = 3
    CANCEL = 4
    PING = 5
    PONG = 6
    SUBSCRIBE = 7
    SUBSCRIBED = 8
    EVENT = 9
    BATCH = 10


RequestId = Annotated[int, msgspec.Meta(ge=1, le=_MAX_ID)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]


class Headers(msgspec.Struct, omit_defaults=True, frozen=True):
    """Per-request metadata, a MessagePack map. Unknown keys are ignored (forward compatible)."""

    deadline_ms: Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
    """Time the caller is still willing to wait, relative, in milliseconds."""
    traceparent: ShortText | None = None
    """W3C trace context of the caller, passed on to nested calls."""
    idempotency_key: ShortText | None = None
    """Set by the caller when repeating the call must not repeat its effect."""


class Request(msgspec.Struct, array_like=True, frozen=True):
    id: RequestId
    service: Name
    method: Name
    headers: Headers
    args: msgspec.Raw
    """A MessagePack map of argument name to value, validated later against the method."""


class Reply(msgspec.Struct, array_like=True, frozen=True):
    id: RequestId
    result: msgspec.Raw


class ErrorReply(msgspec.Struct, array_like=True, frozen=True):
    id: Annotated[int, msgspec.Meta(ge=0, le=_MAX_ID)]
    """0 when the error is not about one request (for example an undecodable message)."""
    code: Name
    message: str
    details: dict[str, str] = {}


class Cancel(msgspec.Struct, array_like=True, frozen=True):
    id: RequestId


class Ping(msgspec.Struct, array_like=True, frozen=True):
    nonce: Annotated[int, msgspec.Meta(ge=0, le=_MAX_ID)]


class Pong(msgspec.Struct, array_like=True, frozen=True):
    nonce: Annotated[int, msgspec.Meta(ge=0, le=_MAX_ID)]


Prefix = Annotated[str, msgspec.Meta(max_length=MAX_TOPIC_LENGTH)]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_LENGTH)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=_MAX_ID)]
Epoch = Annotated[int, msgspec.Meta(ge=1, le=_MAX_ID)]
Mode = Literal["broadcast", "group"]


class Subscription(msgspec.Struct, array_like=True, frozen=True):
    prefix: Prefix
    """Events whose topic starts with this string; "" matches every topic."""
    mode: Mode


class Subscribe(msgspec.Struct, array_like=True, frozen=True):
    """Subscriber -> publisher, on every (re)connect. An empty list ends the subscription."""

    service: Name
    instance_id: Name
    subscriptions: Annotated[list[Subscription], msgspec.Meta(max_length=MAX_SUBSCRIPTIONS)]


class Subscribed(msgspec.Struct, array_like=True, frozen=True):
    """Publisher -> subscriber: the stream exists; ``last_seq`` is the last number it used."""

    service: Name
    epoch: Epoch
    last_seq: Seq


class Event(msgspec.Struct, array_like=True, frozen=True):
    """Publisher -> subscriber: one event of the stream of (``service``, the receiving instance)."""

    service: Name
    epoch: Epoch
    seq: Annotated[int, msgspec.Meta(ge=1, le=_MAX_ID)]
    group: bool
    """True when this copy went to one member of a group, False for a broadcast copy."""
    topic: Topic
    payload: msgspec.Raw


class Batch(msgspec.Struct, array_like=True, frozen=True):
    """Several messages for the same peer in one frame: sent when many are ready at once.

    Each element is a whole message frame (signature, version, kind, body) of any kind
    but BATCH. A receiver handles them in order, exactly as if they had come one by one.
    """

    messages: Annotated[list[bytes], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


Message = Request | Reply | ErrorReply | Cancel | Ping | Pong | Subscribe | Subscribed | Event | Batch


def _prefix(kind: Kind) -> bytes:
    return SIGNATURE + bytes((VERSION, kind))


_PREFIX: Final = {kind: _prefix(kind) for kind in Kind}
_REQUEST_PREFIX: Final = _PREFIX[Kind.REQUEST]
_REPLY_PREFIX: Final = _PREFIX[Kind.REPLY]
_BATCH_PREFIX: Final = _PREFIX[Kind.BATCH]
_DECODERS: Final[dict[int, msgspec.msgpack.Decoder[Any]]] = {
    Kind.REQUEST: msgspec.msgpack.Decoder(Request),
    Kind.REPLY: msgspec.msgpack.Decoder(Reply),
    Kind.ERROR: msgspec.msgpack.Decoder(ErrorReply),
    Kind.CANCEL: msgspec.msgpack.Decoder(Cancel),
    Kind.PING: msgspec.msgpack.Decoder(Ping),
    Kind.PONG: msgspec.msgpack.Decoder(Pong),
    Kind.SUBSCRIBE: msgspec.msgpack.Decoder(Subscribe),
    Kind.SUBSCRIBED: msgspec.msgpack.Decoder(Subscribed),
    Kind.EVENT: msgspec.msgpack.Decoder(Event),
    Kind.BATCH: msgspec.msgpack.Decoder(Batch),
}
_FIELDS: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])
_INT: Final = msgspec.msgpack.Decoder(int)
_encoder: Final = msgspec.msgpack.Encoder()
_any_decoder: Final = msgspec.msgpack.Decoder()


def encode_value(value: Any) -> bytes:
    """MessagePack-encode a payload value. Raises ``TypeError`` or ``msgspec.EncodeError``."""
    return _encoder.encode(value)


def decode_value(data: bytes | msgspec.Raw) -> Any:
    """Decode a MessagePack payload into plain Python values (dict, list, str, ...)."""
    try:
        return _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"payload is not valid MessagePack: {exc}") from None
    except RecursionError:
        raise ProtocolError("payload is nested too deeply") from None


def encode_request(
    request_id: int,
    service: str,
    method: str,
    headers: Headers,
    args: Any,
) -> bytes:
    """Encode a REQUEST. ``args`` is a mapping (or struct) of argument name to value.

    Raises ``TypeError``/``msgspec.EncodeError`` when an argument cannot be encoded;
    that is the caller's mistake, found before anything is sent.
    """
    return _REQUEST_PREFIX + _encoder.encode((request_id, service, method, headers, args))


def encode_reply(request_id: int, result: Any) -> bytes:
    """Encode a REPLY. Raises ``TypeError``/``msgspec.EncodeError`` for unencodable results."""
    return _REPLY_PREFIX + _encoder.encode((request_id, result))


def encode_error(request_id: int, code: str, message: str, details: dict[str, str] | None = None) -> bytes:
    return _PREFIX[Kind.ERROR] + _encoder.encode((request_id, code, message, details or {}))


def encode_cancel(request_id: int) -> bytes:
    return _PREFIX[Kind.CANCEL] + _encoder.encode((request_id,))


def encode_ping(nonce: int) -> bytes:
    return _PREFIX[Kind.PING] + _encoder.encode((nonce,))


def encode_pong(nonce: int) -> bytes:
    return _PREFIX[Kind.PONG] + _encoder.encode((nonce,))


def encode_subscribe(service: str, instance_id: str, subscriptions: list[tuple[str, str]]) -> bytes:
    """Encode a SUBSCRIBE; ``subscriptions`` holds (prefix, mode) pairs, mode "broadcast" or "group"."""
    return _PREFIX[Kind.SUBSCRIBE] + _encoder.encode((service, instance_id, subscriptions))


def encode_subscribed(service: str, epoch: int, last_seq: int) -> bytes:
    return _PREFIX[Kind.SUBSCRIBED] + _encoder.encode((service, epoch, last_seq))


def encode_event(service: str, epoch: int, seq: int, group: bool, topic: str, payload: bytes) -> bytes:
    """Encode an EVENT around ``payload``, which is already MessagePack (``encode_value``).

    The payload is encoded once per publish and copied into each subscriber's frame.
    """
    return _PREFIX[Kind.EVENT] + _encoder.encode((service, epoch, seq, group, topic, msgspec.Raw(payload)))


def event_parts(service: str, epoch: int, group: bool, topic: str, payload: bytes) -> tuple[bytes, bytes]:
    """An EVENT's bytes before and after its ``seq``: encode once, number per stream.

    ``head + encode_value(seq) + tail`` is exactly ``encode_event(...)``: a MessagePack
    array is its header followed by its elements, each encoded on its own.
    """
    head = _PREFIX[Kind.EVENT] + b"\x96" + _encoder.encode(service) + _encoder.encode(epoch)
    return head, _encoder.encode(group) + _encoder.encode(topic) + payload


def encode_batch(frames: list[bytes]) -> bytes:
    """Encode a BATCH around whole message frames (1 to ``MAX_BATCH`` of them, none a BATCH)."""
    return _BATCH_PREFIX + _encoder.encode((frames,))


def pack(
    frames: list[bytes],
    max_bytes: int = 64 * 1024,
    max_count: int = MAX_BATCH,
    solo_bytes: int | None = None,
) -> list[tuple[bytes, int]]:
    """Group message frames for one peer into as few messages as sensible, in order.

    Returns (message, how many frames it carries). A group holds up to ``max_count``
    frames and about ``max_bytes``; a frame over ``solo_bytes`` goes alone, as it is, and
    so does a group of one: a receiver sees a BATCH only when there was something to
    coalesce.
    """
    solo = max_bytes if solo_bytes is None else solo_bytes
    count = min(max_count, MAX_BATCH)
    out: list[tuple[bytes, int]] = []
    group: list[bytes] = []
    size = 0
    for frame in frames:
        if group and (size + len(frame) > max_bytes or len(group) >= count or len(frame) > solo):
            out.append((group[0] if len(group) == 1 else encode_batch(group), len(group)))
            group, size = [], 0
        if len(frame) > solo:
            out.append((frame, 1))
            continue
        group.append(frame)
        size += len(frame) + 5  # a bin header is at most 5 bytes
    if group:
        out.append((group[0] if len(group) == 1 else encode_batch(group), len(group)))
    return out


def decode(frame: bytes | memoryview) -> Message:
    """Decode one message frame. Any malformed input raises ``ProtocolError`` and nothing else."""
    data = bytes(frame) if isinstance(frame, memoryview) else frame
    if len(data) < _HEADER_LEN:
        raise ProtocolError(f"message too short ({len(data)} bytes)")
    if data[:2] != SIGNATURE:
        raise ProtocolError(f"bad signature {data[:2]!r}, expected {SIGNATURE!r}")
    if data[2] != VERSION:
        raise ProtocolError(f"unsupported protocol version {data[2]} (this peer speaks {VERSION})")
    decoder = _DECODERS.get(data[3])
    if decoder is None:
        raise ProtocolError(f"unknown message kind {data[3]}")
    body = memoryview(data)[_HEADER_LEN:]
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        request_id = 0 if data[3] == Kind.BATCH else _recover_id(body)
        raise ProtocolError(f"bad {Kind(data[3]).name} body: {exc}", request_id=request_id) from None
    except RecursionError:
        # msgspec recurses per nesting level; ~1 KB of nested arrays exhausts the stack.
        raise ProtocolError(f"bad {Kind(data[3]).name} body: nested too deeply") from None


def decode_each(frame: bytes, max_bytes: int | None = None) -> Iterator[Message | ProtocolError]:
    """Every message a frame carries, in order: the frame's own, or each of a BATCH's.

    A bad message is yielded as a ``ProtocolError`` (not raised), so that one bad message
    in a BATCH does not hide the good ones around it. ``max_bytes`` limits each message
    in a BATCH (the caller checks a lone message itself, before anything is decoded).
    """
    try:
        msg = decode(frame)
    except ProtocolError as exc:
        yield exc
        return
    if type(msg) is not Batch:
        yield msg
        return
    for inner in msg.messages:
        if max_bytes is not None and len(inner) > max_bytes:
            yield ProtocolError(
                f"message of {len(inner)} bytes exceeds {max_bytes}", request_id=peek_request_id(inner)
            )
            continue
        try:
            one = decode(inner)
        except ProtocolError as exc:
            yield exc
            continue
        yield ProtocolError("a BATCH inside a BATCH") if type(one) is Batch else one


def is_batch(frame: bytes) -> bool:
    return len(frame) > 3 and frame[3] == Kind.BATCH


def peek_request_id(frame: bytes) -> int:
    """The request id of a REQUEST (or CANCEL) frame without decoding the rest; 0 if unreadable."""
    if len(frame) < _HEADER_LEN or frame[:2] != SIGNATURE or frame[2] != VERSION:
        return 0
    if frame[3] not in (Kind.REQUEST, Kind.CANCEL):
        return 0
    return _recover_id(memoryview(frame)[_HEADER_LEN:])


def _recover_id(body: memoryview) -> int:
    """Best effort: the request id of a body that failed to decode, so it can be answered."""
    try:
        fields = _FIELDS.decode(body)
        request_id = _INT.decode(fields[0]) if fields else 0
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return 0
    return request_id if 1 <= request_id <= _MAX_ID else 0
