"""Per-principal limits: a request rate on the HTTP routes and a cap on concurrent answers.

The request rate uses the `limits` library's sliding-window counter, in Redis when `REDIS_URL` is
set (so every replica counts against the same budget) and in memory otherwise. A principal sending
many requests a second has its hits counted in small batches paid in advance (`_Prepaid`), since
a counter round trip per request was a quarter of a `tools/list`'s CPU (docs/performance.md). A batch
grows only while the principal uses each one up within `_PREPAID_SECONDS`, never beyond 1% of its
budget, and what a replica paid for but did not use within that time is dropped: the budget is
never exceeded, and at most that 1% per replica is spent on requests that did not come.

Concurrent answers are counted in Redis too when it is configured (leased slots,
`bridge.security.slots`), so N replicas allow the cap, not N times it; without Redis they are
counted per process. If Redis is unreachable, the cap falls back to this process's own count
(logged once per outage) rather than refusing every answer or allowing any number. Both take that
path too when every connection of the process's Redis pool stays busy for the pool's wait
(`bridge.store.pool`). One principal hitting a limit never slows another.

How a limit reaches a client: the request rate is checked on every HTTP request by
`RateLimitMiddleware` (bridge/http/middleware/rate_limit.py, which says how each route is answered);
the concurrent-answer cap is a tool error (`ask_agent` raises `TooManyAnswers`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from bridge.errors import LimitExceeded
from bridge.security.audit import audit_event
from bridge.security.slots import UNAVAILABLE, SharedSlots
from bridge.store.connection import failure_reason
from bridge.store.pool import RedisPool

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0
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
    _paying: dict[str, anyio.Lock] = field(default_factory=dict)
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
        if self._take_prepaid(principal):
            return None
        # One payment at a time per principal in this process: requests arriving while one is paid
        # use what it bought rather than each paying a batch (which would leave several batches
        # unused at the end of a burst, beyond the one a replica may hold).
        lock = self._paying.setdefault(principal, anyio.Lock())
        try:
            async with lock:
                if self._take_prepaid(principal):
                    return None
                return await self._pay(principal)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._paying.pop(principal, None)

    def _take_prepaid(self, principal: str) -> bool:
        prepaid = self._prepaid.get(principal)
        if prepaid is not None and prepaid.left and time.monotonic() < prepaid.until:
            prepaid.left -= 1
            return True
        return False

    async def _pay(self, principal: str) -> int | None:
        """Count the request at the counter's store, paying a batch ahead when the principal is busy."""
        now = time.monotonic()
        prepaid = self._prepaid.get(principal)
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
        """Remember a payment (made while nothing was prepaid: payments take turns)."""
        if len(self._prepaid) >= _PREPAID_SWEEP:
            self._prepaid = {p: v for p, v in self._prepaid.items() if v.until > now}
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
    redis: RedisPool | None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Limiter:
    """A limiter from settings; counts and answer slots live in Redis when there is one, on the
    process's shared connections `redis` (whose owner closes them)."""
    default = PrincipalLimits(rate=parse(rate), concurrency=concurrency)
    per_key = {
        name: PrincipalLimits(
            rate=parse(key_rate) if key_rate else default.rate,
            concurrency=key_concurrency if key_concurrency is not None else default.concurrency,
        )
        for name, (key_rate, key_concurrency) in overrides.items()
    }
    if redis is None:
        return Limiter(default=default, overrides=per_key)
    return Limiter(
        default=default,
        overrides=per_key,
        storage=redis.limits_storage(key_prefix="dmb-limits"),
        slots=SharedSlots(redis, lease_seconds),
        storage_target=f"Redis at {redis.describe()}",
    )
