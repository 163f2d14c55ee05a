"""The key check on the MCP and upload routes (bridge/http/middleware/client_auth.py): missing and
wrong keys get the same 401, the open routes stay open, and the audited client is the peer unless
a trusted proxy says otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from bridge.security.auth import hash_key, new_key
from tests.helpers import audit_events
from tests.procs import Proc, bridge_env, running, start_bridge

KEY = new_key()


@pytest.fixture(scope="module")
def bridge(simulator: Proc) -> Iterator[Proc]:
    with running(start_bridge(bridge_env(simulator, BRIDGE_API_KEYS=f"web:{hash_key(KEY).hex()}"))) as proc:
        yield proc


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/mcp"), ("GET", "/sse"), ("POST", "/messages/?session_id=0"), ("POST", "/v1/uploads")],
)
@pytest.mark.parametrize("key", [None, "dmb_wrong", "Bearer"])
def test_protected_routes_need_a_valid_key_and_say_nothing_more(
    bridge: Proc, method: str, path: str, key: str | None
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx2.request(method, f"{bridge.url}{path}", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="dust-mcp-bridge"'
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "unauthorized"
    # Missing and wrong keys get byte-identical answers.
    assert response.content == httpx2.request(method, f"{bridge.url}{path}", timeout=10).content


def test_health_readiness_metrics_and_docs_stay_open(bridge: Proc) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/status", "/openapi.json"):
        assert httpx2.get(f"{bridge.url}{path}", timeout=10).status_code in (200, 503), path
    status = httpx2.get(f"{bridge.url}/status", timeout=10).json()
    assert status["client_keys"] == "required" and status["identities"] == ["keys"]


def _audited_clients(bridge: Proc) -> list[str]:
    return [event["client"] for event in audit_events(bridge.log()) if event["event"] == "auth_failure"]


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
