"""The zmicro wire protocol, version 1: message types, encoding and small pure state machines.

Nothing in this package touches a socket or an event loop; time is passed in as ``now``.
"""

from __future__ import annotations

from ._admission import Admission as Admission
from ._admission import Verdict as Verdict
from ._calltable import CallTable as CallTable
from ._codec import MAX_BATCH as MAX_BATCH
from ._codec import (
    MAX_NAME_LENGTH as MAX_NAME_LENGTH,
)
from ._codec import MAX_SUBSCRIPTIONS as MAX_SUBSCRIPTIONS
from ._codec import MAX_TOPIC_LENGTH as MAX_TOPIC_LENGTH
from ._codec import (
    SIGNATURE as SIGNATURE,
)
from ._codec import (
    VERSION as VERSION,
)
from ._codec import Batch as Batch
from ._codec import (
    Cancel as Cancel,
)
from ._codec import (
    ErrorReply as ErrorReply,
)
from ._codec import Event as Event
from ._codec import (
    Headers as Headers,
)
from ._codec import (
    Kind as Kind,
)
from ._codec import (
    Message as Message,
)
from ._codec import (
    Ping as Ping,
)
from ._codec import (
    Pong as Pong,
)
from ._codec import (
    Reply as Reply,
)
from ._codec import (
    Request as Request,
)
from ._codec import Subscribe as Subscribe
from ._codec import Subscribed as Subscribed
from ._codec import Subscription as Subscription
from ._codec import (
    decode as decode,
)
from ._codec import decode_each as decode_each
from ._codec import (
    decode_value as decode_value,
)
from ._codec import encode_batch as encode_batch
from ._codec import (
    encode_cancel as encode_cancel,
)
from ._codec import (
    encode_error as encode_error,
)
from ._codec import encode_event as encode_event
from ._codec import (
    encode_ping as encode_ping,
)
from ._codec import (
    encode_pong as encode_pong,
)
from ._codec import (
    encode_reply as encode_reply,
)
from ._codec import (
    encode_request as encode_request,
)
from ._codec import encode_subscribe as encode_subscribe
from ._codec import encode_subscribed as encode_subscribed
from ._codec import (
    encode_value as encode_value,
)
from ._codec import event_parts as event_parts
from ._codec import is_batch as is_batch
from ._codec import pack as pack
from ._codec import (
    peek_request_id as peek_request_id,
)
from ._eventstate import GapTracker as GapTracker
from ._eventstate import Stream as Stream
from ._eventstate import StreamKey as StreamKey
from ._eventstate import StreamTable as StreamTable
from ._eventstate import Target as Target
from ._replay import ReplayCache as ReplayCache
from ._replay import ReplayVerdict as ReplayVerdict
from ._retry import RetryBudget as RetryBudget
from ._retry import RetryPolicy as RetryPolicy
from ._retry import backoff_delay as backoff_delay

__all__ = (
    "GapTracker",
    "Stream",
    "StreamKey",
    "StreamTable",
    "Target",
    "MAX_SUBSCRIPTIONS",
    "MAX_TOPIC_LENGTH",
    "Event",
    "Subscribe",
    "Subscribed",
    "Subscription",
    "encode_event",
    "encode_subscribe",
    "encode_subscribed",
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
    "ReplayCache",
    "ReplayVerdict",
    "Reply",
    "Request",
    "RetryBudget",
    "RetryPolicy",
    "backoff_delay",
    "decode",
    "decode_value",
    "encode_cancel",
    "encode_error",
    "encode_ping",
    "encode_pong",
    "encode_reply",
    "encode_request",
    "encode_value",
    "peek_request_id",
)
