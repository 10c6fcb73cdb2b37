"""Work-queue tasks on the worker side: the ``@task`` decorator and what it declares.

``@task("images.resize", concurrency=4)`` only registers; ``describe_tasks`` reads a
service class once and builds, for each task, a msgspec decoder for the handler's one
argument. The worker component (``_worker``) runs the handlers; the broker
(``zmicro.queue``) stores and leases the work; producers use ``Client.submit``.
"""

from __future__ import annotations

import inspect
import random
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from ._errors import ConfigurationError
from .protocol import MAX_NAME_LENGTH

__all__ = ("QUEUE_SERVICE", "TaskOptions", "TaskSpec", "describe_tasks", "retry_delay", "task")

QUEUE_SERVICE = "zmicro.queue"
"""The service name of the task broker; producers and workers address it by this name."""

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_TASK_MARK = "__zmicro_task__"
_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class TaskOptions:
    name: str
    concurrency: int
    max_deliveries: int
    retry_delay: float
    max_retry_delay: float


def task(
    name: str,
    *,
    concurrency: int = 1,
    max_deliveries: int = 5,
    retry_delay: float = 1.0,
    max_retry_delay: float = 60.0,
) -> Callable[[F], F]:
    """Mark a method as the handler of the work-queue task ``name``.

    Example::

        class Thumbnails(zmicro.Service):
            name = "thumbnails"

            @zmicro.task("images.resize", concurrency=4)
            async def resize(self, job: ResizeJob) -> None: ...

    The handler takes one argument; its annotation validates every payload (an invalid
    payload goes to the dead letters at once). Up to ``concurrency`` handlers run at once
    in this process, and the worker asks the queue for no more than that. Returning acks
    the task; raising is a failed delivery, retried after ``retry_delay`` seconds (doubling
    up to ``max_retry_delay``, with jitter); after ``max_deliveries`` failed deliveries the
    task is dead-lettered. A plain ``def`` handler runs in a thread.
    """
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ConfigurationError(f"invalid task name {name!r} (letters, digits, _ . -)")
    if concurrency < 1:
        raise ConfigurationError(f"task {name!r}: concurrency must be at least 1")
    if max_deliveries < 1:
        raise ConfigurationError(f"task {name!r}: max_deliveries must be at least 1")
    if retry_delay < 0 or max_retry_delay < retry_delay:
        raise ConfigurationError(f"task {name!r}: need 0 <= retry_delay <= max_retry_delay")
    opts = TaskOptions(name, concurrency, max_deliveries, retry_delay, max_retry_delay)

    def mark(f: F) -> F:
        setattr(f, _TASK_MARK, opts)
        return f

    return mark


@dataclass(frozen=True, slots=True)
class TaskSpec:
    options: TaskOptions
    attr: str
    is_async: bool
    payload_type: Any
    decoder: msgspec.msgpack.Decoder[Any]

    @property
    def name(self) -> str:
        return self.options.name


def _task_spec(cls: type, attr: str, func: Callable[..., Any], opts: TaskOptions) -> TaskSpec:
    where = f"{cls.__qualname__}.{attr}"
    params = list(inspect.signature(func).parameters.values())[1:]  # drop self
    if len(params) != 1 or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise ConfigurationError(f"{where}: a task handler takes exactly one argument, the payload")
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(f"{where}: cannot resolve type hints: {exc}") from None
    payload_type = hints.get(params[0].name, Any)
    try:
        decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(payload_type)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: payload type not supported: {exc}") from None
    return TaskSpec(opts, attr, inspect.iscoroutinefunction(func), payload_type, decoder)


def describe_tasks(cls: type) -> list[TaskSpec]:
    """The ``@task`` handlers of a service class. Raises ``ConfigurationError``."""
    specs: dict[str, TaskSpec] = {}
    for attr in dir(cls):
        func = getattr(cls, attr, None)
        opts = getattr(func, _TASK_MARK, None)
        if isinstance(opts, TaskOptions) and callable(func):
            if opts.name in specs:
                raise ConfigurationError(f"{cls.__qualname__}: two handlers for task {opts.name!r}")
            specs[opts.name] = _task_spec(cls, attr, func, opts)
    return list(specs.values())


def retry_delay(options: TaskOptions, deliveries: int, rng: random.Random | None = None) -> float:
    """Seconds before a failed delivery is offered again: exponential, capped, "equal jitter"."""
    base = min(options.max_retry_delay, options.retry_delay * 2.0 ** max(0, deliveries - 1))
    return base / 2 + (rng or _RNG).uniform(0, base / 2)
