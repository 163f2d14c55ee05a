"""What bridge/mcp/internals.py relies on in the MCP SDK and in uvicorn, one test per use.

Each fails with a message naming the private attribute when an SDK or uvicorn release removes or
changes it: adapt bridge/mcp/internals.py (and only it) then.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, Resource
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from bridge.mcp.endpoint import McpEndpoint
from bridge.mcp.internals import (
    HookedMCPServer,
    json_listing_manager,
    serve_without_signals,
)
from tests.mcp.support import endpoint_of

SCOPED: ContextVar[str | None] = ContextVar("scoped", default=None)
SDK_LOGGER = "mcp.server.mcpserver.server"


class Recording(HookedMCPServer):
    """A hooked server that records its scopes and lists one extra resource."""

    def __init__(self) -> None:
        super().__init__("t")
        self.scoped: list[str] = []

        @self.tool()
        async def inside() -> str:
            """Which request scope the tool runs in."""
            return SCOPED.get() or "none"

        @self.tool()
        async def fails() -> str:
            """A tool that fails."""
            raise ToolError("nope")

        @self.resource("test://scope")
        async def scope_resource() -> str:
            return SCOPED.get() or "none"

        @self.prompt()
        def greet(name: str) -> str:
            """A prompt with a required argument."""
            return f"hello {name}"

    def request_scope(self, ctx: ServerRequestContext[Any]) -> contextlib.AbstractContextManager[None]:
        return self._scope(ctx.method)

    @contextlib.contextmanager
    def _scope(self, method: str) -> Iterator[None]:
        self.scoped.append(method)
        token = SCOPED.set(method)
        try:
            yield
        finally:
            SCOPED.reset(token)

    async def resource_listing(self, ctx: ServerRequestContext[Any]) -> list[Resource]:
        return [*await self.list_resources(), Resource(uri="test://listed", name=SCOPED.get() or "none")]


def sdk_handler(name: str) -> None:
    """Fail clearly unless `MCPServer.<name>` is still an async (self, ctx, params) method."""
    method = getattr(MCPServer, name, None)
    assert inspect.iscoroutinefunction(method), (
        f"mcp.server.MCPServer.{name} is gone or no longer a coroutine method: HookedMCPServer"
        " (bridge/mcp/internals.py) overrides it"
    )
    params = list(inspect.signature(method).parameters)
    assert params == ["self", "ctx", "params"], (
        f"mcp.server.MCPServer.{name} now takes {params}, not (self, ctx, params): adapt HookedMCPServer"
    )


class SdkLog(logging.Handler):
    """The SDK server's log records, each with the request scope it was written in."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.getMessage(), SCOPED.get()))


@contextlib.contextmanager
def sdk_log() -> Iterator[SdkLog]:
    handler = SdkLog()
    logger = logging.getLogger(SDK_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_tool_calls_run_in_the_request_scope_through_handle_call_tool() -> None:
    sdk_handler("_handle_call_tool")
    server = Recording()
    with sdk_log() as log:
        async with Client(server) as client:
            inside = await client.call_tool("inside", {})
            failed = await client.call_tool("fails", {})
    assert inside.structured_content == {"result": "tools/call"}, (
        "tools/call no longer runs through mcp.server.MCPServer._handle_call_tool: the bridge's tools"
        " would lose the request id and principal of their logs"
    )
    assert failed.is_error
    failure_logs = [scope for message, scope in log.records if "'fails'" in message]
    assert failure_logs == ["tools/call"], (
        f"the SDK no longer logs a failed tool inside mcp.server.MCPServer._handle_call_tool: {log.records}"
    )


async def test_resource_reads_run_in_the_request_scope_through_handle_read_resource() -> None:
    sdk_handler("_handle_read_resource")
    server = Recording()
    async with Client(server) as client:
        read = await client.read_resource("test://scope")
    assert read.contents[0].text == "resources/read", (  # type: ignore[union-attr]
        "resources/read no longer runs through mcp.server.MCPServer._handle_read_resource"
    )


async def test_resource_listing_comes_from_the_hook_through_handle_list_resources() -> None:
    sdk_handler("_handle_list_resources")
    server = Recording()
    async with Client(server) as client:
        listed = await client.list_resources()
    assert [(r.uri, r.name) for r in listed.resources] == [
        ("test://scope", "scope_resource"),
        ("test://listed", "resources/list"),
    ], "resources/list no longer runs through mcp.server.MCPServer._handle_list_resources"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_bad_prompt_requests_are_invalid_params_through_handle_get_prompt(mode: str) -> None:
    sdk_handler("_handle_get_prompt")
    async with Client(Recording(), mode=mode) as client:  # type: ignore[arg-type]
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("nope", {})
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("greet", {})
        greeted = await client.get_prompt("greet", {"name": "you"})
    for error in (unknown.value.error, missing.value.error):
        assert error.code == INVALID_PARAMS, (
            f"a bad prompts/get is {error.code} ({error.message}), not invalid params: has"
            " mcp.server.MCPServer._handle_get_prompt changed how it reports it (a bare ValueError)?"
        )
    assert "nope" in unknown.value.error.message and "name" in missing.value.error.message
    assert "hello you" in str(greeted.messages[0].content)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """`app` on a free loopback port through `serve_without_signals`; its base URL and server."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_without_signals, server)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}", server
        finally:
            server.should_exit = True


async def test_uvicorn_serve_runs_a_server_without_taking_the_signals() -> None:
    serve = getattr(uvicorn.Server, "_serve", None)
    assert inspect.iscoroutinefunction(serve), (
        "uvicorn.Server._serve is gone: the demo's simulator (bridge/runtime.py) is served through it"
        " by serve_without_signals in bridge/mcp/internals.py"
    )

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    async with serving(Starlette(routes=[Route("/", hello)])) as (url, _):
        async with httpx2.AsyncClient() as http:
            answer = await http.get(url)
        during = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    assert answer.text == "hello"
    assert during == before, "uvicorn.Server._serve now installs signal handlers"
    # Stopped through `should_exit` (the context above set it and waited for _serve to return).
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url, timeout=2)


def endpoint_app(server: MCPServer[Any]) -> tuple[Starlette, McpEndpoint]:
    """`/mcp` as the bridge serves it: McpEndpoint over the server's session manager."""
    server.streamable_http_app()
    endpoint = endpoint_of(server)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with endpoint.run():
            yield

    return Starlette(routes=[Route("/mcp", endpoint)], lifespan=lifespan), endpoint


def test_the_json_listing_manager_copies_the_first_managers_settings() -> None:
    server = MCPServer("t")
    server.streamable_http_app(max_request_body_size=12345)
    streaming = server.session_manager
    for attribute in ("app", "security_settings", "max_request_body_size"):
        assert hasattr(streaming, attribute), (
            f"mcp.server.streamable_http_manager.StreamableHTTPSessionManager.{attribute} is gone:"
            " json_listing_manager (bridge/mcp/internals.py) builds the second manager from it"
        )
    listing = json_listing_manager(streaming)
    assert isinstance(listing, StreamableHTTPSessionManager)
    assert listing.app is streaming.app and listing.json_response and not streaming.json_response
    assert listing.security_settings is streaming.security_settings
    assert listing.max_request_body_size == 12345


async def test_two_session_managers_of_one_server_serve_side_by_side() -> None:
    server = MCPServer("t")

    @server.tool()
    async def ping() -> str:
        """Pong."""
        return "pong"

    app, endpoint = endpoint_app(server)
    async with serving(app) as (url, _):
        async with Client(f"{url}/mcp", mode="legacy") as session:
            assert (await session.call_tool("ping", {})).structured_content == {"result": "pong"}
            open_sessions = len(endpoint.sessions)
            async with Client(f"{url}/mcp") as modern:
                assert [tool.name for tool in (await modern.list_tools()).tools] == ["ping"]
        closed = len(endpoint.sessions)
    assert open_sessions == 1
    assert closed == 0
