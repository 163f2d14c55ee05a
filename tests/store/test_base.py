"""The ContextStore contract (bridge/store/base.py), against both back ends and a real redis-server
(no fakes): sliding TTLs, owner checks, per-session memory, uploads."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from bridge.store.records import (
    ConversationRecord,
    SessionRecord,
    new_handle,
    new_session_id,
)
from bridge.store.redis import RedisStore
from tests.store.support import LONG_TTL, SHORT_TTL, StoreFactory, make_record, make_upload

# --- conversations -------------------------------------------------------------------------------


async def test_save_load_round_trip(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    record = make_record(last_agent_message_id="msg_1", url="https://dust.tt/w/ws/assistant/conv")
    await store.save(record)
    assert await store.load(record.handle, "alice") == record

    # The next turn overwrites the record in place.
    later = dataclasses.replace(record, turns=2, last_agent_message_id="msg_2", last_used_at=1_700_000_100.0)
    await store.save(later)
    assert await store.load(record.handle, "alice") == later
    assert await store.list_for_owner("alice") == [later]
    await store.ping()


async def test_unknown_or_malformed_handles_load_nothing(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    assert await store.load(new_handle(), "alice") is None
    assert await store.load("*", "alice") is None
    assert await store.load("dmb:conv:" + new_handle(), "alice") is None
    assert not await store.delete("*", "alice")
    with pytest.raises(ValueError):
        await store.save(make_record(handle="dmc_short"))
    with pytest.raises(ValueError):
        await store.remember("session", "agent", "not-a-handle")


async def test_foreign_owner_sees_nothing_and_cannot_delete(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    record = make_record(owner="alice")
    await store.save(record)

    assert await store.load(record.handle, "bob") is None
    assert await store.delete(record.handle, "bob") is False
    assert await store.list_for_owner("bob") == []
    assert await store.load(record.handle, "alice") == record

    assert await store.delete(record.handle, "alice") is True
    assert await store.load(record.handle, "alice") is None
    assert await store.delete(record.handle, "alice") is False
    assert await store.list_for_owner("alice") == []


async def test_sliding_ttl(make_store: StoreFactory) -> None:
    harness = make_store(SHORT_TTL)
    store = harness.store
    kept = make_record(last_used_at=1.0)
    await store.save(kept)  # t=0, deadline 2.0
    await store.remember("session", "agent", kept.handle)  # never touched again: deadline 2.0

    await harness.advance(1.2)
    assert await store.load(kept.handle, "alice") == kept  # deadline moves to 3.2
    other = make_record(last_used_at=2.0)
    await store.save(other)  # deadline 3.2, never touched again

    await harness.advance(1.2)  # t=2.4: past the original deadline of `kept`
    assert await store.load(kept.handle, "alice") == kept  # deadline moves to 4.4
    assert await store.recall("session", "agent") is None  # untouched, so it expired at 2.0

    async def poll_list(expected: list[ConversationRecord], within: float) -> None:
        waited = 0.0
        while (listed := await store.list_for_owner("alice")) != expected:
            assert waited < within, f"list still {listed} after {within}s"
            await harness.advance(0.1)
            waited += 0.1

    # Listing neither refreshes nor shows what expired: `other` goes first, then `kept`.
    await poll_list([kept], within=2.0)
    assert await store.load(kept.handle, "alice") == kept  # deadline moves to now + 2
    started = time.monotonic()
    await poll_list([], within=4.0)
    if isinstance(store, RedisStore):
        assert time.monotonic() - started > SHORT_TTL - 0.5, "expired well before its refreshed deadline"
    assert await store.load(kept.handle, "alice") is None
    assert await store.load(other.handle, "alice") is None


async def test_list_for_owner_newest_first_and_only_own(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    old, newest, middle = (make_record(last_used_at=t) for t in (10.0, 30.0, 20.0))
    for record in (old, newest, middle):
        await store.save(record)
    bobs = make_record(owner="bob", last_used_at=40.0)
    await store.save(bobs)

    assert await store.list_for_owner("alice") == [newest, middle, old]
    assert await store.list_for_owner("alice", limit=2) == [newest, middle]
    assert await store.list_for_owner("alice", limit=0) == []
    assert await store.list_for_owner("bob") == [bobs]
    assert await store.list_for_owner("carol") == []

    # Using an old conversation again moves it to the front.
    revived = dataclasses.replace(old, last_used_at=50.0, turns=2)
    await store.save(revived)
    assert await store.delete(middle.handle, "alice")
    assert await store.list_for_owner("alice") == [revived, newest]


async def test_remember_and_recall_per_session_and_agent(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    h1, h2, h3, h4, h5 = (new_handle() for _ in range(5))
    await store.remember("s1", "agentA", h1)
    await store.remember("s1", "agentB", h2)
    await store.remember("s2", "agentA", h3)

    assert await store.recall("s1", "agentA") == h1
    assert await store.recall("s1", "agentB") == h2
    assert await store.recall("s2", "agentA") == h3
    assert await store.recall("s1", "agentC") is None
    assert await store.recall("s3", "agentA") is None

    await store.remember("s1", "agentA", h4)
    assert await store.recall("s1", "agentA") == h4

    # Separators inside ids cannot make two pairs collide.
    await store.remember("a:b", "c", h5)
    assert await store.recall("a", "b:c") is None
    assert await store.recall("a:b", "c") == h5


# --- uploads -------------------------------------------------------------------------------------


async def test_upload_records_belong_to_their_owner(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    mine = make_upload("alice")
    theirs = make_upload("bob")
    await store.put_upload(mine)
    await store.put_upload(theirs)
    assert await store.get_upload(mine.upload_id, "alice") == mine
    assert await store.get_upload(mine.upload_id, "bob") is None
    assert await store.get_upload("upl_" + "A" * 22, "alice") is None
    assert await store.get_upload("not-an-id", "alice") is None
    assert [u.upload_id for u in await store.list_uploads("alice")] == [mine.upload_id]
    assert mine.uri == f"bridge://uploads/{mine.upload_id}"


async def test_uploads_are_listed_newest_first_and_expire(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    older = make_upload(created=time.time() - 10)
    newer = make_upload()
    short = make_upload(ttl=1.0)
    for record in (older, newer, short):
        await store.put_upload(record)
    listed = [u.upload_id for u in await store.list_uploads("alice")]
    assert listed[-1] == older.upload_id and newer.upload_id in listed
    # Expiry is absolute time for uploads (in both stores), so this waits on the clock, bounded.
    deadline = time.monotonic() + 5
    while await store.get_upload(short.upload_id, "alice") is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await store.get_upload(short.upload_id, "alice") is None
    assert short.upload_id not in [u.upload_id for u in await store.list_uploads("alice")]


# --- MCP sessions --------------------------------------------------------------------------------


def make_session(**overrides: object) -> SessionRecord:
    fields: dict[str, object] = {
        "session_id": new_session_id(),
        "kind": "http",
        "owner": ("alice", None, "alice"),
        "created_at": 1_700_000_000.0,
        "protocol_version": "2025-11-25",
        "client_params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}},
    }
    fields.update(overrides)
    return SessionRecord(**fields)  # type: ignore[arg-type]


async def test_a_session_record_round_trips_and_is_deleted(make_store: StoreFactory) -> None:
    store = make_store(LONG_TTL).store
    record = make_session()
    await store.put_session(record, LONG_TTL)
    assert await store.load_session(record.session_id, LONG_TTL) == record
    await store.delete_session(record.session_id)
    assert await store.load_session(record.session_id, LONG_TTL) is None
    await store.delete_session(record.session_id)  # absent is fine


async def test_a_session_record_expires_unless_loaded(make_store: StoreFactory) -> None:
    harness = make_store(LONG_TTL)
    kept, dropped = make_session(), make_session(kind="sse", instance="abc", protocol_version=None)
    await harness.store.put_session(kept, SHORT_TTL)
    await harness.store.put_session(dropped, SHORT_TTL)
    for _ in range(3):
        await harness.advance(SHORT_TTL * 0.6)
        assert await harness.store.load_session(kept.session_id, SHORT_TTL) == kept
    assert await harness.store.load_session(dropped.session_id, SHORT_TTL) is None


@pytest.mark.parametrize("session_id", ["", "*", "0" * 31, "G" * 32, "dmb:mcp-session:" + "0" * 32])
async def test_a_malformed_session_id_loads_nothing_and_cannot_be_written(
    make_store: StoreFactory, session_id: str
) -> None:
    store = make_store(LONG_TTL).store
    assert await store.load_session(session_id, LONG_TTL) is None
    with pytest.raises(ValueError):
        await store.put_session(make_session(session_id=session_id), LONG_TTL)
