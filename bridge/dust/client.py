"""Async client for the Dust public API (dust-api.md): agents, conversations, files, cancel, events.

HTTP library: httpx2. It is the HTTP client the MCP SDK 2.x already brings, so the process has a
single HTTP stack to configure and patch, and it parses server-sent events itself (`client.sse()`),
so no separate httpx-sse dependency is needed.

Retries are limited to what cannot duplicate work in Dust: GETs (and the idempotent cancel) on
network errors, timeouts and 429/502/503/504; other POSTs only on 429/502/503/504 answers, on
connect errors where the request was never sent, and when a kept-alive connection turned out to be
closed: the request went out on a reused connection and the connection broke before any response
header came back, which is what a server closing an idle connection does to the request that meets
it (a server that had taken the request would answer, and Dust's load balancer answers a failed
backend with a 502, retried anyway). A POST whose response timed out, or that broke on a fresh
connection, may have reached Dust (a second conversation, a second message), so it is never
repeated. Every final outcome feeds the circuit breaker.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import quote

import anyio
import httpx2
import pydantic

from bridge import __version__
from bridge.dust.breaker import CircuitBreaker
from bridge.dust.errors import (
    DustError,
    DustNotFound,
    DustServerError,
    DustUnavailable,
    error_from_response,
    parse_retry_after,
    sanitize,
)
from bridge.dust.events import AgentEvent, follow_events
from bridge.dust.models import (
    Agent,
    AgentMessage,
    ContentFragment,
    Conversation,
    DustFile,
    MessageContext,
    UserMessage,
)
from bridge.logcontext import REQUEST_ID

DEFAULT_USER_AGENT = f"dust-mcp-bridge/{__version__}"

BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
# Statuses worth another try: throttling and gateway/availability failures. A 500 is not among
# them: Dust may have done part of the work before failing.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Failures where the request never left this process, so even a POST can be sent again.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
# How a connection the server has closed answers the request that meets it.
_CLOSED_UNDER_US = (httpx2.ReadError, httpx2.RemoteProtocolError)


class _ConnectionTrace:
    """httpcore2's trace hook for one request: did it reuse a kept-alive connection, and did any
    response header come back?"""

    def __init__(self) -> None:
        self.connected = False
        self.answered = False

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.startswith("connection.connect_"):
            self.connected = True
        elif event.endswith(".receive_response_headers.complete"):
            self.answered = True

    def met_a_closed_connection(self, exc: Exception) -> bool:
        """The request went out on a reused connection that broke before any response header."""
        return isinstance(exc, _CLOSED_UNDER_US) and not self.connected and not self.answered


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt + 1` (attempt counts from 0).

    Capped exponential backoff with full jitter; a server's `Retry-After` wins but is capped too,
    so a throttled call fails with `DustRateLimited` (carrying `retry_after`) instead of blocking.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), BACKOFF_CAP)
    return random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


@dataclass
class CreatedConversation:
    """Result of `create_conversation`: the agent message is the one answering `user_message`."""

    conversation: Conversation
    user_message: UserMessage
    agent_message: AgentMessage | None


@dataclass
class PostedMessage:
    """Result of `post_message`: the new user message and the agent messages it started."""

    user_message: UserMessage
    agent_messages: list[AgentMessage]


async def _tag_request(request: httpx2.Request) -> None:
    """Send the bridge's request id along (`X-Request-Id`). Dust reads no correlation header today
    (reference/dust-api.md section 1), but egress proxies and Dust support can match on it."""
    request_id = REQUEST_ID.get()
    if request_id:
        request.headers["X-Request-Id"] = request_id


class DustClient:
    """One workspace of one Dust region, over one pooled HTTP client.

    Args:
        base_url: the region's host, e.g. "https://dust.tt" or "https://eu.dust.tt".
        workspace_id: the workspace sId.
        api_key: a workspace API key (`sk-...`); never logged or put in errors.
        timeout: seconds for connect/read/write of ordinary requests.
        max_retries: retries of a request that is safe to repeat (see module docstring).
        breaker: circuit breaker shared by all calls (a default one if None).
        stream_max_reconnects: failed event-stream connections in a row before giving up.
        stream_total_timeout: seconds an event stream may last in all.
        stream_read_timeout: seconds of silence after which a stream connection is renewed; Dust
            sends no heartbeats, so keep it well above the longest expected quiet spell.
        reconnect_delay: first delay before reconnecting a stream that produced nothing.
        keepalive_seconds: how long an idle connection is kept for reuse; keep it below the idle
            timeout of Dust's front end, or a POST may go out on a connection it is closing.
        transport: an httpx2 transport (tests, proxies).
        user_agent: the User-Agent header.
    """

    def __init__(
        self,
        base_url: str,
        workspace_id: str,
        api_key: pydantic.SecretStr,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        max_connections: int = 1000,
        keepalive_seconds: float = 4.0,
        breaker: CircuitBreaker | None = None,
        stream_max_reconnects: int = 10,
        stream_total_timeout: float = 900.0,
        stream_read_timeout: float = 120.0,
        reconnect_delay: float = 0.5,
        transport: httpx2.AsyncBaseTransport | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        observer: Callable[[str, str, int], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._origin = base_url.rstrip("/")
        self._api = f"{self._origin}/api/v1/w/{quote(workspace_id, safe='')}"
        self._api_key = api_key
        self._timeout = timeout
        self._max_retries = max_retries
        self._breaker = breaker or CircuitBreaker()
        self._stream_max_reconnects = stream_max_reconnects
        self._stream_total_timeout = stream_total_timeout
        self._stream_read_timeout = stream_read_timeout
        self._reconnect_delay = reconnect_delay
        # Told (method, url path, status) of every answer from Dust, 0 when none came: metrics.
        self._observe = observer or (lambda method, path, status: None)
        self._on_reconnect = on_reconnect
        # The SSE base Dust redirected streams to, once seen (see `_event_source`).
        self._sse_api: str | None = None
        self._http = httpx2.AsyncClient(
            headers={
                "Authorization": f"Bearer {api_key.get_secret_value()}",
                "User-Agent": user_agent,
            },
            timeout=httpx2.Timeout(timeout),
            # Event streams hold a connection each for minutes, so allow many more than the default
            # (BRIDGE_DUST_MAX_CONNECTIONS); beyond it, new streams wait for a free connection.
            limits=httpx2.Limits(
                max_connections=max_connections,
                max_keepalive_connections=min(100, max_connections),
                keepalive_expiry=keepalive_seconds,
            ),
            transport=transport,
            # Only the event stream follows redirects (Dust's 307 to /api/sse); nothing else should.
            follow_redirects=False,
            event_hooks={"request": [_tag_request]},
        )

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def breaker_state(self) -> str:
        """The circuit breaker's state: "closed", "open" or "half_open"."""
        return self._breaker.state

    # --- agents ---------------------------------------------------------------------------------

    async def list_agents(self, view: str = "list") -> list[Agent]:
        """The workspace's agents for `view` ("list", "all", "published", "global", ...).

        Raises:
            DustAuthError, DustRateLimited, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        body = await self._request("GET", "/assistant/agent_configurations", params={"view": view})
        return [Agent.model_validate(item) for item in _field(body, "agentConfigurations", list)]

    async def get_agent(self, s_id: str) -> Agent:
        """One agent by sId.

        Raises:
            DustNotFound: no such agent.
            DustAuthError, DustRateLimited, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        body = await self._request("GET", f"/assistant/agent_configurations/{_seg(s_id)}")
        return Agent.model_validate(_field(body, "agentConfiguration", dict))

    async def probe(self) -> None:
        """A cheap readiness check: list the global agents once, without retries.

        Raises:
            DustError: any failure (DustAuthError for a bad key, DustUnavailable when unreachable
                or while the circuit breaker is open).
        """
        await self._request(
            "GET", "/assistant/agent_configurations", params={"view": "global"}, max_retries=0
        )

    # --- conversations --------------------------------------------------------------------------

    async def create_conversation(
        self,
        *,
        content: str,
        mentions: list[str],
        context: MessageContext,
        title: str | None = None,
        content_fragments: list[dict[str, Any]] | None = None,
    ) -> CreatedConversation:
        """Start an unlisted conversation with a first message mentioning the agents `mentions`.

        Non-blocking: the agent message comes back in state "created"; follow it with
        `stream_agent_events`. Dust silently drops unknown agent sIds (no agent message then).

        Raises:
            DustBadRequest: invalid content/context/fragments.
            DustRateLimited: throttled (after retries).
            DustAuthError, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        payload: dict[str, Any] = {
            "title": title,
            "visibility": "unlisted",
            "blocking": False,
            "message": _message_body(content, mentions, context),
        }
        if content_fragments:
            payload["contentFragments"] = content_fragments
        body = await self._request("POST", "/assistant/conversations", json=payload)
        conversation = Conversation.model_validate(_field(body, "conversation", dict))
        user_message = UserMessage.model_validate(_field(body, "message", dict))
        return CreatedConversation(
            conversation=conversation,
            user_message=user_message,
            agent_message=conversation.agent_message_for(user_message.s_id),
        )

    async def post_message(
        self, conversation_id: str, *, content: str, mentions: list[str], context: MessageContext
    ) -> PostedMessage:
        """Post the next user message of a conversation (non-blocking).

        Raises:
            DustNotFound: no such conversation.
            DustRateLimited: throttled, including 403 `plan_message_limit_exceeded`.
            DustAuthError, DustBadRequest, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        body = await self._request(
            "POST",
            f"/assistant/conversations/{_seg(conversation_id)}/messages",
            json=_message_body(content, mentions, context),
        )
        return PostedMessage(
            user_message=UserMessage.model_validate(_field(body, "message", dict)),
            agent_messages=[AgentMessage.model_validate(item) for item in body.get("agentMessages") or []],
        )

    async def get_conversation(self, conversation_id: str) -> Conversation:
        """A conversation with all its messages.

        Raises:
            DustNotFound: no such conversation.
            DustAuthError, DustRateLimited, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        body = await self._request("GET", f"/assistant/conversations/{_seg(conversation_id)}")
        return Conversation.model_validate(_field(body, "conversation", dict))

    async def cancel(self, conversation_id: str, message_ids: list[str]) -> None:
        """Ask Dust to stop generating the given agent messages.

        Raises:
            DustNotFound: no such conversation.
            DustAuthError, DustRateLimited, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        # Cancelling twice is harmless (Dust answers success even if nothing runs), so this POST
        # may be retried like a GET.
        await self._request(
            "POST",
            f"/assistant/conversations/{_seg(conversation_id)}/cancel",
            json={"messageIds": message_ids},
            idempotent=True,
        )

    async def create_content_fragment(
        self, conversation_id: str, *, title: str, file_id: str
    ) -> ContentFragment:
        """Attach an uploaded file to a conversation; it joins the next user message.

        Raises:
            DustNotFound: no such conversation or file.
            DustBadRequest, DustAuthError, DustRateLimited, DustServerError, DustUnavailable: see
                `DustError` subclasses.
        """
        body = await self._request(
            "POST",
            f"/assistant/conversations/{_seg(conversation_id)}/content_fragments",
            json={"title": title, "fileId": file_id},
        )
        return ContentFragment.model_validate(_field(body, "contentFragment", dict))

    # --- files ----------------------------------------------------------------------------------

    async def create_file(
        self, *, content_type: str, file_name: str, file_size: int, conversation_id: str | None = None
    ) -> DustFile:
        """Declare a file for a conversation; upload its bytes with `upload_file` within 2 minutes.

        Raises:
            DustBadRequest: type not supported or file too large.
            DustRateLimited: Dust's file-creation limit (40/min per workspace), after retries.
            DustAuthError, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        payload: dict[str, Any] = {
            "contentType": content_type,
            "fileName": file_name,
            "fileSize": file_size,
            "useCase": "conversation",
        }
        if conversation_id is not None:
            payload["useCaseMetadata"] = {"conversationId": conversation_id}
        body = await self._request("POST", "/files", json=payload)
        return DustFile.model_validate(_field(body, "file", dict))

    async def upload_file(
        self, file: DustFile, content: bytes | AsyncIterable[bytes], *, content_type: str
    ) -> DustFile:
        """Upload the bytes of a created file as multipart (one part named "file"). Never retried:
        Dust accepts one upload per file, and an iterable cannot be replayed.

        Raises:
            DustBadRequest: expired, already uploaded, empty, too large or type mismatch.
            DustNotFound: unknown file.
            DustAuthError, DustRateLimited, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        path = f"/files/{_seg(file.s_id)}"
        url = None
        # Use Dust's uploadUrl only on our own origin: the request carries the API key.
        if file.upload_url and httpx2.URL(file.upload_url).origin == httpx2.URL(self._origin).origin:
            url = file.upload_url
        boundary = uuid.uuid4().hex
        body = await self._request(
            "POST",
            path,
            url=url,
            content=_multipart(boundary, file.file_name, content_type, content),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            max_retries=0,
        )
        return DustFile.model_validate(_field(body, "file", dict))

    async def delete_file(self, file_id: str) -> None:
        """Delete a file (e.g. one created but never uploaded); a file already gone is fine.

        Raises:
            DustAuthError, DustRateLimited, DustServerError, DustUnavailable: see `DustError` subclasses.
        """
        try:
            await self._request("DELETE", f"/files/{_seg(file_id)}", idempotent=True, expect_body=False)
        except DustNotFound:
            return

    # --- events ---------------------------------------------------------------------------------

    def stream_agent_events(
        self, conversation_id: str, message_id: str, *, last_event_id: str | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        """The events of an agent message, across reconnects, up to and including the terminal one.

        Pass `last_event_id` to resume after an event seen earlier. Close the generator
        (`aclose()`) to drop the connection early.

        Raises:
            DustNotFound: no such conversation or message.
            DustAuthError: the key was refused.
            DustBadRequest: Dust rejected the request (e.g. not an agent message).
            DustStreamError: too many reconnects without progress, or the total time ran out.
        """
        path = f"/assistant/conversations/{_seg(conversation_id)}/messages/{_seg(message_id)}/events"
        return follow_events(
            lambda resume_from, read_timeout: self._event_source(path, resume_from, read_timeout),
            last_event_id=last_event_id,
            max_reconnects=self._stream_max_reconnects,
            total_timeout=self._stream_total_timeout,
            read_timeout=self._stream_read_timeout,
            reconnect_delay=self._reconnect_delay,
            on_reconnect=self._on_reconnect,
        )

    @asynccontextmanager
    async def _event_source(
        self, path: str, last_event_id: str | None, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[httpx2.ServerSentEvent]]:
        """One connection to an event stream; HTTP and network failures become `DustError`s.

        Current Dust redirects every stream from /api/v1 to /api/sse/v1. Once that redirect has been
        seen, streams go straight to the SSE base (one round trip less per connection); should that
        base ever answer 404, the client forgets it and goes through /api/v1 again.
        """
        if self._sse_api is not None:
            stack = AsyncExitStack()
            try:
                # Only the connecting is guarded: errors from the consumer must not land here.
                frames = await stack.enter_async_context(
                    self._event_connection(self._sse_api + path, last_event_id, read_timeout)
                )
            except DustNotFound:
                self._sse_api = None
            else:
                async with stack:
                    yield frames
                return
        async with self._event_connection(self._api + path, last_event_id, read_timeout) as frames:
            yield frames

    @asynccontextmanager
    async def _event_connection(
        self, url: str, last_event_id: str | None, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[httpx2.ServerSentEvent]]:
        probe = self._breaker.acquire()
        verdict = False
        try:
            async with AsyncExitStack() as stack:
                try:
                    source = await stack.enter_async_context(
                        self._http.sse(
                            url,
                            # Dust resumes from a query parameter, not the Last-Event-ID header.
                            params={"lastEventId": last_event_id} if last_event_id else None,
                            # Current Dust answers 307 to /api/sse/...; httpx2 keeps Authorization
                            # on a same-origin redirect and drops it on any other.
                            follow_redirects=True,
                            timeout=httpx2.Timeout(self._timeout, read=read_timeout),
                        )
                    )
                except httpx2.RequestError as exc:
                    verdict = True
                    self._breaker.record_failure()
                    self._observe("GET", httpx2.URL(url).path, 0)
                    raise self._unreachable(exc) from exc
                response = source.response
                self._observe("GET", httpx2.URL(url).path, response.status_code)
                if response.status_code >= 400:
                    await response.aread()
                    verdict = True
                    self._record_status(response.status_code)
                    raise self._error(response)
                verdict = True
                self._breaker.record_success()
                sse_api = self._api.replace("/api/v1/", "/api/sse/v1/", 1)
                if response.history and str(response.url.copy_with(query=None)) == url.replace(
                    self._api, sse_api, 1
                ):
                    self._sse_api = sse_api
                frames = cast(AsyncGenerator[httpx2.ServerSentEvent, None], aiter(source))
                # Finalise the frame generator before the response closes (LIFO exit order).
                stack.push_async_callback(frames.aclose)
                yield frames
        finally:
            if not verdict:
                self._breaker.release(probe)

    # --- plumbing -------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        url: str | None = None,
        params: dict[str, str] | None = None,
        json: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        max_retries: int | None = None,
        expect_body: bool = True,
    ) -> dict[str, Any]:
        """Send one request (to `url`, else the workspace API `path`) with the safe retries, feed the
        breaker, and return the JSON object it answered."""
        url = url or f"{self._api}{path}"
        retries = self._max_retries if max_retries is None else max_retries
        safe_to_repeat = method == "GET" if idempotent is None else idempotent
        probe = self._breaker.acquire()
        verdict = False
        try:
            attempt = 0
            while True:
                # Only a request that must not be repeated needs to know how its connection fared.
                trace = None if safe_to_repeat else _ConnectionTrace()
                try:
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        content=content,
                        headers=headers,
                        extensions=None if trace is None else {"trace": trace},
                    )
                except httpx2.RequestError as exc:
                    self._observe(method, httpx2.URL(url).path, 0)
                    stale = trace is not None and trace.met_a_closed_connection(exc)
                    if attempt < retries and (safe_to_repeat or stale or isinstance(exc, _NOT_SENT)):
                        if not stale:  # a stale connection is no sign of trouble: retry at once
                            await anyio.sleep(backoff_delay(attempt))
                        attempt += 1
                        continue
                    verdict = True
                    self._breaker.record_failure()
                    raise self._unreachable(exc) from exc
                self._observe(method, httpx2.URL(url).path, response.status_code)
                if response.status_code in RETRY_STATUSES and attempt < retries:
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    await anyio.sleep(backoff_delay(attempt, retry_after))
                    attempt += 1
                    continue
                verdict = True
                self._record_status(response.status_code)
                if response.status_code >= 400:
                    raise self._error(response)
                return _json_object(response) if expect_body else {}
        finally:
            if not verdict:
                self._breaker.release(probe)

    def _record_status(self, status: int) -> None:
        if status >= 500:
            self._breaker.record_failure()
        else:
            self._breaker.record_success()

    def _error(self, response: httpx2.Response) -> DustError:
        return error_from_response(
            response.status_code,
            response.content,
            content_type=response.headers.get("content-type", ""),
            retry_after=response.headers.get("retry-after"),
            secrets=(self._api_key.get_secret_value(),),
        )

    def _unreachable(self, exc: httpx2.RequestError) -> DustUnavailable:
        kind = "timeout" if isinstance(exc, httpx2.TimeoutException) else "unreachable"
        detail = sanitize(str(exc), (self._api_key.get_secret_value(),)) or type(exc).__name__
        return DustUnavailable(f"could not reach Dust at {self._origin}: {detail}", type=kind)


def _seg(value: str) -> str:
    """A path segment: ids come from callers (and ultimately users), so never let them add path."""
    return quote(value, safe="")


def _message_body(content: str, mentions: list[str], context: MessageContext) -> dict[str, Any]:
    return {
        "content": content,
        "mentions": [{"configurationId": s_id} for s_id in mentions],
        "context": context.to_dict(),
    }


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DustServerError(
            f"Dust answered {response.status_code} with a body that is not a JSON object",
            status=response.status_code,
            type="unexpected_response_format",
        )
    return body


def _field(body: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise DustServerError(
            f"Dust's response has no {name!r} {kind.__name__}", type="unexpected_response_format"
        )
    return value


def _multipart(
    boundary: str, file_name: str, content_type: str, content: bytes | AsyncIterable[bytes]
) -> bytes | AsyncIterator[bytes]:
    """A multipart/form-data body with one part named "file".

    httpx2's own multipart encoder only takes synchronous files, and uploads arrive as async
    streams; bytes stay bytes so the request gets a Content-Length.
    """
    safe_name = "".join(c for c in file_name if c not in "\r\n").replace('"', "%22")
    safe_type = "".join(c for c in content_type if c not in "\r\n")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        f"Content-Type: {safe_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    if isinstance(content, bytes):
        return head + content + tail
    return _chain(head, content, tail)


async def _chain(head: bytes, content: AsyncIterable[bytes], tail: bytes) -> AsyncIterator[bytes]:
    yield head
    async for chunk in content:
        yield chunk
    yield tail
