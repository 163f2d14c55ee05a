"""The open legacy SSE sessions' event streams, so that a refusal can be answered on the caller's own.

A `POST /messages/` the bridge refuses (too large, an invalid id, over the rate limit) would leave
the SDK's legacy SSE client waiting: it reads every answer from the session's event stream, and
gives up its whole session on any non-2xx answer to a POST. So the refusal is sent on that stream,
as the answer to the request's id, by `JsonRpcGuardMiddleware` and `RateLimitMiddleware`, both
through one `SseSessionTap`.

Reaching a legacy session's event stream: the SDK's `SseServerTransport` has no public way to send
on a session's stream, and its internals (the per-session writers, the `connect_sse` locals) are
private and not even the outgoing side. This module uses no private SDK name: `SseSessionTap`
wraps the ASGI `send` of each `GET /sse` response and relies on what the SDK puts on the wire:

1. the first body chunk carries the spec's `endpoint` event, whose URL has `session_id=<32 hex>`
   (the session's `UUID.hex`, which is what `POST /messages/` is matched against);
2. every body chunk is whole SSE events (sse-starlette sends one event per `http.response.body`),
   so one more whole event can go between two of them (under a lock: never inside one).

`tests/http/test_sse_sessions.py::test_the_sdk_sse_stream_is_still_what_the_tap_relies_on`
checks both against the installed SDK and says which one broke. A stream is only answered on for
the credential that opened it (the SDK's own `authorization_context` comparison).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import parse_qs
from uuid import UUID

import anyio
from anyio.abc import TaskGroup
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.http.jsonrpc import shutting_down_refusal, sse_event
from bridge.mcp.sessions import jsonrpc_messages

# A session's stream that takes longer than this to accept one more event is not answered on.
_DELIVER_SECONDS: Final = 5.0
# How long a draining stream stays open after its last answer, for the client to take that answer.
_LINGER_SECONDS: Final = 1.0
_SESSION_IN_ENDPOINT: Final = re.compile(rb"[?&]session_id=([0-9a-f]{32})")


def session_of_endpoint_event(chunk: bytes) -> str | None:
    """The session id (32 lowercase hex) an SSE `endpoint` event announces, if `chunk` holds one."""
    if b"event: endpoint" not in chunk:
        return None
    found = _SESSION_IN_ENDPOINT.search(chunk)
    return found.group(1).decode("ascii") if found is not None else None


def session_of_post(scope: Scope) -> str | None:
    """The session a `POST /messages/` names, as the SDK reads it (a UUID, in hex), if valid."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        return UUID(hex=(query.get("session_id") or [""])[0]).hex
    except ValueError:
        return None


def _owner(scope: Scope) -> AuthorizationContext | None:
    """The credential a request presents, as the SDK's transports compare it to a session's."""
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


def request_ids(body: bytes) -> tuple[list[str], bool]:
    """The ids (as JSON) of the requests a JSON-RPC body holds (none if it is not JSON), and whether
    one of them is a tool call (what may start work at Dust, refused by a process on its way out)."""
    messages = [m for m in jsonrpc_messages(body) or [] if isinstance(m, dict)]
    requests = [m for m in messages if "method" in m and "id" in m]
    return [json.dumps(m["id"]) for m in requests], any(m["method"] == "tools/call" for m in requests)


def _answered_ids(chunk: bytes) -> list[str]:
    """The ids (as JSON) of the responses one body chunk of the stream carries."""
    if b'"result"' not in chunk and b'"error"' not in chunk:
        return []
    ids = []
    for line in chunk.splitlines():
        if not line.startswith(b"data: "):
            continue
        with contextlib.suppress(ValueError):
            message = json.loads(line[6:])
            if isinstance(message, dict) and "id" in message and "method" not in message:
                ids.append(json.dumps(message["id"]))
    return ids


@dataclass
class SessionStream:
    """The open event stream of one legacy SSE session, to send one more whole event on.

    It knows the requests its session is serving (`pending`), so that a process on its way out
    can end it once they are answered (`drain`) rather than under them.
    """

    owner: AuthorizationContext | None
    send: Send
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    open: bool = True
    pending: set[str] = field(default_factory=set)
    draining: bool = False

    async def deliver(self, event: bytes) -> bool:
        """Send one whole SSE event between the stream's own events; False if that is not possible."""
        with anyio.move_on_after(_DELIVER_SECONDS):
            async with self.lock:
                if not self.open:
                    return False
                try:
                    await self.send({"type": "http.response.body", "body": event, "more_body": True})
                except OSError:
                    self.open = False
                    return False
                return True
        return False

    async def refuse_for_shutdown(self, ids: list[str]) -> None:
        """Answer the requests `ids` (as JSON) on the stream: this process is on its way out."""
        for request_id in ids:
            await self.deliver(sse_event(shutting_down_refusal(json.loads(request_id))))

    async def drain(self) -> None:
        """End the stream once no request of its session is unanswered (now, if none is)."""
        async with self.lock:
            self.draining = True
            await self.end_if_idle()

    def swallows(self, message: Message, first_body: bool) -> bool:
        """Whether `message` is what the SDK still sends to a stream `drain` has ended (its closing
        answer included, which would otherwise be an ASGI error), not for the client."""
        if message["type"] == "http.response.start":
            return not first_body
        return message["type"] == "http.response.body" and self.draining and not self.open

    def answered(self, body: bytes) -> bool:
        """Note the answers a body chunk carries; True when the last one a draining stream waited for
        has gone out (the stream may then end)."""
        if not self.pending:
            return False
        self.pending.difference_update(_answered_ids(body))
        return self.draining and not self.pending

    async def end_soon(self) -> None:
        """End the stream a moment after its last answer went out (if no request came meanwhile):
        the SDK's legacy client drops an answer still in its hands when the stream ends under it."""
        await anyio.sleep(_LINGER_SECONDS)
        async with self.lock:
            await self.end_if_idle()

    async def end_if_idle(self) -> None:
        """(Under the lock.) The client then connects again, to a process that is staying."""
        if self.draining and self.open and not self.pending:
            self.open = False
            with contextlib.suppress(OSError):
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})


class StreamHooks(Protocol):
    """What else happens when a legacy SSE session's stream opens and closes (sharing it)."""

    async def opened(self, session: str, scope: Scope) -> None:
        """The stream of `session` is about to announce it (awaited before the endpoint event)."""
        ...

    async def held(self, session: str, scope: Scope) -> None:
        """Runs while the stream is open (cancelled when it closes)."""
        ...

    async def closed(self, session: str) -> None:
        """The stream has ended."""
        ...


class SseSessionTap:
    """The event streams of the open legacy SSE sessions, by session id (the one place that relies
    on the SDK's SSE wire output; see the module docstring for what it relies on)."""

    def __init__(self) -> None:
        self._streams: dict[str, SessionStream] = {}
        self.hooks: StreamHooks | None = None

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a `GET /sse`, remembering its stream under the session id its endpoint event gives."""
        stream = SessionStream(owner=_owner(scope), send=send)
        session: str | None = None
        first_body = True
        hooks = self.hooks

        async with anyio.create_task_group() as task_group:

            async def tapped_send(message: Message) -> None:
                nonlocal session, first_body
                async with stream.lock:
                    if stream.swallows(message, first_body):
                        return
                    body = message.get("body", b"")
                    if message["type"] == "http.response.body" and first_body:
                        first_body = False
                        session = session_of_endpoint_event(body)
                        if session is not None:
                            await self._opened(session, stream, scope, task_group)
                    if message["type"] == "http.response.body" and not message.get("more_body", False):
                        stream.open = False
                    await send(message)
                    if stream.answered(body):
                        task_group.start_soon(stream.end_soon)

            try:
                await app(scope, receive, tapped_send)
            finally:
                task_group.cancel_scope.cancel()
                stream.open = False
                if session is not None and self._streams.get(session) is stream:
                    del self._streams[session]
                if session is not None and hooks is not None:
                    with anyio.CancelScope(shield=True):
                        await hooks.closed(session)

    async def _opened(self, session: str, stream: SessionStream, scope: Scope, tasks: TaskGroup) -> None:
        self._streams[session] = stream
        if self.hooks is not None:
            await self.hooks.opened(session, scope)
            tasks.start_soon(self.hooks.held, session, scope)

    def stream_of(self, session: str) -> SessionStream | None:
        """The stream of `session` in this process, open or ended by `drain` (no credential check)."""
        stream = self._streams.get(session)
        return stream if stream is not None and (stream.open or stream.draining) else None

    async def drain(self) -> None:
        """This process is on its way out: end every stream once its requests are answered."""
        for stream in list(self._streams.values()):
            await stream.drain()

    def stream_for(self, scope: Scope, *, drained_too: bool = False) -> SessionStream | None:
        """The open stream of the session a `POST /messages/` names, if it is the caller's own
        (`drained_too`: also one `drain` has ended while the SDK's session still lives)."""
        session = session_of_post(scope)
        stream = self._streams.get(session) if session is not None else None
        if stream is None or stream.owner != _owner(scope):
            return None
        return stream if stream.open or (drained_too and stream.draining) else None

    def __len__(self) -> int:
        return len(self._streams)
