"""The conversation context store, against both back ends and a real redis-server (no fakes)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.store.records import (
    HANDLE_PREFIX,
    ContextStore,
    ConversationRecord,
    MemoryStore,
    RedisStore,
    StoreUnavailable,
    UploadRecord,
    create_store,
    is_valid_handle,
    is_valid_upload_id,
    new_handle,
    new_upload_id,
)
from tests.procs import Proc, free_port, running, start_redis

LONG_TTL = 3600
SHORT_TTL = 2  # seconds; Redis TTLs are whole seconds


def make_record(
    owner: str = "alice", last_used_at: float = 1_700_000_000.0, **changes: object
) -> ConversationRecord:
    record = ConversationRecord(
        handle=new_handle(),
        owner=owner,
        dust_conversation_id="conv_" + new_handle()[-8:],
        agent_id="agent_sid",
        agent_name="helper",
        last_agent_message_id=None,
        url=None,
        created_at=1_700_000_000.0,
        last_used_at=last_used_at,
        turns=1,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A store plus a way to let time pass for it (a fake clock for memory, real time for Redis)."""

    store: ContextStore
    advance: Callable[[float], Awaitable[None]]


StoreFactory = Callable[[int], Harness]


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[StoreFactory]:
    """Builds stores of the parametrised kind with a given TTL; closes them afterwards."""
    made: list[ContextStore] = []

    def factory(ttl: int) -> Harness:
        if request.param == "memory":
            clock = FakeClock()

            async def tick(seconds: float) -> None:
                clock.now += seconds

            harness = Harness(MemoryStore(ttl, clock=clock), tick)
        else:
            harness = Harness(RedisStore.from_url(redis_url, ttl), asyncio.sleep)
        made.append(harness.store)
        return harness

    yield factory
    for store in made:
        await store.aclose()


@pytest.fixture
async def redis_stores(redis_url: str) -> AsyncIterator[Callable[[], RedisStore]]:
    """Independent RedisStore instances on the same database, as separate replicas would have."""
    made: list[RedisStore] = []

    def factory() -> RedisStore:
        made.append(RedisStore.from_url(redis_url, LONG_TTL))
        return made[-1]

    yield factory
    for store in made:
        await store.aclose()


# --- handles -------------------------------------------------------------------------------------


def test_handles_are_unique_and_well_formed() -> None:
    handles = {new_handle() for _ in range(2000)}
    assert len(handles) == 2000
    for handle in handles:
        assert handle.startswith(HANDLE_PREFIX)
        assert is_valid_handle(handle)
        token = handle.removeprefix(HANDLE_PREFIX)
        assert len(base64.urlsafe_b64decode(token)) * 8 >= 128


GOOD = "dmc_" + "A" * 16 + "z09_-" + "b" * 11


@pytest.mark.parametrize(
    "value",
    [
        "",
        "dmc_",
        GOOD[:-1],  # one character short
        GOOD + "A",  # one character long
        "DMC_" + GOOD[4:],
        "dmb_" + GOOD[4:],
        "dmc-" + GOOD[4:],
        GOOD[4:],  # no prefix
        GOOD[:-1] + "+",  # standard base64, not base64url
        GOOD[:-1] + "/",
        GOOD[:-1] + "=",
        GOOD[:-1] + "é",
        GOOD[:-1] + "٣",  # a non-ASCII digit
        GOOD + "\n",
        " " + GOOD,
        "dmb:conv:" + GOOD,
    ],
)
def test_is_valid_handle_rejects_near_misses(value: str) -> None:
    assert is_valid_handle(GOOD)
    assert not is_valid_handle(value)


# --- behaviour shared by both stores -------------------------------------------------------------


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


# --- Redis: replicas, persistence, outages -------------------------------------------------------


async def test_second_replica_sees_the_same_context(redis_stores: Callable[[], RedisStore]) -> None:
    replica_a, replica_b = redis_stores(), redis_stores()
    record = make_record()
    await replica_a.save(record)
    await replica_a.remember("session", "agent_sid", record.handle)

    assert await replica_b.load(record.handle, "alice") == record
    assert await replica_b.list_for_owner("alice") == [record]
    assert await replica_b.recall("session", "agent_sid") == record.handle
    assert await replica_b.load(record.handle, "bob") is None

    assert await replica_b.delete(record.handle, "alice")
    assert await replica_a.load(record.handle, "alice") is None


async def test_redis_damaged_records_read_as_missing_and_leave_the_index(
    redis_url: str, redis_stores: Callable[[], RedisStore]
) -> None:
    store = redis_stores()
    good, garbled, misfiled = make_record(last_used_at=1.0), make_record(), make_record()
    for record in (good, garbled, misfiled):
        await store.save(record)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await raw.set(f"dmb:conv:{garbled.handle}", "{not json")
        await raw.set(f"dmb:conv:{misfiled.handle}", (await raw.get(f"dmb:conv:{good.handle}")) or "")
        await raw.set("dmb:sess:s:a", "not-a-handle")

        assert await store.load(garbled.handle, "alice") is None
        assert await store.load(misfiled.handle, "alice") is None
        assert await store.recall("s", "a") is None
        assert await store.list_for_owner("alice") == [good]
        assert await raw.zrange("dmb:owner:alice", 0, -1) == [good.handle]
    finally:
        await raw.aclose()


async def test_redis_server_errors_become_store_unavailable(
    redis_url: str, redis_stores: Callable[[], RedisStore]
) -> None:
    store = redis_stores()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await raw.set("dmb:owner:alice", "a string where a sorted set belongs")
    finally:
        await raw.aclose()
    with pytest.raises(StoreUnavailable, match=r"^context store \(Redis\) failed: ResponseError$"):
        await store.save(make_record())


async def test_redis_context_survives_a_server_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    record = make_record()
    store = RedisStore.from_url(url, LONG_TTL)
    try:
        with running(start_redis(port=port, data_dir=tmp_path)):
            await store.save(record)
            await store.remember("session", "agent_sid", record.handle)
        with running(start_redis(port=port, data_dir=tmp_path)):
            assert await store.load(record.handle, "alice") == record  # same object, new server
            fresh = RedisStore.from_url(url, LONG_TTL)  # a restarted bridge
            try:
                assert await fresh.load(record.handle, "alice") == record
                assert await fresh.list_for_owner("alice") == [record]
                assert await fresh.recall("session", "agent_sid") == record.handle
            finally:
                await fresh.aclose()
    finally:
        await store.aclose()


PASSWORD = "s3cret-pw"  # a test server's password, checked never to leak


async def _require_password(proc: Proc) -> None:
    raw = aioredis.Redis(host="127.0.0.1", port=proc.port)
    try:
        await raw.config_set("requirepass", PASSWORD)
    finally:
        await raw.aclose()


async def _assert_unavailable(call: Awaitable[object]) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await call
    assert time.monotonic() - started < 3.0, "a dead Redis must fail fast"
    message = str(caught.value)
    assert message == "context store (Redis) is unreachable"
    assert PASSWORD not in message and "redis://" not in message


async def test_redis_outage_raises_store_unavailable_then_recovers() -> None:
    port = free_port()
    store = RedisStore.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", LONG_TTL)
    record = make_record()
    try:
        with running(start_redis(port=port)) as proc:
            await _require_password(proc)
            await store.save(record)  # leaves a pooled connection that the outage breaks

        await _assert_unavailable(store.ping())
        await _assert_unavailable(store.load(record.handle, "alice"))
        await _assert_unavailable(store.save(make_record()))
        await _assert_unavailable(store.delete(record.handle, "alice"))
        await _assert_unavailable(store.list_for_owner("alice"))
        await _assert_unavailable(store.remember("session", "agent", record.handle))
        await _assert_unavailable(store.recall("session", "agent"))

        with running(start_redis(port=port)) as proc:
            await _require_password(proc)
            await store.ping()  # the same object, no restart of the bridge
            again = make_record()
            await store.save(again)
            assert await store.load(again.handle, "alice") == again
    finally:
        await store.aclose()


async def test_redis_down_at_start_up_does_not_prevent_the_store() -> None:
    port = free_port()
    store = create_store(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", LONG_TTL)
    try:
        assert store.kind == "redis"
        await _assert_unavailable(store.ping())
        with running(start_redis(port=port)) as proc:
            await _require_password(proc)
            await store.ping()
            record = make_record()
            await store.save(record)
            assert await store.load(record.handle, "alice") == record
    finally:
        await store.aclose()


async def test_redis_wrong_password_is_reported_as_such() -> None:
    with running(start_redis()) as proc:
        await _require_password(proc)
        store = RedisStore.from_url(f"redis://:wrong-{PASSWORD}@127.0.0.1:{proc.port}/0", LONG_TTL)
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.ping()
        finally:
            await store.aclose()
    assert str(caught.value) == "context store (Redis) rejected the credentials"


def test_create_store_picks_the_back_end_and_hides_bad_urls() -> None:
    assert create_store(None, LONG_TTL).kind == "memory"
    assert create_store("", LONG_TTL).kind == "memory"
    for bad in (
        f"http://user:{PASSWORD}@example.invalid/0",
        f"redis://user:{PASSWORD}@example.invalid:port/0",
    ):
        with pytest.raises(ValueError) as caught:
            create_store(bad, LONG_TTL)
        assert str(caught.value) == "invalid Redis URL"
        # The parser's own error (which may quote the URL) is not shown in tracebacks either.
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- MemoryStore bounds --------------------------------------------------------------------------


async def test_memory_store_bound_evicts_the_least_recently_touched() -> None:
    store = MemoryStore(LONG_TTL, max_entries=3, clock=FakeClock())
    a, b, c, d = (make_record(last_used_at=float(i)) for i in range(4))
    for record in (a, b, c):
        await store.save(record)
    assert await store.load(a.handle, "alice") == a  # `b` is now the oldest
    await store.save(d)

    assert await store.load(b.handle, "alice") is None
    assert await store.list_for_owner("alice") == [d, c, a]

    handles = [new_handle() for _ in range(4)]
    for number, handle in enumerate(handles):
        await store.remember(f"s{number}", "agent", handle)
    assert await store.recall("s0", "agent") is None
    assert [await store.recall(f"s{n}", "agent") for n in (1, 2, 3)] == handles[1:]


async def test_memory_store_sweeps_expired_entries_on_write() -> None:
    clock = FakeClock()
    store = MemoryStore(SHORT_TTL, max_entries=10, clock=clock)
    for _ in range(10):
        await store.save(make_record())
        await store.remember("session", new_handle()[-6:], new_handle())
    clock.now += SHORT_TTL
    fresh = make_record()
    await store.save(fresh)
    await store.remember("session", "agent", fresh.handle)
    # Expired entries were dropped, not evicted one by one at the bound, and nothing else remains.
    assert await store.list_for_owner("alice") == [fresh]
    assert len(store._records) == 1 and len(store._sessions) == 1


# --- uploads -------------------------------------------------------------------------------------


def make_upload(owner: str = "alice", *, ttl: float = 60.0, created: float | None = None) -> UploadRecord:
    now = time.time() if created is None else created
    return UploadRecord(
        upload_id=new_upload_id(),
        owner=owner,
        filename="report.pdf",
        size=1234,
        sha256="0" * 64,
        mime="application/pdf",
        scan="clean",
        dust_file_id="fil_abc",
        created_at=now,
        expires_at=now + ttl,
        pages=3,
    )


async def test_upload_ids_are_unguessable_and_checked() -> None:
    ids = {new_upload_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_valid_upload_id(i) for i in ids)
    sample = next(iter(ids))
    assert not is_valid_upload_id(sample[:-1])
    assert not is_valid_upload_id(sample + "x")
    assert not is_valid_upload_id("dmc_" + sample[4:])


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
