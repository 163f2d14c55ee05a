"""Fixtures of the MCP face's end-to-end tests: a bridge on the Dust simulator and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.procs import Proc, bridge_env, running, start_bridge


@pytest.fixture(scope="module")
def bridge(simulator: Proc, redis_server: Proc) -> Iterator[Proc]:
    """One bridge per test module, on the simulator and Redis."""
    with running(start_bridge(bridge_env(simulator, redis_server.port))) as proc:
        yield proc


@pytest.fixture
def reset_simulator(simulator: Proc) -> None:
    """The simulator as new: no conversations, no faults (`pytestmark` of the modules that use it)."""
    httpx2.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()
