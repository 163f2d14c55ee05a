"""Helpers of the MCP face's end-to-end tests: asking an agent, reading its answer and progress."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.types import CallToolResult, TextContent

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
