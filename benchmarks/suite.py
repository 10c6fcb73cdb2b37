"""The side-by-side suite: every row of every pattern, repeated, medians, ratios, targets.

    python -m benchmarks [--quick] [--patterns rpc,events,tasks,overload] [--rows KEY,...]
    zmicro bench [same options]

Rounds alternate the rows (a new set of processes for every measurement), so that
background load on a shared machine falls on every row alike. Each row's ratio is to
the floor row of the same pattern and point, measured in the same run. The table goes
to the terminal, every round's numbers to a JSON file, the tables as Markdown, and a
chart to a PNG file.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import _harness as h

MODULES = ("rpc_zmq", "rpc_peers", "streams", "overload")
PATTERNS = ("rpc", "events", "tasks", "overload")
_RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Cell:
    """One (row, point): every round's numbers, or why it could not run."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, key: str) -> float:
        xs = [r[key] for r in self.rounds if key in r and not math.isnan(r[key])]
        return statistics.median(xs) if xs else math.nan

    def keys(self) -> list[str]:
        return sorted({k for r in self.rounds for k in r})


def load_rows() -> list[h.Row]:
    rows: list[h.Row] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ImportError as exc:  # a module whose peers are missing must not stop the others
            print(f"benchmarks.{name} not loaded: {exc}", file=sys.stderr)
            continue
        rows.extend(module.ROWS)
    return rows


def run(
    rows: list[h.Row], settings: h.Settings, patterns: list[str], console: Console
) -> tuple[dict[tuple[str, str, str], Cell], dict[str, str]]:
    cells: dict[tuple[str, str, str], Cell] = {}
    skipped: dict[str, str] = {}
    active = []
    for row in rows:
        if row.pattern not in patterns:
            continue
        why = row.unavailable()
        if why:
            skipped[f"{row.pattern}/{row.key}"] = why
        else:
            active.append(row)
    for rnd in range(settings.repeat):
        for pattern in patterns:
            prow = [r for r in active if r.pattern == pattern]
            if not prow:
                continue
            shift = rnd % len(prow)
            order = prow[shift:] + prow[:shift]  # each round starts with another row
            for point in h.POINTS[pattern]:
                for row in order:
                    cell = cells.setdefault((pattern, row.key, point.label), Cell())
                    t0 = time.monotonic()
                    try:
                        cell.rounds.append(row.measure(point, settings))
                        status = f"{cell.rounds[-1].get('rate', math.nan):,.0f}/s"
                    except Exception as exc:
                        cell.errors.append(f"{type(exc).__name__}: {exc}"[:2000])
                        status = f"[red]failed[/]: {type(exc).__name__}"
                        traceback.print_exc(file=sys.stderr)
                    console.print(
                        f"  round {rnd + 1}/{settings.repeat}  {pattern:<8} {point.label:<14} "
                        f"{row.label:<45} {status}  ({time.monotonic() - t0:.1f} s)",
                        highlight=False,
                    )
    return cells, skipped


def _floor(rows: list[h.Row], pattern: str) -> h.Row | None:
    return next((r for r in rows if r.pattern == pattern and r.floor), None)


def _fmt(x: float, digits: int = 0) -> str:
    return "-" if math.isnan(x) else f"{x:,.{digits}f}"


def _x(ratio: float) -> str:
    return "-" if math.isnan(ratio) else f"{ratio:.2f}x"


def _ratio(x: float, base: float) -> float:
    return x / base if base and not math.isnan(base) and not math.isnan(x) else math.nan


def render(rows: list[h.Row], cells: dict[tuple[str, str, str], Cell], patterns: list[str]) -> list[Table]:
    tables = []
    for pattern in patterns:
        prow = [r for r in rows if r.pattern == pattern and any(k[:2] == (pattern, r.key) for k in cells)]
        if not prow:
            continue
        floor = _floor(rows, pattern)
        table = Table(title=_TITLES[pattern], title_justify="left")
        table.add_column("point", no_wrap=True)
        table.add_column("row", no_wrap=True)
        for col in _COLUMNS[pattern]:
            table.add_column(col, justify="right")
        for point in h.POINTS[pattern]:
            base = cells.get((pattern, floor.key, point.label), Cell()) if floor else Cell()
            for i, row in enumerate(prow):
                cell = cells.get((pattern, row.key, point.label), Cell())
                label = f"[bold]{row.label}[/]" if row.zmicro else row.label
                table.add_row(
                    point.label if i == 0 else "",
                    label + (" (floor)" if row.floor else ""),
                    *_cells(pattern, cell, base),
                    end_section=i == len(prow) - 1,
                )
        tables.append(table)
    return tables


_TITLES = {
    "rpc": "RPC round trips: a small typed argument and reply on one connection (aiohttp: one per call)",
    "events": "Events: messages per second received by each subscriber",
    "tasks": "Work queue: tasks per second, each acknowledged",
    "overload": "Overload: 10x what the service can handle",
}
_COLUMNS = {
    "rpc": ["calls/s", "vs floor", "p50 µs", "p99 µs", "p50 vs floor"],
    "events": ["msgs/s", "vs floor", "lost"],
    "tasks": ["tasks/s", "vs floor"],
    "overload": [
        "ok calls/s",
        "ok",
        "overloaded",
        "deadline",
        "RSS peak MB\nserver / client",
        "RSS growth MB\nserver / client",
    ],
}


def _cells(pattern: str, cell: Cell, base: Cell) -> list[str]:
    if not cell.rounds:
        n = len(_COLUMNS[pattern])
        return ["[red]failed[/]" if cell.errors else "-"] + ["-"] * (n - 1)
    rate, brate = cell.median("rate"), base.median("rate")
    ratio = _x(_ratio(rate, brate))
    if pattern == "rpc":
        p50 = cell.median("p50_us")
        return [
            _fmt(rate),
            ratio,
            _fmt(p50),
            _fmt(cell.median("p99_us")),
            _x(_ratio(p50, base.median("p50_us"))),
        ]
    if pattern == "events":
        lost = cell.median("lost")
        return [_fmt(rate), ratio, "-" if math.isnan(lost) else f"{lost:.1%}"]
    if pattern == "tasks":
        return [_fmt(rate), ratio]
    share = [cell.median(k) for k in ("ok_share", "overloaded_share", "deadline_share")]
    return [
        _fmt(rate),
        *["-" if math.isnan(s) else f"{s:.0%}" for s in share],
        f"{_fmt(cell.median('rss_server_peak_mb'), 1)} / {_fmt(cell.median('rss_client_peak_mb'), 1)}",
        f"{_fmt(cell.median('rss_server_growth_mb'), 1)} / {_fmt(cell.median('rss_client_growth_mb'), 1)}",
    ]


# -- targets --------------------------------------------------------------------


@dataclass
class Target:
    what: str
    measured: float
    goal: float
    higher_is_better: bool = True
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        if math.isnan(self.measured):
            return None
        return self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal


def targets(cells: dict[tuple[str, str, str], Cell]) -> list[Target]:
    def med(pattern: str, key: str, point: str, metric: str = "rate") -> float:
        return cells.get((pattern, key, point), Cell()).median(metric)

    out: list[Target] = []
    z128 = med("rpc", "zmicro", "128 in flight")
    for peer, goal, name in (
        ("raw-drained", 1.0, "hand-tuned drained pyzmq"),
        ("aiohttp", 5.0, "aiohttp JSON"),
        ("grpc", 8.0, "grpc.aio"),
        ("zerorpc", 10.0, "zerorpc"),
    ):
        out.append(
            Target(
                f"RPC calls/s at 128 in flight, zmicro vs {name}",
                _ratio(z128, med("rpc", peer, "128 in flight")),
                goal,
            )
        )
    p50 = _ratio(
        med("rpc", "zmicro", "1 in flight", "p50_us"), med("rpc", "raw-future", "1 in flight", "p50_us")
    )
    out.append(Target("RPC p50 at 1 in flight, zmicro vs raw zmq.asyncio", p50, 1.1, higher_is_better=False))
    for point in h.EVENT_POINTS:
        ratio = _ratio(med("events", "zmicro", point.label), med("events", "raw-pubsub", point.label))
        out.append(Target(f"events to {point.label}, zmicro vs raw PUB/SUB", ratio, 0.3))
    out.append(
        Target(
            "acked work-queue tasks/s with 2 workers", med("tasks", "zmicro", "2 workers"), 20_000, unit="/s"
        )
    )
    growth = max(
        med("overload", "zmicro", "10x capacity", "rss_server_growth_mb"),
        med("overload", "zmicro", "10x capacity", "rss_client_growth_mb"),
    )
    out.append(
        Target(
            "overload: RSS growth after the first second (MB)",
            growth,
            10.0,
            higher_is_better=False,
            unit=" MB",
        )
    )
    return out


def render_targets(ts: list[Target]) -> Table:
    table = Table(title="Targets (ratios from this run)", title_justify="left")
    for col in ("target", "measured", "goal", "met"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for t in ts:
        digits = 0 if t.unit == "/s" else 2
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[t.met]
        sign = ">=" if t.higher_is_better else "<="
        measured = "-" if math.isnan(t.measured) else _fmt(t.measured, digits) + t.unit
        table.add_row(t.what, measured, f"{sign} {_fmt(t.goal, digits)}{t.unit}", met)
    return table


# -- outputs --------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import msgspec
    import zmq

    import zmicro

    cpu = "unknown"
    with_cpu = Path("/proc/cpuinfo")
    if with_cpu.exists():
        for line in with_cpu.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, check=False, cwd=_RESULTS.parent
            )
        except OSError:
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    # Uncommitted changes to the code measured make the commit an approximation: say so.
    if commit and git("status", "--porcelain", "--", "src", "benchmarks/*.py"):
        commit += "+changes"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgspec": msgspec.__version__,
        "zmicro": zmicro.__version__,
        "commit": commit,
        "load_average": os.getloadavg(),
        "started": time.time(),
    }


def to_json(
    rows: list[h.Row],
    cells: dict[tuple[str, str, str], Cell],
    skipped: dict[str, str],
    settings: h.Settings,
    ts: list[Target],
    host: dict[str, Any],
) -> dict[str, Any]:
    labels = {(r.pattern, r.key): r for r in rows}
    out: list[dict[str, Any]] = []
    for (pattern, key, point), cell in cells.items():
        row = labels[(pattern, key)]
        floor = _floor(rows, pattern)
        base = cells.get((pattern, floor.key, point), Cell()) if floor else Cell()
        medians = {k: cell.median(k) for k in cell.keys()}  # noqa: SIM118
        out.append(
            {
                "pattern": pattern,
                "row": key,
                "label": row.label,
                "point": point,
                "floor": row.floor,
                "median": medians,
                "rate_vs_floor": _ratio(medians.get("rate", math.nan), base.median("rate")),
                "rounds": cell.rounds,
                "errors": cell.errors,
            }
        )
    return {
        "machine": {**host, "minutes": round((time.time() - host["started"]) / 60, 1)},
        "settings": settings.__dict__,
        "results": out,
        "skipped": skipped,
        "targets": [{**t.__dict__, "met": t.met} for t in ts],
    }


def markdown(data: dict[str, Any]) -> str:
    """The tables of one run as Markdown (for the docs), built from its JSON alone."""
    m = data["machine"]
    lines = [
        f"Run started {m['date']} ({m.get('minutes', '?')} minutes) on {m['cpus']} CPUs ({m['cpu']}), "
        f"Linux {m['kernel']}, Python {m['python']}, "
        f"pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, msgspec {m['msgspec']}; zmicro {m['zmicro']} at "
        f"`{m['commit']}`. Load average at the start: {', '.join(f'{x:.1f}' for x in m['load_average'])}. "
        f"Median of {data['settings']['repeat']} rounds of {data['settings']['seconds']:g} s per point.",
        "",
    ]
    res = data["results"]
    for pattern in PATTERNS:
        rows = [r for r in res if r["pattern"] == pattern]
        if not rows:
            continue
        floor = next((r["label"] for r in rows if r["floor"]), None)
        lines += [f"**{_TITLES[pattern]}**" + (f" (floor: {floor})" if floor else ""), ""]
        head = ["point", "row", *(c.replace("\n", " ") for c in _COLUMNS[pattern])]
        lines += [
            "| " + " | ".join(head) + " |",
            "| " + " | ".join(["---", "---"] + ["---:"] * (len(head) - 2)) + " |",
        ]
        for point in [p.label for p in h.POINTS[pattern]]:
            base = next((r for r in rows if r["floor"] and r["point"] == point), None)
            for r in (r for r in rows if r["point"] == point):
                cell, bcell = Cell(rounds=r["rounds"]), Cell(rounds=base["rounds"] if base else [])
                values = [v.replace("[red]", "").replace("[/]", "") for v in _cells(pattern, cell, bcell)]
                label = f"**{r['label']}**" if r["row"].startswith("zmicro") else r["label"]
                lines.append(f"| {point} | {label} | " + " | ".join(values) + " |")
        lines.append("")
    lines += ["**Targets**", "", "| target | measured | goal | met |", "| --- | ---: | ---: | --- |"]
    for t in data["targets"]:
        digits = 0 if t["unit"] == "/s" else 2
        sign = ">=" if t["higher_is_better"] else "<="
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        value = float(t["measured"])
        measured = "-" if math.isnan(value) else _fmt(value, digits) + t["unit"]
        lines.append(f"| {t['what']} | {measured} | {sign} {_fmt(t['goal'], digits)}{t['unit']} | {met} |")
    if data["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in data["skipped"].items())]
    return "\n".join(lines) + "\n"


def chart(data: dict[str, Any], path: Path) -> str | None:
    """Bar charts of calls/s per pattern, log scale; returns why not if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e .[bench])"
    patterns = [p for p in PATTERNS if any(r["pattern"] == p for r in data["results"])]
    fig, axes = plt.subplots(len(patterns), 1, figsize=(12, 4.2 * len(patterns)), squeeze=False)
    for ax, pattern in zip(axes[:, 0], patterns, strict=True):
        res = [r for r in data["results"] if r["pattern"] == pattern]
        labels = list(dict.fromkeys(r["label"] for r in res))
        points = [p.label for p in h.POINTS[pattern]]
        width = 0.8 / max(1, len(points))
        for i, point in enumerate(points):
            ys = []
            for label in labels:
                match = [r for r in res if r["label"] == label and r["point"] == point]
                ys.append(match[0]["median"].get("rate", 0.0) if match else 0.0)
            xs = [j + (i - (len(points) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, [0.0 if math.isnan(y) else y for y in ys], width, label=point)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([textwrap.fill(lbl, 14) for lbl in labels], fontsize=6.5)
        ax.set_yscale("log")
        ax.set_ylabel(
            {"rpc": "calls/s", "events": "msgs/s", "tasks": "tasks/s", "overload": "ok calls/s"}[pattern]
        )
        ax.set_title(_TITLES[pattern], fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    m = data["machine"]
    fig.suptitle(
        f"zmicro {m['zmicro']} ({m['commit']}), {m['date']}, {m['cpus']} CPUs, Python {m['python']}, "
        f"libzmq {m['libzmq']}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="zmicro bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--patterns", default=",".join(PATTERNS), help="comma-separated: " + ",".join(PATTERNS))
    ap.add_argument("--rows", default="", help="comma-separated row keys (default: every row)")
    ap.add_argument("--seconds", type=float, help="measured seconds per point [3; --quick: 1]")
    ap.add_argument("--warmup", type=float, help="untimed seconds before each point [0.5; --quick: 0.3]")
    ap.add_argument("--repeat", type=int, help="rounds; the tables show medians [3; --quick: 1]")
    ap.add_argument("--overload-seconds", type=float, help="length of the overload run [10; --quick: 3]")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="shorter defaults, a smoke run rather than a result; writes benchmarks/results/quick.*",
    )
    ap.add_argument("--json", help="where to write every number [benchmarks/results/latest.json]")
    ap.add_argument("--png", help="where to draw the chart ('' for none) [benchmarks/results/latest.png]")
    ap.add_argument(
        "--markdown",
        help="where to write the tables as Markdown ('' for none) [benchmarks/results/latest.md]",
    )
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    args = ap.parse_args(argv)
    # --quick changes the defaults only: durations given explicitly are kept.
    defaults = (1.0, 0.3, 1, 3.0) if args.quick else (3.0, 0.5, 3, 10.0)
    for name, value in zip(("seconds", "warmup", "repeat", "overload_seconds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    stem = "quick" if args.quick else "latest"  # a smoke run never overwrites the last full result
    for name, ext in (("json", "json"), ("png", "png"), ("markdown", "md")):
        if getattr(args, name) is None:
            setattr(args, name, str(_RESULTS / f"{stem}.{ext}"))
    args.patterns = [p for p in args.patterns.split(",") if p]
    unknown = set(args.patterns) - set(PATTERNS)
    if unknown:
        ap.error(f"unknown patterns {sorted(unknown)}; choose from {', '.join(PATTERNS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows = load_rows()
    if args.rows:
        wanted = {w for w in args.rows.split(",") if w}
        known = {r.key for r in rows} | {f"{r.pattern}/{r.key}" for r in rows}
        if wanted - known:
            console.print(f"[red]unknown rows:[/] {', '.join(sorted(wanted - known))} (see --list)")
            return 2
        rows = [r for r in rows if r.key in wanted or f"{r.pattern}/{r.key}" in wanted]
    rows = [r for r in rows if r.pattern in args.patterns]
    if args.list:
        for row in rows:
            why = row.unavailable()
            console.print(
                f"{row.pattern:<9} {row.key:<20} {row.label}"
                + (f"  [dim](skipped: {escape(why)})[/]" if why else "")
            )
        return 0
    settings = h.Settings(args.seconds, args.warmup, args.repeat, args.overload_seconds)
    rounds = f"{settings.repeat} round{'s' if settings.repeat != 1 else ''}"
    overload = f"; overload runs {settings.overload_seconds:g} s" if "overload" in args.patterns else ""
    console.print(
        f"[bold]zmicro bench[/]: {len(rows)} rows, {rounds} of {settings.seconds:g} s points "
        f"(+{settings.warmup:g} s warm-up){overload}"
    )
    host = machine()  # at the start: the date, the load and the commit of the code measured
    cells, skipped = run(rows, settings, args.patterns, console)
    ts = targets(cells)
    for table in render(rows, cells, args.patterns):
        console.print(table)
    for name, why in skipped.items():
        console.print(f"[dim]skipped {name}: {escape(why)}[/]")
    console.print(render_targets(ts))
    data = to_json(rows, cells, skipped, settings, ts, host)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))
        console.print(f"every number: {args.json}")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(data))
        console.print(f"tables as Markdown: {args.markdown}")
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        why = chart(data, Path(args.png))
        console.print(f"chart: {args.png}" if why is None else f"[yellow]no chart: {escape(why)}[/]")
    failed = [f"{k[0]}/{k[1]} at {k[2]}" for k, c in cells.items() if c.errors]
    if failed:
        console.print(f"[red]{len(failed)} measurements failed:[/] {', '.join(failed)}")
        return 1
    return 0
