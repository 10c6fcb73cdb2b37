"""Failover with real processes: kill -9, SIGSTOP, a CPU-bound handler, rolling restarts,
a total outage, ``--workers``, ``zmicro ls``/``info`` and a network partition.

Every test starts its own registry (``zmicro registry``, probes every 0.5 s) and its own
instances of ``tests/failover_services.py:Failover`` (``zmicro run``, port 0, found by
name), and kills every process it started in teardown, whatever happened. Clients are
async ``zmicro.Client`` objects on the registry; answers carry the pid of the instance
that gave them, so the tests can tell where each call went.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

import zmicro
from conftest import free_port
from zmicro.discovery import registry_from_url
from zmicro.discovery._embedded import EmbeddedRegistry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
TARGET = "tests/failover_services.py:Failover"
PY = sys.executable
SERVICE = "failover"


# -- processes -------------------------------------------------------------------------------


class Proc:
    """A process this test started: its own session (so its children can be killed with it),
    stdout lines read by a thread, stderr kept in a file for failure messages."""

    def __init__(self, args: list[str], *, env: dict[str, str], stderr_path: Path) -> None:
        self.args = args
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = open(stderr_path, "wb")  # noqa: SIM115  # closed in kill()
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def line(self, within: float) -> str:
        """The next line on stdout, waiting at most ``within`` seconds."""
        until = time.monotonic() + within
        while True:
            try:
                return self._lines.get_nowait()
            except queue.Empty:
                pass
            if time.monotonic() > until:
                raise AssertionError(
                    f"no line from {self.args[:6]} within {within}s "
                    f"(exit code {self.popen.poll()}); stderr:\n{self.stderr_tail()}"
                )
            await asyncio.sleep(0.02)

    def lines_so_far(self) -> list[str]:
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self._lines.get_nowait())
        return out

    async def wait_exit(self, within: float) -> int:
        until = time.monotonic() + within
        while (code := self.popen.poll()) is None:
            if time.monotonic() > until:
                raise AssertionError(f"{self.args[:6]} still running after {within}s")
            await asyncio.sleep(0.05)
        return code

    def join_output(self, within: float) -> None:
        """Wait until everything the process printed has been read (after it exited)."""
        self._reader.join(within)

    def kill(self) -> None:
        """SIGCONT (in case it was stopped) and SIGKILL to its whole process group, then reap."""
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._stderr.close()


@dataclass
class Node:
    """One ``zmicro run`` instance."""

    proc: Proc
    endpoint: str

    @property
    def pid(self) -> int:
        return self.proc.pid


class Cluster:
    """A registry and instances of the failover service, all killed by ``cleanup``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: list[Proc] = []
        self.registry_url = "none"

    def env(self, **extra: str) -> dict[str, str]:
        # conftest sets ZMICRO_REGISTRY=none for the session: processes that should use
        # our registry are told so explicitly.
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "ZMICRO_REGISTRY": self.registry_url,
            "COLUMNS": "250",
            **extra,
        }

    def spawn(self, args: list[str], *, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(args, env=env or self.env(), stderr_path=self.tmp / f"proc{len(self.procs)}.stderr")
        self.procs.append(proc)
        return proc

    async def start_registry(self) -> str:
        url = f"tcp://127.0.0.1:{free_port()}"
        proc = self.spawn([PY, "-m", "zmicro", "registry", "--bind", url, "--probe-interval", "0.5"])
        line = await proc.line(30)
        assert line == f"zmicro: serving zmicro.registry on {url}", line
        self.registry_url = url
        return url

    def run_args(self, *extra: str) -> list[str]:
        return [
            PY, "-m", "zmicro", "run", TARGET,
            "--bind", "tcp://127.0.0.1:0",
            "--registry", self.registry_url,
            "--grace", "3",
            *extra,
        ]  # fmt: skip

    async def start_instances(self, n: int) -> list[Node]:
        procs = [self.spawn(self.run_args()) for _ in range(n)]
        nodes = []
        for proc in procs:
            line = await proc.line(30)
            assert line.startswith(f"zmicro: serving {SERVICE} on tcp://127.0.0.1:"), line
            nodes.append(Node(proc, line.rsplit(" ", 1)[1]))
        return nodes

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
        self.procs.clear()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


# -- registry and client helpers ---------------------------------------------------------------


async def registry_states(url: str) -> dict[str, str]:
    """Endpoint -> state ("up"/"down") of every failover instance the registry lists."""
    reg = EmbeddedRegistry(url)
    try:
        snap = await reg.entries()
    finally:
        await reg.aclose()
    return {e.instance.endpoint: e.state for e in snap.entries if e.instance.service == SERVICE}


async def wait_until(cond: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll ``cond`` until it holds; the seconds it took. Fails after ``within`` seconds."""
    start = time.monotonic()
    while True:
        if await cond():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def named_client(url: str, **options: Any) -> AsyncIterator[zmicro.Client]:
    """A client that finds instances by name through the registry at ``url``."""
    registry = registry_from_url(url)
    client = zmicro.Client(registry=registry, **options)
    try:
        yield client
    finally:
        await client.aclose()
        await registry.aclose()


async def collect_pids(client: zmicro.Client, count: int, within: float = 20.0) -> set[int]:
    """Call ``failover.pid`` until ``count`` different instances have answered."""
    seen: set[int] = set()
    until = time.monotonic() + within
    while len(seen) < count:
        if time.monotonic() > until:
            raise AssertionError(f"only pids {seen} answered within {within}s; expected {count}")
        results = await asyncio.gather(
            *(client.call(SERVICE, "pid", _timeout=2) for _ in range(2 * count)), return_exceptions=True
        )
        seen.update(r for r in results if isinstance(r, int))
        if len(seen) < count:
            await asyncio.sleep(0.1)
    return seen


async def wait_for_pids(client: zmicro.Client, pids: set[int], within: float = 20.0) -> None:
    seen = await collect_pids(client, len(pids), within)
    assert seen == pids, (seen, pids)


@dataclass
class Outcome:
    t0: float
    t1: float
    pid: int | None
    error: BaseException | None


async def timed(coro: Awaitable[Any]) -> tuple[float, float, Any]:
    """(start, end, result or the exception it raised)."""
    t0 = time.monotonic()
    try:
        result = await coro
    except zmicro.CallError as exc:
        result = exc
    return t0, time.monotonic(), result


@dataclass
class Load:
    """Workers calling one method by name in a loop until stopped (bounded by ``max_calls``)."""

    client: zmicro.Client
    method: str
    workers: int
    timeout: float
    pause: float = 0.0
    args: dict[str, Any] = field(default_factory=dict)
    max_calls: int = 20_000
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        self._task = asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        for i in range(self.max_calls):
            if self._stop.is_set():
                return
            t0 = time.monotonic()
            try:
                r = await self.client.call(SERVICE, self.method, n=i, **self.args, _timeout=self.timeout)
                self.outcomes.append(Outcome(t0, time.monotonic(), r["pid"], None))
            except zmicro.CallError as exc:
                self.outcomes.append(Outcome(t0, time.monotonic(), None, exc))
                await asyncio.sleep(0.05)  # a call that fails at once must not spin
            if self.pause:
                await asyncio.sleep(self.pause)

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.outcomes

    def since(self, t: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.t0 >= t]

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]


@contextlib.asynccontextmanager
async def running_load(client: zmicro.Client, method: str, **options: Any) -> AsyncIterator[Load]:
    load = Load(client, method, **options)
    load.start()
    try:
        yield load
    finally:
        await load.stop()


def describe_failures(failures: list[Outcome], limit: int = 5) -> str:
    kinds = Counter(type(o.error).__name__ for o in failures)
    sample = [f"{type(o.error).__name__}: {o.error}" for o in failures[:limit]]
    return f"{len(failures)} failed calls {dict(kinds)}; e.g. {sample}"


def report(name: str, **facts: Any) -> None:
    """One line per test with what it measured (shown with -s, and in the output of a failure)."""
    print(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in facts.items()))


# -- 1. kill -9 under load ----------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_kill_9_under_load_loses_no_idempotent_call(cluster: Cluster) -> None:
    url = await cluster.start_registry()
    nodes = await cluster.start_instances(3)
    pids = {n.pid for n in nodes}
    async with (
        named_client(url, timeout=10) as client,
        named_client(url, timeout=20) as slow_client,
    ):
        await wait_for_pids(client, pids)
        await wait_for_pids(slow_client, pids)
        async with running_load(client, "lookup", workers=8, timeout=10, args={"delay": 0.01}) as load:
            await asyncio.sleep(1.5)
            # Non-idempotent calls that take 4 s, spread over the instances by calls in flight.
            slow_calls = [
                asyncio.ensure_future(timed(slow_client.call(SERVICE, "slow", seconds=4.0, _timeout=20)))
                for _ in range(6)
            ]
            await asyncio.sleep(0.5)
            in_flight = {ep: s.get("pending", 0) for ep, s in slow_client.statistics().items()}
            victim = next(n for n in nodes if in_flight.get(n.endpoint, 0) > 0)
            on_victim = in_flight[victim.endpoint]

            async def victim_not_up() -> bool:
                return (await registry_states(url)).get(victim.endpoint) != "up"

            killed_at = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            # The registry stops listing the dead instance as up (its data-path probes fail).
            dropped = asyncio.ensure_future(wait_until(victim_not_up, 8, "the dead instance not up"))
            await asyncio.sleep(2.0)
        slow_results = await asyncio.gather(*slow_calls)
        survivors = pids - {victim.pid}

        # Idempotent calls: none failed; the ones cut off by the kill were retried elsewhere.
        outcomes = load.outcomes
        assert not load.failures(), describe_failures(load.failures())
        assert client.counters["retries"] > 0, client.counters
        after = {o.pid for o in load.since(killed_at)}
        assert after and after <= survivors, (after, survivors)
        assert max(o.t1 - o.t0 for o in outcomes) < 10

        # Non-idempotent calls in flight on the killed instance: "peer lost", at once.
        lost = [(t0, t1, r) for t0, t1, r in slow_results if isinstance(r, zmicro.PeerLostError)]
        done = [(t0, t1, r) for t0, t1, r in slow_results if isinstance(r, int)]
        assert len(lost) == on_victim, slow_results
        assert len(lost) + len(done) == len(slow_results), slow_results
        for t0, t1, _ in lost:
            assert t1 - t0 < 10, f"peer lost only after {t1 - t0:.1f}s (deadline 20 s)"
        assert {r for _, _, r in done} <= survivors

        # Afterwards calls succeed on the survivors, non-idempotent ones included.
        answers = [await client.call(SERVICE, "record", n=i, _timeout=5) for i in range(10)]
        assert {a["pid"] for a in answers} <= survivors

        not_up_after = await dropped
        report(
            "kill -9",
            idempotent_calls=len(outcomes),
            retries=client.counters["retries"],
            slow_peer_lost=len(lost),
            slow_peer_lost_after_s=[round(t1 - killed_at, 2) for _, t1, _ in lost],
            registry_not_up_after_s=round(not_up_after, 2),
        )


# -- 2. SIGSTOP / SIGCONT -----------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_frozen_instance_is_avoided_then_welcomed_back(cluster: Cluster) -> None:
    url = await cluster.start_registry()
    victim, other = await cluster.start_instances(2)
    async with named_client(url, timeout=20) as client:
        await wait_for_pids(client, {victim.pid, other.pid})
        async with running_load(
            client, "lookup", workers=4, timeout=20, pause=0.005, args={"delay": 0.01}
        ) as load:
            await asyncio.sleep(1.0)
            stopped_at = time.monotonic()
            os.kill(victim.pid, signal.SIGSTOP)  # teardown sends SIGCONT before SIGKILL

            async def victim_down() -> bool:
                return (await registry_states(url)).get(victim.endpoint) == "down"

            await wait_until(victim_down, 8, "registry marks the frozen instance down")
            marked_down_after = time.monotonic() - stopped_at
            await asyncio.sleep(max(0.0, stopped_at + 7.0 - time.monotonic()))
            window = [o for o in load.since(stopped_at + 5.0) if o.t1 <= stopped_at + 7.0]
            assert window, "no calls answered 5-7 s after SIGSTOP"
            assert {o.pid for o in window} == {other.pid}, Counter(o.pid for o in window)

            os.kill(victim.pid, signal.SIGCONT)
            resumed_at = time.monotonic()

            async def victim_answers() -> bool:
                return any(o.pid == victim.pid for o in load.since(resumed_at))

            await wait_until(victim_answers, 10, "calls reach the resumed instance again")
            back_after = time.monotonic() - resumed_at
        assert not load.failures(), describe_failures(load.failures())
        assert (await registry_states(url)).get(victim.endpoint) == "up"
        report(
            "SIGSTOP",
            calls=len(load.outcomes),
            retries=client.counters["retries"],
            marked_down_after_s=round(marked_down_after, 2),
            calls_in_window_5_7s=len(window),
            back_after_sigcont_s=round(back_after, 2),
            slowest_call_s=round(max(o.t1 - o.t0 for o in load.outcomes), 2),
        )


# -- 3. a CPU-bound plain def handler -----------------------------------------------------------


@pytest.mark.timeout(60)
async def test_cpu_bound_handler_does_not_make_its_instance_look_dead(cluster: Cluster) -> None:
    url = await cluster.start_registry()
    burner, other = await cluster.start_instances(2)
    async with named_client(url, timeout=10) as client:
        await wait_for_pids(client, {burner.pid, other.pid})
        conn = client.connection(burner.endpoint)  # the same instance, not just the same name
        burn = asyncio.ensure_future(
            timed(conn.call(SERVICE, "burn", {"seconds": 10.0}, deadline=time.monotonic() + 30))
        )
        await asyncio.sleep(0.5)
        until = time.monotonic() + 9.0
        direct: list[tuple[float, float, Any]] = []
        by_name: list[tuple[float, float, Any]] = []
        states: list[str | None] = []
        while time.monotonic() < until:
            direct.append(await timed(conn.call(SERVICE, "pid", {}, deadline=time.monotonic() + 2)))
            by_name.append(await timed(client.call(SERVICE, "lookup", n=1, _timeout=5)))
            states.append((await registry_states(url)).get(burner.endpoint))
            await asyncio.sleep(0.2)
        t0, t1, burnt = await burn
        assert isinstance(burnt, dict), burnt
        assert burnt["pid"] == burner.pid and t1 - t0 >= 10
        during = [c for c in direct if c[1] < t1]
        assert len(during) >= 10, f"only {len(during)} calls to the burning instance overlapped the burn"
        bad = [r for _, _, r in direct if r != burner.pid]
        assert not bad, bad
        assert all(isinstance(r, dict) for _, _, r in by_name), [r for _, _, r in by_name]
        assert states and all(s == "up" for s in states), states
        assert conn.statistics().get("disconnects", 0) == 0, conn.statistics()
        report(
            "cpu burn",
            calls_to_burner=len(direct),
            during_burn=len(during),
            slowest_call_to_burner_s=round(max(b - a for a, b, _ in direct), 3),
            registry_checks=len(states),
            burn_loops=burnt["loops"],
        )


# -- 4. rolling restart -------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_rolling_restart_under_non_idempotent_load_loses_nothing(cluster: Cluster) -> None:
    url = await cluster.start_registry()
    nodes = await cluster.start_instances(3)
    restarted: list[Node] = []
    exit_codes: list[int] = []
    async with named_client(url, timeout=10) as client:
        await wait_for_pids(client, {n.pid for n in nodes})
        async with running_load(client, "record", workers=4, timeout=10, pause=0.01) as load:
            await asyncio.sleep(1.0)
            for old in nodes:
                old.proc.popen.send_signal(signal.SIGTERM)
                code = await old.proc.wait_exit(20)
                assert code == 0, f"exit code {code}; stderr:\n{old.proc.stderr_tail()}"
                exit_codes.append(code)
                (new,) = await cluster.start_instances(1)
                restarted.append(new)

                async def listed(ep: str = new.endpoint) -> bool:
                    return (await registry_states(url)).get(ep) == "up"

                await wait_until(listed, 10, "the replacement is listed")
                started = time.monotonic()

                async def serving(pid: int = new.pid, since: float = started) -> bool:
                    return any(o.pid == pid for o in load.since(since - 1.0))

                await wait_until(serving, 10, "the replacement answers calls")
            await asyncio.sleep(0.5)
        outcomes = load.outcomes
        assert not load.failures(), describe_failures(load.failures())
        per_pid = Counter(o.pid for o in outcomes)
        assert all(per_pid[n.pid] > 0 for n in [*nodes, *restarted]), per_pid
        report(
            "rolling restart",
            calls=len(outcomes),
            failed=0,
            retries=client.counters["retries"],
            exit_codes=exit_codes,
            per_instance=sorted(per_pid.values()),
        )


# -- 5. a total outage and the retry budget -----------------------------------------------------


@pytest.mark.timeout(90)
async def test_total_outage_fails_fast_without_a_retry_storm(cluster: Cluster) -> None:
    url = await cluster.start_registry()
    nodes = await cluster.start_instances(3)
    # A call that could not even be sent (no connection left) says "unavailable", not a bare timeout.
    expected = (
        zmicro.DeadlineExceededError,
        zmicro.NoSuchServiceError,
        zmicro.PeerLostError,
        zmicro.UnavailableError,
    )
    async with named_client(url, timeout=5) as client:
        await wait_for_pids(client, {n.pid for n in nodes})
        async with running_load(client, "lookup", workers=8, timeout=1, args={"delay": 0.01}) as load:
            await asyncio.sleep(1.0)
            for n in nodes:
                os.kill(n.pid, signal.SIGKILL)
            await asyncio.sleep(0.3)
        retries_before = client.counters["retries"]

        async def burst(calls: int, concurrency: int = 20) -> list[tuple[float, float, Any]]:
            out: list[tuple[float, float, Any]] = []
            for _ in range(calls // concurrency):
                out += await asyncio.gather(
                    *(timed(client.call(SERVICE, "lookup", n=0, _timeout=0.3)) for _ in range(concurrency))
                )
            return out

        results = await burst(200)
        retries_during = client.counters["retries"] - retries_before
        kinds = Counter(type(r).__name__ for _, _, r in results)
        assert all(isinstance(r, expected) for _, _, r in results), kinds
        assert max(t1 - t0 for t0, t1, _ in results) < 0.3 + 0.5, "a call outlived its deadline"
        assert retries_during < 30, client.counters
        assert client.counters["retries"] < 30, client.counters
        honest = all(
            isinstance(r, zmicro.DeadlineExceededError | zmicro.NoSuchServiceError | zmicro.UnavailableError)
            for _, _, r in results
        )
        assert client.counters["retries_denied_by_budget"] > 0 or honest, (client.counters, kinds)

        # Once the registry has taken them all off the list, the outcome says so at once.
        async def none_up() -> bool:
            return "up" not in (await registry_states(url)).values()

        await wait_until(none_up, 8, "the registry lists no instance as up")
        await asyncio.sleep(0.5)  # watchers hear of it
        later = await burst(20)
        assert all(isinstance(r, zmicro.NoSuchServiceError) for _, _, r in later), [r for _, _, r in later]
        report(
            "outage",
            load_calls=len(load.outcomes),
            load_failures=Counter(type(o.error).__name__ for o in load.failures()),
            retries_while_dying=retries_before,
            outcomes_of_200=dict(kinds),
            retries_during_200=retries_during,
            denied_by_budget=client.counters["retries_denied_by_budget"],
        )


# -- 6. zmicro run --workers --------------------------------------------------------------------


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.timeout(60)
async def test_run_workers_registers_each_and_sigterm_stops_all(cluster: Cluster) -> None:
    url = await cluster.start_registry()
    parent = cluster.spawn(cluster.run_args("--workers", "3"))
    lines = [await parent.line(30) for _ in range(3)]
    endpoints = {line.rsplit(" ", 1)[1] for line in lines}
    assert all(line.startswith(f"zmicro: serving {SERVICE} on ") for line in lines), lines
    assert len(endpoints) == 3, lines

    async def all_listed() -> bool:
        states = await registry_states(url)
        return set(states) == endpoints and set(states.values()) == {"up"}

    await wait_until(all_listed, 10, "three instances listed up")
    async with named_client(url, timeout=5) as client:
        pids = await collect_pids(client, 3)
    assert parent.pid not in pids
    assert {parent_pid(p) for p in pids} == {parent.pid}

    parent.popen.send_signal(signal.SIGTERM)
    code = await parent.wait_exit(30)
    assert code == 0, parent.stderr_tail()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # Deregistered on the way out, not left to expire (a lease would take 10 s).
    assert await registry_states(url) == {}
    report("workers", endpoints=len(endpoints), pids=len(pids), exit_code=code)


# -- 7. zmicro ls and zmicro info ---------------------------------------------------------------


async def zmicro_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [PY, "-m", "zmicro", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.timeout(60)
async def test_ls_and_info_find_the_service_by_name(cluster: Cluster) -> None:
    url = await cluster.start_registry()
    nodes = await cluster.start_instances(2)

    async def both_up() -> bool:
        states = await registry_states(url)
        return all(states.get(n.endpoint) == "up" for n in nodes)

    await wait_until(both_up, 10, "both instances listed up")
    r = await zmicro_cli("ls", "--registry", url, env=cluster.env(ZMICRO_REGISTRY="none"))
    assert r.returncode == 0, r.stderr
    for n in nodes:
        (row,) = [line for line in r.stdout.splitlines() if n.endpoint in line]
        assert SERVICE in row and "up" in row and "0 running" in row, row

    r = await zmicro_cli("info", SERVICE, env=cluster.env())  # ZMICRO_REGISTRY=url
    assert r.returncode == 0, r.stderr
    assert any(n.endpoint in r.stdout for n in nodes), r.stdout
    for method in ("pid", "lookup", "record", "slow", "burn"):
        assert method in r.stdout, r.stdout
    assert "lookup (idempotent)" in r.stdout and "record (idempotent)" not in r.stdout
    assert "thread pool" in r.stdout  # burn is a plain def
    report("ls/info", instances=len(nodes))


# -- 8. a network partition between two namespaces ---------------------------------------------

ADDR_A = "169.254.77.1"
ADDR_B = "169.254.77.2"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"zmfoprobe{os.getpid()}"
    r = _ip("netns", "add", probe)
    if r.returncode != 0:
        return f"ip netns add does not work here: {r.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class NetPair:
    a: str
    b: str
    veth_a: str
    veth_b: str


@pytest.fixture
def netns(cluster: Cluster) -> Iterator[NetPair]:
    """Namespaces A and B joined by a veth pair (link-local addresses, nothing else attached)."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = str(os.getpid() % 1_000_000)
    pair = NetPair(f"zmfo{tag}a", f"zmfo{tag}b", f"zfo{tag}a", f"zfo{tag}b")
    created: list[str] = []
    try:
        for ns in (pair.a, pair.b):
            r = _ip("netns", "add", ns)
            assert r.returncode == 0, r.stderr
            created.append(ns)
        steps = [
            ("link", "add", pair.veth_a, "netns", pair.a, "type", "veth", "peer", "name", pair.veth_b,
             "netns", pair.b),
            ("-n", pair.a, "addr", "add", f"{ADDR_A}/30", "dev", pair.veth_a),
            ("-n", pair.b, "addr", "add", f"{ADDR_B}/30", "dev", pair.veth_b),
            ("-n", pair.a, "link", "set", "lo", "up"),
            ("-n", pair.b, "link", "set", "lo", "up"),
            ("-n", pair.a, "link", "set", pair.veth_a, "up"),
            ("-n", pair.b, "link", "set", pair.veth_b, "up"),
        ]  # fmt: skip
        for step in steps:
            r = _ip(*step)
            assert r.returncode == 0, f"ip {' '.join(step)}: {r.stderr}"
        yield pair
    finally:
        cluster.cleanup()  # nothing may still run inside a namespace we delete
        for ns in created:
            _ip("netns", "del", ns)


@pytest.mark.timeout(90)
async def test_partition_fails_calls_as_peer_lost_then_heals(cluster: Cluster, netns: NetPair) -> None:
    endpoint = f"tcp://{ADDR_A}:7777"
    env = cluster.env(ZMICRO_REGISTRY="none")
    server = cluster.spawn(
        ["ip", "netns", "exec", netns.a, PY, "-m", "zmicro", "run", TARGET, "--bind", endpoint,
         "--registry", "none", "--grace", "1"],
        env=env,
    )  # fmt: skip
    line = await server.line(30)
    assert line == f"zmicro: serving {SERVICE} on {endpoint}", line
    # Three workers calling failover.slow (1 s, deadline 6 s) from namespace B.
    client = cluster.spawn(
        ["ip", "netns", "exec", netns.b, PY, "tests/failover_services.py", endpoint, "3"], env=env
    )
    seen: list[dict[str, Any]] = []

    async def read_lines() -> None:
        seen.extend(json.loads(x) for x in client.lines_so_far())

    async def oks_since(t: float, n: int = 1) -> bool:
        await read_lines()
        return sum(1 for r in seen if r["outcome"] == "ok" and r["t1"] > t) >= n

    await wait_until(lambda: oks_since(0.0, 3), 30, "calls succeed before the partition")
    cut_at = time.monotonic()
    r = _ip("-n", netns.a, "link", "set", netns.veth_a, "down")
    assert r.returncode == 0, r.stderr
    await asyncio.sleep(8.0)
    healed_at = time.monotonic()
    r = _ip("-n", netns.a, "link", "set", netns.veth_a, "up")
    assert r.returncode == 0, r.stderr
    await wait_until(lambda: oks_since(healed_at), 15, "calls succeed again after healing")
    recovered_after = time.monotonic() - healed_at
    client.popen.send_signal(signal.SIGTERM)
    await client.wait_exit(15)
    client.join_output(5)
    await read_lines()

    # Calls in flight when the link went down (each would have ended within 1 s otherwise).
    cut = [r for r in seen if r["t0"] < cut_at and r["t1"] > cut_at + 1.0]
    assert cut, "no call was in flight at the partition"
    assert {r["outcome"] for r in cut} <= {"PeerLostError", "DeadlineExceededError"}, cut
    assert any(r["outcome"] == "PeerLostError" for r in cut), cut
    # Nothing hangs: every call ended by its 6 s deadline (plus scheduling slack).
    assert max(r["t1"] - r["t0"] for r in seen) < 6.0 + 1.0
    # The partition was real: no call succeeded between the cut (plus the 1 s a reply
    # already on its way may take) and the heal.
    during = [r for r in seen if cut_at + 1.0 < r["t1"] < healed_at]
    assert all(r["outcome"] != "ok" for r in during), during
    report(
        "partition",
        calls=len(seen),
        cut_in_flight=dict(Counter(r["outcome"] for r in cut)),
        cut_ended_after_s=[round(r["t1"] - cut_at, 2) for r in cut],
        during=dict(Counter(r["outcome"] for r in during)),
        recovered_after_heal_s=round(recovered_after, 2),
    )
