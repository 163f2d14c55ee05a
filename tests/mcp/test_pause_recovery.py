"""Pauses and long answers at their edges, end to end: a 2026-07-28 stdio client that times out or
cancels, the deadline over a form nobody answers, pending actions rebuilt from Dust, replies Dust or
the bridge refuses."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
import redis.asyncio as aioredis
from mcp import Client, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitRequestParams, ElicitResult

from bridge.mcp.pauses import MODERN_ERA
from bridge.simulator.agents import long_answer
from tests.helpers import approval_of, faults, posted, stats, text_of
from tests.mcp.test_turns import SENT, my_conversation, structured, wait_until_complete
from tests.procs import TEST_DUST_KEY, Proc, bridge_env, running, start_bridge

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


# --- pending actions the bridge forgot are rebuilt from Dust ----------------------------------------


async def forget_pending(redis_url: str, handle: str) -> None:
    """Drop what the stored conversation record says is pending, as a record written before the
    pause (another replica's, a lost write) would."""
    raw = aioredis.from_url(redis_url)
    try:
        key = f"dmb:conv:{handle}"
        record = json.loads(await raw.get(key))
        assert record["pending"], "the pause was stored"
        record["pending"] = []
        await raw.set(key, json.dumps(record), keepttl=True)
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    ("agent", "answer"),
    [("needs-approval", SENT), ("delegator", f"The sub-agent finished: {SENT}")],  # a sub-agent's: nested
)
async def test_pending_actions_missing_from_the_record_are_rebuilt_from_dusts_blocked_list(
    simulator: Proc, redis_server: Proc, redis_url: str, agent: str, answer: str
) -> None:
    env = bridge_env(simulator, redis_server.port)
    with running(start_bridge(env)) as first:
        async with Client(f"{first.url}/mcp", mode="legacy") as client:
            paused = structured(
                await client.call_tool("ask_agent", {"agent": agent, "message": "weekly report"})
            )
    arguments = approval_of(paused)
    await forget_pending(redis_url, paused["conversation"])
    with running(start_bridge(env)) as second:  # and a process that never saw the pause
        async with Client(f"{second.url}/mcp", mode="legacy") as client:
            waiting = structured(
                await client.call_tool("wait_for_answer", {"conversation": paused["conversation"]})
            )
            assert waiting["status"] == "waiting_for_user"
            assert [item["action_id"] for item in waiting["pending"]] == [arguments["action_id"]]
            assert waiting["pending"][0]["tool"] == "send_email"
            await forget_pending(redis_url, paused["conversation"])
            done = structured(await client.call_tool("approve_action", arguments))
    assert done["answer"] == answer


# --- replies Dust or the bridge refuses -------------------------------------------------------------


async def test_an_action_answered_in_dust_meanwhile_is_no_action_waiting(
    bridge: Proc, simulator: Proc
) -> None:
    async with Client(f"{bridge.url}/mcp", mode="legacy") as client:
        paused = structured(
            await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "weekly report"})
        )
        arguments = approval_of(paused)
        # The user approves it in Dust's web app; the bridge's record still says it is pending.
        path = (
            f"/api/v1/w/demo/assistant/conversations/{paused['dust_conversation_id']}"
            f"/messages/{paused['message_id']}/validate-action"
        )
        answered = httpx2.post(
            simulator.url + path,
            json={"actionId": arguments["action_id"], "approved": "approved"},
            headers={"Authorization": f"Bearer {TEST_DUST_KEY}"},
            timeout=5,
        )
        answered.raise_for_status()
        late = await client.call_tool("approve_action", {**arguments, "decision": "reject"})
        assert late.is_error
        assert f"no action '{arguments['action_id']}' is waiting" in text_of(late)
        assert "answered already" in text_of(late) and "wait_for_answer" in text_of(late)
        done = structured(await client.call_tool("wait_for_answer", {"conversation": paused["conversation"]}))
    assert done["answer"] == SENT


async def test_replies_that_do_not_fit_the_question_are_refused_before_dust(
    bridge: Proc, simulator: Proc
) -> None:
    async with Client(f"{bridge.url}/mcp", mode="legacy") as client:
        paused = structured(
            await client.call_tool("ask_agent", {"agent": "asks-question", "message": "sales"})
        )
        (pending,) = paused["pending"]
        question = {"conversation": paused["conversation"], "action_id": pending["action_id"]}
        refusals = {
            "answer_question": [
                ({"options": [3]}, "choose options between 0 and 2"),
                ({"options": [-1]}, "choose options between 0 and 2"),
                ({"options": [0, 1]}, "this question takes one option only"),
                ({}, "choose at least one option or answer in your own words"),
            ],
            "approve_action": [({"decision": "approve"}, "is a question, not something approve answers")],
        }
        for tool, cases in refusals.items():
            for extra, message in cases:
                refused = await client.call_tool(tool, {**question, **extra})
                assert refused.is_error and message in text_of(refused), (tool, extra, text_of(refused))
        invalid = await client.call_tool("approve_action", {**question, "decision": "maybe"})
        assert invalid.is_error and "decision" in text_of(invalid)
        assert posted(simulator, "answer-question") == posted(simulator, "validate-action") == []
        done = structured(await client.call_tool("answer_question", {**question, "options": [2]}))
    assert done["answer"] == "You chose: Table"
