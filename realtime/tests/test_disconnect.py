"""Forced disconnects: logout, deactivation and the admin's action close a user's sockets (4401)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client

from realtime.authentication.tokens import issue_token
from testsupport.asgi import closed_with, http, receive_type
from testsupport.auth import session_headers

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/notifications/"
ROOT = Path(__file__).resolve().parents[2]


async def open_sockets(socket_for, user):
    """A browser (session) socket and a script (token) socket of the user."""
    browser = await socket_for(PATH, user)
    script = await socket_for(PATH, origin=None, token=(await sync_to_async(issue_token)(user=user)).access)
    for socket in (browser, script):
        await receive_type(socket, "welcome")
    return browser, script


async def assert_still_open(socket) -> None:
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from() == {"type": "pong"}


async def test_logout_closes_every_socket_of_the_user(socket_for, alice, bob):
    """POST /accounts/logout/ closes the user's session and token sockets with 4401 logged_out."""
    sockets = await open_sockets(socket_for, alice)
    bobs = await socket_for(PATH, bob)
    await receive_type(bobs, "welcome")
    status, _, _ = await http(
        "POST", "/accounts/logout/", headers=await sync_to_async(session_headers)(alice)
    )
    assert status in (200, 302)
    for socket in sockets:
        assert await closed_with(socket) == (4401, "logged_out")
    await assert_still_open(bobs)


def _test_database_url() -> str:
    """DATABASE_URL of the test database this run created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


@pytest.mark.redis
@pytest.mark.postgres
async def test_logout_in_another_process_closes_the_sockets_here(socket_for, alice, bob):
    """A logout served by another process (its own Redis connection) closes this process's sockets."""
    sockets = await open_sockets(socket_for, alice)
    bobs = await socket_for(PATH, bob)
    await receive_type(bobs, "welcome")
    script = (
        "from django.contrib.auth import get_user_model\n"
        "from django.test import Client\n"
        "client = Client()\n"
        "client.force_login(get_user_model().objects.get(username='alice'))\n"
        "print(client.post('/accounts/logout/').status_code)\n"
    )
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "REDIS_NAMESPACE": settings.REDIS_NAMESPACE,
        "DJANGO_ALLOWED_HOSTS": "testserver,localhost",
    }
    result = await sync_to_async(subprocess.run)(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] in ("200", "302")
    for socket in sockets:
        assert await closed_with(socket) == (4401, "logged_out")
    await assert_still_open(bobs)


def _admin_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


async def test_admin_disconnect_action_closes_the_sockets(socket_for, alice, bob, make_user):
    """The admin's "Disconnect" action closes the selected users' sockets; they stay active."""
    sockets = await open_sockets(socket_for, alice)
    bobs = await socket_for(PATH, bob)
    await receive_type(bobs, "welcome")

    def run_action():
        response = _admin_client(make_user).post(
            "/admin/auth/user/", {"action": "disconnect_users_action", "_selected_action": [alice.pk]}
        )
        assert response.status_code == 302

    await sync_to_async(run_action)()
    for socket in sockets:
        assert await closed_with(socket) == (4401, "disconnected")
    await alice.arefresh_from_db()
    assert alice.is_active
    await assert_still_open(bobs)


async def test_admin_deactivate_action_closes_the_sockets(socket_for, alice, make_user):
    """The admin's "Deactivate" action deactivates the user and closes their sockets."""
    sockets = await open_sockets(socket_for, alice)

    def run_action():
        response = _admin_client(make_user).post(
            "/admin/auth/user/", {"action": "deactivate_users_action", "_selected_action": [alice.pk]}
        )
        assert response.status_code == 302

    await sync_to_async(run_action)()
    for socket in sockets:
        assert await closed_with(socket) == (4401, "deactivated")
    await alice.arefresh_from_db()
    assert not alice.is_active


async def test_unticking_active_in_the_user_change_form_closes_the_sockets(socket_for, alice, make_user):
    """Saving the admin's user form with "active" unticked closes the user's sockets."""
    sockets = await open_sockets(socket_for, alice)

    def save_inactive():
        client = _admin_client(make_user)
        url = f"/admin/auth/user/{alice.pk}/change/"
        form = client.get(url).context["adminform"].form
        data = {}
        for name, field in form.fields.items():
            value = form.initial.get(name, field.initial)
            if value is None or name == "password":
                continue
            if hasattr(value, "all"):  # groups, permissions
                value = [obj.pk for obj in value.all()]
            if hasattr(value, "strftime"):
                data[f"{name}_0"], data[f"{name}_1"] = value.strftime("%Y-%m-%d"), value.strftime("%H:%M:%S")
                continue
            if value is True or value is False:
                if value:
                    data[name] = "on"
                continue
            data[name] = value
        data.pop("is_active", None)
        response = client.post(url, data)
        assert response.status_code == 302, response.context["adminform"].form.errors

    await sync_to_async(save_inactive)()
    for socket in sockets:
        assert await closed_with(socket) == (4401, "deactivated")


async def test_saving_a_user_inactive_from_any_code_closes_the_sockets(socket_for, alice, bob):
    """`user.is_active = False; user.save()` closes the session and token sockets (4401); nothing follows."""
    from notifications.services import notify

    sockets = await open_sockets(socket_for, alice)
    bobs = await socket_for(PATH, bob)
    await receive_type(bobs, "welcome")

    def deactivate():
        alice.is_active = False
        alice.save()

    await sync_to_async(deactivate)()
    for socket in sockets:
        assert await closed_with(socket) == (4401, "deactivated")
    await sync_to_async(notify)(users=[alice, bob], title="after")
    assert (await receive_type(bobs, "notification"))["notification"]["title"] == "after"
    for socket in sockets:
        assert await socket.receive_nothing(timeout=0.2)


async def test_saving_a_user_without_deactivating_keeps_the_sockets(socket_for, alice):
    """A save that leaves is_active as it was (or only touches other fields) closes nothing."""
    from notifications.services import notify

    sockets = await open_sockets(socket_for, alice)

    def edit():
        alice.first_name = "Alice"
        alice.save()
        alice.is_active = False
        alice.save(update_fields=["first_name"])  # is_active not written: still active
        alice.is_active = True

    await sync_to_async(edit)()
    await sync_to_async(notify)(users=alice, title="still here")
    for socket in sockets:
        assert (await receive_type(socket, "notification"))["notification"]["title"] == "still here"
        await assert_still_open(socket)
