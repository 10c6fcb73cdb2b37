from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

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
