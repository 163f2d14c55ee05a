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

import re
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import parse_qs
from uuid import UUID

import anyio
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A session's stream that takes longer than this to accept one more event is not answered on.
_DELIVER_SECONDS: Final = 5.0
_SESSION_IN_ENDPOINT: Final = re.compile(rb"[?&]session_id=([0-9a-f]{32})")


def session_of_endpoint_event(chunk: bytes) -> str | None:
    """The session id (32 lowercase hex) an SSE `endpoint` event announces, if `chunk` holds one."""
    if b"event: endpoint" not in chunk:
        return None
    found = _SESSION_IN_ENDPOINT.search(chunk)
    return found.group(1).decode("ascii") if found is not None else None


def _owner(scope: Scope) -> AuthorizationContext | None:
    """The credential a request presents, as the SDK's transports compare it to a session's."""
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


@dataclass
class SessionStream:
    """The open event stream of one legacy SSE session, to send one more whole event on."""

    owner: AuthorizationContext | None
    send: Send
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    open: bool = True

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
                    if message["type"] == "http.response.body":
                        if first_body:
                            first_body = False
                            session = session_of_endpoint_event(message.get("body", b""))
                            if session is not None:
                                self._streams[session] = stream
                                if hooks is not None:
                                    await hooks.opened(session, scope)
                                    task_group.start_soon(hooks.held, session, scope)
                        if not message.get("more_body", False):
                            stream.open = False
                    await send(message)

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

    def holds(self, session: str) -> bool:
        """Whether this process holds the open stream of `session`."""
        stream = self._streams.get(session)
        return stream is not None and stream.open

    def stream_for(self, scope: Scope) -> SessionStream | None:
        """The open stream of the session a `POST /messages/` names, if it is the caller's own."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            session = UUID(hex=(query.get("session_id") or [""])[0]).hex  # as the SDK reads it
        except ValueError:
            return None
        stream = self._streams.get(session)
        if stream is None or not stream.open or stream.owner != _owner(scope):
            return None
        return stream

    def __len__(self) -> int:
        return len(self._streams)
