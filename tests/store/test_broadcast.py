"""bridge/store/broadcast.py: a message one process publishes is heard by the others, on every
Redis deployment the bridge supports, sealed when a store key is set, and through a Redis restart."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from functools import partial

import anyio
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from bridge.store.base import StoreUnavailable
from bridge.store.broadcast import CHANNEL, LocalBroadcast, Message, RedisBroadcast
from bridge.store.pool import RedisPool
from bridge.store.sealing import Sealer
from tests.procs import Cluster, Proc, free_port, running, start_redis
from tests.store.support import PASSWORD, eventually

Heard = list[Message]


@contextlib.asynccontextmanager
async def listening(url: str, sealer: Sealer | None = None) -> AsyncIterator[tuple[RedisBroadcast, Heard]]:
    """A process's broadcast, hearing messages of kind "test" into a list, until the block ends."""
    pool = RedisPool.from_url(url)
    broadcast = RedisBroadcast(pool, sealer)
    heard: Heard = []

    async def keep(message: Message) -> None:
        heard.append(message)

    broadcast.on("test", keep)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(broadcast.run)
            yield broadcast, heard
            tg.cancel_scope.cancel()
    finally:
        await pool.aclose()


async def until_heard(publisher: RedisBroadcast, heard: Heard, timeout: float = 15.0) -> None:
    """Publish probes until the listener hears one: its subscription is then in place."""
    with anyio.fail_after(timeout):
        while not any(m.get("probe") for m in heard):
            await publisher.publish({"kind": "test", "probe": True})
            await anyio.sleep(0.05)


async def heard_across(url: str) -> Heard:
    """What a second process hears of one message the first one publishes."""
    async with listening(url) as (publisher, _), listening(url) as (_, heard):
        await until_heard(publisher, heard)
        await publisher.publish({"kind": "test", "body": "for the holder"})
        await eventually(lambda: any(m.get("body") for m in heard), "the message heard")
        await publisher.publish({"kind": "unknown", "body": "nobody handles this"})
        await publisher.publish({"kind": "test", "body": "last"})
        await eventually(lambda: heard[-1].get("body") == "last", "the last message heard")
    return [m for m in heard if not m.get("probe")]


async def test_a_message_reaches_another_process_through_one_redis(redis_url: str) -> None:
    assert await heard_across(redis_url) == [
        {"kind": "test", "body": "for the holder"},
        {"kind": "test", "body": "last"},
    ]


async def test_a_message_reaches_another_process_through_sentinel(sentinel_setup: tuple[Proc, Proc]) -> None:
    _, sentinel = sentinel_setup
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/mymaster/0"
    assert [m["body"] for m in await heard_across(url)] == ["for the holder", "last"]


async def test_a_message_reaches_another_process_through_a_cluster(cluster: Cluster) -> None:
    # Each process may hold its listening connection on a different node: classic pub/sub on a
    # cluster reaches every node's subscribers.
    startup = ",".join(f"127.0.0.1:{port}" for port in cluster.ports[:2])
    assert [m["body"] for m in await heard_across(f"redis+cluster://{startup}")] == ["for the holder", "last"]


async def test_a_sealed_message_is_unreadable_in_redis_and_ignored_without_the_key(redis_url: str) -> None:
    key, other = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    raw = aioredis.from_url(redis_url)
    spy = raw.pubsub()
    await spy.subscribe(CHANNEL)
    assert (await spy.get_message(timeout=5) or {}).get("type") == "subscribe"
    try:
        async with (
            listening(redis_url, Sealer([key])) as (publisher, _),
            listening(redis_url, Sealer([key])) as (_, heard),
            listening(redis_url, Sealer([other])) as (_, heard_without_key),
        ):
            await until_heard(publisher, heard)
            await publisher.publish({"kind": "test", "body": "what the user typed"})
            await eventually(lambda: any(m.get("body") for m in heard), "the sealed message heard")
            on_the_wire = await _payloads(spy)
        assert heard_without_key == []
        assert on_the_wire and all(b"what the user typed" not in p for p in on_the_wire)
    finally:
        await spy.aclose()
        await raw.aclose()


async def _payloads(spy: aioredis.client.PubSub) -> list[bytes]:
    """Every payload the raw subscriber has received, read until the channel is quiet."""
    payloads = []
    while (raw := await spy.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        payloads.append(raw["data"])
    return payloads


async def test_listening_resumes_after_redis_restarts_on_its_address() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with running(start_redis(port)) as first:
        async with listening(url) as (publisher, heard):
            await until_heard(publisher, heard)
            first.stop()
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await publisher.publish({"kind": "test", "body": "while down"})
            with running(start_redis(port)):
                heard.clear()
                await until_heard(publisher, heard, timeout=20)
    assert all(m.get("probe") for m in heard)


def _said(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


async def test_redis_down_is_said_once_with_where_and_why_and_its_return_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.store.broadcast._RECONNECT_SECONDS", (0.02,))
    port = free_port()
    with caplog.at_level(logging.DEBUG, logger="bridge.store.broadcast"):
        async with listening(f"redis://127.0.0.1:{port}/0") as (publisher, heard):
            retries = partial(_said, caplog, logging.DEBUG, "retrying in")
            await eventually(lambda: len(retries()) >= 5, "five retries while Redis is down")
            assert _said(caplog, logging.WARNING, "forwarded MCP messages") == [
                f"cannot hear forwarded MCP messages from Redis at 127.0.0.1:{port}: Connection refused;"
                " retrying until it answers"
            ]
            with running(start_redis(port)):
                await until_heard(publisher, heard, timeout=20)
                await publisher.publish({"kind": "test", "body": "after"})
                await eventually(lambda: heard[-1].get("body") == "after", "a message heard after")
    assert _said(caplog, logging.INFO, "forwarded MCP messages") == [
        f"hearing forwarded MCP messages again from Redis at 127.0.0.1:{port}"
    ]
    assert len(_said(caplog, logging.WARNING, "forwarded MCP messages")) == 1


async def test_redis_still_down_is_said_again_after_the_warning_period_with_the_attempts_between(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.store.broadcast._RECONNECT_SECONDS", (0.02,))
    monkeypatch.setattr("bridge.store.broadcast._WARN_SECONDS", 0.3)
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="bridge.store.broadcast"):
        async with listening(f"redis://127.0.0.1:{port}/0"):
            await eventually(lambda: bool(_said(caplog, logging.WARNING, "still")), "a second warning")
    first, again = _said(caplog, logging.WARNING, "forwarded MCP messages")[:2]
    assert first.startswith("cannot hear forwarded MCP messages from Redis at 127.0.0.1:")
    assert re.fullmatch(
        rf"still cannot hear forwarded MCP messages from Redis at 127\.0\.0\.1:{port}: Connection refused;"
        r" retrying until it answers \(\d+ more failed attempts since the last warning\)",
        again,
    ), again


async def test_one_failing_handler_does_not_stop_the_next_message() -> None:
    broadcast = LocalBroadcast()
    heard: Heard = []

    async def fragile(message: Message) -> None:
        if message.get("bad"):
            raise RuntimeError("this handler fails")
        heard.append(message)

    broadcast.on("test", fragile)
    await broadcast.publish({"kind": "test", "bad": True})
    await broadcast.publish({"kind": "test", "body": "next"})
    assert heard == [{"kind": "test", "body": "next"}]
