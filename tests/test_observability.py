"""Metrics on /metrics after real traffic: requests by route, tool calls, answer timings, heartbeats,
Dust calls by endpoint; and the label folding that keeps their cardinality small."""

from __future__ import annotations

import re

import httpx2
from mcp import Client

from bridge.observability import dust_endpoint, route_group
from tests.helpers import faults
from tests.procs import Proc, bridge_env, running, start_bridge


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
