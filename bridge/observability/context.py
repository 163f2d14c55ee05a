"""Who and which request a log line (or a Dust call) belongs to, carried in context variables.

The HTTP middleware binds the request id, authentication binds the principal, and the MCP server
binds both again inside each handler, because the SDK runs handshake-era sessions in tasks that
were started by the session's first request and would otherwise carry that request's values.
"""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
PRINCIPAL: ContextVar[str | None] = ContextVar("principal", default=None)
