"""The /ws/notifications/ socket, through the full ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from notifications import services
from testsupport.asgi import WAIT, receive_type

pytestmark = pytest.mark.django_db(transaction=True)

notify = sync_to_async(services.notify)


async def test_anonymous_socket_is_closed_with_4401(socket_for, settings):
    """A socket with no credentials is closed 4401 once the deadline passes."""
    settings.WS_AUTH_TIMEOUT_SECONDS = 0.2
    socket = await socket_for("/ws/notifications/")
    output = await socket.receive_output(timeout=WAIT)
    assert output == {"type": "websocket.close", "code": 4401, "reason": "not_authenticated"}


async def test_foreign_origin_is_refused_even_with_a_valid_session(socket_for, alice):
    """A handshake from another site is refused, whatever its cookie."""
    socket = await socket_for("/ws/notifications/", alice, origin="https://evil.example", connect=False)
    connected, _ = await socket.connect()
    assert not connected


async def test_welcome_reports_user_unread_count_and_last_id(socket_for, alice):
    """Welcome carries the user, unread count and newest id."""
    sent = await notify(users=alice, title="one")
    newest = await notify(users=alice, title="two")
    await sync_to_async(services.mark_read)(user=alice, ids=[sent[0].id])
    socket = await socket_for("/ws/notifications/", alice)
    welcome = await receive_type(socket, "welcome")
    assert welcome == {
        "type": "welcome",
        "user": {"id": alice.id, "username": "alice"},
        "unread": 1,
        "last_id": newest[0].id,
    }


async def test_notify_arrives_live(socket_for, alice):
    """A notification created in Django code arrives on the user's socket."""
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    created = await notify(users=alice, title="Deploy done", body="v2 is live", level="success", url="/x")
    frame = await receive_type(socket, "notification")
    assert frame["notification"] == {
        "id": created[0].id,
        "title": "Deploy done",
        "body": "v2 is live",
        "level": "success",
        "url": "/x",
        "data": {},
        "created_at": frame["notification"]["created_at"],
        "read": False,
    }
    assert frame["notification"]["created_at"].endswith("Z")


async def test_every_socket_of_the_user_gets_it_and_nobody_else(socket_for, alice, bob):
    """Two tabs of Alice both get her notification; Bob's socket gets nothing."""
    tab1 = await socket_for("/ws/notifications/", alice)
    tab2 = await socket_for("/ws/notifications/", alice)
    bobs = await socket_for("/ws/notifications/", bob)
    for socket in (tab1, tab2, bobs):
        await receive_type(socket, "welcome")
    created = await notify(users=[alice], title="for alice")
    for socket in (tab1, tab2):
        frame = await receive_type(socket, "notification")
        assert frame["notification"]["id"] == created[0].id
    # Bob's next frame is the answer to his ping: nothing came before it.
    await bobs.send_json_to({"type": "ping"})
    assert await bobs.receive_json_from(timeout=WAIT) == {"type": "pong"}


async def test_rolled_back_transaction_pushes_nothing(socket_for, alice):
    """A notify inside a transaction that rolls back is neither stored nor pushed."""
    from django.db import transaction

    from notifications.models import Notification

    def notify_then_fail():
        with pytest.raises(RuntimeError), transaction.atomic():
            services.notify(users=alice, title="never")
            raise RuntimeError("rollback")

    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    await sync_to_async(notify_then_fail)()
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=WAIT) == {"type": "pong"}
    assert not await sync_to_async(Notification.objects.filter(title="never").exists)()


async def test_resume_replays_exactly_the_missing_ids_in_order(socket_for, alice, settings):
    """Resume after an id replays every later one, ascending, in capped pages."""
    settings.NOTIFICATIONS_REPLAY_LIMIT = 3
    created = [(await notify(users=alice, title=f"n{i}"))[0].id for i in range(7)]
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    got: list[int] = []
    after = created[1]
    while True:
        await socket.send_json_to({"type": "resume", "after": after})
        while (frame := await socket.receive_json_from(timeout=WAIT))["type"] == "notification":
            got.append(frame["notification"]["id"])
        assert frame["type"] == "replay_done"
        after = frame["last_id"]
        if not frame["more"]:
            break
    assert got == created[2:]
    assert after == created[-1]


async def test_resume_from_the_newest_id_answers_at_once_and_later_ids_arrive_live(socket_for, alice):
    """A reconnect that missed nothing gets replay_done with its own id; the next notification comes once."""
    created = [(await notify(users=alice, title=f"n{i}"))[0].id for i in range(2)]
    socket = await socket_for("/ws/notifications/", alice)
    assert (await receive_type(socket, "welcome"))["last_id"] == created[-1]
    await socket.send_json_to({"type": "resume", "after": created[-1]})
    assert await socket.receive_json_from(timeout=WAIT) == {
        "type": "replay_done",
        "last_id": created[-1],
        "more": False,
    }
    later = (await notify(users=alice, title="later"))[0].id
    frame = await receive_type(socket, "notification")
    assert frame["notification"]["id"] == later
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=WAIT) == {"type": "pong"}


async def test_replay_racing_a_concurrent_notify_delivers_each_id_once(socket_for, alice, monkeypatch):
    """Notifications committed just before and just after the replay query both arrive once."""
    from notifications import consumers, selectors

    older = [(await notify(users=alice, title=f"old{i}"))[0].id for i in range(3)]
    raced: list[int] = []

    def replay_with_writers_around_it(**kwargs):
        # A writer commits before the replay's query (so the replay includes
        # it and its live push must be dropped) and another right after (so
        # only its live push can deliver it).
        raced.append(services.notify(users=alice, title="before query")[0].id)
        rows = selectors.notifications_after(**kwargs)
        raced.append(services.notify(users=alice, title="after query")[0].id)
        return rows

    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    monkeypatch.setattr(consumers, "notifications_after", sync_to_async(replay_with_writers_around_it))
    await socket.send_json_to({"type": "resume", "after": 0})
    ids: list[int] = []
    while (frame := await socket.receive_json_from(timeout=WAIT))["type"] == "notification":
        ids.append(frame["notification"]["id"])
    assert frame == {"type": "replay_done", "last_id": raced[0], "more": False}
    # The "after query" one arrives live; a ping's pong proves nothing else follows.
    ids.append((await receive_type(socket, "notification"))["notification"]["id"])
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=WAIT) == {"type": "pong"}
    assert ids == [*older, *raced]


async def test_a_live_push_that_overtakes_an_earlier_one_fills_the_gap(socket_for, alice):
    """When a push arrives before an earlier one, the socket reads the gap and sends in order."""
    from channels.layers import get_channel_layer

    from realtime.fanout.hub import envelope
    from realtime.protocol import Event, user_group

    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")

    def notify_without_push(title):
        from django.db import transaction

        with transaction.atomic():
            rows = services.notify(users=alice, title=title)
            # Drop this transaction's push, as if it were still in flight.
            transaction.get_connection().run_on_commit.clear()
        return rows[0]

    first = await sync_to_async(notify_without_push)("delayed")
    second = (await notify(users=alice, title="overtaking"))[0]
    frames = [await receive_type(socket, "notification") for _ in range(2)]
    assert [f["notification"]["id"] for f in frames] == [first.id, second.id]
    # The late push of the first one, arriving now, is not delivered again.
    from notifications.serializers import notification_dict

    late = {"type": Event.NOTIFICATION, "notification": notification_dict(first), "prev_id": None}
    await get_channel_layer().group_send(user_group(alice.id), envelope(user_group(alice.id), late))
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=WAIT) == {"type": "pong"}


def _stored_unpushed(user, title):
    """A notification committed with its push dropped, as if the push were still in flight."""
    from django.db import transaction

    with transaction.atomic():
        (row,) = services.notify(users=user, title=title)
        transaction.get_connection().run_on_commit.clear()
    return row


async def test_a_gap_fill_counts_a_notification_deleted_meanwhile_as_delivered(socket_for, alice):
    """A push for a since-deleted notification: the gap before it arrives; resume counts its id as sent."""
    from channels.layers import get_channel_layer

    from notifications.serializers import notification_dict
    from realtime.fanout.hub import envelope
    from realtime.protocol import Event, user_group

    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    first = await sync_to_async(_stored_unpushed)(alice, "delayed")
    gone = await sync_to_async(_stored_unpushed)(alice, "deleted by an admin")
    live = {"type": Event.NOTIFICATION, "notification": notification_dict(gone), "prev_id": first.id}
    await gone.adelete()
    await get_channel_layer().group_send(user_group(alice.id), envelope(user_group(alice.id), live))
    assert (await receive_type(socket, "notification"))["notification"]["id"] == first.id
    # The gap fill read up to the deleted id, so the socket counts it as delivered.
    await socket.send_json_to({"type": "resume", "after": first.id})
    assert await socket.receive_json_from(timeout=WAIT) == {
        "type": "replay_done",
        "last_id": live["notification"]["id"],
        "more": False,
    }


async def test_mark_read_on_one_socket_updates_the_other(socket_for, alice):
    """mark_read from one tab sends a read frame with the new count to every tab."""
    created = await notify(users=alice, title="a")
    await notify(users=alice, title="b")
    tab1 = await socket_for("/ws/notifications/", alice)
    tab2 = await socket_for("/ws/notifications/", alice)
    for socket in (tab1, tab2):
        assert (await receive_type(socket, "welcome"))["unread"] == 2
    await tab1.send_json_to({"type": "mark_read", "ids": [created[0].id]})
    for socket in (tab1, tab2):
        assert await socket.receive_json_from(timeout=WAIT) == {
            "type": "read",
            "ids": [created[0].id],
            "all": False,
            "unread": 1,
        }
    await tab2.send_json_to({"type": "mark_all_read"})
    for socket in (tab1, tab2):
        assert await socket.receive_json_from(timeout=WAIT) == {
            "type": "read",
            "ids": [],
            "all": True,
            "unread": 0,
        }


async def test_mark_read_ignores_other_users_notifications(socket_for, alice, bob):
    """Alice cannot mark Bob's notification read."""
    bobs = await notify(users=bob, title="bob's")
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    await socket.send_json_to({"type": "mark_read", "ids": [bobs[0].id]})
    assert (await receive_type(socket, "read"))["ids"] == []
    await bobs[0].arefresh_from_db()
    assert bobs[0].read_at is None


BAD_FRAMES = [
    pytest.param({"text": "{not json"}, "invalid_json", id="bad-json"),
    pytest.param({"text": ""}, "invalid_json", id="empty"),
    pytest.param({"text": "[1, 2]"}, "invalid_message", id="array"),
    pytest.param({"text": '"hello"'}, "invalid_message", id="string"),
    pytest.param({"bytes": b"\x00\x01binary"}, "invalid_message", id="binary"),
    pytest.param({"text": '{"type": "launch"}'}, "unknown_type", id="unknown-type"),
    pytest.param({"text": '{"type": "websocket.disconnect"}'}, "unknown_type", id="handler-name"),
    pytest.param({"text": '{"type": "push.notification"}'}, "unknown_type", id="event-name"),
    pytest.param({"text": '{"type": 5}'}, "invalid_message", id="type-not-string"),
    pytest.param({"text": '{"type": "resume", "after": "3"}'}, "invalid_message", id="after-string"),
    pytest.param({"text": '{"type": "resume", "after": -1}'}, "invalid_message", id="after-negative"),
    pytest.param({"text": '{"type": "resume", "after": 1e400}'}, "invalid_json", id="after-infinite"),
    pytest.param(
        {"text": '{"type": "resume", "after": 100000000000000000000000000}'},
        "invalid_message",
        id="after-huge",
    ),
    pytest.param({"text": '{"type": "resume", "after": true}'}, "invalid_message", id="after-bool"),
    pytest.param({"text": '{"type": "resume"}'}, "invalid_message", id="after-missing"),
    pytest.param({"text": '{"type": "mark_read", "ids": "1,2"}'}, "invalid_message", id="ids-string"),
    pytest.param({"text": '{"type": "mark_read", "ids": []}'}, "invalid_message", id="ids-empty"),
    pytest.param({"text": '{"type": "mark_read", "ids": [1.5]}'}, "invalid_message", id="ids-float"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frame_gets_its_error_code_and_the_socket_keeps_working(socket_for, alice, frame, code):
    """Each malformed frame is answered with the contract's code; the socket stays usable."""
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    await socket.send_input({"type": "websocket.receive", **frame})
    error = await receive_type(socket, "error")
    assert error["code"] == code
    assert "Traceback" not in error["detail"]
    created = await notify(users=alice, title="still here")
    assert (await receive_type(socket, "notification"))["notification"]["id"] == created[0].id


async def test_error_echoes_the_frames_ref(socket_for, alice):
    """A bad frame with a string ref gets the same ref back."""
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    await socket.send_json_to({"type": "resume", "after": "x", "ref": "r-17"})
    error = await receive_type(socket, "error")
    assert (error["code"], error["ref"]) == ("invalid_message", "r-17")


async def test_frame_over_the_size_limit_closes_with_1009(socket_for, alice, settings):
    """A frame larger than WS_MAX_FRAME_BYTES closes the socket with 1009."""
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    await socket.send_to(text_data='{"type": "ping", "pad": "' + "x" * settings.WS_MAX_FRAME_BYTES + '"}')
    assert (await socket.receive_output(timeout=WAIT))["code"] == 1009


async def test_frames_before_authentication_get_not_authenticated(socket_for):
    """Without credentials, anything but auth is refused with not_authenticated."""
    socket = await socket_for("/ws/notifications/")
    await socket.send_json_to({"type": "resume", "after": 0})
    assert (await receive_type(socket, "error"))["code"] == "not_authenticated"
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=WAIT) == {"type": "pong"}


async def test_no_origin_with_only_a_cookie_is_not_authenticated(socket_for, alice, settings):
    """A client that sends no Origin cannot use the session cookie."""
    settings.WS_AUTH_TIMEOUT_SECONDS = 0.2
    socket = await socket_for("/ws/notifications/", alice, origin=None)
    assert (await socket.receive_output(timeout=WAIT))["code"] == 4401
