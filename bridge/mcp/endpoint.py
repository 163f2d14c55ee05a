"""The `/mcp` endpoint: the SDK's Streamable HTTP session manager, with 2026-07-28 listings in JSON.

The bridge answers `/mcp` with SSE responses, because `ask_agent` streams its answer as progress
notifications and a JSON body would drop them. For a 2026-07-28 request the SDK then runs the
handler as a sibling task next to a disconnect watcher, behind a memory stream, and waits to see
whether it emits anything before it picks JSON or SSE. A listing never emits: its answer goes out
as `application/json` either way, but the task group, the stream and their cancel scopes were a
third of a `tools/list`'s CPU (docs/performance.md). So those methods go to a second session
manager of the same server in JSON mode, which answers them in the request's own task. Only the
2026-07-28 wire carries the method in a header (`Mcp-Method`) that the SDK checks against the
body, so a request whose header names a listing but whose body is a `tools/call` is refused by
the SDK (header mismatch) in either manager; it cannot use this route to lose its progress.
Handshake-era requests (no `MCP-Protocol-Version`, or a handshake version) go to
`SharedSessionManager`, which keeps their sessions in the context store (bridge/mcp/sessions.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Receive, Scope, Send

from bridge.mcp.internals import json_listing_manager
from bridge.mcp.sessions import SharedSessionManager

# Methods whose handlers in this server never send a notification and finish quickly (no Dust
# call, or a cached one): their answer is one JSON body.
LISTING_METHODS: Final = frozenset(
    {
        b"tools/list",
        b"prompts/list",
        b"prompts/get",
        b"resources/list",
        b"resources/templates/list",
        b"completion/complete",
        b"ping",
    }
)
_HANDSHAKE_VERSIONS: Final = frozenset(v.encode("latin-1") for v in HANDSHAKE_PROTOCOL_VERSIONS)


class McpEndpoint:
    """ASGI app for `/mcp`: handshake-era requests to `sessions`, 2026-07-28 listings to a JSON-mode
    manager, other 2026-07-28 requests to `streaming`."""

    def __init__(self, streaming: StreamableHTTPSessionManager, sessions: SharedSessionManager) -> None:
        self.streaming = streaming
        self.sessions = sessions
        self.listing = json_listing_manager(streaming)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Run the session managers (the host's lifespan must: mounted apps get none)."""
        async with self.streaming.run(), self.listing.run(), self.sessions.run():
            yield

    def manager_for(self, scope: Scope) -> StreamableHTTPSessionManager | SharedSessionManager:
        """The manager that should serve this request."""
        version = method = None
        for name, value in scope["headers"]:
            if name == b"mcp-protocol-version":
                version = value
            elif name == b"mcp-method":
                method = value
        if version is None or version in _HANDSHAKE_VERSIONS:
            return self.sessions
        if scope["method"] != "POST" or method not in LISTING_METHODS:
            return self.streaming
        return self.listing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager_for(scope).handle_request(scope, receive, send)
