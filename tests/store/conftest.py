"""Stores of both kinds for the store tests, closed afterwards; a Sentinel setup and a Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from bridge.store.base import ContextStore
from bridge.store.memory import MemoryStore
from bridge.store.redis import RedisStore
from tests.procs import (
    Cluster,
    Proc,
    redis_command,
    running,
    start_redis,
    start_redis_cluster,
    start_sentinel,
)
from tests.store.support import LONG_TTL, PASSWORD, FakeClock, Harness, StoreFactory


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


@pytest.fixture
def sentinel_setup() -> Iterator[tuple[Proc, Proc]]:
    """A master that needs PASSWORD, and a sentinel watching it as `mymaster`."""
    with running(start_redis()) as master:
        assert redis_command(master.port, "CONFIG", "SET", "requirepass", PASSWORD) == b"+OK\r\n"
        with running(start_sentinel(master.port, password=PASSWORD)) as sentinel:
            yield master, sentinel


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Three master nodes with every slot covered."""
    nodes = start_redis_cluster(3)
    try:
        yield nodes
    finally:
        nodes.stop()
