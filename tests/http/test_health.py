"""Health, readiness with reasons, and status (bridge/http/health.py, bridge/http/status.py), against
a running bridge."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
from mcp import Client

from tests.helpers import text_of
from tests.procs import Proc, bridge_env, free_port, running, start_bridge


async def wait_ready(url: str, want: int, timeout: float = 20.0) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            async with httpx2.AsyncClient() as http:
                response = await http.get(f"{url}/readyz")
            if response.status_code == want:
                body: dict[str, Any] = response.json()
                return body
            await anyio.sleep(0.2)


async def test_health_ready_and_status_against_dust_redis_and_clamd(
    simulator: Proc, redis_server: Proc, clamd: Proc
) -> None:
    with running(start_bridge(bridge_env(simulator, redis_server.port, clamd))) as bridge:
        async with httpx2.AsyncClient() as http:
            health = await http.get(f"{bridge.url}/healthz")
            status = (await http.get(f"{bridge.url}/status")).json()
        ready = await wait_ready(bridge.url, 200)
        async with httpx2.AsyncClient() as http:
            after = (await http.get(f"{bridge.url}/status")).json()
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert status["dependencies"] == {"checked": False}
    # /status shows what readiness last found, scanner included, without probing anything itself.
    assert {k: after["dependencies"][k] for k in ("store", "dust", "scanner")} == ready["checks"]
    assert after["uploads"]["scan"] == "required"
    assert ready["checks"] == {"store": "ok", "dust": "ok", "scanner": "ok"}
    assert status["mode"] == "dust" and status["store"] == "redis"
    assert status["dust"]["circuit"] == "closed"
    assert status["worker"] == {"pid": bridge.pid, "workers": 1}  # one process: it answers everything
    assert "sk-" not in str(status)


async def test_readyz_names_an_unreachable_dust(redis_server: Proc) -> None:
    env = bridge_env(None, redis_server.port)
    env.update(
        {
            "DUST_BASE_URL": f"http://127.0.0.1:{free_port()}",
            "DUST_API_KEY": "sk-unreachable000",
            "DUST_WORKSPACE_ID": "demo",
            "BRIDGE_DEMO": "off",
            "BRIDGE_DUST_MAX_RETRIES": "0",
        }
    )
    with running(start_bridge(env)) as bridge:
        body = await wait_ready(bridge.url, 503)
        async with Client(f"{bridge.url}/mcp") as client:
            result = await client.call_tool("list_agents", {})
    assert body["checks"]["dust"] == "unavailable"
    assert "Dust" in body["reason"]
    assert result.is_error
    assert "Dust is unreachable right now" in text_of(result)
    assert "sk-unreachable000" not in bridge.log() + text_of(result) + str(body)
