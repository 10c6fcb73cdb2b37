from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zmicro.transport import get_context

# Processes started by tests must not register with (or start) a registry on this
# machine unless a test asks for one explicitly.
os.environ["ZMICRO_REGISTRY"] = "none"


@pytest.fixture(autouse=True)
def _no_leaked_sockets() -> Iterator[None]:
    """Fail a test that leaves a ZeroMQ socket open (fixtures must close what they open)."""
    yield
    gc.collect()
    ctx = get_context()
    leaked = [s for s in list(getattr(ctx, "_sockets", ())) if not s.closed]
    for s in leaked:
        s.close(linger=0)
    assert not leaked, f"{len(leaked)} ZeroMQ socket(s) left open by the test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def zmicro_run(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m zmicro run ARGS...`` from tests/; yields the process and its first line
    ("zmicro: serving NAMES on ENDPOINT"). Killed and reaped on the way out, whatever happened."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmicro", "run", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving" in line, line
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
