"""Per-principal limits: a request rate on the HTTP routes and a cap on concurrent answers.

The request rate uses the `limits` library's sliding-window counter, in Redis when `REDIS_URL` is
set (so every replica counts against the same budget) and in memory otherwise. Concurrent answers
are counted per process: a stream holds a task and a connection here, which is what the cap protects.
One principal hitting a limit never slows down another.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.errors import BridgeError
from bridge.problems import problem
from bridge.security.audit import audit_event

logger = logging.getLogger(__name__)


class TooManyAnswers(BridgeError):
    """The principal already has its maximum of answers streaming."""

    code = "rate_limited"


@dataclass
class PrincipalLimits:
    """Limits for one principal (a key may override the defaults)."""

    rate: RateLimitItem
    concurrency: int


@dataclass
class Limiter:
    """Request-rate and concurrency budgets per principal."""

    default: PrincipalLimits
    overrides: dict[str, PrincipalLimits] = field(default_factory=dict)
    storage: Storage = field(default_factory=MemoryStorage)
    _active: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._window = SlidingWindowCounterRateLimiter(self.storage)

    def limits_for(self, principal: str) -> PrincipalLimits:
        """The principal's own limits, or the defaults."""
        return self.overrides.get(principal, self.default)

    async def retry_after(self, principal: str) -> int | None:
        """Count one request; None if allowed, else the seconds until the window has room again."""
        item = self.limits_for(principal).rate
        try:
            if await self._window.hit(item, "principal", principal):
                return None
            stats = await self._window.get_window_stats(item, "principal", principal)
        except Exception as exc:  # the counter's store is down: serve rather than refuse everyone
            logger.warning("rate-limit storage unavailable, not limiting: %s", type(exc).__name__)
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))

    @contextlib.asynccontextmanager
    async def answer_slot(self, principal: str) -> AsyncIterator[None]:
        """Hold one of the principal's concurrent-answer slots for the duration of the block.

        Raises:
            TooManyAnswers: all of the principal's slots are taken.
        """
        cap = self.limits_for(principal).concurrency
        if self._active.get(principal, 0) >= cap:
            audit_event("limit_hit", principal=principal, limit="concurrent_answers", cap=cap)
            raise TooManyAnswers(
                f"{principal} already has {cap} answer(s) streaming (the limit);"
                " wait for one to finish and retry"
            )
        self._active[principal] = self._active.get(principal, 0) + 1
        try:
            yield
        finally:
            self._active[principal] -= 1
            if not self._active[principal]:
                del self._active[principal]


def build_limiter(
    rate: str, concurrency: int, overrides: dict[str, tuple[str | None, int | None]], redis_url: str | None
) -> Limiter:
    """A limiter from settings; counts live in Redis when `redis_url` is set."""
    default = PrincipalLimits(rate=parse(rate), concurrency=concurrency)
    per_key = {
        name: PrincipalLimits(
            rate=parse(key_rate) if key_rate else default.rate,
            concurrency=key_concurrency if key_concurrency is not None else default.concurrency,
        )
        for name, (key_rate, key_concurrency) in overrides.items()
    }
    storage: Storage = MemoryStorage()
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        storage = RedisStorage(
            "async+" + redis_url, implementation="redispy", key_prefix="dmb-limits", socket_timeout=2.0
        )
    return Limiter(default=default, overrides=per_key, storage=storage)


class RateLimitMiddleware:
    """429 with Retry-After once a principal's request rate is spent (protected routes only)."""

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request against its principal; refuse it when the budget is spent."""
        if scope["type"] != "http" or not scope["path"].startswith(self._protected):
            await self._app(scope, receive, send)
            return
        principal = self._principal_of(scope)
        wait = await self._limiter().retry_after(principal)
        if wait is not None:
            audit_event(
                "limit_hit", principal=principal, limit="request_rate", path=scope["path"], retry_after=wait
            )
            response = problem(
                429,
                "rate_limited",
                f"too many requests for {principal}; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)
