"""JSON-RPC answers the SDK's handshake-era transports leave out, so a client is told, not left waiting.

Two cases, both on the handshake-era wires (`/mcp` with `Mcp-Session-Id`, and the legacy
`GET /sse` + `POST /messages/?session_id=...`); on the 2026-07-28 `/mcp` path the SDK refuses such
ids itself, and `TransportGuardMiddleware` answers every `/mcp` body over the cap:

* A request whose `id` is neither a string nor an integer (an object, a list, `true`, `1.5`,
  `null`). The SDK's message model reads it as a notification (the id is dropped), answers 202 and
  never replies, so the client waits for its timeout. It gets Invalid Request (-32600) with
  `id: null` (the id is unusable), as the stateless path gives it: on `/mcp` as the HTTP answer
  (400, JSON, as the SDK answers its other invalid messages); on `/messages/` on the session's
  event stream, with 400 to the POST (what the SDK answers an invalid message). A notification
  (no `id` member) stays accepted; a body that is not one object (a batch) is left to the SDK.
* A `/messages/` POST over the 4 MiB cap. The bare 413 to the POST left the SDK's SSE client
  waiting for the answer on the stream. The body is capped here (after the key check: an
  unauthenticated POST is refused before its body is read), the request's id is looked for in the
  body (`IdScan`, bridge/http/request_ids.py, within `ID_SEARCH_BYTES`), and the same JSON-RPC
  error `/mcp` gives (`TOO_LARGE_CODE`) is sent on the session's stream as the answer to that id;
  the POST gets 202, because the SDK's SSE client gives up its whole session on any non-2xx answer
  to a POST (`RateLimitMiddleware` answers its refusals there the same way). Without a session of
  the caller's to answer on, the POST gets today's 413.

The session streams are found through `SseSessionTap` (bridge/http/sse_sessions.py), which this
middleware runs on every `GET /sse`. A stream is only answered on for a POST the SDK would serve:
good Host/Origin (the SDK's own check, public API), a known session, and the credential that
opened it.
"""

from __future__ import annotations

import json
from typing import Final

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.http.bodies import CappedBody, read_capped_body
from bridge.http.jsonrpc import (
    MCP_MAX_BODY_BYTES,
    invalid_id_refusal,
    shutting_down_refusal,
    sse_event,
    too_large_refusal,
)
from bridge.http.request_ids import VALID_ID_KINDS, IdScan, invalid_request_id
from bridge.http.sse_sessions import SessionStream, SseSessionTap, request_ids

# How much of an oversized body is read, at most, to find its id (the rest is left unread).
ID_SEARCH_BYTES: Final = 4 * MCP_MAX_BODY_BYTES
_HANDSHAKE_VERSIONS: Final = frozenset(v.encode("latin-1") for v in HANDSHAKE_PROTOCOL_VERSIONS)


def _is_handshake_era(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"mcp-protocol-version":
            return value in _HANDSHAKE_VERSIONS
    return True  # no header: an initialize, or a client of the first handshake revisions


class JsonRpcGuardMiddleware:
    """Answer, on the handshake-era transports, the requests the SDK would leave unanswered.

    Runs inside the key check and the rate limit, so the caller is known (and budgeted).
    """

    def __init__(
        self,
        app: ASGIApp,
        security_settings: TransportSecuritySettings | None = None,
        max_body: int = MCP_MAX_BODY_BYTES,
        sessions: SseSessionTap | None = None,
    ) -> None:
        """`sessions`: the tap to record the `GET /sse` streams in (shared with the rate limit)."""
        self._app = app
        self._security = TransportSecurityMiddleware(security_settings)
        self._max_body = max_body
        self.sessions = sessions if sessions is not None else SseSessionTap()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Tap `GET /sse`; check `POST /messages/` and handshake-era `POST /mcp`; pass the rest on."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "GET" and path.startswith("/sse"):
            await self.sessions.serve(self._app, scope, receive, send)
        elif method == "POST" and path.startswith("/messages"):
            await self._legacy_message(scope, receive, send)
        elif method == "POST" and path.startswith("/mcp") and _is_handshake_era(scope):
            await self._handshake_message(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _handshake_message(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /mcp` in the handshake era: an invalid id is refused here, as the HTTP answer."""
        body = await read_capped_body(receive, self._max_body)
        if body.over_cap:  # only without TransportGuardMiddleware in front, which caps /mcp
            await too_large_refusal(self._max_body)(scope, body.receive, send)
            return
        if (kind := invalid_request_id(body.data)) is not None:
            await invalid_id_refusal(kind)(scope, body.receive, send)
            return
        await self._app(scope, body.receive, send)

    async def _legacy_message(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /messages/`: capped, its id checked, refusals answered on the caller's stream."""
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        body = await read_capped_body(receive, self._max_body, declared)
        if body.over_cap:
            await self._too_large(scope, body, send)
            return
        kind = invalid_request_id(body.data)
        if kind is not None:
            refusal = invalid_id_refusal(kind)
            stream = await self._stream_for(scope)
            if stream is not None and await stream.deliver(sse_event(refusal)):
                await refusal(scope, body.receive, send)  # 400, as the SDK answers an invalid message
                return
        refused = await self._refused_while_draining(scope, body.data)
        if refused is not None:
            await refused(scope, body.receive, send)
            return
        # Nothing to refuse, or no stream of the caller's to refuse it on: the SDK answers.
        await self._app(scope, body.receive, send)

    async def _refused_while_draining(self, scope: Scope, data: bytes) -> Response | None:
        """Note the requests a POST brings to its stream. On a stream that is draining (the process
        is on its way out) a tool call is refused instead, retryably, before anything reaches Dust:
        on the stream while it is open (202 to the POST), as the POST's answer once it has ended
        (503, as any request then)."""
        stream = self.sessions.stream_for(scope, drained_too=True)
        ids, calls_a_tool = request_ids(data)
        if stream is None or not ids:
            return None
        first = json.loads(ids[0])
        if stream.draining and not stream.open:
            return shutting_down_refusal(first)
        if not (stream.draining and calls_a_tool):
            stream.pending.update(ids)  # a listing or a read is still answered while draining
            return None
        await stream.refuse_for_shutdown(ids)
        return Response("Accepted (refused: shutting down, see the event stream)", 202)

    async def _too_large(self, scope: Scope, body: CappedBody, send: Send) -> None:
        """The too-large error, on the session's stream (202 to the POST) or as the POST's answer."""
        scan = IdScan()
        scan.feed(body.data)
        read, more = len(body.data), body.more
        while more and scan.id is None and not scan.settled and read < ID_SEARCH_BYTES:
            message = await body.receive()
            if message["type"] != "http.request":
                break
            chunk: bytes = message.get("body", b"")
            read += len(chunk)
            scan.feed(chunk)
            more = bool(message.get("more_body", False))
        found = scan.id
        request_id = found.value if found is not None and found.kind in VALID_ID_KINDS else None
        refusal = too_large_refusal(self._max_body, request_id)
        stream = await self._stream_for(scope)
        if stream is not None:
            notification = scan.finished and found is None  # nothing to answer: dropped
            if notification or await stream.deliver(sse_event(refusal)):
                accepted = Response("Accepted (refused: too large, see the event stream)", 202)
                await accepted(scope, body.receive, send)
                return
        await refusal(scope, body.receive, send)

    async def _stream_for(self, scope: Scope) -> SessionStream | None:
        """The caller's own stream, for a POST the SDK would serve (its Host/Origin checks pass)."""
        stream = self.sessions.stream_for(scope)
        if stream is None or await self._security.validate_request(Request(scope), is_post=True) is not None:
            return None
        return stream
