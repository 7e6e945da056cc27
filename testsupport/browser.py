"""A real browser against a real server: Debian's Chromium through Playwright's async API.

Browser tests (marked `browser`) drive it against a worker in a subprocess that shares
the test's database and channel layer (`live_server_asgi`; pytest-django's live_server
is WSGI and cannot serve websockets). Each page reports its errors, its dialogs and
every Content-Security-Policy violation to the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from testsupport.auth import session_cookie
from testsupport.processes import ARTIFACTS

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
SCREENSHOTS = settings.BASE_DIR / "docs" / "screenshots"

# Every document reports each Content-Security-Policy violation to the test (before any page
# script runs; Playwright's init scripts and bindings are not subject to the page's policy).
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  const what = `${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`;
  window.__relayCspViolation(`${what} on ${e.documentURI}`);
});
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator:
    """Headless Chromium, closed at the end; fails the test when it is not installed."""
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=15_000)  # a restart or a reconnect takes a few seconds

    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per test, before any I/O matters
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


class BrowserUser:
    """One browser context logged in as one user; records page errors, CSP violations and dialogs."""

    def __init__(self, context, user) -> None:
        self.context = context
        self.user = user
        self.errors: list[str] = []
        self.csp_violations: list[str] = []
        self.dialogs: list[str] = []

    async def watch_csp(self) -> None:
        await self.context.expose_binding(
            "__relayCspViolation", lambda _source, text: self.csp_violations.append(text)
        )
        await self.context.add_init_script(REPORT_CSP_VIOLATIONS)

    def _console(self, message) -> None:
        # Chromium also reports violations (and a policy it cannot parse) on the console.
        if "Content Security Policy" in message.text:
            self.csp_violations.append(f"console: {message.text}")

    async def page(self, path: str = "/"):
        page = await self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

        async def dismiss(dialog):
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", dismiss)
        await page.goto(path)
        return page


class BrowserUsers:
    """`await users.open(user)` (`browser_as`): a fresh context on `base_url` with the user's session."""

    def __init__(self, browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.users: list[BrowserUser] = []

    async def open(self, user=None, *, socket_options: dict | None = None) -> BrowserUser:
        context = await self.browser.new_context(
            base_url=self.base_url, viewport={"width": 1100, "height": 720}
        )
        context.set_default_timeout(15_000)
        if socket_options:
            await context.add_init_script(f"window.RELAY_SOCKET_OPTIONS = {json.dumps(socket_options)};")
        if user is not None:
            key = await database_sync_to_async(session_cookie)(user)
            await context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": key, "url": self.base_url}]
            )
        browser_user = BrowserUser(context, user)
        await browser_user.watch_csp()
        self.users.append(browser_user)
        return browser_user

    async def close(self) -> None:
        """Close every context; then fail on any page's JavaScript error or CSP violation."""
        for browser_user in self.users:
            await browser_user.context.close()
        errors = [error for u in self.users for error in u.errors]
        assert not errors, f"JavaScript errors on the pages: {errors}"
        violations = [violation for u in self.users for violation in u.csp_violations]
        assert not violations, f"Content-Security-Policy violations on the pages: {violations}"


async def save_screenshot(page, name: str) -> None:
    """A test artifact in test-artifacts/; with UPDATE_SCREENSHOTS=1 also the README's copy in docs/."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(target))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / f"{name}.png")
