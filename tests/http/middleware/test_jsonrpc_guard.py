"""What the handshake-era transports used to leave unanswered is answered: an oversized legacy SSE
message gets its error on the session's stream, and a request whose id is neither a string nor an
integer gets Invalid Request, on `/mcp` and on `/messages/` (bridge/http/middleware/jsonrpc_guard.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from bridge.http.jsonrpc import MCP_MAX_BODY_BYTES, TOO_LARGE_CODE
from bridge.security.auth import hash_key, new_key
from tests.helpers import text_of
from tests.http.helpers import BAD_IDS, INIT, is_invalid_request
from tests.procs import Proc, bridge_env, running, start_bridge

HANDSHAKE = "2025-11-25"  # the protocol version of INIT
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
CANCELLED = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}
# Long enough for a cold session (the first tools/list builds the agent listing); far below 60 s.
ANSWER_SECONDS = 10


@pytest.fixture(scope="module")
def bridge(simulator: Proc) -> Iterator[Proc]:
    with running(start_bridge(bridge_env(simulator))) as proc:
        yield proc


# --- end to end, through the SDK's legacy SSE client --------------------------------------------


async def test_an_oversized_legacy_sse_call_is_answered_on_its_stream_and_the_session_lives_on(
    bridge: Proc,
) -> None:
    async with Client(sse_client(f"{bridge.url}/sse")) as client:
        with pytest.raises(MCPError) as refused, anyio.fail_after(ANSWER_SECONDS):
            await client.call_tool("ask_agent", {"agent": "echo", "message": "y" * MCP_MAX_BODY_BYTES})
        with anyio.fail_after(ANSWER_SECONDS):
            after = await client.call_tool("ask_agent", {"agent": "echo", "message": "small"})
    assert refused.value.error.code == TOO_LARGE_CODE
    assert "request body too large" in refused.value.error.message
    assert "/v1/uploads" in refused.value.error.message
    assert isinstance(refused.value.error.data, dict) and refused.value.error.data["type"] == "too_large"
    assert not after.is_error and "small" in text_of(after)


# --- raw HTTP, after a proper initialize: each invalid id on both handshake-era transports ------


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_a_request_id_neither_string_nor_integer_gets_invalid_request_on_mcp(
    bridge: Proc, bad: Any
) -> None:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(base_url=bridge.url, headers=headers, timeout=ANSWER_SECONDS) as http:
        opened = await http.post("/mcp", json=INIT)
        assert opened.status_code == 200, opened.text
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": HANDSHAKE}
        initialized = await http.post("/mcp", json=INITIALIZED, headers=session)
        with anyio.fail_after(ANSWER_SECONDS):
            refused = await http.post(
                "/mcp", json={"jsonrpc": "2.0", "id": bad, "method": "tools/list"}, headers=session
            )
        notification = await http.post("/mcp", json=CANCELLED, headers=session)
        pinged = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=session)
    assert initialized.status_code == 202
    assert refused.status_code == 400, refused.text
    assert refused.headers["content-type"] == "application/json"
    is_invalid_request(refused.json())
    assert notification.status_code == 202  # a notification has no id: still accepted
    assert pinged.status_code == 200 and '"id":2' in pinged.text.replace(" ", "")


async def _sse_events(lines: AsyncIterator[str], into: list[dict[str, str]]) -> None:
    event: dict[str, str] = {}
    async for line in lines:
        if not line:
            if event:
                into.append(event)
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_a_request_id_neither_string_nor_integer_gets_invalid_request_on_the_sse_stream(
    bridge: Proc, bad: Any
) -> None:
    events: list[dict[str, str]] = []

    def messages() -> list[dict[str, Any]]:
        return [json.loads(e["data"]) for e in events if e.get("event") == "message"]

    async def next_message(seen: int) -> dict[str, Any]:
        with anyio.fail_after(ANSWER_SECONDS):
            while len(messages()) <= seen:
                await anyio.sleep(0.02)
        return messages()[seen]

    async with (
        httpx2.AsyncClient(timeout=ANSWER_SECONDS) as http,
        http.stream("GET", f"{bridge.url}/sse") as stream,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_sse_events, stream.aiter_lines(), events)
        with anyio.fail_after(ANSWER_SECONDS):
            while not events:
                await anyio.sleep(0.02)
        endpoint = f"{bridge.url}{events[0]['data']}"
        opened = await http.post(endpoint, json=INIT)
        assert (await next_message(0))["id"] == 1
        initialized = await http.post(endpoint, json=INITIALIZED)
        refused = await http.post(endpoint, json={"jsonrpc": "2.0", "id": bad, "method": "tools/list"})
        on_stream = await next_message(1)
        notification = await http.post(endpoint, json=CANCELLED)
        pinged = await http.post(endpoint, json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        pong = await next_message(2)
        tg.cancel_scope.cancel()
    assert opened.status_code == 202 and initialized.status_code == 202
    assert refused.status_code == 400, refused.text
    is_invalid_request(refused.json())
    is_invalid_request(on_stream)
    assert notification.status_code == 202 and pinged.status_code == 202
    assert pong == {"jsonrpc": "2.0", "id": 2, "result": {}}


async def test_nobody_but_the_sessions_own_key_gets_a_refusal_onto_its_stream(simulator: Proc) -> None:
    alice, bob = new_key(), new_key()
    keys = f"alice:{hash_key(alice).hex()},bob:{hash_key(bob).hex()}"
    events: list[dict[str, str]] = []
    big = {"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"pad": "x" * MCP_MAX_BODY_BYTES}}
    with running(start_bridge(bridge_env(simulator, BRIDGE_API_KEYS=keys))) as keyed:
        async with (
            httpx2.AsyncClient(timeout=ANSWER_SECONDS) as http,
            http.stream("GET", f"{keyed.url}/sse", headers={"X-API-Key": alice}) as stream,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_sse_events, stream.aiter_lines(), events)
            with anyio.fail_after(ANSWER_SECONDS):
                while not events:
                    await anyio.sleep(0.02)
            endpoint = f"{keyed.url}{events[0]['data']}"
            as_bob = {"X-API-Key": bob}
            bad_id = await http.post(
                endpoint, json={"jsonrpc": "2.0", "id": {}, "method": "ping"}, headers=as_bob
            )
            too_large = await http.post(endpoint, json=big, headers=as_bob)
            own = await http.post(endpoint, json=INIT, headers={"X-API-Key": alice})
            with anyio.fail_after(ANSWER_SECONDS):
                while len(events) < 2:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert bad_id.status_code == 404  # the SDK's answer for a session that is not yours
    assert too_large.status_code == 413 and too_large.json()["id"] == 9
    assert own.status_code == 202
    # The first message on Alice's stream is the answer to her own initialize: nothing of Bob's.
    assert json.loads(events[1]["data"])["id"] == 1
