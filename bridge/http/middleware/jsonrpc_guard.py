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
  body, and the same JSON-RPC error `/mcp` gives (`TOO_LARGE_CODE`) is sent on the session's
  stream as the answer to that id; the POST gets 202, because the SDK's SSE client gives up its
  whole session on any non-2xx answer to a POST (`RateLimitMiddleware` answers its refusals there
  the same way). Without a session of the caller's to answer on, the POST gets today's 413.

Finding the id of an oversized body: `IdScan` reads the body as it arrives, tracking only what it
needs (nesting depth, strings, the top-level keys), keeps no more than a few bytes, skips string
contents with one regular-expression match each, and stops at the first top-level `id`. Clients
put the id near the start (the SDK's writes `{"jsonrpc":"2.0","id":...`); one after a large
`params` is still found within `ID_SEARCH_BYTES` of body and `_SCAN_STEPS` tokens; past either
bound the error goes out with `id: null`, as JSON-RPC prescribes when the id cannot be determined.

Reaching a legacy session's event stream: the SDK's `SseServerTransport` has no public way to send
on a session's stream, and its internals (the per-session writers, the `connect_sse` locals) are
private and not even the outgoing side. This module uses no private SDK name: `SseSessionTap`
wraps the ASGI `send` of each `GET /sse` response and relies on what the SDK puts on the wire:

1. the first body chunk carries the spec's `endpoint` event, whose URL has `session_id=<32 hex>`
   (the session's `UUID.hex`, which is what `POST /messages/` is matched against);
2. every body chunk is whole SSE events (sse-starlette sends one event per `http.response.body`),
   so one more whole event can go between two of them (under a lock: never inside one).

`tests/http/middleware/test_jsonrpc_guard.py::test_the_sdk_sse_stream_is_still_what_the_tap_relies_on`
checks both against the installed SDK and says which one broke. A stream is only answered on for a
POST the SDK would serve: good Host/Origin (the SDK's own check, public API), a known session, and
the credential that opened it (the SDK's own `authorization_context` comparison).
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs
from uuid import UUID

import anyio
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types import INVALID_REQUEST
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.http.middleware.transport import MCP_MAX_BODY_BYTES, jsonrpc_refusal, too_large_refusal

# How much of an oversized body is read, at most, to find its id (the rest is left unread).
ID_SEARCH_BYTES: Final = 4 * MCP_MAX_BODY_BYTES
# Tokens the scan looks at before it gives up (a string is one, so is a bracket; below the top
# level nothing else is looked at): about 30 ms of CPU.
_SCAN_STEPS: Final = 50_000
_KEY_BYTES: Final = 64  # a longer top-level key is not one this scan looks for
_STRING_ID_BYTES: Final = 4096
_SCALAR_BYTES: Final = 256
# A session's stream that takes longer than this to accept one more event is not answered on.
_DELIVER_SECONDS: Final = 5.0
_SESSION_IN_ENDPOINT: Final = re.compile(rb"[?&]session_id=([0-9a-f]{32})")
_HANDSHAKE_VERSIONS: Final = frozenset(v.encode("latin-1") for v in HANDSHAKE_PROTOCOL_VERSIONS)

_NON_WS = re.compile(rb"[^ \t\r\n]")
_STRUCTURAL = re.compile(rb'["{}\[\],:]')  # at the top level, where keys and values alternate
_NESTED = re.compile(rb'["{}\[\]]')
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_SCALAR_END = re.compile(rb"[,}\] \t\r\n]")
_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_QUOTE, _BACKSLASH, _COMMA, _COLON = ord('"'), ord("\\"), ord(","), ord(":")
_OPEN, _CLOSE = frozenset(b"{["), frozenset(b"}]")

# What an id that is neither a string nor an integer is called in the error message.
_KIND_NAMES: Final = {
    "object": "an object",
    "list": "a list",
    "boolean": "a boolean",
    "null": "null",
    "number": "a number that is not an integer",
}
VALID_ID_KINDS: Final = frozenset({"string", "integer"})


@dataclass(frozen=True)
class FoundId:
    """The value of a top-level `id` member: its kind, and its value when it is a usable id."""

    kind: str  # "string", "integer", a key of _KIND_NAMES, or "unknown" (garbage, or past a bound)
    value: str | int | None = None


class IdScan:
    """Finds the top-level `id` (and whether there is a `method`) of a JSON object fed in chunks.

    Not a validator: it follows strings and nesting only, so garbage yields "unknown" or nothing
    (the SDK then refuses the body itself). Only the first top-level `id` member counts. The
    chunks can end anywhere (inside a key, an escape, a number); what it keeps is a few bytes.
    """

    def __init__(self) -> None:
        self.id: FoundId | None = None
        self.has_method = False
        self.finished = False  # the top-level value is closed (or was not an object)
        self.gave_up = False  # _SCAN_STEPS spent
        self._steps = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False  # a backslash ended the previous chunk, inside a string
        self._capture: bytearray | None = None  # the key or string id being read
        self._capture_limit = 0
        self._capture_overflow = False
        self._capture_is_key = False
        self._expect_key = False
        self._key: str | None = None
        self._id_value_next = False
        self._scalar: bytearray | None = None

    @property
    def settled(self) -> bool:
        """Whether more of the body can change nothing this scan reports."""
        if self.finished or self.gave_up:
            return True
        return self.id is not None and (self.id.kind in VALID_ID_KINDS or self.has_method)

    def feed(self, data: bytes) -> None:
        """Scan the next chunk of the body."""
        i, n = 0, len(data)
        while i < n and not self.settled:
            self._steps += 1
            if self._steps > _SCAN_STEPS:
                self.gave_up = True
                return
            if self._in_string:
                i = self._string(data, i)
            elif self._scalar is not None:
                i = self._scalar_part(data, i)
            elif self._id_value_next or self._depth == 0:
                found = _NON_WS.search(data, i)
                if found is None:
                    return
                i = found.start()
                if self._depth == 0:
                    if data[i] != ord("{"):
                        self.finished = True
                        return
                    self._depth, self._expect_key = 1, True
                    i += 1
                else:
                    i = self._id_value_start(data, i)
            else:
                i = self._structural(data, i)

    def _structural(self, data: bytes, i: int) -> int:
        found = (_STRUCTURAL if self._depth == 1 else _NESTED).search(data, i)
        if found is None:
            return len(data)
        j = found.start()
        char = data[j]
        if char == _QUOTE:
            self._in_string = True
            if self._depth == 1 and self._expect_key:
                self._start_capture(_KEY_BYTES, is_key=True)
        elif char in _OPEN:
            self._depth += 1
        elif char in _CLOSE:
            self._depth -= 1
            self.finished = self._depth == 0
        elif self._depth == 1 and char == _COMMA:
            self._expect_key, self._key = True, None
        elif self._depth == 1 and char == _COLON:
            if self._key == "id" and self.id is None:
                self._id_value_next = True
            elif self._key == "method":
                self.has_method = True
        return j + 1

    def _id_value_start(self, data: bytes, i: int) -> int:
        self._id_value_next = False
        char = data[i]
        if char == _QUOTE:
            self._in_string = True
            self._start_capture(_STRING_ID_BYTES, is_key=False)
            return i + 1
        if char in _OPEN:
            self.id = FoundId("object" if char == ord("{") else "list")
            return i  # the bracket itself is counted by _structural
        self._scalar = bytearray()
        return i

    def _string(self, data: bytes, i: int) -> int:
        if self._escaped:
            self._escaped = False
            self._take(data[i : i + 1])
            return i + 1
        j = _STRING_BODY.match(data, i).end()  # type: ignore[union-attr]  # matches the empty string
        self._take(data[i:j])
        if j == len(data):
            return j
        if data[j] == _BACKSLASH:  # the chunk ends between a backslash and what it escapes
            self._take(b"\\")
            self._escaped = True
            return j + 1
        self._in_string = False
        self._string_closed()
        return j + 1

    def _scalar_part(self, data: bytes, i: int) -> int:
        assert self._scalar is not None
        found = _SCALAR_END.search(data, i)
        j = found.start() if found is not None else len(data)
        if len(self._scalar) + (j - i) <= _SCALAR_BYTES:
            self._scalar += data[i:j]
        else:
            self._scalar = bytearray(b"?" * (_SCALAR_BYTES + 1))  # too long: "unknown"
        if found is None:
            return j
        self.id = _scalar_id(bytes(self._scalar))
        self._scalar = None
        return j  # the delimiter is _structural's

    def _start_capture(self, limit: int, *, is_key: bool) -> None:
        self._capture, self._capture_limit = bytearray(), limit
        self._capture_overflow, self._capture_is_key = False, is_key

    def _take(self, part: bytes) -> None:
        if self._capture is None or self._capture_overflow:
            return
        if len(self._capture) + len(part) > self._capture_limit:
            self._capture_overflow = True
        else:
            self._capture += part

    def _string_closed(self) -> None:
        if self._capture is None:
            return
        decoded: str | None = None
        if not self._capture_overflow:
            try:
                decoded = json.loads(b'"' + bytes(self._capture) + b'"')
            except ValueError:
                decoded = None
        if self._capture_is_key:
            self._key, self._expect_key = decoded, False
        else:
            self.id = FoundId("string", decoded)
        self._capture = None


def _scalar_id(raw: bytes) -> FoundId:
    if raw in (b"true", b"false"):
        return FoundId("boolean")
    if raw == b"null":
        return FoundId("null")
    if _INTEGER.fullmatch(raw):
        try:
            return FoundId("integer", int(raw))
        except ValueError:  # more digits than int() converts
            return FoundId("integer")
    if _NUMBER.fullmatch(raw):
        return FoundId("number")
    return FoundId("unknown")


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return "null"


def invalid_request_id(body: bytes) -> str | None:
    """The kind of this request's `id` when it is neither a string nor an integer, else None.

    None too for a notification, a response (the SDK refuses a bad one itself; an error response
    may carry `id: null`), a batch or garbage (the SDK answers those). The scan settles within the
    first bytes for the usual key order; when it cannot, the body (at most the cap) is parsed.
    """
    scan = IdScan()
    scan.feed(body)
    found = scan.id
    if scan.settled and not scan.gave_up and (found is None or found.kind != "unknown"):
        if found is None or found.kind in VALID_ID_KINDS or not scan.has_method:
            return None
        return found.kind
    # Past the scan's bounds, or an id it could not read: the body decides (it is within the cap).
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return None
    kind = _kind_of(message["id"])
    return None if kind in VALID_ID_KINDS else kind


def invalid_id_refusal(kind: str) -> JSONResponse:
    """Invalid Request for a request whose id is `kind`: 400, `id: null` (the id is unusable)."""
    return jsonrpc_refusal(
        400,
        "invalid_request",
        f"Invalid Request: a request's id must be a string or an integer, not {_KIND_NAMES.get(kind, kind)}"
        " (JSON-RPC 2.0, MCP)",
        code=INVALID_REQUEST,
    )


def sse_event(response: JSONResponse) -> bytes:
    """A JSON response's body as one SSE `message` event (the body is one line of JSON)."""
    return b"event: message\r\ndata: " + bytes(response.body) + b"\r\n\r\n"


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
class _SessionStream:
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


class SseSessionTap:
    """The event streams of the open legacy SSE sessions, by session id (the one place that relies
    on the SDK's SSE wire output; see the module docstring for what it relies on)."""

    def __init__(self) -> None:
        self._streams: dict[str, _SessionStream] = {}

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a `GET /sse`, remembering its stream under the session id its endpoint event gives."""
        stream = _SessionStream(owner=_owner(scope), send=send)
        session: str | None = None
        first_body = True

        async def tapped_send(message: Message) -> None:
            nonlocal session, first_body
            async with stream.lock:
                if message["type"] == "http.response.body":
                    if first_body:
                        first_body = False
                        session = session_of_endpoint_event(message.get("body", b""))
                        if session is not None:
                            self._streams[session] = stream
                    if not message.get("more_body", False):
                        stream.open = False
                await send(message)

        try:
            await app(scope, receive, tapped_send)
        finally:
            stream.open = False
            if session is not None and self._streams.get(session) is stream:
                del self._streams[session]

    def stream_for(self, scope: Scope) -> _SessionStream | None:
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


@dataclass
class _Body:
    """A request body read up to a cap, and the `receive` the app is to be called with."""

    data: bytes
    over_cap: bool  # the rest is unread: `receive` gives what follows what was read
    more: bool  # (when over the cap) whether the client has more of the body to send
    receive: Receive


async def _read_body(receive: Receive, cap: int, declared: bytes = b"") -> _Body:
    """Read the body up to `cap` (none of it when the declared length is over); keep it to replay."""
    if declared.isdigit() and int(declared) > cap:
        return _Body(b"", over_cap=True, more=True, receive=receive)
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
            return _Body(bytes(body), over_cap=True, more=more, receive=receive)
        if not more:
            break
    pending.appendleft({"type": "http.request", "body": bytes(body), "more_body": False})

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return _Body(bytes(body), over_cap=False, more=False, receive=replayed)


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
    ) -> None:
        self._app = app
        self._security = TransportSecurityMiddleware(security_settings)
        self._max_body = max_body
        self.sessions = SseSessionTap()

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
        body = await _read_body(receive, self._max_body)
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
        body = await _read_body(receive, self._max_body, declared)
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
        # Nothing to refuse, or no stream of the caller's to refuse it on: the SDK answers.
        await self._app(scope, body.receive, send)

    async def _too_large(self, scope: Scope, body: _Body, send: Send) -> None:
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

    async def _stream_for(self, scope: Scope) -> _SessionStream | None:
        """The caller's own stream, for a POST the SDK would serve (its Host/Origin checks pass)."""
        stream = self.sessions.stream_for(scope)
        if stream is None or await self._security.validate_request(Request(scope), is_post=True) is not None:
            return None
        return stream
