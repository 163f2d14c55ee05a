"""Client keys and isolation: two principals side by side over /mcp and /sse, against a running bridge."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from bridge.security.auth import hash_key, match_key, new_key, parse_keys
from tests.helpers import text_of
from tests.procs import Proc, bridge_env, running, start_bridge

ALICE, BOB = new_key(), new_key()
KEYS = f"alice:{hash_key(ALICE).hex()},bob:{hash_key(BOB).hex()}"


# --- key handling -------------------------------------------------------------------------------


def test_keys_parse_from_the_setting_and_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# team keys\ncarol:{hash_key('c').hex()}\n\n", encoding="utf-8")
    keys = parse_keys([f"alice:{hash_key('a').hex()}", f"@{key_file}"])
    assert [k.name for k in keys] == ["alice", "carol"]
    assert match_key("a", keys) is keys[0]
    assert match_key("c", keys) is keys[1]
    assert match_key("b", keys) is None


@pytest.mark.parametrize(
    "entry",
    ["alice", "alice:notahash", f"bad name:{hash_key('x').hex()}", f":{hash_key('x').hex()}"],
)
def test_malformed_key_entries_are_refused_without_echoing_them(entry: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_keys([entry])
    assert "entry 1 is not name:sha256hex" in str(info.value)
    assert hash_key("x").hex() not in str(info.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="same name"):
        parse_keys([f"a:{hash_key('1').hex()}", f"a:{hash_key('2').hex()}"])


# --- a shared bridge with two principals --------------------------------------------------------


@pytest.fixture(scope="module")
def bridge(
    simulator: Proc, redis_server: Proc, clamd: Proc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    env = bridge_env(
        simulator,
        redis_server.port,
        clamd,
        BRIDGE_API_KEYS=KEYS,
        BRIDGE_UPLOAD_DIR=str(tmp_path_factory.mktemp("up")),
    )
    with running(start_bridge(env)) as proc:
        yield proc


def mcp_client(bridge: Proc, key: str | None, mode: str = "auto", header: str = "authorization") -> Client:
    headers = (
        {}
        if key is None
        else ({"Authorization": f"Bearer {key}"} if header == "authorization" else {"X-API-Key": key})
    )
    transport = streamable_http_client(
        f"{bridge.url}/mcp", http_client=httpx2.AsyncClient(headers=headers, timeout=60)
    )
    return Client(transport, mode=mode)  # type: ignore[arg-type]


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
    assert httpx2.get(f"{bridge.url}/status", timeout=10).json()["client_keys"] == "required"


async def test_both_header_styles_work(bridge: Proc) -> None:
    for header in ("authorization", "x-api-key"):
        async with mcp_client(bridge, ALICE, header=header) as client:
            assert {t.name for t in (await client.list_tools()).tools} >= {"ask_agent"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_principal_cannot_see_or_use_anothers_conversation(bridge: Proc, mode: str) -> None:
    async with mcp_client(bridge, ALICE, mode) as alice:
        first = await alice.call_tool("ask_agent", {"agent": "echo", "message": "alice's secret plan"})
        handle = (first.structured_content or {})["conversation"]
    never_existed = "dmc_" + "Z" * 32
    async with mcp_client(bridge, BOB, mode) as bob:
        stolen = await bob.call_tool("ask_agent", {"agent": "echo", "message": "hi", "conversation": handle})
        fake = await bob.call_tool(
            "ask_agent", {"agent": "echo", "message": "hi", "conversation": never_existed}
        )
        peek = await bob.call_tool("get_conversation", {"conversation": handle})
        end = await bob.call_tool("end_conversation", {"conversation": handle})
        listed = {r.uri for r in (await bob.list_resources()).resources}
        with pytest.raises(Exception) as read_error:
            await bob.read_resource(f"dust://conversations/{handle}")
    assert stolen.is_error and text_of(stolen) == text_of(fake)
    assert peek.is_error and "unknown or expired conversation handle" in text_of(peek)
    assert end.is_error
    assert f"dust://conversations/{handle}" not in listed
    assert "alice's secret plan" not in str(read_error.value)
    async with mcp_client(bridge, ALICE, mode) as alice:
        mine = await alice.call_tool(
            "ask_agent", {"agent": "echo", "message": "still mine", "conversation": handle}
        )
    assert text_of(mine).startswith("Echo (turn 2): still mine")


async def test_uploads_are_private_to_their_principal(bridge: Proc) -> None:
    async with mcp_client(bridge, ALICE) as alice:
        uploaded = await alice.call_tool(
            "upload_file",
            {"filename": "plan.txt", "content_base64": base64.b64encode(b"alice only").decode()},
        )
        record: dict[str, Any] = uploaded.structured_content or {}
        alice_listed = {r.uri for r in (await alice.list_resources()).resources}
    async with mcp_client(bridge, BOB) as bob:
        attach = await bob.call_tool(
            "ask_agent", {"agent": "file-reader", "message": "hi", "files": [record["uri"]]}
        )
        bob_listed = {r.uri for r in (await bob.list_resources()).resources}
        with pytest.raises(Exception) as read_error:
            await bob.read_resource(record["uri"])
    assert record["uri"] in alice_listed
    assert record["uri"] not in bob_listed
    assert attach.is_error and "unknown or expired upload" in text_of(attach)
    assert "unknown or expired upload" in str(read_error.value)


async def test_uploads_over_http_belong_to_the_key_that_sent_them(bridge: Proc) -> None:
    response = httpx2.post(
        f"{bridge.url}/v1/uploads",
        files={"file": ("note.txt", b"bob's note", "text/plain")},
        headers={"X-API-Key": BOB},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    async with mcp_client(bridge, ALICE) as alice:
        listed = {r.uri for r in (await alice.list_resources()).resources}
    async with mcp_client(bridge, BOB) as bob:
        mine = {r.uri for r in (await bob.list_resources()).resources}
    assert response.json()["uri"] in mine and response.json()["uri"] not in listed


async def test_an_mcp_session_is_bound_to_the_key_that_opened_it(bridge: Proc) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        init = await http.post(
            f"{bridge.url}/mcp",
            headers={"Authorization": f"Bearer {ALICE}", "Accept": "application/json, text/event-stream"},
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
        )
        session = init.headers["mcp-session-id"]
        hijack = await http.post(
            f"{bridge.url}/mcp",
            headers={
                "Authorization": f"Bearer {BOB}",
                "Accept": "application/json, text/event-stream",
                "Mcp-Session-Id": session,
                "MCP-Protocol-Version": "2025-11-25",
            },
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        )
    assert init.status_code == 200
    assert hijack.status_code == 404


async def test_legacy_sse_is_isolated_too(bridge: Proc) -> None:
    async with mcp_client(bridge, ALICE) as alice:
        first = await alice.call_tool("ask_agent", {"agent": "echo", "message": "over mcp"})
    handle = (first.structured_content or {})["conversation"]
    async with Client(sse_client(f"{bridge.url}/sse", headers={"X-API-Key": BOB})) as bob:
        stolen = await bob.call_tool("ask_agent", {"agent": "echo", "message": "x", "conversation": handle})
    async with Client(sse_client(f"{bridge.url}/sse", headers={"X-API-Key": ALICE})) as alice_sse:
        mine = await alice_sse.call_tool(
            "ask_agent", {"agent": "echo", "message": "over sse", "conversation": handle}
        )
    assert stolen.is_error and "unknown or expired conversation handle" in text_of(stolen)
    assert text_of(mine).startswith("Echo (turn 2): over sse")


def test_audit_log_records_auth_and_tool_calls_without_secrets(bridge: Proc) -> None:
    httpx2.post(f"{bridge.url}/mcp", headers={"Authorization": "Bearer dmb_guess"}, timeout=10)
    events = [
        json.loads(line.split("bridge.audit: ", 1)[1])
        for line in bridge.log().splitlines()
        if "bridge.audit: " in line
    ]
    kinds = {e["event"] for e in events}
    assert {"auth_failure", "auth_success", "tool_call", "upload_accepted"} <= kinds
    assert any(e["event"] == "tool_call" and e["principal"] == "alice" for e in events)
    log = bridge.log()
    for secret in (ALICE, BOB, "dmb_guess"):
        assert secret not in log
