"""Handshake-era Streamable HTTP sessions that any process can serve, kept in the context store.

The SDK's session manager keeps each session in the memory of the process whose `initialize`
created it: another worker or replica answers 404, and so does the same process after a restart.
This manager keeps what a session is (its owner, the protocol version and client params its
`initialize` negotiated) in the context store, written before the client sees the session id, and
serves a session it does not hold by rebuilding it from that record: a transport for the id and a
connection that is already initialized. The record's TTL slides with every request; a DELETE on
any process ends the session everywhere (the others find its record gone on their next request).

What stays in one process is what the SDK waits for there: a request the server sent the client
(an elicitation) waits for its answer in the process that sent it. So with Redis, a POST that
carries no request (answers and notifications: an elicitation's reply, a cancellation,
`notifications/initialized`) is published to every process (`bridge.store.broadcast`) and each
process that holds the session replays it into its own transport, where the SDK matches an answer
to what it waits for and drops the rest. Without Redis there is one process, and such a POST is
served where it lands.

With the store down, sessions this process holds go on in-process and new ones open in-process;
a session this process does not hold cannot be rebuilt, and its requests say so (404, so that a
client starts a new session, which then works).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.auth.provider import AccessToken
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import DEFAULT_MAX_SESSIONS
from mcp.server.transport_security import RequestBodyLimitMiddleware, TransportSecuritySettings
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.types import INTERNAL_ERROR, INVALID_REQUEST, ErrorData, InitializeRequestParams, JSONRPCError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from bridge.store.base import ContextStore, StoreUnavailable
from bridge.store.broadcast import Broadcast, LocalBroadcast
from bridge.store.records import SessionRecord, new_session_id

logger = logging.getLogger(__name__)

Owner = tuple[str, str | None, str | None]
FORWARD_KIND: Final = "mcp"
_FORWARDED_HEADERS: Final = (b"host", b"origin", b"mcp-protocol-version", b"mcp-session-id")
NOT_FOUND: Final = "Session not found"
SHUTTING_DOWN: Final = "This bridge process is shutting down: open the stream again (another one serves it)"
STORE_DOWN: Final = (
    "Session cannot be continued: it was opened on another bridge process and the session store"
    " (Redis) is unavailable. Start a new session (initialize again)."
)


class SessionBackend(Protocol):
    """What the manager needs from the running bridge."""

    @property
    def store(self) -> ContextStore:
        """Where session records live."""
        ...

    @property
    def broadcast(self) -> Broadcast:
        """How a message reaches the process that holds what it is for."""
        ...

    @property
    def session_ttl_seconds(self) -> int:
        """How long a session lives unused (BRIDGE_SESSION_TTL_SECONDS)."""
        ...


@dataclass
class _Live:
    """A session this process holds: its transport and who may use it."""

    transport: StreamableHTTPServerTransport
    owner: Owner | None
    persisted: bool = False
    connection: Connection | None = field(default=None, repr=False)


def owner_of(scope: Scope) -> Owner | None:
    """The credential a request presents, as the SDK's transports compare them."""
    user = scope.get("user")
    if not isinstance(user, AuthenticatedUser):
        return None
    context = authorization_context(user)
    return (context["client_id"], context["issuer"], context["subject"])


def user_of(owner: Owner | None) -> AuthenticatedUser | None:
    """A user the SDK's transports take for `owner` (a forwarded message is checked against the
    session's owner again where it is replayed; the token holds no secret)."""
    if owner is None:
        return None
    client_id, issuer, subject = owner
    claims = {"iss": issuer} if issuer is not None else None
    token = AccessToken(
        token="forwarded",  # noqa: S106 - a marker, not a credential: nothing is verified against it
        client_id=client_id,
        scopes=[],
        subject=subject,
        claims=claims,
    )
    return AuthenticatedUser(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def refusal(message: str, status: int, code: int = INVALID_REQUEST) -> Response:
    """A JSON-RPC error without a request id, at an HTTP error status (as the SDK's manager answers)."""
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message))
    return Response(
        body.model_dump_json(by_alias=True, exclude_none=True), status, media_type="application/json"
    )


def jsonrpc_messages(body: bytes) -> list[Any] | None:
    """The JSON-RPC messages of a POST body (a batch's, or the one), None when it is not JSON."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) else [parsed]


def carries_request(body: bytes) -> bool:
    """Whether a POST body holds a JSON-RPC request (something with a `method` and an `id`).

    Anything unreadable counts as a request: it is served where it landed, and the SDK answers it.
    """
    messages = jsonrpc_messages(body)
    if not messages:
        return True
    return any(not isinstance(m, dict) or ("method" in m and "id" in m) for m in messages)


async def read_body(receive: Receive) -> bytes:
    """The whole body of a request (the endpoint's body cap is in front)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replayed_body(body: bytes) -> Receive:
    """A `receive` that gives `body` once, then waits as a connected client would."""
    given = False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


class SharedSessionManager:
    """Serves handshake-era `/mcp` requests; sessions live in the store, served by any process."""

    def __init__(
        self,
        app: Server[Any],
        backend: Callable[[], SessionBackend],
        *,
        security_settings: TransportSecuritySettings | None,
        max_request_body_size: int,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self.app = app
        self.security_settings = security_settings
        self.max_request_body_size = max_request_body_size
        self._backend = backend
        self._max_sessions = max_sessions
        self._live: dict[str, _Live] = {}
        self._lock = anyio.Lock()
        self._draining = False
        self._task_group: anyio.abc.TaskGroup | None = None
        self._lifespan_state: Any = None
        self.asgi_app = RequestBodyLimitMiddleware(self._handle, max_request_body_size)

    def __len__(self) -> int:
        return len(self._live)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Serve sessions until the context exits (the host's lifespan enters it)."""
        self._backend().broadcast.on(FORWARD_KIND, self._hear)
        async with self.app.lifespan(self.app) as state, anyio.create_task_group() as tg:
            self._lifespan_state, self._task_group = state, tg
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                self._task_group = None
                self._live.clear()

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one handshake-era `/mcp` request."""
        await self.asgi_app(scope, receive, send)

    def drain(self) -> None:
        """This process is on its way out: end the sessions' GET streams, so that their clients open
        them again elsewhere (answers in flight end by themselves); refuse new ones."""
        self._draining = True
        for live in list(self._live.values()):
            live.transport.close_standalone_sse_stream()

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = _header(scope, b"mcp-session-id")
        owner = owner_of(scope)
        if self._draining and scope["method"] == "GET":
            await refusal(SHUTTING_DOWN, 503, INTERNAL_ERROR)(scope, receive, send)
            return
        if session_id is None:
            await self._open(scope, receive, send, owner)
            return
        if scope["method"] == "POST" and not isinstance(self._backend().broadcast, LocalBroadcast):
            body = await read_body(receive)
            if not carries_request(body):
                await self._forward(session_id, owner, scope, body, send)
                return
            receive = replayed_body(body)
        live, reason = await self._find(session_id, owner)
        if live is None:
            await refusal(reason, 404)(scope, receive, send)
            return
        if scope["method"] == "DELETE":
            # Gone from the store before the client hears so: its next request may go anywhere.
            await self._end(session_id, live)
        await live.transport.handle_request(scope, receive, send)
        if live.transport.is_terminated:
            await self._discard(session_id, live)

    # -- opening ------------------------------------------------------------------------------

    async def _open(self, scope: Scope, receive: Receive, send: Send, owner: Owner | None) -> None:
        """A request without a session id: it may only be `initialize`, which opens a session."""
        # Checked and registered with no await between: no other request can slip in (no lock).
        if len(self._live) >= self._max_sessions:
            logger.warning("Refusing to open a new session: %d sessions are already open", self._max_sessions)
            await refusal("Too many open sessions", 503, INTERNAL_ERROR)(scope, receive, send)
            return
        session_id = new_session_id()
        live = self._live[session_id] = _Live(self._transport(session_id), owner)
        established = False
        try:
            await self._start(session_id, live, None)
            status = await self._serve_opening(session_id, live, scope, receive, send)
            established = status is not None and status < 400
        finally:
            if not established:
                await self._discard(session_id, live)

    async def _serve_opening(
        self, session_id: str, live: _Live, scope: Scope, receive: Receive, send: Send
    ) -> int | None:
        """Serve `initialize`, writing the session's record before its answer reaches the client:
        the client's next request may land on another process, which must find it."""
        status: int | None = None

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message.get("body") and not live.persisted:
                await self._persist(session_id, live)
            await send(message)

        await live.transport.handle_request(scope, receive, recording_send)
        return status

    async def _persist(self, session_id: str, live: _Live) -> None:
        connection = live.connection
        if connection is None or connection.client_params is None:
            return
        params = connection.client_params.model_dump(mode="json", by_alias=True, exclude_none=True)
        record = SessionRecord(
            session_id=session_id,
            kind="http",
            owner=live.owner,
            created_at=time.time(),
            protocol_version=connection.protocol_version,
            client_params=params,
        )
        backend = self._backend()
        try:
            await backend.store.put_session(record, backend.session_ttl_seconds)
        except StoreUnavailable as exc:
            logger.warning("session kept in this process only: %s", exc)
            return
        live.persisted = True

    # -- finding ------------------------------------------------------------------------------

    async def _find(self, session_id: str, owner: Owner | None) -> tuple[_Live | None, str]:
        """The session this request may use, held here or rebuilt from its record; else a reason."""
        live, record, reason = await self._check(session_id, owner)
        if live is None and record is not None:
            return await self._rebuild(session_id, record), ""
        return live, reason

    async def _check(
        self, session_id: str, owner: Owner | None
    ) -> tuple[_Live | None, SessionRecord | None, str]:
        """Whether `owner` may use the session: held here (and still open), or recorded in the store
        (its record, for a rebuild); else the reason it may not."""
        live = self._live.get(session_id)
        if live is not None and live.owner != owner:
            logger.warning("Rejecting request for session %s: another credential", session_id[:64])
            return None, None, NOT_FOUND
        backend = self._backend()
        try:
            record = await backend.store.load_session(session_id, backend.session_ttl_seconds)
        except StoreUnavailable:
            return (live, None, "") if live is not None else (None, None, STORE_DOWN)
        if live is not None:
            live, reason = await self._still_open(session_id, live, record)
            return live, record, reason
        if record is None or record.kind != "http" or record.owner != owner:
            return None, None, NOT_FOUND
        return None, record, ""

    async def _still_open(
        self, session_id: str, live: _Live, record: SessionRecord | None
    ) -> tuple[_Live | None, str]:
        """A session held here is open while its record is: a DELETE elsewhere removed it."""
        if record is not None:
            return live, ""
        if not live.persisted:  # opened while the store was down: recorded now that it is back
            await self._persist(session_id, live)
            return live, ""
        await self._discard(session_id, live)
        return None, NOT_FOUND

    async def _rebuild(self, session_id: str, record: SessionRecord) -> _Live:
        async with self._lock:
            live = self._live.get(session_id)
            if live is None:
                live = self._live[session_id] = _Live(self._transport(session_id), record.owner, True)
                await self._start(session_id, live, record)
                logger.info("Session %s continued on this process from the session store", session_id)
        return live

    # -- the session's server task ------------------------------------------------------------

    def _transport(self, session_id: str) -> StreamableHTTPServerTransport:
        return StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=False,
            security_settings=self.security_settings,
            idle_timeout=self._backend().session_ttl_seconds,
        )

    async def _start(self, session_id: str, live: _Live, record: SessionRecord | None) -> None:
        assert self._task_group is not None, "SharedSessionManager.run() is not entered"
        await self._task_group.start(self._run_session, session_id, live, record)

    async def _run_session(
        self,
        session_id: str,
        live: _Live,
        record: SessionRecord | None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The session's message loop, as the SDK's `serve_loop` runs it, on a connection that is
        already initialized when the session is rebuilt from `record`."""
        try:
            async with live.transport.connect() as (read_stream, write_stream):
                dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(
                    read_stream, write_stream, inline_methods=frozenset({"initialize"})
                )
                live.connection = _connection(dispatcher, session_id, record)
                task_status.started()
                idle_scope = live.transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    await serve_connection(
                        self.app, dispatcher, connection=live.connection, lifespan_state=self._lifespan_state
                    )
        except Exception:
            logger.exception("Session %s crashed", session_id)
        finally:
            # Idle here, or crashed: this process lets go; the record stays for its own TTL.
            await self._discard(session_id, live)

    async def _discard(self, session_id: str, live: _Live) -> None:
        if self._live.get(session_id) is live:
            del self._live[session_id]
        if not live.transport.is_terminated:
            with anyio.CancelScope(shield=True):
                await live.transport.terminate()

    async def _end(self, session_id: str, live: _Live) -> None:
        """The client deletes the session: no process may continue it from the store."""
        live.persisted = False  # so that a store that was down does not bring it back
        with contextlib.suppress(StoreUnavailable):
            await self._backend().store.delete_session(session_id)

    # -- forwarding ---------------------------------------------------------------------------

    async def _forward(
        self, session_id: str, owner: Owner | None, scope: Scope, body: bytes, send: Send
    ) -> None:
        """Answers and notifications go to every process holding the session (see the module
        docstring); this one need not hold it to pass them on."""
        live, record, reason = await self._check(session_id, owner)
        if reason:
            await refusal(reason, 404)(scope, replayed_body(b""), send)
            return
        message = {
            "kind": FORWARD_KIND,
            "session": session_id,
            "headers": forwardable_headers(scope, _FORWARDED_HEADERS),
            "body": body.decode("utf-8", "replace"),
        }
        try:
            await self._backend().broadcast.publish(message)
        except StoreUnavailable:  # then served here, as without Redis
            if live is None:
                assert record is not None  # `_check` gives one of them when it gives no reason
                live = await self._rebuild(session_id, record)
            await live.transport.handle_request(scope, replayed_body(body), send)
            return
        await Response(status_code=202)(scope, replayed_body(b""), send)

    async def _hear(self, message: dict[str, Any]) -> None:
        """A forwarded answer or notification: replayed into the session's transport if held here."""
        live = self._live.get(str(message.get("session")))
        headers = message.get("headers")
        body = message.get("body")
        if live is None or not isinstance(headers, dict) or not isinstance(body, str):
            return
        # The transport checks the content type and accepted types of every POST.
        full = {
            **headers,
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        await live.transport.handle_request(
            forwarded_scope("/mcp", full), replayed_body(body.encode()), discard_send
        )


def _connection(
    dispatcher: JSONRPCDispatcher[Any], session_id: str, record: SessionRecord | None
) -> Connection:
    """A fresh connection, or one rebuilt from `record` as its `initialize` left it."""
    if record is None:
        return Connection.for_loop(dispatcher, session_id=session_id)
    connection = Connection.for_loop(
        dispatcher, session_id=session_id, protocol_version_hint=record.protocol_version
    )
    if record.client_params is not None:
        connection.client_params = InitializeRequestParams.model_validate(record.client_params)
    connection.initialized.set()
    return connection


def forwardable_headers(scope: Scope, names: tuple[bytes, ...]) -> dict[str, str]:
    """The headers `names` of a request, to forward it (never its credentials, which never leave
    the process that checked them)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in names}


def forwarded_scope(
    path: str, headers: dict[str, Any], *, query: str = "", owner: Owner | None = None
) -> Scope:
    """The ASGI scope of a POST replayed where it was forwarded to: the headers the receiving
    process took from it (`forwardable_headers`), as the session's owner when there is one."""
    raw = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw,
        "client": None,
        "server": None,
        "state": {},
    }
    user = user_of(owner)
    if user is not None:
        scope["user"] = user
    return scope


async def discard_send(message: Message) -> None:
    """A forwarded POST's answer (202) went to its client from the process that received it."""
