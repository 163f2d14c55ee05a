"""Logging (to stderr: stdout belongs to the stdio transport; secrets masked) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
import time
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.config import Settings
from bridge.security.redact import RedactingFilter


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold, for the redaction filter."""
    secrets = [settings.dust_api_key.get_secret_value()] if settings.dust_api_key else []
    secrets += settings.store_keys
    if settings.metrics_key:
        secrets.append(settings.metrics_key.get_secret_value())
    if settings.redis_url:
        password = urlsplit(settings.redis_url).password
        if password:
            secrets.append(password)
    return secrets


def configure_logging(settings: Settings) -> None:
    """One stderr handler with the redaction filter, at `BRIDGE_LOG_LEVEL`."""
    secrets = configured_secrets(settings)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # uvicorn and the SDK install their own handlers; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mcp"):
        named = logging.getLogger(name)
        named.handlers = []
        named.propagate = True
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpcore2").setLevel(max(logging.WARNING, root.level))


class Metrics:
    """The bridge's Prometheus metrics, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter(
            "bridge_uploads_total",
            "Uploads by outcome (accepted or the problem type) and MIME type",
            ["outcome", "mime"],
            registry=self.registry,
        )
        self.scanned_bytes = Counter(
            "bridge_scanned_bytes_total", "Bytes sent to the virus scanner", registry=self.registry
        )
        self.scan_seconds = Histogram(
            "bridge_scan_duration_seconds",
            "Time to scan one upload with clamd",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

        self.http_requests = Counter(
            "bridge_http_requests_total",
            "HTTP requests by route group (the transport: mcp, sse, messages, uploads...), method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "bridge_request_duration_seconds",
            "HTTP request time, to the end of the response (a streamed answer counts whole)",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "bridge_tool_calls_total",
            "MCP tool calls by tool and outcome",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.first_chunk_seconds = Histogram(
            "bridge_answer_first_chunk_seconds",
            "From the start of the answer stream (just after the post to Dust) to the first text relayed",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.answer_seconds = Histogram(
            "bridge_answer_duration_seconds",
            "From the start of the answer stream (just after the post to Dust) to the final answer",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "bridge_active_streams", "Answers streaming from Dust right now", registry=self.registry
        )
        self.heartbeats = Counter(
            "bridge_heartbeats_total",
            "Heartbeat progress notifications sent while Dust was silent",
            registry=self.registry,
        )
        self.cancellations = Counter(
            "bridge_cancellations_total",
            "Generations cancelled at Dust (client cancel, disconnect, timeout)",
            registry=self.registry,
        )
        self.dust_requests = Counter(
            "bridge_dust_requests_total",
            "Dust API calls by endpoint and HTTP status (0: no answer)",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )

    def observe_dust(self, method: str, path: str, status: int) -> None:
        """Count one Dust API call; ids in the path are folded so the label set stays small."""
        self.dust_requests.labels(method=method, endpoint=dust_endpoint(path), status=str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_ID_AFTER = {"conversations", "agent_configurations", "messages", "files"}
_ROUTE_GROUPS = (
    "/mcp",
    "/sse",
    "/messages",
    "/v1/uploads",
    "/healthz",
    "/readyz",
    "/status",
    "/metrics",
    "/openapi.json",
    "/.well-known",
)


def dust_endpoint(path: str) -> str:
    """The endpoint of a Dust API path, ids folded: `.../conversations/C/messages/M/events` becomes
    `/assistant/conversations/{id}/messages/{id}/events`."""
    parts = path.split("?", 1)[0].split("/")
    if "w" in parts:  # drop everything up to and including the workspace id
        index = parts.index("w")
        parts = ["", *parts[index + 2 :]]
    out: list[str] = []
    for position, part in enumerate(parts):
        out.append(
            "{id}" if position > 0 and parts[position - 1] in _ID_AFTER and part not in ("search",) else part
        )
    return "/".join(out) or "/"


def route_group(path: str) -> str:
    """The route label of a request path: its transport or endpoint, never the raw path."""
    for group in _ROUTE_GROUPS:
        if path == group or path.startswith((group + "/", group + "?")):
            return group
    return "other"


class HttpMetricsMiddleware:
    """Count every HTTP request and time it to the end of its response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, recording route group, method, status and duration."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            route = route_group(scope["path"])
            self._metrics.http_requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            self._metrics.http_seconds.labels(route=route).observe(time.perf_counter() - started)
