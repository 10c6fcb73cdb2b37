"""The load generator: simulated shoppers with the traffic mix of the original Online Boutique.

Each user has its own cookie jar (so its own session and cart), opens the home
page, then until the time is up picks a task by weight: home 1, set currency 2,
browse a product 10, add to cart 2 (after viewing the product), view the cart 3,
check out 1 (add to cart, then place the order with a valid VISA number). A
request fails on a network error, a timeout or an HTTP status of 400 or more.

It also remembers what the shop should now hold: the order ids it was shown and,
per user, what its cart must contain (what it added since its last completed
checkout), which ``audit`` in ``report`` checks against the services.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from .data import load_products

__all__ = ("CURRENCIES", "ROUTES", "WEIGHTS", "LoadResult", "RouteStats", "UserRecord", "run_load")

CURRENCIES = ("EUR", "USD", "JPY", "CAD", "GBP", "TRY")
ROUTES = (
    "GET /",
    "POST /setCurrency",
    "GET /product/{id}",
    "POST /cart",
    "GET /cart",
    "POST /cart/checkout",
)
WEIGHTS = {
    "index": 1,
    "set_currency": 2,
    "browse_product": 10,
    "add_to_cart": 2,
    "view_cart": 3,
    "checkout": 1,
}
_ORDER_ID = re.compile(r'id="order-id">([0-9a-f-]{36})<')


@dataclass
class RouteStats:
    requests: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def percentile(self, q: float) -> float:
        """Latency in milliseconds at quantile ``q`` (nearest rank), NaN without requests."""
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3


@dataclass
class UserRecord:
    session_id: str = ""
    checkouts: int = 0
    expected_cart: dict[str, int] | None = field(default_factory=dict)
    """Product id -> quantity the cart must hold; ``None`` once a cart request failed (unknown)."""


@dataclass
class LoadResult:
    routes: dict[str, RouteStats] = field(default_factory=lambda: {r: RouteStats() for r in ROUTES})
    users: list[UserRecord] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.routes.values())

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.routes.values())

    @property
    def checkouts(self) -> int:
        """Checkouts that completed (the shop showed an order confirmation)."""
        return len(self.order_ids)


class _User:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        result: LoadResult,
        rng: random.Random,
        product_ids: list[str],
    ) -> None:
        self.base = base_url.rstrip("/")
        self.session = session
        self.result = result
        self.rng = rng
        self.product_ids = product_ids
        self.record = UserRecord()
        result.users.append(self.record)

    async def request(
        self, route: str, method: str, path: str, data: dict[str, str] | None = None
    ) -> str | None:
        """One request (redirects followed, as a browser would); the page on success, else None."""
        stats = self.result.routes[route]
        t0 = time.perf_counter()
        body: str | None = None
        try:
            async with self.session.request(method, self.base + path, data=data) as resp:
                text = await resp.text()
                if resp.status < 400:
                    body = text
                else:
                    stats.errors[f"HTTP {resp.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors[type(exc).__name__] += 1
        stats.latencies.append(time.perf_counter() - t0)
        stats.requests += 1
        if body is None:
            stats.failures += 1
        if not self.record.session_id:
            cookie = self.session.cookie_jar.filter_cookies(URL(self.base)).get("shop_session_id")
            self.record.session_id = cookie.value if cookie is not None else ""
        return body

    async def index(self) -> None:
        await self.request("GET /", "GET", "/")

    async def set_currency(self) -> None:
        code = self.rng.choice(CURRENCIES)
        await self.request("POST /setCurrency", "POST", "/setCurrency", {"currency_code": code})

    async def browse_product(self) -> None:
        await self.request("GET /product/{id}", "GET", f"/product/{self.rng.choice(self.product_ids)}")

    async def add_to_cart(self) -> None:
        product_id = self.rng.choice(self.product_ids)
        await self.request("GET /product/{id}", "GET", f"/product/{product_id}")
        form = {"product_id": product_id, "quantity": str(self.rng.randint(1, 10))}
        ok = await self.request("POST /cart", "POST", "/cart", form) is not None
        expected = self.record.expected_cart
        if not ok:
            self.record.expected_cart = None
        elif expected is not None:
            expected[product_id] = expected.get(product_id, 0) + int(form["quantity"])

    async def view_cart(self) -> None:
        await self.request("GET /cart", "GET", "/cart")

    async def checkout(self) -> None:
        await self.add_to_cart()
        year = datetime.date.today().year + self.rng.randint(1, 5)
        form = {
            "email": "someone@example.com",
            "street_address": "1600 Amphitheatre Parkway",
            "zip_code": "94043",
            "city": "Mountain View",
            "state": "CA",
            "country": "United States",
            "credit_card_number": "4432-8015-6152-0454",
            "credit_card_expiration_month": str(self.rng.randint(1, 12)),
            "credit_card_expiration_year": str(year),
            "credit_card_cvv": "672",
        }
        page = await self.request("POST /cart/checkout", "POST", "/cart/checkout", form)
        found = _ORDER_ID.search(page or "")
        if found is not None:
            self.result.order_ids.append(found.group(1))
            self.record.checkouts += 1
            self.record.expected_cart = {}
        else:
            self.record.expected_cart = None
            if page is not None:  # a 2xx page without an order is a failure too
                stats = self.result.routes["POST /cart/checkout"]
                stats.failures += 1
                stats.errors["no order id on the page"] += 1

    async def run(self, deadline: float) -> None:
        tasks: list[Callable[[], Awaitable[None]]] = [getattr(self, name) for name in WEIGHTS]
        weights = list(WEIGHTS.values())
        await self.index()
        while time.monotonic() < deadline:
            await self.rng.choices(tasks, weights)[0]()


async def run_load(
    base_url: str,
    *,
    users: int = 10,
    duration: float = 15.0,
    seed: int | None = None,
    request_timeout: float = 15.0,
    progress: Callable[[LoadResult], None] | None = None,
    progress_every: float = 0.5,
) -> LoadResult:
    """Drive ``users`` simulated shoppers against ``base_url`` for ``duration`` seconds."""
    result = LoadResult()
    master = random.Random(seed)
    product_ids = [p.id for p in load_products()]
    deadline = time.monotonic() + duration
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    connector = aiohttp.TCPConnector(limit=0)
    sessions = [
        aiohttp.ClientSession(
            connector=connector,
            connector_owner=False,
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # the shop is on an IP address
            timeout=timeout,
        )
        for _ in range(users)
    ]
    shoppers = [
        _User(base_url, s, result, random.Random(master.getrandbits(64)), product_ids) for s in sessions
    ]
    run = asyncio.gather(*(u.run(deadline) for u in shoppers))
    try:
        while not run.done():
            await asyncio.wait([run], timeout=progress_every)
            if progress is not None:
                progress(result)
        await run
    finally:
        if not run.done():  # interrupted: stop the shoppers before closing their sessions
            run.cancel()
            await asyncio.wait([run], timeout=5.0)
        if run.done() and not run.cancelled():
            run.exception()  # retrieved here; the normal path has raised it already
        for s in sessions:
            await s.close()
        await connector.close()
    result.seconds = time.monotonic() - result.started
    return result
