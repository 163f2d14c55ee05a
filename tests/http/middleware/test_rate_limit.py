"""How a request over its principal's rate is answered (bridge/http/middleware/rate_limit.py): a clear,
named JSON-RPC error in the MCP client, over /mcp and on a legacy SSE session's own stream (which
lives on); 429 with Retry-After on the wire; other principals are not affected. The budget itself
(bridge/security/ratelimit.py) is shared by two bridge processes through one Redis."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bridge.security.auth import hash_key, new_key
from tests.procs import Proc, bridge_env, running, start_bridge

BOB, DAVE = new_key(), new_key()
KEYS = f"bob:{hash_key(BOB).hex()},dave:{hash_key(DAVE).hex()}:rate=8/minute"


@pytest.fixture(scope="module")
def two_bridges(simulator: Proc, redis_server: Proc, clamd: Proc) -> Iterator[tuple[Proc, Proc]]:
    env = bridge_env(
        simulator, redis_server.port, clamd, BRIDGE_API_KEYS=KEYS, BRIDGE_RATE_LIMIT="1000/minute"
    )
    with running(start_bridge(env)) as first, running(start_bridge(env)) as second:
        yield first, second


def mcp_client(bridge: Proc, key: str, mode: str = "auto") -> Client:
    http = httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=60)
    return Client(streamable_http_client(f"{bridge.url}/mcp", http_client=http), mode=mode)  # type: ignore[arg-type]


def sse(bridge: Proc, key: str) -> Client:
    return Client(sse_client(f"{bridge.url}/sse", headers={"X-API-Key": key}))


async def _call_until_limited(client: Client) -> MCPError:
    """Call a cheap tool until the request budget is spent; the refusal the client raised."""
    for _ in range(12):
        try:
            with anyio.fail_after(15):  # a refusal the client cannot read would hang here
                await client.call_tool("list_agents", {})
        except MCPError as exc:
            return exc
    raise AssertionError("never limited")


async def test_a_rate_limited_mcp_client_is_told_why_over_mcp_and_sse(two_bridges: tuple[Proc, Proc]) -> None:
    first, second = two_bridges
    # The SSE session is opened first: once the budget is spent, opening one is refused too.
    async with sse(second, DAVE) as over_sse:
        async with mcp_client(first, DAVE, mode="legacy") as over_mcp:
            on_mcp = await _call_until_limited(over_mcp)
        raw = httpx2.post(
            f"{second.url}/mcp",
            headers={"X-API-Key": DAVE, "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 7, "method": "ping"},
            timeout=10,
        )
        # The budget is Dave's across both replicas, so his SSE session on the other one is limited.
        with pytest.raises(MCPError) as on_sse, anyio.fail_after(15):
            await over_sse.call_tool("list_agents", {})
        # The session survives the refusal: the next call is refused the same way, not left hanging.
        with pytest.raises(MCPError) as again, anyio.fail_after(15):
            await over_sse.call_tool("list_agents", {})
    async with mcp_client(first, BOB) as bob:
        bystander = await bob.call_tool("list_agents", {})
    for refusal in (on_mcp, on_sse.value, again.value):
        assert refusal.error.message.startswith("request-rate limit reached: too many requests for dave")
        assert "retry in" in refusal.error.message
        assert isinstance(refusal.error.data, dict) and refusal.error.data["type"] == "rate_limited"
        assert 1 <= refusal.error.data["retry_after"] <= 60
    assert raw.status_code == 429 and 1 <= int(raw.headers["retry-after"]) <= 60
    assert raw.headers["content-type"] == "application/json"
    assert raw.json()["id"] == 7 and raw.json()["error"]["data"]["type"] == "rate_limited"
    assert not bystander.is_error
