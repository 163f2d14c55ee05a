"""Who is calling: a client key, a JWT (OAuth mode) or an authenticating proxy's user, on the MCP and
upload routes.

The key parsing, hashing and constant-time matching live in bridge/security/auth.py, the JWT
verification in bridge/security/oauth.py, the proxy's user header in bridge/security/proxy_identity.py;
this is where a request meets them, in this order of precedence:

1. With client keys or OAuth configured, a request that presents a key or a bearer token is decided
   by it alone: a known key or a valid token names the principal, anything else is refused.
2. A request from the authenticating proxy (BRIDGE_PRINCIPAL_HEADER, from a BRIDGE_PRINCIPAL_PROXIES
   peer) that presents neither is the user the proxy names, `proxy:<user>`; no usable user: refused.
3. Anything else needs a key when keys or OAuth are configured, and is the local user otherwise.

The proxy's header from any other peer is never believed: it is ignored, logged and audited
(`spoofed_identity_header`). A refusal is 401 problem+json with a `WWW-Authenticate` challenge (the
same answer for a missing and a wrong key: nothing that helps guessing); a request that passes
carries its principal on (`scope["user"]`, the log context) to everything inside.
"""

from __future__ import annotations

import logging
import time

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.http.middleware.forwarded import peer_of
from bridge.http.paths import PROTECTED_PREFIXES
from bridge.http.problems import problem
from bridge.observability.context import PRINCIPAL
from bridge.security.audit import audit_event
from bridge.security.auth import ClientKey, match_key, presented_key, user_for
from bridge.security.oauth import JwtVerifier, looks_like_jwt
from bridge.security.proxy_identity import ProxyIdentity, ProxyUserRefused, claimed_user

logger = logging.getLogger(__name__)

# A proxy header from an untrusted peer is audited every time, but warned about at most this often.
_SPOOF_WARN_SECONDS = 60.0


class ClientKeyMiddleware:
    """Require a client key, a valid JWT or the authenticating proxy's user on the MCP and upload
    routes, as configured; attach the principal to the request."""

    def __init__(
        self,
        app: ASGIApp,
        keys: list[ClientKey],
        jwt_verifier: JwtVerifier | None = None,
        resource_metadata_url: str | None = None,
        proxy: ProxyIdentity | None = None,
    ) -> None:
        self._app = app
        self._keys = keys
        self._jwt = jwt_verifier
        self._proxy = proxy
        # Without keys or OAuth, what a request presents as a key means nothing (as without this check).
        self._credentials = bool(keys) or jwt_verifier is not None
        self._challenge = 'Bearer realm="dust-mcp-bridge"' + (
            f', resource_metadata="{resource_metadata_url}"' if resource_metadata_url else ""
        )
        self._warned_at: float | None = None
        self._unwarned = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate HTTP requests to protected paths; pass everything else through."""
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self._app(scope, receive, send)
            return
        presented = presented_key(scope) if self._credentials else None
        from_proxy = self._from_proxy(scope)
        if presented is not None or (self._credentials and not from_proxy):
            await self._by_credential(scope, receive, send, presented)
        elif from_proxy and self._proxy is not None:
            await self._by_proxy(self._proxy, scope, receive, send)
        else:
            await self._app(scope, receive, send)  # no keys, not from the proxy: the local user

    async def _by_credential(self, scope: Scope, receive: Receive, send: Send, presented: str | None) -> None:
        client = _client(scope)
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
        await self._as(key.name, scope, receive, send)

    async def _by_proxy(self, proxy: ProxyIdentity, scope: Scope, receive: Receive, send: Send) -> None:
        where = {
            "path": scope["path"],
            "client": _client(scope),
            "peer": peer_of(scope),
            "header": proxy.header,
        }
        try:
            principal = proxy.principal(proxy.values(scope))
        except ProxyUserRefused as exc:
            audit_event("auth_failure", reason=exc.reason, via="proxy_header", **where)
            response = problem(401, "unauthorized", str(exc), headers={"WWW-Authenticate": self._challenge})
            await response(scope, receive, send)
            return
        audit_event("auth_success", principal=principal, via="proxy_header", **where)
        await self._as(principal, scope, receive, send)

    async def _as(self, principal: str, scope: Scope, receive: Receive, send: Send) -> None:
        PRINCIPAL.set(principal)
        scope["user"] = user_for(principal)
        scope["auth"] = AuthCredentials([])
        await self._app(scope, receive, send)

    def _from_proxy(self, scope: Scope) -> bool:
        """Whether the request comes from the authenticating proxy; the proxy's header from any other
        peer is ignored, and audited and warned about."""
        if self._proxy is None:
            return False
        peer = peer_of(scope)
        if self._proxy.trusts(peer):
            return True
        values = self._proxy.values(scope)
        if values:
            self._spoofed(self._proxy, scope, peer, values)
        return False

    def _spoofed(self, proxy: ProxyIdentity, scope: Scope, peer: str | None, values: list[bytes]) -> None:
        # The claimed user is an identity, not a secret, and names whom someone tried to be; it is
        # recorded only when well-formed (bounded, printable), never as the caller wrote it otherwise.
        audit_event(
            "spoofed_identity_header",
            level=logging.WARNING,
            header=proxy.header,
            peer=peer,
            client=_client(scope),
            path=scope["path"],
            claimed=claimed_user(values),
        )
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < _SPOOF_WARN_SECONDS:
            self._unwarned += 1
            return
        also = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
        logger.warning(
            "ignored the %s header of a request from %s, which is not in BRIDGE_PRINCIPAL_PROXIES: only"
            " the authenticating proxy may name the user (is the bridge reachable around the proxy?)%s",
            proxy.header,
            peer or "an unknown address",
            also,
        )
        self._warned_at, self._unwarned = now, 0

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


def _client(scope: Scope) -> str:
    """The client's address as the audit log records it (the forwarded one behind a trusted proxy)."""
    return str((scope.get("client") or ("?", 0))[0])
