"""The context store: what outlives a request or a process (conversation handles, upload records,
pending uploads), behind one protocol and two back ends.

    records.py     the records, their ids, and the JSON they are stored as
    base.py        ContextStore (the protocol every back end keeps) and StoreUnavailable
    memory.py      MemoryStore: one process, for stdio and demos
    redis.py       RedisStore: every replica, across restarts (its docstring has the key layout)
    connection.py  REDIS_URL in its four forms, and what a Redis failure was
    pool.py        the process's one bounded set of Redis connections, shared by every Redis user
    sealing.py     Fernet encryption of what the Redis store writes (BRIDGE_STORE_ENCRYPTION_KEY)
    timed.py       a store with every operation timed (for the metrics)

`create_store` (here) picks the back end from what the root passes it.
"""

from __future__ import annotations

from bridge.store.base import ContextStore
from bridge.store.memory import MemoryStore
from bridge.store.pool import RedisPool
from bridge.store.redis import RedisStore
from bridge.store.sealing import Sealer


def create_store(redis: RedisPool | None, ttl_seconds: int, sealer: Sealer | None = None) -> ContextStore:
    """The Redis store on the shared pool `redis` when there is one (sealed when `sealer` is given),
    else the in-process one.

    Never touches the network, and leaves the pool to its owner. The in-process store is not sealed:
    it never leaves the process.
    """
    if redis is not None:
        return RedisStore(redis, ttl_seconds, sealer=sealer)
    return MemoryStore(ttl_seconds)


__all__ = ["create_store"]
