"""A conversation's messages as a client reads them (get_conversation, the conversation resource)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.domain.citations import cited
from bridge.domain.generated_files import generated_files
from bridge.dust.models import AgentMessage, ContentFragment, Conversation, UserMessage


@dataclass
class TranscriptEntry:
    """One message of a conversation as a client sees it."""

    role: str  # "user", "agent" or "file"
    content: str
    agent: str | None = None
    status: str | None = None
    message_id: str | None = None
    files: list[dict[str, Any]] | None = None  # what an agent message generated
    sources: list[dict[str, Any]] | None = None  # what an agent message cites, as numbered footnotes


@dataclass
class Transcript:
    """A conversation's messages so far."""

    handle: str
    dust_conversation_id: str
    title: str | None
    url: str | None
    entries: list[TranscriptEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (structured content and the conversation resource)."""
        return {
            "conversation": self.handle,
            "dust_conversation_id": self.dust_conversation_id,
            "title": self.title,
            "url": self.url,
            "messages": [{k: v for k, v in vars(entry).items() if v is not None} for entry in self.entries],
        }

    def as_text(self) -> str:
        """A readable transcript for the model."""
        lines = [f"Conversation {self.handle}" + (f" — {self.title}" if self.title else "")]
        for entry in self.entries:
            if entry.role == "user":
                lines.append(f"User: {entry.content}")
            elif entry.role == "file":
                lines.append(f"[file] {entry.content}")
            else:
                suffix = f" [{entry.status}]" if entry.status and entry.status != "succeeded" else ""
                if entry.status == "in_progress":
                    suffix = " [in progress: the agent is still working; call wait_for_answer]"
                lines.append(f"{entry.agent or 'Agent'}{suffix}: {entry.content}")
                lines.extend(
                    f"[file] {made['name']} ({made['type']}): {made['uri']}" for made in entry.files or []
                )
        return "\n\n".join(lines)


def entries_of(conversation: Conversation, names: dict[str, str]) -> list[TranscriptEntry]:
    """The conversation's current messages; agents named from `names` (sId -> name) where known."""
    entries: list[TranscriptEntry] = []
    for item in conversation.current_messages():
        if isinstance(item, UserMessage):
            entries.append(TranscriptEntry(role="user", content=item.content, message_id=item.s_id))
        elif isinstance(item, AgentMessage):
            entries.append(_agent_entry(item, names))
        elif isinstance(item, ContentFragment):
            entries.append(TranscriptEntry(role="file", content=f"{item.title} ({item.content_type})"))
    return entries


def _agent_entry(message: AgentMessage, names: dict[str, str]) -> TranscriptEntry:
    """An agent message as the user reads it: citations as footnotes (as `ask_agent` shows them),
    markers stripped while it is still being written, the files it made."""
    actions = [action.model_dump(by_alias=True) for action in message.actions]
    in_progress = message.status == "created"  # still being written, or waiting for the user
    content, sources = cited(message.content or "", actions, finished=not in_progress)
    if message.status == "failed" and message.error:
        content = content or f"(failed: {message.error.get('message', 'error')})"
    return TranscriptEntry(
        role="agent",
        content=content,
        agent=names.get(message.configuration_id or "", message.configuration_id),
        status="in_progress" if in_progress else message.status,
        message_id=message.s_id,
        files=[made.as_dict() for made in generated_files(actions)] or None,
        sources=[source.as_dict() for source in sources] or None,
    )
