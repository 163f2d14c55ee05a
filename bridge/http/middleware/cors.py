"""CORS for browser clients, only for the origins in BRIDGE_CORS_ORIGINS (Starlette's middleware).

It runs before the key check, so preflights are answered before any key is asked for (browsers
send none); the headers the MCP transports use are allowed in, and those a client must read
(the session id, the auth challenge, `Retry-After`) are exposed.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

ALLOW_METHODS = ["GET", "POST", "DELETE", "OPTIONS"]
ALLOW_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Accept",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Mcp-Method",
    "Mcp-Name",
    "Last-Event-ID",
]
EXPOSE_HEADERS = ["Mcp-Session-Id", "WWW-Authenticate", "Retry-After"]
MAX_AGE_SECONDS = 600


def cors_middleware(origins: list[str]) -> Middleware:
    """Starlette's CORS middleware for `origins`, with the bridge's methods and headers."""
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=MAX_AGE_SECONDS,
    )
