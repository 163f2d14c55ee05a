"""The bridge's tools: list and ask Dust agents, read and end conversations, upload a file.

Each tool is one function; its docstring is the description clients put in the model's context (the
SDK reads it, without indentation: `BridgeMCPServer.add_tool`), its annotated arguments are the
input schema. Each runs in the wrapper of `bridge.mcp.calls` (metrics, audit, error translation).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from bridge.domain.answers import Answer, TurnListener
from bridge.domain.replies import AnswerQuestion, Approve, Reply
from bridge.errors import InvalidInput
from bridge.mcp.caller import session_key
from bridge.mcp.calls import BridgeTool, ToolCall, bridge_tool
from bridge.mcp.file_sources import resolve_files, upload_path, upload_url
from bridge.mcp.pauses import DECISIONS
from bridge.mcp.services import ServicesProvider
from bridge.mcp.turns import deliver
from bridge.uploads.record_json import upload_json

DEMO_NOTE = (
    "DEMO MODE: this bridge is not connected to a Dust workspace. It answers from its bundled Dust"
    " simulator, whose agents (echo, dust, slow, researcher, ...) are demos. Tell the user; to use"
    " their workspace they fill in the Dust API key and Workspace ID (the Claude Desktop extension's"
    " settings, or DUST_API_KEY and DUST_WORKSPACE_ID)."
)

_CONVERSATION_ARG = (
    "The `conversation` handle from an earlier ask_agent result, to continue that chat. Omit it to start"
    " a new conversation."
)

_FILES_ARG = (
    "Files to attach to this message: upload ids or bridge://uploads/... URIs (from upload_file or POST"
    " /v1/uploads), https:// URLs, or, when the bridge runs on the user's computer, full file paths"
)


class AgentRef(BaseModel):
    """An agent as named in results."""

    model_config = ConfigDict(populate_by_name=True)
    s_id: str = Field(alias="sId")
    name: str


class AskAgentResult(BaseModel):
    """Structured result of ask_agent."""

    conversation: str = Field(description="Handle to pass back as `conversation` to continue this chat")
    agent: AgentRef
    dust_conversation_id: str
    message_id: str = Field(description="Dust sId of the agent message")
    url: str | None = Field(description="The conversation in the Dust web app")
    continued: bool = Field(description="True when this turn continued an existing conversation")
    remembered: bool = Field(
        default=True,
        description="False when the bridge's context store failed after Dust took the question: the"
        " answer is complete, but `conversation` will not work; start a new conversation next time",
    )
    status: Literal["complete", "waiting_for_user", "working"] = Field(
        default="complete",
        description="complete; waiting_for_user: see `pending` (approve_action / answer_question);"
        " working: the agent goes on in Dust, call wait_for_answer",
    )
    answer: str = Field(description="The answer (so far, unless status is complete)")
    pending: list[dict[str, Any]] = Field(
        default_factory=list, description="What the agent waits for: action_id, kind, tool, inputs, question"
    )
    sources: list[dict[str, Any]] = Field(
        default_factory=list, description="The sources the answer's [n] footnotes cite: number, title, url"
    )
    files: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Files the agent made: file_id, name, type, uri (dust://files/...: resources/read)",
    )


@bridge_tool(ToolAnnotations(title="List Dust agents", read_only_hint=True, open_world_hint=True))
async def list_agents(call: ToolCall, query: str | None = None) -> dict[str, Any]:
    """List the Dust workspace's active agents (sId, name, description).

    Pass `query` to keep only agents whose name or description contains it (case-insensitive).
    Use an agent's name or sId as `agent` in ask_agent.
    """
    agents = await call.services.agents.list()
    if query:
        needle = query.strip().lower()
        agents = [a for a in agents if needle in a.name.lower() or needle in (a.description or "").lower()]
    listing: dict[str, Any] = {
        "agents": [{"sId": a.s_id, "name": a.name, "description": a.description or ""} for a in agents],
        "count": len(agents),
    }
    if call.demo:
        listing["demo"] = DEMO_NOTE
    return listing


@bridge_tool(
    ToolAnnotations(title="Ask a Dust agent", read_only_hint=False, open_world_hint=True), audited=True
)
async def ask_agent(
    call: ToolCall,
    agent: Annotated[str, Field(description="Agent name (case-insensitive) or sId, from list_agents")],
    message: Annotated[str, Field(description="Your message to the agent")],
    conversation: Annotated[str | None, Field(description=_CONVERSATION_ARG)] = None,
    new_conversation: Annotated[
        bool, Field(description="Start a fresh conversation even if this session has one with the agent")
    ] = False,
    files: Annotated[list[str] | None, Field(description=_FILES_ARG)] = None,
) -> Annotated[CallToolResult, AskAgentResult] | InputRequiredResult:
    """Ask a Dust agent and stream its answer.

    The answer arrives as progress notifications while Dust generates it, then as the result.
    The result's `conversation` is a handle: pass it back as `conversation` on the next call to
    continue the same Dust conversation (the agent then remembers the earlier turns).
    """
    return await _ask(call, agent, message, conversation, new_conversation, files)


def agent_tool(reference: str) -> BridgeTool:
    """`ask_<slug>` for one allow-listed agent (BRIDGE_AGENT_TOOLS): ask_agent with `agent` fixed."""

    @bridge_tool(
        ToolAnnotations(read_only_hint=False, open_world_hint=True), metric="ask_agent", audited=True
    )
    async def ask_this_agent(
        call: ToolCall,
        message: Annotated[str, Field(description="Your message to the agent")],
        conversation: Annotated[str | None, Field(description=_CONVERSATION_ARG)] = None,
        new_conversation: bool = False,
        files: Annotated[list[str] | None, Field(description=_FILES_ARG)] = None,
    ) -> Annotated[CallToolResult, AskAgentResult] | InputRequiredResult:
        return await _ask(call, reference, message, conversation, new_conversation, files)

    return ask_this_agent


_HANDLE_ARG = "The `conversation` handle from the ask_agent result"


@bridge_tool(
    ToolAnnotations(title="Wait for an agent's answer", read_only_hint=True, open_world_hint=True),
    audited=True,
)
async def wait_for_answer(
    call: ToolCall, conversation: Annotated[str, Field(description=_HANDLE_ARG)]
) -> Annotated[CallToolResult, AskAgentResult] | InputRequiredResult:
    """Get the rest of an answer ask_agent returned before it was complete ("still working").

    Streams the rest as progress and returns the full answer; if the agent is still working at
    this call's deadline, returns again with the same hint. Also shows what the agent waits for.
    """

    async def start(listener: TurnListener) -> Answer:
        return await call.services.conversations.resume(call.principal, conversation, listener)

    async with call.services.limiter.answer_slot(call.principal):
        return await deliver(call, start)


@bridge_tool(
    ToolAnnotations(title="Approve or reject an agent's action", read_only_hint=False, open_world_hint=True),
    audited=True,
)
async def approve_action(
    call: ToolCall,
    conversation: Annotated[str, Field(description=_HANDLE_ARG)],
    action_id: Annotated[str, Field(description="The pending action's `action_id` from the result")],
    decision: Annotated[
        Literal["approve", "reject", "always_approve"],
        Field(description="approve once, reject, or always approve this tool for this agent"),
    ],
) -> Annotated[CallToolResult, AskAgentResult] | InputRequiredResult:
    """Answer an agent that waits for approval to run a tool, as the user decided; the agent then
    goes on and its answer streams back here. Only after asking the user."""
    reply = Approve(action_id, DECISIONS[decision])
    return await _reply(call, conversation, reply)


@bridge_tool(
    ToolAnnotations(title="Answer an agent's question", read_only_hint=False, open_world_hint=True),
    audited=True,
)
async def answer_question(
    call: ToolCall,
    conversation: Annotated[str, Field(description=_HANDLE_ARG)],
    action_id: Annotated[str, Field(description="The pending question's `action_id` from the result")],
    options: Annotated[
        list[int] | None, Field(description="Numbers (`index`) of the options the user chose")
    ] = None,
    text: Annotated[str | None, Field(description="The user's answer in their own words")] = None,
) -> Annotated[CallToolResult, AskAgentResult] | InputRequiredResult:
    """Give an agent the user's answer to the question it asked (options by number and/or words);
    the agent then goes on and its answer streams back here."""
    reply = AnswerQuestion(action_id, tuple(options or ()), text)
    return await _reply(call, conversation, reply)


async def _reply(call: ToolCall, conversation: str, reply: Reply) -> CallToolResult | InputRequiredResult:
    call.note(action=reply.action_id)

    async def start(listener: TurnListener) -> Answer:
        return await call.services.conversations.reply(call.principal, conversation, [reply], listener)

    async with call.services.limiter.answer_slot(call.principal):
        return await deliver(call, start)


@bridge_tool(ToolAnnotations(title="Read a conversation", read_only_hint=True, open_world_hint=True))
async def get_conversation(
    call: ToolCall,
    conversation: Annotated[str, Field(description="A `conversation` handle returned by ask_agent")],
) -> dict[str, Any]:
    """The transcript of a conversation started with ask_agent: every user and agent message so far."""
    transcript = await call.services.conversations.transcript(call.principal, conversation)
    return transcript.as_dict()


@bridge_tool(
    ToolAnnotations(
        title="End a conversation", read_only_hint=False, destructive_hint=True, idempotent_hint=False
    )
)
async def end_conversation(
    call: ToolCall,
    conversation: Annotated[str, Field(description="A `conversation` handle returned by ask_agent")],
) -> str:
    """Forget a conversation handle. The conversation itself stays visible in Dust."""
    await call.services.conversations.end(call.principal, conversation)
    return "Conversation ended; its handle no longer works. The conversation is still in Dust."


@bridge_tool(ToolAnnotations(title="Upload a file for Dust", read_only_hint=False, open_world_hint=True))
async def upload_file(
    call: ToolCall,
    path: Annotated[
        str | None,
        Field(description="A file on the user's computer, by full path (~/ allowed); local bridges only"),
    ] = None,
    url: Annotated[str | None, Field(description="An https:// URL of a file on the public web")] = None,
    filename: Annotated[
        str | None, Field(description="With content_base64: the file's name and extension (report.pdf)")
    ] = None,
    content_base64: Annotated[
        str | None, Field(description="The file's bytes, base64-encoded (only for small files you hold)")
    ] = None,
    mime_type: Annotated[str | None, Field(description="The file's MIME type, if known")] = None,
) -> dict[str, Any]:
    """Upload a file so a Dust agent can read it; pass the returned `uri` in ask_agent's `files`.

    Give exactly one source: `path`, a file on the user's computer inside the folders they allowed
    (when the bridge runs locally, e.g. in Claude Desktop); `url`, a file on the public web, fetched
    by the bridge; or `filename` + `content_base64` for a small file you hold. The file is
    type-checked and virus-scanned before it reaches Dust. Over HTTP, large files of the user's go
    through the bridge's POST /v1/uploads (multipart, part `file`).
    """
    if [path, url, content_base64].count(None) != 2:
        raise InvalidInput(
            "give exactly one of path, url or content_base64 (with filename)", code="bad_request"
        )
    if path is not None:
        return upload_json(await upload_path(call, path))
    if url is not None:
        return upload_json(await upload_url(call, url))
    if not filename or content_base64 is None:
        raise InvalidInput(
            "content_base64 needs filename, the file's name with its extension", code="bad_request"
        )
    try:
        data = base64.b64decode("".join(content_base64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("content_base64 is not valid base64", code="bad_request") from None
    record = await call.services.uploads.ingest_bytes(
        owner=call.principal, filename=filename, declared_type=mime_type, data=data
    )
    return upload_json(record)


TOOLS = (
    list_agents,
    ask_agent,
    wait_for_answer,
    approve_action,
    answer_question,
    get_conversation,
    end_conversation,
    upload_file,
)


def register_tools(
    mcp: MCPServer[Any], services: ServicesProvider, *, agent_tools: list[str], demo: bool
) -> None:
    """Register every tool, then one `ask_<slug>` per allow-listed agent."""
    for tool in TOOLS:
        mcp.add_tool(tool.bind(services, demo=demo), annotations=tool.annotations)
    for reference in agent_tools:
        tool = agent_tool(reference)
        mcp.add_tool(
            tool.bind(services, demo=demo),
            name=f"ask_{_slug(reference)}",
            title=f"Ask the Dust agent {reference}",
            description=(
                f"Ask the Dust agent {reference!r} and stream its answer. Pass the result's `conversation`"
                " back as `conversation` to continue the same chat."
            ),
            annotations=tool.annotations,
        )


async def _ask(
    call: ToolCall,
    agent: str,
    message: str,
    conversation: str | None,
    new_conversation: bool,
    files: list[str] | None,
) -> CallToolResult | InputRequiredResult:
    """One agent turn, its answer streamed to the caller as progress notifications."""
    call.note(agent=agent, files=len(files or []))
    files = await resolve_files(call, files)

    async def start(listener: TurnListener) -> Answer:
        answer = await call.services.conversations.ask(
            principal=call.principal,
            session_key=session_key(call.ctx, call.services),
            agent_ref=agent,
            message=message,
            conversation=conversation,
            new_conversation=new_conversation,
            files=files,
            listener=listener,
        )
        call.note(agent=answer.agent.s_id, continued=answer.continued)
        return answer

    async with call.services.limiter.answer_slot(call.principal):
        return await deliver(call, start)


def _slug(reference: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", reference.lower()).strip("_")
    return slug[:48] or "agent"
