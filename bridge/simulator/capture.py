"""A record of the request bodies clients POST to `/api/...`, read back through `GET /_sim/bodies`.

Contract tests use it to check what the bridge sends against Dust's own request schemas. JSON bodies
are read whole before the route runs (they are small) and replayed to it unchanged; multipart
uploads are recorded as metadata only and pass through unread, so large files are never buffered
here. Responses are never touched beyond noting their status, so event streams flow as before.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.simulator.state import Simulator

# Larger JSON bodies are still passed on whole, but recorded without their content.
MAX_RECORDED_BYTES = 1024 * 1024
_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyCapture:
    """ASGI middleware recording the bodies of POST/PUT/PATCH requests under `/api/`."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        recorded = scope["type"] == "http" and scope["method"] in _METHODS
        if not recorded or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        content_type = _header(scope, b"content-type") or ""
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": bytes(scope.get("query_string", b"")).decode("latin-1"),
            "content_type": content_type,
            "status": None,
        }
        # The stats of the time the request arrived, even if a reset happens meanwhile.
        self.sim.stats.bodies.append(entry)

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        if content_type.lower().startswith("multipart/"):
            entry["multipart"] = True
            entry["content_length"] = _header(scope, b"content-length")
            await self.app(scope, receive, noting_send)
            return

        body, disconnected = await _read_body(receive)
        _describe(entry, body)
        await self.app(scope, _replay(body, disconnected, receive), noting_send)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and whether the client left before sending all of it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    """A `receive` that hands the route the body already read, then defers to the real one."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _describe(entry: dict[str, Any], body: bytes) -> None:
    entry["size"] = len(body)
    if len(body) > MAX_RECORDED_BYTES:
        entry["truncated"] = True
        return
    try:
        entry["json"] = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        entry["invalid_json"] = True
        entry["text"] = body[:2000].decode("utf-8", errors="replace")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
