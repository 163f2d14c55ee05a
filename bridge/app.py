"""The Starlette app: both MCP transports, health and status, one lifespan for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import __version__
from bridge.config import Settings
from bridge.dust.errors import DustError
from bridge.http.middleware.jsonrpc_guard import JsonRpcGuardMiddleware
from bridge.http.middleware.transport import (
    TransportGuardMiddleware,
    TrimHeaderValuesMiddleware,
    allowed_hosts,
    allowed_origins,
)
from bridge.http.openapi import openapi_spec
from bridge.http.problems import problem
from bridge.http.uploads import upload_route
from bridge.mcp.endpoint import McpEndpoint
from bridge.mcp.internals import streamable_session_count
from bridge.mcp.server import build_mcp_server
from bridge.observability.metrics import HttpMetricsMiddleware, Metrics, RequestContextMiddleware
from bridge.runtime import DEMO_BANNER, Runtime, start_runtime
from bridge.security.auth import (
    PROTECTED_PREFIXES,
    ClientKeyMiddleware,
    hash_key,
    parse_keys,
    presented_key,
    principal_of_scope,
)
from bridge.security.oauth import JwtVerifier, OAuthSettings
from bridge.security.ratelimit import RateLimitMiddleware
from bridge.store.base import StoreUnavailable
from bridge.uploads.clamav import ScannerUnavailable

logger = logging.getLogger(__name__)

_READY_CHECK_SECONDS = 3.0
_READY_CACHE_SECONDS = 2.0


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host/Origin allow-lists against DNS rebinding for the SDK's transports: loopback always, plus
    the configured ones (the same lists `TransportGuardMiddleware` applies to the other routes).

    `BRIDGE_ALLOWED_HOSTS=*` turns the SDK's checks off on purpose (e.g. behind a proxy that checks
    Host); the guard middleware then still checks Origin on every route.
    """
    hosts = allowed_hosts(settings)
    if hosts is None:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=allowed_origins(settings),
    )


class _Holder:
    """The runtime, set by the lifespan; handlers that run before it exist get a clear error."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.ready_cache: tuple[float, int, dict[str, Any]] | None = None

    def get(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the bridge is not started")
        return self.runtime


async def _check_ready(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    checks: dict[str, str] = {}
    reasons: list[str] = []

    async def store() -> None:
        try:
            with anyio.fail_after(_READY_CHECK_SECONDS):
                await runtime.store.ping()
            checks["store"] = "ok"
        except (StoreUnavailable, TimeoutError) as exc:
            checks["store"] = "unavailable"
            reasons.append(str(exc) if isinstance(exc, StoreUnavailable) else "context store did not answer")

    async def dust() -> None:
        try:
            with anyio.fail_after(_READY_CHECK_SECONDS):
                await runtime.dust.probe()
            checks["dust"] = "ok"
        except DustError as exc:
            checks["dust"] = "unavailable"
            reasons.append(f"Dust: {exc.type}: {exc.message}")
        except TimeoutError:
            checks["dust"] = "unavailable"
            reasons.append("Dust did not answer in time")

    async def scanner() -> None:
        if not runtime.uploads.scan_required:
            checks["scanner"] = "off"
            return
        try:
            with anyio.fail_after(_READY_CHECK_SECONDS):
                await runtime.uploads.ping_scanner()
            checks["scanner"] = "ok"
        except (ScannerUnavailable, TimeoutError):
            checks["scanner"] = "unavailable"
            reasons.append("virus scanner (clamd) is unreachable at CLAMD_URL")

    async with anyio.create_task_group() as tg:
        tg.start_soon(store)
        tg.start_soon(dust)
        tg.start_soon(scanner)
    for dependency, state in checks.items():
        if state != "off":
            runtime.metrics.dependency_up.labels(dependency=dependency).set(1 if state == "ok" else 0)
    if reasons:
        return 503, {"status": "not_ready", "reason": "; ".join(reasons), "checks": checks}
    return 200, {"status": "ready", "checks": checks}


def _last_checks(cache: tuple[float, int, dict[str, Any]] | None) -> dict[str, Any]:
    if cache is None:
        return {"checked": False}
    checked_at, _, body = cache
    return {"checked_seconds_ago": round(time.monotonic() - checked_at, 1), **body.get("checks", {})}


def _process_counts() -> dict[str, int]:
    """Tasks and file descriptors of this process: what a leak would make grow."""
    counts = {"tasks": len(asyncio.all_tasks())}
    with contextlib.suppress(OSError):
        counts["open_fds"] = len(os.listdir("/proc/self/fd"))
    return counts


def _oauth_settings(settings: Settings) -> OAuthSettings | None:
    if settings.oauth_issuer is None or settings.oauth_audience is None or settings.public_url is None:
        return None
    return OAuthSettings(
        issuer=settings.oauth_issuer,
        audience=settings.oauth_audience,
        jwks_url=settings.oauth_jwks_url or f"{settings.oauth_issuer}/.well-known/jwks.json",
        resource_url=f"{settings.public_url}/mcp",
    )


def _metadata_url(oauth: OAuthSettings) -> str:
    return str(build_resource_metadata_url(AnyHttpUrl(oauth.resource_url)))


def create_app(settings: Settings) -> Starlette:
    """The bridge as one ASGI app: `/mcp`, `/sse` + `/messages/`, uploads, health, status, metrics."""
    holder = _Holder()
    metrics_registry = Metrics()
    mcp = build_mcp_server(holder.get, agent_tools=settings.agent_tools, demo=settings.demo_active)
    security = transport_security(settings)
    # SSE responses, never json_response: a JSON body would drop every progress notification
    # (McpEndpoint answers only the listings in JSON). Called for the session manager it builds;
    # its Starlette app is not mounted, McpEndpoint is the `/mcp` route.
    mcp.streamable_http_app(
        streamable_http_path="/mcp", json_response=False, transport_security=security, host=settings.host
    )
    mcp_endpoint = McpEndpoint(mcp.session_manager)
    sse_app = mcp.sse_app(
        sse_path="/sse", message_path="/messages/", transport_security=security, host=settings.host
    )

    # The SDK keeps no public count of its sessions; its session table is read at scrape time.
    def streamable_sessions() -> int:
        return streamable_session_count(mcp.session_manager)

    metrics_registry.mcp_sessions.labels(transport="streamable-http").set_function(streamable_sessions)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        runtime = holder.get()
        now = time.monotonic()
        cached = holder.ready_cache
        if cached is not None and now - cached[0] < _READY_CACHE_SECONDS:
            return JSONResponse(cached[2], status_code=cached[1])
        status, body = await _check_ready(runtime)
        holder.ready_cache = (now, status, body)
        return JSONResponse(body, status_code=status)

    async def status(request: Request) -> JSONResponse:
        runtime = holder.get()
        body: dict[str, Any] = {
            "name": "dust-mcp-bridge",
            "version": __version__,
            "uptime_seconds": round(runtime.uptime_seconds, 1),
            "mode": "demo" if runtime.demo else "dust",
            "dust": {
                "base_url": runtime.dust_base_url,
                "workspace_id": runtime.workspace_id,
                "circuit": runtime.dust.breaker_state,
            },
            "store": runtime.store.kind,
            "client_keys": "required" if runtime.settings.api_keys else "off",
            "transports": ["streamable-http:/mcp", "sse:/sse"],
            "active_streams": runtime.conversations.active_streams,
            "mcp_sessions": {
                "streamable_http": streamable_sessions(),
                "sse": runtime.metrics.sse_sessions,
            },
            "uploads": {
                "scan": "required" if runtime.uploads.scan_required else "off",
                "in_flight": runtime.uploads.in_flight,
            },
            # What the last readiness check found (store, dust, scanner), and how long ago.
            "dependencies": _last_checks(holder.ready_cache),
            "process": _process_counts(),
        }
        if runtime.demo:
            body["warning"] = DEMO_BANNER
        return JSONResponse(body)

    metrics_key = hash_key(settings.metrics_key.get_secret_value()) if settings.metrics_key else None

    async def metrics(request: Request) -> Response:
        if metrics_key is not None:
            presented = presented_key(request.scope)
            if presented is None or not hmac.compare_digest(hash_key(presented), metrics_key):
                return problem(
                    401,
                    "unauthorized",
                    "BRIDGE_METRICS_KEY is set: scrape with Authorization: Bearer <key>",
                    headers={"WWW-Authenticate": 'Bearer realm="dust-mcp-bridge-metrics"'},
                )
        body, content_type = holder.get().metrics.render()
        return Response(body, media_type=content_type)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_spec())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with start_runtime(settings, metrics_registry) as runtime:
            holder.runtime = runtime
            try:
                # Mounted sub-apps' lifespans never run: the host must run the session manager.
                async with mcp_endpoint.run():
                    yield
            finally:
                holder.runtime = None

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/uploads", upload_route(holder.get), methods=["POST"]),
        *sse_app.routes,
        Route("/mcp", mcp_endpoint),
    ]
    # Outermost: header values trimmed before anything reads them; every request counted, refused
    # ones included.
    middleware = [
        Middleware(TrimHeaderValuesMiddleware),
        Middleware(HttpMetricsMiddleware, metrics=metrics_registry),
        Middleware(RequestContextMiddleware),
    ]
    if settings.cors_origins:
        # Outermost, so preflights are answered before any key is asked for (browsers send none).
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=[
                    "Authorization",
                    "X-API-Key",
                    "Content-Type",
                    "Accept",
                    "Mcp-Session-Id",
                    "MCP-Protocol-Version",
                    "Mcp-Method",
                    "Mcp-Name",
                    "Last-Event-ID",
                ],
                expose_headers=["Mcp-Session-Id", "WWW-Authenticate", "Retry-After"],
                max_age=600,
            )
        )
    # Before the key check: Host/Origin on the non-MCP routes, a clear body cap on /mcp.
    middleware.append(Middleware(TransportGuardMiddleware, settings=settings))
    keys = parse_keys(settings.api_keys)
    oauth = _oauth_settings(settings)
    if keys or oauth is not None:
        middleware.append(
            Middleware(
                ClientKeyMiddleware,
                keys=keys,
                jwt_verifier=JwtVerifier(oauth) if oauth is not None else None,
                resource_metadata_url=_metadata_url(oauth) if oauth is not None else None,
            )
        )
    if oauth is not None:
        # RFC 9728 metadata, so OAuth-capable MCP clients find the authorization server themselves.
        routes += create_protected_resource_routes(
            resource_url=AnyHttpUrl(oauth.resource_url), authorization_servers=[AnyHttpUrl(oauth.issuer)]
        )
    # Inside the key check, so the budget is the principal's (the one local user without keys).
    middleware.append(
        Middleware(
            RateLimitMiddleware,
            limiter=lambda: holder.get().limiter,
            protected=PROTECTED_PREFIXES,
            principal_of=principal_of_scope,
        )
    )
    # Innermost, so the caller is known: what the handshake-era transports would leave unanswered
    # (an oversized /messages/ body, a request id that is neither a string nor an integer) is
    # answered, on the caller's own SSE stream for /messages/.
    middleware.append(Middleware(JsonRpcGuardMiddleware, security_settings=security))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.mcp = mcp
    return app
