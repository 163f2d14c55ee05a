"""The Redis store (bridge/store/redis.py) against real redis-servers: replicas, damaged records,
persistence, outages, credentials, and `create_store`'s choice of back end."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.store import create_store
from bridge.store.base import StoreUnavailable
from bridge.store.pool import RedisPool
from bridge.store.redis import RedisStore
from tests.procs import Proc, free_port, running, start_redis
from tests.store.support import (
    CONVERSATION,
    LONG_TTL,
    PENDING_UPLOAD,
    STORED_CONVERSATION,
    STORED_CONVERSATION_NOW,
    STORED_PENDING,
    STORED_UPLOAD,
    UPLOAD,
    make_record,
    make_upload,
)


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


async def test_records_stored_by_earlier_versions_load_and_list(
    redis_url: str, redis_stores: Callable[[], RedisStore]
) -> None:
    """The keys and values a replica of the previous release wrote, planted by hand, serve as before."""
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await raw.set(f"dmb:conv:{CONVERSATION.handle}", STORED_CONVERSATION, ex=LONG_TTL)
        await raw.zadd("dmb:owner:alice", {CONVERSATION.handle: CONVERSATION.last_used_at})
        await raw.set("dmb:sess:s%3A1:agent%2Fx", CONVERSATION.handle, ex=LONG_TTL)
        await raw.set(f"dmb:upload:{UPLOAD.upload_id}", STORED_UPLOAD, ex=LONG_TTL)
        await raw.zadd("dmb:uploads:alice", {UPLOAD.upload_id: UPLOAD.created_at})
        await raw.set(f"dmb:pending:{PENDING_UPLOAD.upload_id}", STORED_PENDING, ex=LONG_TTL)
        await raw.zadd("dmb:pending-uploads", {PENDING_UPLOAD.upload_id: PENDING_UPLOAD.started_at})
        store = redis_stores()
        assert await store.load(CONVERSATION.handle, "alice") == CONVERSATION
        assert await store.list_for_owner("alice") == [CONVERSATION]
        assert await store.recall("s:1", "agent/x") == CONVERSATION.handle
        assert await store.get_upload(UPLOAD.upload_id, "alice") == UPLOAD
        assert await store.list_uploads("alice") == [UPLOAD]
        assert await store.list_pending_uploads() == [PENDING_UPLOAD]
        # And what this version writes is what the previous one would read: same keys, the same JSON
        # with the fields added since appended (an older replica ignores them).
        await raw.flushdb()
        await store.save(CONVERSATION)
        await store.remember("s:1", "agent/x", CONVERSATION.handle)
        await store.put_upload(UPLOAD)
        await store.put_pending_upload(PENDING_UPLOAD, LONG_TTL)
        assert await raw.get(f"dmb:conv:{CONVERSATION.handle}") == STORED_CONVERSATION_NOW
        assert await raw.get(f"dmb:upload:{UPLOAD.upload_id}") == STORED_UPLOAD
        assert await raw.get(f"dmb:pending:{PENDING_UPLOAD.upload_id}") == STORED_PENDING
        assert await raw.get("dmb:sess:s%3A1:agent%2Fx") == CONVERSATION.handle
        assert sorted(await raw.keys("*")) == sorted(
            [
                f"dmb:conv:{CONVERSATION.handle}",
                "dmb:owner:alice",
                "dmb:sess:s%3A1:agent%2Fx",
                f"dmb:upload:{UPLOAD.upload_id}",
                "dmb:uploads:alice",
                f"dmb:pending:{PENDING_UPLOAD.upload_id}",
                "dmb:pending-uploads",
            ]
        )
    finally:
        await raw.aclose()


async def test_listings_page_past_dead_index_entries_and_drop_them(
    redis_url: str, redis_stores: Callable[[], RedisStore]
) -> None:
    """Conversations, uploads and pending markers are listed by one loop: a page of dead entries
    (records expired or deleted behind the index's back) is dropped and the next page read."""
    store = redis_stores()
    live_records = [make_record(last_used_at=float(t)) for t in (1, 2)]
    dead_records = [make_record(last_used_at=float(t)) for t in (10, 11, 12)]
    uploads = [make_upload(created=time.time() - age) for age in (50, 40, 3, 2, 1)]
    markers = [
        dataclasses.replace(PENDING_UPLOAD, upload_id=u.upload_id, started_at=time.time() - 30 + i)
        for i, u in enumerate(uploads)
    ]
    for record in live_records + dead_records:
        await store.save(record)
    for upload, marker in zip(uploads, markers, strict=True):
        await store.put_upload(upload)
        await store.put_pending_upload(marker, LONG_TTL)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # The newest conversations and uploads, and the oldest markers, lose their values.
        await raw.delete(*[f"dmb:conv:{r.handle}" for r in dead_records])
        await raw.delete(*[f"dmb:upload:{u.upload_id}" for u in uploads[2:]])
        await raw.delete(*[f"dmb:pending:{m.upload_id}" for m in markers[:3]])
        assert await store.list_for_owner("alice", limit=2) == live_records[::-1]
        assert await store.list_uploads("alice", limit=2) == uploads[1::-1]
        assert await store.list_pending_uploads(limit=2) == markers[3:]
        assert await raw.zcard("dmb:owner:alice") == 2
        assert await raw.zcard("dmb:uploads:alice") == 2
        assert await raw.zcard("dmb:pending-uploads") == 2
    finally:
        await raw.aclose()


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
    pool = RedisPool.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    store = create_store(pool, LONG_TTL)
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
        await pool.aclose()


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


def test_create_store_picks_the_back_end_and_bad_urls_are_hidden() -> None:
    assert create_store(None, LONG_TTL).kind == "memory"
    assert create_store(RedisPool.from_url("redis://127.0.0.1:1/0"), LONG_TTL).kind == "redis"
    for bad in (
        f"http://user:{PASSWORD}@example.invalid/0",
        f"redis://user:{PASSWORD}@example.invalid:port/0",
    ):
        with pytest.raises(ValueError) as caught:
            RedisStore.from_url(bad, LONG_TTL)
        assert str(caught.value) == "invalid Redis URL"
        # The parser's own error (which may quote the URL) is not shown in tracebacks either.
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
