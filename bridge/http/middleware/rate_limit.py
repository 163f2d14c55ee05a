"""The request rate, checked on every request to a protected route, per principal.

The budget itself (a sliding window per principal, shared by the replicas through Redis) is the
`Limiter` of bridge/security/ratelimit.py; this middleware asks it about each request, inside the
key check so the budget is the principal's, and answers a request over it as its route's clients
can read it:

* `POST /v1/uploads` (and other plain routes): 429 problem+json with `Retry-After`.
* `/mcp`: 429 with `Retry-After` and a JSON-RPC error body (`application/json`), which is what an
  MCP client shows its user (`data.type` is `rate_limited`).
* `/messages/` (legacy SSE): the SDK's SSE client gives up its session on any non-2xx answer to a
  message POST, so a request over the limit is answered 202 and its JSON-RPC error is sent on the
  session's own event stream (found through the `SseSessionTap` the JSON-RPC guard fills), as the
  answer to that request (with `Retry-After` on the 202).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.http.jsonrpc import rate_limited_refusal, sse_event
from bridge.http.paths import LEGACY_MESSAGES_PREFIX, MCP_PREFIXES
from bridge.http.problems import problem
from bridge.http.request_ids import request_id_of
from bridge.http.sse_sessions import SessionStream, SseSessionTap
from bridge.security.audit import audit_event

_MAX_BODY_PEEK = 8 * 1024 * 1024  # bodies on the MCP routes are capped before this middleware anyway


class RequestBudget(Protocol):
    """The per-principal request rate (bridge.security.ratelimit.Limiter)."""

    async def retry_after(self, principal: str) -> int | None:
        """Count one request; None if allowed, else the seconds until the window has room again."""
        ...


class RateLimitMiddleware:
    """Refuse requests once a principal's request rate is spent (protected routes only)."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Callable[[], RequestBudget],
        protected: tuple[str, ...],
        principal_of: Callable[[Scope], str],
        sessions: SseSessionTap,
    ) -> None:
        """`sessions`: the open legacy SSE streams, to answer a `/messages/` POST on its own."""
        self._app = app
        self._limiter = limiter
        self._protected = protected
        self._principal_of = principal_of
        self._sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request against its principal; refuse it when the budget is spent."""
        if scope["type"] != "http" or not scope["path"].startswith(self._protected):
            await self._app(scope, receive, send)
            return
        principal = self._principal_of(scope)
        wait = await self._limiter().retry_after(principal)
        if wait is None:
            await self._app(scope, receive, send)
            return
        audit_event(
            "limit_hit", principal=principal, limit="request_rate", path=scope["path"], retry_after=wait
        )
        response = await self._refusal(scope, receive, principal, wait)
        await response(scope, receive, send)

    async def _refusal(self, scope: Scope, receive: Receive, principal: str, wait: int) -> Response:
        """The answer to a request over the rate, in the form its route's clients read."""
        detail = f"request-rate limit reached: too many requests for {principal}; retry in {wait} s"
        if not scope["path"].startswith(MCP_PREFIXES):
            return problem(429, "rate_limited", detail, headers={"Retry-After": str(wait)})
        if scope["method"] != "POST":
            return rate_limited_refusal(detail, wait)
        request_id = request_id_of(await _body(receive))
        on_legacy = scope["path"].startswith(LEGACY_MESSAGES_PREFIX)
        stream = self._sessions.stream_for(scope) if on_legacy else None
        if stream is not None and await _answer_on_stream(stream, request_id, detail, wait):
            accepted = "Accepted (refused: rate limited, see the event stream)"
            return Response(accepted, 202, {"Retry-After": str(wait)})
        return rate_limited_refusal(detail, wait, request_id)


async def _answer_on_stream(
    stream: SessionStream, request_id: str | int | None, detail: str, wait: int
) -> bool:
    """Send the refusal on the session's stream; True if it went (or there was nothing to answer)."""
    if request_id is None:
        return True  # a notification over the limit: dropped, nothing to answer
    return await stream.deliver(sse_event(rate_limited_refusal(detail, wait, request_id)))


async def _body(receive: Receive) -> bytes:
    """The request body (bounded), read to find the JSON-RPC id of a request being refused."""
    chunks = bytearray()
    while len(chunks) <= _MAX_BODY_PEEK:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(chunks)
