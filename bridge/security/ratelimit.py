"""Per-principal limits: a request rate on the HTTP routes and a cap on concurrent answers.

The request rate uses the `limits` library's sliding-window counter, in Redis when `REDIS_URL` is
set (so every replica counts against the same budget) and in memory otherwise. A principal sending
many requests a second has its hits counted in small batches paid in advance (`_Prepaid`): one
counter round trip cost about 0.25 ms of CPU per request, a quarter of a `tools/list`. A batch
grows only while the principal uses each one up within `_PREPAID_SECONDS`, never beyond 1% of its
budget, and what a replica paid for but did not use within that time is dropped: the budget is
never exceeded, and at most that 1% per replica is spent on requests that did not come.

Concurrent answers are counted in Redis too when it is configured (leased slots,
`bridge.security.slots`), so N replicas allow the cap, not N times it; without Redis they are
counted per process. If Redis is unreachable, the cap falls back to this process's own count
(logged once per outage) rather than refusing every answer or allowing any number. One principal
hitting a limit never slows another.

How a limit reaches a client:
* `POST /v1/uploads` (and other plain routes): 429 problem+json with `Retry-After`.
* `/mcp`: 429 with `Retry-After` and a JSON-RPC error body (`application/json`), which is what an
  MCP client shows its user (`data.type` is `rate_limited`).
* `/messages/` (legacy SSE): the SDK's SSE client gives up its session on any non-2xx answer to a
  message POST, so a request over the limit is answered 202 and its JSON-RPC error is sent on the
  session's own event stream, as the answer to that request (with `Retry-After` on the 202).
* The concurrent-answer cap: a tool error (`ask_agent` raises `TooManyAnswers`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import anyio
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.errors import LimitExceeded
from bridge.http.middleware.transport import MCP_PREFIXES, RATE_LIMITED_CODE, jsonrpc_refusal, request_id_of
from bridge.http.problems import problem
from bridge.security.audit import audit_event
from bridge.security.slots import UNAVAILABLE, SharedSlots
from bridge.store.connection import failure_reason, limits_storage, parse_redis_url

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0
_SESSION_IN_ENDPOINT = re.compile(rb"session_id=([0-9a-fA-F]{32})")
_MAX_BODY_PEEK = 8 * 1024 * 1024  # bodies on the MCP routes are capped before this middleware anyway
_DELIVER_SECONDS = 5.0
# While Redis is unreachable, the shared answer slots are tried again at most this often.
_SHARED_RETRY_SECONDS = 5.0
# Prepaid hits are good for this long; a batch used up sooner makes the next one twice as large.
_PREPAID_SECONDS = 1.0
_MAX_BATCH = 64
# Past this many principals with prepaid hits, the stale ones are dropped on the next payment.
_PREPAID_SWEEP = 1024
# While the request counter's storage is down, one warning per this many seconds.
_STORAGE_WARN_SECONDS = 60.0


class TooManyAnswers(LimitExceeded):
    """The principal already has its maximum of answers streaming."""

    code = "rate_limited"


@dataclass
class PrincipalLimits:
    """Limits for one principal (a key may override the defaults)."""

    rate: RateLimitItem
    concurrency: int


@dataclass
class _Prepaid:
    """Hits a principal paid for in the shared counter ahead of its requests."""

    left: int
    until: float  # monotonic time after which the leftovers are dropped
    batch: int  # the size of the last payment


@dataclass
class Limiter:
    """Request-rate and concurrency budgets per principal."""

    default: PrincipalLimits
    overrides: dict[str, PrincipalLimits] = field(default_factory=dict)
    storage: Storage = field(default_factory=MemoryStorage)
    # Concurrent answers counted across replicas (None: per process only).
    slots: SharedSlots | None = None
    _active: dict[str, int] = field(default_factory=dict)
    _prepaid: dict[str, _Prepaid] = field(default_factory=dict)
    _shared_down: bool = False
    _shared_retry_at: float = 0.0
    # Where the request counts live, for log lines ("Redis at host:port").
    storage_target: str = "memory"
    _storage_warned_at: float | None = None
    _storage_unwarned: int = 0

    def __post_init__(self) -> None:
        self._window = SlidingWindowCounterRateLimiter(self.storage)

    def limits_for(self, principal: str) -> PrincipalLimits:
        """The principal's own limits, or the defaults."""
        return self.overrides.get(principal, self.default)

    async def retry_after(self, principal: str) -> int | None:
        """Count one request; None if allowed, else the seconds until the window has room again."""
        now = time.monotonic()
        prepaid = self._prepaid.get(principal)
        if prepaid is not None and prepaid.left and now < prepaid.until:
            prepaid.left -= 1
            return None
        item = self.limits_for(principal).rate
        batch = _next_batch(prepaid, now, cap=max(1, min(_MAX_BATCH, item.amount // 100)))
        try:
            if batch > 1:
                if await self._window.hit(item, "principal", principal, cost=batch):
                    self._keep(principal, batch - 1, batch, now)
                    self._storage_answered()
                    return None
                # Nearly spent: one hit at a time from now on, so a refusal costs no extra trip.
                self._prepaid[principal] = _Prepaid(left=0, until=now, batch=1)
            # Too little room for a batch (or no batch wanted): the exact count decides.
            if await self._window.hit(item, "principal", principal):
                self._keep(principal, 0, 1, now)
                self._storage_answered()
                return None
            stats = await self._window.get_window_stats(item, "principal", principal)
        except Exception as exc:  # the counter's store is down: serve rather than refuse everyone
            self._storage_failed(exc)
            return None
        self._storage_answered()
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _storage_failed(self, exc: Exception) -> None:
        """Warn that requests go uncounted, naming where and why, at most once a minute."""
        now = time.monotonic()
        if self._storage_warned_at is not None and now - self._storage_warned_at < _STORAGE_WARN_SECONDS:
            self._storage_unwarned += 1
            return
        also = (
            f" ({self._storage_unwarned} more requests since the last warning)"
            if self._storage_unwarned
            else ""
        )
        logger.warning(
            "rate-limit storage (%s) unavailable: %s; requests are not limited until it is back%s",
            self.storage_target,
            failure_reason(exc),
            also,
        )
        self._storage_warned_at, self._storage_unwarned = now, 0

    def _storage_answered(self) -> None:
        if self._storage_warned_at is not None:
            logger.info("rate-limit storage (%s) is back: requests are limited again", self.storage_target)
            self._storage_warned_at, self._storage_unwarned = None, 0

    def _keep(self, principal: str, left: int, batch: int, now: float) -> None:
        """Remember a payment; hits still prepaid by a concurrent request are kept too."""
        if len(self._prepaid) >= _PREPAID_SWEEP:
            self._prepaid = {p: v for p, v in self._prepaid.items() if v.until > now}
        current = self._prepaid.get(principal)
        if current is not None and now < current.until:
            left += current.left
        self._prepaid[principal] = _Prepaid(left=left, until=now + _PREPAID_SECONDS, batch=batch)

    @contextlib.asynccontextmanager
    async def answer_slot(self, principal: str) -> AsyncIterator[None]:
        """Hold one of the principal's concurrent-answer slots for the duration of the block.

        Raises:
            TooManyAnswers: all of the principal's slots are taken (on any replica, with Redis).
        """
        cap = self.limits_for(principal).concurrency
        lease = await self._shared_lease(principal, cap)
        # No lease means no shared counter (none configured, or Redis is down): count this process.
        if lease is None and self._active.get(principal, 0) >= cap:
            self._refuse(principal, cap)
        self._active[principal] = self._active.get(principal, 0) + 1
        try:
            if lease is not None and self.slots is not None:
                async with self.slots.held(principal, lease):
                    yield
            else:
                yield
        finally:
            self._active[principal] -= 1
            if not self._active[principal]:
                del self._active[principal]

    async def _shared_lease(self, principal: str, cap: int) -> str | None:
        """A lease from the shared counter; None when there is none (no Redis, or Redis is down).

        Raises:
            TooManyAnswers: the shared counter says every slot is taken.
        """
        if self.slots is None:
            return None
        if self._shared_down and time.monotonic() < self._shared_retry_at:
            return None  # do not make every answer wait for a timeout while Redis is known to be down
        try:
            # Shielded: a lease granted to a caller cancelled meanwhile would be held until it expires;
            # this way the caller gets it, and its cancellation then releases it (at most ~2 s late).
            with anyio.CancelScope(shield=True):
                lease = await self.slots.acquire(principal, cap)
        except UNAVAILABLE as exc:
            if not self._shared_down:
                logger.warning(
                    "concurrent-answer slots in Redis unavailable (%s): capping per process until it is back",
                    type(exc).__name__,
                )
            self._shared_down = True
            self._shared_retry_at = time.monotonic() + _SHARED_RETRY_SECONDS
            return None
        if self._shared_down:
            logger.info("concurrent-answer slots in Redis are back: capping across replicas again")
            self._shared_down = False
        if lease is None:
            self._refuse(principal, cap)
        return lease

    async def aclose(self) -> None:
        """Close the shared slots' connections (the rate counter's storage keeps its own)."""
        if self.slots is not None:
            await self.slots.aclose()

    def _refuse(self, principal: str, cap: int) -> None:
        audit_event("limit_hit", principal=principal, limit="concurrent_answers", cap=cap)
        raise TooManyAnswers(
            f"concurrent-answer limit reached: {principal} already has {cap} answer(s) streaming"
            " (the limit); wait for one to finish and retry"
        )


def _next_batch(prepaid: _Prepaid | None, now: float, cap: int) -> int:
    """How many hits to pay for now: double the last batch if it was used up in time, halve it
    if some of it went unused."""
    if prepaid is None:
        return 1
    if now >= prepaid.until:
        return max(1, prepaid.batch // 2) if prepaid.left else min(cap, prepaid.batch)
    return min(cap, prepaid.batch * 2)


def build_limiter(
    rate: str,
    concurrency: int,
    overrides: dict[str, tuple[str | None, int | None]],
    redis_url: str | None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Limiter:
    """A limiter from settings; counts and answer slots live in Redis when `redis_url` is set."""
    default = PrincipalLimits(rate=parse(rate), concurrency=concurrency)
    per_key = {
        name: PrincipalLimits(
            rate=parse(key_rate) if key_rate else default.rate,
            concurrency=key_concurrency if key_concurrency is not None else default.concurrency,
        )
        for name, (key_rate, key_concurrency) in overrides.items()
    }
    if not redis_url:
        return Limiter(default=default, overrides=per_key)
    target = parse_redis_url(redis_url)
    return Limiter(
        default=default,
        overrides=per_key,
        storage=limits_storage(target, key_prefix="dmb-limits", socket_timeout=2.0),
        slots=SharedSlots.for_target(target, lease_seconds),
        storage_target=f"Redis at {target.describe()}",
    )


@dataclass
class _SseStream:
    """The event stream of one legacy SSE session, so a refusal can be answered on it."""

    principal: str
    send: Send
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    open: bool = True

    async def deliver(self, event: bytes) -> bool:
        """Send one whole SSE event between the stream's own events; False if that is not possible."""
        with anyio.move_on_after(_DELIVER_SECONDS):
            async with self.lock:
                if not self.open:
                    return False
                await self.send({"type": "http.response.body", "body": event, "more_body": True})
                return True
        return False


class RateLimitMiddleware:
    """Refuse requests once a principal's request rate is spent (protected routes only)."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Callable[[], Limiter],
        protected: tuple[str, ...],
        principal_of: Callable[[Scope], str],
    ) -> None:
        self._app = app
        self._limiter = limiter
        self._protected = protected
        self._principal_of = principal_of
        self._sse: dict[str, _SseStream] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request against its principal; refuse it when the budget is spent."""
        if scope["type"] != "http" or not scope["path"].startswith(self._protected):
            await self._app(scope, receive, send)
            return
        principal = self._principal_of(scope)
        wait = await self._limiter().retry_after(principal)
        if wait is None:
            if scope["path"].startswith("/sse") and scope["method"] == "GET":
                await self._tapped(scope, receive, send, principal)
            else:
                await self._app(scope, receive, send)
            return
        audit_event(
            "limit_hit", principal=principal, limit="request_rate", path=scope["path"], retry_after=wait
        )
        detail = f"request-rate limit reached: too many requests for {principal}; retry in {wait} s"
        headers = {"Retry-After": str(wait)}
        response: Response
        if not scope["path"].startswith(MCP_PREFIXES):
            response = problem(429, "rate_limited", detail, headers=headers)
        elif scope["method"] != "POST":
            response = jsonrpc_refusal(
                429, "rate_limited", detail, code=RATE_LIMITED_CODE, headers=headers, retry_after=wait
            )
        else:
            request_id = request_id_of(await _body(receive))
            stream = self._sse_stream(scope, principal)
            if stream is not None and await self._answer_on_stream(stream, request_id, detail, wait):
                response = Response("Accepted (refused: rate limited, see the event stream)", 202, headers)
            else:
                response = jsonrpc_refusal(
                    429,
                    "rate_limited",
                    detail,
                    code=RATE_LIMITED_CODE,
                    request_id=request_id,
                    headers=headers,
                    retry_after=wait,
                )
        await response(scope, receive, send)

    def _sse_stream(self, scope: Scope, principal: str) -> _SseStream | None:
        """The caller's own open SSE session this `/messages/` POST is for, if any."""
        if not scope["path"].startswith("/messages"):
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session = (query.get("session_id") or [""])[0].lower()
        stream = self._sse.get(session)
        return stream if stream is not None and stream.principal == principal else None

    @staticmethod
    async def _answer_on_stream(
        stream: _SseStream, request_id: str | int | None, detail: str, wait: int
    ) -> bool:
        if request_id is None:
            return True  # a notification over the limit: dropped, nothing to answer
        error = {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": RATE_LIMITED_CODE,
                "message": detail,
                "data": {"type": "rate_limited", "status": 429, "retry_after": wait},
            },
        }
        return await stream.deliver(b"event: message\r\ndata: " + json.dumps(error).encode() + b"\r\n\r\n")

    async def _tapped(self, scope: Scope, receive: Receive, send: Send, principal: str) -> None:
        """Serve a legacy SSE stream, remembering it under its session id (from the endpoint event)."""
        stream = _SseStream(principal=principal, send=send)
        session: str | None = None
        looked = 0

        async def tapped_send(message: Message) -> None:
            nonlocal session, looked
            async with stream.lock:
                if message["type"] == "http.response.body":
                    body: bytes = message.get("body", b"")
                    if session is None and looked < 4096 and (found := _SESSION_IN_ENDPOINT.search(body)):
                        session = found.group(1).decode().lower()
                        self._sse[session] = stream
                    looked += len(body)
                    if not message.get("more_body", False):
                        stream.open = False
                await send(message)

        try:
            await self._app(scope, receive, tapped_send)
        finally:
            stream.open = False
            if session is not None:
                self._sse.pop(session, None)


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
