"""Helpers of the MCP face's end-to-end tests: asking an agent, reading its answer and progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent

from bridge.mcp.endpoint import McpEndpoint
from bridge.mcp.sessions import SharedSessionManager
from bridge.store.base import ContextStore
from bridge.store.broadcast import Broadcast, LocalBroadcast
from bridge.store.memory import MemoryStore
from tests.helpers import text_of
from tests.procs import Proc

ERAS = ["legacy", "auto"]  # 2025-11-25 handshake with Mcp-Session-Id, and 2026-07-28 stateless


def status(bridge: Proc) -> dict[str, Any]:
    """The bridge's /status body."""
    body: dict[str, Any] = httpx2.get(f"{bridge.url}/status", timeout=5).json()
    return body


def answer_of(result: CallToolResult) -> str:
    """The answer text of a successful ask_agent result."""
    assert not result.is_error, text_of(result)
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


class Progress:
    """Collects progress notifications in arrival order."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.first = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")
        self.first.set()


async def ask(client: Client, progress: Progress | None = None, **arguments: Any) -> CallToolResult:
    """Call ask_agent with `arguments`, collecting its progress in `progress`."""
    return await client.call_tool("ask_agent", arguments, progress_callback=progress)


@dataclass
class InProcessSessions:
    """What `SharedSessionManager` needs, as one process without Redis has it."""

    store: ContextStore = field(default_factory=lambda: MemoryStore(3600))
    broadcast: Broadcast = field(default_factory=LocalBroadcast)
    session_ttl_seconds: int = 1800


def endpoint_of(server: MCPServer[Any], backend: InProcessSessions | None = None) -> McpEndpoint:
    """`/mcp` as the bridge builds it, over `server` (whose Streamable HTTP app must exist)."""
    streaming = server.session_manager
    held = backend or InProcessSessions()
    sessions = SharedSessionManager(
        streaming.app,
        lambda: held,
        security_settings=streaming.security_settings,
        max_request_body_size=streaming.max_request_body_size,
    )
    return McpEndpoint(streaming, sessions)
