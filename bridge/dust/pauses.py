"""Actions a Dust agent is blocked on: what the user must approve, answer or connect.

Read from the message stream's pause events (`tool_approve_execution`, `tool_ask_user_question`,
`tool_personal_auth_required`, `tool_file_auth_required`) and from `GET .../actions/blocked`
(dust-api.md section 6.3; SDK `ToolExecutionMetadataSchema`, `BlockedActionExecutionSchema`,
`UserQuestionItemSchema`). A sub-agent's pause names the sub-agent's own conversation and message:
answers go there, not to the top-level message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PauseKind = Literal["approval", "question", "personal_auth", "file_auth"]

PAUSE_EVENTS: dict[str, PauseKind] = {
    "tool_approve_execution": "approval",
    "tool_ask_user_question": "question",
    "tool_personal_auth_required": "personal_auth",
    "tool_file_auth_required": "file_auth",
}

# `blocked_child_action_input_required` (a run_agent waiting on its sub-agent) is not itself
# answerable: the sub-agent's own actions, nested in its `childBlockedActionsList`, are.
_BLOCKED_STATUSES: dict[str, PauseKind] = {
    "blocked_validation_required": "approval",
    "blocked_user_answer_required": "question",
    "blocked_authentication_required": "personal_auth",
    "blocked_file_authorization_required": "file_auth",
}

Approval = Literal["approved", "rejected", "always_approved"]


@dataclass(frozen=True)
class QuestionOption:
    label: str
    description: str | None = None


@dataclass(frozen=True)
class Question:
    """What `tool_ask_user_question` asks: answered with option indexes and/or free text."""

    text: str
    options: tuple[QuestionOption, ...] = ()
    multi_select: bool = False


@dataclass(frozen=True)
class PendingAction:
    """One action waiting for the user."""

    kind: PauseKind
    action_id: str
    conversation_id: str
    message_id: str
    tool: str
    server: str
    inputs: dict[str, Any] = field(default_factory=dict)
    stake: str | None = None
    question: Question | None = None
    # Personal or file authorisation: what Dust says is missing, and for which provider or file.
    auth_message: str | None = None
    auth_subject: str | None = None
    # False while more blocking events of the same agent step are still to come.
    last_of_step: bool = True

    @classmethod
    def from_event(cls, data: dict[str, Any]) -> PendingAction | None:
        """The pending action an agent-message event announces, or None if it announces none."""
        kind = PAUSE_EVENTS.get(str(data.get("type")))
        if kind is None:
            return None
        return cls._read(kind, data, last_of_step=data.get("isLastBlockingEventForStep") is not False)

    @classmethod
    def from_blocked(cls, item: dict[str, Any]) -> PendingAction | None:
        """An entry of `GET .../actions/blocked`, or None for a status the bridge does not handle."""
        kind = _BLOCKED_STATUSES.get(str(item.get("status")))
        if kind is None:
            return None
        return cls._read(kind, item, last_of_step=True)

    @classmethod
    def _read(cls, kind: PauseKind, data: dict[str, Any], *, last_of_step: bool) -> PendingAction | None:
        action_id, conversation_id, message_id = (
            data.get("actionId"),
            data.get("conversationId"),
            data.get("messageId"),
        )
        if not all(isinstance(value, str) and value for value in (action_id, conversation_id, message_id)):
            return None
        metadata = _dict(data.get("metadata"))
        # Events carry authError / fileAuthError; blocked-actions listings carry authorizationInfo.
        auth = (
            _dict(data.get("authError"))
            or _dict(data.get("fileAuthError"))
            or _dict(data.get("authorizationInfo"))
        )
        inputs = _dict(data.get("inputs"))
        stake = data.get("stake")
        return cls(
            kind=kind,
            action_id=str(action_id),
            conversation_id=str(conversation_id),
            message_id=str(message_id),
            tool=str(metadata.get("toolName") or auth.get("toolName") or "tool"),
            server=str(metadata.get("mcpServerDisplayName") or metadata.get("mcpServerName") or "Dust"),
            inputs=inputs,
            stake=stake if isinstance(stake, str) else None,
            question=_question(data.get("question")),
            auth_message=str(auth["message"]) if auth.get("message") else None,
            auth_subject=_auth_subject(auth),
            last_of_step=last_of_step,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form for the context store."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingAction:
        """The inverse of `to_json`."""
        question = data.get("question")
        values = {**data, "question": _question_from_json(question) if question else None}
        return cls(**values)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def blocked_list(items: list[Any]) -> list[PendingAction]:
    """The answerable actions of a `GET .../actions/blocked` listing, sub-agents' included.

    Dust nests a sub-agent's blocked actions in `childBlockedActionsList` under its parent's
    run_agent entry (front/lib/resources/agent_mcp_action_resource.ts); the SDK schema drops the
    field, a tolerant reader keeps it.
    """
    found: list[PendingAction] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        action = PendingAction.from_blocked(item)
        if action is not None:
            found.append(action)
        children = item.get("childBlockedActionsList")
        if isinstance(children, list):
            found.extend(blocked_list(children))
    return found


def _auth_subject(auth: dict[str, Any]) -> str | None:
    subject = auth.get("fileName") or auth.get("provider")
    return str(subject) if subject else None


def _question(value: Any) -> Question | None:
    if not isinstance(value, dict) or not isinstance(value.get("question"), str):
        return None
    options = tuple(
        QuestionOption(
            label=str(option.get("label") or ""),
            description=str(option["description"]) if option.get("description") else None,
        )
        for option in value.get("options") or []
        if isinstance(option, dict)
    )
    return Question(text=value["question"], options=options, multi_select=value.get("multiSelect") is True)


def _question_from_json(value: dict[str, Any]) -> Question:
    options = tuple(QuestionOption(**option) for option in value.get("options") or [])
    return Question(text=value["text"], options=options, multi_select=bool(value.get("multi_select")))
