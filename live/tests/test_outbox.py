"""A socket's outbox and a worker's feed, on a connection that reads or does not (no server needed)."""

from __future__ import annotations

import orjson

from live.fanout import Feed
from live.outbox import Outbox, send_corked
from live.store import Value
from realtime.adapter import wire
from realtime.protocol import Event


class Connection(wire.Writer):
    """A pre-framed writer whose client reads when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict] = []
        self.unread = 0

    def write(self, data: bytes) -> None:
        """One frame, or several written together (corked): unmasked server text frames."""
        self.unread += len(data)
        while data:
            length, start = data[1], 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(data[2:10], "big"), 10
            self.frames.append(orjson.loads(data[start : start + length]))
            data = data[start + length :]

    def buffered(self) -> int:
        return self.unread

    def read_all(self) -> list[tuple[str, str, int | None, object]]:
        send_corked()  # what the worker corked this turn is sent before the client reads
        frames, self.frames, self.unread = self.frames, [], 0
        return [(f["type"], f["topic"], f["seq"], f["data"]) for f in frames]


class Socket:
    endpoint = "live"
    closed = False

    def __init__(self) -> None:
        self.writer = Connection()
        self.lost = False

    def hub_lost(self) -> None:
        self.lost = True


def value(topic: str, seq: int, data: object = None, epoch: int = 1) -> Value:
    return Value(topic, epoch, seq, orjson.dumps(data if data is not None else seq).decode())


async def subscribed(outbox: Outbox, *values: Value) -> None:
    for v in values:
        outbox.subscribing(v.topic)
    for v in values:
        outbox.snapshot(v)
    await outbox.flush()


async def test_a_reading_client_gets_every_value_in_order_and_never_an_older_one():
    """subscribed, then each newer update at once; a late older value or a repeat is dropped."""
    socket = Socket()
    outbox = Outbox(socket)
    await subscribed(outbox, value("a", 1))
    for v in (value("a", 2), value("a", 3), value("a", 2), value("a", 3), value("b", 9)):
        outbox.offer(v)
    expected = [("subscribed", "a", 1, 1), ("update", "a", 2, 2), ("update", "a", 3, 3)]
    assert socket.writer.read_all() == expected
    outbox.close()


async def test_a_client_that_does_not_read_gets_only_the_newest_value_of_each_topic(settings):
    """Past LIVE_BUFFER_BYTES unread, values wait one per topic (the newest); they go out once it reads."""
    settings.LIVE_BUFFER_BYTES = 1024
    socket = Socket()
    outbox = Outbox(socket)
    await subscribed(outbox, value("a", 1), value("b", 1))
    outbox.offer(value("a", 2, "x" * 2000))  # fills the buffer past the bound
    for seq in range(3, 300):
        outbox.offer(value("a", seq, "x" * 500))
        outbox.offer(value("b", seq, seq))
    assert len(outbox.pending) == 2 and outbox.held_bytes() < 2000 + 3 * 1024
    first = socket.writer.read_all()
    assert [(kind, topic, seq) for kind, topic, seq, _ in first] == [
        ("subscribed", "a", 1),
        ("subscribed", "b", 1),
        ("update", "a", 2),
    ]
    await outbox.flush()  # the client read: room again
    assert socket.writer.read_all() == [("update", "a", 299, "x" * 500), ("update", "b", 299, 299)]
    assert not outbox.pending
    outbox.close()


async def test_values_arriving_during_the_snapshot_make_the_subscribed_frame_newer():
    """An update that overtakes the snapshot read is not lost: `subscribed` carries the newest of the two."""
    socket = Socket()
    outbox = Outbox(socket)
    outbox.subscribing("a")
    outbox.offer(value("a", 6))  # published while the snapshot was being read
    outbox.snapshot(value("a", 5))
    await outbox.flush()
    outbox.offer(value("a", 6))
    outbox.offer(value("a", 7))
    assert socket.writer.read_all() == [("subscribed", "a", 6, 6), ("update", "a", 7, 7)]
    outbox.unsubscribe("a")
    outbox.offer(value("a", 8))
    assert socket.writer.read_all() == []
    outbox.close()


async def test_a_newer_epoch_wins_after_redis_lost_the_topic():
    """seq 1 of a newer epoch (the key was lost and made again) reaches a socket that had seq 500."""
    socket = Socket()
    outbox = Outbox(socket)
    await subscribed(outbox, value("a", 500))
    outbox.offer(value("a", 1, epoch=2))
    assert socket.writer.read_all()[-1] == ("update", "a", 1, 1)
    outbox.close()


async def test_a_feed_offers_each_value_once_per_socket_and_drops_late_older_ones():
    """Two sockets on one feed get seq 2 and 3 from one frame each; a late seq 1 reaches nobody."""
    feed = Feed("a")
    sockets = [Socket(), Socket()]
    outboxes = [Outbox(s) for s in sockets]
    for outbox in outboxes:
        feed.outboxes.add(outbox)
        await subscribed(outbox, value("a", 1))
    for seq in (2, 1, 3):
        event = {"type": Event.TOPIC, "topic": "a", "epoch": 1, "seq": seq, "data": str(seq)}
        assert feed.hub_deliver(event) is None
    for socket in sockets:
        assert [seq for _, _, seq, _ in socket.writer.read_all()] == [1, 2, 3]
    assert feed.hub_deliver({"type": Event.TOPIC, "topic": "a"}) is None  # malformed: dropped
    feed.hub_lost()
    assert all(socket.lost for socket in sockets)
    for outbox in outboxes:
        outbox.close()


async def test_a_value_is_never_written_past_the_slow_client_cut_off(settings):
    """With 3 KB unread and a 4 KB cut-off, a 2 KB value waits for the client to read; then it goes."""
    settings.LIVE_BUFFER_BYTES = 64 * 1024
    settings.WS_MAX_BUFFER_BYTES = 4096
    socket = Socket()
    outbox = Outbox(socket)
    await subscribed(outbox, value("a", 1))
    socket.writer.read_all()
    outbox.offer(value("a", 2, "x" * 3000))
    outbox.offer(value("a", 3, "y" * 2000))
    assert [seq for _, _, seq, _ in socket.writer.read_all()] == [2]
    assert list(outbox.pending) == ["a"]
    await outbox.flush()
    assert socket.writer.read_all() == [("update", "a", 3, "y" * 2000)]
    outbox.close()
