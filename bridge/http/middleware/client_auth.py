"""Who is calling: a client key (or, in OAuth mode, a JWT) on the MCP and upload routes.

The key parsing, hashing and constant-time matching live in bridge/security/auth.py, the JWT
verification in bridge/security/oauth.py; this is where a request meets them. A request that
presents neither a known key nor a valid token gets 401 problem+json with a `WWW-Authenticate`
challenge (the same answer for a missing and a wrong key: nothing that helps guessing); one that
does carries its principal on (`scope["user"]`, the log context) to everything inside.
"""

from __future__ import annotations

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.http.paths import PROTECTED_PREFIXES
from bridge.http.problems import problem
from bridge.observability.context import PRINCIPAL
from bridge.security.audit import audit_event
from bridge.security.auth import ClientKey, match_key, presented_key, user_for
from bridge.security.oauth import JwtVerifier, looks_like_jwt


class ClientKeyMiddleware:
    """Require a client key (or, in OAuth mode, a valid JWT) on the MCP and upload routes; attach
    the principal to the request."""

    def __init__(
        self,
        app: ASGIApp,
        keys: list[ClientKey],
        jwt_verifier: JwtVerifier | None = None,
        resource_metadata_url: str | None = None,
    ) -> None:
        self._app = app
        self._keys = keys
        self._jwt = jwt_verifier
        self._challenge = 'Bearer realm="dust-mcp-bridge"' + (
            f', resource_metadata="{resource_metadata_url}"' if resource_metadata_url else ""
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate HTTP requests to protected paths; pass everything else through."""
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self._app(scope, receive, send)
            return
        presented = presented_key(scope)
        client = (scope.get("client") or ("?", 0))[0]
        if presented and self._jwt is not None and looks_like_jwt(presented):
            token = await self._jwt.verify_token(presented)
            if token is not None:
                audit_event(
                    "auth_success", principal=token.client_id, path=scope["path"], client=client, via="jwt"
                )
                PRINCIPAL.set(token.client_id)
                scope["user"] = AuthenticatedUser(token)
                scope["auth"] = AuthCredentials(token.scopes)
                await self._app(scope, receive, send)
                return
        key = match_key(presented, self._keys) if presented else None
        if key is None:
            await self._refuse(scope, receive, send, presented=presented, client=client)
            return
        audit_event("auth_success", principal=key.name, path=scope["path"], client=client)
        PRINCIPAL.set(key.name)
        scope["user"] = user_for(key.name)
        scope["auth"] = AuthCredentials([])
        await self._app(scope, receive, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, *, presented: str | None, client: str
    ) -> None:
        audit_event(
            "auth_failure",
            reason="missing key" if presented is None else "unknown key",
            path=scope["path"],
            client=client,
        )
        # The same answer for a missing and a wrong key: nothing that helps guessing.
        response = problem(
            401,
            "unauthorized",
            "a valid client key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": self._challenge},
        )
        await response(scope, receive, send)
