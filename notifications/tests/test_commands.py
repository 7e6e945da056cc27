"""Management commands, including a notify from another process reaching a socket."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from notifications.models import Notification
from testsupport.asgi import receive_type
from testsupport.processes import run_manage


def call(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_notify_command_prints_the_recipient_count(alice, bob, carol):
    """notify --user/--group prints how many users it reached."""
    Group.objects.create(name="ops").user_set.add(bob)
    out = call("notify", "--user", "alice", "--group", "ops", "--title", "Hi", "--level", "warning")
    assert out.strip() == "2"
    assert set(Notification.objects.values_list("recipient__username", "level")) == {
        ("alice", "warning"),
        ("bob", "warning"),
    }
    assert call("notify", "--all", "--title", "Everyone").strip() == "3"


@pytest.mark.django_db
def test_notify_command_refuses_unknown_names_and_sends_nothing(alice):
    """An unknown user or group is an error and nothing is stored."""
    with pytest.raises(CommandError, match="nobody"):
        call("notify", "--user", "alice", "--user", "nobody", "--title", "x")
    with pytest.raises(CommandError, match="no-such-group"):
        call("notify", "--group", "no-such-group", "--title", "x")
    with pytest.raises(CommandError):
        call("notify", "--title", "no recipients")
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_seed_demo_is_repeatable_and_prints_logins():
    """seed_demo creates the demo users once and lists them."""
    out = call("seed_demo")
    call("seed_demo")
    assert "alice" in out and "bob" in out
    users = get_user_model().objects.filter(username__in=["alice", "bob", "carol", "dave"])
    assert users.count() == 4
    assert users.get(username="alice").is_superuser


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_notification_from_another_process_reaches_this_processs_socket(socket_for, alice):
    """notify run in a separate process is delivered through Redis to a socket served here."""
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    out = await run_manage("notify", "--user", "alice", "--title", "from afar", "--body", "process two")
    assert out.strip() == "1"
    frame = await receive_type(socket, "notification", wait=20)
    assert (frame["notification"]["title"], frame["notification"]["body"]) == ("from afar", "process two")
