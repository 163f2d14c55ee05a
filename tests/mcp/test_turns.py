"""Pauses and long answers end to end: the SDK's own Client drives a running bridge on the simulator
and Redis, with and without the elicitation capability, in both protocol eras."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from tests.helpers import text_of
from tests.mcp.support import ERAS, Progress
from tests.procs import Proc

pytestmark = pytest.mark.usefixtures("reset_simulator")

SENT = "Email sent to team@example.com: weekly report"
NOT_SENT = "The email was not sent: the action was rejected."


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


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(
    ("decision", "answer"), [("approve", SENT), ("reject", NOT_SENT), ("always_approve", SENT)]
)
async def test_an_approval_is_put_to_a_client_that_can_elicit_and_the_answer_streams_on(
    bridge: Proc, simulator: Proc, mode: str, decision: str, answer: str
) -> None:
    user = User(decision=decision)
    progress = Progress()
    async with Client(f"{bridge.url}/mcp", mode=mode, elicitation_callback=user) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "ask_agent", {"agent": "needs-approval", "message": "weekly report"}, progress_callback=progress
        )
    content = structured(result)
    assert content["status"] == "complete" and content["answer"] == answer
    assert len(user.asked) == 1
    assert "send_email" in user.asked[0].message and "team@example.com" in user.asked[0].message


@pytest.mark.parametrize("mode", ERAS)
async def test_a_client_without_elicitation_gets_the_pending_approval_and_approve_action_finishes(
    bridge: Proc, mode: str
) -> None:
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        paused = structured(
            await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "weekly report"})
        )
        assert paused["status"] == "waiting_for_user"
        (pending,) = paused["pending"]
        assert pending["kind"] == "approval" and pending["tool"] == "send_email" and pending["stake"] == "high"
        arguments = {"conversation": paused["conversation"], "action_id": pending["action_id"]}
        done = structured(await client.call_tool("approve_action", {**arguments, "decision": "approve"}))
        assert done["status"] == "complete" and done["answer"] == SENT
        again = await client.call_tool("approve_action", {**arguments, "decision": "approve"})
        assert again.is_error and "no action" in text_of(again) and "waiting" in text_of(again)
        unknown = await client.call_tool("approve_action", {**arguments, "action_id": "nope", "decision": "reject"})
        assert unknown.is_error and "no action 'nope'" in text_of(unknown)


@pytest.mark.parametrize("mode", ERAS)
async def test_a_question_is_answered_by_elicitation_with_an_option_and_words(bridge: Proc, mode: str) -> None:
    user = User(choice="Table", answer="wide columns")
    async with Client(f"{bridge.url}/mcp", mode=mode, elicitation_callback=user) as client:  # type: ignore[arg-type]
        result = await client.call_tool("ask_agent", {"agent": "asks-question", "message": "sales"})
    assert structured(result)["answer"] == "You chose: Table (note: wide columns)"


async def test_a_question_is_answered_with_answer_question_when_the_client_cannot_elicit(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp", mode="legacy") as client:
        paused = structured(await client.call_tool("ask_agent", {"agent": "asks-question", "message": "sales"}))
        (pending,) = paused["pending"]
        assert [option["label"] for option in pending["options"]] == ["Summary", "Full report", "Table"]
        result = await client.call_tool(
            "answer_question",
            {"conversation": paused["conversation"], "action_id": pending["action_id"], "options": [0]},
        )
    assert structured(result)["answer"] == "You chose: Summary"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_declined_elicitation_leaves_the_action_pending_for_approve_action(bridge: Proc, mode: str) -> None:
    user = User("decline")
    async with Client(f"{bridge.url}/mcp", mode=mode, elicitation_callback=user) as client:  # type: ignore[arg-type]
        paused = structured(
            await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "weekly report"})
        )
        assert paused["status"] == "waiting_for_user" and len(user.asked) == 1
        (pending,) = paused["pending"]
        done = await client.call_tool(
            "approve_action",
            {"conversation": paused["conversation"], "action_id": pending["action_id"], "decision": "approve"},
        )
    assert structured(done)["answer"] == SENT


async def test_a_sub_agents_approval_goes_to_its_own_conversation(bridge: Proc, simulator: Proc) -> None:
    user = User(decision="approve")
    async with Client(f"{bridge.url}/mcp", mode="legacy", elicitation_callback=user) as client:
        result = await client.call_tool("ask_agent", {"agent": "delegator", "message": "weekly report"})
    content = structured(result)
    assert content["answer"] == f"The sub-agent finished: {SENT}"
