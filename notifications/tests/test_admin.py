"""The admin: send form, user action, read status."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from notifications import services
from notifications.models import Notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def test_send_form_sends_to_users_and_groups(admin_client, alice, bob, carol):
    """The admin form sends one notification per chosen recipient and shows the send."""
    ops = Group.objects.create(name="ops")
    carol.groups.add(ops)
    response = admin_client.post(
        "/admin/notifications/notification/send/",
        {"users": [alice.pk, bob.pk], "groups": [ops.pk], "title": "Admin says hi", "level": "info"},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Sent to 3 users" in response.content
    assert sorted(Notification.objects.values_list("recipient__username", flat=True)) == [
        "alice",
        "bob",
        "carol",
    ]


def test_send_form_requires_recipients_and_a_safe_url(admin_client, alice):
    """No recipients, or a javascript: URL, re-shows the form with errors and sends nothing."""
    response = admin_client.post("/admin/notifications/notification/send/", {"title": "x", "level": "info"})
    assert b"Choose users, groups or everyone." in response.content
    response = admin_client.post(
        "/admin/notifications/notification/send/",
        {"users": [alice.pk], "title": "x", "level": "info", "url": "javascript:alert(1)"},
    )
    assert response.status_code == 200
    assert b"must be a path" in response.content
    assert not Notification.objects.exists()


def test_user_changelist_action_opens_the_form_with_the_users(admin_client, alice, bob):
    """The user list action leads to the send form with those users chosen."""
    response = admin_client.post(
        "/admin/auth/user/",
        {"action": "send_notification_action", "_selected_action": [alice.pk, bob.pk]},
    )
    assert response.status_code == 302
    form = admin_client.get(response["Location"])
    selected = form.context["form"].initial["users"]
    assert sorted(int(pk) for pk in selected) == sorted([alice.pk, bob.pk])


def test_changelist_shows_who_read_a_send(admin_client, alice, bob):
    """Filtering by one send lists each recipient with its read state."""
    sent = services.notify(users=[alice, bob], title="release notes")
    services.mark_read(user=alice, ids=[sent[0].id if sent[0].recipient_id == alice.pk else sent[1].id])
    response = admin_client.get(f"/admin/notifications/notification/?batch={sent[0].batch}&read=yes")
    rows = list(response.context["cl"].result_list)
    assert [row.recipient.username for row in rows] == ["alice"]
