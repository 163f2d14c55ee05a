"""Shared fixtures: a real Redis server and the Dust simulator, each on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.procs import Proc, running, start_redis, start_simulator


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Proc]:
    """One redis-server for the whole run, stopped by pid at the end."""
    with running(start_redis()) as proc:
        yield proc


@pytest.fixture
async def redis_url(redis_server: Proc) -> AsyncIterator[str]:
    """A clean database on the shared Redis server."""
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


@pytest.fixture(scope="session")
def simulator() -> Iterator[Proc]:
    """The Dust simulator as a separate process for the whole run (tests reset it via /_sim/reset)."""
    with running(start_simulator()) as proc:
        yield proc


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One clamd (unix socket + loopback TCP, EICAR test signature only) for the run, stopped by pid."""
    from tests.procs import start_clamd

    with running(start_clamd(tmp_path_factory.mktemp("clamd"))) as proc:
        yield proc
