"""The MCP face of the bridge: tools, resources and a prompt, on the SDK's `MCPServer`.

No HTTP details live here; the same server object serves stdio, Streamable HTTP and legacy SSE.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import inspect
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    GetPromptRequestParams,
    GetPromptResult,
    Icon,
    InputRequiredResult,
    ListResourcesResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, ConfigDict, Field

from bridge import __version__
from bridge.domain.conversations import Answer
from bridge.dust.errors import DustError
from bridge.errors import BridgeError
from bridge.mcp.listing_cache import FixedListingCache
from bridge.observability.context import PRINCIPAL, REQUEST_ID
from bridge.runtime import Runtime
from bridge.security.audit import audit_event
from bridge.security.auth import principal_of_request
from bridge.uploads.record_json import upload_json

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
This server connects you to the agents of a Dust (dust.tt) workspace.
1. Call list_agents to see the agents (name, sId, description).
2. Call ask_agent(agent, message) to ask one; the answer streams in as progress and the result
   holds the full answer and a `conversation` handle.
3. To continue the same chat, call ask_agent again with conversation=<that handle>. Without it a
   new Dust conversation starts (handshake-era clients also continue their last chat per agent;
   pass new_conversation=true to start afresh).
get_conversation(conversation) returns the transcript; end_conversation(conversation) forgets it.
To give an agent a file, upload it (upload_file for small files, or the bridge's POST /v1/uploads)
and pass the returned uri in ask_agent's `files`.
"""

DEMO_NOTE = (
    "DEMO MODE: this bridge is not connected to a Dust workspace. It answers from its bundled Dust"
    " simulator, whose agents (echo, dust, slow, researcher, ...) are demos. Tell the user; to use"
    " their workspace they set DUST_API_KEY and DUST_WORKSPACE_ID."
)

_CONVERSATION_ARG = (
    "The `conversation` handle from an earlier ask_agent result, to continue that chat. Omit it to start"
    " a new conversation."
)

_FILES_ARG = (
    "Upload ids or bridge://uploads/... URIs (from upload_file or POST /v1/uploads) to attach to this message"
)

RuntimeProvider = Callable[[], Runtime]


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
    answer: str


def session_key(ctx: Context, runtime: Runtime) -> str | None:
    """Who to remember the last conversation per agent for, or None for sessionless (2026) requests.

    stdio is one local session per process; Streamable HTTP handshake-era requests carry
    `Mcp-Session-Id`; legacy SSE posts carry `?session_id=`.
    """
    request = ctx.request_context.request
    if request is None:
        return f"stdio:{runtime.instance_id}"
    headers = getattr(request, "headers", None)
    session_id = headers.get("mcp-session-id") if headers is not None else None
    if session_id:
        return f"http:{session_id}"
    query = getattr(request, "query_params", None)
    sse_id = query.get("session_id") if query is not None else None
    if sse_id:
        return f"sse:{sse_id}"
    return None


def principal_of(ctx: Context | ServerRequestContext[Any, Any]) -> str:
    """The principal an MCP request acts for: its client key's name, or the local user."""
    request_context = ctx.request_context if isinstance(ctx, Context) else ctx
    return principal_of_request(request_context.request)


@contextlib.contextmanager
def _log_context(ctx: ServerRequestContext[Any]) -> Iterator[None]:
    """Bind the HTTP request id and principal of this MCP request for its logs and Dust calls."""
    scope = getattr(ctx.request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    request_id = state.get("request_id") if isinstance(state, dict) else None
    tokens = (REQUEST_ID.set(request_id), PRINCIPAL.set(principal_of_request(ctx.request)))
    try:
        yield
    finally:
        REQUEST_ID.reset(tokens[0])
        PRINCIPAL.reset(tokens[1])


def _slug(reference: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", reference.lower()).strip("_")
    return slug[:48] or "agent"


def _tool_error(exc: BridgeError) -> ToolError:
    return ToolError(exc.for_user())


class BridgeMCPServer(MCPServer[Any]):
    """`MCPServer` whose resource listing also shows the caller's own conversations."""

    def __init__(self, runtime: RuntimeProvider, *, demo: bool = False) -> None:
        super().__init__(
            "dust-mcp-bridge",
            title="Dust agents",
            version=__version__,
            # Clients show the instructions to the model, so a demo says so before any answer does.
            instructions=f"{DEMO_NOTE}\n{INSTRUCTIONS}" if demo else INSTRUCTIONS,
            website_url="https://dust.tt",
            middleware=[FixedListingCache()],
        )
        self._runtime = runtime

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        icons: list[Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> None:
        """Register a tool; its description defaults to the function's docstring without the
        indentation the SDK would keep (clients put every tool description in the model's context,
        on every turn)."""
        if description is None and fn.__doc__:
            description = inspect.cleandoc(fn.__doc__)
        super().add_tool(
            fn,
            name=name,
            title=title,
            description=description,
            annotations=annotations,
            icons=icons,
            meta=meta,
            structured_output=structured_output,
        )

    async def _handle_call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        with _log_context(ctx):
            return await super()._handle_call_tool(ctx, params)

    async def _handle_read_resource(
        self, ctx: ServerRequestContext[Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult | InputRequiredResult:
        with _log_context(ctx):
            return await super()._handle_read_resource(ctx, params)

    async def _handle_get_prompt(
        self, ctx: ServerRequestContext[Any], params: GetPromptRequestParams
    ) -> GetPromptResult | InputRequiredResult:
        try:
            return await super()._handle_get_prompt(ctx, params)
        except ValueError as exc:
            # The SDK reports an unknown prompt or a missing argument as a bare ValueError, which
            # reaches the client as an internal error (-32603) and an ERROR traceback in our log.
            # It is the caller's mistake: invalid params, with the SDK's own one-line reason.
            raise MCPError(INVALID_PARAMS, str(exc)) from None

    async def _handle_list_resources(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        with _log_context(ctx):
            return await self._list_resources(ctx)

    async def _list_resources(self, ctx: ServerRequestContext[Any]) -> ListResourcesResult:
        listed = await self.list_resources()
        runtime = self._runtime()
        try:
            records = await runtime.conversations.list_conversations(principal_of(ctx))
        except BridgeError as exc:
            logger.warning("conversation listing unavailable: %s", exc)
            records = []
        for record in records:
            listed.append(
                Resource(
                    uri=f"dust://conversations/{record.handle}",
                    name=f"conversation-{record.handle[-8:]}",
                    title=f"Conversation with {record.agent_name} ({record.turns} turn(s))",
                    mime_type="application/json",
                )
            )
        try:
            uploads = await runtime.uploads.list(principal_of(ctx))
        except BridgeError as exc:
            logger.warning("upload listing unavailable: %s", exc)
            uploads = []
        for upload in uploads:
            listed.append(
                Resource(
                    uri=upload.uri,
                    name=f"upload-{upload.upload_id[-8:]}",
                    title=upload.filename,
                    description=f"{upload.mime}, {upload.size} bytes, scan {upload.scan}",
                    mime_type="application/json",
                )
            )
        try:
            agents = await runtime.agents.list()
        except DustError as exc:
            logger.warning("agent listing unavailable: %s", exc.message)
            agents = []
        for agent in agents:
            listed.append(
                Resource(
                    uri=f"dust://agents/{agent.s_id}",
                    name=f"agent-{agent.s_id}",
                    title=f"Agent {agent.name}",
                    description=agent.description,
                    mime_type="application/json",
                )
            )
        return ListResourcesResult(resources=listed)


def build_mcp_server(
    runtime: RuntimeProvider, *, agent_tools: list[str] | None = None, demo: bool = False
) -> BridgeMCPServer:
    """The bridge's MCP server; `runtime()` returns the live runtime once the lifespan has started.
    `demo` says so in the instructions and in every agent listing."""
    mcp = BridgeMCPServer(runtime, demo=demo)

    def _count(tool: str, outcome: str) -> None:
        runtime().metrics.tool_calls.labels(tool=tool, outcome=outcome).inc()

    @mcp.tool(
        annotations=ToolAnnotations(title="List Dust agents", read_only_hint=True, open_world_hint=True),
    )
    async def list_agents(query: str | None = None) -> dict[str, Any]:
        """List the Dust workspace's active agents (sId, name, description).

        Pass `query` to keep only agents whose name or description contains it (case-insensitive).
        Use an agent's name or sId as `agent` in ask_agent.
        """
        try:
            agents = await runtime().agents.list()
        except DustError as exc:
            _count("list_agents", "upstream_error")
            raise _tool_error(exc) from None
        _count("list_agents", "ok")
        if query:
            needle = query.strip().lower()
            agents = [
                a for a in agents if needle in a.name.lower() or needle in (a.description or "").lower()
            ]
        listing: dict[str, Any] = {
            "agents": [{"sId": a.s_id, "name": a.name, "description": a.description or ""} for a in agents],
            "count": len(agents),
        }
        if demo:
            listing["demo"] = DEMO_NOTE
        return listing

    async def _ask(
        ctx: Context,
        agent: str,
        message: str,
        conversation: str | None,
        new_conversation: bool,
        files: list[str] | None,
    ) -> CallToolResult:
        rt = runtime()
        sequence = 0
        # Resolved once: `ctx.report_progress` looks the session up through pydantic's private
        # attributes on every call, 5% of the bridge's CPU at 200 streaming answers.
        session: ServerSession = ctx.session

        async def progress(text: str) -> None:
            nonlocal sequence
            sequence += 1
            await session.report_progress(sequence, None, text)

        principal = principal_of(ctx)
        try:
            async with rt.limiter.answer_slot(principal):
                answer = await rt.conversations.ask(
                    principal=principal,
                    session_key=session_key(ctx, rt),
                    agent_ref=agent,
                    message=message,
                    conversation=conversation,
                    new_conversation=new_conversation,
                    files=files,
                    progress=progress,
                )
        except BridgeError as exc:
            audit_event("tool_call", tool="ask_agent", principal=principal, agent=agent, outcome=exc.code)
            rt.metrics.tool_calls.labels(tool="ask_agent", outcome=exc.code).inc()
            raise _tool_error(exc) from None
        rt.metrics.tool_calls.labels(tool="ask_agent", outcome="ok").inc()
        audit_event(
            "tool_call",
            tool="ask_agent",
            principal=principal,
            agent=answer.agent.s_id,
            conversation=answer.dust_conversation_id,
            continued=answer.continued,
            files=len(files or []),
            outcome="ok",
        )
        return _answer_result(answer)

    @mcp.tool(
        annotations=ToolAnnotations(title="Ask a Dust agent", read_only_hint=False, open_world_hint=True),
    )
    async def ask_agent(
        agent: Annotated[str, Field(description="Agent name (case-insensitive) or sId, from list_agents")],
        message: Annotated[str, Field(description="Your message to the agent")],
        ctx: Context,
        conversation: Annotated[str | None, Field(description=_CONVERSATION_ARG)] = None,
        new_conversation: Annotated[
            bool, Field(description="Start a fresh conversation even if this session has one with the agent")
        ] = False,
        files: Annotated[list[str] | None, Field(description=_FILES_ARG)] = None,
    ) -> Annotated[CallToolResult, AskAgentResult]:
        """Ask a Dust agent and stream its answer.

        The answer arrives as progress notifications while Dust generates it, then as the result.
        The result's `conversation` is a handle: pass it back as `conversation` on the next call to
        continue the same Dust conversation (the agent then remembers the earlier turns).
        """
        return await _ask(ctx, agent, message, conversation, new_conversation, files)

    @mcp.tool(
        annotations=ToolAnnotations(title="Read a conversation", read_only_hint=True, open_world_hint=True),
    )
    async def get_conversation(
        conversation: Annotated[str, Field(description="A `conversation` handle returned by ask_agent")],
        ctx: Context,
    ) -> dict[str, Any]:
        """The transcript of a conversation started with ask_agent: every user and agent message so far."""
        try:
            transcript = await runtime().conversations.transcript(principal_of(ctx), conversation)
        except BridgeError as exc:
            _count("get_conversation", exc.code)
            raise _tool_error(exc) from None
        _count("get_conversation", "ok")
        return transcript.as_dict()

    @mcp.tool(
        annotations=ToolAnnotations(
            title="End a conversation", read_only_hint=False, destructive_hint=True, idempotent_hint=False
        ),
    )
    async def end_conversation(
        conversation: Annotated[str, Field(description="A `conversation` handle returned by ask_agent")],
        ctx: Context,
    ) -> str:
        """Forget a conversation handle. The conversation itself stays visible in Dust."""
        try:
            await runtime().conversations.end(principal_of(ctx), conversation)
        except BridgeError as exc:
            _count("end_conversation", exc.code)
            raise _tool_error(exc) from None
        _count("end_conversation", "ok")
        return "Conversation ended; its handle no longer works. The conversation is still in Dust."

    @mcp.tool(
        annotations=ToolAnnotations(
            title="Upload a file for Dust", read_only_hint=False, open_world_hint=True
        ),
    )
    async def upload_file(
        filename: Annotated[str, Field(description="The file's name, with its extension (e.g. report.pdf)")],
        content_base64: Annotated[
            str, Field(description="The file's bytes, base64-encoded (small files only)")
        ],
        ctx: Context,
        mime_type: Annotated[str | None, Field(description="The file's MIME type, if known")] = None,
    ) -> dict[str, Any]:
        """Upload a small file (a few MB) so a Dust agent can read it.

        Pass the returned `uri` in ask_agent's `files` to attach it to a message. The file is
        type-checked and virus-scanned before it reaches Dust. Larger files go through the bridge's
        HTTP endpoint POST /v1/uploads (multipart, part `file`), which returns the same record.
        """
        try:
            data = base64.b64decode("".join(content_base64.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ToolError("content_base64 is not valid base64") from None
        try:
            record = await runtime().uploads.ingest_bytes(
                owner=principal_of(ctx), filename=filename, declared_type=mime_type, data=data
            )
        except BridgeError as exc:
            _count("upload_file", exc.code)
            raise _tool_error(exc) from None
        _count("upload_file", "ok")
        return upload_json(record)

    @mcp.resource(
        "bridge://uploads/{upload_id}",
        name="upload",
        title="Uploaded file",
        description="An uploaded file's metadata: name, size, sha256, type, scan verdict, Dust file id",
        mime_type="application/json",
    )
    async def upload_resource(upload_id: str, ctx: Context) -> str:
        try:
            record = await runtime().uploads.get(principal_of(ctx), upload_id)
        except BridgeError as exc:
            raise ResourceError(str(exc)) from None
        if record is None:
            raise ResourceError(f"unknown or expired upload {upload_id}")
        return json.dumps(upload_json(record))

    for reference in agent_tools or []:
        _add_agent_tool(mcp, reference, _ask)

    @mcp.resource(
        "dust://agents/{s_id}",
        name="agent-card",
        title="Dust agent card",
        description="An agent's card: sId, name, description, scope",
        mime_type="application/json",
    )
    async def agent_card(s_id: str) -> str:
        try:
            agent = await runtime().agents.resolve(s_id)
        except BridgeError as exc:
            raise ResourceError(exc.for_user()) from None
        return json.dumps(
            {
                "sId": agent.s_id,
                "name": agent.name,
                "description": agent.description,
                "scope": agent.scope,
                "status": agent.status,
                "pictureUrl": agent.picture_url,
            }
        )

    @mcp.resource(
        "dust://conversations/{handle}",
        name="conversation",
        title="Conversation transcript",
        description="The transcript of one of your conversations",
        mime_type="application/json",
    )
    async def conversation_resource(handle: str, ctx: Context) -> str:
        try:
            transcript = await runtime().conversations.transcript(principal_of(ctx), handle)
        except BridgeError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(transcript.as_dict())

    @mcp.prompt(name="chat_with_agent", title="Chat with a Dust agent")
    def chat_with_agent(agent: str, topic: str = "") -> list[Message]:
        """Start a chat with one Dust agent, keeping the same conversation across turns."""
        about = f" about: {topic}" if topic else ""
        return [
            UserMessage(
                f"I want to chat with the Dust agent {agent!r}{about}. Use the ask_agent tool with"
                f" agent={agent!r} for each of my messages, and always pass the `conversation` value from the"
                " previous ask_agent result so the agent remembers our chat. Show me the agent's answers."
            )
        ]

    return mcp


def _add_agent_tool(mcp: BridgeMCPServer, reference: str, ask: Any) -> None:
    """Register `ask_<slug>` for one allow-listed agent (BRIDGE_AGENT_TOOLS)."""

    async def ask_this_agent(
        message: Annotated[str, Field(description="Your message to the agent")],
        ctx: Context,
        conversation: Annotated[str | None, Field(description=_CONVERSATION_ARG)] = None,
        new_conversation: bool = False,
        files: Annotated[list[str] | None, Field(description=_FILES_ARG)] = None,
    ) -> Annotated[CallToolResult, AskAgentResult]:
        result: CallToolResult = await ask(ctx, reference, message, conversation, new_conversation, files)
        return result

    mcp.add_tool(
        ask_this_agent,
        name=f"ask_{_slug(reference)}",
        title=f"Ask the Dust agent {reference}",
        description=(
            f"Ask the Dust agent {reference!r} and stream its answer. Pass the result's `conversation`"
            " back as `conversation` to continue the same chat."
        ),
        annotations=ToolAnnotations(read_only_hint=False, open_world_hint=True),
    )


def _answer_result(answer: Answer) -> CallToolResult:
    footer = (
        f"[conversation: {answer.handle}] Pass this value as `conversation` to continue this chat with"
        f" {answer.agent.name}."
    )
    if answer.unremembered is not None:
        where = answer.url or f"Dust conversation {answer.dust_conversation_id}"
        footer = (
            f"[conversation not remembered: {answer.unremembered}. This chat cannot be continued from"
            f" here; start a new conversation next time. It stays in Dust: {where}]"
        )
    return CallToolResult(
        content=[TextContent(type="text", text=answer.text), TextContent(type="text", text=footer)],
        structured_content=answer.structured(),
    )
