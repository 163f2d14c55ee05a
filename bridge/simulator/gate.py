"""ASGI middleware in front of every `/api` route: request log, injected faults, authentication.

Written as plain ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.simulator.errors import error_response
from bridge.simulator.state import Simulator

# front/lib/auth.ts getBearerToken.
_BEARER = re.compile(r"Bearer\s+([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)  # used with fullmatch
_WORKSPACE_PATH = re.compile(r"^/api/(?:sse/)?v1/w/([^/]+)(?:/|$)")


class ApiGate:
    """Checks, in order: down mode, queued failures, random errors, API key, workspace."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        stats = self.sim.stats  # the stats of the time the request arrived, even if a reset happens meanwhile

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry = {"method": method, "path": path, "status": message["status"]}
                # Dust ignores it, but the history shows it so tests can follow a correlation id.
                if request_id := _header(scope, b"x-request-id"):
                    entry["request_id"] = request_id
                stats.requests.append(entry)
                stats.requests_total += 1
            await send(message)

        rejection = self._reject(scope)
        if rejection is not None:
            await rejection(scope, receive, recording_send)
            return
        await self.app(scope, receive, recording_send)

    def _reject(self, scope: Scope) -> ASGIApp | None:
        sim, options = self.sim, self.sim.options
        if options.down:
            return error_response(503, "service_unavailable", "The service is temporarily unavailable.")
        rule = sim.faults.take(scope["method"], scope["path"])
        if rule is not None:
            return error_response(rule.status, rule.type, rule.message)
        if options.error_rate and sim.rng.random() < options.error_rate:
            return error_response(500, "internal_server_error", "Simulated internal server error.")
        return self._check_auth(scope)

    def _check_auth(self, scope: Scope) -> ASGIApp | None:
        # front-api/middlewares/public_api_auth.ts (publicApiAuth, mounted on every /api/v1/w/:wId
        # and /api/sse/v1/w/:wId route) and getBearerToken / getAPIKey in front/lib/auth.ts.
        options = self.sim.options
        header = _header(scope, b"authorization")
        if not header:  # `if (!authHeader)`: an empty header is no header
            return error_response(
                401, "not_authenticated", "The request does not have valid authentication credentials."
            )
        bearer = _BEARER.fullmatch(header)
        if bearer is None:
            # getBearerToken; the message says "Missing" although the header is only malformed.
            return error_response(401, "malformed_authorization_header_error", "Missing Authorization header")
        token = bearer.group(1)
        if not token.startswith("sk-"):
            # Not an OAuth token Dust can verify either, so it is read as a (malformed) API key.
            return error_response(
                401, "malformed_authorization_header_error", "Malformed Authorization header"
            )
        if options.api_key is not None and token != options.api_key:
            return error_response(
                401, "invalid_api_key_error", "The API key provided is invalid or disabled."
            )
        workspace = _WORKSPACE_PATH.match(scope["path"])
        if workspace is not None and workspace.group(1) != options.workspace_id:
            # The only workspace there is: another sId is an unknown workspace (validateWorkspaceFromAuth).
            return error_response(404, "workspace_not_found", "The workspace was not found.")
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
