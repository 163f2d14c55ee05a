"""bridge/domain/handles.py: a handle finds its owner's record and nothing else; a session remembers
its last conversation per agent; a record the store cannot keep is said, not lost silently."""

from __future__ import annotations

import pytest

from bridge.domain.handles import ConversationNotFound, ConversationRecords
from bridge.dust.models import Agent
from bridge.store.base import StoreUnavailable
from bridge.store.memory import MemoryStore
from bridge.store.records import ConversationRecord
from tests.store.support import make_record

HELPER = Agent(s_id="agent_sid", name="helper")


class UnaskedStore(MemoryStore):
    """A store that must not be asked."""

    async def load(self, handle: str, owner: str) -> ConversationRecord | None:
        raise AssertionError("the store was asked")

    async def delete(self, handle: str, owner: str) -> bool:
        raise AssertionError("the store was asked")


class SavelessStore(MemoryStore):
    """A store whose writes fail, as Redis does while it is down."""

    async def save(self, record: ConversationRecord) -> None:
        raise StoreUnavailable("context store (Redis) is unreachable")


async def test_a_handle_finds_only_its_owners_record_and_every_miss_reads_the_same() -> None:
    records = ConversationRecords(MemoryStore(3600))
    mine = make_record(owner="alice")
    assert await records.save(mine, None) is None
    assert await records.load("alice", mine.handle) == mine
    misses = []
    for principal, handle in (("bob", mine.handle), ("alice", make_record().handle)):
        with pytest.raises(ConversationNotFound) as missed:
            await records.load(principal, handle)
        misses.append(str(missed.value))
    # Someone else's handle and an unknown one cannot be told apart.
    assert misses[0] == misses[1] and misses[0].startswith("unknown or expired conversation handle")


@pytest.mark.parametrize("handle", ["", "not-a-handle", "x" * 500])
async def test_a_malformed_handle_is_refused_before_the_store_is_asked(handle: str) -> None:
    records = ConversationRecords(UnaskedStore(3600))
    with pytest.raises(ConversationNotFound, match="malformed conversation handle"):
        await records.load("alice", handle)
    with pytest.raises(ConversationNotFound, match="malformed conversation handle"):
        await records.end("alice", handle)


async def test_a_session_continues_its_last_conversation_with_an_agent_unless_asked_not_to() -> None:
    records = ConversationRecords(MemoryStore(3600))
    record = make_record(owner="alice")
    await records.save(record, "session-1")
    assert await records.existing("alice", "session-1", HELPER, None, False) == record
    assert await records.existing("alice", "session-1", HELPER, None, True) is None  # new_conversation
    assert await records.existing("alice", "session-2", HELPER, None, False) is None
    assert await records.existing("alice", None, HELPER, None, False) is None  # no session: stateless
    # Another principal on the same session key does not get alice's conversation.
    assert await records.existing("bob", "session-1", HELPER, None, False) is None


async def test_a_record_the_store_cannot_keep_comes_back_as_the_stores_error() -> None:
    records = ConversationRecords(SavelessStore(3600))
    assert await records.save(make_record(), "session-1") == "context store (Redis) is unreachable"


async def test_ending_a_conversation_forgets_its_handle_once() -> None:
    records = ConversationRecords(MemoryStore(3600))
    record = make_record(owner="alice")
    await records.save(record, None)
    with pytest.raises(ConversationNotFound):
        await records.end("bob", record.handle)
    await records.end("alice", record.handle)
    assert await records.list("alice") == []
    with pytest.raises(ConversationNotFound):
        await records.end("alice", record.handle)
