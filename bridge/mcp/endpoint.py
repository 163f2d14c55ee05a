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
Handshake-era requests always go to the session manager that owns their sessions.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Receive, Scope, Send

from bridge.mcp.internals import json_listing_manager

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
    """ASGI app for `/mcp`: stateless-era listings to a JSON-mode manager, the rest to `streaming`."""

    def __init__(self, streaming: StreamableHTTPSessionManager) -> None:
        self.streaming = streaming
        self.listing = json_listing_manager(streaming)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Run both session managers (the host's lifespan must: mounted apps get none)."""
        async with self.streaming.run(), self.listing.run():
            yield

    def manager_for(self, scope: Scope) -> StreamableHTTPSessionManager:
        """The manager that should serve this request."""
        if scope["method"] != "POST":
            return self.streaming
        version = method = None
        for name, value in scope["headers"]:
            if name == b"mcp-protocol-version":
                version = value
            elif name == b"mcp-method":
                method = value
        if version is None or version in _HANDSHAKE_VERSIONS or method not in LISTING_METHODS:
            return self.streaming
        return self.listing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager_for(scope).handle_request(scope, receive, send)
