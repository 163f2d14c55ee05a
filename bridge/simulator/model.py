"""The stored objects of the simulated workspace and their public JSON shapes (reference §3)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bridge.simulator.agents import AgentSpec
from bridge.simulator.eventlog import EventLog


@dataclass(eq=False)
class FileRecord:
    """An uploaded (or to-be-uploaded) file; the bytes themselves are reduced to size and sha256."""

    sid: str
    created_ms: int
    created_at: float  # loop time, for the upload window
    content_type: str
    file_name: str
    file_size: int
    use_case: str
    use_case_metadata: dict[str, Any] | None
    status: str = "created"
    uploaded_size: int | None = None
    sha256: str | None = None

    def to_json(self, upload_url: str) -> dict[str, Any]:
        """The public file object (`id` is the sId, as Dust's own `toJSON` does)."""
        body: dict[str, Any] = {
            "id": self.sid,
            "sId": self.sid,
            "contentType": self.content_type,
            "fileName": self.file_name,
            "fileSize": self.file_size,
            "status": self.status,
            "useCase": self.use_case,
            "uploadUrl": upload_url,
        }
        if self.use_case_metadata is not None:
            body["useCaseMetadata"] = self.use_case_metadata
        return body

    def details(self) -> dict[str, Any]:
        """Everything the simulator knows about the file, for `/_sim/files`."""
        return {
            "sId": self.sid,
            "fileName": self.file_name,
            "contentType": self.content_type,
            "fileSize": self.file_size,
            "status": self.status,
            "uploadedSize": self.uploaded_size,
            "sha256": self.sha256,
        }


@dataclass(eq=False)
class ContentFragment:
    """A file attached to a conversation; it sits at its own rank before the user message it goes with."""

    model_id: int
    sid: str
    created: int
    rank: int
    title: str
    content_type: str
    file_sid: str
    text_bytes: int
    text_url: str
    source_url: str | None
    context: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The ContentFragment JSON (file kind)."""
        return {
            "type": "content_fragment",
            "id": self.model_id,
            "sId": self.sid,
            "created": self.created,
            "visibility": "visible",
            "version": 0,
            "rank": self.rank,
            "sourceUrl": self.source_url,
            "title": self.title,
            "contentType": self.content_type,
            "context": self.context,
            "contentFragmentId": self.sid,
            "contentFragmentVersion": "latest",
            "contentFragmentType": "file",
            "expiredReason": None,
            "fileId": self.file_sid,
            "snippet": None,
            "generatedTables": [],
            "textUrl": self.text_url,
            "textBytes": self.text_bytes,
            "sourceProvider": None,
            "sourceIcon": None,
        }


@dataclass(eq=False)
class UserMessage:
    """A user message; `mentions` holds only the sIds of known agents (unknown ones are dropped)."""

    model_id: int
    sid: str
    created: int
    rank: int
    content: str
    mentions: list[str]
    context: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The UserMessage JSON (`user` is null for API keys)."""
        return {
            "id": self.model_id,
            "sId": self.sid,
            "type": "user_message",
            "created": self.created,
            "visibility": "visible",
            "version": 0,
            "rank": self.rank,
            "user": None,
            "mentions": [{"configurationId": sid} for sid in self.mentions],
            "content": self.content,
            "context": self.context,
        }


@dataclass(eq=False)
class AgentMessage:
    """An agent's answer: its live state, its event log and the task generating it."""

    model_id: int
    sid: str
    created: int
    rank: int
    parent_sid: str
    agent: AgentSpec
    log: EventLog
    status: str = "created"
    content: str = ""
    chain_of_thought: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, Any]:
        """The AgentMessage JSON as of now (content so far; final once terminal)."""
        return {
            "id": self.model_id,
            "agentMessageId": self.model_id,
            "sId": self.sid,
            "type": "agent_message",
            "created": self.created,
            "visibility": "visible",
            "version": 0,
            "rank": self.rank,
            "parentMessageId": self.parent_sid,
            "parentAgentMessageId": None,
            "configuration": self.agent.light_configuration(),
            "status": self.status,
            "actions": list(self.actions),
            "content": self.content if self.content or self.status != "created" else None,
            "chainOfThought": self.chain_of_thought or None,
            "rawContents": [{"step": 0, "content": self.content}] if self.content else [],
            "error": self.error,
        }


Entry = UserMessage | AgentMessage | ContentFragment


@dataclass(eq=False)
class Conversation:
    """A conversation: one entry per rank, in order."""

    model_id: int
    sid: str
    created: int
    title: str | None
    visibility: str
    entries: list[Entry] = field(default_factory=list)

    @property
    def next_rank(self) -> int:
        return len(self.entries)

    @property
    def updated(self) -> int:
        return max([self.created, *(entry.created for entry in self.entries)])

    def fragments(self) -> list[ContentFragment]:
        """All content fragments attached so far."""
        return [entry for entry in self.entries if isinstance(entry, ContentFragment)]

    def agent_turns(self) -> int:
        """How many user messages mentioned an agent (the echo agent's turn number)."""
        return sum(1 for entry in self.entries if isinstance(entry, UserMessage) and entry.mentions)

    def to_json(self, owner: dict[str, Any], url: str) -> dict[str, Any]:
        """The Conversation JSON; `content` is a list per rank of version lists (one version each here)."""
        return {
            "id": self.model_id,
            "sId": self.sid,
            "created": self.created,
            "updated": self.updated,
            "unread": False,
            "actionRequired": False,
            "owner": owner,
            "title": self.title,
            "visibility": self.visibility,
            "groupIds": [],
            "requestedGroupIds": [],
            "requestedSpaceIds": [],
            "url": url,
            "content": [[entry.to_json()] for entry in self.entries],
        }
