"""Prometheus metrics: the bridge's registry and the label folding that keeps it small (the HTTP
middleware that counts requests is bridge/http/middleware/http_metrics.py; logging lives in
`bridge.observability.logging`).

With several worker processes (`serve --workers N`, bridge/workers.py) every worker writes its values
to files in one directory (prometheus_client's multiprocess mode) and a scrape, whichever worker
answers it, reports the sum of them all: the host, not one worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import anyio
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
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SCAN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FIRST_CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_ANSWER_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
_DUST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# prometheus_client's switch to multiprocess mode, read once when it is first imported: the supervisor
# of `serve --workers N` sets it for its workers (bridge/workers.py), never a user.
SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# How often each worker writes down the gauges read from a function (`Metrics.sample`), which no other
# worker can read at scrape time: well inside a Prometheus scrape interval.
SAMPLE_SECONDS = 5.0

# How a gauge's values from several workers make one: `livesum` adds up what the live workers hold
# (what is open or in flight), `livemostrecent` keeps the latest value any live worker set.
_GaugeMode = Literal["livesum", "livemostrecent"]


class Metrics:
    """The bridge's Prometheus metrics, in a registry of its own (no process-global state).

    Declared by concern, in the order /metrics shows them: uploads, HTTP and tool calls, answers,
    Dust calls, then the store, sessions and dependencies.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Set in the workers of `serve --workers N`: every value then lives in a file there.
        self.shared_dir = os.environ.get(SHARED_DIR_VARIABLE) or None
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []
        self._declare_upload_metrics()
        self._declare_request_metrics()
        self._declare_answer_metrics()
        self._declare_dust_metrics()
        self._declare_dependency_metrics()
        self.sse_sessions = 0
        if self.shared_dir is None:
            # CPU, RSS and open files of this process, for the chart's CPU and memory alerts.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, mode: _GaugeMode, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry, multiprocess_mode=mode)

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
        self.active_streams = self._gauge(
            "bridge_active_streams", "Answers streaming from Dust right now", "livesum"
        )
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
            "livesum",
            ["transport"],
        )
        self.dependency_up = self._gauge(
            "bridge_dependency_up",
            "1 when a dependency (store, dust, scanner) answered the last readiness check, else 0",
            "livemostrecent",
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

    def sample(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Report `read()` as the value of `gauge`. In one process that is `set_function`: read at
        scrape time. Workers cannot read each other's, so each writes its own down every
        SAMPLE_SECONDS (`keep_sampling`) and once more before it answers a scrape."""
        if self.shared_dir is None:
            gauge.set_function(read)
        else:
            self._sampled.append((gauge, read))

    async def keep_sampling(self) -> None:
        """Write the sampled gauges down every SAMPLE_SECONDS, for as long as the worker runs (returns
        at once in a single process, where they are read at scrape time)."""
        while self._sampled:
            self._write_samples()
            await anyio.sleep(SAMPLE_SECONDS)

    def _write_samples(self) -> None:
        for gauge, read in self._sampled:
            gauge.set(read())

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type: this process's registry, or with workers the
        values of them all."""
        if self.shared_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self._write_samples()
        registry = CollectorRegistry()
        registry.register(_WorkerValues(Path(self.shared_dir)))
        registry.register(_BridgeProcesses(Path(self.shared_dir)))
        PlatformCollector(registry=registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def _worker_files(shared_dir: Path) -> Iterator[tuple[Path, int]]:
    """Each value file of the workers (`counter_<pid>.db`, `gauge_livesum_<pid>.db`, ...) and its pid."""
    for path in shared_dir.glob("*.db"):
        with contextlib.suppress(ValueError):
            yield path, int(path.stem.rsplit("_", 1)[-1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        pass
    return True


def live_workers(shared_dir: Path) -> list[int]:
    """The pids of the workers that wrote values to `shared_dir` and still run."""
    pids = {pid for _, pid in _worker_files(shared_dir)}
    return sorted(pid for pid in pids if _alive(pid))


# prometheus_client's multiprocess module carries no annotations: what its merge returns, said once.
_merge: Callable[..., Iterable[Metric]] = MultiProcessCollector.merge


class _WorkerValues:
    """The values of every worker, added up as each metric's kind says (prometheus_client's
    MultiProcessCollector), leaving out the live-only gauges of workers that are gone: a worker that
    died keeps its counts in the totals, not its open streams."""

    def __init__(self, shared_dir: Path) -> None:
        self._shared_dir = shared_dir

    def collect(self) -> Iterable[Metric]:
        live = set(live_workers(self._shared_dir))
        files = [
            str(path)
            for path, pid in _worker_files(self._shared_dir)
            if pid in live or not path.name.startswith("gauge_live")
        ]
        return _merge(files, accumulate=True)


# Process metrics that do not add up across processes: the earliest start, the smallest fd limit.
_SMALLEST_OF_ALL = frozenset({"process_start_time_seconds", "process_max_fds"})


class _BridgeProcesses:
    """process_* of the bridge as a whole: uvicorn's supervisor (every worker's parent) and the live
    workers, added up, so that the chart's CPU and memory alerts still compare one container with its
    limits."""

    def __init__(self, shared_dir: Path) -> None:
        self._shared_dir = shared_dir

    def collect(self) -> Iterable[Metric]:
        found: dict[str, tuple[Metric, list[float]]] = {}
        for pid in [os.getppid(), *live_workers(self._shared_dir)]:
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                found.setdefault(family.name, (family, []))[1].append(family.samples[0].value)
        for name, (family, values) in found.items():
            value = min(values) if name in _SMALLEST_OF_ALL else sum(values)
            family.samples = [family.samples[0]._replace(value=value)]
        return [family for family, _ in found.values()]


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


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
