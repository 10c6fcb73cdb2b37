"""Discovery: every registry backend passes the same tests; then balancing, leases, probes, retries."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import zmq
import zmq.asyncio

import zmicro
from conftest import free_port
from services import Tagged
from zmicro import protocol as p
from zmicro.discovery import Instance, Registry, StaticRegistry
from zmicro.discovery._dns import DnsSrvRegistry
from zmicro.discovery._embedded import EmbeddedRegistry, RegistryService
from zmicro.testing import ServerFactory

pytestmark = pytest.mark.timeout(60)

DNSMASQ = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin")

SetInstances = Callable[[list[str]], Awaitable[None]]


class Dnsmasq:
    """A real DNS server on loopback serving SRV records for service "tagged"."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def serve(self, endpoints: list[str]) -> None:
        self.stop()
        args = [
            DNSMASQ or "dnsmasq",
            "--keep-in-foreground",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--log-facility=-",
        ]
        for n, ep in enumerate(endpoints):
            port = ep.rsplit(":", 1)[1]
            args += [
                f"--srv-host=_tagged._tcp.zmicro.test,host{n}.zmicro.test,{port}",
                f"--host-record=host{n}.zmicro.test,127.0.0.1",
            ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


@contextlib.contextmanager
def dnsmasq() -> Iterator[Dnsmasq]:
    server = Dnsmasq()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def backend(kind: str) -> AsyncIterator[tuple[Registry, SetInstances]]:
    """A registry of the given kind and a way to set which endpoints serve "tagged"."""
    if kind == "static":
        static = StaticRegistry()
        current: list[Instance] = []

        async def set_static(endpoints: list[str]) -> None:
            for inst in current:
                await static.deregister(inst)
            current[:] = [Instance("tagged", f"t{n}", ep) for n, ep in enumerate(endpoints)]
            for inst in current:
                await static.register(inst)

        yield static, set_static
    elif kind == "embedded":
        async with zmicro.open_server(RegistryService(probe_interval=0.2), bind="tcp://127.0.0.1:0") as reg:
            admin, client_side = EmbeddedRegistry(reg.endpoint), EmbeddedRegistry(reg.endpoint)
            registered: list[Instance] = []

            async def set_embedded(endpoints: list[str]) -> None:
                for inst in registered:
                    await admin.deregister(inst)
                registered[:] = [Instance("tagged", f"t-{ep}", ep) for ep in endpoints]
                for inst in registered:
                    await admin.register(inst)

            try:
                yield client_side, set_embedded
            finally:
                await admin.aclose()
                await client_side.aclose()
    else:
        if DNSMASQ is None:
            pytest.skip("dnsmasq is not installed (scripts/test installs dnsmasq-base)")
        with dnsmasq() as dns:
            dns.serve([])
            registry = DnsSrvRegistry("zmicro.test", nameserver="127.0.0.1", port=dns.port, poll_interval=0.3)
            registry.want("tagged")

            async def set_dns(endpoints: list[str]) -> None:
                dns.serve(endpoints)  # the records change under a running resolver, as in production

            try:
                yield registry, set_dns
            finally:
                await registry.aclose()


async def answers(client: zmicro.Client, n: int) -> Counter[str]:
    results = await asyncio.gather(*(client.tagged.whoami(_timeout=5) for _ in range(n)))
    return Counter(results)


async def seen_now(client: zmicro.Client, n: int) -> set[str]:
    """Which instances answer now; none while the registry has not caught up yet."""
    try:
        return set(await answers(client, n))
    except zmicro.NoSuchServiceError:
        return set()


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await predicate():
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", ["embedded", "static", "dns"])
async def test_backend_finds_instances_and_follows_changes(kind: str, zmicro_server: ServerFactory) -> None:
    a = await zmicro_server(Tagged("a"))
    b = await zmicro_server(Tagged("b"))
    async with backend(kind) as (registry, set_instances):
        await set_instances([a.endpoint, b.endpoint])
        async with zmicro.open_client(registry=registry) as client:

            async def both_seen() -> bool:
                return await seen_now(client, 20) == {"a", "b"}

            await wait_for(both_seen, within=20)  # calls by name, spread over both instances
            await set_instances([b.endpoint])  # "a" goes away

            async def only_b() -> bool:
                return await seen_now(client, 20) == {"b"}

            await wait_for(only_b, within=20)
            await set_instances([a.endpoint, b.endpoint])  # and comes back
            await wait_for(both_seen, within=20)


async def test_least_outstanding_requests_wins(zmicro_server: ServerFactory) -> None:
    slow = await zmicro_server(Tagged("slow", delay=0.2))
    fast = await zmicro_server(Tagged("fast", delay=0.0))
    async with zmicro.open_client({"tagged": [slow.endpoint, fast.endpoint]}) as client:
        await answers(client, 10)  # both connected
        counts: Counter[str] = Counter()

        async def worker() -> None:  # steady load: each worker calls again as soon as it has an answer
            for _ in range(25):
                counts[await client.tagged.whoami(_timeout=5)] += 1

        await asyncio.gather(*(worker() for _ in range(8)))
    # Per-request choice by calls in flight: the slow instance collects fewer calls.
    assert counts["fast"] > 2 * counts["slow"], counts


async def test_server_registers_and_leaves_first_on_stop() -> None:
    async with zmicro.open_server(RegistryService(probe_interval=0.2), bind="tcp://127.0.0.1:0") as reg:
        watcher = EmbeddedRegistry(reg.endpoint)
        seen: list[list[Instance]] = []
        try:
            server = zmicro.Server([Tagged("x")], registry=EmbeddedRegistry(reg.endpoint), drain_delay=0.2)
            await server.start()
            watcher.watch(seen.append)
            await wait_for(lambda: _true(bool(seen) and any(i.service == "tagged" for i in seen[-1])))
            (inst,) = [i for i in seen[-1] if i.service == "tagged"]
            assert inst.endpoint == server.endpoint
            assert inst.meta["idempotent"] == "whoami"
            await server.stop()
            await server.registry.aclose()  # type: ignore[union-attr]
            await wait_for(lambda: _true(not any(i.service == "tagged" for i in seen[-1])), within=3)
        finally:
            await watcher.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_lease_expires_without_renewal() -> None:
    async with (
        zmicro.open_server(RegistryService(probe_interval=0.2), bind="tcp://127.0.0.1:0") as reg,
        zmicro.open_client(reg.endpoint) as client,
    ):
        live = await zmicro_server_endpoint()
        try:
            inst = Instance("tagged", "lease-test", live.endpoint)
            await client.call("zmicro.registry", "register", instance=inst, ttl_ms=600)
            snap = await client.call("zmicro.registry", "list")
            assert [e["instance"]["instance_id"] for e in snap["entries"]] == ["lease-test"]

            async def gone() -> bool:
                return not (await client.call("zmicro.registry", "list"))["entries"]

            await wait_for(gone, within=5)
        finally:
            await live.stop()


async def zmicro_server_endpoint() -> zmicro.Server:
    server = zmicro.Server([Tagged("lease")], bind="tcp://127.0.0.1:0")
    await server.start()
    return server


async def test_instance_is_listed_only_while_its_data_path_answers() -> None:
    """A lease renewed by a side channel must not keep a dead endpoint listed."""
    port = free_port()
    async with zmicro.open_server(RegistryService(probe_interval=0.2), bind="tcp://127.0.0.1:0") as reg:
        admin = EmbeddedRegistry(reg.endpoint, renew_interval=0.2)
        try:
            await admin.register(Instance("tagged", "ghost", f"tcp://127.0.0.1:{port}"))  # renewed, but dead

            async def state() -> str:
                snap = await admin.entries()
                return snap.entries[0].state

            await wait_for(lambda: _eq(state(), "down"), within=5)
            assert await admin.instances() == []
            server = zmicro.Server([Tagged("alive")], bind=f"tcp://127.0.0.1:{port}")
            await server.start()
            try:
                await wait_for(lambda: _eq(state(), "up"), within=10)
            finally:
                await server.stop()
        finally:
            await admin.aclose()


async def _eq(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


@contextlib.asynccontextmanager
async def refusing_instances(n: int) -> AsyncIterator[tuple[list[str], Counter[str]]]:
    """Raw servers that answer every request "unavailable, not started" (a fleet that is draining)."""
    ctx = zmq.asyncio.Context()
    socks = [ctx.socket(zmq.ROUTER) for _ in range(n)]
    endpoints = []
    for s in socks:
        s.setsockopt(zmq.LINGER, 0)
        endpoints.append(f"tcp://127.0.0.1:{s.bind_to_random_port('tcp://127.0.0.1')}")
    attempts = Counter[str]()

    async def serve(s: zmq.asyncio.Socket, ep: str) -> None:
        while True:
            peer, body = await s.recv_multipart()
            msg = p.decode(body)
            if isinstance(msg, p.Request):
                attempts[ep] += 1
                err = p.encode_error(msg.id, "unavailable", "draining", {"started": "false"})
                await s.send_multipart([peer, err])

    tasks = [asyncio.ensure_future(serve(s, ep)) for s, ep in zip(socks, endpoints, strict=True)]
    try:
        yield endpoints, attempts
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in socks:
            s.close(linger=0)
        ctx.term()


async def test_retry_budget_stops_a_retry_storm() -> None:
    async with refusing_instances(3) as (endpoints, _), zmicro.open_client({"tagged": endpoints}) as client:
        failures = 0
        for _ in range(100):
            with contextlib.suppress(zmicro.UnavailableError):
                await client.tagged.bump(_timeout=2)
                continue
            failures += 1
        assert failures == 100
        # Without a budget each call would be tried on all three: 200 retries. With it:
        assert client.counters["retries"] <= 10, client.counters
        assert client.counters["retries_denied_by_budget"] > 0


async def test_not_started_calls_move_to_another_instance(zmicro_server: ServerFactory) -> None:
    healthy = await zmicro_server(Tagged("ok"))
    async with (
        refusing_instances(1) as ((draining,), attempts),
        zmicro.open_client({"tagged": [draining, healthy.endpoint]}) as client,
    ):
        results = [await client.tagged.bump(_timeout=5) for _ in range(20)]
        assert results == list(range(1, 21))  # non-idempotent, yet safe: the draining one never ran them
        # The instance that turned a call away is avoided for a while, not tried on every call.
        assert attempts[draining] <= 2
        assert client.counters["retries"] == attempts[draining]


async def test_idempotency_key_runs_the_handler_once(zmicro_server: ServerFactory) -> None:
    svc = Tagged("k", delay=0.1)
    server = await zmicro_server(svc)
    async with zmicro.open_client(server.endpoint) as client:
        first = await asyncio.gather(*(client.tagged.bump(_idempotency_key="order-1") for _ in range(5)))
        again = await client.tagged.bump(_idempotency_key="order-1")
        assert first == [1, 1, 1, 1, 1] and again == 1
        assert svc.runs == 1
        assert await client.tagged.bump(_idempotency_key="order-2") == 2
        counters = server.statistics()["counters"]
        assert counters["joined_running"] == 4 and counters["replayed"] == 1
