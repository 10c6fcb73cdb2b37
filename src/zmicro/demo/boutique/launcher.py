"""Starts the whole boutique: every service in its own ``zmicro run`` process, on free ports.

First an embedded registry and the task queue; then the services in dependency
order (the leaves first, the frontend last), each registering under its name, so
that every caller finds every instance by name and balances over them. Each process
prints the endpoint it bound on its first stdout line. Stopping is the reverse:
SIGTERM stage by stage (the frontend first), a bounded wait, then SIGKILL.

Example::

    with launch() as shop:
        print(shop.url, shop.endpoints["currency"])
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..._client import connect
from .frontend import HTTP_ENV_VAR
from .wiring import ENV_VAR

__all__ = ("STAGES", "Boutique", "Instance", "ServiceSpec", "launch")

_PACKAGE = __package__


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    target: str
    instances: int = 1


QUEUE = ServiceSpec("zmicro.queue", "zmicro.queue:TaskQueue")

STAGES: tuple[tuple[ServiceSpec, ...], ...] = (
    (QUEUE,),
    (
        ServiceSpec("productcatalog", "catalog:ProductCatalog", 2),
        ServiceSpec("currency", "currency:Currency", 2),
        ServiceSpec("cart", "cart:CartService"),  # carts live in memory: one instance holds them all
        ServiceSpec("shipping", "shipping:Shipping"),
        ServiceSpec("payment", "payment:Payment"),
        ServiceSpec("email", "emails:EmailService"),
        ServiceSpec("ad", "ad:AdService"),
    ),
    (ServiceSpec("recommendation", "recommendation:Recommendation"),),
    (ServiceSpec("checkout", "checkout:Checkout"),),
    (ServiceSpec("frontend", "frontend:Frontend"),),
)


@dataclass(slots=True)
class Instance:
    service: str
    index: int
    proc: subprocess.Popen[str]
    log_path: Path
    endpoint: str = ""
    exit_code: int | None = None


@dataclass
class Boutique:
    """The running shop: its processes, the name -> endpoints map and the web address."""

    http_host: str = "127.0.0.1"
    http_port: int = 0
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="zmicro-boutique-")))
    stages: list[list[Instance]] = field(default_factory=list)
    endpoints: dict[str, list[str]] = field(default_factory=dict)
    url: str = ""
    registry_url: str = ""
    registry_proc: subprocess.Popen[str] | None = None
    started_in: float = 0.0

    @property
    def instances(self) -> list[Instance]:
        return [i for stage in self.stages for i in stage]

    def start(self, timeout: float = 30.0) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            self._start_registry(deadline)
            env = {
                **os.environ,
                "ZMICRO_REGISTRY": self.registry_url,
                "ZMICRO_QUEUE_DB": str(self.log_dir / "queue.sqlite"),
                "PYTHONUNBUFFERED": "1",
                HTTP_ENV_VAR: f"{self.http_host}:{self.http_port}",
            }
            env.pop(ENV_VAR, None)
            for specs in STAGES:
                stage = [self._spawn(spec, n, env) for spec in specs for n in range(spec.instances)]
                self.stages.append(stage)
                for inst in stage:
                    inst.endpoint = self._wait_ready(inst, deadline)
                    self.endpoints.setdefault(inst.service, []).append(inst.endpoint)
            with connect(self.endpoints["frontend"][0], timeout=max(1.0, deadline - time.monotonic())) as c:
                self.url = str(c.frontend.http_url())
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0

    def _start_registry(self, deadline: float) -> None:
        log_path = self.log_dir / "registry.log"
        cmd = [
            sys.executable,
            "-m",
            "zmicro",
            "registry",
            "--bind",
            "tcp://127.0.0.1:0",
            "--probe-interval",
            "0.5",
        ]
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
        self.registry_proc = proc
        self.registry_url = self._wait_ready(Instance("zmicro.registry", 0, proc, log_path), deadline)

    def _spawn(self, spec: ServiceSpec, n: int, env: dict[str, str]) -> Instance:
        log_path = self.log_dir / f"{spec.name}-{n}.log"
        target = spec.target if spec.target.startswith("zmicro.") else f"{_PACKAGE}.{spec.target}"
        cmd = [
            sys.executable, "-m", "zmicro", "--log-level", "INFO", "run", target,
            "--bind", "tcp://127.0.0.1:0", "--grace", "3",
        ]  # fmt: skip
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True, env=env)
        return Instance(spec.name, n, proc, log_path)

    def _wait_ready(self, inst: Instance, deadline: float) -> str:
        """The endpoint from the process's first line: ``zmicro: serving NAMES on ENDPOINT``."""
        out = inst.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], max(0.0, deadline - time.monotonic()))
        line = out.readline() if ready else ""
        if " on " not in line:
            tail = inst.log_path.read_text(errors="replace")[-2000:]
            name = f"{inst.service}-{inst.index}"
            raise RuntimeError(f"{name} did not start ({line.strip()!r}); its log:\n{tail}")
        return line.rsplit(" on ", 1)[1].split()[0]

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop every process (frontend first); returns each instance's exit code."""
        for stage in reversed(self.stages):
            for inst in stage:
                if inst.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        inst.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for inst in stage:
                try:
                    inst.exit_code = inst.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    inst.proc.kill()
                    inst.exit_code = inst.proc.wait()
                if inst.proc.stdout is not None:
                    inst.proc.stdout.close()
        if self.registry_proc is not None and self.registry_proc.poll() is None:
            self.registry_proc.send_signal(signal.SIGTERM)
            try:
                self.registry_proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.registry_proc.kill()
                self.registry_proc.wait()
        if self.registry_proc is not None and self.registry_proc.stdout is not None:
            self.registry_proc.stdout.close()
        return {f"{i.service}-{i.index}": i.exit_code for i in self.instances if i.exit_code is not None}


@contextlib.contextmanager
def launch(
    *, http_port: int = 0, http_host: str = "127.0.0.1", log_dir: Path | None = None, timeout: float = 30.0
) -> Iterator[Boutique]:
    """Start the boutique for the duration of the block; stop it (bounded) on the way out.

    Each process's log goes to ``log_dir`` (a new temporary directory by default).
    """
    if log_dir is None:
        shop = Boutique(http_host=http_host, http_port=http_port)
    else:
        shop = Boutique(http_host=http_host, http_port=http_port, log_dir=log_dir)
    shop.start(timeout)
    try:
        yield shop
    finally:
        shop.stop()
