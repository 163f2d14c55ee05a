"""Request bodies read up to a cap and replayed to the app: the body caps of the MCP routes."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from starlette.types import Message, Receive


@dataclass
class CappedBody:
    """A request body read up to a cap, and the `receive` the app is to be called with."""

    data: bytes
    over_cap: bool  # the rest is unread: `receive` gives what follows what was read
    more: bool  # (when over the cap) whether the client has more of the body to send
    receive: Receive


async def read_capped_body(receive: Receive, cap: int, declared: bytes = b"") -> CappedBody:
    """Read the body up to `cap` (none of it when the declared length is over); keep it to replay."""
    if declared.isdigit() and int(declared) > cap:
        return CappedBody(b"", over_cap=True, more=True, receive=receive)
    body = bytearray()
    pending: deque[Message] = deque()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            pending.append(message)
            break
        body += message.get("body", b"")
        more = bool(message.get("more_body", False))
        if len(body) > cap:
            return CappedBody(bytes(body), over_cap=True, more=more, receive=receive)
        if not more:
            break
    pending.appendleft({"type": "http.request", "body": bytes(body), "more_body": False})

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return CappedBody(bytes(body), over_cap=False, more=False, receive=replayed)
