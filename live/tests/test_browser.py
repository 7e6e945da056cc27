"""The /live/ board in a real browser (Chromium via Playwright) against a daphne subprocess, logged out."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from playwright.async_api import expect

from live import demo, services, store
from testsupport.browser import save_screenshot
from testsupport.processes import run_manage

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

FAST_RETRY = {"baseDelay": 200, "maxDelay": 1000}
TOPICS = [demo.topic(symbol) for symbol, _ in demo.SYMBOLS]
# Functions, not expression strings: the page's Content-Security-Policy refuses eval().
SHOWN_SEQS = """() => Array.from(document.querySelectorAll('#board tr[data-topic]'))
  .reduce((sum, tr) => sum + Number(tr.dataset.seq || 0), 0)"""
SHOWS_AT_LEAST = f"(n) => ({SHOWN_SEQS})() >= n"


def published_seqs() -> int:
    return sum(value.seq or 0 for value in store.read(TOPICS))


async def test_the_board_updates_in_place_and_recovers_after_a_server_restart(browser_as, live_server_asgi):
    """Anonymous: 50 prices; the ticker moves them; after a restart the board shows the latest and goes on."""
    await sync_to_async(services.seed_demo_topics)()
    page = await (await browser_as(None, socket_options=FAST_RETRY)).page("/live/")
    state = page.locator("#conn-state")
    await expect(state).to_have_attribute("data-state", "open")
    prices = page.locator("#board tbody td.price")
    await expect(prices).to_have_count(50)
    await page.wait_for_function(SHOWS_AT_LEAST, arg=50)  # every row has its seeded price
    assert "\u2013" not in await prices.all_inner_texts()  # the dash of a row without a price
    aapl = await page.locator("tr[data-topic='stocks.aapl'] td.price").inner_text()
    assert float(aapl) == 189.5

    await run_manage("demo_ticker", "--rate", "200", "--count", "300")
    await page.wait_for_function(SHOWS_AT_LEAST, arg=await sync_to_async(published_seqs)())
    await save_screenshot(page, "live-board")

    await live_server_asgi.astop()
    await expect(state).to_have_attribute("data-state", "reconnecting")
    await run_manage(
        "demo_ticker", "--rate", "200", "--count", "100"
    )  # published while nobody serves the board
    latest = await sync_to_async(published_seqs)()
    await live_server_asgi.astart(30)
    await expect(state).to_have_attribute("data-state", "open")
    await page.wait_for_function(SHOWS_AT_LEAST, arg=latest)
    assert await page.evaluate(SHOWN_SEQS) == latest

    # And live again after the reconnect.
    await sync_to_async(services.publish_topic)("stocks.aapl", demo.quote("aapl", 20000, 19000))
    row = page.locator("tr[data-topic='stocks.aapl']")
    await expect(row.locator("td.price")).to_have_text("200.00")
    await expect(row.locator("td.change")).to_have_text("+10.00")
