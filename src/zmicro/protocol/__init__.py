"""The zmicro wire protocol, version 1: message types, encoding and small pure state machines.

Nothing in this package touches a socket or an event loop; time is passed in as ``now``.
"""

from __future__ import annotations

from ._admission import Admission as Admission, Verdict as Verdict
from ._calltable import CallTable as CallTable
from ._codec import (
    MAX_NAME_LENGTH as MAX_NAME_LENGTH,
    SIGNATURE as SIGNATURE,
    VERSION as VERSION,
    Cancel as Cancel,
    ErrorReply as ErrorReply,
    Headers as Headers,
    Kind as Kind,
    Message as Message,
    Ping as Ping,
    Pong as Pong,
    Reply as Reply,
    Request as Request,
    decode as decode,
    decode_value as decode_value,
    encode_cancel as encode_cancel,
    encode_error as encode_error,
    encode_ping as encode_ping,
    encode_pong as encode_pong,
    encode_reply as encode_reply,
    encode_request as encode_request,
    encode_value as encode_value,
)

__all__ = (
    "MAX_NAME_LENGTH",
    "SIGNATURE",
    "VERSION",
    "Admission",
    "Verdict",
    "CallTable",
    "Cancel",
    "ErrorReply",
    "Headers",
    "Kind",
    "Message",
    "Ping",
    "Pong",
    "Reply",
    "Request",
    "decode",
    "decode_value",
    "encode_cancel",
    "encode_error",
    "encode_ping",
    "encode_pong",
    "encode_reply",
    "encode_request",
    "encode_value",
)
