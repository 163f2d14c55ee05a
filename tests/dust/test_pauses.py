"""PendingAction read from the simulator's real pause events and blocked-actions listings.

The simulator publishes what Dust's code publishes (tests/simulator/test_pauses.py pins that); these
tests check the bridge's reading of it: `PendingAction.from_event` on the message stream's pause
events and `PendingAction.from_blocked` on `GET .../actions/blocked`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from bridge.dust.pauses import PendingAction, Question, QuestionOption
from tests.procs import Proc
from tests.simulator.support import AUTH, TERMINAL, W, configure, read_connection, start

PAUSES = {"tool_approve_execution", "tool_ask_user_question", "tool_personal_auth_required"}


@pytest.fixture
async def http(simulator: Proc) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=simulator.url, headers=AUTH, timeout=10.0) as client:
        (await client.post("/_sim/reset")).raise_for_status()
        # A paused stream is quiet: short connections end the reads quickly.
        await configure(client, token_delay_ms=0.5, connection_lifetime_seconds=0.3)
        yield client


async def paused(
    http: httpx2.AsyncClient, agent: str, content: str = "q3 report"
) -> tuple[str, dict[str, Any]]:
    """(the conversation started, the pause event its agent message publishes)."""
    c_id, m_id = await start(http, content, agent)
    events: list[dict[str, Any]] = []
    for _ in range(100):
        last = events[-1]["eventId"] if events else None
        events += (await read_connection(http, c_id, m_id, last)).events
        if events and events[-1]["data"]["type"] in PAUSES:
            return c_id, dict(events[-1]["data"])
        assert not (events and events[-1]["data"]["type"] in TERMINAL)
    raise AssertionError("no pause")


async def pause_event(http: httpx2.AsyncClient, agent: str, content: str = "q3 report") -> dict[str, Any]:
    """The pause event an agent's message publishes (reconnecting with lastEventId)."""
    return (await paused(http, agent, content))[1]


async def listing(http: httpx2.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    resp = await http.get(f"{W}/assistant/conversations/{conversation_id}/actions/blocked")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["blockedActions"])


async def test_an_approval_event_reads_as_an_approval_on_the_agents_own_message(
    http: httpx2.AsyncClient,
) -> None:
    event = await pause_event(http, "approve001")
    pending = PendingAction.from_event(event)
    assert pending == PendingAction(
        kind="approval",
        action_id=event["actionId"],
        conversation_id=event["conversationId"],
        message_id=event["messageId"],
        tool="send_email",
        server="Gmail",
        inputs={"to": "team@example.com", "subject": "q3 report"},
        stake="high",
        last_of_step=True,
    )


async def test_a_question_event_reads_with_its_question_and_options(http: httpx2.AsyncClient) -> None:
    event = await pause_event(http, "question01")
    pending = PendingAction.from_event(event)
    assert pending is not None
    assert (pending.kind, pending.tool, pending.action_id) == (
        "question",
        "ask_user_question",
        event["actionId"],
    )
    assert pending.question == Question(
        text="Which format do you want?",
        options=(
            QuestionOption("Summary", "A short summary"),
            QuestionOption("Full report"),
            QuestionOption("Table"),
        ),
        multi_select=False,
    )


async def test_a_personal_auth_event_reads_with_dusts_message_and_the_provider(
    http: httpx2.AsyncClient,
) -> None:
    event = await pause_event(http, "auth000001", "roadmap")
    pending = PendingAction.from_event(event)
    assert pending is not None
    assert (pending.kind, pending.tool, pending.inputs) == (
        "personal_auth",
        "search_drive",
        {"query": "roadmap"},
    )
    assert pending.auth_subject == "google_drive"
    assert pending.auth_message == (
        "The tool google_drive__search_drive requires personal authentication, please authenticate to use it."
    )
    # Dust's event names the server, not its display name, in mcpServerDisplayName.
    assert pending.server == "google_drive"


async def test_a_relayed_sub_agent_approval_points_at_the_child_conversation_and_message(
    http: httpx2.AsyncClient,
) -> None:
    event = await pause_event(http, "delegate01", "board minutes")
    pending = PendingAction.from_event(event)
    assert pending is not None and pending.kind == "approval"
    child = (await http.get(f"{W}/assistant/conversations/{pending.conversation_id}")).json()["conversation"]
    assert child["depth"] == 1
    assert child["content"][1][-1]["sId"] == pending.message_id


@pytest.mark.parametrize("agent", ["approve001", "question01", "auth000001"])
async def test_a_listed_blocked_action_reads_as_the_same_pending_action_as_its_event(
    http: httpx2.AsyncClient, agent: str
) -> None:
    event = await pause_event(http, agent)
    from_event = PendingAction.from_event(event)
    [item] = await listing(http, event["conversationId"])
    from_listing = PendingAction.from_blocked(item)
    assert from_event is not None and from_listing is not None
    # The listing has no `authError` (its `authorizationInfo` names the provider instead), so what
    # the event says about the authorisation is not compared.
    same = ("kind", "action_id", "conversation_id", "message_id", "tool", "inputs", "question")
    assert {name: getattr(from_listing, name) for name in same} == {
        name: getattr(from_event, name) for name in same
    }


async def test_a_sub_agents_pause_is_listed_only_nested_under_the_callers_run_agent_entry(
    http: httpx2.AsyncClient,
) -> None:
    """listBlockedActionsForConversation puts the child's blocked actions in the run_agent entry's
    `childBlockedActionsList`: from the parent's listing, `from_blocked` finds nothing to answer;
    the child conversation's own listing has the action."""
    parent_id, event = await paused(http, "delegate01")
    relayed = PendingAction.from_event(event)
    assert relayed is not None
    [entry] = await listing(http, parent_id)
    assert entry["status"] == "blocked_child_action_input_required"
    assert PendingAction.from_blocked(entry) is None
    [nested] = entry["childBlockedActionsList"]
    [own] = await listing(http, relayed.conversation_id)
    answerable = PendingAction.from_blocked(own)
    assert answerable is not None and answerable == PendingAction.from_blocked(nested)
    assert (answerable.action_id, answerable.message_id) == (relayed.action_id, relayed.message_id)
