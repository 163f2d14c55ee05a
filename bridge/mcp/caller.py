"""Who an MCP request comes from: its principal, its session, the HTTP request that carried it.

stdio has no HTTP request (`request` is None): its caller is the local user and its session is the
process. Over HTTP the client-key middleware has put the principal in the ASGI scope and the
request-context middleware the request id in the scope's state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context

from bridge.mcp.services import Services
from bridge.observability.context import PRINCIPAL, REQUEST_ID
from bridge.security.auth import principal_of_request


def principal_of(ctx: Context | ServerRequestContext[Any, Any]) -> str:
    """The principal an MCP request acts for: its client key's name, or the local user."""
    request_context = ctx.request_context if isinstance(ctx, Context) else ctx
    return principal_of_request(request_context.request)


def session_key(ctx: Context, services: Services) -> str | None:
    """Who to remember the last conversation per agent for, or None for sessionless (2026) requests.

    stdio is one local session per process; Streamable HTTP handshake-era requests carry
    `Mcp-Session-Id`; legacy SSE posts carry `?session_id=`.
    """
    request = ctx.request_context.request
    if request is None:
        return f"stdio:{services.instance_id}"
    return session_of_request(request)


def session_of_request(request: Any) -> str | None:
    """The handshake-era session an HTTP request belongs to ("http:<id>" or "sse:<id>"), if any."""
    headers = getattr(request, "headers", None)
    session_id = headers.get("mcp-session-id") if headers is not None else None
    if session_id:
        return f"http:{session_id}"
    query = getattr(request, "query_params", None)
    sse_id = query.get("session_id") if query is not None else None
    if sse_id:
        return f"sse:{sse_id}"
    return None


@contextlib.contextmanager
def bound_to_request(ctx: ServerRequestContext[Any, Any]) -> Iterator[None]:
    """Bind the HTTP request id and principal of this MCP request for its logs and Dust calls.

    Needed inside the MCP handlers: the SDK runs a handshake-era session in a task started by the
    session's first request, which would otherwise carry that request's values.
    """
    scope = getattr(ctx.request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    request_id = state.get("request_id") if isinstance(state, dict) else None
    tokens = (REQUEST_ID.set(request_id), PRINCIPAL.set(principal_of_request(ctx.request)))
    try:
        yield
    finally:
        REQUEST_ID.reset(tokens[0])
        PRINCIPAL.reset(tokens[1])
