"""Transport safety: Host/Origin allow-lists, CORS only where configured, X-Forwarded-* only from
trusted proxies."""

from __future__ import annotations

import json

import httpx2

from bridge.security.auth import hash_key, new_key
from tests.procs import Proc, bridge_env, running, start_bridge

KEY = new_key()
APP = "https://app.example.com"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {KEY}"}


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


def _audited_clients(bridge: Proc) -> list[str]:
    return [
        json.loads(line.split("bridge.audit: ", 1)[1])["client"]
        for line in bridge.log().splitlines()
        if "bridge.audit: " in line and '"auth_failure"' in line
    ]


def test_forwarded_for_is_believed_only_from_trusted_proxies(simulator: Proc) -> None:
    keys = f"web:{hash_key(KEY).hex()}"
    spoofed = {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer dmb_wrong"}
    with running(start_bridge(bridge_env(simulator, BRIDGE_API_KEYS=keys))) as untrusting:
        httpx2.post(f"{untrusting.url}/mcp", headers=spoofed)
        untrusting_seen = _audited_clients(untrusting)
    with running(
        start_bridge(bridge_env(simulator, BRIDGE_API_KEYS=keys, BRIDGE_TRUSTED_PROXIES="127.0.0.1"))
    ) as behind_proxy:
        httpx2.post(f"{behind_proxy.url}/mcp", headers=spoofed)
        proxied_seen = _audited_clients(behind_proxy)
    assert untrusting_seen == ["127.0.0.1"]
    assert proxied_seen == ["203.0.113.7"]


def test_metrics_can_be_put_behind_their_own_key(simulator: Proc) -> None:
    with running(start_bridge(bridge_env(simulator, BRIDGE_METRICS_KEY="scrape-me-please"))) as bridge:
        anonymous = httpx2.get(f"{bridge.url}/metrics", timeout=10)
        wrong = httpx2.get(f"{bridge.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
        scraper = httpx2.get(
            f"{bridge.url}/metrics", headers={"Authorization": "Bearer scrape-me-please"}, timeout=10
        )
        health = httpx2.get(f"{bridge.url}/healthz", timeout=10)
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.content == wrong.content
    assert scraper.status_code == 200 and "bridge_uploads_total" in scraper.text
    assert health.status_code == 200
