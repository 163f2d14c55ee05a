"""The streaming relay: coalesced tokens, tool status lines, heartbeats while Dust is silent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from bridge.domain.relay import StreamRelay
from bridge.dust.events import AgentEvent
from bridge.dust.pauses import PendingAction


def tokens(text: str, n: int, classification: str = "tokens") -> AgentEvent:
    return AgentEvent(
        event_id=f"1-{n}", type="generation_tokens", data={"text": text, "classification": classification}
    )


def success(content: str) -> AgentEvent:
    return AgentEvent(event_id="9-9", type="agent_message_success", data={"message": {"content": content}})


async def feed(events: list[AgentEvent | float]) -> AsyncIterator[AgentEvent]:
    for item in events:
        if isinstance(item, float):
            await anyio.sleep(item)
        else:
            yield item


def make_relay(sent: list[str], **kw: float) -> StreamRelay:
    async def emit(message: str) -> None:
        sent.append(message)

    return StreamRelay(
        emit,
        heartbeat_seconds=kw.get("heartbeat", 10.0),
        coalesce_seconds=kw.get("coalesce", 10.0),
        coalesce_chars=int(kw.get("chars", 10)),
    )


async def test_first_chunk_goes_out_at_once_then_tokens_are_coalesced_by_size() -> None:
    sent: list[str] = []
    events: list[AgentEvent | float] = [tokens(c, i) for i, c in enumerate("abcdefghijklmnopqrstuvwxy")]
    events.append(success("abcdefghijklmnopqrstuvwxy"))
    outcome = await make_relay(sent, chars=10).run(feed(events))
    assert outcome.text == "abcdefghijklmnopqrstuvwxy"
    assert sent == ["a", "bcdefghijk", "lmnopqrstu", "vwxy"]
    assert outcome.terminal is not None and outcome.terminal.type == "agent_message_success"


async def test_tokens_are_flushed_after_the_coalescing_interval() -> None:
    sent: list[str] = []
    events: list[AgentEvent | float] = [
        tokens("ab", 1),
        tokens("cd", 2),
        0.3,
        tokens("ef", 3),
        success("abcdef"),
    ]
    await make_relay(sent, chars=1000, coalesce=0.05).run(feed(events))
    assert sent == ["ab", "cd", "ef"]


async def test_heartbeats_while_dust_is_silent_and_tool_status_lines() -> None:
    sent: list[str] = []
    events: list[AgentEvent | float] = [
        AgentEvent(event_id="1-1", type="tool_call_started", data={"toolName": "web_search"}),
        0.35,
        AgentEvent(event_id="1-2", type="agent_action_success", data={"action": {"toolName": "web_search"}}),
        tokens("done", 3),
        success("done"),
    ]
    outcome = await make_relay(sent, heartbeat=0.1).run(feed(events))
    assert sent[0] == "[tool] web_search started"
    beats = [m for m in sent if m.startswith("[waiting]")]
    assert len(beats) >= 2
    assert all("web_search running" in m for m in beats)
    assert "[tool] web_search done" in sent
    assert outcome.heartbeats == len(beats)
    assert sent[-1] == "done"


async def test_chain_of_thought_is_hidden_by_default() -> None:
    sent: list[str] = []
    events: list[AgentEvent | float] = [tokens("hmm", 1, "chain_of_thought"), tokens("hi", 2), success("hi")]
    outcome = await make_relay(sent).run(feed(events))
    assert sent == ["hi"]
    assert outcome.text == "hi"


async def test_stream_error_is_reraised_after_flushing() -> None:
    sent: list[str] = []

    async def broken() -> AsyncIterator[AgentEvent]:
        yield tokens("partial", 1)
        raise ConnectionError("cut")

    with pytest.raises(ConnectionError):
        await make_relay(sent).run(broken())
    assert sent == ["partial"]


async def test_agent_error_is_the_terminal_event() -> None:
    sent: list[str] = []
    error = AgentEvent(event_id="1-2", type="agent_error", data={"error": {"code": "x", "message": "boom"}})
    outcome = await make_relay(sent).run(feed([tokens("a", 1), error]))
    assert outcome.terminal is error
    assert outcome.text == "a"


async def test_tokens_keep_flowing_and_are_still_flushed_at_the_interval() -> None:
    sent: list[str] = []
    events: list[AgentEvent | float] = []
    for i in range(30):
        events += [tokens("x", i), 0.01]
    events.append(success("x" * 30))
    outcome = await make_relay(sent, chars=1000, coalesce=0.05).run(feed(events))
    assert "".join(sent) == "x" * 30 and sent[0] == "x"
    # Neither one notification per token nor everything held to the end.
    assert 3 <= len(sent) <= 20
    assert outcome.notifications == len(sent)


async def test_stream_that_ends_without_a_terminal_event_flushes_its_text() -> None:
    sent: list[str] = []
    outcome = await make_relay(sent).run(feed([tokens("ab", 1), tokens("cd", 2)]))
    assert sent == ["ab", "cd"]
    assert outcome.text == "abcd" and outcome.terminal is None


@pytest.mark.parametrize("when", ["token", "heartbeat"])
async def test_a_failed_emit_is_raised_as_itself(when: str) -> None:
    async def emit(message: str) -> None:
        if when == "token" or message.startswith("[waiting]"):
            raise anyio.BrokenResourceError("client gone")

    relay = StreamRelay(emit, heartbeat_seconds=0.05, coalesce_seconds=10.0, coalesce_chars=10)
    with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError):
        await relay.run(feed([0.5] if when == "heartbeat" else [tokens("a", 1), 0.5]))


async def test_cancelling_the_relay_closes_the_event_stream_and_stops_emitting() -> None:
    sent: list[str] = []
    closed = anyio.Event()

    async def endless() -> AsyncIterator[AgentEvent]:
        try:
            yield tokens("a", 1)
            await anyio.sleep_forever()
            yield tokens("never", 2)
        finally:
            closed.set()

    with anyio.move_on_after(0.2):
        await make_relay(sent, heartbeat=0.05).run(endless())
    assert closed.is_set()
    count = len(sent)
    await anyio.sleep(0.15)
    assert len(sent) == count and sent[0] == "a" and any(m.startswith("[waiting]") for m in sent)


async def test_a_chunk_the_timer_is_still_sending_when_the_answer_ends_is_not_lost() -> None:
    sent: list[str] = []

    async def slow_emit(message: str) -> None:  # a slow client: each notification takes 50 ms
        await anyio.sleep(0.05)
        sent.append(message)

    async def events() -> AsyncIterator[AgentEvent]:
        yield tokens("Hello, ", 1)  # the first chunk goes out at once
        await anyio.sleep(0.06)
        yield tokens("world", 2)  # pending: the timer flushes it 10 ms later...
        await anyio.sleep(0.02)  # ...and is inside the slow emit when the answer ends
        yield success("Hello, world")

    relay = StreamRelay(slow_emit, heartbeat_seconds=15, coalesce_seconds=0.01, coalesce_chars=200)
    outcome = await relay.run(events())
    assert outcome.text == "Hello, world"
    assert "".join(sent) == "Hello, world"


async def test_text_after_a_quiet_spell_goes_out_at_once_not_at_the_next_interval() -> None:
    # Coalescing caps the rate of notifications; a token that comes after the interval has already
    # passed has nothing to be coalesced with, so holding it back would only delay the user.
    sent: list[tuple[str, float]] = []

    async def emit(message: str) -> None:
        sent.append((message, anyio.current_time()))

    relay = StreamRelay(emit, heartbeat_seconds=10.0, coalesce_seconds=0.3, coalesce_chars=1000)
    began = anyio.current_time()
    await relay.run(feed([tokens("a", 1), 0.4, tokens("b", 2), 0.4, tokens("c", 3), success("abc")]))
    assert [m for m, _ in sent] == ["a", "b", "c"]
    # Each token left when it arrived (0, 0.4, 0.8 s), not 0.3 s later.
    assert sent[1][1] - began < 0.4 + 0.15
    assert sent[2][1] - began < 0.8 + 0.15


def approval(n: int, action_id: str, last: bool = True) -> AgentEvent:
    return AgentEvent(
        event_id=f"2-{n}",
        type="tool_approve_execution",
        data={
            "type": "tool_approve_execution",
            "actionId": action_id,
            "conversationId": "child",
            "messageId": "msg_child",
            "inputs": {"to": "team@example.com"},
            "stake": "high",
            "metadata": {"toolName": "send_email", "mcpServerName": "gmail"},
            "isLastBlockingEventForStep": last,
        },
    )


async def test_a_pause_nobody_answers_stops_the_relay_with_every_action_of_its_step() -> None:
    sent: list[str] = []
    events: list[AgentEvent | float] = [
        tokens("Let me ", 1),
        approval(2, "a1", last=False),
        approval(3, "a2"),
        5.0,
    ]
    with anyio.fail_after(2):
        outcome = await make_relay(sent).run(feed(events))
    assert outcome.terminal is None and outcome.text == "Let me "
    assert [(p.action_id, p.conversation_id, p.message_id) for p in outcome.pauses] == [
        ("a1", "child", "msg_child"),
        ("a2", "child", "msg_child"),
    ]
    assert outcome.last_event_id == "2-3"
    assert "[waiting for you] send_email needs your approval" in sent


async def test_a_pause_answered_mid_stream_lets_the_answer_go_on() -> None:
    asked: list[list[str]] = []

    async def on_pause(pending: list[PendingAction], left: float | None) -> bool:
        asked.append([p.action_id for p in pending])
        return True

    events: list[AgentEvent | float] = [approval(1, "a1"), tokens("sent", 2), success("sent")]
    outcome = await make_relay([]).run(feed(events), on_pause=on_pause)
    assert asked == [["a1"]]
    assert outcome.text == "sent" and outcome.pauses == [] and outcome.terminal is not None


async def test_the_deadline_stops_the_relay_with_the_text_so_far_and_where_to_resume() -> None:
    sent: list[str] = []
    events: list[AgentEvent | float] = [tokens("part one", 1), 0.05, tokens(" two", 2), 10.0, success("x")]
    with anyio.fail_after(3):
        outcome = await make_relay(sent, coalesce=0.0, chars=1).run(feed(events), deadline=0.3)
    assert outcome.deadline_passed and outcome.terminal is None
    assert outcome.text == "part one two" and outcome.last_event_id == "1-2"


async def test_asking_the_user_gets_what_is_left_of_the_deadline_and_counts_towards_it() -> None:
    given: list[float | None] = []

    async def on_pause(pending: list[PendingAction], left: float | None) -> bool:
        given.append(left)
        await anyio.sleep(0.5)  # the user takes their time (on_pause's own bound aside)
        return True

    events: list[AgentEvent | float] = [0.3, approval(1, "a1"), 0.1, tokens("done", 2), success("done")]
    with anyio.fail_after(3):
        outcome = await make_relay([]).run(feed(events), on_pause=on_pause, deadline=0.6)
    (left,) = given
    assert left is not None and 0.1 < left < 0.35
    assert outcome.deadline_passed and outcome.terminal is None and outcome.last_event_id == "2-1"


async def test_without_a_deadline_asking_the_user_has_no_bound() -> None:
    given: list[float | None] = []

    async def on_pause(pending: list[PendingAction], left: float | None) -> bool:
        given.append(left)
        return True

    events: list[AgentEvent | float] = [approval(1, "a1"), tokens("done", 2), success("done")]
    outcome = await make_relay([]).run(feed(events), on_pause=on_pause)
    assert given == [None] and outcome.text == "done"
