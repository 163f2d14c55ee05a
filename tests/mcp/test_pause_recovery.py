"""Pauses and long answers at their edges, end to end: a 2026-07-28 stdio client that times out, the
deadline over a form nobody answers, pending actions rebuilt from Dust, and replies Dust or the
bridge refuses."""

from __future__ import annotations

import os
import sys

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from bridge.mcp.pauses import MODERN_ERA
from bridge.simulator.agents import long_answer
from tests.helpers import faults, stats
from tests.mcp.test_turns import my_conversation, wait_until_complete
from tests.procs import Proc, bridge_env

pytestmark = pytest.mark.usefixtures("reset_simulator")


def stdio(simulator: Proc, **settings: str) -> StdioServerParameters:
    """`dust-mcp-bridge stdio` on the simulator with `settings`, as Claude Desktop starts it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_", "REDIS_"))},
        **bridge_env(simulator, **settings),
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "bridge", "stdio"], env=env)


# --- a 2026-07-28 client over stdio says why it cancels --------------------------------------------


async def test_a_modern_stdio_client_that_times_out_leaves_the_dust_answer_running(simulator: Proc) -> None:
    faults(simulator, long_seconds=12)
    params = stdio(simulator, BRIDGE_ANSWER_DEADLINE_SECONDS="3")
    async with Client(params, mode=MODERN_ERA) as client:
        await client.call_tool("list_agents", {})  # a cold process could time out before posting
        with pytest.raises(MCPError, match="timed out"):
            await client.call_tool(
                "ask_agent", {"agent": "long-runner", "message": "stdio timeout"}, read_timeout_seconds=1.5
            )
        done = await wait_until_complete(client, await my_conversation(client))
    assert done["answer"] == long_answer("stdio timeout")
    assert stats(simulator)["cancels"] == []


async def test_a_modern_stdio_client_that_cancels_stops_the_dust_answer(simulator: Proc) -> None:
    faults(simulator, long_seconds=12)
    async with Client(stdio(simulator, BRIDGE_ANSWER_DEADLINE_SECONDS="3"), mode=MODERN_ERA) as client:
        await client.call_tool("list_agents", {})
        with anyio.move_on_after(1.5):  # the SDK says "caller cancelled"
            await client.call_tool("ask_agent", {"agent": "long-runner", "message": "stdio stop"})
        with anyio.fail_after(10):
            while not stats(simulator)["cancels"]:
                await anyio.sleep(0.1)
