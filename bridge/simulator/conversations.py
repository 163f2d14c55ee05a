"""Conversation operations shared by the routes: context checks, fragments, user and agent messages."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

# API_KEY_ORIGINS: the origins an API key may post with (front/lib/api/assistant/conversation.ts
# isUserMessageContextValid for authMethod "api_key"), one list shared with the bridge's settings check.
from bridge.dust.message_origins import API_KEY_ORIGINS
from bridge.simulator.agents import AGENTS_BY_SID, ScriptInput
from bridge.simulator.errors import ApiError
from bridge.simulator.eventlog import EventLog
from bridge.simulator.file_formats import extensions, is_inline_fragment_type, is_supported
from bridge.simulator.ids import new_sid, now_ms
from bridge.simulator.model import AgentMessage, ContentFragment, Conversation, FileRecord, UserMessage
from bridge.simulator.state import Simulator
from bridge.simulator.zod import js_length

MAX_CONVERSATION_DEPTH = 4  # front/lib/api/assistant/conversation/constants.ts
MAX_INLINE_CONTENT_CHARS = 512 * 1024


# postUserMessage refuses to switch agents while one runs (RUNNING_AGENT_SWITCH_BLOCK_MESSAGE in
# front/lib/api/assistant/errors.ts). Dust's wording of that message could not be read from the
# stored sources; this text is the simulator's.
RUNNING_AGENT_SWITCH_MESSAGE = (
    "An agent is already running in this conversation: wait for it to finish, or cancel it, "
    "before mentioning another agent."
)


def conversation_not_found() -> ApiError:
    """apiErrorForConversation(new ConversationError("conversation_not_found"))."""
    # ConversationError's message is `Cannot access conversation: ${type}`
    # (front/types/assistant/conversation.ts), mapped to 404 by getConversationApiError.
    return ApiError(404, "conversation_not_found", "Cannot access conversation: conversation_not_found")


def get_conversation(sim: Simulator, conversation_sid: str) -> Conversation:
    """The conversation, or 404 `conversation_not_found`."""
    conversation = sim.store.conversations.get(conversation_sid)
    if conversation is None:
        raise conversation_not_found()
    return conversation


def create_conversation(sim: Simulator, *, title: str | None, visibility: str, depth: int) -> Conversation:
    """A new, empty conversation (fragments and message are added by the caller)."""
    conversation = Conversation(
        model_id=sim.store.next_id(),
        sid=new_sid(),
        created=now_ms(),
        title=title,
        # normalizeConversationVisibility: `workspace` is the deprecated spelling of `unlisted`.
        visibility="unlisted" if visibility == "workspace" else visibility,
        depth=depth,
    )
    sim.store.conversations[conversation.sid] = conversation
    return conversation


def context_overflows(context: Mapping[str, Any]) -> bool:
    """isUserMessageContextOverflowing (front/lib/api/assistant/conversation/helper.ts): more than
    255 characters (JavaScript length) in username, timezone, fullName or email, 2048 in the URL."""

    def over(name: str, limit: int = 255) -> bool:
        value = context.get(name)
        return isinstance(value, str) and js_length(value) > limit

    return any(over(name) for name in ("username", "timezone", "fullName", "email")) or over(
        "profilePictureUrl", 2048
    )


def username_is_empty(context: Mapping[str, Any]) -> bool:
    """isEmptyString(context.username): null, undefined or only whitespace."""
    username = context.get("username")
    return not isinstance(username, str) or username.strip() == ""


def origin_allowed(origin: str, headers: Mapping[str, str]) -> bool:
    """isUserMessageContextValid for an API key."""
    if origin == "zendesk":
        return bool(headers.get("x-zendesk-user-id"))
    return origin in API_KEY_ORIGINS


def message_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context the routes store (email lower-cased, absent values null) as Dust renders it back
    (the user-message renderer in front/lib/api/assistant/messages.ts)."""
    email = context.get("email")
    return {
        "username": context["username"],
        "timezone": context["timezone"],
        "fullName": context.get("fullName"),
        "email": email.lower() if isinstance(email, str) else None,
        "profilePictureUrl": context.get("profilePictureUrl"),
        "origin": context.get("origin") or "api",
        "clientSideMCPServerIds": context.get("clientSideMCPServerIds") or [],
        "lastTriggerRunAt": None,
    }


def fragment_context(context: Mapping[str, Any] | None, *, lower_email: bool) -> dict[str, Any]:
    """A content fragment's `context` (the creation route lower-cases the email, the
    content_fragments route does not)."""
    context = context or {}
    email = context.get("email")
    if lower_email and isinstance(email, str):
        email = email.lower()
    return {
        "profilePictureUrl": context.get("profilePictureUrl"),
        "fullName": context.get("fullName"),
        "email": email,
        "username": context.get("username"),
    }


def is_fragment_input(fragment: Mapping[str, Any]) -> bool:
    """isContentFragmentInput (front/types/api/assistant.ts)."""
    return (
        is_inline_fragment(fragment)
        or "fileId" in fragment
        or ("nodeId" in fragment and "nodeDataSourceViewId" in fragment)
    )


def is_inline_fragment(fragment: Mapping[str, Any]) -> bool:
    """isContentFragmentInputWithInlinedContent."""
    content_type = fragment.get("contentType")
    return "content" in fragment and bool(content_type) and is_inline_fragment_type(str(content_type))


def inline_fragment_file(sim: Simulator, fragment: Mapping[str, Any]) -> str:
    """toFileContentFragment (front/lib/api/assistant/conversation/content_fragment.ts): a ready
    file for inline content; returns its sId."""
    content, content_type = str(fragment["content"]), str(fragment["contentType"])
    data = content.encode()
    exts = extensions(content_type)
    file = FileRecord(
        sid=f"fil_{new_sid()}",
        created_ms=now_ms(),
        created_at=asyncio.get_running_loop().time(),
        content_type=content_type,
        # `"content" + extensionsForContentType(type)[0]`: JavaScript appends "undefined" when the
        # type has no extension.
        file_name="content" + (exts[0] if exts else "undefined"),
        file_size=js_length(content),
        use_case="conversation",
        use_case_metadata=None,
        status="ready",
        uploaded_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,  # at most 512k characters (MAX_INLINE_CONTENT_CHARS)
    )
    sim.store.files[file.sid] = file
    return file.sid


def post_content_fragment(
    sim: Simulator,
    conversation: Conversation,
    fragment: Mapping[str, Any],
    context: dict[str, Any],
    api_base: str,
) -> ContentFragment:
    """postNewContentFragment + getContentFragmentBlob (front/lib/api/assistant/conversation.ts,
    .../conversation/content_fragment.ts); their errors are 400 `invalid_request_error`s."""
    if "fileId" not in fragment:
        # A content node: the simulated workspace has no data source views.
        raise ApiError(400, "invalid_request_error", "Unknown data source view for content fragment input")
    file = sim.store.files.get(str(fragment["fileId"]))
    if file is None:
        raise ApiError(400, "invalid_request_error", "File not found.")
    if not is_supported(file.content_type):
        # `assert(isSupportedFileContentType(file.contentType))` (the SDK's list, which holds every
        # FILE_FORMATS type) throws for an inline fragment of an internal type: an unhandled 500.
        raise ApiError(
            500,
            "internal_server_error",
            "Unhandled internal server error: File must have a supported content type.",
        )
    if file.use_case != "conversation":
        raise ApiError(400, "invalid_request_error", "File not meant to be used in a conversation.")
    if file.status != "ready":
        raise ApiError(
            400, "invalid_request_error", "The file is not ready. Please re-upload the file to proceed."
        )
    url = fragment.get("url")
    entry = ContentFragment(
        model_id=sim.store.next_id(),
        sid=new_sid(),
        fragment_sid=new_sid(),
        conversation_sid=conversation.sid,
        created=now_ms(),
        rank=conversation.next_rank,
        title=str(fragment["title"]),
        content_type=file.content_type,
        file_sid=file.sid,
        text_bytes=file.file_size,
        # `url ?? file.getPrivateUrl(auth)`
        source_url=url if isinstance(url, str) else file.private_url(api_base, sim.options.workspace_id),
        context=context,
    )
    conversation.entries.append(entry)
    return entry


def post_message(
    sim: Simulator,
    conversation: Conversation,
    *,
    content: str,
    mentions: list[dict[str, Any]],
    context: dict[str, Any],
    skip_tools_validation: bool,
    model_selection: dict[str, Any] | None,
) -> tuple[UserMessage, list[AgentMessage]]:
    """postUserMessage (front/lib/api/assistant/conversation.ts) for an API key.

    One agent mention at most; no switching agents while one runs; an unknown agent sId is dropped
    silently (the user message is posted, no agent message is created). A key cannot steer a
    running agent, so a message to the running agent starts its own agent message.
    """
    agent_mentions = [m for m in mentions if "configurationId" in m]
    if len(agent_mentions) > 1:
        raise ApiError(400, "invalid_request_error", "Only one agent can be mentioned per message.")
    running = conversation.running_agent_message()
    if running is not None and agent_mentions and agent_mentions[0]["configurationId"] != running.agent.sid:
        raise ApiError(400, "invalid_request_error", RUNNING_AGENT_SWITCH_MESSAGE)
    agent = AGENTS_BY_SID.get(agent_mentions[0]["configurationId"]) if agent_mentions else None
    store = sim.store
    user_message = UserMessage(
        model_id=store.next_id(),
        sid=new_sid(),
        created=now_ms(),
        rank=conversation.next_rank,
        content=content,
        mentions=[agent.sid] if agent is not None else [],
        context=context,
        requested_model=model_selection,
    )
    store.messages[user_message.sid] = user_message
    conversation.entries.append(user_message)
    if agent is None:
        return user_message, []
    script_input = ScriptInput(
        message=content,
        turn=conversation.agent_turns(),
        fragments=[(fragment.title, fragment.content_type) for fragment in conversation.fragments()],
        slow_seconds=sim.options.slow_seconds,
        long_seconds=sim.options.long_seconds,
    )
    reply = AgentMessage(
        model_id=store.next_id(),
        sid=new_sid(),
        created=now_ms(),
        rank=conversation.next_rank,
        parent_sid=user_message.sid,
        conversation_sid=conversation.sid,
        agent=agent,
        log=EventLog(sim.clock),
        script_input=script_input,
        key_role=sim.options.api_key_role,
        skip_tools_validation=skip_tools_validation,
    )
    store.messages[reply.sid] = reply
    conversation.entries.append(reply)
    # The caller starts the agent loop (bridge.simulator.generation.start_generation).
    return user_message, [reply]


def post_run_agent_conversation(
    sim: Simulator, parent: AgentMessage, agent_sid: str, query: str
) -> tuple[Conversation, AgentMessage]:
    """The child conversation the run_agent tool creates for a sub-agent, with its first message
    (front/lib/actions/mcp_internal_actions/servers/run_agent: `createConversation` titled
    `run_agent <agent> > <sub-agent>`, unlisted, one level deeper, the message written in the
    calling agent's name with origin `run_agent`; the stored versions differ on whether the content
    starts with a `:mention[...]`: the plain query is used). Its agent loop is not started here."""
    agent = AGENTS_BY_SID[agent_sid]
    parent_conversation = sim.store.conversations[parent.conversation_sid]
    conversation = create_conversation(
        sim,
        title=f"run_agent {parent.agent.name} > {agent.name}",
        visibility="unlisted",
        depth=parent_conversation.depth + 1,
    )
    context = {
        "username": parent.agent.name,
        "timezone": "UTC",  # `Intl.DateTimeFormat().resolvedOptions().timeZone`: the server's
        "fullName": f"@{parent.agent.name}",
        "email": None,
        "profilePictureUrl": parent.agent.light_configuration(parent.key_role)["pictureUrl"],
        "origin": "run_agent",
        "clientSideMCPServerIds": [],
        "lastTriggerRunAt": None,
    }
    _, replies = post_message(
        sim,
        conversation,
        content=query,
        mentions=[{"configurationId": agent_sid}],
        context=context,
        skip_tools_validation=parent.skip_tools_validation,
        model_selection=None,
    )
    (child,) = replies
    child.agentic_parent = parent
    child.api_base = parent.api_base
    return conversation, child


async def wait_until_answered(replies: list[AgentMessage]) -> None:
    """For `blocking: true`: return once every reply has finished (succeeded, failed or cancelled)."""
    tasks = [reply.task for reply in replies if reply.task is not None]
    if tasks:
        await asyncio.wait(tasks)
