"""Pauses and long answers end to end: the SDK's own Client drives a running bridge on the simulator
and Redis, with and without the elicitation capability, in both protocol eras, over /mcp, /sse and
stdio."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CallToolResult,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
    InputRequiredResult,
)

from bridge.mcp.pauses import MODERN_ERA
from bridge.simulator.agents import long_answer
from tests.helpers import approval_of, faults, posted, stats, text_of
from tests.mcp.support import ERAS, Progress
from tests.procs import Proc, bridge_env, running, start_bridge

pytestmark = pytest.mark.usefixtures("reset_simulator")

SENT = "Email sent to team@example.com: weekly report"
NOT_SENT = "The email was not sent: the action was rejected."
FORMATS = ["Summary", "Full report", "Table"]  # the options of the asks-question agent's question


class User:
    """A user who answers every elicitation with `content` (or declines), noting what was asked."""

    def __init__(self, action: str = "accept", **content: Any) -> None:
        self.action = action
        self.content = content
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        if self.action != "accept":
            return ElicitResult(action=self.action)  # type: ignore[arg-type]
        return ElicitResult(action="accept", content=self.content or None)


def stdio(simulator: Proc) -> StdioServerParameters:
    """`dust-mcp-bridge stdio` on the simulator, as Claude Desktop starts it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_", "REDIS_"))},
        **bridge_env(simulator),
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "bridge", "stdio"], env=env)


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


# Every way a client reaches the bridge: where, then the era it speaks (Claude Desktop is
# stdio-handshake).
TRANSPORTS = ["mcp-handshake", "mcp-2026", "sse-handshake", "sse-2026", "stdio-handshake", "stdio-2026"]
ELICITS = pytest.mark.parametrize("elicits", [True, False], ids=["elicitation", "no-elicitation"])


@asynccontextmanager
async def connected(
    transport: str, bridge: Proc, simulator: Proc, user: User | None
) -> AsyncIterator[Client]:
    """The SDK's client over `transport`, declaring elicitation (answered by `user`) if given."""
    where, era = transport.split("-")
    target: Any  # a URL, the SSE transport or stdio parameters: Client tells them apart
    if where == "mcp":
        target = f"{bridge.url}/mcp"
    elif where == "sse":
        target = sse_client(f"{bridge.url}/sse")
    else:
        target = stdio(simulator)
    mode = "auto" if era == "2026" else "legacy"
    async with Client(target, mode=mode, elicitation_callback=user) as client:
        # "auto" falls back to the handshake without a word: the era under test must be the one spoken.
        assert (client.protocol_version == MODERN_ERA) == (era == "2026"), client.protocol_version
        yield client


async def decide(client: Client, user: User | None, decision: str) -> tuple[dict[str, Any], str | None]:
    """Ask the needs-approval agent and take `decision`: in the form when the client elicits
    (answered by `user`), else with the approve_action call ask_agent's result names. The final
    result, and the id of the action decided when the client was shown it."""
    first = await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "weekly report"})
    if user is not None:
        asked = user.asked[-1]
        assert "send_email" in asked.message and "team@example.com" in asked.message
        return structured(first), None
    paused = structured(first)
    assert paused["status"] == "waiting_for_user"
    (pending,) = paused["pending"]
    assert pending["kind"] == "approval" and pending["tool"] == "send_email" and pending["stake"] == "high"
    assert f'approve_action(conversation="{paused["conversation"]}"' in text_of(first)
    done = await client.call_tool("approve_action", approval_of(paused, decision))
    return structured(done), pending["action_id"]


async def answer_with_answer_question(client: Client, first: CallToolResult) -> tuple[dict[str, Any], str]:
    """What a client without elicitation does with a question: choose "Table" by its number and
    add words. The final result, and the id of the question answered."""
    paused = structured(first)
    assert paused["status"] == "waiting_for_user"
    (pending,) = paused["pending"]
    assert [option["label"] for option in pending["options"]] == FORMATS
    assert f'answer_question(conversation="{paused["conversation"]}"' in text_of(first)
    arguments = {"conversation": paused["conversation"], "action_id": pending["action_id"]}
    done = await client.call_tool("answer_question", {**arguments, "options": [2], "text": "wide columns"})
    return structured(done), pending["action_id"]


# Each decision, what Dust's validate-action receives for it, and what the agent says then.
DECISIONS_AT_DUST = [
    ("approve", "approved", SENT),
    ("reject", "rejected", NOT_SENT),
    ("always_approve", "always_approved", SENT),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@ELICITS
async def test_an_approval_approved_rejected_and_always_approved_reaches_dust_from_every_client(
    bridge: Proc, simulator: Proc, transport: str, elicits: bool
) -> None:
    user = User()
    # One session takes the three decisions in turn: a stdio bridge is a process to start.
    async with connected(transport, bridge, simulator, user if elicits else None) as client:
        for decision, approved, answer in DECISIONS_AT_DUST:
            user.content = {"decision": decision}
            done, action_id = await decide(client, user if elicits else None, decision)
            assert done["status"] == "complete" and done["answer"] == answer, decision
            body = posted(simulator, "validate-action")[-1]
            # A form shows no action id; the fallback's result names the one to decide.
            assert body == {"actionId": action_id or body["actionId"], "approved": approved}, decision
    assert len(posted(simulator, "validate-action")) == 3
    assert len(user.asked) == (3 if elicits else 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
@ELICITS
async def test_a_question_is_answered_with_an_option_and_words_from_every_client(
    bridge: Proc, simulator: Proc, transport: str, elicits: bool
) -> None:
    user = User(choice="Table", answer="wide columns")
    async with connected(transport, bridge, simulator, user if elicits else None) as client:
        first = await client.call_tool("ask_agent", {"agent": "asks-question", "message": "sales"})
        if elicits:
            done, action_id = structured(first), None
            (asked,) = user.asked
            assert isinstance(asked, ElicitRequestFormParams) and "Which format" in asked.message
            assert asked.requested_schema["properties"]["choice"]["enum"] == FORMATS
        else:
            done, action_id = await answer_with_answer_question(client, first)
    assert done["status"] == "complete" and done["answer"] == "You chose: Table (note: wide columns)"
    (body,) = posted(simulator, "answer-question")
    answer = {"selectedOptions": [2], "customResponse": "wide columns"}
    assert body == {"actionId": action_id or body["actionId"], "answer": answer}


@pytest.mark.parametrize("mode", ERAS)
async def test_approve_action_refuses_an_action_already_decided_or_unknown(bridge: Proc, mode: str) -> None:
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        paused = structured(
            await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "weekly report"})
        )
        arguments = approval_of(paused)
        assert structured(await client.call_tool("approve_action", arguments))["answer"] == SENT
        again = await client.call_tool("approve_action", arguments)
        assert again.is_error and "no action" in text_of(again) and "waiting" in text_of(again)
        unknown = await client.call_tool("approve_action", {**arguments, "action_id": "nope"})
        assert unknown.is_error and "no action 'nope'" in text_of(unknown)


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("refusal", ["decline", "cancel"])
async def test_a_declined_or_cancelled_elicitation_leaves_the_action_pending_for_approve_action(
    bridge: Proc, simulator: Proc, mode: str, refusal: str
) -> None:
    user = User(refusal)
    async with Client(f"{bridge.url}/mcp", mode=mode, elicitation_callback=user) as client:  # type: ignore[arg-type]
        paused = structured(
            await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "weekly report"})
        )
        assert paused["status"] == "waiting_for_user" and len(user.asked) == 1
        assert posted(simulator, "validate-action") == []  # nothing was decided in Dust
        done = await client.call_tool("approve_action", approval_of(paused))
    assert structured(done)["answer"] == SENT
    assert [body["approved"] for body in posted(simulator, "validate-action")] == ["approved"]


async def test_a_sub_agents_approval_goes_to_its_own_conversation(bridge: Proc, simulator: Proc) -> None:
    user = User(decision="approve")
    async with Client(f"{bridge.url}/mcp", mode="legacy", elicitation_callback=user) as client:
        result = await client.call_tool("ask_agent", {"agent": "delegator", "message": "weekly report"})
    content = structured(result)
    assert content["answer"] == f"The sub-agent finished: {SENT}"


# --- long answers, restarts and cancellations -----------------------------------------------------


@pytest.fixture
def patient(simulator: Proc, redis_server: Proc, redis_url: str) -> Iterator[Proc]:
    """A bridge whose tool calls return after 3 s of waiting, on the simulator and a clean Redis."""
    env = bridge_env(simulator, redis_server.port, BRIDGE_ANSWER_DEADLINE_SECONDS="3")
    with running(start_bridge(env)) as proc:
        yield proc


async def wait_until_complete(
    client: Client, handle: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Call wait_for_answer until the answer is complete (each call returns at the deadline)."""
    with anyio.fail_after(400):
        while True:
            result = structured(
                await client.call_tool(
                    "wait_for_answer", {"conversation": handle}, progress_callback=progress
                )
            )
            if result["status"] == "complete":
                return result
            assert result["status"] == "working"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_long_answer_returns_at_the_deadline_and_wait_for_answer_gets_the_exact_full_text(
    patient: Proc, simulator: Proc, mode: str
) -> None:
    faults(simulator, long_seconds=12)
    progress = Progress()
    async with Client(f"{patient.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        started = anyio.current_time()
        first = await client.call_tool("ask_agent", {"agent": "long-runner", "message": "Q3 churn"})
        assert anyio.current_time() - started < 8
        partial = structured(first)
        assert partial["status"] == "working" and long_answer("Q3 churn").startswith(partial["answer"])
        assert f'wait_for_answer(conversation="{partial["conversation"]}")' in text_of(first)
        transcript = structured(
            await client.call_tool("get_conversation", {"conversation": partial["conversation"]})
        )
        assert transcript["messages"][-1]["status"] == "in_progress"
        done = await wait_until_complete(client, partial["conversation"], progress)
    assert done["answer"] == long_answer("Q3 churn")
    assert "Step 12 of 12 done." in "".join(progress.messages)  # the rest streamed as progress


@pytest.mark.timeout(300)  # the answer takes three minutes, as real deep-research agents do
async def test_a_three_minute_answer_outlives_a_five_second_deadline_and_a_bridge_restart(
    simulator: Proc, redis_server: Proc
) -> None:
    faults(simulator, long_seconds=180)
    env = bridge_env(simulator, redis_server.port, BRIDGE_ANSWER_DEADLINE_SECONDS="5")
    with running(start_bridge(env)) as first:
        async with Client(f"{first.url}/mcp", mode="legacy") as client:
            partial = structured(
                await client.call_tool("ask_agent", {"agent": "long-runner", "message": "restart"})
            )
    assert partial["status"] == "working"
    with running(start_bridge(env)) as second:
        async with Client(f"{second.url}/mcp", mode="auto") as client:
            done = await wait_until_complete(client, partial["conversation"])
    assert done["answer"] == long_answer("restart")


async def my_conversation(client: Client) -> str:
    """The handle of the caller's only conversation, found the way a client can: in resources/list."""
    listed = [str(r.uri) for r in (await client.list_resources()).resources]
    (uri,) = [uri for uri in listed if uri.startswith("dust://conversations/")]
    return uri.removeprefix("dust://conversations/")


async def test_a_client_that_times_out_leaves_the_dust_answer_running(patient: Proc, simulator: Proc) -> None:
    faults(simulator, long_seconds=12)
    async with Client(f"{patient.url}/mcp", mode="legacy") as client:
        with pytest.raises(MCPError, match="timed out"):
            await client.call_tool(
                "ask_agent", {"agent": "long-runner", "message": "timeout"}, read_timeout_seconds=1.5
            )
        with anyio.fail_after(10):  # the bridge has heard the cancel's reason and kept the answer running
            while "the answer goes on in Dust for wait_for_answer" not in patient.log():
                await anyio.sleep(0.05)
        assert stats(simulator)["cancels"] == []
        done = await wait_until_complete(client, await my_conversation(client))
    assert done["answer"] == long_answer("timeout")


async def test_a_user_cancel_stops_the_dust_answer(patient: Proc, simulator: Proc) -> None:
    faults(simulator, long_seconds=12)
    async with Client(f"{patient.url}/mcp", mode="legacy") as client:
        with anyio.move_on_after(1.5):
            await client.call_tool("ask_agent", {"agent": "long-runner", "message": "stop"})
        with anyio.fail_after(10):
            while not stats(simulator)["cancels"]:
                await anyio.sleep(0.1)


async def test_a_pending_approval_survives_a_restart_and_a_refused_validation(
    simulator: Proc, redis_server: Proc
) -> None:
    env = bridge_env(simulator, redis_server.port)
    with running(start_bridge(env)) as first:
        async with Client(f"{first.url}/mcp", mode="legacy") as client:
            paused = structured(
                await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "weekly report"})
            )
    arguments = approval_of(paused)
    with running(start_bridge(env)) as second:
        async with Client(f"{second.url}/mcp", mode="auto") as client:
            faults(
                simulator,
                fail_next=[{"match": "/validate-action", "status": 500, "message": "Dust is down."}],
            )
            refused = await client.call_tool("approve_action", arguments)
            assert refused.is_error and "Dust is down." in text_of(refused)
            done = structured(await client.call_tool("approve_action", arguments))
    assert done["answer"] == SENT


# --- personal authorisation -----------------------------------------------------------------------

FOUND = "Found 2 documents in Google Drive for: roadmap"


# Handshake era: a URL elicitation mid-call; 2026-07-28: a URL input request, answered in the retry.
@pytest.mark.parametrize("mode", ["legacy", MODERN_ERA])
async def test_a_personal_authorisation_is_a_url_elicitation_and_the_answer_follows_the_connection(
    bridge: Proc, simulator: Proc, mode: str
) -> None:
    asked: list[ElicitRequestParams] = []

    async def connect_in_dust(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params)
        async with httpx2.AsyncClient() as http:  # the user connects the account in Dust's UI
            (await http.post(f"{simulator.url}/_sim/connect")).raise_for_status()
        return ElicitResult(action="accept")

    async with Client(f"{bridge.url}/mcp", mode=mode, elicitation_callback=connect_in_dust) as client:
        result = structured(
            await client.call_tool("ask_agent", {"agent": "needs-auth", "message": "roadmap"})
        )
    assert result["status"] == "complete" and result["answer"] == FOUND
    (params,) = asked
    assert isinstance(params, ElicitRequestURLParams) and params.url == result["url"]
    assert "Open the conversation in Dust" in params.message


async def test_without_elicitation_a_personal_authorisation_gives_the_dust_link_then_wait_for_answer(
    bridge: Proc, simulator: Proc
) -> None:
    async with Client(f"{bridge.url}/mcp", mode="auto") as client:
        first = await client.call_tool("ask_agent", {"agent": "needs-auth", "message": "roadmap"})
        paused = structured(first)
        assert paused["status"] == "waiting_for_user" and paused["pending"][0]["kind"] == "personal_auth"
        assert paused["url"] and paused["url"] in text_of(first) and "wait_for_answer" in text_of(first)
        httpx2.post(f"{simulator.url}/_sim/connect", timeout=5).raise_for_status()
        done = structured(await client.call_tool("wait_for_answer", {"conversation": paused["conversation"]}))
    assert done["status"] == "complete" and done["answer"] == FOUND


# --- the 2026-07-28 request state -----------------------------------------------------------------


async def test_the_input_required_retry_may_land_on_another_replica_but_not_with_a_forged_state(
    simulator: Proc, redis_server: Proc
) -> None:
    env = bridge_env(simulator, redis_server.port)
    with running(start_bridge(env)) as first, running(start_bridge(env)) as second:
        async with Client(f"{first.url}/mcp", elicitation_callback=User()) as client:
            asked = await client.session.call_tool(
                "ask_agent",
                {"agent": "needs-approval", "message": "weekly report"},
                allow_input_required=True,
            )
        assert isinstance(asked, InputRequiredResult) and asked.input_requests and asked.request_state
        (action_id,) = asked.input_requests
        answers = {action_id: ElicitResult(action="accept", content={"decision": "approve"})}
        async with Client(f"{second.url}/mcp", elicitation_callback=User()) as client:
            with pytest.raises(MCPError, match="requestState"):
                await client.session.call_tool(
                    "ask_agent",
                    {"agent": "needs-approval", "message": "weekly report"},
                    input_responses=answers,
                    request_state=asked.request_state[:-4] + "AAAA",
                    allow_input_required=True,
                )
            done = await client.session.call_tool(
                "ask_agent",
                {"agent": "needs-approval", "message": "weekly report"},
                input_responses=answers,
                request_state=asked.request_state,
                allow_input_required=True,
            )
    assert isinstance(done, CallToolResult) and structured(done)["answer"] == SENT


async def test_a_client_that_never_answers_the_form_gets_the_pending_action_at_the_deadline(
    patient: Proc,
) -> None:
    async def silent(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with Client(f"{patient.url}/mcp", mode="legacy", elicitation_callback=silent) as client:
        with anyio.fail_after(20):
            first = await client.call_tool(
                "ask_agent", {"agent": "needs-approval", "message": "weekly report"}
            )
        paused = structured(first)
        assert paused["status"] == "waiting_for_user" and "nobody answered within 3 s" in text_of(first)
        (pending,) = paused["pending"]
        done = await client.call_tool(
            "approve_action",
            {
                "conversation": paused["conversation"],
                "action_id": pending["action_id"],
                "decision": "approve",
            },
        )
    assert structured(done)["answer"] == SENT
