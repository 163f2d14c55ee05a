"""The wiring of the HTTP app: both MCP transports, the plain routes, the middleware in its order,
one lifespan for all of them.

`create_app` is a list of named steps, each a function below. What a route or a middleware does
lives in bridge/http/ (routes in its modules, one module per middleware in bridge/http/middleware/);
this module only decides what goes where, and hands the http layer the values it needs from the
settings and the runtime (it never reads bridge.config or bridge.runtime itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from bridge.config import Settings
from bridge.http.allow_lists import AllowLists
from bridge.http.health import Readiness, healthz
from bridge.http.metrics import metrics_route
from bridge.http.middleware.client_auth import ClientKeyMiddleware
from bridge.http.middleware.cors import cors_middleware
from bridge.http.middleware.forwarded import ForwardedMiddleware
from bridge.http.middleware.http_metrics import HttpMetricsMiddleware
from bridge.http.middleware.jsonrpc_guard import JsonRpcGuardMiddleware
from bridge.http.middleware.rate_limit import RateLimitMiddleware
from bridge.http.middleware.request_context import RequestContextMiddleware
from bridge.http.middleware.transport_guard import TransportGuardMiddleware
from bridge.http.middleware.trim_headers import TrimHeaderValuesMiddleware
from bridge.http.openapi import openapi
from bridge.http.paths import PROTECTED_PREFIXES
from bridge.http.problems import EXCEPTION_HANDLERS
from bridge.http.shutdown import draining, keep_answers_through_shutdown
from bridge.http.sse_sessions import SseSessionTap
from bridge.http.sse_sharing import SseSessionSharing
from bridge.http.status import StatusFacts, status_route
from bridge.http.uploads import upload_route
from bridge.mcp.endpoint import McpEndpoint
from bridge.mcp.server import BridgeMCPServer, build_mcp_server
from bridge.mcp.sessions import SharedSessionManager
from bridge.observability.metrics import Metrics
from bridge.runtime import DEMO_BANNER, Runtime, start_runtime
from bridge.security.auth import parse_keys, principal_of_scope
from bridge.security.oauth import JwtVerifier, OAuthSettings
from bridge.security.proxy_identity import ProxyIdentity, parse_networks


def create_app(settings: Settings) -> Starlette:
    """The bridge as one ASGI app: `/mcp`, `/sse` + `/messages/`, uploads, health, status, metrics."""
    keep_answers_through_shutdown()
    holder = _Holder()
    metrics = Metrics()
    allow = allow_lists(settings)
    mcp = _mcp_transports(settings, holder, allow)
    metrics.sample(metrics.mcp_sessions.labels(transport="streamable-http"), mcp.streamable_sessions)
    oauth = _oauth_settings(settings)
    app = Starlette(
        routes=_routes(settings, holder, mcp, oauth),
        middleware=_middleware(settings, metrics, allow, holder, oauth, mcp),
        lifespan=_lifespan(settings, metrics, holder, mcp),
        # Routes raise BridgeError; this is the one place it becomes problem+json.
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.mcp = mcp.server
    return app


def allow_lists(settings: Settings) -> AllowLists:
    """Host/Origin allow-lists against DNS rebinding, the same for the SDK's transports and for
    `TransportGuardMiddleware` on the other routes: loopback always, plus BRIDGE_ALLOWED_HOSTS and
    BRIDGE_ALLOWED_ORIGINS + BRIDGE_CORS_ORIGINS (`BRIDGE_ALLOWED_HOSTS=*`: no Host check)."""
    return AllowLists.of(settings.allowed_hosts, [*settings.allowed_origins, *settings.cors_origins])


class _Holder:
    """The runtime, set by the lifespan; handlers that run before it exist get a clear error."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None

    def get(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the bridge is not started")
        return self.runtime


@dataclass(frozen=True)
class _McpTransports:
    """The MCP server and the HTTP transports it is served on."""

    server: BridgeMCPServer
    endpoint: McpEndpoint  # `/mcp`, both eras
    sse_routes: list[BaseRoute]  # the legacy `/sse` + `/messages/`
    security: TransportSecuritySettings  # the SDK's Host/Origin checks on them
    # The open legacy SSE streams: recorded by the JSON-RPC guard, answered on by it and the rate
    # limit, shared through the store with the other processes by `sse_sharing`.
    sse_tap: SseSessionTap
    sse_sharing: SseSessionSharing

    def streamable_sessions(self) -> int:
        """Open handshake-era Streamable HTTP sessions (at scrape time, and for /status)."""
        return len(self.endpoint.sessions)


def _mcp_transports(settings: Settings, holder: _Holder, allow: AllowLists) -> _McpTransports:
    server = build_mcp_server(
        holder.get,
        agent_tools=settings.agent_tools,
        demo=settings.demo_active,
        state_keys=settings.request_state_keys,
    )
    security = allow.transport_security()
    # SSE responses, never json_response: a JSON body would drop every progress notification
    # (McpEndpoint answers only the listings in JSON). Called for the session manager it builds;
    # its Starlette app is not mounted, McpEndpoint is the `/mcp` route.
    server.streamable_http_app(
        streamable_http_path="/mcp", json_response=False, transport_security=security, host=settings.host
    )
    streaming = server.session_manager
    sessions = SharedSessionManager(
        streaming.app,
        holder.get,
        security_settings=security,
        max_request_body_size=streaming.max_request_body_size,
    )
    endpoint = McpEndpoint(streaming, sessions)
    sse_app = server.sse_app(
        sse_path="/sse", message_path="/messages/", transport_security=security, host=settings.host
    )
    tap = SseSessionTap()
    sharing = SseSessionSharing(tap, holder.get, lambda: holder.get().instance_id)
    return _McpTransports(
        server=server,
        endpoint=endpoint,
        sse_routes=[_shared_messages(route, sharing) for route in sse_app.routes],
        security=security,
        sse_tap=tap,
        sse_sharing=sharing,
    )


def _shared_messages(route: BaseRoute, sharing: SseSessionSharing) -> BaseRoute:
    """The SDK's `/messages/` mount, behind the forwarding to the process holding the stream."""
    if isinstance(route, Mount) and route.path == "/messages":
        return Mount(route.path, app=sharing.messages_app(route.app))
    return route


def _identities(settings: Settings, oauth: OAuthSettings | None) -> tuple[str, ...]:
    """How callers are told apart, for /status: client keys, OAuth tokens, a trusted proxy's user."""
    named = [("keys", bool(settings.api_keys)), ("oauth", oauth is not None)]
    named.append(("proxy", settings.principal_header is not None))
    return tuple(name for name, on in named if on) or ("local",)


def _oauth_settings(settings: Settings) -> OAuthSettings | None:
    if settings.oauth_issuer is None or settings.oauth_audience is None or settings.public_url is None:
        return None
    return OAuthSettings(
        issuer=settings.oauth_issuer,
        audience=settings.oauth_audience,
        jwks_url=settings.oauth_jwks_url or f"{settings.oauth_issuer}/.well-known/jwks.json",
        resource_url=f"{settings.public_url}/mcp",
    )


def _routes(
    settings: Settings, holder: _Holder, mcp: _McpTransports, oauth: OAuthSettings | None
) -> list[BaseRoute]:
    """The plain HTTP routes (bridge/http/), then the MCP transports, then the OAuth metadata."""
    readiness = Readiness(holder.get)
    facts = StatusFacts(
        client_keys_required=bool(settings.api_keys),
        identities=_identities(settings, oauth),
        streamable_sessions=mcp.streamable_sessions,
        demo_warning=DEMO_BANNER,
        workers=settings.workers or 1,
    )
    metrics_key = settings.metrics_key.get_secret_value() if settings.metrics_key else None
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readiness.readyz, methods=["GET"]),
        Route("/status", status_route(holder.get, readiness, facts), methods=["GET"]),
        Route("/metrics", metrics_route(holder.get, metrics_key), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/uploads", upload_route(holder.get, settings.upload_max_bytes), methods=["POST"]),
        *mcp.sse_routes,
        Route("/mcp", mcp.endpoint),
    ]
    if oauth is not None:
        # RFC 9728 metadata, so OAuth-capable MCP clients find the authorization server themselves.
        routes += create_protected_resource_routes(
            resource_url=AnyHttpUrl(oauth.resource_url), authorization_servers=[AnyHttpUrl(oauth.issuer)]
        )
    return routes


def _middleware(
    settings: Settings,
    metrics: Metrics,
    allow: AllowLists,
    holder: _Holder,
    oauth: OAuthSettings | None,
    mcp: _McpTransports,
) -> list[Middleware]:
    """The middleware, outermost first (a request meets them in this order)."""
    sessions, security = mcp.sse_tap, mcp.security
    # Outermost: the connecting peer written down before X-Forwarded-For replaces it; header values
    # trimmed before anything reads them; every request counted, refused ones included.
    stack = [
        Middleware(ForwardedMiddleware, trusted_proxies=settings.trusted_proxies),
        Middleware(TrimHeaderValuesMiddleware),
        Middleware(HttpMetricsMiddleware, metrics=metrics),
        Middleware(RequestContextMiddleware),
    ]
    if settings.cors_origins:
        # Before the guard and the key check, so preflights are answered before any key is asked
        # for (browsers send none).
        stack.append(cors_middleware(settings.cors_origins))
    # Before the key check: Host/Origin on the non-MCP routes, a clear body cap on /mcp.
    stack.append(Middleware(TransportGuardMiddleware, allow=allow))
    stack += _client_auth(settings, oauth)
    # Inside the key check, so the budget is the principal's (the one local user without keys).
    stack.append(
        Middleware(
            RateLimitMiddleware,
            limiter=lambda: holder.get().limiter,
            protected=PROTECTED_PREFIXES,
            principal_of=principal_of_scope,
            sessions=sessions,
        )
    )
    # Innermost, so the caller is known: what the handshake-era transports would leave unanswered
    # (an oversized /messages/ body, a request id that is neither a string nor an integer) is
    # answered, on the caller's own SSE stream for /messages/.
    stack.append(Middleware(JsonRpcGuardMiddleware, security_settings=security, sessions=sessions))
    return stack


def _client_auth(settings: Settings, oauth: OAuthSettings | None) -> list[Middleware]:
    """The key, JWT and proxy-user check, when client keys, OAuth or an authenticating proxy are
    configured; none otherwise."""
    keys = parse_keys(settings.api_keys)
    proxy = (
        ProxyIdentity(settings.principal_header, parse_networks(settings.principal_proxies))
        if settings.principal_header is not None
        else None
    )
    if not keys and oauth is None and proxy is None:
        return []
    return [
        Middleware(
            ClientKeyMiddleware,
            keys=keys,
            jwt_verifier=JwtVerifier(oauth) if oauth is not None else None,
            resource_metadata_url=_metadata_url(oauth) if oauth is not None else None,
            proxy=proxy,
        )
    ]


def _metadata_url(oauth: OAuthSettings) -> str:
    return str(build_resource_metadata_url(AnyHttpUrl(oauth.resource_url)))


def _lifespan(
    settings: Settings, metrics: Metrics, holder: _Holder, mcp: _McpTransports
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The runtime and the `/mcp` session managers, started with the app and closed with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with start_runtime(settings, metrics) as runtime:
            holder.runtime = runtime
            mcp.sse_sharing.listen()

            async def drain() -> None:
                mcp.endpoint.sessions.drain()
                await mcp.sse_tap.drain()

            try:
                # Mounted sub-apps' lifespans never run: the host must run the session manager.
                async with mcp.endpoint.run(), draining(drain):
                    yield
            finally:
                holder.runtime = None

    return lifespan
