"""Conversation operations shared by the routes: fragments, user messages, agent replies."""

from __future__ import annotations

import asyncio
import hashlib

from bridge.simulator.agents import AGENTS_BY_SID, ScriptInput
from bridge.simulator.bodies import ConversationBody, FragmentBody, MessageBody
from bridge.simulator.errors import ApiError
from bridge.simulator.eventlog import EventLog
from bridge.simulator.generation import start_generation
from bridge.simulator.ids import new_sid, now_ms
from bridge.simulator.model import AgentMessage, ContentFragment, Conversation, FileRecord, UserMessage
from bridge.simulator.state import Simulator


def get_conversation(sim: Simulator, conversation_sid: str) -> Conversation:
    """The conversation, or ApiError 404 `conversation_not_found`."""
    conversation = sim.store.conversations.get(conversation_sid)
    if conversation is None:
        raise ApiError(
            404, "conversation_not_found", "The conversation you're trying to access was not found."
        )
    return conversation


def create_conversation(sim: Simulator, body: ConversationBody) -> Conversation:
    """A new, empty conversation (fragments and message are added by the caller)."""
    conversation = Conversation(
        model_id=sim.store.next_id(),
        sid=new_sid(),
        created=now_ms(),
        title=body.title,
        # `workspace` is the deprecated spelling of `unlisted`.
        visibility="unlisted" if body.visibility == "workspace" else body.visibility,
    )
    sim.store.conversations[conversation.sid] = conversation
    return conversation


def resolve_fragment_file(sim: Simulator, body: FragmentBody) -> FileRecord:
    """The file a fragment points at, creating one for inline content; errors as Dust reports them."""
    if body.fileId is None:
        assert body.content is not None and body.contentType is not None  # guaranteed by FragmentBody
        data = body.content.encode()
        # Dust turns inline content into a file server-side; the simulator does the same.
        return FileRecord(
            sid=f"fil_{new_sid()}",
            created_ms=now_ms(),
            created_at=asyncio.get_running_loop().time(),
            content_type=body.contentType,
            file_name=body.title,
            file_size=len(data),
            use_case="conversation",
            use_case_metadata=None,
            status="ready",
            uploaded_size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    file = sim.store.files.get(body.fileId)
    if file is None:
        raise ApiError(404, "file_not_found", f"File not found: {body.fileId}.")
    if file.status != "ready":
        raise ApiError(400, "invalid_request_error", f"File {body.fileId} has not been uploaded yet.")
    return file


def attach_fragment(
    sim: Simulator, conversation: Conversation, body: FragmentBody, file: FileRecord
) -> ContentFragment:
    """Append a content fragment for `file` at the next rank."""
    sim.store.files[file.sid] = file
    base = sim.options.public_url.rstrip("/")
    fragment = ContentFragment(
        model_id=sim.store.next_id(),
        sid=new_sid(),
        created=now_ms(),
        rank=conversation.next_rank,
        title=body.title,
        content_type=file.content_type,
        file_sid=file.sid,
        text_bytes=file.uploaded_size or 0,
        text_url=f"{base}/api/v1/w/{sim.options.workspace_id}/files/{file.sid}?action=view&version=processed",
        source_url=body.url,
        context=body.context
        or {"username": None, "fullName": None, "email": None, "profilePictureUrl": None},
    )
    conversation.entries.append(fragment)
    return fragment


def post_message(
    sim: Simulator, conversation: Conversation, body: MessageBody
) -> tuple[UserMessage, list[AgentMessage]]:
    """Add a user message and start one agent message per known mentioned agent.

    Unknown `configurationId`s are dropped without an error, as Dust does: the caller gets no agent message.
    """
    known = list(
        dict.fromkeys(m.configurationId for m in body.mentions if m.configurationId in AGENTS_BY_SID)
    )
    store = sim.store
    user_message = UserMessage(
        model_id=store.next_id(),
        sid=new_sid(),
        created=now_ms(),
        rank=conversation.next_rank,
        content=body.content,
        mentions=known,
        context=body.context.model_dump(),
    )
    store.messages[user_message.sid] = user_message
    conversation.entries.append(user_message)
    script_input = ScriptInput(
        message=body.content,
        turn=conversation.agent_turns(),
        fragments=[(fragment.title, fragment.content_type) for fragment in conversation.fragments()],
        slow_seconds=sim.options.slow_seconds,
    )
    replies: list[AgentMessage] = []
    for agent_sid in known:
        agent = AGENTS_BY_SID[agent_sid]
        reply = AgentMessage(
            model_id=store.next_id(),
            sid=new_sid(),
            created=now_ms(),
            rank=conversation.next_rank,
            parent_sid=user_message.sid,
            agent=agent,
            log=EventLog(sim.clock),
        )
        store.messages[reply.sid] = reply
        conversation.entries.append(reply)
        start_generation(sim, reply, agent.script(script_input))
        replies.append(reply)
    return user_message, replies


async def wait_until_answered(replies: list[AgentMessage]) -> None:
    """For `blocking: true`: return once every reply has finished (succeeded, failed or cancelled)."""
    tasks = [reply.task for reply in replies if reply.task is not None]
    if tasks:
        await asyncio.wait(tasks)
