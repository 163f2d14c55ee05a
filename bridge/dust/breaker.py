"""A consecutive-failure circuit breaker for calls to Dust.

When Dust is down, every tool call would otherwise wait through its retries and timeouts; after
`failures` consecutive unreachable/5xx outcomes the breaker opens and calls fail at once with
`DustUnavailable(type="circuit_open")`. After `reset_seconds` it lets one probe call through
(half-open): success closes it, failure opens it again. 4xx answers prove Dust is up, so the
client reports them as successes.

The breaker is used from one event loop only, so it needs no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bridge.dust.errors import DustUnavailable

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Fail fast while Dust keeps failing; probe again once `reset_seconds` have passed."""

    def __init__(
        self, failures: int = 5, reset_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self._threshold = failures
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """`"closed"`, `"open"` (failing fast) or `"half_open"` (a probe may go, or is in flight)."""
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() >= self._opened_at + self._reset_seconds:
            return "half_open"
        return "open"

    def acquire(self) -> bool:
        """Ask to make a call. Returns True when this call is the half-open probe.

        Raises:
            DustUnavailable: type "circuit_open" while the breaker is open or another probe is in flight.
        """
        if self._opened_at is None:
            return False
        wait = self._opened_at + self._reset_seconds - self._clock()
        if wait > 0:
            raise DustUnavailable(
                f"Dust is failing ({self._consecutive} consecutive failures); failing fast, "
                f"next attempt in {wait:.1f}s",
                type="circuit_open",
            )
        if self._probing:
            raise DustUnavailable(
                "Dust is failing; failing fast while a probe request checks whether it has recovered",
                type="circuit_open",
            )
        self._probing = True
        return True

    def release(self, probe: bool) -> None:
        """End a call that produced no verdict (it was cancelled), so a later call may probe."""
        if probe:
            self._probing = False

    def record_success(self) -> None:
        """Dust answered (2xx or 4xx): close the breaker."""
        if self._opened_at is not None:
            log.info("Dust circuit breaker closed: Dust answers again")
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """Dust was unreachable or answered 5xx: count it, and open (or re-open) the breaker."""
        self._consecutive += 1
        if self._probing:
            self._probing = False
            self._opened_at = self._clock()
            log.warning(
                "Dust circuit breaker re-opened: the probe failed; retrying in %.0fs", self._reset_seconds
            )
        elif self._opened_at is None and self._consecutive >= self._threshold:
            self._opened_at = self._clock()
            log.warning(
                "Dust circuit breaker opened after %d consecutive failures; failing fast for %.0fs",
                self._consecutive,
                self._reset_seconds,
            )
