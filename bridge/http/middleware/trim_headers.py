"""Header values trimmed before anything reads them.

HTTP excludes the whitespace around a field value from the value (RFC 9110 section 5.5) and h11
strips it, but httptools, the parser the bridge runs on, keeps trailing whitespace, and the SDK then
refuses a 2026-07-28 request whose `Mcp-Name` carries some (conformance `http-header-validation`);
a key with a trailing space would not match either.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_OWS = b" \t"


class TrimHeaderValuesMiddleware:
    """Strip the optional whitespace around every request header value, whatever the HTTP parser."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with trimmed header values (the list is rebuilt only when needed)."""
        if scope["type"] == "http":
            headers = scope["headers"]
            if any(value[:1] in _OWS or value[-1:] in _OWS for _, value in headers if value):
                scope["headers"] = [(name, value.strip(_OWS)) for name, value in headers]
        await self._app(scope, receive, send)
