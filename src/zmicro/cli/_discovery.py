"""Helpers for the commands that deal with discovery: start the embedded registry, run workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from .._errors import ConfigurationError, NoSuchServiceError
from ..discovery import default_registry
from ..discovery._embedded import EmbeddedRegistry

__all__ = ("ensure_embedded_registry", "resolve_one", "run_workers")


async def _ping(endpoint: str, within: float) -> bool:
    registry = EmbeddedRegistry(endpoint)
    try:
        return await registry.ping(within)
    finally:
        await registry.aclose()


def ensure_embedded_registry(endpoint: str, *, idle_exit: float = 60.0, wait: float = 10.0) -> None:
    """Start ``zmicro registry`` in the background unless one already answers at ``endpoint``.

    The started registry outlives this process (other instances use it) and exits on its
    own once it has had no instances for ``idle_exit`` seconds.
    """
    if asyncio.run(_ping(endpoint, 0.5)):
        return
    subprocess.Popen(
        [sys.executable, "-m", "zmicro", "registry", "--bind", endpoint, "--idle-exit", str(idle_exit)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not ours to stop: Ctrl-C on this process must not reach it
    )
    until = time.monotonic() + wait
    while time.monotonic() < until:
        if asyncio.run(_ping(endpoint, 0.5)):
            return
    raise ConfigurationError(f"no registry answers at {endpoint}, and one could not be started there")


async def resolve_one(service: str, within: float) -> str:
    """The endpoint of one live instance of ``service``, from the default registry."""
    registry = default_registry()
    try:
        instances = await asyncio.wait_for(registry.lookup(service), within)
    finally:
        await registry.aclose()
    if not instances:
        raise NoSuchServiceError(f"no instance of {service!r} is registered")
    return instances[0].endpoint


def _worker_args(argv: list[str], index: int) -> list[str]:
    """The command line of worker ``index``: the parent's, without --workers, ports shifted."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        prefix = "--bind=" if arg.startswith("--bind=") else ""
        value = arg[len(prefix) :]
        is_bind = prefix or (i > 0 and argv[i - 1] == "--bind")
        if is_bind and value.startswith("tcp://") and not value.endswith((":0", ":*")):
            host, _, port = value.rpartition(":")
            arg = f"{prefix}{host}:{int(port) + index}"
        out.append(arg)
    return out


def run_workers(count: int, argv: list[str]) -> int:
    """Start ``count`` worker processes of the same ``zmicro run`` and supervise them.

    Each worker is a fresh interpreter (nothing crosses a fork: each makes its own
    ZeroMQ context) and registers as its own instance. SIGINT/SIGTERM are passed on;
    the exit code is the worst of the workers'.
    """
    base = [sys.executable, "-m", "zmicro", *_worker_args(argv[1:], 0)]
    procs = []
    for index in range(count):
        args = [sys.executable, "-m", "zmicro", *_worker_args(argv[1:], index)] if index else base
        procs.append(subprocess.Popen(args, env={**os.environ, "ZMICRO_WORKER": str(index)}))

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [proc.wait() for proc in procs]
    return max((abs(c) for c in codes), default=0)
