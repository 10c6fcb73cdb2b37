"""The service model: a plain class, methods marked with ``@rpc``, arguments typed by their hints.

Decorators only register; ``describe_service`` reads the class once and builds, for each
method, a msgspec struct of its parameters. That struct validates every call's arguments
on the server (wrong type, missing or unknown argument) and gives the JSON Schema that
the built-in ``describe`` call publishes.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, overload

import msgspec

from ._errors import ConfigurationError, InvalidArgumentError
from .protocol import MAX_NAME_LENGTH

__all__ = ("MethodSpec", "Service", "ServiceSpec", "describe_service", "rpc")

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_RPC_MARK = "__zmicro_rpc__"


class Service:
    """Base class of a zmicro service. Set ``name``; mark methods with ``@zmicro.rpc``.

    Example::

        class Greeter(zmicro.Service):
            name = "greeter"

            @zmicro.rpc
            async def hello(self, who: str) -> str:
                return f"Hello, {who}!"

    ``max_concurrency`` handlers run at once; up to ``max_queued`` more wait; beyond
    that callers get ``OverloadedError`` at once.
    """

    name: ClassVar[str] = ""
    max_concurrency: ClassVar[int] = 64
    max_queued: ClassVar[int] = 256

    async def on_start(self) -> None:
        """Called once before the first request; open clients and resources here."""

    async def on_stop(self) -> None:
        """Called once after the last request finished (or the grace period ended)."""


@dataclass(frozen=True, slots=True)
class _RpcOptions:
    name: str | None
    idempotent: bool


@overload
def rpc(func: F, /) -> F: ...
@overload
def rpc(*, name: str | None = None, idempotent: bool = False) -> Callable[[F], F]: ...
def rpc(
    func: F | None = None, /, *, name: str | None = None, idempotent: bool = False
) -> F | Callable[[F], F]:
    """Mark a method as an RPC endpoint: ``@rpc`` or ``@rpc(name=..., idempotent=True)``.

    An ``async def`` runs on the event loop; a plain ``def`` runs in a thread pool so
    that it may block without stalling the service. ``idempotent`` declares the
    method safe to repeat (retries may use it).
    """

    def mark(f: F) -> F:
        setattr(f, _RPC_MARK, _RpcOptions(name=name, idempotent=idempotent))
        return f

    return mark(func) if func is not None else mark


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    attr: str
    is_async: bool
    idempotent: bool
    doc: str
    args_type: type[msgspec.Struct]
    decoder: msgspec.msgpack.Decoder[Any]
    params: tuple[str, ...]
    returns: Any

    def decode_args(self, raw: bytes | msgspec.Raw) -> dict[str, Any]:
        """Validate raw MessagePack arguments; ``InvalidArgumentError`` names the bad field."""
        try:
            args = self.decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise _invalid_argument(self.name, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidArgumentError(f"arguments are not valid MessagePack: {exc}") from None
        except RecursionError:
            raise InvalidArgumentError("arguments are nested too deeply") from None
        return {p: getattr(args, p) for p in self.params}

    def describe(self) -> dict[str, Any]:
        schema = msgspec.json.schema(self.args_type)
        try:
            result_schema: Any = msgspec.json.schema(self.returns)
        except (TypeError, ValueError):
            result_schema = {}
        return {
            "name": self.name,
            "doc": self.doc,
            "idempotent": self.idempotent,
            "runs_on": "event loop" if self.is_async else "thread pool",
            "params": _signature_text(self),
            "args_schema": schema,
            "result_schema": result_schema,
        }


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    doc: str
    methods: Mapping[str, MethodSpec] = field(default_factory=dict)


_FIELD_PATTERNS = (
    re.compile(r"at `\$\.([^`\[.]+)"),
    re.compile(r"missing required field `([^`]+)`"),
    re.compile(r"unknown field `([^`]+)`"),
)


def _invalid_argument(method: str, text: str) -> InvalidArgumentError:
    for pattern in _FIELD_PATTERNS:
        if m := pattern.search(text):
            return InvalidArgumentError(
                f"invalid argument `{m.group(1)}` for {method}: {text}",
                details={"field": m.group(1)},
            )
    return InvalidArgumentError(f"invalid arguments for {method}: {text}")


def _signature_text(spec: MethodSpec) -> str:
    parts = []
    for f in msgspec.structs.fields(spec.args_type):
        ann = getattr(f.type, "__name__", None) or str(f.type).replace("typing.", "")
        if f.required:
            parts.append(f"{f.name}: {ann}")
        else:
            parts.append(f"{f.name}: {ann} = {f.default!r}")
    ret = getattr(spec.returns, "__name__", None) or str(spec.returns).replace("typing.", "")
    return f"({', '.join(parts)}) -> {ret}"


def _method_spec(cls: type, attr: str, func: Callable[..., Any], opts: _RpcOptions) -> MethodSpec:
    name = opts.name or attr
    where = f"{cls.__qualname__}.{attr}"
    if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ConfigurationError(f"{where}: invalid RPC name {name!r}")
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(f"{where}: cannot resolve type hints: {exc}") from None
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    params = list(inspect.signature(func).parameters.values())[1:]  # drop self
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigurationError(f"{where}: *args/**kwargs cannot be validated; name each argument")
        if p.kind is p.POSITIONAL_ONLY:
            raise ConfigurationError(f"{where}: positional-only argument {p.name!r} cannot be passed by name")
        ann = hints.get(p.name, Any)
        fields.append((p.name, ann) if p.default is p.empty else (p.name, ann, p.default))
    try:
        args_type = msgspec.defstruct(
            f"{cls.__name__}_{attr}_args", fields, forbid_unknown_fields=True, kw_only=True
        )
        decoder = msgspec.msgpack.Decoder(args_type)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: argument types not supported: {exc}") from None
    return MethodSpec(
        name=name,
        attr=attr,
        is_async=inspect.iscoroutinefunction(func),
        idempotent=opts.idempotent,
        doc=inspect.getdoc(func) or "",
        args_type=args_type,
        decoder=decoder,
        params=tuple(p.name for p in params),
        returns=hints.get("return", Any),
    )


def describe_service(cls: type[Service]) -> ServiceSpec:
    """Read a service class: its name and RPC methods. Raises ``ConfigurationError``."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"{cls.__qualname__}: set a class attribute `name` (letters, digits, _ . -), got {name!r}"
        )
    if name.startswith("_"):
        raise ConfigurationError(f"{cls.__qualname__}: names starting with '_' are reserved")
    methods: dict[str, MethodSpec] = {}
    for attr in dir(cls):
        func = getattr(cls, attr, None)
        opts = getattr(func, _RPC_MARK, None)
        if isinstance(opts, _RpcOptions) and callable(func):
            spec = _method_spec(cls, attr, func, opts)
            if spec.name in methods:
                raise ConfigurationError(f"{cls.__qualname__}: two methods named {spec.name!r}")
            methods[spec.name] = spec
    return ServiceSpec(name=name, doc=inspect.getdoc(cls) or "", methods=methods)
