"""The boutique's parts one at a time: money, conversion, cards, and each service over loopback."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zmicro
from conftest import free_port
from zmicro.demo.boutique import money as mo
from zmicro.demo.boutique.ad import AdService
from zmicro.demo.boutique.cards import CardError, card_brand, is_expired, luhn_valid, validate_card
from zmicro.demo.boutique.cart import CartService
from zmicro.demo.boutique.catalog import ProductCatalog
from zmicro.demo.boutique.checkout import ORDER_PLACED, Checkout
from zmicro.demo.boutique.currency import Currency
from zmicro.demo.boutique.data import load_products, load_rates
from zmicro.demo.boutique.emails import EmailService, render_confirmation
from zmicro.demo.boutique.model import (
    Address,
    Cart,
    CartItem,
    CreditCard,
    Order,
    OrderItem,
    OrderPlaced,
    Product,
)
from zmicro.demo.boutique.money import Money
from zmicro.demo.boutique.payment import Payment
from zmicro.demo.boutique.recommendation import Recommendation
from zmicro.demo.boutique.shipping import Shipping, quote_for
from zmicro.demo.boutique.templates import PageContext, home_page
from zmicro.demo.boutique.wiring import ENV_VAR, convert, format_static, static_endpoints

Start = Callable[..., Awaitable[zmicro.Server]]
Connect = Callable[..., Awaitable[zmicro.Client]]

RATES = load_rates()
amounts = st.integers(min_value=-(10**15), max_value=10**15)
codes = st.sampled_from(sorted(RATES))

# -- money -------------------------------------------------------------------------


def test_nanos_carry_into_units() -> None:
    assert mo.add(Money("USD", 0, 600_000_000), Money("USD", 0, 600_000_000)) == Money("USD", 1, 200_000_000)
    assert mo.add(Money("USD", -0, -600_000_000), Money("USD", 0, -600_000_000)) == Money(
        "USD", -1, -200_000_000
    )
    assert mo.add(Money("USD", 1, 200_000_000), Money("USD", 0, -500_000_000)) == Money("USD", 0, 700_000_000)
    assert mo.add(Money("USD", -1, -200_000_000), Money("USD", 0, 500_000_000)) == Money(
        "USD", 0, -700_000_000
    )
    assert mo.add(Money("USD", 2, 0), Money("USD", -3, -500_000_000)) == Money("USD", -1, -500_000_000)
    assert mo.multiply(Money("USD", 19, 990_000_000), 10) == Money("USD", 199, 900_000_000)
    assert mo.multiply(Money("USD", 19, 990_000_000), -3) == Money("USD", -59, -970_000_000)
    assert mo.sum_money("EUR", []) == Money("EUR", 0, 0)
    assert mo.negate(Money("EUR", 5, 1)) == Money("EUR", -5, -1)


def test_invalid_amounts_and_mixed_currencies_are_refused() -> None:
    assert not mo.is_valid(Money("USD", 1, -1))
    assert not mo.is_valid(Money("USD", -1, 1))
    assert not mo.is_valid(Money("USD", 0, 1_000_000_000))
    assert mo.is_valid(Money("USD", 0, -5)) and mo.is_valid(Money("USD", -5, 0))
    with pytest.raises(mo.MoneyError, match="sign"):
        mo.to_nanos(Money("USD", 1, -1))
    with pytest.raises(mo.MoneyError, match="cannot add USD and EUR"):
        mo.add(Money("USD", 1, 0), Money("EUR", 1, 0))
    with pytest.raises(mo.MoneyError, match="unsupported currency 'XXX'"):
        mo.convert(Money("USD", 1, 0), "XXX", RATES)
    with pytest.raises(mo.MoneyError, match="positive"):
        mo.parse_rates({"EUR": "1.0", "BAD": "0"})


@given(amounts, amounts)
def test_arithmetic_is_exact_and_always_valid(a: int, b: int) -> None:
    ma, mb = mo.from_nanos("USD", a), mo.from_nanos("USD", b)
    assert mo.is_valid(ma) and mo.to_nanos(ma) == a
    total = mo.add(ma, mb)
    assert mo.is_valid(total) and mo.to_nanos(total) == a + b
    assert mo.to_nanos(mo.multiply(ma, 7)) == 7 * a


def test_conversion_goes_through_eur_with_the_tables_rates() -> None:
    assert RATES["USD"] == Fraction("1.1305") and RATES["EUR"] == 1
    assert mo.convert(Money("EUR", 1, 0), "USD", RATES) == Money("USD", 1, 130_500_000)
    assert mo.convert(Money("USD", 1, 130_500_000), "EUR", RATES) == Money("EUR", 1, 0)
    # 19.99 USD in JPY: 19.99 / 1.1305 * 126.40 = 2235.0605926581..., rounded to the nano
    assert mo.convert(Money("USD", 19, 990_000_000), "JPY", RATES) == Money("JPY", 2235, 60_592_658)
    exact = Fraction(19_990_000_000) * Fraction("126.40") / Fraction("1.1305")
    assert abs(exact - mo.to_nanos(mo.convert(Money("USD", 19, 990_000_000), "JPY", RATES))) <= Fraction(1, 2)
    assert mo.convert(Money("GBP", 3, 5), "GBP", RATES) == Money("GBP", 3, 5)


def test_conversion_rounds_halves_away_from_zero() -> None:
    rates = {"AAA": Fraction(1), "BBB": Fraction(1, 2)}
    assert mo.convert(Money("AAA", 0, 1), "BBB", rates) == Money("BBB", 0, 1)  # 0.5 nano -> 1
    assert mo.convert(Money("AAA", 0, -1), "BBB", rates) == Money("BBB", 0, -1)
    assert mo.convert(Money("AAA", 0, 3), "BBB", rates) == Money("BBB", 0, 2)  # 1.5 -> 2


@given(amounts, codes, codes)
def test_conversion_is_symmetric_in_sign_and_valid(nanos: int, src: str, dst: str) -> None:
    m = mo.from_nanos(src, nanos)
    out = mo.convert(m, dst, RATES)
    assert out.currency_code == dst and mo.is_valid(out)
    assert mo.convert(mo.negate(m), dst, RATES) == mo.negate(out)
    exact = Fraction(nanos) * RATES[dst] / RATES[src]
    assert abs(exact - mo.to_nanos(out)) <= Fraction(1, 2)


def test_format_money() -> None:
    assert mo.format_money(Money("USD", 1234, 560_000_000)) == "$1,234.56"
    assert mo.format_money(Money("EUR", 0, 999_999_999)) == "€0.99"
    assert mo.format_money(Money("EUR", -2, -50_000_000)) == "-€2.05"
    assert mo.format_money(Money("CHF", 3, 0)) == "CHF 3.00"


def test_data_files_decode() -> None:
    products = load_products()
    assert len(products) == 9 and len({p.id for p in products}) == 9
    assert all(p.price_usd.currency_code == "USD" and mo.is_valid(p.price_usd) for p in products)
    assert len(RATES) == 33


# -- cards -------------------------------------------------------------------------

TODAY = datetime.date(2026, 6, 15)


def test_luhn() -> None:
    assert luhn_valid("4432801561520454")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4432801561520455")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4432x01561520454")


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4111111111111111", "visa"),
        ("4222222222222", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("3530111333300000", "jcb"),
        ("1234567812345678", None),
    ],
)
def test_card_brand(number: str, brand: str | None) -> None:
    assert card_brand(number) == brand


def test_expiry_is_the_end_of_the_month() -> None:
    assert not is_expired(6, 2026, TODAY)
    assert is_expired(5, 2026, TODAY)
    assert is_expired(12, 2025, TODAY)
    assert not is_expired(1, 2027, TODAY)


def test_validate_card() -> None:
    info = validate_card("4432-8015-6152-0454", 1, 2030, 672, TODAY)
    assert (info.brand, info.last_four) == ("visa", "0454")
    assert validate_card("5555 5555 5555 4444", 6, 2026, 123, TODAY).brand == "mastercard"
    cases = [
        ("4432-8015-6152-0455", 1, 2030, "checksum"),
        ("378282246310005", 1, 2030, "amex is not accepted"),
        ("6011111111111117", 1, 2030, "discover is not accepted"),
        ("4111111111111111", 5, 2026, "expired in 05/2026"),
        ("4111111111111111", 13, 2030, "month"),
        ("4111-1111-1111-111a", 1, 2030, "only digits"),
        ("4111", 1, 2030, "digits"),
    ]
    for number, month, year, message in cases:
        with pytest.raises(CardError, match=message):
            validate_card(number, month, year, 123, TODAY)


# -- services over loopback -----------------------------------------------------------


async def test_currency_service(zmicro_server: Start, zmicro_client: Connect) -> None:
    server = await zmicro_server(Currency())
    client = await zmicro_client(server.endpoint)
    assert (await client.currency.supported_currencies())[:3] == ["EUR", "USD", "JPY"]
    out = await client.currency.convert(money=Money("USD", 19, 990_000_000), to_code="JPY")
    assert convert(out, Money) == Money("JPY", 2235, 60_592_658)
    with pytest.raises(zmicro.InvalidArgumentError, match="unsupported currency 'XXX'") as info:
        await client.currency.convert(money=Money("USD", 1, 0), to_code="XXX")
    assert info.value.field == "to_code"
    with pytest.raises(zmicro.InvalidArgumentError, match="sign"):
        await client.currency.convert(money=Money("USD", 1, -5), to_code="EUR")
    with pytest.raises(zmicro.InvalidArgumentError):
        await client.currency.convert(
            money={"currencyCode": "USD", "units": 1, "nanos": 10**9}, to_code="EUR"
        )


async def test_payment_service(zmicro_server: Start, zmicro_client: Connect) -> None:
    server = await zmicro_server(Payment())
    client = await zmicro_client(server.endpoint)
    year = datetime.date.today().year + 1
    good = CreditCard("4432801561520454", 672, year, 1)
    tx = await client.payment.charge(amount=Money("USD", 10, 0), credit_card=good)
    assert isinstance(tx, str) and len(tx) == 36
    bad = [
        (CreditCard("4432801561520455", 672, year, 1), "checksum"),
        (CreditCard("378282246310005", 672, year, 1), "amex"),
        (CreditCard("4432801561520454", 672, 2001, 1), "expired"),
    ]
    for card, message in bad:
        with pytest.raises(zmicro.InvalidArgumentError, match=message) as info:
            await client.payment.charge(amount=Money("USD", 10, 0), credit_card=card)
        assert info.value.field == "credit_card"
    with pytest.raises(zmicro.InvalidArgumentError, match="positive"):
        await client.payment.charge(amount=Money("USD", 0, 0), credit_card=good)


async def test_catalog_cart_shipping_ad_recommendation(
    zmicro_server: Start, zmicro_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaves = await zmicro_server(ProductCatalog(), CartService(), Shipping(), AdService())
    monkeypatch.setenv(ENV_VAR, f"productcatalog={leaves.endpoint}")
    recs = await zmicro_server(Recommendation())
    endpoints = dict.fromkeys(("productcatalog", "cart", "shipping", "ad"), leaves.endpoint)
    client = await zmicro_client({"recommendation": recs.endpoint, **endpoints})

    assert len(await client.productcatalog.list_products()) == 9
    assert convert(await client.productcatalog.get_product(id="1YMWWN1N4O"), Product).name == "Watch"
    with pytest.raises(zmicro.InvalidArgumentError, match="no product") as info:
        await client.productcatalog.get_product(id="NOPE")
    assert info.value.field == "id"
    names = [p["name"] for p in await client.productcatalog.search_products(query="MUG")]
    assert names == ["Mug"]
    found = await client.productcatalog.search_products(query="GLASS")
    assert {p["name"] for p in found} == {"Bamboo Glass Jar", "Sunglasses"}
    found = await client.productcatalog.search_products(query="Aviator")  # in the description only
    assert [p["name"] for p in found] == ["Sunglasses"]
    assert await client.productcatalog.search_products(query="nothing like it") == []

    await client.cart.add_item(user_id="u1", product_id="A", quantity=2)
    await client.cart.add_item(user_id="u1", product_id="A", quantity=3)
    await client.cart.add_item(user_id="u1", product_id="B", quantity=1)
    cart = convert(await client.cart.get_cart(user_id="u1"), Cart)
    assert cart.items == [CartItem("A", 5), CartItem("B", 1)]
    with pytest.raises(zmicro.InvalidArgumentError):
        await client.cart.add_item(user_id="u1", product_id="A", quantity=0)
    await client.cart.empty_cart(user_id="u1")
    assert convert(await client.cart.get_cart(user_id="u1"), Cart).items == []

    address = Address("1 Main St", "Springfield", "IL", "US", "62701")
    quote = convert(await client.shipping.get_quote(address=address, items=[CartItem("A", 2)]), Money)
    assert quote == Money("USD", 8, 990_000_000)
    assert quote_for([]) == Money("USD", 0, 0)
    assert quote_for([CartItem("A", 12)]) == Money("USD", 9, 990_000_000)
    tracking = await client.shipping.ship_order(address=address, items=[CartItem("A", 2)])
    assert len(tracking) == 14 and tracking[2] == "-"

    ads = await client.ad.get_ads(context_keys=["kitchen", "kitchen"])
    assert [a["redirect_url"] for a in ads] == ["/product/9SIQT8TOJO", "/product/6E92ZMYYFZ"]
    assert len(await client.ad.get_ads(context_keys=["no-such-category"])) == 1

    in_view = ["OLJCESPC7Z", "66VCHSJNUP"]
    recommended = await client.recommendation.list_recommendations(user_id="u1", product_ids=in_view)
    assert len(recommended) == 5 and not set(recommended) & set(in_view)
    assert len(set(recommended)) == 5


def test_wiring_reads_the_static_map() -> None:
    text = "productcatalog=tcp://127.0.0.1:1,tcp://127.0.0.1:2;cart=tcp://127.0.0.1:3"
    assert static_endpoints(text) == {
        "productcatalog": ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"],
        "cart": ["tcp://127.0.0.1:3"],
    }
    assert format_static(static_endpoints(text)) == text


def test_pages_escape_what_they_show() -> None:
    evil = Product("X1", "<script>alert(1)</script>", "d", "/p.jpg", Money("USD", 1, 0), ["c"])
    page = home_page(PageContext("USD", ["USD", "EUR"], 0), [(evil, evil.price_usd)])
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- checkout with the other services replaced -----------------------------------------


class FakeCart(zmicro.Service):
    name = "cart"

    def __init__(self) -> None:
        self.items: dict[str, list[CartItem]] = {"alice": [CartItem("P1", 2), CartItem("P2", 1)]}

    @zmicro.rpc
    async def get_cart(self, user_id: str) -> Cart:
        return Cart(user_id, self.items.get(user_id, []))

    @zmicro.rpc
    async def empty_cart(self, user_id: str) -> None:
        self.items.pop(user_id, None)


class FakeCatalog(zmicro.Service):
    name = "productcatalog"
    prices: ClassVar[dict[str, Money]] = {
        "P1": Money("USD", 10, 500_000_000),
        "P2": Money("USD", 0, 700_000_000),
    }

    @zmicro.rpc
    async def get_product(self, id: str) -> Product:
        return Product(id, f"Product {id}", "", "", self.prices[id], [])


class FakeCurrency(zmicro.Service):
    """Doubles every amount (a made-up rate that makes the expected totals easy to see)."""

    name = "currency"

    @zmicro.rpc
    async def convert(self, money: Money, to_code: str) -> Money:
        return mo.from_nanos(to_code, 2 * mo.to_nanos(money))


class FakeShipping(zmicro.Service):
    name = "shipping"

    def __init__(self) -> None:
        self.shipped: list[list[CartItem]] = []

    @zmicro.rpc
    async def get_quote(self, address: Address, items: list[CartItem]) -> Money:
        return Money("USD", 5, 0)

    @zmicro.rpc
    async def ship_order(self, address: Address, items: list[CartItem]) -> str:
        self.shipped.append(items)
        return "TR-12345-67890"


class FakePayment(zmicro.Service):
    name = "payment"

    def __init__(self) -> None:
        self.charged: list[Money] = []

    @zmicro.rpc
    async def charge(self, amount: Money, credit_card: CreditCard) -> str:
        if credit_card.number == "declined":
            raise zmicro.InvalidArgumentError("card declined: test", details={"field": "credit_card"})
        self.charged.append(amount)
        return "tx-1"


class FakeEmail(zmicro.Service):
    name = "email"

    def __init__(self) -> None:
        self.events: list[OrderPlaced] = []

    @zmicro.event_handler(ORDER_PLACED)
    async def order_placed(self, event: OrderPlaced) -> None:
        self.events.append(event)


ADDRESS = Address("1 Main St", "Springfield", "IL", "US", "62701")


async def _checkout_with_fakes(
    zmicro_server: Start, zmicro_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> tuple[zmicro.Client, dict[str, Any]]:
    fakes: dict[str, Any] = {
        "cart": FakeCart(), "productcatalog": FakeCatalog(), "currency": FakeCurrency(),
        "shipping": FakeShipping(), "payment": FakePayment(), "email": FakeEmail(),
    }  # fmt: skip
    checkout_endpoint = f"tcp://127.0.0.1:{free_port()}"
    # The fake email service subscribes to the checkout's events, as the real one does.
    backends = await zmicro_server(*fakes.values(), event_sources=[checkout_endpoint])
    monkeypatch.setenv(ENV_VAR, format_static({name: [backends.endpoint] for name in fakes}))
    checkout = Checkout()
    server = await zmicro_server(checkout, bind=checkout_endpoint)
    await checkout.events.wait_ready(10, expect={"email": 1})
    return await zmicro_client(server.endpoint), fakes


async def test_checkout_places_the_order(
    zmicro_server: Start, zmicro_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, fakes = await _checkout_with_fakes(zmicro_server, zmicro_client, monkeypatch)
    card = CreditCard("4432801561520454", 672, 2099, 1)
    raw = await client.checkout.place_order(
        user_id="alice", user_currency="EUR", address=ADDRESS, email="a@example.com", credit_card=card
    )
    order = convert(raw, Order)
    # prices doubled by the fake currency: P1 21.00 x2, P2 1.40 x1, shipping 10.00
    assert order.items == [
        OrderItem(CartItem("P1", 2), Money("EUR", 21, 0)),
        OrderItem(CartItem("P2", 1), Money("EUR", 1, 400_000_000)),
    ]
    assert order.shipping_cost == Money("EUR", 10, 0)
    assert order.total == Money("EUR", 53, 400_000_000)
    assert order.shipping_tracking_id == "TR-12345-67890"
    assert fakes["payment"].charged == [order.total]
    assert fakes["shipping"].shipped == [[CartItem("P1", 2), CartItem("P2", 1)]]
    assert "alice" not in fakes["cart"].items
    assert fakes["email"].events == [OrderPlaced("a@example.com", "alice", order)]
    log = await client.checkout.order_log()
    assert log["placed"] == 1 and log["recent"] == [{"order_id": order.order_id, "user_id": "alice"}]
    assert await client.checkout.find_orders(order_ids=["nope", order.order_id]) == log["recent"]
    assert (await client.checkout.order_log(limit=0))["recent"] == []
    with pytest.raises(zmicro.InvalidArgumentError):
        await client.checkout.find_orders(order_ids=["x"] * 1001)
    assert "53.40" in render_confirmation(fakes["email"].events[0])


async def test_checkout_refuses_empty_carts_and_declined_cards(
    zmicro_server: Start, zmicro_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, fakes = await _checkout_with_fakes(zmicro_server, zmicro_client, monkeypatch)
    args: dict[str, Any] = {"user_currency": "EUR", "address": ADDRESS, "email": "a@example.com"}
    with pytest.raises(zmicro.InvalidArgumentError, match="cart is empty"):
        await client.checkout.place_order(user_id="bob", credit_card=CreditCard("4111", 1, 2099, 1), **args)
    with pytest.raises(zmicro.InvalidArgumentError, match="card declined"):
        await client.checkout.place_order(
            user_id="alice", credit_card=CreditCard("declined", 1, 2099, 1), **args
        )
    # Nothing happened: no charge, no shipment, the cart is intact, no email, no order.
    assert fakes["payment"].charged == [] and fakes["shipping"].shipped == []
    assert len(fakes["cart"].items["alice"]) == 2 and fakes["email"].events == []
    assert (await client.checkout.order_log())["placed"] == 0


async def test_email_sends_once_per_order(
    zmicro_server: Start, zmicro_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("ZMICRO_STATIC", f"zmicro.queue={endpoint}")  # the email service's own client
    email = EmailService()
    server = await zmicro_server(zmicro.TaskQueue(":memory:"), email, bind=endpoint)
    client = await zmicro_client(server.endpoint)
    lines = [OrderItem(CartItem("P1", 2), Money("USD", 1, 500_000_000))]
    order = Order("o-1", "TR-1", Money("USD", 8, 990_000_000), ADDRESS, lines, Money("USD", 11, 990_000_000))
    event = OrderPlaced("a@example.com", "alice", order)
    await email.on_order_placed(event)  # the event handler queues a task; the worker pool sends it
    async with asyncio.timeout(10):
        while (await client.email.sent_confirmations())["total"] < 1:
            await asyncio.sleep(0.05)
    email.send_confirmation(event)  # a repeated delivery from the at-least-once queue
    sent = await client.email.sent_confirmations()
    assert sent == {"total": 1, "duplicates": 1}
    assert await client.email.confirmed(order_ids=["o-2", "o-1"]) == ["o-1"]
    text = render_confirmation(event)
    assert "To: a@example.com" in text and "o-1" in text and "$11.99" in text and "$3.00" in text
