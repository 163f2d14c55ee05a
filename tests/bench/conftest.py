"""One stack for the always-on load and chaos subset: simulator, Redis (its data on disk), clamd and a
bridge with one client key per client, 1 s heartbeats and a 15 s shutdown grace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from bench._common import ClientKeys, Stack
from bench.chaos import Ctx, LoadDriver

CLIENTS = 20
LOAD_CLIENTS = 10
SPARE_KEYS = 60


@pytest.fixture(scope="module")
def keys() -> Iterator[ClientKeys]:
    made = ClientKeys(CLIENTS + SPARE_KEYS)
    yield made
    made.remove()


@pytest.fixture(scope="module")
def stack(keys: ClientKeys) -> Iterator[Stack]:
    extra = {**keys.env, "BRIDGE_HEARTBEAT_SECONDS": "1", "BRIDGE_SHUTDOWN_GRACE_SECONDS": "15"}
    with Stack(redis=True, redis_persistent=True, clamd=True, bridge_extra=extra) as running:
        yield running


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        assert stack.simulator is not None
        # Every test starts from the simulator's start-up settings (fault knobs off).
        (await client.post(f"{stack.simulator.url}/_sim/reset", timeout=10)).raise_for_status()
        yield client


@pytest.fixture
async def ctx(stack: Stack, keys: ClientKeys, http: httpx2.AsyncClient) -> AsyncIterator[Ctx]:
    """A background load of LOAD_CLIENTS conversationalists while the test injects its fault."""
    load = LoadDriver(stack, keys, LOAD_CLIENTS, chars=160, think=0.2)
    await load.start()
    try:
        yield Ctx(stack, load, http, keys, keys.keys[CLIENTS:], slow_seconds=4.0)
    finally:
        await load.stop()
