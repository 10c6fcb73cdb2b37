"""The web shop in a real browser: headless Chromium, driven over its DevTools protocol.

The test opens the home page, follows a product card, submits the add-to-cart form,
lands on the cart, places the order through the checkout form, and saves screenshots
of the pages under ``artifacts/boutique/`` (not tracked by git) to look at.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from zmicro.demo.boutique.launcher import Boutique, launch

ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "artifacts" / "boutique"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package `chromium`)"),
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boutique]:
    with launch(log_dir=tmp_path_factory.mktemp("boutique-logs")) as running:
        yield running


class Page:
    """Just enough of the DevTools protocol: navigate, evaluate, wait for loads, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.loads = 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        async with asyncio.timeout(20):
            while True:
                msg = json.loads(await self.ws.receive_str())
                if msg.get("method") == "Page.loadEventFired":
                    self.loads += 1
                if msg.get("id") == msg_id:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    result: dict[str, Any] = msg.get("result", {})
                    return result

    async def wait_load(self, loads_before: int) -> None:
        async with asyncio.timeout(20):
            while self.loads <= loads_before:
                msg = json.loads(await self.ws.receive_str())
                if msg.get("method") == "Page.loadEventFired":
                    self.loads += 1

    async def goto(self, url: str) -> None:
        before = self.loads
        await self.send("Page.navigate", url=url)
        await self.wait_load(before)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def act(self, expression: str) -> None:
        """Run ``expression`` (a click, a submit) and wait for the page it leads to."""
        before = self.loads
        await self.eval(expression)
        await self.wait_load(before)

    async def screenshot(self, name: str) -> Path:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(data["data"]))
        return path


@pytest.fixture
def devtools_port(tmp_path: Path) -> Iterator[int]:
    """Start headless Chromium with its DevTools port open; stop it afterwards."""
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600",
            "--remote-debugging-port=0", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = tmp_path / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            assert proc.poll() is None, "Chromium exited"
            time.sleep(0.1)
        yield int(port_file.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def page(devtools_port: int) -> AsyncIterator[Page]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{devtools_port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with http.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024) as ws:
            p = Page(ws)
            await p.send("Page.enable")
            await p.send(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=1600,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield p


def _amount(text: str) -> int:
    """``"$1,234.56"`` -> 123456 cents."""
    m = re.search(r"([\d,]+)\.(\d\d)", text)
    assert m, text
    return int(m.group(1).replace(",", "")) * 100 + int(m.group(2))


async def test_shop_in_a_browser(shop: Boutique, page: Page) -> None:
    await page.goto(shop.url)
    names = await page.eval("[...document.querySelectorAll('.product-card .name')].map(e => e.textContent)")
    assert len(names) == 9 and "Sunglasses" in names and "Salt & Pepper Shakers" in names
    prices = await page.eval("[...document.querySelectorAll('.product-card .price')].map(e => e.textContent)")
    assert prices[0] == "$19.99"
    await page.screenshot("home")

    # change the currency through the header's form, then back
    await page.act("const s = document.querySelector('#currency_code'); s.value = 'EUR'; s.form.submit()")
    assert (await page.eval("document.querySelector('.product-card .price').textContent")).startswith("€")
    await page.act("const s = document.querySelector('#currency_code'); s.value = 'USD'; s.form.submit()")

    await page.act("document.querySelector('.product-card[data-product-id=\"OLJCESPC7Z\"]').click()")
    assert await page.eval("location.pathname") == "/product/OLJCESPC7Z"
    assert await page.eval("document.querySelector('#product-name').textContent") == "Sunglasses"
    price = _amount(await page.eval("document.querySelector('#product-price').textContent"))
    assert await page.eval("document.querySelectorAll('#recommendations .card').length") >= 1
    assert await page.eval("document.querySelector('.ad') !== null")
    await page.screenshot("product")

    await page.act(
        "document.querySelector('#quantity').value = '2';"
        "document.querySelector('#add-to-cart button[type=submit]').click()"
    )
    assert await page.eval("location.pathname") == "/cart"
    lines = await page.eval(
        "[...document.querySelectorAll('.item-line td:first-child')].map(e => e.textContent)"
    )
    assert lines == ["Sunglasses"]
    assert await page.eval("document.querySelector('#cart-size').textContent") == "2"
    shipping = _amount(await page.eval("document.querySelector('#shipping-cost').textContent"))
    total = _amount(await page.eval("document.querySelector('#total').textContent"))
    assert shipping == 899
    assert total == 2 * price + shipping == 2 * 1999 + 899
    await page.screenshot("cart")

    await page.act("document.querySelector('#place-order').click()")
    assert "Your order is complete" in await page.eval("document.body.innerText")
    order_id = await page.eval("document.querySelector('#order-id').textContent")
    assert re.fullmatch(r"[0-9a-f-]{36}", order_id)
    assert _amount(await page.eval("document.querySelector('#order-total').textContent")) == total
    await page.screenshot("order")

    await page.goto(shop.url + "cart")
    assert await page.eval("document.querySelector('#cart-empty') !== null")
    await page.goto(shop.url + "product/NOPE")
    assert "404" in await page.eval("document.querySelector('#error h1').textContent")
