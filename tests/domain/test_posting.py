"""Posting one user turn (bridge/domain/posting.py) to the in-process Dust simulator, and the record
the turn leaves: what reaches Dust in which order, which agent message is the answer, and what a
conversation Dust no longer has does to its record."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest

from bridge.domain.handles import ConversationNotFound, ConversationRecords
from bridge.domain.posting import PostedTurn, TurnPoster
from bridge.dust.client import DustClient
from bridge.dust.errors import DustNotFound
from bridge.dust.models import Agent, MessageContext
from bridge.errors import UpstreamFailure
from bridge.simulator.faults import FailRule
from bridge.simulator.model import AgentMessage, ContentFragment, UserMessage
from bridge.simulator.state import Simulator
from bridge.store.memory import MemoryStore
from bridge.store.records import UploadRecord, new_upload_id

ECHO = Agent.model_validate({"sId": "echo000001", "name": "echo"})
NOBODY = Agent.model_validate({"sId": "gone000001", "name": "gone"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Poster:
    poster: TurnPoster
    store: MemoryStore
    clock: Clock
    sim: Simulator
    dust: DustClient


@pytest.fixture
def p(simulator: tuple[str, Simulator], dust: DustClient) -> Poster:
    store, clock = MemoryStore(ttl_seconds=3600), Clock()
    poster = TurnPoster(dust, ConversationRecords(store), MessageContext("tester", "Europe/Paris"), clock)
    return Poster(poster, store, clock, simulator[1], dust)


async def uploaded(p: Poster, name: str) -> UploadRecord:
    """A file uploaded to Dust as the upload pipeline leaves it, and its record."""
    data = f"the contents of {name}\n".encode()
    created = await p.dust.create_file(content_type="text/plain", file_name=name, file_size=len(data))
    ready = await p.dust.upload_file(created, data, content_type="text/plain")
    return UploadRecord(
        upload_id=new_upload_id(),
        owner="alice",
        filename=name,
        size=len(data),
        sha256="0" * 64,
        mime="text/plain",
        scan="clean",
        dust_file_id=ready.s_id,
        created_at=0.0,
        expires_at=3600.0,
    )


async def answered(p: Poster, posted: PostedTurn) -> PostedTurn:
    """`posted` once Dust has finished its answer (Dust refuses another agent while one runs)."""
    answer = p.sim.store.messages[posted.message.s_id]
    assert isinstance(answer, AgentMessage)
    with anyio.fail_after(10):
        while answer.status == "created":
            await anyio.sleep(0.01)
    return posted


def entries(p: Poster, conversation_id: str) -> list[str]:
    """The conversation as Dust holds it: each entry's kind, with a fragment's title."""
    kinds = []
    for entry in p.sim.store.conversations[conversation_id].entries:
        if isinstance(entry, ContentFragment):
            kinds.append(f"fragment {entry.title}")
        elif isinstance(entry, UserMessage):
            kinds.append(f"user: {entry.content}")
        elif isinstance(entry, AgentMessage):
            kinds.append("agent")
    return kinds


async def test_a_new_conversation_is_created_with_its_files_and_answered_by_the_mentioned_agent(
    p: Poster,
) -> None:
    notes = await uploaded(p, "notes.txt")
    posted = await p.poster.post(None, ECHO, "hello", [notes])
    assert entries(p, posted.conversation_id) == ["fragment notes.txt", "user: hello", "agent"]
    assert posted.message.s_id in p.sim.store.messages
    assert posted.url is not None


async def test_a_continued_conversation_gets_its_files_first_then_the_message_and_its_own_answer(
    p: Poster,
) -> None:
    first = await p.poster.post(None, ECHO, "one", [])
    record = p.poster.record_turn(None, "alice", ECHO, first)
    a, b = await uploaded(p, "a.txt"), await uploaded(p, "b.txt")
    second = await p.poster.post(record, ECHO, "two", [a, b])
    assert second.conversation_id == first.conversation_id and second.url == record.url
    assert entries(p, first.conversation_id) == [
        "user: one",
        "agent",
        "fragment a.txt",
        "fragment b.txt",
        "user: two",
        "agent",
    ]
    assert second.message.s_id != first.message.s_id
    asked = p.sim.store.messages[second.message.parent_message_id or ""]
    assert isinstance(asked, UserMessage) and asked.content == "two"


async def test_a_message_no_agent_answers_is_an_upstream_failure_naming_the_agent(p: Poster) -> None:
    first = await answered(p, await p.poster.post(None, ECHO, "one", []))
    record = p.poster.record_turn(None, "alice", ECHO, first)
    with pytest.raises(UpstreamFailure, match=r"Dust did not start agent gone \(gone000001\)"):
        await p.poster.post(record, NOBODY, "anyone there?", [])


async def test_a_conversation_dust_no_longer_has_forgets_its_record(p: Poster) -> None:
    record = p.poster.record_turn(None, "alice", ECHO, await p.poster.post(None, ECHO, "one", []))
    await p.store.save(record)
    p.sim.store.conversations.clear()
    with pytest.raises(ConversationNotFound, match="no longer exists"):
        await p.poster.post(record, ECHO, "two", [])
    assert await p.store.load(record.handle, "alice") is None


async def test_any_other_not_found_is_raised_as_dusts_and_keeps_the_record(p: Poster) -> None:
    record = p.poster.record_turn(None, "alice", ECHO, await p.poster.post(None, ECHO, "one", []))
    await p.store.save(record)
    p.sim.faults.add(
        [FailRule(match="/messages", method="POST", status=404, type="agent_configuration_not_found")]
    )
    with pytest.raises(DustNotFound) as caught:
        await p.poster.post(record, ECHO, "two", [])
    assert caught.value.type == "agent_configuration_not_found"
    assert await p.store.load(record.handle, "alice") == record


async def test_the_first_turn_makes_a_record_and_each_later_one_moves_it_on(p: Poster) -> None:
    first = await answered(p, await p.poster.post(None, ECHO, "one", []))
    made = p.poster.record_turn(None, "alice", ECHO, first)
    assert made.handle.startswith("dmc_") and made.owner == "alice" and made.turns == 1
    assert made.dust_conversation_id == first.conversation_id and made.url == first.url
    assert made.last_agent_message_id == first.message.s_id
    assert made.created_at == made.last_used_at == 1000.0

    p.clock.now = 1060.0
    other = Agent.model_validate({"sId": "slow000001", "name": "slow"})
    second = await p.poster.post(made, other, "two", [])
    moved = p.poster.record_turn(made, "alice", other, second)
    assert (moved.handle, moved.created_at, moved.dust_conversation_id) == (
        made.handle,
        1000.0,
        made.dust_conversation_id,
    )
    assert (moved.turns, moved.last_used_at) == (2, 1060.0)
    assert (moved.agent_id, moved.agent_name) == ("slow000001", "slow")
    assert moved.last_agent_message_id == second.message.s_id
