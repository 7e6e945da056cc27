"""The welcome's query for many users gives the same answer as the ORM's reads for each."""

from __future__ import annotations

import pytest

from notifications import selectors, services

pytestmark = pytest.mark.django_db


def test_inbox_states_match_each_users_own_read(alice, bob, carol):
    """Unread counts and newest ids (read and unread, an empty inbox, repeats) as inbox_state reads them."""
    for title in ("one", "two", "three"):
        services.notify(users=[alice], title=title)
    services.notify(users=[bob], title="only")
    services.mark_read(user=alice, ids=[selectors.inbox_state(user=alice).last_id])
    services.mark_all_read(user=bob)
    users = [alice, carol, bob, alice]
    together = selectors.inbox_states([user.pk for user in users])
    assert together == [selectors.inbox_state(user=user) for user in users]
    expected = [(2, False), (0, True), (0, False), (2, False)]
    assert [(s.unread, s.last_id is None) for s in together] == expected
