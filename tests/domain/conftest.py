"""The domain's tests talk to the Dust simulator served in this process (no subprocess to start):
`simulator` here is its URL and state, and `dust` a client of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest
import uvicorn
from pydantic import SecretStr

from bridge.dust.client import DustClient
from bridge.simulator import SimulatorOptions, create_app
from bridge.simulator.state import Simulator
from tests.procs import free_port


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[str, Simulator]]:
    app = create_app(SimulatorOptions(token_delay_ms=0, slow_seconds=0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    # A plain task, not a task group: pytest-asyncio may tear a fixture down in another task.
    serving = asyncio.get_running_loop().create_task(server.serve())
    with anyio.fail_after(10):
        while not server.started:
            await anyio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app.state.sim
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def dust(simulator: tuple[str, Simulator]) -> AsyncIterator[DustClient]:
    async with DustClient(simulator[0], "demo", SecretStr("sk-test0123456789")) as client:
        yield client
