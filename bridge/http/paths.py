"""Which paths are which: those the SDK's transports serve, and those that need a client key."""

from __future__ import annotations

# Paths the SDK's transports serve (and check Host/Origin on, unless BRIDGE_ALLOWED_HOSTS=*).
MCP_PREFIXES = ("/mcp", "/sse", "/messages")
# Legacy message POSTs are capped by JsonRpcGuardMiddleware, after the key check, so that the
# refusal can be answered on the caller's own SSE stream (bridge/http/middleware/jsonrpc_guard.py).
LEGACY_MESSAGES_PREFIX = "/messages"
# Paths that need a key; everything else (health, readiness, metrics, status, openapi) stays open.
PROTECTED_PREFIXES = ("/mcp", "/sse", "/messages", "/v1/")
