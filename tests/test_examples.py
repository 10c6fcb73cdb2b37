"""The README's example (examples/shop.py) runs as written: RPC, an event and a task, by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def test_shop_example_rpc_event_and_task(tmp_path: Path) -> None:
    registry = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "ZMICRO_REGISTRY": registry, "ZMICRO_QUEUE_DB": str(tmp_path / "q.sqlite"),
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    targets = [
        "examples/shop.py:Orders",
        "examples/shop.py:Emails",
        "examples/shop.py:Audit",
        "zmicro.queue:TaskQueue",
    ]
    reg = subprocess.Popen(
        [sys.executable, "-m", "zmicro", "registry", "--bind", registry], stdout=subprocess.PIPE
    )
    log = (tmp_path / "shop.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmicro", "run", *targets],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "serving orders, emails, audit, zmicro.queue" in proc.stdout.readline()

        def call(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "zmicro", "call", *args], capture_output=True,
                                  text=True, env=env, cwd=ROOT, timeout=30)  # fmt: skip

        placed = call("orders.place", "item=book", "qty=2")  # found by name, no endpoint given
        assert placed.returncode == 0, placed.stderr
        order_id = json.loads(placed.stdout)
        bad = call("orders.place", "item=pen", "qty=0")
        assert bad.returncode == 1 and "invalid_argument" in bad.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen = json.loads(call("audit.recent").stdout)
            log.seek(0)
            if f"order.placed {order_id}" in seen and f"confirmation for order {order_id}" in log.read():
                break
            time.sleep(0.2)
        else:
            log.seek(0)
            pytest.fail(f"the event or the task did not run; log:\n{log.read()[-3000:]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        if proc.stdout:
            proc.stdout.close()
        log.close()
        reg.terminate()
        assert reg.wait(10) == 0
        if reg.stdout:
            reg.stdout.close()
