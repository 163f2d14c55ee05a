"""CORS only for the configured origins, and no CORS headers unless configured
(bridge/http/middleware/cors.py); the SDK's Host/Origin checks on /mcp beside it."""

from __future__ import annotations

import httpx2

from bridge.security.auth import hash_key, new_key
from tests.http.helpers import INIT, mcp_headers
from tests.procs import Proc, bridge_env, running, start_bridge

KEY = new_key()
APP = "https://app.example.com"
MCP_HEADERS = mcp_headers(KEY)


def test_cors_only_for_configured_origins_and_hosts_are_checked(simulator: Proc) -> None:
    env = bridge_env(
        simulator,
        BRIDGE_API_KEYS=f"web:{hash_key(KEY).hex()}",
        BRIDGE_CORS_ORIGINS=APP,
        BRIDGE_ALLOWED_HOSTS="bridge.example.com",
    )
    with running(start_bridge(env)) as bridge:
        preflight = httpx2.options(
            f"{bridge.url}/mcp",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,mcp-session-id",
            },
        )
        evil_preflight = httpx2.options(
            f"{bridge.url}/mcp",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        from_app = httpx2.post(f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Origin": APP})
        from_evil = httpx2.post(
            f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Origin": "https://evil.example"}
        )
        proxied_host = httpx2.post(
            f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Host": "bridge.example.com"}
        )
        rebinding = httpx2.post(
            f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Host": "attacker.example"}
        )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == APP
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in evil_preflight.headers
    assert from_app.status_code == 200 and from_app.headers["access-control-allow-origin"] == APP
    assert "mcp-session-id" in from_app.headers["access-control-expose-headers"].lower()
    assert from_evil.status_code == 403
    assert proxied_host.status_code == 200
    assert rebinding.status_code == 421


def test_no_cors_headers_unless_configured(simulator: Proc) -> None:
    with running(start_bridge(bridge_env(simulator))) as bridge:
        response = httpx2.options(
            f"{bridge.url}/mcp", headers={"Origin": APP, "Access-Control-Request-Method": "POST"}
        )
    assert "access-control-allow-origin" not in response.headers
