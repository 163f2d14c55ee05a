"""The tolerant reader: the bridge's Dust models accept every payload Dust's SDK schemas allow.

The payloads are not written here: fixtures/sdk_payloads.json is generated from the zod schemas of
@dust-tt/client (tests/contract/harness/tolerant_payloads.mjs) and every one of them parses with the
SDK (tests/contract/test_tolerant_payloads.py proves the committed file is what the pinned SDK
generates). For each response shape the bridge reads there is a realistic base payload and its
variants: nullable fields null, optional fields absent, unknown fields in every object, values
from the future for the SDK's FlexibleEnumSchema fields (any string), floats where the SDK says
`number`, and agent-message events of types the SDK does not name. Each test below reads one shape
the way bridge/dust/client.py does and checks the fields the bridge relies on against the payload.

The last tests cover what the bridge tolerates beyond what the SDK allows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.domain.relay import tool_status
from bridge.dust.client import read_created_conversation
from bridge.dust.events import TERMINAL_TYPES, AgentEvent, parse_frame
from bridge.dust.models import (
    Agent,
    AgentAction,
    AgentMessage,
    ContentFragment,
    Conversation,
    DustFile,
    Message,
    UserMessage,
)
from bridge.dust.sse import SseDecoder

FIXTURE = Path(__file__).parent / "fixtures" / "sdk_payloads.json"
SDK_PAYLOADS: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
SHAPES = {
    "agent_listing",
    "agent",
    "create_conversation",
    "post_message",
    "get_conversation",
    "file_create",
    "file_upload",
    "agent_message_event",
}


def payloads(shape: str) -> list[Any]:
    """The fixture's payloads of one shape, each a pytest param named by its base and variant."""
    return [
        pytest.param(item["payload"], id=f"{item['base']}: {item['variant']}")
        for item in SDK_PAYLOADS["payloads"]
        if item["shape"] == shape
    ]


def whole(value: Any) -> Any:
    """What the bridge makes of an SDK `number` it keeps as an int (epoch ms, byte counts)."""
    return int(value) if isinstance(value, float) else value


# --- what the bridge must have read ---------------------------------------------------------


def check_agent(agent: Agent, raw: dict[str, Any]) -> None:
    assert agent.s_id == raw["sId"]
    assert agent.name == raw["name"]
    assert agent.description == raw["description"]
    assert agent.status == raw["status"]
    assert agent.scope == raw["scope"]
    assert agent.picture_url == raw["pictureUrl"]


def check_user_message(message: UserMessage, raw: dict[str, Any]) -> None:
    assert message.s_id == raw["sId"]
    assert message.content == raw["content"]
    assert message.created == whole(raw["created"])
    assert message.mentions == raw["mentions"]


def check_agent_message(message: AgentMessage, raw: dict[str, Any]) -> None:
    assert message.s_id == raw["sId"]
    assert message.status == raw["status"]
    assert message.content == raw["content"]
    assert message.parent_message_id == raw["parentMessageId"]
    assert message.error == raw["error"]
    assert message.configuration_id == raw["configuration"]["sId"]
    assert message.created == whole(raw["created"])
    assert len(message.actions) == len(raw["actions"])
    for action, raw_action in zip(message.actions, raw["actions"], strict=True):
        check_action(action, raw_action)


def check_action(action: AgentAction, raw: dict[str, Any]) -> None:
    """A tool call: its ids, its output blocks as sent, and the files it generated."""
    assert action.s_id == raw["sId"]
    assert action.tool_name == raw["toolName"]
    assert action.function_call_name == raw["functionCallName"]
    assert action.status == raw["status"]
    assert action.output == (raw.get("output") or [])  # the SDK defaults a missing output to []
    assert len(action.generated_files) == len(raw["generatedFiles"])
    for file, raw_file in zip(action.generated_files, raw["generatedFiles"], strict=True):
        assert file.file_id == raw_file["fileId"]
        assert file.file_path == raw_file.get("filePath")
        assert file.title == raw_file["title"]
        assert file.content_type == raw_file["contentType"]
        assert file.snippet == raw_file["snippet"]
        assert file.hidden == bool(raw_file.get("hidden"))


def check_fragment(fragment: ContentFragment, raw: dict[str, Any]) -> None:
    assert fragment.s_id == raw["sId"]
    assert fragment.title == raw["title"]
    assert fragment.content_type == raw["contentType"]
    assert fragment.file_id == raw.get("fileId")


def latest_versions(raw_conversation: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The current version of each rank of a raw conversation (empty ranks have none)."""
    for versions in raw_conversation["content"]:
        if versions:
            yield versions[-1]


def check_message(message: Message, raw: dict[str, Any]) -> None:
    if raw["type"] == "user_message":
        assert isinstance(message, UserMessage)
        check_user_message(message, raw)
    elif raw["type"] == "agent_message":
        assert isinstance(message, AgentMessage)
        check_agent_message(message, raw)
    else:
        assert raw["type"] == "content_fragment" and isinstance(message, ContentFragment)
        check_fragment(message, raw)


def check_conversation(conversation: Conversation, raw: dict[str, Any]) -> None:
    """The conversation's own fields, and every current message read and typed as in `raw`."""
    assert conversation.s_id == raw["sId"]
    assert conversation.title == raw["title"]
    assert conversation.url == raw["url"]
    assert conversation.created == whole(raw["created"])
    current = conversation.current_messages()
    expected = list(latest_versions(raw))
    assert len(current) == len(expected)
    for message, raw_message in zip(current, expected, strict=True):
        check_message(message, raw_message)


def check_answer_lookup(conversation: Conversation, raw: dict[str, Any], user_message_id: str) -> None:
    """agent_message_for finds the (first) current agent message whose parent is the user message."""
    answers = [
        m
        for m in latest_versions(raw)
        if m["type"] == "agent_message" and m["parentMessageId"] == user_message_id
    ]
    found = conversation.agent_message_for(user_message_id)
    if not answers:
        assert found is None
    else:
        assert found is not None
        check_agent_message(found, answers[0])


# --- one test per shape ---------------------------------------------------------------------


def test_the_fixture_holds_every_shape_the_bridge_reads_from_the_pinned_sdk() -> None:
    assert SDK_PAYLOADS["sdk"].startswith("@dust-tt/client ")
    by_shape: dict[str, set[str]] = {}
    for item in SDK_PAYLOADS["payloads"]:
        names = by_shape.setdefault(item["shape"], set())
        name = f"{item['base']}: {item['variant']}"
        assert name not in names, f"two {item['shape']} payloads are named {name!r}"
        names.add(name)
    assert set(by_shape) == SHAPES
    assert all(len(names) > 1 for names in by_shape.values())


@pytest.mark.parametrize("payload", payloads("agent_listing"))
def test_agent_listing(payload: dict[str, Any]) -> None:
    # DustClient.list_agents: `agentConfigurations`, an Agent each.
    agents = [Agent.model_validate(item) for item in payload["agentConfigurations"]]
    assert len(agents) == len(payload["agentConfigurations"])
    for agent, raw in zip(agents, payload["agentConfigurations"], strict=True):
        check_agent(agent, raw)


@pytest.mark.parametrize("payload", payloads("agent"))
def test_one_agent(payload: dict[str, Any]) -> None:
    # DustClient.get_agent: `agentConfiguration`.
    check_agent(Agent.model_validate(payload["agentConfiguration"]), payload["agentConfiguration"])


@pytest.mark.parametrize("payload", payloads("create_conversation"))
def test_create_conversation_answer(payload: dict[str, Any]) -> None:
    # DustClient.create_conversation: `conversation`, `message`, and the answer to that message.
    raw = payload["conversation"]
    created = read_created_conversation(payload)
    check_conversation(created.conversation, raw)
    if "message" in payload:
        check_user_message(created.user_message, payload["message"])
    else:
        # The SDK's CreateConversationResponseSchema makes `message` optional: the client then takes
        # the conversation's last user message.
        users = [m for m in created.conversation.current_messages() if isinstance(m, UserMessage)]
        assert created.user_message == users[-1]
    check_answer_lookup(created.conversation, raw, created.user_message.s_id)


@pytest.mark.parametrize("payload", payloads("post_message"))
def test_post_message_answer(payload: dict[str, Any]) -> None:
    # DustClient.post_message: `message`, and `agentMessages` (absent meaning none).
    message = UserMessage.model_validate(payload["message"])
    check_user_message(message, payload["message"])
    raw_answers = payload.get("agentMessages") or []
    answers = [AgentMessage.model_validate(item) for item in raw_answers]
    for answer, raw in zip(answers, raw_answers, strict=True):
        check_agent_message(answer, raw)


@pytest.mark.parametrize("payload", payloads("get_conversation"))
def test_get_conversation_answer(payload: dict[str, Any]) -> None:
    # DustClient.get_conversation: `conversation`; the bridge then looks for the answer to a message.
    raw = payload["conversation"]
    conversation = Conversation.model_validate(raw)
    check_conversation(conversation, raw)
    for message in conversation.current_messages():
        if isinstance(message, UserMessage):
            check_answer_lookup(conversation, raw, message.s_id)


@pytest.mark.parametrize("payload", payloads("file_create") + payloads("file_upload"))
def test_file_answers(payload: dict[str, Any]) -> None:
    # DustClient.create_file and upload_file: `file`.
    raw = payload["file"]
    file = DustFile.model_validate(raw)
    assert file.s_id == raw["sId"]
    assert file.content_type == raw["contentType"]
    assert file.file_name == raw["fileName"]
    assert file.file_size == whole(raw["fileSize"])
    assert file.status == raw["status"]
    assert file.upload_url == raw.get("uploadUrl")


@pytest.mark.parametrize("payload", payloads("agent_message_event"))
def test_agent_message_event(payload: dict[str, Any]) -> None:
    # The frame as Dust sends it, through the bridge's SSE decoder and event parser.
    [frame] = SseDecoder().feed(b"data: " + json.dumps(payload).encode() + b"\n\n")
    event = parse_frame(frame)
    assert isinstance(event, AgentEvent)
    assert event.event_id == payload["eventId"]
    assert event.type == payload["data"]["type"]
    assert event.data == payload["data"]
    # Terminal exactly when the SDK's stream reader stops; an unknown type never is.
    assert event.is_terminal == (event.type in SDK_PAYLOADS["terminal_event_types"])
    # The relay reads tool events' fields for its progress lines.
    status = tool_status(event)
    assert status is None or status.startswith("[")
    # The action of a tool event, and the actions of a finished message, read as the models do.
    if isinstance(payload["data"].get("action"), dict):
        check_action(AgentAction.model_validate(payload["data"]["action"]), payload["data"]["action"])
    if (
        isinstance(payload["data"].get("message"), dict)
        and payload["data"]["type"] == "agent_message_success"
    ):
        check_agent_message(
            AgentMessage.model_validate(payload["data"]["message"]), payload["data"]["message"]
        )


def test_the_bridge_stops_on_the_events_the_sdk_stops_on() -> None:
    assert set(SDK_PAYLOADS["terminal_event_types"]) == TERMINAL_TYPES


# --- beyond what the SDK allows -------------------------------------------------------------


def test_nulls_where_the_bridge_has_defaults_mean_the_defaults() -> None:
    # The SDK types these as non-null strings; a null from Dust still reads as the default.
    agent = Agent.model_validate({"sId": "abcDEF1234", "name": "a", "description": None, "pictureUrl": None})
    assert agent.description == "" and agent.picture_url is None
    message = AgentMessage.model_validate({"sId": "m", "status": None, "created": None})
    assert message.status == "created" and message.created == 0


def test_message_kinds_the_sdk_does_not_name_are_skipped() -> None:
    # The SDK's conversation schema refuses them (the generator's dropped variants show it); a newer
    # Dust could still send one: the bridge keeps the messages it knows.
    conversation = Conversation.model_validate(
        {
            "sId": "convSID001",
            "content": [
                [{"type": "user_message", "sId": "msgUSER001", "content": "hi", "mentions": []}],
                [{"type": "a_kind_from_the_future", "sId": "x"}],
                ["not an object"],
                [{"type": "agent_message", "sId": "msgAGENT01", "parentMessageId": "msgUSER001"}],
            ],
        }
    )
    kinds = [type(message).__name__ for message in conversation.current_messages()]
    assert kinds == ["UserMessage", "AgentMessage"]
    answer = conversation.agent_message_for("msgUSER001")
    assert answer is not None and answer.s_id == "msgAGENT01"


def test_a_create_answer_with_no_user_message_at_all_is_an_unexpected_format() -> None:
    from bridge.dust.errors import DustServerError

    with pytest.raises(DustServerError, match="holds no user message") as caught:
        read_created_conversation({"conversation": {"sId": "c1", "content": []}})
    assert caught.value.type == "unexpected_response_format"


def test_actions_read_path_only_files_and_keep_only_object_blocks() -> None:
    # The SDK's second ActionGeneratedFileSchema branch: a file of the conversation's file system
    # with no Dust file (fileId null, filePath); output blocks that are not objects are dropped,
    # a null output or no actions at all read as empty.
    message = AgentMessage.model_validate(
        {
            "sId": "msgAGENT01",
            "actions": [
                {
                    "sId": "act1",
                    "toolName": "generate_file",
                    "output": [{"type": "text", "text": "done"}, "stray", None],
                    "generatedFiles": [
                        {
                            "contentType": "text/markdown",
                            "fileId": None,
                            "filePath": "conversation/report.md",
                            "title": "report.md",
                            "snippet": None,
                            "hidden": True,
                        },
                        {"fileId": "fil_1", "title": "a.csv", "contentType": "text/csv", "snippet": "a,b"},
                    ],
                },
                {"sId": "act2", "output": None, "generatedFiles": None},
            ],
        }
    )
    first, second = message.actions
    assert first.output == [{"type": "text", "text": "done"}]
    path_only, csv = first.generated_files
    assert (path_only.file_id, path_only.file_path, path_only.hidden) == (
        None,
        "conversation/report.md",
        True,
    )
    assert (csv.file_id, csv.snippet, csv.hidden, csv.file_path) == ("fil_1", "a,b", False, None)
    assert second.output == [] and second.generated_files == []
    assert AgentMessage.model_validate({"sId": "m"}).actions == []
