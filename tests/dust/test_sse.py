"""The event-stream decoder: every line ending, any chunking, and its size bound."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.dust.sse import SseDecoder, SseFrame, SseTooLarge

DUST_LIKE = (
    "\ufeffevent: dust-handshake\ndata: {}\n\n"
    ": keep-alive comment\n"
    'data: {"eventId":"1-0","data":{"type":"generation_tokens","text":"h\u00e9llo \u2603"}}\n\n'
    "id: 7\r\ndata: first line\r\ndata:second line\r\n\r\n"
    "event: custom\rdata:  two spaces\r\r"
    "event: no-data-so-not-dispatched\nid: 8\n\n"
    "data\n\n"
    "data: done\n\n"
)

EXPECTED = [
    SseFrame(event="dust-handshake", data="{}"),
    SseFrame(data='{"eventId":"1-0","data":{"type":"generation_tokens","text":"h\u00e9llo \u2603"}}'),
    SseFrame(data="first line\nsecond line", id="7"),
    SseFrame(event="custom", data=" two spaces", id="7"),
    SseFrame(data="", id="8"),
    SseFrame(data="done", id="8"),
]


def decode(chunks: list[bytes], decoder: SseDecoder | None = None) -> list[SseFrame]:
    decoder = decoder or SseDecoder()
    return [frame for chunk in chunks for frame in decoder.feed(chunk)]


def test_decodes_every_line_ending_comments_ids_and_fields_in_one_chunk() -> None:
    assert decode([DUST_LIKE.encode()]) == EXPECTED


def test_one_byte_at_a_time_gives_the_same_events() -> None:
    raw = DUST_LIKE.encode()
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(DUST_LIKE.encode())), max_size=30))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    raw = DUST_LIKE.encode()
    bounds = [0, *sorted(cuts), len(raw)]
    assert decode([raw[a:b] for a, b in itertools.pairwise(bounds)]) == EXPECTED


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [SseFrame(data="a\nb")]


def test_an_unfinished_event_is_not_dispatched() -> None:
    assert decode([b"data: half an event\n"]) == []


def test_an_event_beyond_the_limit_is_refused() -> None:
    decoder = SseDecoder(max_event_bytes=64)
    decoder.feed(b"data: " + b"x" * 40 + b"\n")
    with pytest.raises(SseTooLarge):
        decoder.feed(b"data: " + b"y" * 40 + b"\n")


def test_an_unterminated_line_beyond_the_limit_is_refused() -> None:
    decoder = SseDecoder(max_event_bytes=64)
    with pytest.raises(SseTooLarge):
        for _ in range(10):
            decoder.feed(b"z" * 16)


def test_the_limit_counts_one_event_at_a_time() -> None:
    decoder = SseDecoder(max_event_bytes=64)
    frames = decode([b"data: " + b"x" * 40 + b"\n\n"] * 5, decoder)
    assert len(frames) == 5
