"""Client keys and isolation: two principals side by side over /mcp and /sse, against a running bridge."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import ReadResourceResult, TextResourceContents

from bridge.security.auth import hash_key, match_key, new_key, parse_keys
from bridge.store.records import new_handle, new_upload_id
from tests.helpers import approval_of, audit_events, run_cli, text_of
from tests.http.helpers import INIT
from tests.procs import Proc, bridge_env, running, start_bridge

ALICE, BOB = new_key(), new_key()
KEYS = f"alice:{hash_key(ALICE).hex()},bob:{hash_key(BOB).hex()}"
INIT_PARAMS = INIT["params"]


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


async def test_only_the_owner_of_a_conversation_answers_what_its_agent_waits_for(bridge: Proc) -> None:
    async with mcp_client(bridge, ALICE) as alice:
        first = await alice.call_tool("ask_agent", {"agent": "needs-approval", "message": "alice's report"})
        paused: dict[str, Any] = first.structured_content or {}
    assert paused["status"] == "waiting_for_user"
    approval = approval_of(paused)
    async with mcp_client(bridge, BOB) as bob:
        approved = await bob.call_tool("approve_action", approval)
        waited = await bob.call_tool("wait_for_answer", {"conversation": paused["conversation"]})
    assert approved.is_error and "unknown or expired conversation handle" in text_of(approved)
    assert waited.is_error and "unknown or expired conversation handle" in text_of(waited)
    async with mcp_client(bridge, ALICE) as alice:
        done = await alice.call_tool("approve_action", approval)
    assert (done.structured_content or {})["answer"] == "Email sent to team@example.com: alice's report"


async def test_a_generated_file_is_readable_by_its_conversations_owner_only(bridge: Proc) -> None:
    async with mcp_client(bridge, ALICE) as alice:
        made = await alice.call_tool("ask_agent", {"agent": "file-maker", "message": "alice's numbers"})
        (chart,) = [f["uri"] for f in (made.structured_content or {})["files"] if f["name"] == "chart.png"]
        mine = await alice.read_resource(chart)
    async with mcp_client(bridge, BOB) as bob:
        with pytest.raises(MCPError, match="not a file an agent made in one of your conversations"):
            await bob.read_resource(chart)
    assert mine.contents


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
            json=INIT,
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
    events = audit_events(bridge.log())
    kinds = {e["event"] for e in events}
    assert {"auth_failure", "auth_success", "tool_call", "upload_accepted"} <= kinds
    assert any(e["event"] == "tool_call" and e["principal"] == "alice" for e in events)
    log = bridge.log()
    for secret in (ALICE, BOB, "dmb_guess"):
        assert secret not in log


def sse(bridge: Proc, key: str) -> Client:
    return Client(sse_client(f"{bridge.url}/sse", headers={"X-API-Key": key}))


def resource_text(result: ReadResourceResult) -> str:
    return "".join(c.text for c in result.contents if isinstance(c, TextResourceContents))


def _without_ids(message: str, *ids: str) -> str:
    for value in ids:
        message = message.replace(value, "<id>")
    return message


async def test_over_sse_uploads_and_conversations_are_private_too(bridge: Proc) -> None:
    async with sse(bridge, ALICE) as alice:
        uploaded = await alice.call_tool(
            "upload_file",
            {"filename": "sse-plan.txt", "content_base64": base64.b64encode(b"alice over sse").decode()},
        )
        record: dict[str, Any] = uploaded.structured_content or {}
        first = await alice.call_tool("ask_agent", {"agent": "echo", "message": "alice-sse-secret"})
        handle = (first.structured_content or {})["conversation"]
        alice_listed = {str(r.uri) for r in (await alice.list_resources()).resources}
        own_upload = await alice.read_resource(record["uri"])
        own_conversation = await alice.read_resource(f"dust://conversations/{handle}")
    never_upload, never_handle = new_upload_id(), new_handle()
    async with sse(bridge, BOB) as bob:
        bob_listed = {str(r.uri) for r in (await bob.list_resources()).resources}
        with pytest.raises(MCPError) as upload_read:
            await bob.read_resource(record["uri"])
        with pytest.raises(MCPError) as upload_never:
            await bob.read_resource(f"bridge://uploads/{never_upload}")
        with pytest.raises(MCPError) as conversation_read:
            await bob.read_resource(f"dust://conversations/{handle}")
        with pytest.raises(MCPError) as conversation_never:
            await bob.read_resource(f"dust://conversations/{never_handle}")
        attach = await bob.call_tool(
            "ask_agent", {"agent": "file-reader", "message": "hi", "files": [record["uri"]]}
        )
        peek = await bob.call_tool("get_conversation", {"conversation": handle})
    assert not uploaded.is_error, text_of(uploaded)
    assert {record["uri"], f"dust://conversations/{handle}"} <= alice_listed
    assert "sse-plan.txt" in resource_text(own_upload)
    assert "alice-sse-secret" in resource_text(own_conversation)
    # Bob sees none of it, and a foreign id gets exactly the answer of one that never existed.
    assert record["uri"] not in bob_listed and f"dust://conversations/{handle}" not in bob_listed
    assert "unknown or expired upload" in upload_read.value.error.message
    assert _without_ids(upload_read.value.error.message, record["id"]) == _without_ids(
        upload_never.value.error.message, never_upload
    )
    assert _without_ids(conversation_read.value.error.message, handle) == _without_ids(
        conversation_never.value.error.message, never_handle
    )
    assert "alice-sse-secret" not in str(conversation_read.value) + str(peek)
    assert attach.is_error and "unknown or expired upload" in text_of(attach)
    assert peek.is_error and "unknown or expired conversation handle" in text_of(peek)


async def _sse_events(lines: AsyncIterator[str], into: list[dict[str, str]]) -> None:
    """Parse an SSE stream into `into`: one dict (event name, data) per event."""
    event: dict[str, str] = {}
    async for line in lines:
        if not line:
            if event:
                into.append(event)
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


async def test_an_sse_session_takes_messages_only_from_the_key_that_opened_it(bridge: Proc) -> None:
    events: list[dict[str, str]] = []

    def messages() -> list[dict[str, Any]]:
        return [json.loads(e["data"]) for e in events if e.get("event") == "message"]

    async def answer(request_id: int) -> dict[str, Any]:
        with anyio.fail_after(20):
            while not (found := [m for m in messages() if m.get("id") == request_id]):
                await anyio.sleep(0.02)
        return found[0]

    async with (
        httpx2.AsyncClient(timeout=30) as http,
        http.stream("GET", f"{bridge.url}/sse", headers={"X-API-Key": ALICE}) as stream,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_sse_events, stream.aiter_lines(), events)
        with anyio.fail_after(10):
            while not events:
                await anyio.sleep(0.02)
        endpoint = f"{bridge.url}{events[0]['data']}"
        assert events[0]["event"] == "endpoint" and "session_id=" in endpoint

        async def post(key: str | None, message: dict[str, Any]) -> httpx2.Response:
            headers = {"X-API-Key": key} if key else {}
            return await http.post(endpoint, json={"jsonrpc": "2.0", **message}, headers=headers)

        init = await post(ALICE, {"id": 1, "method": "initialize", "params": INIT_PARAMS})
        await answer(1)
        await post(ALICE, {"method": "notifications/initialized"})
        call = {"name": "ask_agent", "arguments": {"agent": "echo", "message": "bob-was-here"}}
        hijack = await post(BOB, {"id": 666, "method": "tools/call", "params": call})
        anonymous = await post(None, {"id": 667, "method": "tools/call", "params": call})
        mine = {"name": "ask_agent", "arguments": {"agent": "echo", "message": "alice-only"}}
        own = await post(ALICE, {"id": 2, "method": "tools/call", "params": mine})
        result = await answer(2)
        tg.cancel_scope.cancel()
    assert init.status_code == 202 and own.status_code == 202
    assert hijack.status_code == 404  # the SDK's answer for a session that is not yours: "not found"
    assert anonymous.status_code == 401
    assert "Echo (turn 1): alice-only" in json.dumps(result)
    # Nothing Bob sent reached Alice's session: no answer to it, no trace of its text.
    assert all(
        json.loads(e["data"]).get("id") not in (666, 667) for e in events if e.get("event") == "message"
    )
    assert "bob-was-here" not in json.dumps(events)


# --- the key command and stdio --------------------------------------------------------------------


async def test_keys_new_prints_a_key_and_the_entry_that_accepts_it(simulator: Proc) -> None:
    done = run_cli("keys", "new", "ci-bot")
    again = run_cli("keys", "new", "ci-bot")
    bad = run_cli("keys", "new", "not a name")
    assert done.returncode == 0, done.stderr
    key = re.search(r"^  (dmb_[A-Za-z0-9_-]{43})$", done.stdout, re.MULTILINE)
    entry = re.search(r"^  (ci-bot:[0-9a-f]{64})$", done.stdout, re.MULTILINE)
    assert key is not None and entry is not None, done.stdout
    # Only the hash goes into the config; the entry accepts exactly the printed key.
    (parsed,) = parse_keys([entry.group(1)])
    assert parsed.name == "ci-bot" and match_key(key.group(1), [parsed]) is parsed
    assert key.group(1) not in entry.group(1)
    assert key.group(1) not in again.stdout  # a fresh key every time
    assert bad.returncode == 2 and "key names are letters" in bad.stderr and not bad.stdout
    # And a bridge configured with that line lets the key in.
    with running(start_bridge(bridge_env(simulator, BRIDGE_API_KEYS=entry.group(1)))) as configured:
        async with mcp_client(configured, key.group(1)) as client:
            assert {t.name for t in (await client.list_tools()).tools} >= {"ask_agent"}
        refused = httpx2.post(f"{configured.url}/mcp", headers={"X-API-Key": new_key()}, timeout=10)
    assert refused.status_code == 401


async def test_stdio_needs_no_key_even_when_http_keys_are_configured(simulator: Proc) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_", "REDIS_"))},
        **bridge_env(simulator, BRIDGE_API_KEYS=KEYS),
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "bridge", "stdio"], env=env)
    async with Client(params) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        first = await client.call_tool("ask_agent", {"agent": "echo", "message": "local user"})
        handle = (first.structured_content or {})["conversation"]
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
    assert "ask_agent" in tools
    assert not first.is_error and text_of(first).startswith("Echo (turn 1): local user")
    assert f"dust://conversations/{handle}" in listed  # the local user's own conversation
