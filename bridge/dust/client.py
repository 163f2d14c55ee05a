"""Async client for the Dust public API (dust-api.md): agents, conversations, files, cancel, events.

HTTP library: aiohttp, not the httpx2 the MCP SDK brings: with hundreds of long event streams and
a POST per turn, httpx2 was the largest cost in the process (figures: docs/architecture.md,
"Decisions worth knowing"). The bridge's server side never uses httpx2, so aiohttp is the one
HTTP client the process runs. aiohttp has no server-sent-events decoder; `bridge.dust.sse` is that.

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

import json
import random
import time
import urllib.request
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Any, Self
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import anyio
import pydantic

from bridge import __version__
from bridge.dust.breaker import CircuitBreaker
from bridge.dust.errors import (
    DustError,
    DustFileNotDownloadable,
    DustFileTooLarge,
    DustNotFound,
    DustServerError,
    DustUnavailable,
    error_from_response,
    parse_retry_after,
    sanitize,
)
from bridge.dust.events import AgentEvent, StreamBroken, follow_events
from bridge.dust.models import (
    Agent,
    AgentMessage,
    ContentFragment,
    Conversation,
    DownloadedFile,
    DustFile,
    MessageContext,
    UserMessage,
)
from bridge.dust.pauses import Approval, PendingAction, blocked_list
from bridge.dust.sse import SseDecoder, SseFrame, SseTooLarge
from bridge.observability.context import REQUEST_ID

DEFAULT_USER_AGENT = f"dust-mcp-bridge/{__version__}"

# The agent listing an API key may use: Dust refuses `list` and `favorites` to every API key, even
# an admin's, with a 401 (they need a signed-in user), and `all_unrestricted` to non-admin keys
# with a 403. `all` is every non-private agent of the workspace (agent_configurations route).
LISTING_VIEW = "all"

BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
# Statuses worth another try: throttling and gateway/availability failures. A 500 is not among
# them: Dust may have done part of the work before failing.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Failures where the request never left this process (no connection, or none free in time), so
# even a POST can be sent again.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# How a connection the server has closed answers the request that meets it.
_CLOSED_UNDER_US = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# How much of an error answer to a download is read (a Dust error body is far smaller).
_ERROR_BODY_BYTES = 64 * 1024
_CHUNK_BYTES = 64 * 1024


@dataclass
class _ConnectionTrace:
    """What one request's connection did: was it a new one (aiohttp's trace hook says), and did the
    response headers come back?"""

    connected: bool = False
    answered: bool = False

    def met_a_closed_connection(self, exc: Exception) -> bool:
        """The request went out on a reused connection that broke before any response header."""
        return (
            isinstance(exc, _CLOSED_UNDER_US)
            and not isinstance(exc, _NOT_SENT)
            and not self.connected
            and not self.answered
        )


async def _on_connection_created(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceConnectionCreateEndParams
) -> None:
    trace = context.trace_request_ctx
    if isinstance(trace, _ConnectionTrace):
        trace.connected = True


def _trace_config() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_connection_create_end.append(_on_connection_created)
    return config


@dataclass
class _Answer:
    """A response read to its end: what the error mapping and the JSON decoding need."""

    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    body: bytes


def _request_headers(extra: dict[str, str] | None = None) -> dict[str, str] | None:
    """Per-request headers: `extra` and the bridge's request id (`X-Request-Id`). Dust reads no
    correlation header today (reference/dust-api.md section 1), but egress proxies and Dust support
    can match on it."""
    request_id = REQUEST_ID.get()
    if not request_id:
        return extra
    return {**(extra or {}), "X-Request-Id": request_id}


def _path(url: str) -> str:
    return urlsplit(url).path


def _origin_of(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default made explicit), as an origin compares them."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or {"http": 80, "https": 443}.get(scheme)


def _env_proxy(origin: str) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for `origin`, unless NO_PROXY exempts its host (on
    macOS and Windows without those variables: the system's proxy settings).

    Read once per client: every request goes to that one origin.
    """
    parts = urlsplit(origin)
    proxies = urllib.request.getproxies()
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


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
        user_agent: str = DEFAULT_USER_AGENT,
        observer: Callable[[str, str, int, float], None] | None = None,
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
        # Told (method, url path, status, seconds) of every answer from Dust (status 0 when none
        # came; seconds until it was read, for an event stream until its headers): metrics.
        self._observe = observer or (lambda method, path, status, seconds: None)
        self._on_reconnect = on_reconnect
        # The SSE base Dust redirected streams to, once seen (see `_event_source`).
        self._sse_api: str | None = None
        self._headers = {"Authorization": f"Bearer {api_key.get_secret_value()}", "User-Agent": user_agent}
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        # For signed storage URLs on another origin: no default headers, so no API key.
        self._storage: aiohttp.ClientSession | None = None
        self._user_agent = user_agent

    def _http(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use: aiohttp binds it to the running event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=_timeouts(self._timeout, self._timeout),
                connector=aiohttp.TCPConnector(
                    # Event streams hold a connection each for minutes, so allow many (setting
                    # BRIDGE_DUST_MAX_CONNECTIONS); beyond it, new requests wait for a free one.
                    limit=self._max_connections,
                    limit_per_host=0,
                    keepalive_timeout=self._keepalive_seconds,
                ),
                trace_configs=[_trace_config()],
                # Not trust_env: it looks up ~/.netrc in a worker thread on every request (two
                # thread hand-overs per request, measured as most of a POST's latency). The egress
                # proxy, the part of the environment that matters, is read once instead.
                proxy=_env_proxy(self._origin),
            )
        return self._session

    def _storage_http(self) -> aiohttp.ClientSession:
        """The session for another origin's signed URLs, made on first use: it sends no API key."""
        if self._storage is None:
            self._storage = aiohttp.ClientSession(
                headers={"User-Agent": self._user_agent},
                timeout=_timeouts(self._timeout, self._timeout),
            )
        return self._storage

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._storage is not None:
            await self._storage.close()
            self._storage = None

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

    async def list_agents(self, view: str = LISTING_VIEW) -> list[Agent]:
        """The workspace's agents for `view` (`all` by default; see `LISTING_VIEW`).

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
        """A readiness check: the listing the tools make (`LISTING_VIEW`), once, without retries, so
        that a key which can reach Dust but not list its agents is not reported ready.

        Raises:
            DustError: any failure (DustAuthError for a bad key, DustUnavailable when unreachable
                or while the circuit breaker is open).
        """
        await self._request(
            "GET", "/assistant/agent_configurations", params={"view": LISTING_VIEW}, max_retries=0
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
        return read_created_conversation(body)

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

    async def validate_action(
        self, conversation_id: str, message_id: str, action_id: str, approved: Approval
    ) -> None:
        """Approve or reject a tool call the agent is waiting on (`tool_approve_execution`).

        `conversation_id` and `message_id` are the pause's own: a sub-agent's differ from the
        top-level message's.

        Raises:
            DustBadRequest: the action is no longer blocked (`action_not_blocked`).
            DustNotFound: unknown action, message or conversation.
            DustError: any other failure.
        """
        # Not repeated on a lost answer: the first POST may have resumed the agent.
        await self._request(
            "POST",
            f"{_message_path(conversation_id, message_id)}/validate-action",
            json={"actionId": action_id, "approved": approved},
        )

    async def answer_question(
        self,
        conversation_id: str,
        message_id: str,
        action_id: str,
        *,
        selected_options: list[int],
        custom_response: str | None = None,
    ) -> None:
        """Answer a question the agent asked (`tool_ask_user_question`): option indexes and/or text.

        Raises:
            DustBadRequest: the action is no longer waiting for an answer (`action_not_blocked`).
            DustNotFound: unknown action, message or conversation.
            DustError: any other failure.
        """
        answer: dict[str, Any] = {"selectedOptions": selected_options}
        if custom_response is not None:
            answer["customResponse"] = custom_response
        await self._request(
            "POST",
            f"{_message_path(conversation_id, message_id)}/answer-question",
            json={"actionId": action_id, "answer": answer},
        )

    async def blocked_actions(self, conversation_id: str) -> list[PendingAction]:
        """The actions of a conversation still waiting for the user (`GET .../actions/blocked`).

        Raises:
            DustNotFound: no such conversation.
            DustError: any other failure.
        """
        body = await self._request("GET", f"/assistant/conversations/{_seg(conversation_id)}/actions/blocked")
        return blocked_list(_field(body, "blockedActions", list))

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
        if file.upload_url and _origin_of(file.upload_url) == _origin_of(self._origin):
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

    async def download_file(self, file_id: str, *, max_bytes: int) -> DownloadedFile:
        """The bytes of a file by sId: `GET files/{fileId}?action=download`, whose 302 to a signed
        storage URL is followed (that one redirect, for this call only; the key goes to Dust's own
        origin only). Not retried: ask again.

        Dust serves an API key the files of use case `conversation` only: what a user uploaded, and
        the images a tool returned. A file a tool made itself (a CSV of query results, say) is
        refused; read it by its path in the conversation (`download_conversation_file`).

        Raises:
            DustFileNotDownloadable: Dust refuses this file to an API key (400 invalid_request_error).
            DustFileTooLarge: the file is over `max_bytes` (reading stopped there).
            DustNotFound: no such file, or it belongs to a conversation the key cannot read.
            DustServerError: the signed URL failed or Dust answered something unreadable.
            DustAuthError, DustRateLimited, DustUnavailable: see `DustError` subclasses.
        """
        url = f"{self._api}/files/{_seg(file_id)}"
        try:
            return await self._download(url, {"action": "download", "version": "original"}, max_bytes)
        except DustError as exc:
            if exc.status == 400 and exc.type == "invalid_request_error":
                raise DustFileNotDownloadable(exc.message, status=exc.status, type=exc.type) from None
            raise

    async def download_conversation_file(
        self, conversation_id: str, path: str, *, max_bytes: int
    ) -> DownloadedFile:
        """A file of a conversation's file system by its scoped path, `conversation/<name>`
        (`GET assistant/conversations/{cId}/files/<path>`): Dust serves it to any key that can read
        the conversation, whatever the file's use case. A generated file's path is
        `conversation/<its title>`, unless an earlier file of the conversation had that name (Dust
        then inserts the file's sId before the extension). Not retried: ask again.

        Raises:
            ValueError: `path` has an empty, `.` or `..` segment (it must name one file).
            DustNotFound: no such conversation or file.
            DustBadRequest: not a `conversation/` path.
            DustFileTooLarge: the file is over `max_bytes` (reading stopped there).
            DustError: any other failure.
        """
        segments = path.split("/")
        if any(segment in ("", ".", "..") for segment in segments):
            raise ValueError(f"not a file path: {path!r}")
        rel = "/".join(_seg(segment) for segment in segments)
        return await self._download(
            f"{self._api}/assistant/conversations/{_seg(conversation_id)}/files/{rel}", None, max_bytes
        )

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
    ) -> AsyncIterator[AsyncIterator[SseFrame]]:
        """One connection to an event stream; HTTP and network failures become `DustError`s.

        Current Dust redirects every stream from /api/v1 to /api/sse/v1. Once that redirect has been
        seen, streams go straight to the SSE base (one round trip less per connection); should that
        base ever answer 404, the client forgets it and goes through /api/v1 again.
        """
        if self._sse_api is not None:
            try:
                # Only the connecting is guarded: errors from the consumer must not land here.
                response = await self._open_stream(self._sse_api + path, last_event_id, read_timeout)
            except DustNotFound:
                self._sse_api = None
            else:
                async with _frames_of(response) as frames:
                    yield frames
                return
        response = await self._open_stream(self._api + path, last_event_id, read_timeout)
        async with _frames_of(response) as frames:
            yield frames

    async def _open_stream(
        self, url: str, last_event_id: str | None, read_timeout: float
    ) -> aiohttp.ClientResponse:
        """The response of one event-stream connection, its headers read and its status a success."""
        probe = self._breaker.acquire()
        verdict = False
        try:
            started = time.monotonic()
            try:
                response = await self._http().get(
                    url,
                    # Dust resumes from a query parameter, not the Last-Event-ID header.
                    params={"lastEventId": last_event_id} if last_event_id else None,
                    headers=_request_headers(_SSE_HEADERS),
                    # Current Dust answers 307 to /api/sse/...; aiohttp keeps Authorization on a
                    # same-origin redirect and drops it on any other.
                    allow_redirects=True,
                    timeout=_timeouts(self._timeout, read_timeout),
                )
            except aiohttp.ClientError as exc:
                verdict = True
                self._breaker.record_failure()
                self._observe("GET", _path(url), 0, time.monotonic() - started)
                raise self._unreachable(exc) from exc
            self._observe("GET", _path(url), response.status, time.monotonic() - started)
            if response.status >= 400:
                try:
                    body = await response.read()
                except aiohttp.ClientError:
                    body = b""
                finally:
                    response.release()
                verdict = True
                self._record_status(response.status)
                raise self._error(_Answer(response.status, response.headers, body))
            verdict = True
            self._breaker.record_success()
            sse_api = self._api.replace("/api/v1/", "/api/sse/v1/", 1)
            if response.history and str(response.url.with_query(None)) == url.replace(self._api, sse_api, 1):
                self._sse_api = sse_api
            return response
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
                trace = _ConnectionTrace()
                started = time.monotonic()
                try:
                    answer = await self._exchange(method, url, params, json, content, headers, trace)
                except aiohttp.ClientError as exc:
                    self._observe(method, _path(url), 0, time.monotonic() - started)
                    stale = not safe_to_repeat and trace.met_a_closed_connection(exc)
                    if attempt < retries and (safe_to_repeat or stale or isinstance(exc, _NOT_SENT)):
                        if not stale:  # a stale connection is no sign of trouble: retry at once
                            await anyio.sleep(backoff_delay(attempt))
                        attempt += 1
                        continue
                    verdict = True
                    self._breaker.record_failure()
                    raise self._unreachable(exc) from exc
                self._observe(method, _path(url), answer.status, time.monotonic() - started)
                if answer.status in RETRY_STATUSES and attempt < retries:
                    retry_after = parse_retry_after(answer.headers.get("retry-after"))
                    await anyio.sleep(backoff_delay(attempt, retry_after))
                    attempt += 1
                    continue
                verdict = True
                self._record_status(answer.status)
                if answer.status >= 400:
                    raise self._error(answer)
                return _json_object(answer) if expect_body else {}
        finally:
            if not verdict:
                self._breaker.release(probe)

    async def _exchange(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None,
        json: Any,
        content: bytes | AsyncIterable[bytes] | None,
        headers: dict[str, str] | None,
        trace: _ConnectionTrace,
    ) -> _Answer:
        async with self._http().request(
            method,
            url,
            params=params,
            json=json,
            data=content,
            headers=_request_headers(headers),
            # Only the event stream follows redirects (Dust's 307 to /api/sse); nothing else should.
            allow_redirects=False,
            trace_request_ctx=trace,
        ) as response:
            trace.answered = True
            return _Answer(response.status, response.headers, await response.read())

    async def _download(self, url: str, params: dict[str, str] | None, max_bytes: int) -> DownloadedFile:
        """GET `url` from Dust: its body, or, for a redirect, the body of the URL it names; errors
        become `DustError`s and feed the breaker (the storage's do not)."""
        probe = self._breaker.acquire()
        verdict = False
        try:
            started = time.monotonic()
            try:
                async with self._http().get(
                    url, params=params, headers=_request_headers(), allow_redirects=False
                ) as response:
                    self._observe("GET", _path(url), response.status, time.monotonic() - started)
                    verdict = True
                    self._record_status(response.status)
                    if response.status in _REDIRECTS:
                        location = response.headers.get("location", "")
                    elif response.status >= 400:
                        body = await _read_capped(response, _ERROR_BODY_BYTES, truncate=True)
                        raise self._error(_Answer(response.status, response.headers, body))
                    else:
                        return await _downloaded(response, max_bytes)
            except aiohttp.ClientError as exc:
                verdict = True
                self._breaker.record_failure()
                self._observe("GET", _path(url), 0, time.monotonic() - started)
                raise self._unreachable(exc) from exc
        finally:
            if not verdict:
                self._breaker.release(probe)
        return await self._fetch_signed(self._redirect_target(url, location), max_bytes)

    def _redirect_target(self, url: str, location: str) -> str:
        """The absolute URL a redirect names: http(s) only, and never from https down to http."""
        target = urljoin(url, location.strip())
        scheme = urlsplit(target).scheme.lower()
        if not location.strip() or scheme not in ("http", "https"):
            raise DustServerError("Dust redirected the download nowhere usable", type="bad_redirect")
        if scheme == "http" and urlsplit(url).scheme.lower() == "https":
            raise DustServerError("Dust redirected the download to plain http", type="bad_redirect")
        return target

    async def _fetch_signed(self, target: str, max_bytes: int) -> DownloadedFile:
        """The bytes at a signed URL. Dust's own origin gets the pooled session (and the key);
        any other origin a session without it, through the proxy the environment names for it."""
        same_origin = _origin_of(target) == _origin_of(self._origin)
        session = self._http() if same_origin else self._storage_http()
        proxy = None if same_origin else _env_proxy(target)
        where = urlsplit(target).netloc
        try:
            async with session.get(
                target,
                headers=None if not same_origin else _request_headers(),
                proxy=proxy,
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise DustServerError(
                        f"the signed download URL at {where} answered {response.status}",
                        status=response.status,
                        type="download_failed",
                    )
                return await _downloaded(response, max_bytes)
        except aiohttp.ClientError as exc:
            detail = sanitize(str(exc), (self._api_key.get_secret_value(),)) or type(exc).__name__
            raise DustUnavailable(f"could not download from {where}: {detail}", type="unreachable") from exc

    def _record_status(self, status: int) -> None:
        if status >= 500:
            self._breaker.record_failure()
        else:
            self._breaker.record_success()

    def _error(self, answer: _Answer) -> DustError:
        return error_from_response(
            answer.status,
            answer.body,
            content_type=answer.headers.get("content-type", ""),
            retry_after=answer.headers.get("retry-after"),
            secrets=(self._api_key.get_secret_value(),),
        )

    def _unreachable(self, exc: aiohttp.ClientError) -> DustUnavailable:
        kind = "timeout" if isinstance(exc, aiohttp.ServerTimeoutError) else "unreachable"
        detail = sanitize(str(exc), (self._api_key.get_secret_value(),)) or type(exc).__name__
        return DustUnavailable(f"could not reach Dust at {self._origin}: {detail}", type=kind)


_SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}


def _timeouts(timeout: float, read_timeout: float) -> aiohttp.ClientTimeout:
    # `connect` includes waiting for a free pooled connection; no total: an answer streams for as
    # long as it lasts (bounded by the event consumer), and sock_read is reset by every chunk.
    return aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=read_timeout)


@asynccontextmanager
async def _frames_of(response: aiohttp.ClientResponse) -> AsyncIterator[AsyncIterator[SseFrame]]:
    """The events of an open stream response; the response is closed on exit."""
    frames = _decode(response)
    try:
        yield frames
    finally:
        # Finalise the frame generator before the response goes (its connection is then reused
        # if the body was read to its end, and closed otherwise).
        await frames.aclose()
        response.release()


async def _decode(response: aiohttp.ClientResponse) -> AsyncGenerator[SseFrame, None]:
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        raise StreamBroken(f"not an event stream: {content_type[:80] or 'no content type'}")
    decoder = SseDecoder()
    try:
        async for chunk in response.content.iter_any():
            for frame in decoder.feed(chunk):
                yield frame
    except (aiohttp.ClientError, SseTooLarge) as exc:
        # Read timeouts, resets, truncated or oversized bodies: the connection is gone.
        raise StreamBroken(type(exc).__name__) from exc


async def _read_capped(response: aiohttp.ClientResponse, limit: int, *, truncate: bool = False) -> bytes:
    """The body, up to `limit` bytes: beyond it, the first `limit` bytes (`truncate`) or
    `DustFileTooLarge`, raised before reading when the Content-Length says so already."""
    if not truncate and response.content_length is not None and response.content_length > limit:
        raise DustFileTooLarge(f"{response.content_length} bytes, over the limit of {limit}")
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            if truncate:
                return bytes(body[:limit])
            raise DustFileTooLarge(f"over the limit of {limit} bytes")
    return bytes(body)


async def _downloaded(response: aiohttp.ClientResponse, max_bytes: int) -> DownloadedFile:
    data = await _read_capped(response, max_bytes)
    filename = response.content_disposition.filename if response.content_disposition else None
    return DownloadedFile(content_type=response.content_type, data=data, filename=filename)


def read_created_conversation(body: dict[str, Any]) -> CreatedConversation:
    """A create-conversation answer: the conversation, the user message and the agent's answer to it.

    The SDK's schema makes `message` optional; without it, the conversation's last user message is
    the one posted.

    Raises:
        DustServerError: the answer holds no conversation or no user message.
    """
    conversation = Conversation.model_validate(_field(body, "conversation", dict))
    posted = body.get("message")
    if isinstance(posted, dict):
        user_message: UserMessage | None = UserMessage.model_validate(posted)
    else:
        user_message = conversation.last_user_message()
    if user_message is None:
        raise DustServerError("Dust's answer holds no user message", type="unexpected_response_format")
    return CreatedConversation(
        conversation=conversation,
        user_message=user_message,
        agent_message=conversation.agent_message_for(user_message.s_id),
    )


def _message_path(conversation_id: str, message_id: str) -> str:
    return f"/assistant/conversations/{_seg(conversation_id)}/messages/{_seg(message_id)}"


def _seg(value: str) -> str:
    """A path segment: ids come from callers (and ultimately users), so never let them add path."""
    return quote(value, safe="")


def _message_body(content: str, mentions: list[str], context: MessageContext) -> dict[str, Any]:
    return {
        "content": content,
        "mentions": [{"configurationId": s_id} for s_id in mentions],
        "context": context.to_dict(),
    }


def _json_object(answer: _Answer) -> dict[str, Any]:
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DustServerError(
            f"Dust answered {answer.status} with a body that is not a JSON object",
            status=answer.status,
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

    Written out rather than built with aiohttp's FormData, which would set a part's headers its own
    way; bytes stay bytes so the request gets a Content-Length, and a stream goes out chunked.
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
