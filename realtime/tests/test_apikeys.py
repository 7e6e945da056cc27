"""API keys: creation (command, admin), hashing, revocation, and who may publish."""

from __future__ import annotations

from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from realtime.authentication import apikeys
from realtime.authentication.models import ApiKey
from testsupport.asgi import http
from testsupport.auth import make_token, session_headers

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/api/publish/notifications/"
BODY = {"users": ["alice"], "title": "hello"}


async def publish_with(*headers) -> tuple[int, dict]:
    status, body, _ = await http("POST", PATH, body=BODY, headers=list(headers))
    return status, body


def api_key_header(key: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Api-Key {key}".encode())


async def test_createapikey_prints_the_key_alone_on_its_last_line(alice):
    """The command's last stdout line is the key, which works; only its hash is stored."""
    out = StringIO()
    await sync_to_async(call_command)("createapikey", "billing", stdout=out, stderr=StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    assert key.startswith("rk_") and " " not in key
    row = await ApiKey.objects.aget(name="billing")
    assert key not in (row.hashed_key, row.prefix, row.name)
    assert len(row.hashed_key) == 64
    assert (await publish_with(api_key_header(key)))[0] == 202
    await row.arefresh_from_db()
    assert row.last_used_at is not None


async def test_revoked_key_gets_401_at_once(alice):
    """A key works until it is revoked, and the very next request after that is 401."""
    row, key = await sync_to_async(apikeys.create_api_key)(name="svc")
    assert (await publish_with(api_key_header(key)))[0] == 202
    await sync_to_async(apikeys.revoke_api_keys)(keys=[row.pk])
    status, body = await publish_with(api_key_header(key))
    assert (status, body["error"]) == (401, "not_authenticated")


async def test_wrong_or_missing_key_is_401(alice):
    """No key, a malformed key, a key with the right prefix but wrong secret: all 401."""
    _row, key = await sync_to_async(apikeys.create_api_key)(name="svc")
    tampered = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for headers in ([], [api_key_header("garbage")], [api_key_header(tampered)], [api_key_header("")]):
        status, body = await publish_with(*headers)
        assert (status, body["error"]) == (401, "not_authenticated"), headers


async def test_publish_refuses_user_credentials(alice):
    """A bearer token or a session (with CSRF) is not an API key: 401."""
    status, _ = await publish_with((b"authorization", f"Bearer {make_token(alice)}".encode()))
    assert status == 401
    status, _ = await publish_with(*await sync_to_async(session_headers)(alice))
    assert status == 401


async def test_key_hashed_under_a_fallback_secret_still_works_and_is_rehashed(alice):
    """After a SECRET_KEY rotation with the old one in SECRET_KEY_FALLBACKS, keys keep working."""
    row, key = await sync_to_async(apikeys.create_api_key)(name="svc")
    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-rotated-secret-key-for-this-test", [old]
    try:
        assert (await publish_with(api_key_header(key)))[0] == 202
        await row.arefresh_from_db()
        assert row.hashed_key == apikeys._hash(key, settings.SECRET_KEY)
    finally:
        settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = old, []


def admin_client(make_user) -> Client:
    admin = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return client


async def test_admin_creates_a_key_and_shows_it_once(make_user):
    """The admin's add page shows the new key once; the change list and change page never do."""

    def scenario():
        client = admin_client(make_user)
        response = client.post("/admin/authentication/apikey/add/", {"name": "from admin"})
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"]
        row = ApiKey.objects.get(name="from admin")
        page = response.content.decode()
        start = page.index(f"rk_{row.prefix}_")
        key = page[start : page.index("<", start)]
        assert apikeys.authenticate_api_key(key) is not None
        for url in ("/admin/authentication/apikey/", f"/admin/authentication/apikey/{row.pk}/change/"):
            assert key not in client.get(url).content.decode()

    await sync_to_async(scenario)()


async def test_old_admin_links_lead_to_the_keys(make_user):
    """Links to the API keys' old admin pages (under realtime/) still lead to them."""
    row, _key = await sync_to_async(apikeys.create_api_key)(name="svc")

    def scenario():
        client = admin_client(make_user)
        response = client.get(f"/admin/realtime/apikey/{row.pk}/change/?_changelist_filters=x", follow=True)
        assert response.redirect_chain[0] == (
            f"/admin/authentication/apikey/{row.pk}/change/?_changelist_filters=x",
            301,
        )
        assert response.status_code == 200
        assert "svc" in response.content.decode()

    await sync_to_async(scenario)()


async def test_admin_revoke_action(make_user):
    """The admin's revoke action revokes the selected keys."""
    row, key = await sync_to_async(apikeys.create_api_key)(name="svc")

    def scenario():
        client = admin_client(make_user)
        response = client.post(
            "/admin/authentication/apikey/",
            {"action": "revoke_keys", "_selected_action": [row.pk]},
            follow=True,
        )
        assert response.status_code == 200

    await sync_to_async(scenario)()
    await row.arefresh_from_db()
    assert row.revoked_at is not None
    assert await sync_to_async(apikeys.authenticate_api_key)(key) is None
