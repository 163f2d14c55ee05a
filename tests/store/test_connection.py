"""REDIS_URL forms: parsing, and real bridges sharing context through Redis Sentinel and Redis Cluster."""

from __future__ import annotations

import re
from typing import Any

import anyio
import httpx2
import pytest
import redis.asyncio as aioredis
from mcp import Client

from bridge.config import ConfigError, load_settings
from bridge.store.base import StoreUnavailable
from bridge.store.connection import RedisKind, parse_redis_url
from bridge.store.pool import SENTINEL_CONNECTIONS, PoolLimits, RedisPool
from bridge.store.redis import RedisStore
from tests.helpers import text_of
from tests.procs import (
    Cluster,
    Proc,
    bridge_env,
    running,
    start_bridge,
)
from tests.store.support import LONG_TTL, PASSWORD, bridge_clients, eventually, make_record, sockets_to


def test_single_server_forms_pass_through() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://cache.example.com:6380/1", "unix:///run/redis.sock"):
        target = parse_redis_url(url)
        assert target.kind is RedisKind.SINGLE
        assert target.url == url
    assert parse_redis_url("rediss://h:1").tls


def test_sentinel_url_names_sentinels_service_database_and_credentials() -> None:
    target = parse_redis_url("rediss+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2")
    assert target.kind is RedisKind.SENTINEL
    assert target.tls
    assert target.nodes == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)]
    assert (target.service_name, target.db) == ("mymaster", 2)
    assert target.auth == {"username": "app", "password": "p@ss"}
    assert "p@ss" not in repr(target)


def test_cluster_url_names_startup_nodes() -> None:
    target = parse_redis_url("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001")
    assert target.kind is RedisKind.CLUSTER
    assert target.nodes == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert target.auth == {"password": "pw"}


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@host:1",
        "redis+sentinel://:hunter2@host:26379",  # no service name
        "redis+sentinel://:hunter2@host:notaport/mymaster",
        "redis+cluster://:hunter2@",
        "redis+sentinel://:hunter2@h:26379/mymaster/zero",
    ],
)
def test_bad_urls_are_refused_without_echoing_the_password(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "REDIS_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def _ask(url: str, message: str, conversation: str | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {"agent": "echo", "message": message}
    if conversation:
        arguments["conversation"] = conversation
    async with Client(f"{url}/mcp") as client:
        result = await client.call_tool("ask_agent", arguments)
        assert not result.is_error, text_of(result)
        listed = {r.uri for r in (await client.list_resources()).resources}
    structured = dict(result.structured_content or {})
    structured["text"] = text_of(result)
    structured["listed"] = listed
    return structured


async def _continues_across_two_bridges(env: dict[str, str]) -> tuple[Proc, Proc]:
    """Start a chat on one bridge and continue it on another; return both (stopped) for their logs."""
    first, second = start_bridge(env), start_bridge(env)
    with running(first), running(second):
        for bridge in (first, second):
            ready = httpx2.get(f"{bridge.url}/readyz", timeout=10).json()
            assert ready["checks"]["store"] == "ok", ready
        opened = await _ask(first.url, "hello from replica one")
        handle = opened["conversation"]
        continued = await _ask(second.url, "and from replica two", handle)
    assert continued["conversation"] == handle
    assert continued["dust_conversation_id"] == opened["dust_conversation_id"]
    assert continued["text"].startswith("Echo (turn 2): and from replica two")
    # Listing reads the owner index and the records (MGET, or per-slot reads on a cluster).
    assert f"dust://conversations/{handle}" in continued["listed"]
    return first, second


# The rate limiter's warning that requests go uncounted (bridge/security/ratelimit.py), any target.
UNCOUNTED = re.compile(r"rate-limit storage \(.*\) unavailable")


async def test_bridges_share_context_through_sentinel(
    simulator: Proc, sentinel_setup: tuple[Proc, Proc]
) -> None:
    master, sentinel = sentinel_setup
    env = bridge_env(
        simulator, REDIS_URL=f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/mymaster/0"
    )
    first, second = await _continues_across_two_bridges(env)
    raw = aioredis.Redis(host="127.0.0.1", port=master.port, password=PASSWORD)
    try:
        conversation_keys = await raw.keys("dmb:conv:*")
        limit_keys = await raw.keys("dmb-limits*")
    finally:
        await raw.aclose()
    # The master the sentinel names holds both the context and the shared request budget.
    assert conversation_keys
    assert limit_keys
    for bridge in (first, second):
        assert PASSWORD not in bridge.log()
        assert not UNCOUNTED.search(bridge.log()), bridge.log()


async def test_bridges_share_context_through_a_cluster(simulator: Proc, cluster: Cluster) -> None:
    startup = ",".join(f"127.0.0.1:{port}" for port in cluster.ports[:2])
    env = bridge_env(simulator, REDIS_URL=f"redis+cluster://{startup}")
    first, second = await _continues_across_two_bridges(env)
    counts = []
    for port in cluster.ports:
        raw = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            counts.append(await raw.dbsize())
        finally:
            await raw.aclose()
    # Keys are spread over the nodes by slot; a cross-slot MULTI or MGET would have failed above.
    assert sum(counts) >= 3
    for bridge in (first, second):
        assert not UNCOUNTED.search(bridge.log()), bridge.log()
        assert "Traceback" not in bridge.log()


# --- the bound of the shared pool (tests/store/test_pool.py has it on one server) ------------------


async def _save_and_load(store: RedisStore) -> str:
    """One write and one read; "ok", or the store's error."""
    record = make_record()
    try:
        await store.save(record)
        assert await store.load(record.handle, "alice") == record
    except StoreUnavailable as exc:
        return str(exc)
    return "ok"


async def _many_at_once(store: RedisStore, ports: list[int], count: int) -> tuple[list[str], dict[int, int]]:
    """`count` saves and loads at once; their outcomes, and the most sockets seen to each port."""
    peaks = dict.fromkeys(ports, 0)
    outcomes: list[str] = []

    async def watch() -> None:
        while True:
            for port in ports:
                peaks[port] = max(peaks[port], sockets_to(port).open)
            await anyio.sleep(0.002)

    async def one() -> None:
        outcomes.append(await _save_and_load(store))

    async with anyio.create_task_group() as watching:
        watching.start_soon(watch)
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
        watching.cancel_scope.cancel()
    return outcomes, peaks


async def test_sentinel_connections_are_bounded_and_closed_when_idle(
    sentinel_setup: tuple[Proc, Proc],
) -> None:
    master, sentinel = sentinel_setup
    pool = RedisPool.from_url(
        f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/mymaster/0",
        PoolLimits(max_connections=4, idle_seconds=0.5),
    )
    store = RedisStore(pool, LONG_TTL)
    try:
        outcomes, peaks = await _many_at_once(store, [master.port, sentinel.port], 100)
        assert outcomes == ["ok"] * 100  # they waited for a free connection
        # The master's connections within the bound; each new one asked a sentinel for the master,
        # on that sentinel's own small pool.
        assert 1 <= peaks[master.port] <= 4
        assert 1 <= peaks[sentinel.port] <= SENTINEL_CONNECTIONS
        assert bridge_clients(master.port, PASSWORD) <= 4
        async with anyio.create_task_group() as sweeping:
            sweeping.start_soon(pool.close_idle_forever)
            await eventually(
                lambda: sockets_to(master.port).open + sockets_to(sentinel.port).open == 0,
                "idle connections to the master and the sentinel closed",
            )
            sweeping.cancel_scope.cancel()
        assert await _save_and_load(store) == "ok"  # and opened again when needed
    finally:
        await pool.aclose()


async def test_cluster_nodes_hold_at_most_the_maximum_each_and_say_when_busy(cluster: Cluster) -> None:
    pool = RedisPool.from_url(f"redis+cluster://127.0.0.1:{cluster.ports[0]}", PoolLimits(max_connections=3))
    store = RedisStore(pool, LONG_TTL)
    try:
        outcomes, peaks = await _many_at_once(store, cluster.ports, 60)
        # redis-py's cluster nodes do not wait for a connection: what finds none fails at once,
        # with the store's clear sentence; the rest succeed. No node ever holds more than the bound.
        assert "ok" in outcomes
        busy = "context store (Redis) is busy: no connection came free in time; try again shortly"
        assert set(outcomes) <= {"ok", busy}
        # (The first startup node also keeps the connection that learnt the slot map.)
        assert 1 <= peaks.pop(cluster.ports[0]) <= 3 + 1
        assert all(1 <= peak <= 3 for peak in peaks.values()), peaks
        assert pool.stats() is None  # not counted on a cluster (bridge/store/pool.py says why)
    finally:
        await pool.aclose()
