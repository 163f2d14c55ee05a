"""Transport safety: Host/Origin allow-lists (the SDK's on the MCP routes, the guard's on the uploads
route) and a clear body cap on /mcp (bridge/http/middleware/transport_guard.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bridge.app import create_app
from bridge.config import load_settings
from bridge.http.allow_lists import LOOPBACK_HOSTS, LOOPBACK_ORIGINS, AllowLists
from bridge.http.middleware.jsonrpc_guard import JsonRpcGuardMiddleware
from bridge.http.middleware.transport_guard import TransportGuardMiddleware
from bridge.security.auth import hash_key, new_key
from tests.helpers import audit_events
from tests.http.helpers import INIT, mcp_headers, refused
from tests.procs import Proc, bridge_env, running, start_bridge

KEY = new_key()
APP = "https://app.example.com"
MCP_HEADERS = mcp_headers(KEY)


# --- Host/Origin on the non-MCP routes (CSRF, DNS rebinding) ------------------------------------

TOOL = "https://tool.example.com"


def upload(bridge: Proc, headers: dict[str, str] | None = None) -> httpx2.Response:
    """A small multipart upload, as a cross-site form or a curl would send it."""
    return httpx2.post(
        f"{bridge.url}/v1/uploads",
        files={"file": ("note.txt", b"a note", "text/plain")},
        headers=headers or {},
        timeout=30,
    )


async def _upload_uris(bridge: Proc) -> set[str]:
    async with Client(streamable_http_client(f"{bridge.url}/mcp")) as client:
        return {str(r.uri) for r in (await client.list_resources()).resources if "uploads" in str(r.uri)}


async def test_uploads_get_the_host_and_origin_checks_of_the_mcp_routes(
    simulator: Proc, tmp_path: Path
) -> None:
    # Keyless local mode: the case where a forged cross-site POST would otherwise go through.
    env = bridge_env(
        simulator,
        BRIDGE_SCAN_MODE="off",
        BRIDGE_UPLOAD_DIR=str(tmp_path),
        BRIDGE_ALLOWED_ORIGINS=TOOL,
        BRIDGE_CORS_ORIGINS=APP,
    )
    with running(start_bridge(env)) as bridge:
        loopback = f"http://localhost:{bridge.port}"
        rebinding = upload(bridge, {"Host": f"attacker.example:{bridge.port}"})
        forged = upload(bridge, {"Origin": "https://evil.example"})
        sandboxed = upload(bridge, {"Origin": "null"})
        cross_site = upload(bridge, {"Sec-Fetch-Site": "cross-site"})
        accepted = {
            "curl (no Origin)": upload(bridge),
            "loopback page": upload(bridge, {"Origin": loopback, "Sec-Fetch-Site": "same-origin"}),
            "BRIDGE_CORS_ORIGINS": upload(bridge, {"Origin": APP, "Sec-Fetch-Site": "cross-site"}),
            "BRIDGE_ALLOWED_ORIGINS": upload(bridge, {"Origin": TOOL, "Sec-Fetch-Site": "cross-site"}),
        }
        # BRIDGE_ALLOWED_ORIGINS reaches the SDK's check on /mcp too.
        mcp_from_tool = httpx2.post(f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Origin": TOOL})
        mcp_from_evil = httpx2.post(
            f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Origin": "https://evil.example"}
        )
        stored = await _upload_uris(bridge)
        refusals = [e for e in audit_events(bridge.log()) if e["event"] == "transport_refused"]
    refused(rebinding, 421, "misdirected_request")
    assert "BRIDGE_ALLOWED_HOSTS" in rebinding.json()["detail"]
    refused(forged, 403, "forbidden_origin")
    assert "BRIDGE_ALLOWED_ORIGINS" in forged.json()["detail"]
    refused(sandboxed, 403, "forbidden_origin")
    refused(cross_site, 403, "forbidden_origin")
    for case, response in accepted.items():
        assert response.status_code == 201, (case, response.text)
    # Only the accepted ones reached Dust and the store.
    assert stored == {response.json()["uri"] for response in accepted.values()}
    assert mcp_from_tool.status_code == 200
    assert mcp_from_evil.status_code == 403
    assert [e["reason"] for e in refusals] == ["host", "origin", "origin", "cross-site"]


async def test_allowed_hosts_star_turns_off_the_host_check_but_never_the_origin_check(
    simulator: Proc, tmp_path: Path
) -> None:
    env = bridge_env(
        simulator, BRIDGE_SCAN_MODE="off", BRIDGE_UPLOAD_DIR=str(tmp_path), BRIDGE_ALLOWED_HOSTS="*"
    )
    with running(start_bridge(env)) as bridge:
        any_host = upload(bridge, {"Host": "bridge.internal.example"})
        forged = upload(bridge, {"Host": "bridge.internal.example", "Origin": "https://evil.example"})
        mcp_any_host = httpx2.post(
            f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Host": "bridge.internal.example"}
        )
        # With `*` the SDK checks nothing; the Origin check still covers the MCP routes.
        mcp_forged = httpx2.post(
            f"{bridge.url}/mcp", json=INIT, headers={**MCP_HEADERS, "Origin": "https://evil.example"}
        )
        sse_forged = httpx2.get(f"{bridge.url}/sse", headers={"Origin": "https://evil.example"}, timeout=10)
    assert any_host.status_code == 201, any_host.text
    refused(forged, 403, "forbidden_origin")
    assert mcp_any_host.status_code == 200
    refused(mcp_forged, 403, "forbidden_origin")
    refused(sse_forged, 403, "forbidden_origin")


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"BRIDGE_ALLOWED_HOSTS": "bridge.example.com", "BRIDGE_ALLOWED_ORIGINS": TOOL},
        {"BRIDGE_ALLOWED_ORIGINS": TOOL, "BRIDGE_CORS_ORIGINS": APP},
    ],
)
def test_the_guard_uses_exactly_the_sdks_allow_lists(values: dict[str, str]) -> None:
    settings = load_settings(**values)
    app = create_app(settings)
    guard = next(m for m in app.user_middleware if m.cls is TransportGuardMiddleware)
    jsonrpc_guard = next(m for m in app.user_middleware if m.cls is JsonRpcGuardMiddleware)
    allow, sdk = guard.kwargs["allow"], jsonrpc_guard.kwargs["security_settings"]
    assert sdk is app.state.mcp.session_manager.security_settings
    assert sdk.enable_dns_rebinding_protection
    assert allow.hosts == sdk.allowed_hosts == [*LOOPBACK_HOSTS, *settings.allowed_hosts]
    assert allow.origins == sdk.allowed_origins
    assert sdk.allowed_origins == [*LOOPBACK_ORIGINS, *settings.allowed_origins, *settings.cors_origins]


def test_allowed_hosts_star_turns_the_sdks_checks_off() -> None:
    allow = AllowLists.of(["*"], [TOOL])
    assert allow.hosts is None and allow.origins == [*LOOPBACK_ORIGINS, TOOL]
    assert not allow.transport_security().enable_dns_rebinding_protection


# --- body caps ----------------------------------------------------------------------------------

MCP_CAP = 4 * 1024 * 1024


def _too_large(response: httpx2.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["data"] == {"type": "too_large", "status": 413, "limit_bytes": MCP_CAP}
    assert "request body too large" in error["message"] and "/v1/uploads" in error["message"]


async def test_oversized_mcp_bodies_get_a_clear_413(simulator: Proc) -> None:
    big = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + b"x" * MCP_CAP + b'"}}'

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap must hold while reading
        for start in range(0, len(big), 256 * 1024):
            yield big[start : start + 256 * 1024]

    json_headers = {**MCP_HEADERS, "Content-Type": "application/json"}
    with running(start_bridge(bridge_env(simulator, BRIDGE_API_KEYS=f"web:{hash_key(KEY).hex()}"))) as bridge:
        declared = httpx2.post(f"{bridge.url}/mcp", content=big, headers=json_headers, timeout=30)
        streamed = httpx2.post(f"{bridge.url}/mcp", content=chunked(), headers=json_headers, timeout=30)
        legacy = httpx2.post(
            f"{bridge.url}/messages/?session_id={'0' * 32}", content=big, headers=json_headers, timeout=30
        )
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        async with Client(streamable_http_client(f"{bridge.url}/mcp", http_client=http)) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("ask_agent", {"agent": "echo", "message": "y" * MCP_CAP})
            still_fine = await client.call_tool("ask_agent", {"agent": "echo", "message": "small"})
    for response in (declared, streamed, legacy):
        _too_large(response)
    assert "request body too large" in refused.value.error.message
    assert not still_fine.is_error
