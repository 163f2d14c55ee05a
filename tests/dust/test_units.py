"""Frame parsing, the reconnect state machine, backoff bounds and models, with no server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from bridge.dust import events as events_module
from bridge.dust.client import BACKOFF_CAP, backoff_delay
from bridge.dust.errors import DustNotFound, DustServerError, DustStreamError
from bridge.dust.events import AgentEvent, StreamBroken, follow_events, parse_frame
from bridge.dust.models import AgentMessage, ContentFragment, Conversation, MessageContext, UserMessage
from bridge.dust.sse import SseFrame


def frame(event_id: str, event_type: str, **fields: Any) -> SseFrame:
    return SseFrame(data=json.dumps({"eventId": event_id, "data": {"type": event_type, **fields}}))


# --- parse_frame -------------------------------------------------------------------------------


def test_parse_frame_reads_real_frames() -> None:
    event = parse_frame(frame("17-0", "generation_tokens", text="Hi", classification="tokens"))
    assert event == AgentEvent(
        "17-0", "generation_tokens", {"type": "generation_tokens", "text": "Hi", "classification": "tokens"}
    )
    assert not event.is_terminal
    assert parse_frame(frame("17-1", "agent_message_success")).is_terminal  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "sse",
    [
        SseFrame(event="dust-handshake", data="{}"),
        SseFrame(data="done"),
        SseFrame(data="not json"),
        SseFrame(data="[1, 2]"),
        SseFrame(data='{"eventId": "1-0"}'),
        SseFrame(data='{"eventId": "1-0", "data": {"text": "no type"}}'),
        SseFrame(data='{"data": {"type": "generation_tokens"}}'),
        SseFrame(data=""),
    ],
)
def test_parse_frame_skips_non_events(sse: SseFrame) -> None:
    assert parse_frame(sse) is None


# --- follow_events with a scripted connection --------------------------------------------------

Script = list[list[SseFrame] | Exception]


def scripted(script: Script, calls: list[str | None]) -> Callable[..., Any]:
    """`open_connection` that plays one script entry per connection (frames, or an error to raise)."""

    @asynccontextmanager
    async def open_connection(
        last_event_id: str | None, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[Any]]:
        calls.append(last_event_id)
        step = script.pop(0) if script else []
        if isinstance(step, Exception):
            raise step

        async def frames() -> AsyncIterator[SseFrame]:
            for item in step:
                yield item

        yield frames()

    return open_connection


async def collect(events: AsyncIterator[AgentEvent]) -> list[AgentEvent]:
    return [event async for event in events]


async def test_reconnects_with_last_event_id_and_drops_replayed_events() -> None:
    calls: list[str | None] = []
    script: Script = [
        [frame("1-0", "generation_tokens", text="a"), frame("1-1", "generation_tokens", text="b")],
        # The server replays 1-1 after a reconnect: it must not be yielded twice.
        [frame("1-1", "generation_tokens", text="b"), frame("1-2", "agent_message_success")],
    ]
    events = await collect(follow_events(scripted(script, calls), reconnect_delay=0.01))
    assert [e.event_id for e in events] == ["1-0", "1-1", "1-2"]
    assert calls == [None, "1-1"]


async def test_resumes_from_given_last_event_id() -> None:
    calls: list[str | None] = []
    script: Script = [[frame("2-0", "agent_message_success")]]
    await collect(follow_events(scripted(script, calls), last_event_id="1-9"))
    assert calls == ["1-9"]


async def test_gives_up_after_max_reconnects_without_progress() -> None:
    calls: list[str | None] = []
    script: Script = [[frame("1-0", "generation_tokens", text="a")]]
    script += [DustServerError("boom", status=503) if i % 2 else [] for i in range(20)]
    with pytest.raises(DustStreamError) as caught:
        await collect(follow_events(scripted(script, calls), max_reconnects=3, reconnect_delay=0.001))
    assert caught.value.type == "stream_reconnects_exhausted"
    assert len(calls) == 1 + 4  # the productive one, then 4 failures (> 3 reconnects)
    assert calls[1:] == ["1-0"] * 4


async def test_progress_resets_the_failure_count() -> None:
    calls: list[str | None] = []
    script: Script = [
        [],
        [],
        [frame("1-0", "generation_tokens", text="a")],
        [],
        [],
        [frame("1-1", "agent_error", error={"code": "x", "message": "y"})],
    ]
    events = await collect(follow_events(scripted(script, calls), max_reconnects=2, reconnect_delay=0.001))
    assert [e.type for e in events] == ["generation_tokens", "agent_error"]


async def test_long_quiet_connections_are_not_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dust ends a silent message stream after about 60 s; a long tool call must not exhaust reconnects.
    monkeypatch.setattr(events_module, "QUIET_CONNECTION_SECONDS", 0.05)
    calls: list[str | None] = []
    quiet_then_done: list[SseFrame] = []

    @asynccontextmanager
    async def open_connection(
        last_event_id: str | None, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[Any]]:
        calls.append(last_event_id)

        async def frames() -> AsyncIterator[SseFrame]:
            await anyio.sleep(0.06)
            for item in quiet_then_done if len(calls) < 6 else [frame("1-0", "agent_message_success")]:
                yield item

        yield frames()

    events = await collect(follow_events(open_connection, max_reconnects=1, reconnect_delay=0.001))
    assert [e.type for e in events] == ["agent_message_success"]
    assert len(calls) == 6


async def test_not_found_is_raised_at_once() -> None:
    calls: list[str | None] = []
    script: Script = [DustNotFound("no such message", status=404, type="message_not_found")]
    with pytest.raises(DustNotFound):
        await collect(follow_events(scripted(script, calls)))
    assert len(calls) == 1


async def test_broken_connections_are_retried() -> None:
    calls: list[str | None] = []
    script: Script = [StreamBroken("SocketTimeoutError"), [frame("1-0", "agent_message_success")]]
    events = await collect(follow_events(scripted(script, calls), reconnect_delay=0.001))
    assert [e.type for e in events] == ["agent_message_success"]


async def test_total_timeout_ends_the_stream() -> None:
    calls: list[str | None] = []
    script: Script = [[] for _ in range(1000)]
    with anyio.fail_after(5):
        with pytest.raises(DustStreamError) as caught:
            await collect(
                follow_events(
                    scripted(script, calls), total_timeout=0.3, max_reconnects=1000, reconnect_delay=0.05
                )
            )
    assert caught.value.type == "stream_timeout"


async def test_closing_the_generator_closes_the_connection() -> None:
    closed: list[bool] = []

    @asynccontextmanager
    async def open_connection(
        last_event_id: str | None, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[Any]]:
        async def frames() -> AsyncIterator[SseFrame]:
            yield frame("1-0", "generation_tokens", text="a")
            await anyio.sleep(3600)
            yield frame("1-1", "agent_message_success")

        try:
            yield frames()
        finally:
            closed.append(True)

    events = follow_events(open_connection)
    first = await anext(events)
    assert first.event_id == "1-0"
    await events.aclose()
    assert closed == [True]


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_is_full_jitter_within_cap() -> None:
    for attempt in range(12):
        for _ in range(50):
            delay = backoff_delay(attempt)
            assert 0.0 <= delay <= min(BACKOFF_CAP, 0.25 * 2**attempt)


def test_backoff_honours_retry_after_but_caps_it() -> None:
    assert backoff_delay(0, retry_after=1.5) == 1.5
    assert backoff_delay(0, retry_after=600) == BACKOFF_CAP
    assert backoff_delay(3, retry_after=-1) == 0.0


# --- models -------------------------------------------------------------------------------------


def test_conversation_current_messages_and_agent_message_for() -> None:
    conversation = Conversation.model_validate(
        {
            "sId": "conv000001",
            "title": None,
            "created": 1,
            "unknownField": True,
            "content": [
                [
                    {
                        "type": "content_fragment",
                        "sId": "cf00000001",
                        "title": "a.txt",
                        "contentType": "text/plain",
                        "fileId": "fil_1",
                    }
                ],
                [
                    {
                        "type": "user_message",
                        "sId": "um0000000v",
                        "content": "old",
                        "created": 2,
                        "mentions": [],
                    },
                    {
                        "type": "user_message",
                        "sId": "um00000001",
                        "content": "hi",
                        "created": 3,
                        "mentions": [{"configurationId": "echo000001"}],
                    },
                ],
                [
                    {
                        "type": "agent_message",
                        "sId": "am00000001",
                        "status": "created",
                        "content": None,
                        "parentMessageId": "um00000001",
                        "error": None,
                        "created": 4,
                        "configuration": {"sId": "echo000001", "name": "echo"},
                    }
                ],
                [{"type": "something_new", "sId": "x"}],
                [],
            ],
        }
    )
    messages = conversation.current_messages()
    assert [type(m) for m in messages] == [ContentFragment, UserMessage, AgentMessage]
    assert messages[1].s_id == "um00000001"
    answer = conversation.agent_message_for("um00000001")
    assert answer is not None
    assert answer.s_id == "am00000001"
    assert answer.configuration_id == "echo000001"
    assert conversation.agent_message_for("um0000000v") is None


def test_message_context_body() -> None:
    assert MessageContext("bot", "UTC").to_dict() == {"username": "bot", "timezone": "UTC", "origin": "api"}
    full = MessageContext("bot", "Europe/Paris", full_name="Bot", email="b@example.com").to_dict()
    assert full["fullName"] == "Bot" and full["email"] == "b@example.com"
