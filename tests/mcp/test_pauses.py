"""What a paused agent's actions look like to an MCP user, and how the user's answers are read."""

from __future__ import annotations

import json

from mcp.types import ElicitRequestFormParams, ElicitRequestURLParams, ElicitResult

from bridge.domain.replies import AnswerQuestion, Approve, Connected
from bridge.dust.pauses import PendingAction, Question, QuestionOption
from bridge.mcp.pauses import describe, reply_from, request_for

APPROVAL = PendingAction(
    kind="approval",
    action_id="act_1",
    conversation_id="c",
    message_id="m",
    tool="send_email",
    server="Gmail",
    inputs={"to": "team@example.com"},
    stake="high",
)
QUESTION = PendingAction(
    kind="question",
    action_id="act_2",
    conversation_id="c",
    message_id="m",
    tool="ask_user_question",
    server="Dust",
    question=Question("Which format?", (QuestionOption("Summary", "short"), QuestionOption("Table")), False),
)
AUTH = PendingAction(
    kind="personal_auth",
    action_id="act_3",
    conversation_id="c",
    message_id="m",
    tool="search_drive",
    server="Google Drive",
    auth_message="Connect your Google Drive account to continue.",
    auth_subject="google_drive",
)


def test_an_approval_shows_the_tool_its_server_inputs_and_stake_and_offers_three_decisions() -> None:
    params = request_for(APPROVAL, "https://dust.tt/w/x/conversation/c").params
    assert isinstance(params, ElicitRequestFormParams)
    assert "send_email" in params.message and "Gmail" in params.message and "high" in params.message
    assert "team@example.com" in params.message
    assert params.requested_schema["properties"]["decision"]["enum"] == [
        "approve",
        "reject",
        "always_approve",
    ]
    assert reply_from(
        APPROVAL, ElicitResult(action="accept", content={"decision": "always_approve"})
    ) == Approve("act_1", "always_approved")


def test_a_question_offers_its_options_and_free_text_and_reads_back_indexes() -> None:
    params = request_for(QUESTION, None).params
    assert isinstance(params, ElicitRequestFormParams)
    assert params.message == "The Dust agent asks: Which format?"
    assert params.requested_schema["properties"]["choice"]["enum"] == ["Summary", "Table"]
    answered = reply_from(
        QUESTION, ElicitResult(action="accept", content={"choice": "Table", "answer": " wide "})
    )
    assert answered == AnswerQuestion("act_2", (1,), "wide")


def test_a_personal_authorisation_is_a_url_to_the_conversation_in_dust() -> None:
    params = request_for(AUTH, "https://dust.tt/w/x/conversation/c").params
    assert isinstance(params, ElicitRequestURLParams)
    assert params.url == "https://dust.tt/w/x/conversation/c" and "Google Drive" in params.message
    assert reply_from(AUTH, ElicitResult(action="accept")) == Connected("act_3")


def test_a_declined_cancelled_or_empty_answer_is_no_reply() -> None:
    assert reply_from(APPROVAL, ElicitResult(action="decline")) is None
    assert reply_from(QUESTION, ElicitResult(action="cancel")) is None
    assert reply_from(QUESTION, ElicitResult(action="accept", content={"answer": "  "})) is None
    assert reply_from(APPROVAL, ElicitResult(action="accept", content={"decision": "maybe"})) is None


def test_a_long_input_is_cut_in_the_description() -> None:
    big = PendingAction(**{**APPROVAL.to_json(), "inputs": {"body": "x" * 5000}})
    assert len(describe(big)) < 1700


def test_a_pending_action_survives_the_store_round_trip() -> None:
    for action in (APPROVAL, QUESTION, AUTH):
        assert PendingAction.from_json(json.loads(json.dumps(action.to_json()))) == action
