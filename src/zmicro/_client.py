"""Calling services: the async ``Client`` (``open_client``) and the ``BlockingClient`` (``connect``).

A client holds one persistent connection per endpoint, created on first use, with any
number of calls in flight on it. Every call has a deadline: the per-call ``timeout``,
else the client's default, and never later than the deadline of the request being
handled when the call is made from inside a handler (nested calls inherit it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

from . import _context
from ._errors import (
    CallError,
    ClientClosedError,
    ConfigurationError,
    OverloadedError,
    PeerLostError,
    UnavailableError,
)
from ._producer import OnFull, Producer
from ._routing import Router
from ._tasks import QUEUE_SERVICE
from .discovery import Registry, default_registry
from .patterns import RpcConnection
from .protocol import RetryBudget, RetryPolicy, backoff_delay
from .transport import SocketOptions

__all__ = ("BlockingClient", "Client", "connect", "open_client")

DEFAULT_TIMEOUT = 10.0
T = TypeVar("T")


class Client:
    """An asyncio client. Use ``open_client``; the proxy form reads ``client.<service>.<method>``.

    Services are found by name: through ``registry`` (by default the one named by
    ``ZMICRO_REGISTRY``, else the embedded registry on this machine), or through fixed
    ``endpoints`` (one endpoint for every service, or a mapping of service to endpoints).
    The client owns its registry object and closes it in ``aclose``.

    Example::

        async with zmicro.open_client("tcp://127.0.0.1:5555") as client:
            await client.call("greeter", "hello", who="world")
            await client.greeter.hello(who="world", _timeout=2.0)
    """

    def __init__(
        self,
        endpoints: str | Mapping[str, str | Sequence[str]] | None = None,
        *,
        registry: Registry | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        socket_options: SocketOptions | None = None,
        max_pending: int = 10_000,
        max_request_bytes: int = 1024 * 1024,
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive (every call has a deadline)")
        if endpoints is None and registry is None:
            registry = default_registry()
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._router = Router(
            endpoints, registry, socket_options or SocketOptions(), max_pending, max_request_bytes
        )
        self._budgets: dict[str, RetryBudget] = {}
        self.counters: Counter[str] = Counter()
        self.closed = False
        self._producer: Producer | None = None
        queue = os.environ.get("ZMICRO_QUEUE")
        if queue:
            self._router.add_static(QUEUE_SERVICE, [queue])

    def connection(self, endpoint: str) -> RpcConnection:
        """The persistent connection to ``endpoint`` (created on first use)."""
        return self._router.connection(endpoint)

    async def call(
        self,
        service: str,
        method: str,
        args: Mapping[str, Any] | None = None,
        /,
        *,
        _timeout: float | None = None,
        _idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``service.method`` with keyword arguments (or a mapping as third positional).

        Options start with an underscore so that they never collide with a method's
        own argument names: ``_timeout`` (seconds) and ``_idempotency_key``.

        A call that was never started (the instance was overloaded or draining) is
        retried on another instance; one that may have started is retried only when
        the method is declared idempotent or the call carries an idempotency key.
        Retries back off with jitter, stay within the deadline and within a retry
        budget per service.
        """
        if self.closed:
            raise ClientClosedError("the client is closed")
        if args is not None:
            kwargs = {**args, **kwargs}
        deadline = time.monotonic() + (self.timeout if _timeout is None else _timeout)
        ctx = _context.current()
        if ctx is not None:
            deadline = min(deadline, ctx.deadline)
        traceparent = _context.child_traceparent(ctx.traceparent if ctx else None)
        budget = self._budgets.get(service)
        if budget is None:
            budget = self._budgets[service] = RetryBudget(self.retry)
        tried: set[str] = set()
        attempt = 1
        while True:
            conn = self._router.pick_nowait(service, tried) or await self._router.pick(
                service, tried, deadline
            )
            try:
                result = await conn.call(
                    service,
                    method,
                    kwargs,
                    deadline=deadline,
                    traceparent=traceparent,
                    idempotency_key=_idempotency_key,
                )
            except (PeerLostError, UnavailableError, OverloadedError) as exc:
                budget.on_failure()
                if exc.details.get("started") == "false":
                    self._router.cool(conn.endpoint)
                if not self._may_retry(
                    exc, service, method, _idempotency_key, attempt, budget, conn.endpoint, tried
                ):
                    raise
                delay = backoff_delay(attempt, self.retry)
                if time.monotonic() + delay >= deadline:
                    raise
                self.counters["retries"] += 1
                tried.add(conn.endpoint)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            budget.on_success()
            return result

    def _may_retry(
        self,
        exc: CallError,
        service: str,
        method: str,
        key: str | None,
        attempt: int,
        budget: RetryBudget,
        endpoint: str,
        tried: set[str],
    ) -> bool:
        if attempt >= self.retry.max_attempts:
            return False
        if key is not None or self._router.is_idempotent(service, method):
            pass  # safe to repeat anywhere, even on the instance that just failed
        elif exc.details.get("started") == "false":
            # Never ran, but that instance is busy or draining: only another one may help,
            # and hammering the same one again would only add to its load.
            others = set(self._router.endpoints_for(service)) - tried - {endpoint}
            if not others:
                return False
        else:
            return False
        if not budget.allow_retry():
            self.counters["retries_denied_by_budget"] += 1
            return False
        return True

    def _tasks(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self)
        return self._producer

    async def submit(
        self,
        name: str,
        payload: Any,
        /,
        *,
        on_full: OnFull = "wait",
        ttl: float | None = None,
        key: str | None = None,
        _timeout: float | None = None,
    ) -> int | None:
        """Hand a task to the work queue; returns its id once the queue has stored it.

        ``await client.submit("images.resize", ResizeJob(...))``. When that queue is full,
        ``on_full`` decides: ``"wait"`` (retry with backoff until ``_timeout``), ``"raise"``
        (``OverloadedError``) or ``"drop"`` (return ``None``, counted). ``ttl``: seconds
        after which an undelivered task is dropped (counted). ``key``: an idempotency key;
        a second submit with the same key while the first is pending is not stored twice.
        ``_timeout`` (seconds, default the client's) bounds the whole submit, waiting included.
        """
        return await self._tasks().submit(name, payload, on_full=on_full, ttl=ttl, key=key, seconds=_timeout)

    def send(self, name: str, payload: Any, /) -> bool:
        """Fire-and-forget: no durability, no ack. ``False`` when dropped at once (buffer full).

        Messages that the queue cannot hold are dropped there; every drop is counted in
        ``task_statistics()`` and in the queue's statistics.
        """
        return self._tasks().send(name, payload)

    def task_statistics(self) -> dict[str, int]:
        """Producer counters: submitted, retries, full, dropped, sent, send drops, ..."""
        return self._producer.statistics() if self._producer is not None else {}

    def __getattr__(self, service: str) -> ServiceProxy:
        if service.startswith("_"):
            raise AttributeError(service)
        return ServiceProxy(self.call, service)

    def statistics(self) -> dict[str, dict[str, int]]:
        """Counters per endpoint: pending, late replies, expired, peer lost, ..."""
        return self._router.statistics()

    async def aclose(self) -> None:
        """Close every connection; calls still pending fail at once with ``ClientClosedError``."""
        if self._producer is not None and not self.closed:
            await self._producer.aclose()
        self.closed = True
        await self._router.aclose()


class ServiceProxy:
    """``client.greeter``: attribute access names the method; calling it makes the call.

    Serves both clients: with ``Client`` the call returns an awaitable, with
    ``BlockingClient`` the result.
    """

    __slots__ = ("_call", "_service")

    def __init__(self, call: Callable[..., Any], service: str) -> None:
        self._call = call
        self._service = service

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("__"):
            raise AttributeError(method)
        return functools.partial(self._call, self._service, method)

    def __repr__(self) -> str:
        return f"<service proxy {self._service!r}>"


@contextlib.asynccontextmanager
async def open_client(
    endpoints: str | Mapping[str, str | Sequence[str]] | None = None, **options: Any
) -> AsyncIterator[Client]:
    """An async client for the duration of the block.

    ``endpoints`` is one endpoint for every service, or a mapping of service name to endpoint.
    """
    client = Client(endpoints, **options)
    try:
        yield client
    finally:
        await client.aclose()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (faster), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class BlockingClient:
    """The same client for code without an event loop: ``call`` blocks until the outcome.

    It runs its own event loop (uvloop's when installed) in a background thread; its
    sockets live in that thread and never leave it. Safe to use from several threads at
    once.

    Example::

        with zmicro.connect("tcp://127.0.0.1:5555") as client:
            print(client.greeter.hello(who="world"))
    """

    def __init__(
        self, endpoints: str | Mapping[str, str | Sequence[str]] | None = None, **options: Any
    ) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zmicro-client", daemon=True)
        self._thread.start()
        self._client: Client = self._run(self._make(endpoints, options), None)
        self.closed = False

    async def _make(
        self, endpoints: str | Mapping[str, str | Sequence[str]] | None, options: dict[str, Any]
    ) -> Client:
        return Client(endpoints, **options)

    def _run(self, coro: Any, timeout: float | None) -> Any:
        fut: ThreadFuture[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # The call's own deadline ends it; the extra second only guards a wedged loop.
        return fut.result(None if timeout is None else timeout + 1.0)

    @property
    def timeout(self) -> float:
        return self._client.timeout

    def call(
        self,
        service: str,
        method: str,
        args: Mapping[str, Any] | None = None,
        /,
        *,
        _timeout: float | None = None,
        _idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``service.method`` and block until the result or an error."""
        if self.closed:
            raise ClientClosedError("the client is closed")
        timeout = self._client.timeout if _timeout is None else _timeout
        remaining = _context.remaining()  # a plain-def handler's deadline travels with it
        if remaining is not None:
            timeout = min(timeout, remaining)
        coro = self._client.call(
            service, method, args, _timeout=timeout, _idempotency_key=_idempotency_key, **kwargs
        )
        return self._run(coro, timeout)

    def submit(self, name: str, payload: Any, /, **options: Any) -> int | None:
        """``Client.submit``, blocking until the queue has stored the task."""
        if self.closed:
            raise ClientClosedError("the client is closed")
        timeout = options.get("_timeout") or self._client.timeout
        return self._run(self._client.submit(name, payload, **options), timeout)  # type: ignore[no-any-return]

    def __getattr__(self, service: str) -> ServiceProxy:
        if service.startswith("_"):
            raise AttributeError(service)
        return ServiceProxy(self.call, service)

    def statistics(self) -> dict[str, dict[str, int]]:
        return self._run(self._stats(), 5.0)  # type: ignore[no-any-return]

    async def _stats(self) -> dict[str, dict[str, int]]:
        return self._client.statistics()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._run(self._client.aclose(), 5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self._loop.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def connect(
    endpoints: str | Mapping[str, str | Sequence[str]] | None = None, **options: Any
) -> Iterator[BlockingClient]:
    """A blocking client for the duration of the ``with`` block."""
    client = BlockingClient(endpoints, **options)
    try:
        yield client
    finally:
        client.close()
