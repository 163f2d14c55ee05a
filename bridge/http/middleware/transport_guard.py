"""Transport safety beside the SDK's: Host/Origin checks on the routes it does not guard, and clear
body caps on the ones it does.

The SDK checks Host and Origin on `/mcp`, `/sse` and `/messages/` only. Every other route that changes
state (today `POST /v1/uploads`) gets the same allow-lists here (bridge/http/allow_lists.py): a
multipart POST is a CORS-"simple" request, so without this any web page could push files into the
user's Dust through a keyless local bridge (cross-site request forgery) or, after rebinding a name
to 127.0.0.1, read the answer too. Bad Host: 421; bad Origin, or `Sec-Fetch-Site: cross-site`
without an Origin: 403 (problem+json). `BRIDGE_ALLOWED_HOSTS=*` turns the Host check off but never
the Origin check; since it also turns the SDK's checks off, the Origin check then covers the MCP
routes too.

`/mcp` also gets its body cap (the SDK's 4 MiB) answered here, as a JSON-RPC error an MCP client
shows (the SDK's own 413 is a bare text the clients turn into "server error"). `/messages/` gets the
same cap and error from `JsonRpcGuardMiddleware` (bridge/http/middleware/jsonrpc_guard.py), after the key
check, which sends it on the caller's SSE stream: the legacy client waits for its answer there.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.http.allow_lists import AllowLists, matches
from bridge.http.bodies import read_capped_body
from bridge.http.jsonrpc import MCP_MAX_BODY_BYTES, too_large_refusal
from bridge.http.paths import LEGACY_MESSAGES_PREFIX, MCP_PREFIXES
from bridge.http.problems import problem
from bridge.security.audit import audit_event

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TransportGuardMiddleware:
    """Host/Origin allow-lists on state-changing non-MCP routes; body caps on `POST /mcp`."""

    def __init__(self, app: ASGIApp, allow: AllowLists, mcp_max_body: int = MCP_MAX_BODY_BYTES) -> None:
        self._app = app
        self._hosts = allow.hosts
        self._origins = allow.origins
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
        declared = Headers(scope=scope).get("content-length", "").encode("latin-1")
        body = await read_capped_body(receive, self._mcp_max_body, declared)
        if body.over_cap:
            await self._too_large(scope, receive, send)
            return
        await self._app(scope, body.receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await too_large_refusal(self._mcp_max_body)(scope, receive, send)
