"""Where an agent turn stands when a call returns, and how its caller listens to it.

An `Answer` is complete, waiting for the user (its `pending` actions), or still working (call
wait_for_answer); its text is what the user reads: citations as numbered footnotes over the
sources listed under it, and the files the agent made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.domain.citations import Source, cited
from bridge.domain.generated_files import GeneratedFile
from bridge.domain.relay import RelayOutcome
from bridge.domain.replies import Reply
from bridge.dust.events import AgentEvent
from bridge.dust.models import Agent, AgentMessage
from bridge.dust.pauses import PendingAction
from bridge.errors import UpstreamFailure
from bridge.store.records import ConversationRecord

Progress = Callable[[str], Awaitable[None]]

AskUser = Callable[[list[PendingAction], ConversationRecord], Awaitable[list[Reply] | None]]
"""Put what the agent waits for to the user now (elicitation): their replies, or None when this
client cannot ask or the user would not answer (the actions then stay pending)."""


class AgentFailed(UpstreamFailure):
    """Dust reported an error for the agent's answer."""

    code = "agent_error"


@dataclass
class TurnListener:
    """How the caller of a turn listens to it."""

    progress: Progress | None = None
    ask_user: AskUser | None = None
    # Seconds after which the call returns what it has while the agent works on (None: to the end).
    deadline: float | None = None
    # Asked after a cancellation: True when the client only gave up waiting (the Dust work goes on).
    client_timed_out: Callable[[], Awaitable[bool]] | None = None


@dataclass
class Answer:
    """Where an agent turn stands when a call returns: complete, paused on the user, or still working."""

    text: str
    handle: str
    agent: Agent
    dust_conversation_id: str
    message_id: str
    url: str | None
    continued: bool
    outcome: RelayOutcome
    # Why the handle of a new conversation could not be stored (the answer came all the same);
    # None when it was, or when the turn continued a conversation the store already holds.
    unremembered: str | None = None
    pending: list[PendingAction] = field(default_factory=list)
    # Why an answer given mid-stream did not reach Dust (the action is still pending).
    note: str | None = None
    sources: list[Source] = field(default_factory=list)
    files: list[GeneratedFile] = field(default_factory=list)

    @property
    def status(self) -> str:
        """ "complete", "waiting_for_user" (see `pending`) or "working" (call wait_for_answer)."""
        if self.pending:
            return "waiting_for_user"
        return "complete" if self.outcome.terminal is not None else "working"

    def structured(self) -> dict[str, Any]:
        """The `structured_content` of the tool result."""
        return {
            "conversation": self.handle,
            "agent": {"sId": self.agent.s_id, "name": self.agent.name},
            "dust_conversation_id": self.dust_conversation_id,
            "message_id": self.message_id,
            "url": self.url,
            "continued": self.continued,
            "remembered": self.unremembered is None,
            "status": self.status,
            "answer": self.text,
            "pending": [pending_json(action) for action in self.pending],
            "sources": [source.as_dict() for source in self.sources],
            "files": [made.as_dict() for made in self.files],
        }


def pending_json(action: PendingAction) -> dict[str, Any]:
    """A pending action as a client sees it (ids to reply with, what it is about)."""
    data: dict[str, Any] = {
        "action_id": action.action_id,
        "kind": action.kind,
        "tool": action.tool,
        "server": action.server,
        "inputs": action.inputs,
        "stake": action.stake,
    }
    if action.question is not None:
        data["question"] = action.question.text
        data["options"] = [
            {"index": index, "label": option.label, "description": option.description}
            for index, option in enumerate(action.question.options)
        ]
        data["multi_select"] = action.question.multi_select
    if action.auth_message is not None:
        data["message"] = action.auth_message
    return data


def actions_of(outcome: RelayOutcome) -> list[Any]:
    """The finished message's actions (their outputs and generated files)."""
    message = outcome.terminal.data.get("message") if outcome.terminal is not None else None
    actions = message.get("actions") if isinstance(message, dict) else None
    return actions if isinstance(actions, list) else []


def presented(outcome: RelayOutcome) -> tuple[str, list[Source]]:
    """The answer as the user reads it: citations as footnotes over the sources listed under it
    (for an unfinished answer, whose sources may be incomplete, without its markers)."""
    return cited(outcome.text, actions_of(outcome), finished=outcome.terminal is not None)


def terminal_of(message: AgentMessage) -> AgentEvent | None:
    """The terminal event a finished message's status stands for (None while it runs)."""
    kinds = {
        "succeeded": "agent_message_success",
        "failed": "agent_error",
        "cancelled": "agent_generation_cancelled",
    }
    kind = kinds.get(message.status)
    if kind is None:
        return None
    actions = [action.model_dump(by_alias=True) for action in message.actions]
    data = {"type": kind, "error": message.error or {}, "message": {"actions": actions}}
    return AgentEvent(event_id="", type=kind, data=data)


def raise_for_failed_answer(outcome: RelayOutcome, agent: Agent, handle: str) -> None:
    """Raise AgentFailed when the answer ended in an error or a cancellation rather than an answer."""
    terminal = outcome.terminal
    if terminal is None:
        return
    error = terminal.data.get("error") or {}
    reason = (
        str(error.get("message") or "unknown error")[:300] if isinstance(error, dict) else "unknown error"
    )
    if terminal.type == "agent_error":
        code = (error.get("code") if isinstance(error, dict) else None) or "agent_error"
        raise AgentFailed(f"agent {agent.name} failed: {reason} ({code}). Conversation handle: {handle}")
    if terminal.type == "user_message_error":
        raise AgentFailed(f"Dust rejected the message: {reason}")
    if terminal.type == "agent_generation_cancelled":
        raise AgentFailed(f"the answer was cancelled in Dust. Conversation handle: {handle}")
