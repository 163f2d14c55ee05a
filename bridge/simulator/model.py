"""The stored objects of the simulated workspace and their public JSON, shaped like Dust renders them.

`api_base` below is Dust's `config.getApiBaseUrl()`: the simulator uses the base URL of the request,
so links stay reachable however it was started.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bridge.simulator.agents import AgentSpec, ScriptInput, Tool
from bridge.simulator.eventlog import EventLog
from bridge.simulator.ids import now_ms


@dataclass(eq=False)
class FileRecord:
    """A file resource; the bytes are reduced to size and sha256, and kept (`data`) only for the
    files a tool generated and for uploads small enough to be downloaded again."""

    sid: str
    created_ms: int
    created_at: float  # loop time, for the upload window
    content_type: str
    file_name: str
    file_size: int
    use_case: str
    use_case_metadata: dict[str, Any] | None
    status: str = "created"  # "created", "ready" or "failed" (front/types/files.ts FileStatus)
    uploaded_size: int | None = None
    sha256: str | None = None
    data: bytes | None = None

    def to_public_json(
        self, api_base: str, workspace_id: str, *, with_upload_url: bool = False
    ) -> dict[str, Any]:
        """FileResource.toPublicJSON (front/lib/resources/file_resource.ts): `id` is the sId, `version`
        starts at 0, a ready file gets `downloadUrl` (getPrivateUrl, the non-v1 path); with
        `with_upload_url`, toPublicJSONWithUploadUrl adds `uploadUrl` (getPublicUrl, the v1 path).
        `useCaseMetadata` is not part of the public JSON.
        """
        body: dict[str, Any] = {
            "id": self.sid,
            "sId": self.sid,
            "contentType": self.content_type,
            "fileName": self.file_name,
            "fileSize": self.file_size,
            "version": 0,
            "status": self.status,
            "useCase": self.use_case,
        }
        if self.status == "ready":
            body["downloadUrl"] = self.private_url(api_base, workspace_id)
        if with_upload_url:
            body["uploadUrl"] = f"{api_base}/api/v1/w/{workspace_id}/files/{self.sid}"
        return body

    def private_url(self, api_base: str, workspace_id: str) -> str:
        """FileResource.getPrivateUrl."""
        return f"{api_base}/api/w/{workspace_id}/files/{self.sid}"

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
    """A file attached to a conversation: a message (`sid`) pointing at a content fragment resource
    (`fragment_sid`); it sits at its own rank before the user message it goes with."""

    model_id: int
    sid: str
    fragment_sid: str
    conversation_sid: str
    created: int
    rank: int
    title: str
    content_type: str
    file_sid: str
    text_bytes: int
    source_url: str
    context: dict[str, Any]

    def to_json(self, api_base: str, workspace_id: str) -> dict[str, Any]:
        """ContentFragmentResource.renderToContentFragmentType, file kind
        (front/lib/resources/content_fragment_resource.ts); `textUrl` is fileAttachmentLocation's
        `downloadUrl` for the text format."""
        text_url = (
            f"{api_base}/api/w/{workspace_id}/assistant/conversations/{self.conversation_sid}"
            f"/messages/{self.sid}/raw_content_fragment?format=text"
        )
        return {
            "type": "content_fragment",
            "id": self.model_id,
            "sId": self.sid,
            "created": self.created,
            "visibility": "visible",
            "version": 0,
            "rank": self.rank,
            "branchId": None,
            "sourceUrl": self.source_url,
            "title": self.title,
            "contentType": self.content_type,
            "context": self.context,
            "contentFragmentId": self.fragment_sid,
            "contentFragmentVersion": "latest",
            "expiredReason": None,
            "contentFragmentType": "file",
            "fileId": self.file_sid,
            "snippet": None,
            "generatedTables": [],
            "textUrl": text_url,
            "textBytes": self.text_bytes,
            "sourceProvider": None,
            "sourceIcon": None,
            "isInProjectContext": False,
            "hidden": False,
        }


@dataclass(eq=False)
class UserMessage:
    """A user message; `mentions` holds only the sIds of the agents that got an agent message."""

    model_id: int
    sid: str
    created: int
    rank: int
    content: str
    mentions: list[str]
    context: dict[str, Any]
    requested_model: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The UserMessageType (front/types/assistant/conversation.ts); `user` is null for an API key
        unless the context email matches a member (no members here)."""
        return {
            "id": self.model_id,
            "sId": self.sid,
            "type": "user_message",
            "created": self.created,
            "visibility": "visible",
            "version": 0,
            "rank": self.rank,
            "branchId": None,
            "user": None,
            "mentions": [{"configurationId": sid} for sid in self.mentions],
            "content": self.content,
            "context": self.context,
            "reactions": [],
            "requestedModel": self.requested_model,
        }


@dataclass(eq=False)
class AgentMessage:
    """An agent's answer: its live state, its event log and the task generating it."""

    model_id: int
    sid: str
    created: int
    rank: int
    parent_sid: str
    conversation_sid: str
    agent: AgentSpec
    log: EventLog
    script_input: ScriptInput
    key_role: str = "builder"
    skip_tools_validation: bool = False
    status: str = "created"
    step: int = 0  # the agent-loop step being generated
    content: str = ""
    text_by_step: dict[int, str] = field(default_factory=dict)
    chain_of_thought: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    completed: int | None = None
    task: asyncio.Task[None] | None = None
    # Set while the agent loop is paused on the user; the answering route resolves it.
    wake: asyncio.Future[None] | None = None
    # The actions of this message that were ever blocked on the user (AgentMCPActions).
    pauses: list[BlockedAction] = field(default_factory=list)
    # run_agent: the agent message whose tool started this one (Dust's agentic parent).
    agentic_parent: AgentMessage | None = None
    # Dust's `config.getApiBaseUrl()` for the links its tools write: the base of the request that
    # posted the message.
    api_base: str = ""

    async def pause(self) -> None:
        """Wait, publishing nothing, until `resume`: the agent loop stops on an action blocked on
        the user, and the route that unblocks it relaunches the loop."""
        self.wake = asyncio.get_running_loop().create_future()
        try:
            await self.wake
        finally:
            self.wake = None

    def resume(self) -> None:
        """Relaunch the agent loop if it is paused (launchAgentLoopWorkflow); otherwise nothing."""
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def add_text(self, text: str) -> None:
        """Answer tokens of the current step."""
        self.content += text
        self.text_by_step[self.step] = self.text_by_step.get(self.step, "") + text

    def to_json(self) -> dict[str, Any]:
        """The public AgentMessage (front/lib/api/v1/backward_compatibility.ts
        addBackwardCompatibleAgentMessageFields over AgentMessageType): `rawContents` lists the
        text of each step, `contents` the step-indexed content items it derives from."""
        texts = sorted(self.text_by_step.items())
        contents = [
            {"step": step, "content": {"type": "text_content", "value": text}} for step, text in texts
        ]
        return {
            "id": self.model_id,
            "agentMessageId": self.model_id,
            "sId": self.sid,
            "type": "agent_message",
            "created": self.created,
            "completedTs": self.completed,
            "visibility": "visible",
            "version": 0,
            "rank": self.rank,
            "branchId": None,
            "parentMessageId": self.parent_sid,
            "parentAgentMessageId": None,
            "configuration": self.agent.light_configuration(self.key_role),
            "skipToolsValidation": self.skip_tools_validation,
            "status": self.status,
            "actions": list(self.actions),
            "content": self.content if self.content or self.status != "created" else None,
            "chainOfThought": self.chain_of_thought or None,
            "contents": contents,
            "rawContents": [{"step": step, "content": text} for step, text in texts],
            "error": self.error,
            "reactions": [],
        }


# front/lib/actions/statuses.ts TOOL_EXECUTION_BLOCKED_STATUSES (SDK ToolExecutionBlockedStatusSchema).
BLOCKED_STATUSES = frozenset(
    {
        "blocked_authentication_required",
        "blocked_file_authorization_required",
        "blocked_validation_required",
        "blocked_child_action_input_required",
        "blocked_user_answer_required",
    }
)
# Agent messages whose blocked actions can no longer be acted on (Dust's
# UNRESUMABLE_AGENT_MESSAGE_STATUSES, whose definition could not be read: the terminal statuses
# other than success, which cannot leave an action blocked, are taken).
UNRESUMABLE_STATUSES = frozenset({"failed", "cancelled"})


@dataclass(eq=False)
class BlockedAction:
    """A tool call of an agent message that was blocked on the user (an AgentMCPAction whose
    status went through a blocked one); `action` is its public JSON, shared with the message's
    `actions`, so its `status` is the action's status."""

    message: AgentMessage
    tool: Tool
    action: dict[str, Any]
    stake: str | None
    created: int
    question: dict[str, Any] | None = None
    # A personal authorisation: the OAuth provider of the account to connect.
    provider: str | None = None
    # The user's answer to a question (the action's stepContext.resumeState.answer).
    answer: dict[str, Any] | None = None
    # run_agent: the sub-agent's message and the resume state pointing at its conversation.
    child: AgentMessage | None = None
    resume_state: dict[str, Any] | None = None

    @property
    def sid(self) -> str:
        return str(self.action["sId"])

    @property
    def status(self) -> str:
        return str(self.action["status"])

    @status.setter
    def status(self, value: str) -> None:
        self.action["status"] = value
        self.action["updatedAt"] = now_ms()

    @property
    def is_blocked(self) -> bool:
        """Still waiting for the user, on a message that can still resume."""
        return self.status in BLOCKED_STATUSES and self.message.status not in UNRESUMABLE_STATUSES


Entry = UserMessage | AgentMessage | ContentFragment


@dataclass(eq=False)
class Conversation:
    """A conversation: one entry per rank, in order."""

    model_id: int
    sid: str
    created: int
    title: str | None
    visibility: str
    depth: int = 0
    entries: list[Entry] = field(default_factory=list)
    # The conversation's file mount (w/{wId}/conversations/{cId}/files/ in Dust's private bucket):
    # path relative to it -> sId of the file copied there.
    mount: dict[str, str] = field(default_factory=dict)

    @property
    def next_rank(self) -> int:
        return len(self.entries)

    @property
    def updated(self) -> int:
        return max([self.created, *(entry.created for entry in self.entries)])

    def fragments(self) -> list[ContentFragment]:
        """All content fragments attached so far."""
        return [entry for entry in self.entries if isinstance(entry, ContentFragment)]

    def running_agent_message(self) -> AgentMessage | None:
        """The agent message still generating, if any (Dust runs one agent loop at a time)."""
        for entry in reversed(self.entries):
            if isinstance(entry, AgentMessage) and entry.status == "created":
                return entry
        return None

    def agent_turns(self) -> int:
        """How many user messages mentioned an agent (the echo agent's turn number)."""
        return sum(1 for entry in self.entries if isinstance(entry, UserMessage) and entry.mentions)

    def to_json(self, owner: dict[str, Any], url: str, api_base: str) -> dict[str, Any]:
        """ConversationType plus addBackwardCompatibleConversationFields (`requestedGroupIds: []`,
        `url`); `content` is a list per rank of version lists (one version each here)."""
        workspace_id = str(owner["sId"])
        content: list[list[dict[str, Any]]] = []
        for entry in self.entries:
            if isinstance(entry, ContentFragment):
                content.append([entry.to_json(api_base, workspace_id)])
            else:
                content.append([entry.to_json()])
        return {
            "id": self.model_id,
            "sId": self.sid,
            "created": self.created,
            "updated": self.updated,
            "title": self.title,
            "unread": False,
            "actionRequired": False,
            "hasError": False,
            "lastReadMs": None,
            "metadata": {},
            "requestedSpaceIds": [],
            "spaceId": None,
            "triggerId": None,
            "isRunningAgentLoop": self.running_agent_message() is not None,
            "depth": self.depth,
            "branchId": None,
            "owner": owner,
            "visibility": self.visibility,
            "requestedGroupIds": [],
            "url": url,
            "content": content,
        }
