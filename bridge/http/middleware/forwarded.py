"""The connecting peer, kept; then X-Forwarded-For/-Proto, believed only from BRIDGE_TRUSTED_PROXIES.

uvicorn's proxy-header handling replaces `scope["client"]` with the forwarded client, and the
address that actually connected is then lost. The bridge needs it: an authenticating proxy's user
header is believed only from the proxy itself (bridge/security/proxy_identity.py), whatever a
forwarded address says. So the app does the forwarding itself, outermost, with uvicorn's own
middleware, after writing the peer down (`peer_of`); the server runs with proxy headers off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from bridge.security.proxy_identity import parse_networks

_PEER = "peer"


class ForwardedMiddleware:
    """Record the connecting address (`peer_of`), then let uvicorn's ProxyHeadersMiddleware rewrite
    the client address and scheme from X-Forwarded-For/-Proto when that peer is a trusted proxy."""

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str] = ()) -> None:
        # Normalised (10.0.0.1/8 -> 10.0.0.0/8): uvicorn takes a network with host bits for a name.
        trusted = [str(network) for network in parse_networks(trusted_proxies)]
        self._inner = _forwarding(app, trusted) if trusted else app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Write the peer into the request's state, then forward as configured."""
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope.setdefault("state", {})[_PEER] = client[0] if client else None
        await self._inner(scope, receive, send)


def peer_of(scope: Scope) -> str | None:
    """The address that connected to the bridge (a proxy's own, not the client it forwards for)."""
    # Never `scope["client"]`, which may already be a forwarded address: without the record, no peer.
    peer = (scope.get("state") or {}).get(_PEER)
    return peer if isinstance(peer, str) else None


def _forwarding(app: ASGIApp, trusted: list[str]) -> ASGIApp:
    """uvicorn's middleware around `app` (both are ASGI 3; their type names differ)."""
    middleware: Any = ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted)
    return cast(ASGIApp, middleware)
