"""The MCP face of the bridge: the SDK's `MCPServer` with the bridge's tools, resources and prompt.

No HTTP details live here; the same server object serves stdio, Streamable HTTP and legacy SSE.
The tools are in tools.py, the resources in resources.py, the prompt in prompts.py; the SDK's
private handlers this server hooks into are in internals.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.request_state import RequestStateSecurity
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, Icon, ReadResourceResult, Resource, ToolAnnotations

from bridge import __version__
from bridge.errors import BridgeError
from bridge.mcp.caller import bound_to_request, principal_of
from bridge.mcp.cancellations import CancelReasons
from bridge.mcp.internals import HookedMCPServer
from bridge.mcp.listing_cache import FixedListingCache
from bridge.mcp.prompts import register_prompts
from bridge.mcp.resources import (
    FILE_URI_PREFIX,
    generated_file_contents,
    listed_resources,
    register_resources,
)
from bridge.mcp.services import ServicesProvider
from bridge.mcp.tools import DEMO_NOTE, register_tools

INSTRUCTIONS = """\
This server connects you to the agents of a Dust (dust.tt) workspace.
1. Call list_agents to see the agents (name, sId, description).
2. Call ask_agent(agent, message) to ask one; the answer streams in as progress and the result
   holds the full answer and a `conversation` handle.
3. To continue the same chat, call ask_agent again with conversation=<that handle>. Without it a
   new Dust conversation starts (handshake-era clients also continue their last chat per agent;
   pass new_conversation=true to start afresh).
4. An agent may stop to ask the user: the result then says status "waiting_for_user" and lists
   what it waits for. Ask the user, then call approve_action or answer_question as they decide.
5. A long answer returns status "working" before your client gives up; call
   wait_for_answer(conversation) to get the rest (nothing is lost meanwhile).
get_conversation(conversation) returns the transcript; end_conversation(conversation) forgets it.
To give an agent a file, upload it (upload_file for small files, or the bridge's POST /v1/uploads)
and pass the returned uri in ask_agent's `files`.
"""


class BridgeMCPServer(HookedMCPServer):
    """`MCPServer` whose resource listing also shows the caller's own conversations, uploads and
    agents, and whose handlers run with the request's id and principal bound for the logs."""

    def __init__(
        self,
        services: ServicesProvider,
        *,
        demo: bool = False,
        state_keys: list[str] | None = None,
        notice: str | None = None,
    ) -> None:
        self.cancel_reasons = CancelReasons()
        # Clients show the instructions to the model, so a demo (or a bridge that cannot work, with
        # `notice` saying why) says so before any answer does.
        notes = [note for note in (notice, DEMO_NOTE if demo else None) if note]
        super().__init__(
            "dust-mcp-bridge",
            title="Dust agents",
            version=__version__,
            instructions="\n".join([*notes, INSTRUCTIONS]),
            website_url="https://dust.tt",
            middleware=[FixedListingCache(), self.cancel_reasons],
            # Sealed with keys every replica shares, bound to the principal: a retry of an
            # InputRequiredResult may reach any replica, and only its caller may use it.
            request_state_security=RequestStateSecurity(keys=state_keys, bind_principal=principal_of)
            if state_keys
            else RequestStateSecurity.ephemeral(),
        )
        self._services = services

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

    def request_scope(self, ctx: ServerRequestContext[Any]) -> AbstractContextManager[None]:
        """The request's id and principal, bound for the logs and Dust calls of its handler."""
        return bound_to_request(ctx)

    async def resource_reading(self, ctx: ServerRequestContext[Any], uri: str) -> ReadResourceResult | None:
        """A file an agent made, with its own type; anything else as the SDK reads it."""
        if not uri.startswith(FILE_URI_PREFIX):
            return None
        try:
            return await generated_file_contents(self._services(), principal_of(ctx), uri)
        except ResourceError as exc:
            # As the SDK reports a resource that failed to read.
            raise MCPError(code=INTERNAL_ERROR, message=str(exc), data={"uri": uri}) from None

    async def resource_listing(self, ctx: ServerRequestContext[Any]) -> list[Resource]:
        """The registered resources, then the caller's conversations and uploads and the agents."""
        registered = await self.list_resources()
        try:
            services = self._services()
        except BridgeError:
            return registered  # the bridge could not start: its tools say why
        return [*registered, *await listed_resources(services, principal_of(ctx))]


def build_mcp_server(
    services: ServicesProvider,
    *,
    agent_tools: list[str] | None = None,
    demo: bool = False,
    state_keys: list[str] | None = None,
    notice: str | None = None,
) -> BridgeMCPServer:
    """The bridge's MCP server; `services()` returns the live runtime once the lifespan has started.
    `demo` says so in the instructions and in every agent listing; `agent_tools` adds an
    `ask_<agent>` tool per agent named; `state_keys` seal the 2026-07-28 request state
    (Settings.request_state_keys; none: a key of this process only); `notice` goes first in the
    instructions."""
    mcp = BridgeMCPServer(services, demo=demo, state_keys=state_keys, notice=notice)
    register_tools(mcp, services, agent_tools=agent_tools or [], demo=demo)
    register_resources(mcp, services)
    register_prompts(mcp)
    return mcp
