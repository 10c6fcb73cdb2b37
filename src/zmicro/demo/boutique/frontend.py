"""The web shop: an aiohttp application inside a zmicro service, calling the others by name.

Running it as a service gives it the same lifecycle as the rest (``zmicro run``,
bounded shutdown on SIGTERM, live counters) and one RPC, ``http_url``, through
which the launcher learns where the shop listens. The HTTP address comes from
``ZMICRO_BOUTIQUE_HTTP`` (``host:port``; port 0 picks a free one).

A session is a random id in the ``shop_session_id`` cookie, set on the first
visit; it is also the user id of the cart. The currency is in ``shop_currency``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDictProxy

import zmicro

from . import templates as t
from .model import Ad, Address, Cart, CreditCard, Order, Product
from .money import Money, add, multiply, sum_money
from .wiring import convert, make_client

__all__ = ("HTTP_ENV_VAR", "Frontend", "Shop", "make_app")

log = logging.getLogger("zmicro.demo.boutique.frontend")

HTTP_ENV_VAR = "ZMICRO_BOUTIQUE_HTTP"
SESSION_COOKIE = "shop_session_id"
CURRENCY_COOKIE = "shop_currency"
DEFAULT_CURRENCY = "USD"
_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")
_NO_ADDRESS = Address("", "", "", "", "")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Shop:
    """The calls the pages make, typed: one method per remote method the frontend uses."""

    def __init__(self, client: zmicro.Client) -> None:
        self.c = client

    async def currencies(self) -> list[str]:
        return convert(await self.c.currency.supported_currencies(), list[str])

    async def convert(self, money: Money, to_code: str) -> Money:
        if money.currency_code == to_code:
            return money
        return convert(await self.c.currency.convert(money=money, to_code=to_code), Money)

    async def products(self) -> list[Product]:
        return convert(await self.c.productcatalog.list_products(), list[Product])

    async def product(self, product_id: str) -> Product:
        try:
            return convert(await self.c.productcatalog.get_product(id=product_id), Product)
        except zmicro.InvalidArgumentError:
            raise web.HTTPNotFound(text=f"There is no product with id {product_id!r}.") from None

    async def cart(self, user_id: str) -> Cart:
        return convert(await self.c.cart.get_cart(user_id=user_id), Cart)

    async def add_to_cart(self, user_id: str, product_id: str, quantity: int) -> None:
        await self.c.cart.add_item(user_id=user_id, product_id=product_id, quantity=quantity)

    async def empty_cart(self, user_id: str) -> None:
        await self.c.cart.empty_cart(user_id=user_id)

    async def recommendations(self, user_id: str, product_ids: list[str]) -> list[str]:
        ids = await self.c.recommendation.list_recommendations(user_id=user_id, product_ids=product_ids)
        return convert(ids, list[str])

    async def shipping_quote(self, cart: Cart) -> Money:
        return convert(await self.c.shipping.get_quote(address=_NO_ADDRESS, items=cart.items), Money)

    async def ads(self, keys: list[str]) -> list[Ad]:
        return convert(await self.c.ad.get_ads(context_keys=keys), list[Ad])

    async def place_order(
        self, user_id: str, currency: str, address: Address, email: str, card: CreditCard
    ) -> Order:
        result = await self.c.checkout.place_order(
            user_id=user_id, user_currency=currency, address=address, email=email, credit_card=card
        )
        return convert(result, Order)


SHOP = web.AppKey("shop", Shop)


def _session(request: web.Request) -> str:
    return str(request["session_id"])


async def _context(request: web.Request, shop: Shop) -> tuple[t.PageContext, Cart]:
    currencies, cart = await asyncio.gather(shop.currencies(), shop.cart(_session(request)))
    currency = request["currency"] if request["currency"] in currencies else DEFAULT_CURRENCY
    request["currency"] = currency
    return t.PageContext(currency, currencies, sum(i.quantity for i in cart.items)), cart


async def home(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    (ctx, _cart), products = await asyncio.gather(_context(request, shop), shop.products())
    prices = await asyncio.gather(*(shop.convert(p.price_usd, ctx.currency) for p in products))
    return _html(t.home_page(ctx, list(zip(products, prices, strict=True))))


async def product(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    product_id = request.match_info["id"]
    (ctx, _cart), item = await asyncio.gather(_context(request, shop), shop.product(product_id))
    price, rec_ids, ads = await asyncio.gather(
        shop.convert(item.price_usd, ctx.currency),
        shop.recommendations(_session(request), [item.id]),
        shop.ads(item.categories),
    )
    recommended = await asyncio.gather(*(shop.product(pid) for pid in rec_ids[:4]))
    return _html(t.product_page(ctx, item, price, recommended, ads))


async def set_currency(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    code = _field(form, "currency_code")
    if code not in await request.app[SHOP].currencies():
        raise web.HTTPBadRequest(text=f"{code!r} is not a supported currency.")
    response = web.HTTPSeeOther(_back(request))
    response.set_cookie(CURRENCY_COOKIE, code, max_age=48 * 3600, httponly=True, samesite="Lax")
    raise response


async def view_cart(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    ctx, cart = await _context(request, shop)
    products = await asyncio.gather(*(shop.product(i.product_id) for i in cart.items))
    prices = await asyncio.gather(*(shop.convert(p.price_usd, ctx.currency) for p in products))
    shipping = await shop.convert(await shop.shipping_quote(cart), ctx.currency)
    lines = [
        t.CartLine(p, i.quantity, price) for p, i, price in zip(products, cart.items, prices, strict=True)
    ]
    total = add(sum_money(ctx.currency, (multiply(ln.price, ln.quantity) for ln in lines)), shipping)
    return _html(t.cart_page(ctx, lines, shipping, total, datetime.date.today().year))


async def add_to_cart(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    form = await request.post()
    quantity = _int_field(form, "quantity", 1, 10)
    item = await shop.product(_field(form, "product_id"))
    await shop.add_to_cart(_session(request), item.id, quantity)
    raise web.HTTPSeeOther("/cart")


async def empty_cart(request: web.Request) -> web.Response:
    await request.app[SHOP].empty_cart(_session(request))
    raise web.HTTPSeeOther("/")


async def checkout(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    form = await request.post()
    email = _field(form, "email")
    if "@" not in email:
        raise web.HTTPBadRequest(text="Please give a valid e-mail address.")
    address = Address(
        street_address=_field(form, "street_address"),
        city=_field(form, "city"),
        state=_field(form, "state"),
        country=_field(form, "country"),
        zip_code=_field(form, "zip_code"),
    )
    card = CreditCard(
        number=_field(form, "credit_card_number"),
        cvv=_int_field(form, "credit_card_cvv", 0, 9999),
        expiration_year=_int_field(form, "credit_card_expiration_year", 1900, 9999),
        expiration_month=_int_field(form, "credit_card_expiration_month", 1, 12),
    )
    ctx, cart = await _context(request, shop)
    if not cart.items:
        raise web.HTTPBadRequest(text="Your cart is empty: add something before checking out.")
    order = await shop.place_order(_session(request), ctx.currency, address, email, card)
    ctx = t.PageContext(ctx.currency, ctx.currencies, 0)
    names = {p.id: p.name for p in await shop.products()}
    return _html(t.order_page(ctx, order, names))


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/")
    response.del_cookie(SESSION_COOKIE)
    response.del_cookie(CURRENCY_COOKIE)
    request["session_new"] = False  # do not hand out a new session on the way out
    raise response


# -- helpers -----------------------------------------------------------------------


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _field(form: MultiDictProxy[Any], name: str, max_length: int = 200) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        raise web.HTTPBadRequest(text=f"The form field {name!r} is missing or empty.")
    value = value.strip()
    if len(value) > max_length:
        raise web.HTTPBadRequest(text=f"The form field {name!r} is too long.")
    return value


def _int_field(form: MultiDictProxy[Any], name: str, low: int, high: int) -> int:
    text = _field(form, name, max_length=12)
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"The form field {name!r} must be a whole number.") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"The form field {name!r} must be between {low} and {high}.")
    return value


def _back(request: web.Request) -> str:
    """Where the Referer points, if it is a page of this shop; else the home page."""
    referer = request.headers.get("Referer", "")
    parts = urlsplit(referer)
    if parts.netloc and parts.netloc != request.host:
        return "/"
    path = parts.path or "/"
    return path if path.startswith("/") and not path.startswith("//") else "/"


_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed"}


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    session = request.cookies.get(SESSION_COOKIE, "")
    request["session_new"] = not _SESSION_RE.match(session)
    request["session_id"] = uuid.uuid4().hex if request["session_new"] else session
    request["currency"] = request.cookies.get(CURRENCY_COOKIE, DEFAULT_CURRENCY)

    def remember(response: web.StreamResponse) -> None:
        if request["session_new"]:
            response.set_cookie(
                SESSION_COOKIE, request["session_id"], max_age=48 * 3600, httponly=True, samesite="Lax"
            )

    try:
        response = await handler(request)
    except web.HTTPException as exc:
        remember(exc)
        raise
    remember(response)
    return response


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        title = _TITLES.get(exc.status, exc.reason)
        return _html(t.error_page(exc.status, title, message or title), exc.status)
    except zmicro.InvalidArgumentError as exc:
        return _html(t.error_page(400, "Bad request", exc.message), 400)
    except zmicro.CallError as exc:
        log.warning("%s %s: %s: %s", request.method, request.path, exc.code, exc.message)
        return _html(t.error_page(503, "Service unavailable", f"Please try again ({exc.code})."), 503)


def make_app(client: zmicro.Client) -> web.Application:
    """The web shop's routes (the ones the original load generator drives, plus a few)."""
    app = web.Application(middlewares=[sessions, error_pages], client_max_size=64 * 1024)
    app[SHOP] = Shop(client)
    app.router.add_get("/", home)
    app.router.add_get("/product/{id}", product)
    app.router.add_post("/setCurrency", set_currency)
    app.router.add_get("/cart", view_cart)
    app.router.add_post("/cart", add_to_cart)
    app.router.add_post("/cart/empty", empty_cart)
    app.router.add_post("/cart/checkout", checkout)
    app.router.add_get("/logout", logout)
    return app


class Frontend(zmicro.Service):
    """The HTTP shop; ``http_url`` says where it listens."""

    name = "frontend"

    async def on_start(self) -> None:
        host, _, port = os.environ.get(HTTP_ENV_VAR, "127.0.0.1:8080").rpartition(":")
        self.client = make_client()
        self.runner = web.AppRunner(make_app(self.client), access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host or "127.0.0.1", int(port or 8080))
        await site.start()
        sockets = self.runner.addresses
        bound_host, bound_port = sockets[0][0], sockets[0][1]
        self.url = f"http://{bound_host}:{bound_port}/"
        log.info("web shop at %s", self.url)

    async def on_stop(self) -> None:
        await self.runner.cleanup()
        await self.client.aclose()

    @zmicro.rpc(idempotent=True)
    async def http_url(self) -> str:
        """The address of the web shop, for example ``http://127.0.0.1:8080/``."""
        return self.url
