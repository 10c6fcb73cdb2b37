"""Instances from DNS SRV records: what Kubernetes headless services and Consul serve.

A service ``cart`` is looked up as ``_cart._tcp.<domain>`` (the name template is an
option: Kubernetes names ports, so there it is ``_<port>._tcp.cart.<ns>.svc.cluster.local``).
Each SRV answer's target is resolved to addresses and becomes ``tcp://ADDRESS:PORT``.
Records are managed by the platform, so ``register`` and ``deregister`` do nothing here;
the records are polled (``poll_interval``) and watchers hear of every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from .._errors import ConfigurationError
from .._ratelog import RateLimitedLog
from ._base import Instance, Registry, Watcher

__all__ = ("DnsSrvRegistry",)

log = logging.getLogger("zmicro.registry")


class DnsSrvRegistry(Registry):
    def __init__(
        self,
        domain: str,
        *,
        nameserver: str | None = None,
        port: int = 53,
        template: str = "_{service}._tcp.{domain}",
        poll_interval: float = 1.0,
        services: list[str] | None = None,
    ) -> None:
        self.domain = domain.strip(".")
        self.template = template
        self.poll_interval = poll_interval
        self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self._resolver.nameservers = [nameserver]
            self._resolver.port = port
        self._resolver.lifetime = 2.0
        self._services: set[str] = set(services or ())
        self._current: dict[str, list[Instance]] = {}
        self._watchers: list[Watcher] = []
        self._poller: asyncio.Task[None] | None = None
        self._ratelog = RateLimitedLog(log)

    @classmethod
    def from_url(cls, url: str) -> DnsSrvRegistry:
        """``dns:DOMAIN`` or ``dns:DOMAIN@NAMESERVER[:PORT]``."""
        spec = url.removeprefix("dns:")
        domain, _, server = spec.partition("@")
        if not domain:
            raise ConfigurationError(f"{url!r}: expected dns:DOMAIN[@NAMESERVER[:PORT]]")
        if not server:
            return cls(domain)
        host, _, port = server.partition(":")
        return cls(domain, nameserver=host, port=int(port or 53))

    def srv_name(self, service: str) -> str:
        return self.template.format(service=service, domain=self.domain)

    async def resolve(self, service: str) -> list[Instance]:
        """Query SRV then A/AAAA records for ``service``; an empty list when it has none."""
        try:
            answer = await self._resolver.resolve(self.srv_name(service), "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        out: list[Instance] = []
        for rr in sorted(answer, key=lambda r: (r.priority, -r.weight, str(r.target), r.port)):
            target = str(rr.target).rstrip(".")
            for addr in await self._addresses(target):
                host = f"[{addr}]" if ":" in addr else addr
                endpoint = f"tcp://{host}:{rr.port}"
                out.append(Instance(service, f"{service}@{target}:{rr.port}/{addr}", endpoint))
        return out

    async def _addresses(self, target: str) -> list[str]:
        addrs: list[str] = []
        failure: dns.exception.DNSException | None = None
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(target, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                failure = exc  # some servers refuse AAAA outright; the A answer may still do
                continue
            addrs.extend(sorted(r.address for r in answer))
        if not addrs and failure is not None:
            raise failure
        return addrs

    async def register(self, instance: Instance) -> None:
        log.debug("DNS records are managed outside zmicro; not registering %s", instance.instance_id)

    async def deregister(self, instance: Instance) -> None:
        log.debug("DNS records are managed outside zmicro; not deregistering %s", instance.instance_id)

    async def instances(self) -> list[Instance]:
        if self._poller is None:
            await self._refresh()
        return [i for insts in self._current.values() for i in insts]

    async def lookup(self, service: str) -> list[Instance]:
        if service not in self._services:
            self._services.add(service)
            self._current[service] = await self.resolve(service)
            self._notify()
        return list(self._current.get(service, ()))

    def watch(self, callback: Watcher) -> Callable[[], None]:
        self._watchers.append(callback)
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    def want(self, service: str) -> None:
        """Start polling ``service`` too (a DNS zone cannot be listed; names must be asked for)."""
        if service not in self._services:
            self._services.add(service)
            if self._poller is not None:
                self._poller.cancel()
                self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def _refresh(self) -> bool:
        changed = False
        for service in sorted(self._services):
            try:
                found = await self.resolve(service)
            except dns.exception.DNSException as exc:
                self._ratelog.warning(f"dns:{service}", f"SRV lookup for {service} failed: {exc}")
                continue  # keep the last known answer through a DNS hiccup
            if found != self._current.get(service):
                self._current[service] = found
                changed = True
        return changed

    async def _poll_forever(self) -> None:
        await self._refresh()
        self._notify()
        while True:
            await asyncio.sleep(self.poll_interval * random.uniform(0.9, 1.1))
            if await self._refresh():
                self._notify()

    def _notify(self) -> None:
        snapshot = [i for insts in self._current.values() for i in insts]
        for cb in list(self._watchers):
            cb(snapshot)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
