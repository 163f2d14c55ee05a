"""The timed store (bridge/store/timed.py): every coroutine method of the store it wraps is timed
into the callback, with the method's name and its outcome; everything else passes through."""

from __future__ import annotations

import pytest

from bridge.store.memory import MemoryStore
from bridge.store.records import new_handle
from bridge.store.timed import timed_store
from tests.store.support import LONG_TTL, make_record


async def test_each_operation_is_observed_with_its_outcome() -> None:
    seen: list[tuple[str, str, float]] = []
    inner = MemoryStore(LONG_TTL)
    store = timed_store(inner, lambda operation, outcome, seconds: seen.append((operation, outcome, seconds)))
    record = make_record()
    await store.save(record)
    assert await store.load(record.handle, "alice") == record
    with pytest.raises(ValueError):
        await store.remember("session", "agent", "not-a-handle")
    assert [(operation, outcome) for operation, outcome, _ in seen] == [
        ("save", "ok"),
        ("load", "ok"),
        ("remember", "error"),
    ]
    assert all(0 <= seconds < 1 for _, _, seconds in seen)
    assert store.kind == "memory"
    await store.remember("session", "agent", new_handle())
    await store.aclose()
    assert [operation for operation, _, _ in seen[-2:]] == ["remember", "aclose"]


def test_attributes_that_are_not_coroutines_pass_through_untimed() -> None:
    seen: list[str] = []
    inner = MemoryStore(LONG_TTL)
    store = timed_store(inner, lambda operation, outcome, seconds: seen.append(operation))
    assert store._live_record.__self__ is inner  # type: ignore[attr-defined]
    assert seen == []
