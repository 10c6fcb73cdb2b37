"""The benchmark still runs (tiny counts; it measures nothing here: numbers live in docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.timeout(180)
def test_benchmark_runs() -> None:
    args = [
        "--calls",
        "300",
        "--latency-calls",
        "50",
        "--warmup",
        "20",
        "--repeat",
        "1",
        "--rows",
        "raw-drained,zmicro",
    ]
    r = subprocess.run(
        [sys.executable, "benchmarks/rpc_vs_pyzmq.py", *args],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "zmicro" in r.stdout and "raw" in r.stdout
