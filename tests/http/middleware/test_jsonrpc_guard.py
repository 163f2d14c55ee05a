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
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from mcp.client.sse import sse_client
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST
from starlette.types import Message

from bridge.http.middleware.jsonrpc_guard import (
    ID_SEARCH_BYTES,
    IdScan,
    JsonRpcGuardMiddleware,
    invalid_request_id,
    session_of_endpoint_event,
)
from bridge.http.middleware.transport import MCP_MAX_BODY_BYTES, TOO_LARGE_CODE
from bridge.security.auth import hash_key, new_key
from tests.helpers import text_of
from tests.procs import Proc, bridge_env, running, start_bridge

HANDSHAKE = "2025-11-25"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
CANCELLED = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}
# Each id that is neither a string nor an integer, by the name the error message gives it.
BAD_IDS = {"object": {"n": 1}, "list": [1], "boolean": True, "number": 1.5, "null": None}
# Long enough for a cold session (the first tools/list builds the agent listing); far below 60 s.
ANSWER_SECONDS = 10


@pytest.fixture(scope="module")
def bridge(simulator: Proc) -> Iterator[Proc]:
    with running(start_bridge(bridge_env(simulator))) as proc:
        yield proc


def _is_invalid_request(error: dict[str, Any]) -> None:
    assert error["jsonrpc"] == "2.0" and error["id"] is None, error
    assert error["error"]["code"] == INVALID_REQUEST, error
    assert "id must be a string or an integer" in error["error"]["message"], error


# --- finding the id -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "bad"), BAD_IDS.items())
def test_a_request_id_of_each_invalid_kind_is_named(kind: str, bad: Any) -> None:
    first = json.dumps({"jsonrpc": "2.0", "id": bad, "method": "tools/list"}).encode()
    last = json.dumps({"jsonrpc": "2.0", "method": "m", "params": {"id": 1, "s": '"}'}, "id": bad}).encode()
    assert invalid_request_id(first) == kind
    assert invalid_request_id(last) == kind


def test_valid_ids_notifications_responses_and_batches_are_left_to_the_sdk() -> None:
    for body in (
        {"jsonrpc": "2.0", "id": "a", "method": "tools/list"},
        {"jsonrpc": "2.0", "id": -3, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
        [{"jsonrpc": "2.0", "id": {}, "method": "tools/list"}],
    ):
        assert invalid_request_id(json.dumps(body).encode()) is None, body
    assert invalid_request_id(b"{not json") is None


def _scanned(body: bytes, size: int) -> IdScan:
    scan = IdScan()
    for start in range(0, len(body), size):
        scan.feed(body[start : start + size])
        if scan.id is not None:
            break
    return scan


def test_the_id_of_a_body_is_found_across_chunks_wherever_it_is() -> None:
    def body(pad: bytes) -> tuple[bytes, bytes]:
        early = b'{"jsonrpc":"2.0","id":"r\\"1","method":"tools/call","params":{"a":"' + pad + b'"}}'
        late = b'{"jsonrpc":"2.0","method":"m","params":{"a":"' + pad + b'\\\\", "id": 3},"id": 42}'
        return early, late

    early, late = body(b'x\\"{' * 10)
    for size in range(1, 8):  # chunks that end anywhere: inside keys, escapes, numbers
        assert _scanned(early, size).id.value == 'r"1'  # type: ignore[union-attr]
        assert _scanned(late, size).id.value == 42  # type: ignore[union-attr]
    early, late = body(b"x" * MCP_MAX_BODY_BYTES)  # past the cap, and still within the search
    assert len(late) < ID_SEARCH_BYTES
    assert _scanned(early, 65536).id.value == 'r"1'  # type: ignore[union-attr]
    assert _scanned(late, 65536).id.value == 42  # type: ignore[union-attr]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
MESSAGES = st.dictionaries(
    st.sampled_from(["jsonrpc", "id", "method", "params", "error", 'i"d', "ID"]) | st.text(max_size=3),
    JSON_VALUES,
    max_size=6,
)


def _kind(value: Any) -> str:
    kinds = ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "number"), (dict, "object"))
    fallback = "list" if value is not None else "null"
    return next((name for cls, name in kinds if isinstance(value, cls)), fallback)


@given(message=MESSAGES, size=st.integers(1, 40), indent=st.sampled_from([None, 2]), ascii_only=st.booleans())
def test_the_scan_agrees_with_a_json_parser_however_the_body_is_cut(
    message: dict[str, Any], size: int, indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(message, indent=indent, ensure_ascii=ascii_only).encode()
    kind = _kind(message["id"]) if "id" in message else None
    invalid = kind not in (None, "string", "integer") and "method" in message
    assert invalid_request_id(body) == (kind if invalid else None)
    scan = IdScan()
    for start in range(0, len(body), size):
        scan.feed(body[start : start + size])
    assert (scan.id.kind if scan.id is not None else None) == kind
    if kind in ("string", "integer"):
        assert scan.id is not None and scan.id.value == message["id"]


# --- the SDK's SSE wire, as the stream tap relies on it -----------------------------------------


def _scope(method: str, path: str, query: bytes = b"", body: bytes = b"") -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000")]
    if method == "POST":
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def test_the_sdk_sse_stream_is_still_what_the_tap_relies_on() -> None:
    """In process, against the installed SDK: if this fails, the SDK changed under SseSessionTap
    (bridge/http/middleware/jsonrpc_guard.py), and legacy SSE clients would wait for answers again."""
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    sdk_app = MCPServer("canary").sse_app(transport_security=security)
    guard = JsonRpcGuardMiddleware(sdk_app, security_settings=security)
    chunks: list[bytes] = []
    closed = anyio.Event()

    async def until_closed() -> Message:
        await closed.wait()
        return {"type": "http.disconnect"}

    async def stream_send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])

    async def post(message: dict[str, Any], query: bytes) -> int:
        body = json.dumps(message).encode()
        statuses: list[int] = []
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                await anyio.sleep_forever()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(sent: Message) -> None:
            if sent["type"] == "http.response.start":
                statuses.append(sent["status"])

        await guard(_scope("POST", "/messages/", query, body), receive, send)
        return statuses[0]

    async def next_chunk(after: int) -> bytes:
        with anyio.fail_after(5):
            while len(chunks) <= after:
                await anyio.sleep(0.01)
        return chunks[after]

    async with anyio.create_task_group() as tg:
        tg.start_soon(guard, _scope("GET", "/sse"), until_closed, stream_send)
        first = await next_chunk(0)
        session = session_of_endpoint_event(first)
        assert session is not None, (
            "the SDK's GET /sse response no longer starts with an `endpoint` event whose URL carries"
            f" session_id=<32 hex> in its first body chunk (it sent {first!r}): SseSessionTap cannot"
            " find a session's stream any more"
        )
        assert len(guard.sessions) == 1
        query = f"session_id={session}".encode()
        assert await post(INIT, query) == 202
        answer = await next_chunk(1)
        assert answer.startswith(b"event: message") and answer.endswith((b"\r\n\r\n", b"\n\n")), (
            f"the SDK's SSE response sent a body chunk that is not one whole event ({answer[:200]!r}):"
            " SseSessionTap puts its events between chunks, which is only safe if every chunk is whole"
        )
        assert json.loads(answer.split(b"data: ", 1)[1])["id"] == 1
        assert await post({"jsonrpc": "2.0", "id": True, "method": "ping"}, query) == 400
        refused = await next_chunk(2)
        _is_invalid_request(json.loads(refused.split(b"data: ", 1)[1]))
        closed.set()
    assert len(guard.sessions) == 0


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
    _is_invalid_request(refused.json())
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
    _is_invalid_request(refused.json())
    _is_invalid_request(on_stream)
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
