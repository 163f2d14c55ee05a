"""Legacy SSE sessions behind a load balancer with no affinity: a `POST /messages/` reaches the
process that holds its session's event stream, whichever process receives it.

A legacy session is its `GET /sse` stream, which lives in one process. So the stream's process
writes the session's record to the context store (owner, and which process holds it) before the
client learns the session id, keeps it alive while the stream is open, and removes it when the
stream ends. A POST for a session another process holds is checked against that record (the same
404 as the SDK's for an unknown session or another credential), published on the broadcast
(`bridge.store.broadcast`), answered 202 as the SDK answers, and replayed by the holder into the
SDK's own `/messages/` handler, which checks the credential again and hands the message to the
session. The answer goes out on the stream, as for any legacy POST.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.http.sse_sessions import SseSessionTap, request_ids, session_of_post
from bridge.mcp.sessions import (
    SessionBackend,
    discard_send,
    forwardable_headers,
    forwarded_scope,
    owner_of,
    read_body,
    replayed_body,
)
from bridge.store.base import StoreUnavailable
from bridge.store.broadcast import LocalBroadcast
from bridge.store.records import SessionRecord

logger = logging.getLogger(__name__)

FORWARD_KIND: Final = "sse"
_FORWARDED_HEADERS: Final = (b"host", b"origin", b"content-type")
_STORE_DOWN: Final = (
    "Session cannot be continued: its event stream is on another bridge process and the session"
    " store (Redis) is unavailable. Connect again (GET /sse)."
)


class SseSessionSharing:
    """The store records of this process's legacy streams, and the forwarding of their POSTs."""

    def __init__(
        self, tap: SseSessionTap, backend: Callable[[], SessionBackend], instance: Callable[[], str]
    ) -> None:
        self._tap = tap
        self._backend = backend
        self._instance = instance
        self._messages: ASGIApp | None = None
        tap.hooks = self

    def messages_app(self, sdk_messages: ASGIApp) -> ASGIApp:
        """`POST /messages/`: the SDK's handler for a stream held here, forwarding for the others."""
        self._messages = sdk_messages
        return self._route

    def listen(self) -> None:
        """Hear the POSTs other processes forward (called once the runtime exists)."""
        self._backend().broadcast.on(FORWARD_KIND, self._hear)

    # -- the stream's record ------------------------------------------------------------------

    async def opened(self, session: str, scope: Scope) -> None:
        await self._record(session, scope)

    async def held(self, session: str, scope: Scope) -> None:
        """Keep the record alive while the stream is open (a TTL, so a crashed process's expire)."""
        period = max(1.0, self._backend().session_ttl_seconds / 3)
        while True:
            await anyio.sleep(period)
            await self._record(session, scope)

    async def closed(self, session: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._backend().store.delete_session(session)

    async def _record(self, session: str, scope: Scope) -> None:
        backend = self._backend()
        record = SessionRecord(
            session_id=session,
            kind="sse",
            owner=owner_of(scope),
            created_at=time.time(),
            instance=self._instance(),
        )
        try:
            await backend.store.put_session(record, backend.session_ttl_seconds)
        except StoreUnavailable as exc:
            logger.warning("legacy SSE session reachable on this process only: %s", exc)

    # -- POST /messages/ ----------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._messages is not None
        session = session_of_post(scope)
        backend = self._backend()
        held_here = session is not None and self._tap.stream_of(session) is not None
        if session is None or held_here or isinstance(backend.broadcast, LocalBroadcast):
            await self._messages(scope, receive, send)
            return
        try:
            record = await backend.store.load_session(session, backend.session_ttl_seconds)
        except StoreUnavailable:
            await Response(_STORE_DOWN, 404)(scope, receive, send)
            return
        if record is None or record.kind != "sse" or record.owner != owner_of(scope):
            # What the SDK answers for a session it does not know, or another credential's.
            await Response("Could not find session", 404)(scope, receive, send)
            return
        await self._forward(session, record, scope, await read_body(receive), send)

    async def _forward(
        self, session: str, record: SessionRecord, scope: Scope, body: bytes, send: Send
    ) -> None:
        message: dict[str, Any] = {
            "kind": FORWARD_KIND,
            "session": session,
            "owner": list(record.owner) if record.owner is not None else None,
            "headers": forwardable_headers(scope, _FORWARDED_HEADERS),
            "body": body.decode("utf-8", "replace"),
        }
        try:
            await self._backend().broadcast.publish(message)
        except StoreUnavailable:
            await Response(_STORE_DOWN, 404)(scope, replayed_body(b""), send)
            return
        await Response("Accepted", 202)(scope, replayed_body(b""), send)

    async def _hear(self, message: dict[str, Any]) -> None:
        """A POST forwarded by another process: replayed into the SDK's handler if the stream is here
        (refused on it instead while this process drains, as a POST received here would be)."""
        session, headers, body = message.get("session"), message.get("headers"), message.get("body")
        stream = self._tap.stream_of(session) if isinstance(session, str) else None
        if (
            stream is None
            or not isinstance(headers, dict)
            or not isinstance(body, str)
            or self._messages is None
        ):
            return
        ids, calls_a_tool = request_ids(body.encode())
        if stream.draining and calls_a_tool:
            await stream.refuse_for_shutdown(ids)
            return
        stream.pending.update(ids)
        owner = message.get("owner")
        scope = forwarded_scope(
            "/messages/",
            headers,
            query=f"session_id={session}",
            owner=(owner[0], owner[1], owner[2]) if isinstance(owner, list) and len(owner) == 3 else None,
        )
        await self._messages(scope, replayed_body(body.encode()), discard_send)
