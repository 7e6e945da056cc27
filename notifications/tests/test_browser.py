"""The bell, the inbox and the socket client in a real browser (Chromium via Playwright).

Each test gets a daphne subprocess sharing the test database (`live_server_asgi`)
and browser contexts logged in as the test's users (`browser_as`); see the root conftest.
"""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async
from playwright.async_api import expect

from notifications import services
from notifications.models import Notification
from testsupport.auth import DEMO_PASSWORD
from testsupport.browser import save_screenshot
from testsupport.faults import poll

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

notify = database_sync_to_async(services.notify)

# The page's socket is open and its replay (if any) has finished: nothing more is on its way.
# A function, not an expression string: Playwright evaluates a string with eval() in the page,
# which the Content-Security-Policy refuses.
SETTLED = "() => window.notificationSocket.state === 'open' && window.notificationSocket.synced"


@pytest.fixture
def admin_user(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


async def test_login_page_then_inbox_then_logout(browser_as, alice):
    visitor = await browser_as()
    page = await visitor.page("/notifications/")
    await expect(page).to_have_url(re.compile(r"/accounts/login/"))
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("wrong")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")

    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/notifications/$"))
    await expect(page.locator("#who")).to_have_text("alice")
    await expect(page.locator("#conn-state")).to_have_attribute("data-state", "open")
    await expect(page.locator("#inbox-empty")).to_be_visible()

    await page.locator("#logout").click()
    await expect(page).to_have_url(re.compile(r"/accounts/login/"))
    await expect(page.locator("#bell")).to_have_count(0)


@pytest.mark.redis  # a push from another process travels through Redis
async def test_service_push_updates_bell_and_inbox_without_reload(browser_as, alice, bob):
    """`notify()` in another process (this one) reaches the pages through Redis."""
    tab = await browser_as(alice)
    inbox = await tab.page("/notifications/")
    rooms = await tab.page("/chat/")
    for page in (inbox, rooms):
        await page.wait_for_function(SETTLED)
    await expect(inbox.locator("#bell-badge")).to_be_hidden()

    await notify(users=alice, title="Deploy <b>done</b>", body="main is green", level="success", url="/chat/")
    await notify(users=bob, title="Not for alice")

    for page in (inbox, rooms):
        await expect(page.locator("#bell-badge")).to_have_text("1")
    item = inbox.locator("#inbox li")
    await expect(item).to_have_count(1)
    await expect(item.locator(".note-title")).to_have_text("Deploy <b>done</b>")  # text, never markup
    await expect(item.locator(".note-body")).to_have_text("main is green")
    await expect(item).to_have_class(re.compile(r"(?=.*\bunread\b)(?=.*\blevel-success\b)"))
    await expect(inbox.locator("#unread-summary")).to_have_text("1 unread")


async def test_admin_form_send_updates_the_recipients_pages(browser_as, admin_user, bob):
    """The admin stays usable for sending while pages update live (one server: no Redis needed)."""
    await notify(users=bob, title="Welcome to Relay", body="Your inbox lives here.", url="/chat/")
    await database_sync_to_async(services.mark_all_read)(user=bob)
    await notify(
        users=bob, title="Nightly backup failed", body="db-2: disk full at 03:12 UTC.", level="error"
    )
    admin = await browser_as(admin_user)
    recipient = await browser_as(bob)
    inbox = await recipient.page("/notifications/")
    await inbox.wait_for_function(SETTLED)

    form = await admin.page("/admin/notifications/notification/send/")
    await expect(form.locator("#relay-bell #bell")).to_be_visible()  # the admin has the bell too
    await form.locator("#id_users").select_option(label="bob")
    await form.locator("#id_title").fill("Maintenance tonight")
    await form.locator("#id_body").fill("From 22:00 UTC, about ten minutes.")
    await form.locator("#id_level").select_option("warning")
    await form.get_by_role("button", name="Send").click()
    await expect(form.locator(".messagelist")).to_contain_text("Sent to 1 users.")

    await expect(inbox.locator("#bell-badge")).to_have_text("2")
    items = inbox.locator("#inbox li")
    await expect(items.locator(".note-title")).to_have_text(
        ["Maintenance tonight", "Nightly backup failed", "Welcome to Relay"]
    )
    await expect(items.first).to_have_class(re.compile(r"\blevel-warning\b"))
    await expect(inbox.locator("#unread-summary")).to_have_text("2 unread")
    await save_screenshot(inbox, "inbox")


async def test_mark_all_read_in_one_tab_clears_the_badge_in_another(browser_as, alice):
    for i in range(3):
        await notify(users=alice, title=f"Alert {i}", level=["info", "warning", "error"][i])
    tab = await browser_as(alice)
    inbox = await tab.page("/notifications/")
    other = await tab.page("/chat/")
    for page in (inbox, other):
        await expect(page.locator("#bell-badge")).to_have_text("3")
        await page.wait_for_function(SETTLED)

    # One item first: both tabs count down.
    await inbox.locator("#inbox li", has_text="Alert 0").get_by_role("button", name="Mark read").click()
    await expect(other.locator("#bell-badge")).to_have_text("2")
    await expect(inbox.locator("#inbox li.read")).to_have_count(1)

    await inbox.get_by_role("button", name="Mark all read").click()
    await expect(other.locator("#bell-badge")).to_be_hidden()
    await expect(inbox.locator("#bell-badge")).to_be_hidden()
    await expect(inbox.locator("#inbox li.unread")).to_have_count(0)
    await expect(inbox.locator("#unread-summary")).to_have_text("All caught up")
    assert await database_sync_to_async(Notification.objects.filter(read_at__isnull=True).count)() == 0


async def test_inbox_catches_up_exactly_once_after_a_server_restart(browser_as, live_server_asgi, alice):
    await notify(users=alice, title="Before")
    tab = await browser_as(alice, socket_options={"baseDelay": 200, "maxDelay": 1000})
    inbox = await tab.page("/notifications/")
    await inbox.wait_for_function(SETTLED)
    await expect(inbox.locator("#inbox li")).to_have_count(1)

    await live_server_asgi.astop()
    await expect(inbox.locator("#conn-state")).to_have_attribute("data-state", "reconnecting")
    for i in range(3):
        await notify(users=alice, title=f"While down {i}")  # stored; nobody is listening
    await live_server_asgi.astart(30)

    await expect(inbox.locator("#conn-state")).to_have_attribute("data-state", "open")
    await inbox.wait_for_function(SETTLED)
    await expect(inbox.locator("#inbox li")).to_have_count(4)
    for i in range(3):
        await expect(inbox.locator("#inbox li", has_text=f"While down {i}")).to_have_count(1)
    # Newest first, and the badge counts each once.
    await expect(inbox.locator("#inbox li .note-title").first).to_have_text("While down 2")
    await expect(inbox.locator("#bell-badge")).to_have_text("4")


async def test_a_dead_connection_is_noticed_by_ping_and_replaced(browser_as, live_server_asgi, alice):
    """SIGSTOP keeps the TCP connection open but silent: only the ping/pong deadline can tell."""
    tab = await browser_as(alice, socket_options={"pingInterval": 500, "pongTimeout": 1000, "baseDelay": 200})
    page = await tab.page("/notifications/")
    await page.wait_for_function(SETTLED)
    live_server_asgi.pause()
    try:
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "reconnecting")
    finally:
        live_server_asgi.resume()
    await expect(page.locator("#conn-state")).to_have_attribute("data-state", "open")


async def test_logging_out_in_one_tab_sends_the_other_tabs_to_the_login_page(browser_as, alice):
    """Logging out closes the user's sockets with 4401; the client stops and sends the user to log in."""
    tab = await browser_as(alice)
    page = await tab.page("/chat/")
    other = await tab.page("/notifications/")
    for p in (page, other):
        await p.wait_for_function(SETTLED)
    await other.locator("#logout").click()
    await expect(page).to_have_url(re.compile(r"/accounts/login/\?next=(/|%2F)chat(/|%2F)$"))


async def test_client_backoff_is_capped_full_jitter_and_prompt_after_1012(browser_as):
    """The client's retry schedule, checked in the browser with a stub WebSocket that never opens."""
    visitor = await browser_as()
    page = await visitor.page("/accounts/login/")
    await page.add_script_tag(url="/static/js/realtime.js")  # a file, as the policy requires
    delays = await page.evaluate(
        """() => {
          class Stub { constructor() { this.readyState = 0; } close() {} send() {} }
          window.WebSocket = Stub;
          const s = new RealtimeSocket("/ws/x/", { baseDelay: 100, maxDelay: 1000, restartJitter: 400 });
          const random = Math.random;
          Math.random = () => 1 - 1e-9;
          const high = [0, 1, 2, 3, 4, 5, 6].map(() => Math.round(s.nextDelay(1006)));
          const restart = Math.round(s.nextDelay(1012));
          Math.random = () => 0;
          const low = s.nextDelay(1006);
          Math.random = random;
          s.onClose(4403, "forbidden");
          return { high, restart, low, state: s.state, stopped: s.stopped };
        }"""
    )
    assert delays["high"] == [100, 200, 400, 800, 1000, 1000, 1000]  # doubles, capped at maxDelay
    assert delays["restart"] == 400  # 1012: within restartJitter, whatever the attempt count
    assert delays["low"] == 0  # full jitter: anywhere from 0
    assert delays["state"] == "offline" and delays["stopped"] is True


# Stored as they were before the service refused them (issue 14 item 8): the page must not trust the row.
OFF_SITE_URLS = [
    "/\\evil.example",
    "/\t/evil.example",
    "//evil.example",
    "/\\\\evil.example",
    "javascript:alert(1)",
]


async def test_a_stored_url_that_leads_off_site_renders_no_link(browser_as, live_server_asgi, alice):
    """Rows with `/\\host`, `/<tab>/host`, `//host` (stored past notify()) show as text; a path links."""
    create = database_sync_to_async(Notification.objects.create)
    for n, url in enumerate(OFF_SITE_URLS):
        await create(recipient=alice, title=f"unsafe {n}", url=url)
    await create(recipient=alice, title="safe", url="/chat/")
    page = await (await browser_as(alice)).page("/notifications/")
    await page.wait_for_function(SETTLED)
    await expect(page.locator("#inbox li")).to_have_count(len(OFF_SITE_URLS) + 1)

    hrefs = await page.locator("#inbox a").evaluate_all("links => links.map((a) => a.href)")
    assert hrefs == [f"{live_server_asgi.url}/chat/"]  # the browser's resolved href: the only link is ours
    for n in range(len(OFF_SITE_URLS)):
        await expect(page.locator(".note-title", has_text=f"unsafe {n}")).to_have_js_property(
            "tagName", "STRONG"
        )


async def test_a_csp_violation_fails_the_browser_tests(browser_as):
    """The shared fixture's guard: an inline script is blocked by the policy and reported as a violation."""
    visitor = await browser_as()
    page = await visitor.page("/accounts/login/")
    await page.evaluate(
        """() => {
          const script = document.createElement("script");
          script.textContent = "window.inlineRan = true;";
          document.head.append(script);
        }"""
    )

    async def reported():
        return visitor.csp_violations

    violations = await poll(reported, seconds=10, what="the violation reported to the test")
    assert await page.evaluate("window.inlineRan === undefined")  # blocked, not run
    assert any("script-src" in v for v in violations), violations
    visitor.csp_violations.clear()  # expected here; any other test fails on one


async def test_pages_and_the_admin_run_under_the_content_security_policy(browser_as, admin_user, alice):
    """Every page, and the admin's scripts (prepopulated slug, inlines, filters), work with no violation."""
    visitor = await browser_as()
    login = await visitor.page("/accounts/login/")
    await expect(login.get_by_role("button", name="Log in")).to_be_visible()
    tab = await browser_as(alice)
    for path in ("/notifications/", "/chat/"):
        page = await tab.page(path)
        await page.wait_for_function(SETTLED)  # the page's own scripts ran and its socket is open

    admin = await browser_as(admin_user)
    for path in (
        "/admin/",
        "/admin/notifications/notification/",
        "/admin/auth/user/",
        "/admin/chat/message/",
    ):
        page = await admin.page(path)
        await expect(page.locator("#relay-bell #live-state")).to_have_attribute("data-state", "open")
    users = await admin.page(f"/admin/auth/user/{admin_user.pk}/change/")
    await expect(users.locator(".selector-filter").first).to_be_visible()  # SelectFilter2.js built the widget
    room = await admin.page("/admin/chat/room/add/")
    await room.locator("#id_title").press_sequentially("Night Shift")  # prepopulate.js acts on keyup
    await expect(room.locator("#id_slug")).to_have_value("night-shift")
    await expect(room.locator(".add-row a")).to_be_visible()  # inlines.js
    key = await admin.page("/admin/authentication/apikey/add/")
    await key.locator("#id_name").fill("csp-check")
    await key.get_by_role("button", name="Create key").click()
    await expect(key.locator("#api-key")).to_have_css("user-select", "all")  # from the stylesheet, not inline
