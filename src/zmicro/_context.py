"""The call context: the deadline and trace of the request being handled, for nested calls.

The server sets it around every handler (in the handler's task, or copied into the
worker thread for a plain ``def``); every client call reads it, so a nested call
inherits the remaining budget and the trace without the user passing anything.
"""

from __future__ import annotations

import contextvars
import random
import time
from dataclasses import dataclass

__all__ = ("CallContext", "child_traceparent", "current", "remaining")


@dataclass(frozen=True, slots=True)
class CallContext:
    deadline: float
    """``time.monotonic()`` value after which the caller no longer waits."""
    traceparent: str | None
    service: str
    method: str


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("zmicro_call", default=None)
current = _current.get
set_current = _current.set
reset_current = _current.reset


def remaining() -> float | None:
    """Seconds left to the deadline of the request being handled, or ``None`` outside one."""
    ctx = _current.get()
    return None if ctx is None else ctx.deadline - time.monotonic()


def child_traceparent(parent: str | None) -> str:
    """A W3C traceparent for an outgoing call: same trace as ``parent`` (or a new one), new span."""
    if parent and len(parent) == 55 and parent[2] == "-":
        return f"{parent[:36]}{random.getrandbits(64):016x}{parent[52:]}"
    ids = f"{random.getrandbits(192):048x}"  # one draw for trace id and span id
    return f"00-{ids[:32]}-{ids[32:]}-01"
