"""Serve the bridge's fixed MCP listings (tools, prompts, resource templates) from a cache.

The bridge registers every tool, prompt and resource template when it builds its MCP server and
never changes them while it runs, so their listings are the same for every caller of a protocol
version. The MCP SDK nevertheless rebuilds each listing per request and validates and dumps it
twice on the way out, a fifth of the CPU of a `tools/list` (docs/performance.md), the request
clients send most. This SDK server middleware keeps the finished wire result (already shaped and
stamped for its protocol version by the SDK) and answers later requests with it, short-circuiting
the chain the way the SDK documents for middleware.

`resources/list` is not cached: it includes the caller's own conversations and uploads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext

FIXED_LISTINGS = frozenset({"tools/list", "prompts/list", "resources/templates/list"})


class FixedListingCache(ServerMiddleware[Any]):
    """SDK server middleware answering `FIXED_LISTINGS` from the first result per protocol version."""

    def __init__(self) -> None:
        self._results: dict[tuple[str, str], dict[str, Any]] = {}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Return the cached listing, or compute, keep and return it."""
        if ctx.method not in FIXED_LISTINGS or ctx.request_id is None or not _first_page(ctx.params):
            return await call_next(ctx)
        key = (ctx.method, ctx.protocol_version)
        cached = self._results.get(key)
        if cached is not None:
            # The SDK copies a returned dict before shaping the response, so sharing is safe.
            return cached
        result = await call_next(ctx)
        if isinstance(result, dict):
            self._results[key] = result
        return result


def _first_page(params: Mapping[str, Any] | None) -> bool:
    """A listing request without a cursor (the only page the bridge's listings have)."""
    return params is None or params.get("cursor") is None
