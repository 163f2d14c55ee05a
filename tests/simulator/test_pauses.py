"""Agents that pause on their user, and the routes that answer them, as Dust's code does.

The rules come from dust-tt/dust: front-api/routes/v1/w/[wId]/assistant/conversations/[cId]/
messages/[mId]/validate-action.ts and answer-question.ts, [cId]/actions/blocked.ts,
front/lib/api/assistant/conversation/validate_actions.ts, answer_user_question.ts,
resolve_authentication.ts, and AgentMCPActionResource.listBlockedActionsForConversation.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from bridge.simulator.agents import long_answer
from tests.simulator.support import (
    TERMINAL,
    W,
    answer_text,
    assert_dust_error,
    configure,
    read_connection,
    start,
)

PAUSES = {"tool_approve_execution", "tool_ask_user_question", "tool_personal_auth_required"}
CONVERSATIONS = f"{W}/assistant/conversations"
APPROVER, ASKER, NEEDS_AUTH, DELEGATOR, LONG_RUNNER = (
    "approve001",
    "question01",
    "auth000001",
    "delegate01",
    "longrun001",
)
FORMAT_QUESTION = {
    "question": "Which format do you want?",
    "options": [
        {"label": "Summary", "description": "A short summary"},
        {"label": "Full report", "description": None},
        {"label": "Table", "description": None},
    ],
    "multiSelect": False,
}
NOT_AN_AGENT_MESSAGE = "Unhandled internal server error: Agent message is expected to have a parentId"


@pytest.fixture
async def http(client: httpx2.AsyncClient) -> httpx2.AsyncClient:
    # A paused stream sends nothing: short connections let the tests see its end quickly.
    await configure(client, connection_lifetime_seconds=0.3)
    return client


async def until_paused(http: httpx2.AsyncClient, c_id: str, m_id: str) -> list[dict[str, Any]]:
    """The message's events up to its pause event, reconnecting with lastEventId like the SDK."""
    events: list[dict[str, Any]] = []
    for _ in range(100):
        last = events[-1]["eventId"] if events else None
        events += (await read_connection(http, c_id, m_id, last)).events
        if events and events[-1]["data"]["type"] in PAUSES:
            return events
        assert not (events and events[-1]["data"]["type"] in TERMINAL), [e["data"]["type"] for e in events]
    raise AssertionError("the message never paused")


async def after(http: httpx2.AsyncClient, c_id: str, m_id: str, last: str | None) -> list[dict[str, Any]]:
    """The message's events after `last` up to its terminal event."""
    events: list[dict[str, Any]] = []
    for _ in range(200):
        resume = events[-1]["eventId"] if events else last
        events += (await read_connection(http, c_id, m_id, resume)).events
        if events and events[-1]["data"]["type"] in TERMINAL:
            return events
    raise AssertionError("the message never ended")


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["type"] for e in events if e["data"]["type"] != "generation_tokens"]


def validate_url(c_id: str, m_id: str) -> str:
    return f"{CONVERSATIONS}/{c_id}/messages/{m_id}/validate-action"


def answer_url(c_id: str, m_id: str) -> str:
    return f"{CONVERSATIONS}/{c_id}/messages/{m_id}/answer-question"


async def paused(
    http: httpx2.AsyncClient, agent: str, content: str = "quarterly numbers", **extra: Any
) -> Any:
    """(conversation, message, events up to the pause, the pause event's data)."""
    c_id, m_id = await start(http, content, agent, **extra)
    events = await until_paused(http, c_id, m_id)
    return c_id, m_id, events, events[-1]["data"]


async def blocked(http: httpx2.AsyncClient, c_id: str) -> list[dict[str, Any]]:
    resp = await http.get(f"{CONVERSATIONS}/{c_id}/actions/blocked")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["blockedActions"])


async def agent_message(http: httpx2.AsyncClient, c_id: str, m_id: str) -> dict[str, Any]:
    conversation = (await http.get(f"{CONVERSATIONS}/{c_id}")).json()["conversation"]
    return next(v[-1] for v in conversation["content"] if v[-1]["sId"] == m_id)


# --- approval -----------------------------------------------------------------------------------


async def test_needs_approval_publishes_every_field_of_the_approval_event_then_goes_quiet(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, events, pause = await paused(http, APPROVER)
    assert types(events) == ["tool_call_started", "tool_params", "tool_approve_execution"]
    params = events[-2]["data"]["action"]
    assert params["status"] == "blocked_validation_required"
    assert pause == {
        "type": "tool_approve_execution",
        "created": pause["created"],
        "configurationId": APPROVER,
        "messageId": m_id,
        "conversationId": c_id,
        "actionId": params["sId"],
        "inputs": {"to": "team@example.com", "subject": "quarterly numbers"},
        "stake": "high",
        "metadata": {
            "toolName": "send_email",
            "mcpServerName": "gmail",
            "agentName": "needs-approval",
            "icon": "GmailLogo",
            "mcpServerDisplayName": "Gmail",
            "mcpServerId": "ims_gmail00001",
        },
        "isLastBlockingEventForStep": True,
        "step": 0,
    }
    # Nothing more comes while the message waits: connections end with `done` and no event.
    quiet = await read_connection(http, c_id, m_id, events[-1]["eventId"])
    assert quiet.done and quiet.events == []


async def test_a_paused_message_is_created_with_its_action_in_blocked_status(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, _, pause = await paused(http, APPROVER)
    message = await agent_message(http, c_id, m_id)
    assert message["status"] == "created"
    assert message["content"] is None
    [action] = message["actions"]
    assert (action["sId"], action["status"]) == (pause["actionId"], "blocked_validation_required")
    assert action["params"] == pause["inputs"]


@pytest.mark.parametrize("approved", ["approved", "always_approved"])
async def test_approving_runs_the_tool_and_the_answer_goes_on_on_the_same_message(
    http: httpx2.AsyncClient, approved: str
) -> None:
    c_id, m_id, events, pause = await paused(http, APPROVER)
    resp = await http.post(
        validate_url(c_id, m_id), json={"actionId": pause["actionId"], "approved": approved}
    )
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    rest = await after(http, c_id, m_id, events[-1]["eventId"])
    assert types(rest) == ["agent_action_success", "agent_message_success"]
    action = rest[0]["data"]["action"]
    assert (action["status"], action["output"]) == (
        "succeeded",
        [{"type": "text", "text": "Email sent to team@example.com."}],
    )
    assert answer_text(rest) == "Email sent to team@example.com: quarterly numbers"
    final = rest[-1]["data"]["message"]
    assert final["content"] == "Email sent to team@example.com: quarterly numbers"
    assert [a["status"] for a in final["actions"]] == ["succeeded"]


async def test_rejecting_tells_the_model_and_the_agent_says_the_email_was_not_sent(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, events, pause = await paused(http, APPROVER)
    resp = await http.post(
        validate_url(c_id, m_id), json={"actionId": pause["actionId"], "approved": "rejected"}
    )
    assert resp.status_code == 200, resp.text
    rest = await after(http, c_id, m_id, events[-1]["eventId"])
    action = rest[0]["data"]["action"]
    # The model reads Dust's own sentence for a denied action in place of the tool's output.
    assert action["status"] == "denied"
    assert action["output"] == [
        {
            "type": "text",
            "text": "The user rejected this specific action execution. "
            "Using this action is hence forbidden for this message.",
        }
    ]
    assert answer_text(rest) == "The email was not sent: the action was rejected."


async def test_an_answered_approval_is_deleted_from_the_replay_and_last_event_id_still_resumes(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, events, pause = await paused(http, APPROVER)
    await http.post(validate_url(c_id, m_id), json={"actionId": pause["actionId"], "approved": "approved"})
    await after(http, c_id, m_id, events[-1]["eventId"])
    replay = await after(http, c_id, m_id, None)
    assert types(replay) == [
        "tool_call_started",
        "tool_params",
        "agent_action_success",
        "agent_message_success",
    ]
    # The id of the deleted event still places a reader right after it.
    resumed = await after(http, c_id, m_id, events[-1]["eventId"])
    assert types(resumed) == ["agent_action_success", "agent_message_success"]


async def test_a_conversation_that_skips_tool_validation_runs_the_tool_without_asking(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id = await start(http, "no questions", APPROVER, skipToolsValidation=True)
    events = await after(http, c_id, m_id, None)
    assert types(events) == [
        "tool_call_started",
        "tool_params",
        "agent_action_success",
        "agent_message_success",
    ]
    assert answer_text(events) == "Email sent to team@example.com: no questions"
    assert await blocked(http, c_id) == []


async def test_validate_action_refusals_carry_dusts_status_type_and_message(http: httpx2.AsyncClient) -> None:
    c_id, m_id, _, pause = await paused(http, APPROVER)
    body = {"actionId": pause["actionId"], "approved": "approved"}
    # The body is checked first, before the conversation is even looked up.
    resp = await http.post(validate_url("nosuchconv", m_id), json={**body, "approved": True})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["message"].startswith("Invalid request body: ")
    assert_dust_error(
        await http.post(validate_url("nosuchconv", m_id), json=body),
        404,
        "conversation_not_found",
        "Conversation not found.",
    )
    # An unknown message (or a user message) fails getUserMessageIdFromMessageId's assertion.
    assert_dust_error(
        await http.post(validate_url(c_id, "nosuchmsg0"), json=body),
        500,
        "internal_server_error",
        NOT_AN_AGENT_MESSAGE,
    )
    assert_dust_error(
        await http.post(validate_url(c_id, m_id), json={**body, "actionId": "act_unknown"}),
        404,
        "action_not_found",
        "Action not found: act_unknown",
    )
    assert (await http.post(validate_url(c_id, m_id), json=body)).status_code == 200
    # Validated, the action is ready, then runs and succeeds: no longer blocked, whichever it is.
    again = await http.post(validate_url(c_id, m_id), json=body)
    assert again.status_code == 400 and again.json()["error"]["type"] == "action_not_blocked"
    assert again.json()["error"]["message"] in {
        f"Action is not blocked: {status}" for status in ("ready_allowed_explicitly", "running", "succeeded")
    }


# --- question -----------------------------------------------------------------------------------


async def test_asks_question_publishes_the_question_event(http: httpx2.AsyncClient) -> None:
    c_id, m_id, events, pause = await paused(http, ASKER)
    assert types(events) == ["tool_call_started", "tool_params", "tool_ask_user_question"]
    assert pause == {
        "type": "tool_ask_user_question",
        "created": pause["created"],
        "configurationId": ASKER,
        "messageId": m_id,
        "conversationId": c_id,
        "actionId": events[-2]["data"]["action"]["sId"],
        "metadata": {
            "toolName": "ask_user_question",
            "mcpServerName": "ask_user_question",
            "agentName": "agent",
        },
        "inputs": FORMAT_QUESTION,
        "question": FORMAT_QUESTION,
        "step": 0,
    }
    message = await agent_message(http, c_id, m_id)
    assert [a["status"] for a in message["actions"]] == ["blocked_user_answer_required"]


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"selectedOptions": [0, 2]}, "You chose: Summary, Table"),
        ({"selectedOptions": [1], "customResponse": "by Friday"}, "You chose: Full report (note: by Friday)"),
        ({"selectedOptions": [], "customResponse": "a chart"}, "You chose: a chart"),
        # Indexes out of range are accepted and skipped, as Dust's ask_user_question tool does.
        ({"selectedOptions": [7, 1, -1]}, "You chose: Full report"),
        ({"selectedOptions": []}, "You did not choose any option."),
    ],
)
async def test_answering_the_question_resumes_with_the_chosen_labels(
    http: httpx2.AsyncClient, answer: dict[str, Any], said: str
) -> None:
    c_id, m_id, events, pause = await paused(http, ASKER)
    resp = await http.post(answer_url(c_id, m_id), json={"actionId": pause["actionId"], "answer": answer})
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    rest = await after(http, c_id, m_id, events[-1]["eventId"])
    assert types(rest) == ["agent_action_success", "agent_message_success"]
    assert answer_text(rest) == said


async def test_the_tool_output_of_an_answered_question_is_dusts_sentence(http: httpx2.AsyncClient) -> None:
    c_id, m_id, events, pause = await paused(http, ASKER)
    answer = {"selectedOptions": [0], "customResponse": "short"}
    await http.post(answer_url(c_id, m_id), json={"actionId": pause["actionId"], "answer": answer})
    rest = await after(http, c_id, m_id, events[-1]["eventId"])
    assert rest[0]["data"]["action"]["output"] == [
        {
            "type": "text",
            "text": 'User has answered your question: "Which format do you want?"="Summary, Other: short". '
            "You can now continue with the user's answers in mind.",
        }
    ]


async def test_answer_question_refusals_carry_dusts_status_type_and_message(http: httpx2.AsyncClient) -> None:
    c_id, m_id, _, question = await paused(http, ASKER)
    a_id, am_id, _, approval = await paused(http, APPROVER)
    answer = {"selectedOptions": [0]}
    resp = await http.post(answer_url(c_id, m_id), json={"actionId": question["actionId"], "answer": {}})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    assert_dust_error(
        await http.post(
            answer_url("nosuchconv", m_id), json={"actionId": question["actionId"], "answer": answer}
        ),
        404,
        "conversation_not_found",
        "Conversation not found.",
    )
    assert_dust_error(
        await http.post(answer_url(a_id, am_id), json={"actionId": approval["actionId"], "answer": answer}),
        400,
        "action_not_blocked",
        "Action is not blocked for user question: blocked_validation_required",
    )
    assert_dust_error(
        await http.post(
            validate_url(c_id, m_id), json={"actionId": question["actionId"], "approved": "approved"}
        ),
        400,
        "action_not_blocked",
        "Action is not blocked: blocked_user_answer_required",
    )
    # A cancelled message can no longer resume: its question cannot be answered.
    await http.post(f"{CONVERSATIONS}/{c_id}/cancel", json={"messageIds": [m_id]})
    assert_dust_error(
        await http.post(answer_url(c_id, m_id), json={"actionId": question["actionId"], "answer": answer}),
        400,
        "action_not_blocked",
        "Action belongs to an agent message that can no longer resume",
    )
    assert await blocked(http, c_id) == []


# --- personal authorisation ---------------------------------------------------------------------


async def test_needs_auth_publishes_dusts_personal_auth_event(http: httpx2.AsyncClient) -> None:
    c_id, m_id, events, pause = await paused(http, NEEDS_AUTH, "roadmap")
    assert types(events) == ["tool_call_started", "tool_params", "tool_personal_auth_required"]
    assert pause == {
        "type": "tool_personal_auth_required",
        "created": pause["created"],
        "configurationId": NEEDS_AUTH,
        "messageId": m_id,
        "conversationId": c_id,
        "actionId": events[-2]["data"]["action"]["sId"],
        "metadata": {
            "toolName": "search_drive",
            "mcpServerName": "google_drive",
            "agentName": "agent",
            "icon": "DriveLogo",
            "mcpServerDisplayName": "google_drive",
            "mcpServerId": "ims_gdrive0001",
        },
        "inputs": {"query": "roadmap"},
        "authError": {
            "mcpServerId": "ims_gdrive0001",
            "provider": "google_drive",
            "toolName": "google_drive__search_drive",
            "message": "The tool google_drive__search_drive requires personal authentication, "
            "please authenticate to use it.",
        },
        "step": 0,
    }


async def test_needs_auth_waits_until_the_account_is_connected_then_answers(http: httpx2.AsyncClient) -> None:
    c_id, m_id, events, pause = await paused(http, NEEDS_AUTH, "roadmap")
    quiet = await read_connection(http, c_id, m_id, events[-1]["eventId"])
    assert quiet.events == []
    resp = await http.post("/_sim/connect")
    assert resp.json() == {"connected": [pause["actionId"]]}
    rest = await after(http, c_id, m_id, events[-1]["eventId"])
    assert types(rest) == ["agent_action_success", "agent_message_success"]
    assert answer_text(rest) == "Found 2 documents in Google Drive for: roadmap"
    assert (await http.post("/_sim/connect")).json() == {"connected": []}
    replay = await after(http, c_id, m_id, None)
    assert "tool_personal_auth_required" not in types(replay)


# --- blocked actions ----------------------------------------------------------------------------


async def test_blocked_actions_lists_each_kind_with_its_status(http: httpx2.AsyncClient) -> None:
    listed = {}
    for agent in (APPROVER, ASKER, NEEDS_AUTH):
        c_id, m_id, _, pause = await paused(http, agent)
        [item] = await blocked(http, c_id)
        assert (item["actionId"], item["messageId"], item["conversationId"]) == (
            pause["actionId"],
            m_id,
            c_id,
        )
        assert item["inputs"] == pause["inputs"]
        listed[agent] = item
    assert listed[APPROVER]["status"] == "blocked_validation_required"
    assert listed[APPROVER]["stake"] == "high"
    assert listed[APPROVER]["metadata"] == {
        "toolName": "send_email",
        "mcpServerName": "gmail",
        "agentName": "needs-approval",
        "icon": "GmailLogo",
    }
    assert listed[ASKER]["status"] == "blocked_user_answer_required"
    assert listed[ASKER]["question"] == FORMAT_QUESTION
    assert listed[NEEDS_AUTH]["status"] == "blocked_authentication_required"
    # The listing has the server view's display name where the event had the server's name.
    assert listed[NEEDS_AUTH]["metadata"]["mcpServerDisplayName"] == "Google Drive"
    assert listed[NEEDS_AUTH]["authorizationInfo"]["provider"] == "google_drive"


async def test_blocked_actions_is_empty_once_answered_and_404_for_an_unknown_conversation(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, events, pause = await paused(http, APPROVER)
    await http.post(validate_url(c_id, m_id), json={"actionId": pause["actionId"], "approved": "approved"})
    assert await blocked(http, c_id) == []
    await after(http, c_id, m_id, events[-1]["eventId"])
    assert_dust_error(
        await http.get(f"{CONVERSATIONS}/nosuchconv/actions/blocked"),
        404,
        "conversation_not_found",
        "Conversation not found.",
    )


# --- sub-agent ----------------------------------------------------------------------------------


async def delegated(http: httpx2.AsyncClient, content: str = "board minutes") -> Any:
    c_id, m_id, events, pause = await paused(http, DELEGATOR, content)
    return c_id, m_id, events, pause


async def test_the_delegator_relays_the_sub_agents_approval_naming_the_child_message(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, events, pause = await delegated(http)
    assert types(events) == ["tool_call_started", "tool_params", "tool_approve_execution"]
    assert events[-2]["data"]["action"]["toolName"] == "run_agent"
    assert (pause["configurationId"], pause["inputs"]["subject"]) == (APPROVER, "board minutes")
    assert pause["conversationId"] != c_id and pause["messageId"] != m_id
    # The child conversation is a real one, one level deeper, where the sub-agent's message waits.
    child = (await http.get(f"{CONVERSATIONS}/{pause['conversationId']}")).json()["conversation"]
    assert child["depth"] == 1
    assert child["title"] == "run_agent delegator > needs-approval"
    user, answer = (versions[-1] for versions in child["content"])
    assert (user["content"], user["context"]["origin"]) == ("board minutes", "run_agent")
    assert (answer["sId"], answer["status"]) == (pause["messageId"], "created")
    child_events = await until_paused(http, pause["conversationId"], pause["messageId"])
    assert child_events[-1]["data"] == {**pause, "step": child_events[-1]["data"]["step"]}


async def test_the_parents_listing_nests_the_sub_agents_blocked_action_under_run_agent(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, _, pause = await delegated(http)
    [item] = await blocked(http, c_id)
    assert (item["messageId"], item["status"]) == (m_id, "blocked_child_action_input_required")
    assert item["metadata"]["toolName"] == "run_agent"
    assert item["resumeState"]["conversationId"] == pause["conversationId"]
    [nested] = item["childBlockedActionsList"]
    assert (nested["actionId"], nested["conversationId"], nested["messageId"]) == (
        pause["actionId"],
        pause["conversationId"],
        pause["messageId"],
    )
    [own] = await blocked(http, pause["conversationId"])
    assert own == nested


async def test_approving_on_the_childs_ids_finishes_the_sub_agent_then_the_parent(
    http: httpx2.AsyncClient,
) -> None:
    c_id, m_id, events, pause = await delegated(http)
    child_c, child_m = pause["conversationId"], pause["messageId"]
    resp = await http.post(
        validate_url(child_c, child_m), json={"actionId": pause["actionId"], "approved": "approved"}
    )
    assert resp.status_code == 200, resp.text
    rest = await after(http, c_id, m_id, events[-1]["eventId"])
    assert types(rest) == ["agent_action_success", "agent_message_success"]
    assert rest[0]["data"]["action"]["output"] == [
        {"type": "text", "text": "Email sent to team@example.com: board minutes"}
    ]
    assert answer_text(rest) == "The sub-agent finished: Email sent to team@example.com: board minutes"
    child_rest = await after(http, child_c, child_m, None)
    assert answer_text(child_rest) == "Email sent to team@example.com: board minutes"
    # The relayed pause is deleted from the parent's history when it resumes.
    assert "tool_approve_execution" not in types(await after(http, c_id, m_id, None))


async def test_validating_on_the_parents_ids_is_accepted_but_resumes_nothing(
    http: httpx2.AsyncClient,
) -> None:
    """validate_actions.ts finds the action in the whole workspace and marks it approved, then
    relaunches the message the request named, which is still blocked on run_agent: nothing runs,
    and the action can no longer be validated where it belongs."""
    c_id, m_id, events, pause = await delegated(http)
    body = {"actionId": pause["actionId"], "approved": "approved"}
    resp = await http.post(validate_url(c_id, m_id), json=body)
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    quiet = await read_connection(http, c_id, m_id, events[-1]["eventId"])
    assert quiet.events == []
    [item] = await blocked(http, c_id)
    assert item["status"] == "blocked_child_action_input_required" and item["childBlockedActionsList"] == []
    assert_dust_error(
        await http.post(validate_url(pause["conversationId"], pause["messageId"]), json=body),
        400,
        "action_not_blocked",
        "Action is not blocked: ready_allowed_explicitly",
    )


async def test_validating_under_another_conversation_marks_the_action_but_resumes_nothing(
    http: httpx2.AsyncClient,
) -> None:
    """The action and the message are found in the whole workspace; the conversation named is the
    one the relaunched loop looks in, where the message is not."""
    c_id, m_id, events, pause = await paused(http, APPROVER)
    other, _ = await start(http, "hello", "echo000001")
    body = {"actionId": pause["actionId"], "approved": "approved"}
    assert (await http.post(validate_url(other, m_id), json=body)).status_code == 200
    quiet = await read_connection(http, c_id, m_id, events[-1]["eventId"])
    assert quiet.events == []
    assert (await agent_message(http, c_id, m_id))["status"] == "created"
    assert (await http.post(validate_url(c_id, m_id), json=body)).json()["error"][
        "type"
    ] == "action_not_blocked"


# --- long runner, bodies ------------------------------------------------------------------------


def test_long_answer_is_a_deterministic_function_of_the_message() -> None:
    assert long_answer("x") == long_answer("x")
    text = long_answer("the logs")
    assert text.startswith("Starting the analysis of: the logs. Step 1 of 12 done. Step 2 of 12 done.")
    assert text.endswith(" Step 12 of 12 done. Analysis complete.")


async def test_the_long_runner_works_twelve_steps_of_long_seconds_over_12_and_answers_long_answer(
    http: httpx2.AsyncClient,
) -> None:
    options = await configure(http, long_seconds=12, connection_lifetime_seconds=60)
    assert options["long_seconds"] == 12
    began = time.monotonic()
    c_id, m_id = await start(http, "the logs", LONG_RUNNER)
    events = await after(http, c_id, m_id, None)
    elapsed = time.monotonic() - began
    assert 11.5 <= elapsed < 30, elapsed
    assert answer_text(events) == long_answer("the logs") == events[-1]["data"]["message"]["content"]
    assert types(events).count("agent_action_success") == 6


async def test_answers_to_pauses_are_recorded_in_the_captured_bodies(http: httpx2.AsyncClient) -> None:
    c_id, m_id, _, pause = await paused(http, APPROVER)
    body = {"actionId": pause["actionId"], "approved": "rejected"}
    await http.post(validate_url(c_id, m_id), json=body)
    recorded = (await http.get("/_sim/bodies")).json()["bodies"]
    assert (recorded[-1]["path"], recorded[-1]["json"], recorded[-1]["status"]) == (
        validate_url(c_id, m_id),
        body,
        200,
    )
