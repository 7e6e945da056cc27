"""The /live/ board in a real browser (Chromium via Playwright) against a daphne subprocess, logged out.

Also the page's socket against a worker shedding load (its handshake queue full).
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from playwright.async_api import expect

from live import demo, services, store
from testsupport.browser import save_screenshot
from testsupport.handshakes import credentials_locked, until_in_progress, until_refused
from testsupport.processes import run_manage
from testsupport.servers import browser_opening, receive_json

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


@pytest.mark.postgres  # the held handshake waits on a PostgreSQL table lock
@pytest.mark.parametrize("live_server_asgi", [{"WS_HANDSHAKE_QUEUE_LIMIT": "1"}], indirect=True)
async def test_the_board_backs_off_while_the_worker_sheds_load_and_goes_live_once_it_drains(
    browser_as, live_server_asgi, alice
):
    """A full handshake queue refuses the page's socket (503); it keeps retrying and goes live after."""
    await sync_to_async(services.seed_demo_topics)()
    worker = live_server_asgi
    opening = await browser_opening(f"{worker.ws}/ws/notifications/", alice, open_timeout=30)
    async with credentials_locked():  # alice's handshake waits in its lookup: the queue of one is full
        held = asyncio.ensure_future(opening)
        await until_in_progress(worker.url, 1)
        page = await (await browser_as(None, socket_options=FAST_RETRY)).page("/live/")
        state = page.locator("#conn-state")
        await until_refused(worker.url, 1)
        await expect(state).to_have_attribute("data-state", "reconnecting")
    socket = await held
    assert (await receive_json(socket, "welcome"))["user"]["username"] == "alice"
    await socket.close()
    await expect(state).to_have_attribute("data-state", "open")
    await page.wait_for_function(SHOWS_AT_LEAST, arg=50)  # every row has its seeded price
