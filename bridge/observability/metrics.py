"""Prometheus metrics: the bridge's registry and the label folding that keeps it small (the HTTP
middleware that counts requests is bridge/http/middleware/http_metrics.py; logging lives in
`bridge.observability.logging`)."""

from __future__ import annotations

from collections.abc import Sequence

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

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SCAN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FIRST_CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_ANSWER_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
_DUST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """The bridge's Prometheus metrics, in a registry of its own (no process-global state).

    Declared by concern, in the order /metrics shows them: uploads, HTTP and tool calls, answers,
    Dust calls, then the store, sessions and dependencies.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._declare_upload_metrics()
        self._declare_request_metrics()
        self._declare_answer_metrics()
        self._declare_dust_metrics()
        self._declare_dependency_metrics()
        self.sse_sessions = 0
        # CPU, RSS and open files of this process, for the chart's CPU and memory alerts.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def _declare_upload_metrics(self) -> None:
        self.uploads = self._counter(
            "bridge_uploads_total",
            "Uploads by outcome (accepted or the problem type) and MIME type",
            ["outcome", "mime"],
        )
        self.scanned_bytes = self._counter("bridge_scanned_bytes_total", "Bytes sent to the virus scanner")
        self.scan_seconds = self._histogram(
            "bridge_scan_duration_seconds", "Time to scan one upload with clamd", _SCAN_BUCKETS
        )

    def _declare_request_metrics(self) -> None:
        self.http_requests = self._counter(
            "bridge_http_requests_total",
            "HTTP requests by route group (the transport: mcp, sse, messages, uploads...), method and status",
            ["route", "method", "status"],
        )
        self.http_seconds = self._histogram(
            "bridge_request_duration_seconds",
            "HTTP request time, to the end of the response (a streamed answer counts whole)",
            _HTTP_BUCKETS,
            ["route"],
        )
        self.tool_calls = self._counter(
            "bridge_tool_calls_total", "MCP tool calls by tool and outcome", ["tool", "outcome"]
        )

    def _declare_answer_metrics(self) -> None:
        self.first_chunk_seconds = self._histogram(
            "bridge_answer_first_chunk_seconds",
            "From the start of the answer stream (just after the post to Dust) to the first text relayed",
            _FIRST_CHUNK_BUCKETS,
        )
        self.answer_seconds = self._histogram(
            "bridge_answer_duration_seconds",
            "From the start of the answer stream (just after the post to Dust) to the final answer",
            _ANSWER_BUCKETS,
        )
        self.active_streams = self._gauge("bridge_active_streams", "Answers streaming from Dust right now")
        self.heartbeats = self._counter(
            "bridge_heartbeats_total", "Heartbeat progress notifications sent while Dust was silent"
        )
        self.cancellations = self._counter(
            "bridge_cancellations_total", "Generations cancelled at Dust (client cancel, disconnect, timeout)"
        )

    def _declare_dust_metrics(self) -> None:
        self.dust_requests = self._counter(
            "bridge_dust_requests_total",
            "Dust API calls by endpoint and HTTP status (0: no answer)",
            ["method", "endpoint", "status"],
        )
        self.dust_seconds = self._histogram(
            "bridge_dust_request_duration_seconds",
            "Dust API calls by endpoint: seconds until the answer was read (an event stream: until"
            " its headers), failed attempts included",
            _DUST_BUCKETS,
            ["method", "endpoint"],
        )
        self.stream_reconnects = self._counter(
            "bridge_stream_reconnects_total",
            "Reconnections to a Dust event stream (its `done` mid-answer, a cut, a refused connection)",
        )

    def _declare_dependency_metrics(self) -> None:
        self.store_seconds = self._histogram(
            "bridge_store_operation_duration_seconds",
            "Context store operations by operation and outcome (ok or error)",
            _STORE_BUCKETS,
            ["operation", "outcome"],
        )
        self.mcp_sessions = self._gauge(
            "bridge_mcp_sessions_active",
            "Open MCP sessions by transport (handshake-era Streamable HTTP sessions, legacy SSE streams)",
            ["transport"],
        )
        self.dependency_up = self._gauge(
            "bridge_dependency_up",
            "1 when a dependency (store, dust, scanner) answered the last readiness check, else 0",
            ["dependency"],
        )

    def sse_session_opened(self) -> None:
        """A legacy SSE stream (one MCP session) was opened."""
        self.sse_sessions += 1
        self.mcp_sessions.labels(transport="sse").set(self.sse_sessions)

    def sse_session_closed(self) -> None:
        """A legacy SSE stream ended."""
        self.sse_sessions -= 1
        self.mcp_sessions.labels(transport="sse").set(self.sse_sessions)

    def observe_store(self, operation: str, outcome: str, seconds: float) -> None:
        """Time one context store operation (`outcome`: ok or error); `bridge.store.timed` calls it."""
        self.store_seconds.labels(operation=operation, outcome=outcome).observe(seconds)

    def observe_dust(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count and time one Dust API call; ids in the path are folded so the label set stays small."""
        endpoint = dust_endpoint(path)
        self.dust_requests.labels(method=method, endpoint=endpoint, status=str(status)).inc()
        self.dust_seconds.labels(method=method, endpoint=endpoint).observe(seconds)

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
