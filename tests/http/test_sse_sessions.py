"""The SDK's legacy SSE wire, as the stream tap relies on it (bridge/http/sse_sessions.py)."""

from __future__ import annotations

import json
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Message

from bridge.http.middleware.jsonrpc_guard import JsonRpcGuardMiddleware
from bridge.http.sse_sessions import session_of_endpoint_event
from tests.http.helpers import INIT, is_invalid_request


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
    (bridge/http/sse_sessions.py), and legacy SSE clients would wait for answers again."""
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
        is_invalid_request(json.loads(refused.split(b"data: ", 1)[1]))
        closed.set()
    assert len(guard.sessions) == 0
