"""The circuit breaker with a fake clock (no server)."""

from __future__ import annotations

import pytest

from bridge.dust.breaker import CircuitBreaker
from bridge.dust.errors import DustUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, reset_seconds=10, clock=clock)
    for _ in range(2):
        assert breaker.acquire() is False
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.acquire()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4
    with pytest.raises(DustUnavailable) as caught:
        breaker.acquire()
    assert caught.value.type == "circuit_open"
    assert "6.0s" in caught.value.message


def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_half_open_lets_one_probe_and_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.state == "half_open"
    assert breaker.acquire() is True
    with pytest.raises(DustUnavailable):
        breaker.acquire()  # only one probe at a time
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.acquire() is False


def test_failed_probe_reopens_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 6
    assert breaker.acquire() is True
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4.9
    with pytest.raises(DustUnavailable):
        breaker.acquire()
    clock.now += 0.1
    assert breaker.acquire() is True


def test_released_probe_lets_another_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    probe = breaker.acquire()
    breaker.release(probe)  # e.g. the caller was cancelled mid-request
    assert breaker.acquire() is True


def test_stale_failures_while_open_do_not_extend_the_open_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 3
    breaker.record_failure()  # a request that started before the breaker opened
    clock.now += 2
    assert breaker.acquire() is True


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(reset_seconds=0)
