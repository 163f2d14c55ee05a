"""Logging (to stderr: stdout belongs to the stdio transport; secrets masked) and Prometheus metrics."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import time
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from bridge.config import Settings
from bridge.observability.context import PRINCIPAL, REQUEST_ID
from bridge.security.redact import RedactingFilter
from bridge.store.records import ContextStore


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold, for the redaction filter."""
    secrets = [settings.dust_api_key.get_secret_value()] if settings.dust_api_key else []
    secrets += settings.store_keys
    if settings.metrics_key:
        secrets.append(settings.metrics_key.get_secret_value())
    if settings.redis_url:
        raw = urlsplit(settings.redis_url).password
        secrets += [secret for secret in {raw, unquote(raw or "")} if secret]
    return secrets


class ContextFilter(logging.Filter):
    """Stamp each record with the request id and principal of the request it was logged for."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach `request_id`, `principal` and a ready-made `context` suffix for the text format."""
        request_id, principal = REQUEST_ID.get(), PRINCIPAL.get()
        # LogRecord takes extra attributes by design (what `extra=` does); setattr says so to mypy.
        setattr(record, "request_id", request_id)  # noqa: B010
        setattr(record, "principal", principal)  # noqa: B010
        parts = [
            f"{key}={value}" for key, value in (("request", request_id), ("principal", principal)) if value
        ]
        setattr(record, "context", f" [{' '.join(parts)}]" if parts else "")  # noqa: B010
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; audit events (already JSON) are merged in, not quoted."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON with time, level, logger, message, request id and principal."""
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.getMessage()
        if record.name == "bridge.audit" and message.startswith("{"):
            try:
                entry.update(json.loads(message))
            except ValueError:
                entry["message"] = message
        else:
            entry["message"] = message
        for key in ("request_id", "principal"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings) -> None:
    """One stderr handler with the redaction filter, at `BRIDGE_LOG_LEVEL`."""
    secrets = configured_secrets(settings)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"))
    # Redaction first: the formatter then only ever sees masked text.
    handler.addFilter(RedactingFilter(secrets))
    handler.addFilter(ContextFilter())
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
        self.dust_seconds = Histogram(
            "bridge_dust_request_duration_seconds",
            "Dust API calls by endpoint: seconds until the answer was read (an event stream: until"
            " its headers), failed attempts included",
            ["method", "endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.stream_reconnects = Counter(
            "bridge_stream_reconnects_total",
            "Reconnections to a Dust event stream (its `done` mid-answer, a cut, a refused connection)",
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "bridge_store_operation_duration_seconds",
            "Context store operations by operation and outcome (ok or error)",
            ["operation", "outcome"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.mcp_sessions = Gauge(
            "bridge_mcp_sessions_active",
            "Open MCP sessions by transport (handshake-era Streamable HTTP sessions, legacy SSE streams)",
            ["transport"],
            registry=self.registry,
        )
        self.dependency_up = Gauge(
            "bridge_dependency_up",
            "1 when a dependency (store, dust, scanner) answered the last readiness check, else 0",
            ["dependency"],
            registry=self.registry,
        )
        self.sse_sessions = 0
        # CPU, RSS and open files of this process, for the chart's CPU and memory alerts.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def sse_session_opened(self) -> None:
        """A legacy SSE stream (one MCP session) was opened."""
        self.sse_sessions += 1
        self.mcp_sessions.labels(transport="sse").set(self.sse_sessions)

    def sse_session_closed(self) -> None:
        """A legacy SSE stream ended."""
        self.sse_sessions -= 1
        self.mcp_sessions.labels(transport="sse").set(self.sse_sessions)

    def timed_store(self, store: ContextStore) -> ContextStore:
        """`store` with every operation timed into `bridge_store_operation_duration_seconds`."""
        return cast(ContextStore, _TimedStore(store, self.store_seconds))

    def observe_dust(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count and time one Dust API call; ids in the path are folded so the label set stays small."""
        endpoint = dust_endpoint(path)
        self.dust_requests.labels(method=method, endpoint=endpoint, status=str(status)).inc()
        self.dust_seconds.labels(method=method, endpoint=endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _TimedStore:
    """A transparent proxy that times the store's coroutine methods (the protocol's operations,
    and any added later) without restating each of them."""

    def __init__(self, inner: ContextStore, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await attribute(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                self._histogram.labels(operation=name, outcome=outcome).observe(time.perf_counter() - started)

        return timed


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
