"""The user's replies to what a paused agent waits for, and how each one reaches Dust.

An approval goes to `validate-action`, an answer to `answer-question`, each on the pause's own
conversation and message (a sub-agent's are not the top-level ones). A personal authorisation is
given in Dust itself: its reply only says the user is done, and the agent resumes on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.dust.client import DustClient
from bridge.dust.errors import DustBadRequest, DustNotFound
from bridge.dust.pauses import Approval, PendingAction
from bridge.errors import InvalidInput, NotFound


class ActionNotPending(NotFound):
    """No such action waits in this conversation (never did, or was answered already)."""

    code = "action_not_pending"


class InvalidReply(InvalidInput):
    """A reply that does not fit the action (an approval for a question, an option out of range)."""

    code = "invalid_reply"


@dataclass(frozen=True)
class Approve:
    action_id: str
    decision: Approval


@dataclass(frozen=True)
class AnswerQuestion:
    """Answer a question: indexes of the chosen options, and/or the user's own words."""

    action_id: str
    options: tuple[int, ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class Connected:
    """The user connected the account (or authorised the file) in Dust."""

    action_id: str


Reply = Approve | AnswerQuestion | Connected

_KIND_OF_REPLY: dict[type[Reply], tuple[str, ...]] = {
    Approve: ("approval",),
    AnswerQuestion: ("question",),
    Connected: ("personal_auth", "file_auth"),
}

_TOOL_FOR_KIND = {
    "approval": "approve_action",
    "question": "answer_question",
    "personal_auth": "wait_for_answer",
    "file_auth": "wait_for_answer",
}


def not_pending(action_id: str) -> ActionNotPending:
    return ActionNotPending(
        f"no action {action_id!r} is waiting in this conversation: it was answered already, or never"
        " existed. Call wait_for_answer(conversation) to read the answer."
    )


def check_reply(action: PendingAction, reply: Reply) -> None:
    """Raise InvalidReply unless `reply` answers `action`."""
    if action.kind not in _KIND_OF_REPLY[type(reply)]:
        raise InvalidReply(
            f"action {action.action_id!r} is a {action.kind.replace('_', ' ')}, not something"
            f" {type(reply).__name__.lower()} answers: use {_TOOL_FOR_KIND[action.kind]}"
        )
    if isinstance(reply, AnswerQuestion):
        _check_answer(action, reply)


def _check_answer(action: PendingAction, reply: AnswerQuestion) -> None:
    question = action.question
    count = len(question.options) if question is not None else 0
    if any(index < 0 or index >= count for index in reply.options):
        raise InvalidReply(
            f"choose options between 0 and {count - 1}" if count else "this question has no options"
        )
    if not reply.options and not (reply.text and reply.text.strip()):
        raise InvalidReply("choose at least one option or answer in your own words (text)")
    if len(reply.options) > 1 and question is not None and not question.multi_select:
        raise InvalidReply("this question takes one option only")


async def send_reply(dust: DustClient, action: PendingAction, reply: Reply) -> None:
    """Record the reply in Dust.

    Raises:
        ActionNotPending: Dust says the action is unknown or no longer blocked.
        DustError: any other refusal or failure.
    """
    try:
        if isinstance(reply, Approve):
            await dust.validate_action(
                action.conversation_id, action.message_id, action.action_id, reply.decision
            )
        elif isinstance(reply, AnswerQuestion):
            await dust.answer_question(
                action.conversation_id,
                action.message_id,
                action.action_id,
                selected_options=list(reply.options),
                custom_response=reply.text.strip() if reply.text and reply.text.strip() else None,
            )
    except DustNotFound:
        raise not_pending(action.action_id) from None
    except DustBadRequest as exc:
        if exc.type == "action_not_blocked":
            raise not_pending(action.action_id) from None
        raise
