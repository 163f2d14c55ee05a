"""Transport safety beside the SDK's: Host/Origin checks on the routes it does not guard, and clear
body caps on the ones it does.

The SDK checks Host and Origin on `/mcp`, `/sse` and `/messages/` only. Every other route that changes
state (today `POST /v1/uploads`) gets the same allow-lists here: a multipart POST is a CORS-"simple"
request, so without this any web page could push files into the user's Dust through a keyless local
bridge (cross-site request forgery) or, after rebinding a name to 127.0.0.1, read the answer too.
Bad Host: 421; bad Origin, or `Sec-Fetch-Site: cross-site` without an Origin: 403 (problem+json).
`BRIDGE_ALLOWED_HOSTS=*` turns the Host check off but never the Origin check; since it also turns
the SDK's checks off, the Origin check then covers the MCP routes too.

Header values are trimmed first (`TrimHeaderValuesMiddleware`): HTTP excludes the whitespace around
a field value from the value (RFC 9110 section 5.5) and h11 strips it, but httptools, the parser the
bridge runs on, keeps trailing whitespace, and the SDK then refuses a 2026-07-28 request whose
`Mcp-Name` carries some (conformance `http-header-validation`); a key with a trailing space would
not match either.

`/mcp` also gets its body cap (the SDK's 4 MiB) answered here, as a JSON-RPC error an MCP client
shows (the SDK's own 413 is a bare text the clients turn into "server error"). `/messages/` gets the
same cap and error from `JsonRpcGuardMiddleware` (bridge/http/middleware/jsonrpc_guard.py), after the key
check, which sends it on the caller's SSE stream: the legacy client waits for its answer there.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.config import Settings
from bridge.http.problems import problem
from bridge.security.audit import audit_event

# Paths the SDK's transports serve (and check Host/Origin on, unless BRIDGE_ALLOWED_HOSTS=*).
MCP_PREFIXES = ("/mcp", "/sse", "/messages")
# Legacy message POSTs are capped by JsonRpcGuardMiddleware, after the key check, so that the
# refusal can be answered on the caller's own SSE stream (bridge/http/middleware/jsonrpc_guard.py).
LEGACY_MESSAGES_PREFIX = "/messages"
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
# The SDK's default for a message; larger files go through POST /v1/uploads (BRIDGE_UPLOAD_MAX_BYTES).
MCP_MAX_BODY_BYTES = DEFAULT_MAX_REQUEST_BODY_SIZE
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# JSON-RPC error codes of the refusals (the server-error range; `data.type` names the cause).
RATE_LIMITED_CODE = -32029
TOO_LARGE_CODE = -32013


def allowed_hosts(settings: Settings) -> list[str] | None:
    """The Host values accepted: loopback plus BRIDGE_ALLOWED_HOSTS; None when `*` turns the check off."""
    if "*" in settings.allowed_hosts:
        return None
    return [*LOOPBACK_HOSTS, *settings.allowed_hosts]


def allowed_origins(settings: Settings) -> list[str]:
    """The Origin values accepted: loopback plus BRIDGE_ALLOWED_ORIGINS and BRIDGE_CORS_ORIGINS."""
    return [*LOOPBACK_ORIGINS, *settings.allowed_origins, *settings.cors_origins]


def matches(value: str, allowed: list[str]) -> bool:
    """The SDK's rule: an exact match, or `base:*` for `base` with any port."""
    if value in allowed:
        return True
    return any(entry.endswith(":*") and value.startswith(entry[:-1]) for entry in allowed)


def jsonrpc_refusal(
    status: int,
    problem_type: str,
    message: str,
    *,
    code: int,
    request_id: str | int | None = None,
    headers: dict[str, str] | None = None,
    **data: Any,
) -> JSONResponse:
    """A refusal on an MCP endpoint: a JSON-RPC error at an HTTP error status.

    MCP clients read a JSON-RPC error from a non-2xx answer only when it is `application/json`
    (the SDK's client turns anything else into a generic "Server returned an error response"),
    so this is what names the cause to the user; `data.type` is the same word as in problem+json.
    """
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": code,
                "message": message,
                "data": {"type": problem_type, "status": status, **data},
            },
        },
        status_code=status,
        headers=headers,
    )


def too_large_refusal(limit: int, request_id: str | int | None = None) -> JSONResponse:
    """The refusal of an MCP message over `limit` bytes: 413 and a JSON-RPC error naming the way out."""
    return jsonrpc_refusal(
        413,
        "too_large",
        f"request body too large: an MCP message may be at most {limit} bytes"
        f" ({limit // (1024 * 1024)} MiB); send files through POST /v1/uploads"
        " and pass the returned uri in ask_agent's files",
        code=TOO_LARGE_CODE,
        request_id=request_id,
        limit_bytes=limit,
    )


def request_id_of(body: bytes) -> str | int | None:
    """The id of the JSON-RPC request in `body`; None for a notification, a batch or garbage."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if isinstance(message, dict) and "method" in message:
        found = message.get("id")
        if isinstance(found, str | int) and not isinstance(found, bool):
            return found
    return None


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


class TransportGuardMiddleware:
    """Host/Origin allow-lists on state-changing non-MCP routes; body caps on `POST /mcp`."""

    def __init__(self, app: ASGIApp, settings: Settings, mcp_max_body: int = MCP_MAX_BODY_BYTES) -> None:
        self._app = app
        self._hosts = allowed_hosts(settings)
        self._origins = allowed_origins(settings)
        self._mcp_max_body = mcp_max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse what the allow-lists or the body cap refuse; pass everything else on unchanged."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        on_mcp = path.startswith(MCP_PREFIXES)
        if not on_mcp and method not in _SAFE_METHODS:
            refusal = self._check(scope, host=True, fetch_site=True)
        elif on_mcp and self._hosts is None:
            refusal = self._check(scope, host=False, fetch_site=False)  # the SDK checks nothing then
        else:
            refusal = None
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if on_mcp and method == "POST" and not path.startswith(LEGACY_MESSAGES_PREFIX):
            await self._capped(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _check(self, scope: Scope, *, host: bool, fetch_site: bool) -> JSONResponse | None:
        headers = Headers(scope=scope)
        reason: str | None = None
        if host and self._hosts is not None and not matches(headers.get("host", ""), self._hosts):
            reason = "host"
            response = problem(
                421,
                "misdirected_request",
                "this Host is not served here (DNS-rebinding guard): add it to BRIDGE_ALLOWED_HOSTS",
            )
        elif (origin := headers.get("origin")) is not None and not matches(origin, self._origins):
            reason = "origin"
            response = problem(
                403,
                "forbidden_origin",
                "requests from this Origin are refused: add it to BRIDGE_ALLOWED_ORIGINS"
                " (or BRIDGE_CORS_ORIGINS for a browser client)",
            )
        elif fetch_site and origin is None and headers.get("sec-fetch-site") == "cross-site":
            reason = "cross-site"
            response = problem(
                403,
                "forbidden_origin",
                "a cross-site request without an Origin is refused (Sec-Fetch-Site: cross-site)",
            )
        if reason is None:
            return None
        audit_event(
            "transport_refused",
            reason=reason,
            path=scope["path"],
            method=scope["method"],
            client=(scope.get("client") or ("?", 0))[0],
        )
        return response

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body up to the cap (the SDK reads it whole anyway), then replay it to the app."""
        limit = self._mcp_max_body
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        replay: deque[Message] = deque()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                replay.append(message)
                break
            body += message.get("body", b"")
            if len(body) > limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                replay.appendleft({"type": "http.request", "body": bytes(body), "more_body": False})
                break

        async def replayed() -> Message:
            return replay.popleft() if replay else await receive()

        await self._app(scope, replayed, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await too_large_refusal(self._mcp_max_body)(scope, receive, send)
