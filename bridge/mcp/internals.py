"""Every place the bridge relies on a private part of the MCP SDK or of uvicorn, and why.

Nothing else in the bridge touches a private name of either. Each use below has a test in
tests/mcp/test_internals.py that fails, naming the SDK or uvicorn attribute, when a release removes
or changes what the bridge relies on: upgrade, run those tests, and adapt this module alone.

- `HookedMCPServer`: `MCPServer._handle_call_tool`, `_handle_read_resource`, `_handle_list_resources`
  and `_handle_get_prompt`, the SDK's handlers of four methods, overridden.
- `json_listing_manager`: a second `StreamableHTTPSessionManager` for one server, which the SDK says
  not to create.
- `serve_without_signals`: uvicorn's `Server._serve`.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import uvicorn
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    GetPromptRequestParams,
    GetPromptResult,
    InputRequiredResult,
    ListResourcesResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
)


class HookedMCPServer(MCPServer[Any]):
    """`MCPServer` with two hooks, `request_scope` and `resource_listing`, that a subclass overrides.

    The SDK has no public way to run code around a tool call or a resource read in the request's
    own context, nor to list resources per caller: `MCPServer` registers its private `_handle_*`
    methods as the handlers of those methods, so they are overridden here, each delegating to the
    SDK's own handler.
    """

    def request_scope(self, ctx: ServerRequestContext[Any]) -> AbstractContextManager[None]:
        """Entered around `tools/call`, `resources/read` and `resources/list` (default: nothing)."""
        return contextlib.nullcontext()

    async def resource_listing(self, ctx: ServerRequestContext[Any]) -> list[Resource]:
        """The answer to `resources/list` for this request (default: the registered resources)."""
        return await self.list_resources()

    async def resource_reading(self, ctx: ServerRequestContext[Any], uri: str) -> ReadResourceResult | None:
        """The answer to `resources/read` of `uri` when the subclass builds it itself (each content
        with its own MIME type, which a registered template cannot give); None: the SDK's."""
        return None

    async def _handle_call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        """`tools/call` in `request_scope`: the SDK's own log line of a failed tool (written in this
        handler, outside the tool) then carries the request's id and principal too."""
        with self.request_scope(ctx):
            return await super()._handle_call_tool(ctx, params)

    async def _handle_read_resource(
        self, ctx: ServerRequestContext[Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult | InputRequiredResult:
        """`resources/read` in `request_scope`, for the same reason; `resource_reading` first."""
        with self.request_scope(ctx):
            own = await self.resource_reading(ctx, str(params.uri))
            return own if own is not None else await super()._handle_read_resource(ctx, params)

    async def _handle_list_resources(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        """`resources/list` from `resource_listing`: the SDK's handler lists only resources registered
        beforehand and is given no request context, but the bridge lists the caller's own."""
        with self.request_scope(ctx):
            return ListResourcesResult(resources=await self.resource_listing(ctx))

    async def _handle_get_prompt(
        self, ctx: ServerRequestContext[Any], params: GetPromptRequestParams
    ) -> GetPromptResult | InputRequiredResult:
        """`prompts/get` whose bad requests are invalid params: the SDK reports an unknown prompt or a
        missing argument as a bare ValueError, which reaches the client as an internal error
        (-32603) and an ERROR traceback in our log. It is the caller's mistake: invalid params, with
        the SDK's own one-line reason."""
        try:
            return await super()._handle_get_prompt(ctx, params)
        except ValueError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None


def json_listing_manager(streaming: StreamableHTTPSessionManager) -> StreamableHTTPSessionManager:
    """A second session manager for the server of `streaming`, in JSON mode (bridge/mcp/endpoint.py
    says why), with the same transport security and body limit.

    The SDK documents one `StreamableHTTPSessionManager` per application; this one only ever serves
    2026-07-28 requests, which have no session, so the two never share one. It is built from the
    first manager's `app`, `security_settings` and `max_request_body_size` attributes.
    """
    return StreamableHTTPSessionManager(
        app=streaming.app,
        json_response=True,
        security_settings=streaming.security_settings,
        max_request_body_size=streaming.max_request_body_size,
    )


async def serve_without_signals(server: uvicorn.Server) -> None:
    """Run a uvicorn server inside this process without taking its signals.

    `Server._serve` rather than `Server.serve`: the public entry captures SIGINT/SIGTERM, which
    belong to the bridge's own server (the demo's Dust simulator runs beside it); the caller stops
    this one through `server.should_exit`.
    """
    await server._serve()
