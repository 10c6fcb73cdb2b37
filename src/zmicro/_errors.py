"""The exception tree of zmicro: one root, one class per outcome a caller can tell apart.

::

    ZmicroError
    ├── ProtocolError              bytes that are not zmicro protocol v1
    ├── ConfigurationError         bad options, libzmq too old, bad service class
    └── CallError                  a call did not produce a result (has ``.code``)
        ├── DeadlineExceededError  the call's deadline passed
        ├── OverloadedError        the target (or the local queue) is full: retry later
        │   └── SlowSubscriberError  an event met a full subscriber (policy "raise"/"wait")
        ├── NoSuchServiceError     nobody at the endpoint serves that name
        ├── NoSuchMethodError      the service has no such RPC method
        ├── InvalidArgumentError   arguments failed validation (``.field``)
        ├── RemoteError            the handler raised (``.type_name``, ``.remote_traceback``)
        ├── RemoteProtocolError    the peer says our bytes were bad
        ├── PeerLostError          the connection to the instance dropped mid-call
        ├── UnavailableError       the service is shutting down or not reachable
        └── ClientClosedError      the local client was closed with the call pending

Each ``CallError`` subclass carries a stable string ``code``, which is what travels
on the wire in an ERROR message (see ``docs/protocol.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = (
    "CallError",
    "ClientClosedError",
    "ConfigurationError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "NoSuchMethodError",
    "NoSuchServiceError",
    "OverloadedError",
    "PeerLostError",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "SlowSubscriberError",
    "UnavailableError",
    "ZmicroError",
    "error_from_wire",
)


class ZmicroError(Exception):
    """Root of every exception zmicro raises on purpose."""


class ProtocolError(ZmicroError):
    """Bytes that do not follow zmicro protocol v1.

    ``request_id`` is the id of the request the bytes belonged to when it could be
    recovered (so the sender can be answered), else 0.
    """

    def __init__(self, message: str, *, request_id: int = 0) -> None:
        super().__init__(message)
        self.request_id = request_id


class ConfigurationError(ZmicroError):
    """A service, option or the environment is not usable (for example libzmq too old)."""


class CallError(ZmicroError):
    """A call ended without a result. ``code`` names the outcome on the wire."""

    code: ClassVar[str] = "unknown"

    def __init__(self, message: str, *, details: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, str] = dict(details or {})


class DeadlineExceededError(CallError):
    code = "deadline_exceeded"


class OverloadedError(CallError):
    code = "overloaded"


class SlowSubscriberError(OverloadedError):
    """A subscriber could not take an event (its queue at the publisher was full).

    The event went to every subscriber that could take it; the others missed it, which
    was counted and which they will see as a gap. ``details["subscribers"]`` lists them.
    """

    @property
    def subscribers(self) -> list[str]:
        return [s for s in self.details.get("subscribers", "").split(",") if s]


class NoSuchServiceError(CallError):
    code = "no_such_service"


class NoSuchMethodError(CallError):
    code = "no_such_method"


class InvalidArgumentError(CallError):
    code = "invalid_argument"

    @property
    def field(self) -> str | None:
        """The argument that failed validation, when one can be named."""
        return self.details.get("field")


class RemoteError(CallError):
    """The remote handler raised an exception."""

    code = "remote_error"

    @property
    def type_name(self) -> str:
        return self.details.get("type", "Exception")

    @property
    def remote_traceback(self) -> str:
        return self.details.get("traceback", "")

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class RemoteProtocolError(CallError):
    code = "protocol_error"


class PeerLostError(CallError):
    code = "peer_lost"


class UnavailableError(CallError):
    code = "unavailable"


class ClientClosedError(CallError):
    code = "client_closed"


_BY_CODE: dict[str, type[CallError]] = {
    cls.code: cls
    for cls in (
        DeadlineExceededError,
        OverloadedError,
        NoSuchServiceError,
        NoSuchMethodError,
        InvalidArgumentError,
        RemoteError,
        RemoteProtocolError,
        PeerLostError,
        UnavailableError,
        ClientClosedError,
    )
}


def error_from_wire(code: str, message: str, details: Mapping[str, str]) -> CallError:
    """Build the exception for an ERROR message; an unknown code stays a plain ``CallError``."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = CallError(message, details=details)
        err.code = code  # type: ignore[misc]  # keep an unknown code visible to the caller
        return err
    return cls(message, details=details)
