"""`/mcp` answers 2026-07-28 listings in JSON from a second session manager, other 2026-07-28
requests (answers that stream) from the SSE one and handshake-era sessions from the shared session
manager, with the same results either way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp_types import HEADER_MISMATCH

from tests.helpers import stats
from tests.mcp.support import endpoint_of
from tests.procs import Proc, bridge_env, running, start_bridge

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.fixture(scope="module")
def bridge(simulator: Proc) -> Iterator[Proc]:
    with running(start_bridge(bridge_env(simulator))) as proc:
        yield proc


def post(
    bridge: Proc, method: str, params: dict[str, Any], header_method: str | None = None, **meta: Any
) -> httpx2.Response:
    return httpx2.post(
        f"{bridge.url}/mcp",
        headers={
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": header_method or method,
            **({"Mcp-Name": params["name"]} if "name" in params else {}),
        },
        json={"jsonrpc": "2.0", "id": 7, "method": method, "params": {**params, "_meta": {**META, **meta}}},
        timeout=30,
    )


async def test_stateless_listings_come_as_json_and_match_what_a_session_lists(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp", mode="legacy") as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        prompts = {prompt.name for prompt in (await session.list_prompts()).prompts}
        templates = {t.uri_template for t in (await session.list_resource_templates()).resource_templates}
    for method, key, field, expected in (
        ("tools/list", "tools", "name", tools),
        ("prompts/list", "prompts", "name", prompts),
        ("resources/templates/list", "resourceTemplates", "uriTemplate", templates),
    ):
        response = post(bridge, method, {})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["id"] == 7
        assert {entry[field] for entry in body["result"][key]} == expected
    assert "ask_agent" in tools


async def test_a_streamed_answer_still_streams_beside_the_json_listings(bridge: Proc) -> None:
    ask = {"name": "ask_agent", "arguments": {"agent": "echo", "message": "hi"}}
    response = post(bridge, "tools/call", ask, progressToken="p1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    assert any(event.get("method") == "notifications/progress" for event in events)
    assert events[-1]["id"] == 7 and not events[-1]["result"]["isError"]


def test_a_tool_call_labelled_as_a_listing_is_refused_before_it_reaches_dust(
    bridge: Proc, simulator: Proc
) -> None:
    before = stats(simulator)["conversations"]
    response = post(
        bridge,
        "tools/call",
        {"name": "ask_agent", "arguments": {"agent": "echo", "message": "sneaky"}},
        header_method="tools/list",
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == HEADER_MISMATCH
    assert stats(simulator)["conversations"] == before


def test_only_stateless_era_listings_take_the_json_route() -> None:
    server = MCPServer("t")
    server.streamable_http_app()
    endpoint = endpoint_of(server)

    def scope(method: str, version: str | None, mcp_method: str | None) -> dict[str, Any]:
        headers = [(b"mcp-protocol-version", version.encode())] if version else []
        headers += [(b"mcp-method", mcp_method.encode())] if mcp_method else []
        return {"type": "http", "method": method, "headers": headers}

    assert endpoint.manager_for(scope("POST", MODERN, "tools/list")) is endpoint.listing
    assert endpoint.manager_for(scope("POST", MODERN, "prompts/get")) is endpoint.listing
    assert endpoint.manager_for(scope("POST", MODERN, "tools/call")) is endpoint.streaming
    assert endpoint.manager_for(scope("POST", MODERN, "resources/read")) is endpoint.streaming
    assert endpoint.manager_for(scope("POST", MODERN, None)) is endpoint.streaming
    assert endpoint.manager_for(scope("GET", MODERN, "tools/list")) is endpoint.streaming
    # Handshake-era requests belong to the shared sessions, whatever they ask.
    assert endpoint.manager_for(scope("POST", "2025-11-25", "tools/list")) is endpoint.sessions
    assert endpoint.manager_for(scope("POST", None, "tools/list")) is endpoint.sessions
    assert endpoint.manager_for(scope("GET", None, None)) is endpoint.sessions
    assert endpoint.manager_for(scope("DELETE", "2025-11-25", None)) is endpoint.sessions
