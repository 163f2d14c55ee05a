"""The tolerant reader: the bridge's Dust models accept every payload Dust's SDK schemas allow.

The payloads follow @dust-tt/client 1.2.8's zod schemas (src/types.ts): nullable fields sent as null,
numbers the SDK types as `number` sent as floats, statuses and scopes from its `FlexibleEnumSchema`
(any string), message kinds the bridge does not know, and fields added by a newer Dust.
"""

from __future__ import annotations

from typing import Any

from bridge.dust.events import parse_frame
from bridge.dust.models import Agent, AgentMessage, Conversation, DustFile, UserMessage
from bridge.dust.sse import SseFrame


def light_agent(**changes: Any) -> dict[str, Any]:
    """A LightAgentConfigurationSchema payload, every nullable field null."""
    agent = {
        "id": 1,
        "sId": "abcDEF1234",
        "version": 3,
        "versionCreatedAt": None,
        "versionAuthorId": None,
        "name": "analyst",
        "description": "Reads spreadsheets",
        "instructions": None,
        "pictureUrl": "https://dust.tt/a.png",
        "status": "active",
        "scope": "visible",
        "userFavorite": False,
        "model": {"providerId": "anthropic", "modelId": "claude-x", "temperature": 0.2},
        "maxStepsPerRun": 8,
        "templateId": None,
    }
    return {**agent, **changes}


def agent_message(**changes: Any) -> dict[str, Any]:
    """An AgentMessageTypeSchema payload."""
    message = {
        "id": 7,
        "agentMessageId": 7,
        "created": 1765000000000.0,
        "type": "agent_message",
        "sId": "msgAGENT01",
        "visibility": "visible",
        "version": 0,
        "parentMessageId": None,
        "parentAgentMessageId": None,
        "configuration": light_agent(),
        "status": "created",
        "actions": [],
        "content": None,
        "chainOfThought": None,
        "rawContents": [],
        "error": None,
    }
    return {**message, **changes}


def test_an_agent_with_new_fields_and_statuses_and_null_optionals_is_read() -> None:
    payload = light_agent(
        status="disabled_by_admin",
        scope="hidden",
        description="",
        usage={"messageCount": 1, "conversationCount": 1, "userCount": 1, "timePeriodSec": 60},
        lastAuthors=["Ada"],
        someFieldFrom2027={"nested": [1, 2]},
    )
    agent = Agent.model_validate(payload)
    assert (agent.s_id, agent.name, agent.status, agent.scope) == (
        "abcDEF1234",
        "analyst",
        "disabled_by_admin",
        "hidden",
    )


def test_nulls_where_the_bridge_has_defaults_mean_the_defaults() -> None:
    agent = Agent.model_validate(light_agent(description=None, pictureUrl=None))
    assert agent.description == "" and agent.picture_url is None


def test_an_agent_message_with_an_unknown_status_null_parent_and_float_timestamp() -> None:
    message = AgentMessage.model_validate(agent_message(status="paused_for_approval", created=1.5e12))
    assert message.status == "paused_for_approval"
    assert message.parent_message_id is None
    assert message.configuration_id == "abcDEF1234"
    assert message.created == 1_500_000_000_000


def test_a_user_message_with_user_mentions_and_null_agentic_data() -> None:
    message = UserMessage.model_validate(
        {
            "id": 3,
            "created": 1765000000000,
            "type": "user_message",
            "sId": "msgUSER001",
            "visibility": "visible",
            "version": 0,
            "user": None,
            "mentions": [{"configurationId": "dust"}, {"type": "user", "userId": "u1"}],
            "content": "hi",
            "context": {"username": "x", "timezone": "UTC", "origin": None, "email": None},
            "agenticMessageData": None,
        }
    )
    assert message.content == "hi" and len(message.mentions) == 2


def test_a_conversation_with_message_kinds_the_bridge_does_not_know_keeps_the_ones_it_does() -> None:
    conversation = Conversation.model_validate(
        {
            "id": 1,
            "created": 1765000000000,
            "updated": None,
            "unread": False,
            "actionRequired": True,
            "owner": {"id": 1, "sId": "w", "name": "w", "role": "user"},
            "sId": "convSID001",
            "title": None,
            "visibility": "unlisted",
            "url": "https://dust.tt/w/w/conversation/convSID001",
            "content": [
                [{"type": "user_message", "sId": "msgUSER001", "content": "hi", "mentions": []}],
                [{"type": "a_kind_from_the_future", "sId": "x"}],
                [],
                [agent_message(parentMessageId="msgUSER001", status="succeeded", content="hello")],
            ],
        }
    )
    kinds = [type(message).__name__ for message in conversation.current_messages()]
    assert kinds == ["UserMessage", "AgentMessage"]
    answer = conversation.agent_message_for("msgUSER001")
    assert answer is not None and answer.content == "hello"


def test_a_file_with_a_float_size_and_optional_urls_absent() -> None:
    file = DustFile.model_validate(
        {
            "id": "fil_abc",
            "sId": "fil_abc",
            "contentType": "application/pdf",
            "fileName": "r.pdf",
            "fileSize": 1024.0,
            "status": "ready",
            "useCase": "conversation",
        }
    )
    assert file.file_size == 1024 and file.upload_url is None


def test_events_of_unknown_types_are_read_and_not_terminal() -> None:
    frame = SseFrame(
        event="message",
        data='{"eventId": "1-0", "data": {"type": "tool_thinking_aloud", "created": 1, "step": 2}}',
    )
    event = parse_frame(frame)
    assert event is not None and event.type == "tool_thinking_aloud" and not event.is_terminal
