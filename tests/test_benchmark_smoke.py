"""The benchmark suite runs end to end with tiny durations. It asserts no speed: the
numbers live in docs/benchmarks.md; this proves that every row can be measured."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_row_of_the_suite_measures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    r = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--seconds", "0.4", "--warmup", "0.1"),
            *("--overload-seconds", "2", "--json", str(out), "--png", str(png)),
            *("--markdown", str(tmp_path / "bench.md")),
        ],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads(out.read_text())
    measured = {(x["pattern"], x["row"]) for x in data["results"] if not x["errors"]}
    # The floors and zmicro rows of every pattern always run (the peers need the bench extra).
    for pattern, row in [
        ("rpc", "raw-drained"),
        ("rpc", "zmicro"),
        ("events", "raw-pubsub"),
        ("events", "zmicro"),
        ("tasks", "raw-pushpull"),
        ("tasks", "zmicro"),
        ("overload", "zmicro"),
    ]:
        assert (pattern, row) in measured, (pattern, row, r.stdout[-3000:])
    for x in data["results"]:
        assert x["median"]["rate"] > 0 and not math.isnan(x["median"]["rate"]), x
    assert all(t["measured"] is not None for t in data["targets"])
    assert "Targets" in r.stdout
    assert "| 128 in flight |" in (tmp_path / "bench.md").read_text()
    if "matplotlib not installed" not in r.stdout:
        assert png.stat().st_size > 10_000
