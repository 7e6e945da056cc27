"""The login throttle (contract v2, issue 14 item 2) through the full ASGI application.

`POST /api/token/` and the login form: after LOGIN_FAILURES_MAX (10) failures
for a username or from an address, 429 `rate_limited` with `Retry-After`, even
for the right password; other addresses and usernames are not affected; the
address is REMOTE_ADDR unless that is a trusted proxy. Each test has a key
prefix of its own, so counts never carry over. The same under every server:
test_login_throttle_servers.py.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlencode

import orjson
import pytest
from asgiref.sync import sync_to_async

from testsupport.asgi import http_from
from testsupport.auth import DEMO_PASSWORD

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

WRONG = "not-the-password-0451"
CSRF = "c" * 32


@pytest.fixture(autouse=True)
def own_counts(settings):
    """Counts of this test's own, and the contract's defaults."""
    settings.LOGIN_THROTTLE_KEY_PREFIX = f"{settings.LOGIN_THROTTLE_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.LOGIN_FAILURES_MAX = 10
    settings.LOGIN_FAILURES_WINDOW_SECONDS = 300
    settings.TRUSTED_PROXIES = []


async def request(
    method: str, path: str, *, body: bytes = b"", content_type: str = "", address: str, headers=()
) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI application from `address`: (status, headers, body)."""
    extra = [(b"content-type", content_type.encode())] if content_type else []
    return await http_from(address, method, path, body=body, headers=[*headers, *extra])


async def token(username: str, password: str, address: str, headers=()) -> tuple[int, dict[str, str], dict]:
    body = orjson.dumps({"username": username, "password": password})
    status, answer, content = await request(
        "POST", "/api/token/", body=body, content_type="application/json", address=address, headers=headers
    )
    return status, answer, orjson.loads(content) if content else {}


async def form_login(username: str, password: str, address: str) -> tuple[int, dict[str, str], str]:
    body = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": CSRF}).encode()
    status, answer, content = await request(
        "POST",
        "/accounts/login/",
        body=body,
        content_type="application/x-www-form-urlencoded",
        address=address,
        headers=[(b"cookie", f"csrftoken={CSRF}".encode())],
    )
    return status, answer, content.decode()


def assert_rate_limited(status: int, headers: dict[str, str], body: dict) -> None:
    assert status == 429, (status, body)
    assert body["error"] == "rate_limited", body
    assert 0 < int(headers["retry-after"]) <= 300, headers


async def test_token_api_refuses_the_right_password_after_ten_failures(alice, caplog):
    """Ten wrong passwords to /api/token/, then the right one gets 429 rate_limited with Retry-After."""
    caplog.set_level(logging.DEBUG)
    for _ in range(10):
        status, _, body = await token("alice", WRONG, "203.0.113.1")
        assert status == 401, body
    status, headers, body = await token("alice", DEMO_PASSWORD, "203.0.113.1")
    assert_rate_limited(status, headers, body)
    assert WRONG not in caplog.text and DEMO_PASSWORD not in caplog.text


async def test_login_form_refuses_the_right_password_after_ten_failures(alice, caplog):
    """Ten wrong passwords on the login form, then the right one: status 429, Retry-After, the message."""
    caplog.set_level(logging.DEBUG)
    for _ in range(10):
        status, _, page = await form_login("alice", WRONG, "203.0.113.2")
        assert status == 200 and "Wrong username or password" in page, status
    status, headers, page = await form_login("alice", DEMO_PASSWORD, "203.0.113.2")
    assert status == 429, status
    assert 0 < int(headers["retry-after"]) <= 300, headers
    assert "rate_limited" in page and "sessionid" not in headers.get("set-cookie", "")
    assert WRONG not in caplog.text and DEMO_PASSWORD not in caplog.text


async def test_failures_count_across_the_form_and_the_token_api(alice):
    """Failures on the form and on the API add up: the same throttle guards both."""
    for _ in range(5):
        assert (await form_login("alice", WRONG, "203.0.113.3"))[0] == 200
    for _ in range(5):
        assert (await token("alice", WRONG, "203.0.113.3"))[0] == 401
    assert (await form_login("alice", DEMO_PASSWORD, "203.0.113.3"))[0] == 429
    assert_rate_limited(*await token("alice", DEMO_PASSWORD, "203.0.113.3"))


async def test_another_address_is_not_blocked_by_the_first_addresses_count(alice, bob):
    """An address that failed ten times is refused; another address logs in, and a success resets nothing."""
    for _ in range(10):
        assert (await token("alice", WRONG, "203.0.113.4"))[0] == 401
    status, _, body = await token("bob", DEMO_PASSWORD, "203.0.113.5")
    assert status == 200, body
    # The blocked address is refused for any username, and bob's success did not reset it.
    assert_rate_limited(*await token("bob", DEMO_PASSWORD, "203.0.113.4"))


async def test_per_username_limit_blocks_across_addresses(alice, bob):
    """Ten failures for a username from ten addresses: an eleventh is refused for it, not for others."""
    for n in range(10):
        assert (await token("alice", WRONG, f"198.51.100.{n + 1}"))[0] == 401
    assert_rate_limited(*await token("alice", DEMO_PASSWORD, "198.51.100.200"))
    assert (await form_login("alice", DEMO_PASSWORD, "198.51.100.201"))[0] == 429
    assert (await token("bob", DEMO_PASSWORD, "198.51.100.200"))[0] == 200


async def test_forwarded_for_is_ignored_unless_from_a_trusted_proxy(alice, make_user):
    """X-Forwarded-For from an address that is not a trusted proxy does not split its count."""
    users = await sync_to_async(lambda: [make_user(f"xff{n}") for n in range(12)])()
    for n in range(10):
        forged = [(b"x-forwarded-for", f"192.0.2.{n + 1}".encode())]
        assert (await token(users[n].username, WRONG, "203.0.113.6", headers=forged))[0] == 401
    forged = [(b"x-forwarded-for", b"192.0.2.99")]
    assert_rate_limited(*await token(users[10].username, DEMO_PASSWORD, "203.0.113.6", headers=forged))


async def test_trusted_proxy_forwards_the_client_address(settings, make_user):
    """Behind a trusted proxy each client has its own count, and a forged left part changes nothing."""
    settings.TRUSTED_PROXIES = ["10.9.0.0/24"]
    users = await sync_to_async(lambda: [make_user(f"proxied{n}") for n in range(12)])()
    client = [(b"x-forwarded-for", b"192.0.2.10")]
    for n in range(10):
        assert (await token(users[n].username, WRONG, "10.9.0.5", headers=client))[0] == 401
    assert_rate_limited(*await token(users[10].username, DEMO_PASSWORD, "10.9.0.5", headers=client))
    # The client forges hops in front of its own: the proxy appended its real address last.
    forged = [(b"x-forwarded-for", b"1.2.3.4, 192.0.2.10")]
    assert_rate_limited(*await token(users[10].username, DEMO_PASSWORD, "10.9.0.7", headers=forged))
    # Another client behind the same proxy is not blocked by the first's count.
    other = [(b"x-forwarded-for", b"192.0.2.11")]
    assert (await token(users[11].username, DEMO_PASSWORD, "10.9.0.5", headers=other))[0] == 200


async def test_admin_login_is_throttled_too(alice):
    """The admin's login form checks no password while the throttle is on (it says the login failed)."""
    await sync_to_async(lambda: type(alice).objects.filter(pk=alice.pk).update(is_staff=True))()
    for _ in range(10):
        assert (await token("alice", WRONG, "203.0.113.8"))[0] == 401
    body = urlencode({"username": "alice", "password": DEMO_PASSWORD, "csrfmiddlewaretoken": CSRF}).encode()
    status, headers, _ = await request(
        "POST",
        "/admin/login/",
        body=body,
        content_type="application/x-www-form-urlencoded",
        address="203.0.113.8",
        headers=[(b"cookie", f"csrftoken={CSRF}".encode())],
    )
    assert status == 200 and "sessionid" not in headers.get("set-cookie", ""), (status, headers)
