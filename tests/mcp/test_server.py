"""The server end to end over every transport: the SDK's own Client drives a running bridge over
legacy SSE and stdio, and a conversation handle outlives its bridge. Nothing in between is mocked."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client

from bridge.store.sealing import new_store_key
from tests.helpers import faults, stats
from tests.mcp.support import Progress, answer_of, ask
from tests.procs import Proc, bridge_env, running, start_bridge

pytestmark = pytest.mark.usefixtures("reset_simulator")


async def test_legacy_sse_transport_streams_and_continues(bridge: Proc) -> None:
    progress = Progress()
    async with Client(sse_client(f"{bridge.url}/sse")) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        first = await ask(client, progress, agent="echo", message="via sse")
        second = await ask(client, agent="echo", message="again")
    assert "ask_agent" in tools
    assert answer_of(first) == "Echo (turn 1): via sse"
    assert progress.messages
    assert answer_of(second) == "Echo (turn 2): again"


@pytest.mark.parametrize("transport", ["sse", "stdio"])
async def test_cancel_over_legacy_sse_and_stdio_cancels_the_generation_at_dust(
    bridge: Proc, simulator: Proc, redis_server: Proc, transport: str
) -> None:
    import os

    faults(simulator, token_delay_ms=200)
    if transport == "sse":
        target: Any = sse_client(f"{bridge.url}/sse")
    else:
        env = bridge_env(simulator, redis_server.port)
        target = StdioServerParameters(
            command=sys.executable, args=["-m", "bridge", "stdio"], env={**os.environ, **env}
        )
    progress = Progress()
    async with Client(target, mode="legacy") as client:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await ask(client, progress, agent="storyteller", message="a long story")

            tg.start_soon(call)
            with anyio.fail_after(30):
                await progress.first.wait()
            # Abandoning the call makes the SDK client send notifications/cancelled.
            tg.cancel_scope.cancel()
        with anyio.fail_after(20):
            while not stats(simulator)["cancels"]:
                await anyio.sleep(0.05)
        # The session outlives the cancelled call.
        after = await ask(client, agent="echo", message="still here")
    with anyio.fail_after(20):
        while stats(simulator)["open_streams"]:
            await anyio.sleep(0.05)
    assert len(stats(simulator)["cancels"]) == 1
    assert answer_of(after).startswith("Echo (turn 1): still here")


async def test_handle_survives_a_restart_and_works_on_a_second_bridge(
    simulator: Proc, redis_server: Proc
) -> None:
    # With context encrypted at rest: every process shares the key, so each reads the others' writes.
    env = bridge_env(simulator, redis_server.port, BRIDGE_STORE_ENCRYPTION_KEY=new_store_key())
    first_bridge = start_bridge(env)
    with running(first_bridge):
        async with Client(f"{first_bridge.url}/mcp") as client:
            first = await ask(client, agent="echo", message="before restart")
    handle = (first.structured_content or {})["conversation"]
    with running(start_bridge(env)) as second_bridge, running(start_bridge(env)) as third_bridge:
        async with Client(f"{second_bridge.url}/mcp") as client:
            second = await ask(client, agent="echo", message="after restart", conversation=handle)
        async with Client(f"{third_bridge.url}/mcp", mode="legacy") as client:
            third = await ask(client, agent="echo", message="other replica", conversation=handle)
    assert answer_of(second) == "Echo (turn 2): after restart"
    assert answer_of(third) == "Echo (turn 3): other replica"


async def test_stdio_transport(simulator: Proc, redis_server: Proc) -> None:
    env = bridge_env(simulator, redis_server.port)
    import os

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "bridge", "stdio"], env={**os.environ, **env}
    )
    progress = Progress()
    async with Client(params, mode="legacy") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        first = await ask(client, progress, agent="echo", message="over stdio")
        second = await ask(client, agent="echo", message="session memory")
    assert "ask_agent" in tools
    assert answer_of(first) == "Echo (turn 1): over stdio"
    assert progress.messages
    assert answer_of(second) == "Echo (turn 2): session memory"
