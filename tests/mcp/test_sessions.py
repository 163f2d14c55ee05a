"""Handshake-era sessions live in the context store: any bridge process serves them, a restart keeps
them, and an elicitation's answer reaches the process that asked, wherever the client sends it."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import redis
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from bridge.security.auth import hash_key, new_key
from tests.helpers import text_of
from tests.http.helpers import INIT
from tests.mcp.support import answer_of
from tests.procs import Proc, bridge_env, running, start_bridge, start_redis

HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


class RoundRobin(httpx2.AsyncBaseTransport):
    """Sends each HTTP request to the next bridge in turn, as a load balancer with no affinity does."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = itertools.cycle(ports)
        self._inner = httpx2.AsyncHTTPTransport()
        self.sent: list[int] = []
        self.messages: list[tuple[int, dict[str, Any]]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._ports)
        self.sent.append(port)
        if request.method == "POST":
            self.messages.append((port, json.loads(request.content)))
        request.url = request.url.copy_with(port=port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def round_robin_client(bridges: list[Proc], **options: Any) -> AsyncIterator[tuple[Client, RoundRobin]]:
    """An SDK client on the 2025-11-25 handshake whose every HTTP request goes to the next bridge."""
    balancer = RoundRobin([b.port for b in bridges])
    async with httpx2.AsyncClient(transport=balancer, timeout=httpx2.Timeout(30, read=60)) as http:
        transport = streamable_http_client(f"{bridges[0].url}/mcp", http_client=http)
        async with Client(transport, mode="legacy", **options) as client:
            yield client, balancer


@pytest.fixture
def pair(simulator: Proc, redis_server: Proc) -> Iterator[list[Proc]]:
    env = bridge_env(simulator, redis_server.port)
    with running(start_bridge(env)) as first, running(start_bridge(env)) as second:
        yield [first, second]


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def test_one_session_is_served_by_two_bridges_in_turn_with_its_memory(pair: list[Proc]) -> None:
    async with round_robin_client(pair) as (client, balancer):
        first = structured(await client.call_tool("ask_agent", {"agent": "echo", "message": "one"}))
        tools = await client.list_tools()
        # No `conversation` passed: the session's memory (in the store) continues the chat.
        second = structured(await client.call_tool("ask_agent", {"agent": "echo", "message": "two"}))
    assert {tool.name for tool in tools.tools} >= {"ask_agent", "list_agents"}
    assert second["conversation"] == first["conversation"] and second["continued"]
    assert set(balancer.sent) == {pair[0].port, pair[1].port}


class Approver:
    """Approves every elicitation, recording how many it saw."""

    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.asked += 1
        return ElicitResult(action="accept", content={"decision": "approve"})


async def test_an_elicitation_answer_reaches_the_bridge_that_asked_whichever_bridge_receives_it(
    pair: list[Proc],
) -> None:
    user = Approver()
    async with round_robin_client(pair, elicitation_callback=user) as (client, balancer):
        # Two calls, so that one of them has its answer POSTed to the other bridge.
        results = [
            structured(await client.call_tool("ask_agent", {"agent": "needs-approval", "message": m}))
            for m in ("weekly report", "monthly report")
        ]
    calls = [port for port, m in balancer.messages if m.get("method") == "tools/call"]
    replies = [port for port, m in balancer.messages if "result" in m]
    assert len(calls) == len(replies) == 2
    assert any(call != reply for call, reply in zip(calls, replies, strict=True)), balancer.messages
    assert user.asked == 2
    assert [r["status"] for r in results] == ["complete", "complete"]
    assert [r["answer"] for r in results] == [
        f"Email sent to team@example.com: {m}" for m in ("weekly report", "monthly report")
    ]


async def test_a_restarted_bridge_continues_the_session(simulator: Proc, redis_server: Proc) -> None:
    env = bridge_env(simulator, redis_server.port)
    bridge = start_bridge(env)
    try:
        async with httpx2.AsyncClient(timeout=30) as http:
            init = await http.post(f"{bridge.url}/mcp", headers=HEADERS, json=INIT)
            session = init.headers["mcp-session-id"]
            port = bridge.port
            bridge.stop()
            bridge = start_bridge(env, port=port)
            listed = await http.post(
                f"{bridge.url}/mcp",
                headers={**HEADERS, "Mcp-Session-Id": session},
                json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            )
    finally:
        bridge.stop()
    assert init.status_code == 200
    assert listed.status_code == 200, listed.text
    assert "ask_agent" in listed.text


async def test_a_session_deleted_on_one_bridge_is_gone_on_the_other(pair: list[Proc]) -> None:
    first, second = pair
    async with httpx2.AsyncClient(timeout=30) as http:
        session = (await http.post(f"{first.url}/mcp", headers=HEADERS, json=INIT)).headers["mcp-session-id"]
        own = {**HEADERS, "Mcp-Session-Id": session}
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        before = await http.post(f"{second.url}/mcp", headers=own, json=listing)
        deleted = await http.delete(f"{second.url}/mcp", headers=own)
        after = await http.post(f"{first.url}/mcp", headers=own, json=listing)
    assert before.status_code == 200 and deleted.status_code == 200
    assert after.status_code == 404 and after.json()["error"]["message"] == "Session not found"


async def test_a_notification_passes_through_a_bridge_that_does_not_hold_its_session(
    pair: list[Proc],
) -> None:
    first, second = pair
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with httpx2.AsyncClient(timeout=30) as http:
        session = (await http.post(f"{first.url}/mcp", headers=HEADERS, json=INIT)).headers["mcp-session-id"]
        passed = await http.post(
            f"{second.url}/mcp", headers={**HEADERS, "Mcp-Session-Id": session}, json=initialized
        )
        forged = await http.post(
            f"{second.url}/mcp", headers={**HEADERS, "Mcp-Session-Id": "0" * 32}, json=initialized
        )
    assert passed.status_code == 202
    assert forged.status_code == 404 and forged.json()["error"]["message"] == "Session not found"
    # Published for the bridge that holds the session: the second one built none of its own.
    assert "continued on this process" not in second.log()


def session_keys(redis_server: Proc) -> list[str]:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        return sorted(client.scan_iter("dmb:mcp-session:*"))
    finally:
        client.close()


@pytest.mark.parametrize("session", ["0" * 32, "f" * 31 + "g", "not-a-session", "x" * 200])
async def test_a_forged_session_id_is_not_found_and_creates_nothing(
    pair: list[Proc], redis_server: Proc, session: str
) -> None:
    before = session_keys(redis_server)
    async with httpx2.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{pair[1].url}/mcp",
            headers={**HEADERS, "Mcp-Session-Id": session},
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        )
    assert answer.status_code == 404 and answer.json()["error"]["message"] == "Session not found"
    assert session_keys(redis_server) == before


async def test_a_session_of_another_principal_is_not_found_on_any_bridge(
    simulator: Proc, redis_server: Proc
) -> None:
    alice_key, bob_key = new_key(), new_key()
    keys = f"alice:{hash_key(alice_key).hex()},bob:{hash_key(bob_key).hex()}"
    env = bridge_env(simulator, redis_server.port, BRIDGE_API_KEYS=keys)
    with running(start_bridge(env)) as first, running(start_bridge(env)) as second:
        async with httpx2.AsyncClient(timeout=30) as http:
            alice = {**HEADERS, "Authorization": f"Bearer {alice_key}"}
            session = (await http.post(f"{first.url}/mcp", headers=alice, json=INIT)).headers[
                "mcp-session-id"
            ]
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            bob = {**HEADERS, "Authorization": f"Bearer {bob_key}", "Mcp-Session-Id": session}
            stolen = [await http.post(f"{b.url}/mcp", headers=bob, json=listing) for b in (first, second)]
            mine = await http.post(
                f"{second.url}/mcp", headers={**alice, "Mcp-Session-Id": session}, json=listing
            )
    assert [s.status_code for s in stolen] == [404, 404]
    assert mine.status_code == 200


async def test_with_redis_down_new_sessions_work_and_a_foreign_one_says_it_cannot_continue(
    simulator: Proc,
) -> None:
    store = start_redis()
    env = bridge_env(simulator, store.port)
    try:
        with running(start_bridge(env)) as first, running(start_bridge(env)) as second:
            async with httpx2.AsyncClient(timeout=30) as http:
                init = await http.post(f"{first.url}/mcp", headers=HEADERS, json=INIT)
                session = init.headers["mcp-session-id"]
                store.stop()
                own = {**HEADERS, "Mcp-Session-Id": session}
                listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
                held = await http.post(f"{first.url}/mcp", headers=own, json=listing)
                foreign = await http.post(f"{second.url}/mcp", headers=own, json=listing)
                fresh = await http.post(f"{second.url}/mcp", headers=HEADERS, json=INIT)
    finally:
        store.stop()
    assert held.status_code == 200, held.text
    assert foreign.status_code == 404
    assert "cannot be continued" in foreign.json()["error"]["message"]
    assert fresh.status_code == 200 and fresh.headers.get("mcp-session-id")


async def test_a_round_robin_client_asks_and_streams_with_progress(pair: list[Proc]) -> None:
    messages: list[str] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with round_robin_client(pair) as (client, _):
        result = await client.call_tool(
            "ask_agent", {"agent": "echo", "message": "streamed"}, progress_callback=progress
        )
    assert "streamed" in answer_of(result)
    assert messages


async def test_a_legacy_sse_session_is_served_when_its_posts_land_on_another_bridge(pair: list[Proc]) -> None:
    balancer = RoundRobin([b.port for b in pair])

    def http_client(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=balancer, headers=headers, timeout=timeout, auth=auth)

    user = Approver()
    transport = sse_client(f"{pair[0].url}/sse", httpx_client_factory=http_client)
    async with Client(transport, elicitation_callback=user) as client:
        first = structured(await client.call_tool("ask_agent", {"agent": "echo", "message": "one"}))
        second = structured(await client.call_tool("ask_agent", {"agent": "echo", "message": "two"}))
        approved = structured(
            await client.call_tool("ask_agent", {"agent": "needs-approval", "message": "memo"})
        )
    stream_port = balancer.sent[0]
    assert any(port != stream_port for port, _ in balancer.messages), "no POST went to the other bridge"
    assert second["conversation"] == first["conversation"] and second["continued"]
    assert approved["answer"] == "Email sent to team@example.com: memo" and user.asked == 1


async def test_a_legacy_post_for_a_stream_no_bridge_holds_is_not_found(pair: list[Proc]) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{pair[1].url}/messages/?session_id={'a' * 32}",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
    assert answer.status_code == 404
