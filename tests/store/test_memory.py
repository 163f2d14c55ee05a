"""The in-process store (bridge/store/memory.py): its bound and its sweep of expired entries."""

from __future__ import annotations

from bridge.store.memory import MemoryStore
from bridge.store.records import (
    new_handle,
)
from tests.store.support import LONG_TTL, SHORT_TTL, FakeClock, make_record


async def test_memory_store_bound_evicts_the_least_recently_touched() -> None:
    store = MemoryStore(LONG_TTL, max_entries=3, clock=FakeClock())
    a, b, c, d = (make_record(last_used_at=float(i)) for i in range(4))
    for record in (a, b, c):
        await store.save(record)
    assert await store.load(a.handle, "alice") == a  # `b` is now the oldest
    await store.save(d)

    assert await store.load(b.handle, "alice") is None
    assert await store.list_for_owner("alice") == [d, c, a]

    handles = [new_handle() for _ in range(4)]
    for number, handle in enumerate(handles):
        await store.remember(f"s{number}", "agent", handle)
    assert await store.recall("s0", "agent") is None
    assert [await store.recall(f"s{n}", "agent") for n in (1, 2, 3)] == handles[1:]


async def test_memory_store_sweeps_expired_entries_on_write() -> None:
    clock = FakeClock()
    store = MemoryStore(SHORT_TTL, max_entries=10, clock=clock)
    for _ in range(10):
        await store.save(make_record())
        await store.remember("session", new_handle()[-6:], new_handle())
    clock.now += SHORT_TTL
    fresh = make_record()
    await store.save(fresh)
    await store.remember("session", "agent", fresh.handle)
    # Expired entries were dropped, not evicted one by one at the bound, and nothing else remains.
    assert await store.list_for_owner("alice") == [fresh]
    assert len(store._records) == 1 and len(store._sessions) == 1
