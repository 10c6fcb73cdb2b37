"""The web shop's HTML: small functions that return pages, every value escaped. Pure.

Elements that tests and the load generator read carry ids (``order-id``,
``cart-total``, ...), so that nothing has to scrape visible text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from .model import Ad, Order, Product
from .money import Money, format_money, multiply

__all__ = (
    "CartLine",
    "PageContext",
    "cart_page",
    "error_page",
    "home_page",
    "order_page",
    "product_page",
)


@dataclass(frozen=True, slots=True)
class PageContext:
    """What the header of every page shows."""

    currency: str
    currencies: Sequence[str]
    cart_size: int


@dataclass(frozen=True, slots=True)
class CartLine:
    product: Product
    quantity: int
    price: Money  # of one, in the shopper's currency


def e(value: object) -> str:
    return escape(str(value), quote=True)


_CSS = """
:root { --ink:#1f2430; --muted:#6b7280; --line:#e5e7eb; --accent:#0f766e; --accent-dark:#115e59;
        --bg:#f7f7f5; --card:#ffffff; --warn:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; font-family: "DejaVu Sans", "Liberation Sans", system-ui, sans-serif; color:var(--ink);
       background:var(--bg); line-height:1.45; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
header { background:var(--ink); color:#fff; }
header .bar { max-width:1100px; margin:0 auto; padding:14px 24px; display:flex; align-items:center;
              gap:24px; }
header .brand { color:#fff; font-size:1.35rem; font-weight:700; letter-spacing:.02em; margin-right:auto; }
header form { display:flex; gap:6px; align-items:center; margin:0; }
header select, header button { font:inherit; font-size:.9rem; }
header .cart-link { color:#fff; font-weight:600; }
header .cart-link span { background:var(--accent); border-radius:999px; padding:1px 9px; margin-left:4px; }
header .logout { color:#cbd5e1; font-size:.85rem; }
main { max-width:1100px; margin:0 auto; padding:28px 24px 56px; }
h1 { font-size:1.6rem; margin:0 0 18px; } h2 { font-size:1.2rem; margin:28px 0 12px; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(230px, 1fr)); gap:20px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; overflow:hidden;
        display:flex; flex-direction:column; color:var(--ink); }
.card:hover { box-shadow:0 4px 14px rgba(0,0,0,.08); text-decoration:none; }
.card .info { padding:12px 14px 14px; } .card .name { font-weight:600; }
.card .price { color:var(--accent-dark); }
.tile { height:150px; display:flex; align-items:center; justify-content:center; color:#fff;
        font-size:3rem; font-weight:700; letter-spacing:.05em; text-shadow:0 1px 3px rgba(0,0,0,.25); }
.tile.big { height:320px; border-radius:10px; font-size:5rem; }
.product { display:grid; grid-template-columns:1fr 1fr; gap:32px; align-items:start; }
.product .price { font-size:1.5rem; color:var(--accent-dark); margin:4px 0 14px; }
.muted { color:var(--muted); }
button, .button { background:var(--accent); color:#fff; border:0; border-radius:6px; padding:9px 18px;
                  font:inherit; font-weight:600; cursor:pointer; }
button:hover { background:var(--accent-dark); }
.button { display:inline-block; }
.button:hover { text-decoration:none; }
button.secondary, .button.secondary { background:#fff; color:var(--ink); border:1px solid var(--line); }
form.inline { display:flex; gap:10px; align-items:center; }
select, input { font:inherit; padding:7px 9px; border:1px solid #cbd5e1; border-radius:6px; background:#fff; }
.ad { margin-top:28px; background:#fffbeb; border:1px solid #fde68a; border-radius:8px; padding:12px 16px; }
.ad b { color:#92400e; margin-right:8px; }
table.items { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line);
              border-radius:10px; overflow:hidden; }
table.items th, table.items td { padding:10px 14px; border-bottom:1px solid var(--line); text-align:left; }
table.items td.num, table.items th.num { text-align:right; }
table.items tr.total td { font-weight:700; font-size:1.1rem; border-bottom:0; }
.columns { display:grid; grid-template-columns:3fr 2fr; gap:32px; align-items:start; }
.panel { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 20px; }
.fields { display:grid; grid-template-columns:1fr 1fr; gap:10px 12px; }
.fields label { display:flex; flex-direction:column; font-size:.85rem; color:var(--muted); gap:3px; }
.fields label.wide { grid-column:1 / -1; }
.actions { display:flex; gap:10px; margin-top:16px; }
.notice { background:#ecfdf5; border:1px solid #a7f3d0; border-radius:10px; padding:18px 20px;
          margin-bottom:22px; }
.error { background:#fef2f2; border:1px solid #fecaca; color:var(--warn); border-radius:10px;
         padding:18px 20px; }
footer { text-align:center; color:var(--muted); font-size:.8rem; padding:18px; }
"""

_PALETTE = ("#0f766e", "#7c3aed", "#b45309", "#be123c", "#1d4ed8", "#15803d", "#9d174d", "#0369a1", "#a16207")


def _tile(product: Product, big: bool = False) -> str:
    n = int(hashlib.blake2s(product.id.encode(), digest_size=2).hexdigest(), 16)
    a, b = _PALETTE[n % len(_PALETTE)], _PALETTE[(n // 7 + 3) % len(_PALETTE)]
    initials = "".join(w[0] for w in product.name.replace("&", " ").split()[:2]).upper()
    return (
        f'<div class="tile{" big" if big else ""}" role="img" aria-label="{e(product.name)}" '
        f'style="background:linear-gradient(135deg,{a},{b})">{e(initials)}</div>'
    )


def _layout(title: str, ctx: PageContext | None, body: str) -> str:
    header = ""
    if ctx is not None:
        options = "".join(
            f'<option value="{e(c)}"{" selected" if c == ctx.currency else ""}>{e(c)}</option>'
            for c in ctx.currencies
        )
        header = (
            '<form method="post" action="/setCurrency">'
            '<label for="currency_code" class="muted">Currency</label>'
            '<select id="currency_code" name="currency_code" onchange="this.form.submit()">'
            f"{options}</select>"
            '<noscript><button type="submit">Set</button></noscript></form>'
            f'<a class="cart-link" href="/cart">Cart<span id="cart-size">{ctx.cart_size}</span></a>'
            '<a class="logout" href="/logout">Log out</a>'
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} | Online Boutique</title><style>{_CSS}</style></head><body>"
        f'<header><div class="bar"><a class="brand" href="/">Online Boutique</a>{header}</div></header>'
        f"<main>{body}</main>"
        "<footer>Online Boutique on zmicro: every page is built from calls to its services over ZeroMQ."
        "</footer></body></html>"
    )


def home_page(ctx: PageContext, products: Sequence[tuple[Product, Money]]) -> str:
    cards = "".join(
        f'<a class="card product-card" href="/product/{e(p.id)}" data-product-id="{e(p.id)}">{_tile(p)}'
        f'<div class="info"><div class="name">{e(p.name)}</div>'
        f'<div class="price">{e(format_money(price))}</div></div></a>'
        for p, price in products
    )
    return _layout("Home", ctx, f'<h1>Hot products</h1><div class="grid">{cards}</div>')


def product_page(
    ctx: PageContext, product: Product, price: Money, recommended: Sequence[Product], ads: Sequence[Ad]
) -> str:
    quantities = "".join(f'<option value="{q}">{q}</option>' for q in range(1, 11))
    body = (
        f'<div class="product">{_tile(product, big=True)}<div>'
        f'<h1 id="product-name">{e(product.name)}</h1>'
        f'<div class="price" id="product-price">{e(format_money(price))}</div>'
        f"<p>{e(product.description)}</p>"
        f'<p class="muted">Categories: {e(", ".join(product.categories))}</p>'
        '<form class="inline" method="post" action="/cart" id="add-to-cart">'
        f'<input type="hidden" name="product_id" value="{e(product.id)}">'
        f'<label for="quantity">Quantity</label><select id="quantity" name="quantity">{quantities}</select>'
        '<button type="submit">Add to cart</button></form></div></div>'
    )
    if recommended:
        cards = "".join(
            f'<a class="card" href="/product/{e(p.id)}">{_tile(p)}<div class="info"><div class="name">'
            f"{e(p.name)}</div></div></a>"
            for p in recommended
        )
        body += f'<h2>You may also like</h2><div class="grid" id="recommendations">{cards}</div>'
    for ad in ads:
        body += f'<div class="ad"><b>Ad</b><a href="{e(ad.redirect_url)}">{e(ad.text)}</a></div>'
    return _layout(product.name, ctx, body)


_DEFAULTS = {
    "email": "someone@example.com",
    "street_address": "1600 Amphitheatre Parkway",
    "zip_code": "94043",
    "city": "Mountain View",
    "state": "CA",
    "country": "United States",
    "credit_card_number": "4432-8015-6152-0454",
    "credit_card_cvv": "672",
}


def _checkout_form(this_year: int) -> str:
    def text(name: str, label: str, wide: bool = False, kind: str = "text") -> str:
        cls = ' class="wide"' if wide else ""
        return (
            f"<label{cls}>{e(label)}"
            f'<input type="{kind}" name="{name}" value="{e(_DEFAULTS[name])}" required></label>'
        )

    months = "".join(
        f'<option value="{m}"{" selected" if m == 1 else ""}>{m:02d}</option>' for m in range(1, 13)
    )
    years = "".join(
        f'<option value="{y}"{" selected" if y == this_year + 1 else ""}>{y}</option>'
        for y in range(this_year, this_year + 6)
    )
    return (
        '<form method="post" action="/cart/checkout" class="panel" id="checkout-form">'
        '<h2 style="margin-top:0">Shipping and payment</h2><div class="fields">'
        + text("email", "E-mail address", wide=True, kind="email")
        + text("street_address", "Street address", wide=True)
        + text("zip_code", "Zip code")
        + text("city", "City")
        + text("state", "State")
        + text("country", "Country")
        + text("credit_card_number", "Credit card number", wide=True)
        + f'<label>Month<select name="credit_card_expiration_month">{months}</select></label>'
        + f'<label>Year<select name="credit_card_expiration_year">{years}</select></label>'
        + text("credit_card_cvv", "CVV")
        + '</div><div class="actions"><button type="submit" id="place-order">Place order</button></div>'
        + "</form>"
    )


def _items_table(rows: Sequence[tuple[str, str, int, Money]], shipping: Money, total: Money) -> str:
    """Lines of (product id, name, quantity, price of one), then shipping and the total."""
    body = "".join(
        f'<tr class="item-line" data-product-id="{e(pid)}"><td><a href="/product/{e(pid)}">{e(name)}</a></td>'
        f'<td class="num">{qty}</td><td class="num">{e(format_money(price))}</td>'
        f'<td class="num">{e(format_money(multiply(price, qty)))}</td></tr>'
        for pid, name, qty, price in rows
    )
    return (
        '<table class="items"><thead><tr><th>Product</th><th class="num">Quantity</th>'
        f'<th class="num">Price</th><th class="num">Subtotal</th></tr></thead><tbody>{body}'
        '<tr><td colspan="3">Shipping</td>'
        f'<td class="num" id="shipping-cost">{e(format_money(shipping))}</td></tr>'
        '<tr class="total"><td colspan="3">Total</td>'
        f'<td class="num" id="total">{e(format_money(total))}</td></tr></tbody></table>'
    )


def cart_page(
    ctx: PageContext, lines: Sequence[CartLine], shipping: Money, total: Money, this_year: int
) -> str:
    if not lines:
        body = (
            '<h1>Your shopping cart is empty</h1><p class="muted" id="cart-empty">Items you add to your cart '
            'will appear here.</p><p><a class="button" href="/">Continue shopping</a></p>'
        )
        return _layout("Cart", ctx, body)
    rows = [(line.product.id, line.product.name, line.quantity, line.price) for line in lines]
    count = sum(line.quantity for line in lines)
    table = (
        _items_table(rows, shipping, total) + '<div class="actions"><form method="post" action="/cart/empty">'
        '<button class="secondary" type="submit">Empty cart</button></form>'
        '<a class="button secondary" href="/">Continue shopping</a></div>'
    )
    body = (
        f'<h1>Cart <span class="muted">({count} item{"s" if count != 1 else ""})</span></h1>'
        f'<div class="columns"><div>{table}</div>{_checkout_form(this_year)}</div>'
    )
    return _layout("Cart", ctx, body)


def order_page(ctx: PageContext, order: Order, names: dict[str, str]) -> str:
    rows = [
        (ln.item.product_id, names.get(ln.item.product_id, ln.item.product_id), ln.item.quantity, ln.cost)
        for ln in order.items
    ]
    body = (
        '<div class="notice"><h1>Your order is complete!</h1>'
        "<p>We've sent you a confirmation e-mail.</p>"
        f'<p>Confirmation number: <b id="order-id">{e(order.order_id)}</b><br>'
        f'Tracking number: <b id="tracking-id">{e(order.shipping_tracking_id)}</b><br>'
        f'Total paid: <b id="order-total">{e(format_money(order.total))}</b></p></div>'
        + _items_table(rows, order.shipping_cost, order.total)
        + '<div class="actions"><a class="button" href="/">Continue shopping</a></div>'
    )
    return _layout("Order complete", ctx, body)


def error_page(status: int, title: str, message: str) -> str:
    body = (
        f'<div class="error" id="error"><h1>{status} {e(title)}</h1>'
        f'<p id="error-message">{e(message)}</p></div>'
        '<div class="actions"><a class="button" href="/">Back to the shop</a></div>'
    )
    return _layout(title, None, body)
