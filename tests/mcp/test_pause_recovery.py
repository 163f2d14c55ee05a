"""Pauses and long answers at their edges, end to end: a 2026-07-28 stdio client that times out, the
deadline over a form nobody answers, pending actions rebuilt from Dust, and replies Dust or the
bridge refuses."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitRequestParams, ElicitResult

from bridge.mcp.pauses import MODERN_ERA
from bridge.simulator.agents import long_answer
from tests.helpers import approval_of, faults, stats, text_of
from tests.mcp.test_turns import SENT, my_conversation, structured, wait_until_complete
from tests.procs import Proc, bridge_env, running, start_bridge

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


# --- the deadline bounds the whole call, a form nobody answers included ----------------------------

DEADLINE = 4.0


@pytest.fixture
def hurried(simulator: Proc, redis_server: Proc, redis_url: str) -> Iterator[Proc]:
    """A bridge whose tool calls return after DEADLINE seconds, on the simulator and a clean Redis."""
    env = bridge_env(simulator, redis_server.port, BRIDGE_ANSWER_DEADLINE_SECONDS=f"{DEADLINE:g}")
    with running(start_bridge(env)) as proc:
        yield proc


async def silent(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
    """A client that shows the form and never gets an answer."""
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def timed(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], str, float]:
    """Call `tool`: its structured content, its text and how long it took."""
    started = anyio.current_time()
    with anyio.fail_after(4 * DEADLINE):
        result = await client.call_tool(tool, arguments)
    return structured(result), text_of(result), anyio.current_time() - started


async def test_a_form_nobody_answers_late_in_the_call_still_ends_it_at_the_deadline(
    hurried: Proc, simulator: Proc
) -> None:
    # The agent thinks for about 2.6 s before it asks: the form gets what is left of the deadline.
    faults(simulator, token_delay_ms=200)
    async with Client(f"{hurried.url}/mcp", mode="legacy", elicitation_callback=silent) as client:
        paused, text, took = await timed(
            client, "ask_agent", {"agent": "needs-approval", "message": "weekly report"}
        )
        assert paused["status"] == "waiting_for_user" and "nobody answered within 4 s" in text
        assert took < DEADLINE + 1.2  # not the 2.6 s of thinking plus a whole deadline for the form
        # Asked again by wait_for_answer, the silent client gets the same bound.
        waiting, text, took = await timed(client, "wait_for_answer", {"conversation": paused["conversation"]})
        assert waiting["status"] == "waiting_for_user" and "nobody answered within 4 s" in text
        assert DEADLINE - 0.5 < took < DEADLINE + 1.2
        faults(simulator, token_delay_ms=15)
        done = structured(await client.call_tool("approve_action", approval_of(paused)))
    assert done["answer"] == SENT
