"""OAuth resource-server mode: bearer JWTs verified against the issuer's JWKS (PyJWT).

Off unless an issuer and an audience are configured. A valid token's subject becomes the principal
`oauth:<sub>`, so OAuth users and client keys never share conversations by accident.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import jwt
from jwt import PyJWKClient
from mcp.server.auth.provider import AccessToken

logger = logging.getLogger(__name__)

# Asymmetric algorithms only: a JWKS publishes public keys, and "none"/HMAC must never be accepted.
# What AccessToken.token holds: the bearer token itself is never kept past verification.
_NOT_KEPT = "<not kept>"
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


@dataclass(frozen=True)
class OAuthSettings:
    """Who issues the tokens and who they must be for."""

    issuer: str
    audience: str
    jwks_url: str
    resource_url: str  # this server's MCP endpoint, as clients see it (RFC 9728 `resource`)


class JwtVerifier:
    """The SDK's `TokenVerifier` for JWTs signed by the issuer's keys."""

    def __init__(self, settings: OAuthSettings) -> None:
        self._settings = settings
        # PyJWKClient caches the key set and refetches on an unknown `kid`; its fetch blocks, so it
        # runs in a worker thread.
        self._keys = PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=600, timeout=5)

    async def verify_token(self, token: str) -> AccessToken | None:
        """An AccessToken for a valid token (signature, issuer, audience, expiry), else None."""
        try:
            key = await anyio.to_thread.run_sync(self._keys.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            logger.info("bearer JWT refused: %s", type(exc).__name__)
            return None
        subject = str(claims["sub"])
        scope = claims.get("scope")
        return AccessToken(
            token=_NOT_KEPT,
            client_id=f"oauth:{subject}",
            scopes=scope.split() if isinstance(scope, str) else [],
            expires_at=int(claims["exp"]),
            resource=self._settings.resource_url,
            subject=subject,
            claims={"iss": claims.get("iss")},
        )


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: worth handing to the JWT verifier rather than the key table."""
    return token.count(".") == 2 and not token.startswith("dmb_")
