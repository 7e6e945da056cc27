"""The pre-framed text frame is a valid RFC 6455 server frame at every length boundary."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from realtime.adapter.wire import text_frame


def parse(data: bytes) -> Frame:
    """Decode one server-to-client frame the way a client library does."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("the frame was incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 300_000])
def test_text_frame_round_trips_at_each_length_encoding(size):
    """7-bit, 16-bit and 64-bit lengths all decode to the same text, final and unmasked."""
    text = "x" * size
    frame = parse(text_frame(text))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data.decode() == text


def test_text_frame_counts_bytes_not_characters():
    """A non-ASCII payload's length is its UTF-8 byte length."""
    text = '{"body":"é✓🙂"}' * 20
    frame = parse(text_frame(text))
    assert frame.data.decode("utf-8") == text
