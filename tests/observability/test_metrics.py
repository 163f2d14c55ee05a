"""Metrics on /metrics after real traffic: requests by route, tool calls, answer timings, heartbeats,
Dust calls by endpoint; and the label folding that keeps their cardinality small."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
from mcp import Client

from bridge.observability.metrics import dust_endpoint, route_group
from tests.helpers import faults
from tests.procs import REPO, Proc, bridge_env, running, start_bridge


def test_ids_and_paths_are_folded_into_few_labels() -> None:
    assert dust_endpoint("/api/sse/v1/w/ws1/assistant/conversations/C1/messages/M1/events") == (
        "/assistant/conversations/{id}/messages/{id}/events"
    )
    assert dust_endpoint("/api/v1/w/ws1/files/fil_abc") == "/files/{id}"
    assert dust_endpoint("/api/v1/w/ws1/assistant/agent_configurations") == "/assistant/agent_configurations"
    assert route_group("/messages/?session_id=1") == "/messages"
    assert route_group("/mcp") == "/mcp"
    assert route_group("/random/scan/path") == "other"


def value(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? ([0-9.e+-]+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"{name}{{{wanted}}} not found")


async def test_metrics_after_real_traffic(simulator: Proc) -> None:
    faults(simulator, slow_seconds=2.5)
    try:
        with running(start_bridge(bridge_env(simulator))) as bridge:
            async with Client(f"{bridge.url}/mcp") as client:
                await client.call_tool("ask_agent", {"agent": "echo", "message": "count me"})
                await client.call_tool("ask_agent", {"agent": "slow", "message": "beat"})
                await client.call_tool("ask_agent", {"agent": "nobody", "message": "x"})
            metrics = httpx2.get(f"{bridge.url}/metrics", timeout=10).text
    finally:
        faults(simulator, slow_seconds=3.0)
    assert value(metrics, "bridge_tool_calls_total", tool="ask_agent", outcome="ok") == 2
    assert value(metrics, "bridge_tool_calls_total", tool="ask_agent", outcome="unknown_agent") == 1
    assert value(metrics, "bridge_http_requests_total", route="/mcp", method="POST", status="200") >= 4
    assert value(metrics, "bridge_answer_first_chunk_seconds_count") == 2
    assert value(metrics, "bridge_answer_duration_seconds_count") == 2
    assert value(metrics, "bridge_heartbeats_total") >= 1
    assert value(metrics, "bridge_active_streams") == 0
    assert (
        value(
            metrics,
            "bridge_dust_requests_total",
            method="POST",
            endpoint="/assistant/conversations",
            status="200",
        )
        == 2
    )
    assert (
        value(
            metrics,
            "bridge_dust_requests_total",
            method="GET",
            endpoint="/assistant/conversations/{id}/messages/{id}/events",
            status="200",
        )
        >= 2
    )
    # Each Dust call is timed too: the stages of an answer's first chunk, visible in production.
    timed = "bridge_dust_request_duration_seconds"
    create = {"method": "POST", "endpoint": "/assistant/conversations"}
    assert value(metrics, f"{timed}_count", **create) == 2
    post_seconds = value(metrics, f"{timed}_sum", **create)
    assert 0 < post_seconds < 10
    streams = "/assistant/conversations/{id}/messages/{id}/events"
    assert value(metrics, f"{timed}_count", method="GET", endpoint=streams) >= 2
    # A stream is timed to its headers, not to its end: the slow agent streams for 2.5 s.
    assert value(metrics, f"{timed}_sum", method="GET", endpoint=streams) < 2


async def test_json_logs_carry_request_id_and_principal(simulator: Proc) -> None:
    import json

    from bridge.security.auth import hash_key, new_key

    key = new_key()
    env = bridge_env(simulator, BRIDGE_LOG_FORMAT="json", BRIDGE_API_KEYS=f"carol:{hash_key(key).hex()}")
    with running(start_bridge(env)) as bridge:
        response = httpx2.post(
            f"{bridge.url}/v1/uploads", headers={"X-API-Key": key, "X-Request-Id": "req-42"}, timeout=10
        )
        log = bridge.log()
    assert response.headers["x-request-id"] == "req-42"
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert entries and all({"ts", "level", "logger"} <= set(e) for e in entries)
    tagged = [e for e in entries if e.get("request_id") == "req-42"]
    assert any(e.get("event") == "auth_success" and e.get("principal") == "carol" for e in tagged)
    assert key not in log


def _metrics_once(bridge: Proc, ready: Callable[[str], bool], timeout: float = 15.0) -> str:
    """The first scrape for which `ready` holds (the server notices a closed stream a little later)."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx2.get(f"{bridge.url}/metrics", timeout=10).text
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


async def test_sessions_reconnects_store_and_dependency_metrics(simulator: Proc, redis_server: Proc) -> None:
    from mcp.client.sse import sse_client

    # Two events per connection: every answer needs several reconnects (Dust's `data: done`).
    faults(simulator, events_per_connection=2)
    try:
        env = bridge_env(simulator, redis_server.port, BRIDGE_SCAN_MODE="off")
        with running(start_bridge(env)) as bridge:
            async with Client(f"{bridge.url}/mcp", mode="legacy") as handshake:
                await handshake.call_tool("ask_agent", {"agent": "echo", "message": "one two three four"})
                async with Client(sse_client(f"{bridge.url}/sse")) as legacy:
                    await legacy.list_tools()
                    during = httpx2.get(f"{bridge.url}/metrics", timeout=10).text
                    status = httpx2.get(f"{bridge.url}/status", timeout=10).json()
            assert httpx2.get(f"{bridge.url}/readyz", timeout=10).status_code == 200
            after = _metrics_once(
                bridge, lambda text: 'bridge_mcp_sessions_active{transport="sse"} 0.0' in text
            )
    finally:
        faults(simulator, events_per_connection=50)
    assert value(during, "bridge_mcp_sessions_active", transport="streamable-http") == 1
    assert value(during, "bridge_mcp_sessions_active", transport="sse") == 1
    assert status["mcp_sessions"] == {"streamable_http": 1, "sse": 1}
    assert value(after, "bridge_mcp_sessions_active", transport="sse") == 0
    assert value(after, "bridge_stream_reconnects_total") >= 2
    assert value(after, "bridge_store_operation_duration_seconds_count", operation="save", outcome="ok") >= 1
    assert value(after, "bridge_store_operation_duration_seconds_count", operation="ping", outcome="ok") >= 1
    for dependency in ("store", "dust"):
        assert value(after, "bridge_dependency_up", dependency=dependency) == 1
    assert value(after, "process_resident_memory_bytes") > 10_000_000
    assert value(after, "process_cpu_seconds_total") > 0


async def test_dependency_gauge_drops_when_the_store_is_down(simulator: Proc) -> None:
    from tests.procs import free_port

    dead = free_port()
    with running(start_bridge(bridge_env(simulator, dead))) as bridge:
        ready = httpx2.get(f"{bridge.url}/readyz", timeout=10)
        metrics = httpx2.get(f"{bridge.url}/metrics", timeout=10).text
    assert ready.status_code == 503
    assert value(metrics, "bridge_dependency_up", dependency="store") == 0
    assert value(metrics, "bridge_dependency_up", dependency="dust") == 1


async def test_request_id_reaches_the_logs_and_every_dust_call_of_a_tool_call(simulator: Proc) -> None:
    import json

    httpx2.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()
    env = bridge_env(simulator, BRIDGE_LOG_FORMAT="json", BRIDGE_SCAN_MODE="off")
    with running(start_bridge(env)) as bridge:
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers={"X-Request-Id": "corr-7"})
        transport = streamable_http_client(f"{bridge.url}/mcp", http_client=http)
        async with http, Client(transport, mode="legacy") as client:
            await client.call_tool("ask_agent", {"agent": "echo", "message": "trace me"})
        log = bridge.log()
    dust_calls = httpx2.get(f"{simulator.url}/_sim/stats", timeout=5).json()["requests"]
    posted = [c for c in dust_calls if c["method"] == "POST" and c["path"].endswith("/conversations")]
    assert posted and all(c.get("request_id") == "corr-7" for c in posted)
    streamed = [c for c in dust_calls if c["path"].endswith("/events")]
    assert streamed and all(c.get("request_id") == "corr-7" for c in streamed)
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "tool_call" and e.get("request_id") == "corr-7" for e in entries)


# One worker of `serve --workers N` as far as its metrics go (prometheus_client in multiprocess mode
# from its start): a heartbeat, an open stream, a readiness check that found the store as argv[1] says,
# two open sessions; it prints a scrape's exposition, and with `stay` waits for its stdin to close.
WORKER = """
import sys
from bridge.observability.metrics import Metrics
metrics = Metrics()
metrics.heartbeats.inc()
metrics.active_streams.inc()
metrics.dependency_up.labels(dependency="store").set(float(sys.argv[1]))
metrics.sample(metrics.mcp_sessions.labels(transport="streamable-http"), lambda: 2)
sys.stdout.write(metrics.render()[0].decode() + "\\n---\\n")
sys.stdout.flush()
if sys.argv[2] == "stay":
    sys.stdin.read()
"""


def test_with_workers_a_scrape_adds_up_every_workers_counts_and_only_the_live_ones_gauges(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = [sys.executable, "-c", WORKER]
    with subprocess.Popen(
        [*run, "0", "stay"], env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as alive:
        assert alive.stdout is not None
        while alive.stdout.readline().strip() != "---":  # its values are written
            pass
        subprocess.run([*run, "0", "exit"], env=env, cwd=REPO, check=True, capture_output=True)
        scrape = subprocess.run(
            [*run, "1", "exit"], env=env, cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        assert alive.stdin is not None
        alive.stdin.close()
    # Three workers counted a heartbeat each; the one that is gone keeps its count in the total...
    assert value(scrape, "bridge_heartbeats_total") == 3
    # ...but not its open stream or sessions: the two live workers' add up.
    assert value(scrape, "bridge_active_streams") == 2
    assert value(scrape, "bridge_mcp_sessions_active", transport="streamable-http") == 4
    # The latest readiness check, whichever live worker made it.
    assert value(scrape, "bridge_dependency_up", dependency="store") == 1
    assert value(scrape, "process_resident_memory_bytes") > 10_000_000
