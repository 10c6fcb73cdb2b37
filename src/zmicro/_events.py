"""Events for services: ``EventPublisher`` to announce, ``@event_handler`` to listen.

Example::

    class Orders(zmicro.Service):
        name = "orders"
        events = zmicro.EventPublisher(policy="drop")

        @zmicro.rpc
        async def place(self, total: int) -> str:
            await self.events.publish("order.placed", {"id": "o-1", "total": total})
            return "o-1"

    class Emails(zmicro.Service):
        name = "emails"

        @zmicro.event_handler("order.placed")             # one instance of "emails" per event
        async def confirm(self, event: Placed, info: zmicro.EventInfo) -> None: ...

Decorators and declarations only register; the components in ``_event_components``
do the work when a server hosts such services. ``docs/events.md`` explains the
guarantees.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import msgspec

from . import protocol as p
from ._errors import ConfigurationError, UnavailableError
from .patterns import EventPublisherCore, Policy

__all__ = (
    "EventInfo",
    "EventPublisher",
    "HandlerSpec",
    "Publisher",
    "describe_event_handlers",
    "encode_event_payload",
    "event_handler",
    "event_publishers",
)

F = TypeVar("F", bound=Callable[..., Any])
_EVENT_MARK = "__zmicro_event__"
_POLICIES = ("drop", "raise", "wait")


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What a handler may learn about the event it handles: declare ``info: zmicro.EventInfo``."""

    topic: str
    seq: int
    """Number of the event in its stream (publisher -> this instance), from 1."""
    gap: int
    """Events of this stream missed just before this one (0 when none): counted, not lost silently."""
    publisher_restarted: bool
    """The publisher restarted since the previous event: what its old process held is lost,
    and how much that was cannot be known."""
    publisher: str
    """Endpoint of the publisher."""
    group: bool
    """True when this instance was chosen among its group; False for a broadcast copy."""


# -- publishing ------------------------------------------------------------------


def encode_event_payload(topic: str, event: Any, max_bytes: int) -> bytes:
    if not isinstance(topic, str) or not 1 <= len(topic) <= p.MAX_TOPIC_LENGTH:
        raise ValueError(f"an event topic is a string of 1 to {p.MAX_TOPIC_LENGTH} characters, got {topic!r}")
    try:
        payload = p.encode_value(event)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"event {topic!r} cannot be encoded: {exc}") from None
    if len(payload) > max_bytes:
        raise ValueError(f"event {topic!r} is {len(payload)} bytes; the limit is {max_bytes}")
    return payload


class Publisher:
    """``self.events`` inside a served service: publish, and wait for subscribers."""

    def __init__(self, declaration: EventPublisher, core: EventPublisherCore | None, max_bytes: int) -> None:
        self.declaration = declaration
        self._core = core
        self._max_bytes = max_bytes

    def _serving(self) -> EventPublisherCore:
        if self._core is None or self._core.closed:
            raise UnavailableError("events can be published only while the service is served")
        return self._core

    async def publish(self, topic: str, event: Any = None, *, policy: Policy | None = None) -> int:
        """Send ``event`` to every subscriber of ``topic``; returns how many copies were sent.

        A subscriber that cannot take it meets ``policy`` (the declaration's by default):
        "drop" counts it, "raise" raises ``SlowSubscriberError``, "wait" waits up to
        ``wait_timeout`` and then raises. Either way the subscriber sees the gap.
        """
        core = self._serving()
        payload = encode_event_payload(topic, event, self._max_bytes)
        decl = self.declaration
        return await core.publish(topic, payload, policy or decl.policy, decl.wait_timeout)

    def publish_nowait(self, topic: str, event: Any = None, *, policy: Policy | None = None) -> int:
        """``publish`` without waiting: under "wait" a full subscriber raises at once."""
        core = self._serving()
        return core.publish_nowait(
            topic, encode_event_payload(topic, event, self._max_bytes), policy or self.declaration.policy
        )

    async def wait_ready(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109  # the handshake is bounded: the bound is part of the call
        *,
        expect: Mapping[str, int] | None = None,
    ) -> None:
        """Wait until the subscribers this publisher should know have subscribed.

        Known are those the registry lists, plus ``expect`` (service name -> number of
        instances) for subscribers the registry does not list. Events published after
        this returns reach them; raises ``TimeoutError`` naming who is missing.
        """
        await self._serving().wait_ready(timeout, expect)

    def statistics(self) -> dict[str, object]:
        return self._serving().statistics()


class EventPublisher:
    """Declare on a ``Service`` class: ``events = zmicro.EventPublisher(policy="drop")``.

    ``policy`` says what happens when a subscriber's queue at this publisher is full:
    ``"drop"`` (count it; the others are not slowed), ``"raise"`` (count it and raise
    ``SlowSubscriberError``) or ``"wait"`` (wait up to ``wait_timeout`` seconds, then raise).
    """

    def __init__(self, *, policy: Policy = "drop", wait_timeout: float = 5.0) -> None:
        if policy not in _POLICIES:
            raise ConfigurationError(f"policy must be one of {', '.join(_POLICIES)}; got {policy!r}")
        if wait_timeout <= 0:
            raise ConfigurationError("wait_timeout must be positive")
        self.policy: Policy = policy
        self.wait_timeout = wait_timeout
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    @overload
    def __get__(self, obj: None, owner: type) -> EventPublisher: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Publisher: ...
    def __get__(self, obj: object | None, owner: type) -> EventPublisher | Publisher:
        if obj is None:
            return self
        bound = getattr(obj, "__dict__", {}).get(self._key)
        return bound if isinstance(bound, Publisher) else Publisher(self, None, 0)

    @property
    def _key(self) -> str:
        return f"__zmicro_publisher_{self.attr}"

    def bind(self, instance: object, core: EventPublisherCore | None, max_bytes: int) -> None:
        instance.__dict__[self._key] = Publisher(self, core, max_bytes)


# -- subscribing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HandlerOptions:
    prefix: str
    broadcast: bool


def event_handler(prefix: str, *, broadcast: bool = False) -> Callable[[F], F]:
    """Handle events whose topic starts with ``prefix`` (``""``: every topic).

    By default one instance of the service gets each event (a group, load-balanced);
    with ``broadcast=True`` every instance gets every event. The handler's parameters
    are found by name and type: ``topic: str``, ``info: zmicro.EventInfo``, and one
    more for the event itself, validated against its annotation (a bad event is counted
    and skipped). ``async def`` handlers run on the loop, plain ``def`` in a thread.
    """
    if not isinstance(prefix, str) or len(prefix) > p.MAX_TOPIC_LENGTH:
        raise ConfigurationError(f"an event prefix is a string of at most {p.MAX_TOPIC_LENGTH} characters")

    def mark(func: F) -> F:
        setattr(func, _EVENT_MARK, _HandlerOptions(prefix, broadcast))
        return func

    return mark


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    attr: str
    prefix: str
    group: bool
    is_async: bool
    payload_param: str | None
    topic_param: str | None
    info_param: str | None
    decoder: msgspec.msgpack.Decoder[Any]

    @property
    def mode(self) -> str:
        return "group" if self.group else "broadcast"

    def matches(self, topic: str, group: bool) -> bool:
        return group == self.group and topic.startswith(self.prefix)


def _handler_spec(cls: type, attr: str, func: Callable[..., Any], opts: _HandlerOptions) -> HandlerSpec:
    where = f"{cls.__qualname__}.{attr}"
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(f"{where}: cannot resolve type hints: {exc}") from None
    payload = topic = info = None
    payload_type: Any = Any
    for param in list(inspect.signature(func).parameters.values())[1:]:
        ann = hints.get(param.name, Any)
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigurationError(f"{where}: event handler parameters are passed by name")
        if ann is EventInfo or (param.name == "info" and ann is Any):
            info = param.name
        elif param.name == "topic":
            topic = param.name
        elif payload is None:
            payload, payload_type = param.name, ann
        else:
            raise ConfigurationError(
                f"{where}: an event handler takes the event, and optionally `topic` and an EventInfo; "
                f"{param.name!r} is one parameter too many"
            )
    try:
        decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(payload_type)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: event type not supported: {exc}") from None
    return HandlerSpec(
        attr,
        opts.prefix,
        not opts.broadcast,
        inspect.iscoroutinefunction(func),
        payload,
        topic,
        info,
        decoder,
    )


def describe_event_handlers(cls: type) -> list[HandlerSpec]:
    """The ``@event_handler`` methods of a service class. Raises ``ConfigurationError``."""
    out = []
    for attr in dir(cls):
        func = getattr(cls, attr, None)
        opts = getattr(func, _EVENT_MARK, None)
        if isinstance(opts, _HandlerOptions) and callable(func):
            out.append(_handler_spec(cls, attr, func, opts))
    return out


def event_publishers(cls: type) -> list[EventPublisher]:
    return [v for k in dir(cls) if isinstance(v := inspect.getattr_static(cls, k, None), EventPublisher)]
