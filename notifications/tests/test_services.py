"""notify(), mark_read() and mark_all_read() against the real database."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from notifications import selectors, services
from notifications.models import Notification

pytestmark = pytest.mark.django_db


def test_notify_reaches_users_groups_and_everyone_once_each(alice, bob, carol, make_user):
    """Recipients are the union of users, group members and everyone, each once, active only."""
    ops = Group.objects.create(name="ops")
    bob.groups.add(ops)
    make_user("gone", is_active=False).groups.add(ops)
    sent = services.notify(users=[alice, bob], groups=["ops"], title="hi")
    assert sorted(n.recipient.username for n in sent) == ["alice", "bob"]
    everyone = services.notify(everyone=True, title="all")
    assert sorted(n.recipient.username for n in everyone) == ["alice", "bob", "carol"]


def test_notify_accepts_a_queryset_and_group_objects(alice, bob):
    """A queryset of users and Group objects work as recipients."""
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    from django.contrib.auth import get_user_model

    sent = services.notify(users=get_user_model().objects.filter(username="bob"), groups=[team], title="x")
    assert sorted(n.recipient_id for n in sent) == sorted([alice.id, bob.id])


def test_unknown_group_names_stop_the_send(alice):
    """An unknown group name raises and stores nothing."""
    with pytest.raises(services.UnknownRecipients) as caught:
        services.notify(users=alice, groups=["nobody-here"], title="x")
    assert caught.value.unknown_groups == ["nobody-here"]
    assert not Notification.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": "  "}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"title": "ok", "level": "panic"}, "level"),
        ({"title": "ok", "url": "javascript:alert(1)"}, "url"),
        ({"title": "ok", "data": ["not", "an", "object"]}, "data"),
        ({"title": "nul\x00byte"}, "title"),
    ],
)
def test_invalid_notification_is_refused_with_the_field_named(alice, fields, field):
    """Bad fields raise ValidationError naming the field, and nothing is stored."""
    with pytest.raises(ValidationError) as caught:
        services.notify(users=alice, **fields)
    assert field in caught.value.message_dict
    assert not Notification.objects.exists()


# Links that would leave the site, or that browsers rewrite into ones that do (issue 14 item 8).
UNSAFE_URLS = [
    "//evil.example",
    "/\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/ok/\\..\\evil",
    "/ok\x00",
    "/ok\x7f",
    "/o\x85k",
    "http:/\\evil.example",
    "https:\\\\evil.example",
    "http:///evil.example",
    "https://",
    "javascript:alert(1)",
    "data:text/html,x",
    "ftp://evil.example/",
    "evil.example/path",
]
SAFE_URLS = ["/", "/chat/lobby/", "/notifications/?a=1#b", "http://example.com", "HTTPS://example.com/x?y=1"]


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_a_url_that_is_not_a_plain_path_or_http_link_is_refused(alice, url):
    """notify() refuses `//host`, backslashes and control characters in `url` (ValidationError)."""
    with pytest.raises(ValidationError) as caught:
        services.notify(users=alice, title="t", url=url)
    assert "url" in caught.value.message_dict
    assert not Notification.objects.exists()


@pytest.mark.parametrize("url", SAFE_URLS)
def test_site_paths_and_http_links_are_stored_as_given(alice, url):
    """A path with one leading / or an absolute http(s) URL is stored unchanged."""
    (sent,) = services.notify(users=alice, title="t", url=url)
    assert Notification.objects.get(pk=sent.pk).url == url


@pytest.mark.postgres
def test_notifying_many_users_is_one_insert(django_user_model, django_assert_max_num_queries):
    """A send to 2,000 users costs a handful of queries, not one per user."""
    django_user_model.objects.bulk_create([django_user_model(username=f"user{i}") for i in range(2000)])
    with django_assert_max_num_queries(8):
        sent = services.notify(everyone=True, title="maintenance tonight")
    assert len(sent) == 2000
    assert Notification.objects.count() == 2000
    assert len({n.batch for n in sent}) == 1


def test_mark_read_and_mark_all_read_return_the_unread_count(alice):
    """Unread counts follow mark_read and mark_all_read."""
    first, *_ = [services.notify(users=alice, title=f"n{i}")[0] for i in range(3)]
    assert services.mark_read(user=alice, ids=[first.id]) == 2
    assert selectors.unread_count(user=alice) == 2
    assert services.mark_all_read(user=alice) == 0
    assert not Notification.objects.filter(read_at__isnull=True).exists()


def test_inbox_page_walks_back_with_the_cursor(alice):
    """Pages are newest first and next_before continues where the last page ended."""
    ids = [services.notify(users=alice, title=f"n{i}")[0].id for i in range(5)]
    page, cursor = selectors.inbox_page(user=alice, limit=2)
    assert [n.id for n in page] == [ids[4], ids[3]]
    page, cursor = selectors.inbox_page(user=alice, limit=2, before=cursor)
    assert [n.id for n in page] == [ids[2], ids[1]]
    page, cursor = selectors.inbox_page(user=alice, limit=2, before=cursor)
    assert ([n.id for n in page], cursor) == ([ids[0]], None)
