"""The process's one bounded pool of Redis connections (bridge/store/pool.py), against private
redis-servers: the store, the request counter and the answer slots together never open more than
the maximum, idle connections are closed, a restarted Redis leaves nothing behind, and a pool whose
connections are all busy says so within its wait. Sockets are counted by the kernel (/proc) and by
the server (`CLIENT LIST`), not only by the pool itself."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator

import anyio
import pytest
from mcp import Client

from bridge.security.ratelimit import Limiter, build_limiter
from bridge.store.base import StoreUnavailable
from bridge.store.pool import HELD_CLIENT_NAME, PoolLimits, RedisPool
from bridge.store.redis import RedisStore
from tests.helpers import text_of
from tests.procs import Proc, bridge_env, free_port, running, start_bridge, start_redis
from tests.store.support import LONG_TTL, bridge_clients, eventually, make_record, sockets_to


@pytest.fixture
def server() -> Iterator[Proc]:
    """A Redis of the test's own: every connection to it is the pool's."""
    with running(start_redis()) as proc:
        yield proc


def url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def users(pool: RedisPool) -> tuple[RedisStore, Limiter]:
    """A bridge process's three Redis users on one pool (the limiter holds the request counter and
    the answer slots), with limits no burst here reaches."""
    return RedisStore(pool, LONG_TTL), build_limiter("1000000/minute", 10_000, {}, pool)


async def one_turn(store: RedisStore, limiter: Limiter, n: int) -> None:
    """What a tool call asks of Redis: its request counted, an answer slot, its context written and read."""
    principal = f"user-{n % 7}"
    assert await limiter.retry_after(principal) is None
    async with limiter.answer_slot(principal):
        record = make_record(owner=principal)
        await store.save(record)
        assert await store.load(record.handle, principal) == record
        await store.remember(f"session-{n}", "agent", record.handle)


class Peaks:
    """The most sockets this process had to a port, and the most connections the pool lent at once."""

    def __init__(self, pool: RedisPool, port: int) -> None:
        self.pool, self.port = pool, port
        self.sockets = self.in_use = 0

    async def watch(self) -> None:
        while True:
            stats = self.pool.stats()
            assert stats is not None
            self.sockets = max(self.sockets, sockets_to(self.port).open)
            self.in_use = max(self.in_use, stats.in_use)
            await anyio.sleep(0.002)


async def burst(store: RedisStore, limiter: Limiter, turns: int, peaks: Peaks | None = None) -> None:
    """`turns` turns at once (all must succeed), sampled by `peaks` meanwhile."""
    async with anyio.create_task_group() as watching:
        if peaks is not None:
            watching.start_soon(peaks.watch)
        async with anyio.create_task_group() as tg:
            for n in range(turns):
                tg.start_soon(one_turn, store, limiter, n)
        watching.cancel_scope.cancel()


async def test_many_concurrent_operations_never_open_more_than_the_maximum(server: Proc) -> None:
    pool = RedisPool.from_url(url(server.port), PoolLimits(max_connections=8))
    store, limiter = users(pool)
    peaks = Peaks(pool, server.port)
    try:
        await burst(store, limiter, 300, peaks)
        # 300 turns at once, each wanting connections for its count, slot, writes and reads: the
        # pool was used up to its bound and never beyond, by the kernel's count and the server's.
        assert peaks.in_use == 8
        assert peaks.sockets <= 8
        assert sockets_to(server.port).open <= 8
        assert bridge_clients(server.port) <= 8
    finally:
        await pool.aclose()
    await eventually(lambda: sockets_to(server.port).open == 0, "closing the pool closes every socket")


async def test_connections_idle_for_the_idle_time_are_closed_and_busy_ones_kept(server: Proc) -> None:
    pool = RedisPool.from_url(url(server.port), PoolLimits(max_connections=8, idle_seconds=0.5))
    store, limiter = users(pool)

    async def steady_user() -> None:  # one conversation that goes on: its connection is never idle
        while True:
            await store.ping()
            await anyio.sleep(0.05)

    try:
        await burst(store, limiter, 100)
        burst_ended = time.monotonic()
        assert sockets_to(server.port).open == 8
        async with anyio.create_task_group() as sweeping:
            sweeping.start_soon(pool.close_idle_forever)
            async with anyio.create_task_group() as conversing:
                conversing.start_soon(steady_user)
                await eventually(lambda: sockets_to(server.port).open == 1, "the idle connections closed")
                # Not before they had been idle for the idle time.
                assert time.monotonic() - burst_ended >= 0.5
                await eventually(lambda: bridge_clients(server.port) == 1, "the server saw them go")
                conversing.cancel_scope.cancel()
            await eventually(lambda: sockets_to(server.port).open == 0, "the last one closed once idle too")
            sweeping.cancel_scope.cancel()
        await pool.close_idle()  # nothing is left to close
        # A pool emptied by idleness opens a connection again when it needs one.
        await one_turn(store, limiter, 0)
        assert 1 <= sockets_to(server.port).open <= 8
    finally:
        await pool.aclose()


async def test_a_redis_restart_leaves_no_socket_behind(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    pool = RedisPool.from_url(url(port), PoolLimits(max_connections=8, wait_seconds=5))
    store, limiter = users(pool)
    try:
        for restart in range(3):
            with running(start_redis(port=port)) as proc:
                peaks = Peaks(pool, port)
                await burst(store, limiter, 200, peaks)
                assert peaks.sockets <= 8, f"after {restart} restart(s)"
                assert bridge_clients(port) <= 8
                proc.stop(signal.SIGKILL)  # a crash: every pooled socket is now dead
            await eventually(lambda: sockets_to(port).close_wait > 0, "the crash left half-open sockets")
            # While Redis is down: the clear error at once, and still no more sockets than the bound.
            with pytest.raises(StoreUnavailable, match=r"^context store \(Redis\) is unreachable$"):
                await store.load(make_record().handle, "alice")
            assert sockets_to(port).open <= 8
        # After the last restart, every socket the crash left behind was closed, none is half-open.
        with running(start_redis(port=port)):
            await burst(store, limiter, 50)
            assert sockets_to(port).close_wait == 0
            assert sockets_to(port).open <= 8
    finally:
        await pool.aclose()


async def test_an_exhausted_pool_says_so_within_its_wait(
    server: Proc, caplog: pytest.LogCaptureFixture
) -> None:
    pool = RedisPool.from_url(url(server.port), PoolLimits(max_connections=2, wait_seconds=0.3))
    store, limiter = users(pool)
    connections = pool.client.connection_pool
    try:
        held = [await connections.get_connection() for _ in range(2)]  # two long commands, say

        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await store.load(make_record().handle, "alice")
        waited = time.monotonic() - started
        assert 0.3 <= waited < 1.3
        assert str(caught.value) == (
            "context store (Redis) is busy: no connection came free in time; try again shortly"
        )
        assert caught.value.detail == (
            f"Redis at 127.0.0.1:{server.port}: no free Redis connection within 0.3 s: all 2 in use"
            " (BRIDGE_REDIS_MAX_CONNECTIONS)"
        )

        # The limits take their Redis-is-down path: requests served uncounted, slots per process.
        with caplog.at_level(logging.WARNING, logger="bridge.security.ratelimit"):
            assert await limiter.retry_after("judy") is None
            async with limiter.answer_slot("judy"):
                pass
        said = [r.getMessage() for r in caplog.records]
        assert any("no free Redis connection within 0.3 s" in line for line in said), said
        assert any("capping per process" in line for line in said), said

        for connection in held:
            await connections.release(connection)
        started = time.monotonic()
        await store.ping()  # a connection is free again: no wait
        assert time.monotonic() - started < 0.3
    finally:
        await pool.aclose()


async def test_a_bridge_shares_one_pool_of_its_maximum_and_lets_idle_connections_go(
    simulator: Proc, server: Proc
) -> None:
    env = bridge_env(
        simulator, server.port, BRIDGE_REDIS_MAX_CONNECTIONS="2", BRIDGE_REDIS_IDLE_SECONDS="0.5"
    )
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, bridge_clients(server.port))
            await anyio.sleep(0.005)

    async def ask(n: int) -> None:
        async with Client(f"{bridge.url}/mcp") as client:
            result = await client.call_tool("ask_agent", {"agent": "echo", "message": f"hello {n}"})
            assert not result.is_error, text_of(result)

    with running(start_bridge(env)) as bridge:
        async with anyio.create_task_group() as watching:
            watching.start_soon(watch)
            async with anyio.create_task_group() as asking:
                for n in range(6):
                    asking.start_soon(ask, n)
            watching.cancel_scope.cancel()
        # Six answers at once, each counted, slotted, read and written: the store, the counter and
        # the slots together held at most the two connections of the process's one pool...
        assert 1 <= peak <= 2
        # ...and the runtime's sweep closed them once idle. Apart from the pool, the broadcast
        # holds its one pub/sub connection for the process's lifetime.
        await eventually(lambda: bridge_clients(server.port) == 0, "the bridge let its idle connections go")
        assert bridge_clients(server.port, name=HELD_CLIENT_NAME) == 1


def test_pool_limits_refuse_what_cannot_work() -> None:
    for bad in ({"max_connections": 0}, {"idle_seconds": 0}, {"wait_seconds": -1}):
        with pytest.raises(ValueError, match="at least one connection and positive times"):
            PoolLimits(**bad)  # type: ignore[arg-type]
    assert PoolLimits(idle_seconds=0.5).sweep_interval == pytest.approx(0.125)
    assert PoolLimits(idle_seconds=3600).sweep_interval == 15
