"""The whole boutique, as ``zmicro demo`` starts it: twelve processes, HTTP in front, load through it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

import zmicro
from zmicro.demo.boutique.demo import wait_for_confirmations
from zmicro.demo.boutique.launcher import Boutique, launch
from zmicro.demo.boutique.loadgen import run_load
from zmicro.demo.boutique.model import Cart
from zmicro.demo.boutique.report import audit
from zmicro.demo.boutique.wiring import convert, make_client
from zmicro.discovery._embedded import EmbeddedRegistry

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHECKOUT_FORM = {
    "email": "someone@example.com",
    "street_address": "1600 Amphitheatre Parkway",
    "zip_code": "94043",
    "city": "Mountain View",
    "state": "CA",
    "country": "United States",
    "credit_card_number": "4432-8015-6152-0454",
    "credit_card_expiration_month": "1",
    "credit_card_expiration_year": "2099",
    "credit_card_cvv": "672",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boutique]:
    with launch(log_dir=tmp_path_factory.mktemp("boutique-logs")) as running:
        yield running
    codes = {f"{i.service}-{i.index}": i.exit_code for i in running.instances}
    assert set(codes.values()) == {0}, codes


@pytest.fixture
async def client(shop: Boutique) -> AsyncIterator[zmicro.Client]:
    c = make_client(env={"ZMICRO_REGISTRY": shop.registry_url})  # every service by name
    yield c
    await c.aclose()


@pytest.fixture
async def browser(shop: Boutique) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=shop.url, cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=15)
    ) as session:
        yield session


async def test_every_service_is_registered_with_its_instances(shop: Boutique) -> None:
    assert len(shop.endpoints["productcatalog"]) == 2
    assert len(shop.endpoints["currency"]) == 2
    leaves = {"productcatalog", "currency", "cart", "shipping", "payment", "email", "ad"}
    expected = leaves | {"recommendation", "checkout", "frontend", "zmicro.queue"}
    assert set(shop.endpoints) == expected
    assert shop.url.startswith("http://127.0.0.1:")
    registry = EmbeddedRegistry(shop.registry_url)
    try:
        listed = await registry.instances()
    finally:
        await registry.aclose()
    by_service = Counter(i.service for i in listed)
    assert by_service == {name: len(eps) for name, eps in shop.endpoints.items()}


async def test_short_load_is_clean_and_consistent(shop: Boutique, client: zmicro.Client) -> None:
    orders_before = int((await client.checkout.order_log())["placed"])
    sent_before = int((await client.email.sent_confirmations())["total"])
    result = await run_load(shop.url, users=6, duration=5.0, seed=7)
    assert result.requests > 50
    assert result.failures == 0, {name: dict(r.errors) for name, r in result.routes.items() if r.errors}
    assert all(r.requests > 0 for r in result.routes.values()), {
        n: r.requests for n, r in result.routes.items()
    }
    assert result.checkouts > 0
    await wait_for_confirmations(client)  # sent by queue workers, after the orders
    checked = await audit(client, result, orders_before)
    assert checked.problems == []
    assert checked.orders_placed == result.checkouts
    assert checked.confirmations == result.checkouts
    sent = await client.email.sent_confirmations()
    assert sent["total"] - sent_before == result.checkouts and sent["duplicates"] == 0
    # Every user who checked out holds exactly what it added after its last checkout.
    assert checked.carts_checked == sum(1 for u in result.users if u.checkouts) > 0
    for user in result.users:
        if user.checkouts:
            assert user.expected_cart is not None
            cart = convert(await client.cart.get_cart(user_id=user.session_id), Cart)
            assert {i.product_id: i.quantity for i in cart.items} == user.expected_cart


async def test_checkout_empties_the_cart_and_sends_one_email(
    shop: Boutique, browser: aiohttp.ClientSession, client: zmicro.Client
) -> None:
    async with browser.get("/") as resp:
        assert resp.status == 200
    session_id = browser.cookie_jar.filter_cookies(URL(shop.url)).get("shop_session_id")
    assert session_id is not None
    user = session_id.value
    async with browser.post("/cart", data={"product_id": "66VCHSJNUP", "quantity": "3"}) as resp:
        assert resp.status == 200 and resp.url.path == "/cart"
        assert "Tank Top" in await resp.text()
    cart = convert(await client.cart.get_cart(user_id=user), Cart)
    assert [(i.product_id, i.quantity) for i in cart.items] == [("66VCHSJNUP", 3)]
    async with browser.post("/cart/checkout", data=CHECKOUT_FORM) as resp:
        page = await resp.text()
        assert resp.status == 200, page
    found = re.search(r'id="order-id">([0-9a-f-]{36})<', page)
    assert found is not None
    order_id = found.group(1)
    assert re.search(r'id="tracking-id">[A-Z]{2}-\d{5}-\d{5}<', page)
    assert 'id="order-total">$65.96<' in page  # 3 x 18.99 + 8.99 shipping
    assert convert(await client.cart.get_cart(user_id=user), Cart).items == []
    await wait_for_confirmations(client)
    assert await client.email.confirmed(order_ids=[order_id, "not-an-order"]) == [order_id]
    assert (await client.email.sent_confirmations())["duplicates"] == 0
    placed = [{"order_id": order_id, "user_id": user}]
    assert await client.checkout.find_orders(order_ids=[order_id]) == placed
    assert (await client.checkout.order_log(limit=1))["recent"] == placed


async def test_currency_is_per_session(browser: aiohttp.ClientSession) -> None:
    async with browser.get("/") as resp:
        assert "$19.99" in await resp.text()
    back_to = {"Referer": "/product/OLJCESPC7Z"}
    async with browser.post("/setCurrency", data={"currency_code": "JPY"}, headers=back_to) as resp:
        assert resp.status == 200 and resp.url.path == "/product/OLJCESPC7Z"
        assert "¥2,235.06" in await resp.text()
    async with browser.get("/logout") as resp:
        assert resp.status == 200 and "$19.99" in await resp.text()


@pytest.mark.parametrize(
    ("method", "path", "form", "status", "message"),
    [
        ("GET", "/product/NOPE", None, 404, "no product"),
        ("GET", "/no/such/page", None, 404, "Not Found"),
        ("GET", "/cart/checkout", None, 405, "Method"),
        ("POST", "/cart", {"product_id": "NOPE", "quantity": "1"}, 404, "no product"),
        ("POST", "/cart", {"product_id": "66VCHSJNUP", "quantity": "eleven"}, 400, "whole number"),
        ("POST", "/cart", {"product_id": "66VCHSJNUP", "quantity": "0"}, 400, "between 1 and 10"),
        ("POST", "/cart", {"quantity": "1"}, 400, "product_id"),
        ("POST", "/setCurrency", {"currency_code": "XXX"}, 400, "not a supported currency"),
        ("POST", "/setCurrency", {}, 400, "currency_code"),
        ("POST", "/cart/checkout", {**CHECKOUT_FORM, "email": "nobody"}, 400, "e-mail"),
        ("POST", "/cart/checkout", {**CHECKOUT_FORM, "credit_card_cvv": "abc"}, 400, "whole number"),
        ("POST", "/cart/checkout", {**CHECKOUT_FORM, "credit_card_expiration_month": "13"}, 400, "1 and 12"),
        ("POST", "/cart/checkout", {k: v for k, v in CHECKOUT_FORM.items() if k != "city"}, 400, "city"),
    ],
)
async def test_bad_input_gets_a_4xx_page(
    browser: aiohttp.ClientSession,
    method: str,
    path: str,
    form: dict[str, str] | None,
    status: int,
    message: str,
) -> None:
    async with browser.request(method, path, data=form) as resp:
        page = await resp.text()
    assert resp.status == status, page
    assert "<html" in page and message.lower() in page.lower()


@pytest.mark.parametrize(
    ("number", "month", "year", "message"),
    [
        ("4432-8015-6152-0455", "1", "2099", "checksum"),
        ("3714-496353-98431", "1", "2099", "amex is not accepted"),  # a valid AmEx number
        ("4432-8015-6152-0454", "1", "2020", "expired"),
        ("4432 8015 6152 045x", "1", "2099", "only digits"),
    ],
)
async def test_bad_cards_are_declined_with_a_4xx_page_and_keep_the_cart(
    browser: aiohttp.ClientSession, client: zmicro.Client, number: str, month: str, year: str, message: str
) -> None:
    async with browser.post("/cart", data={"product_id": "9SIQT8TOJO", "quantity": "1"}) as resp:
        assert resp.status == 200
    form = {
        **CHECKOUT_FORM,
        "credit_card_number": number,
        "credit_card_expiration_month": month,
        "credit_card_expiration_year": year,
    }
    async with browser.post("/cart/checkout", data=form) as resp:
        page = await resp.text()
    assert resp.status == 400, page
    assert "card declined" in page and message in page
    async with browser.get("/cart") as resp:
        assert "Bamboo Glass Jar" in await resp.text()  # nothing was charged, so nothing was emptied


async def test_checkout_with_an_empty_cart_is_a_4xx(browser: aiohttp.ClientSession) -> None:
    async with browser.post("/cart/checkout", data=CHECKOUT_FORM) as resp:
        assert resp.status == 400
        assert "empty" in await resp.text()


def test_zmicro_demo_command_runs_clean() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "zmicro", "demo", "--users", "4", "--duration", "3"],
        capture_output=True, text=True, timeout=100, cwd=ROOT, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for text in ("HTTP routes", "GET /product/{id}", "POST /cart/checkout", "Internal RPC", "productcatalog",
                 "demo OK", "zero failures"):  # fmt: skip
        assert text in r.stdout, r.stdout
