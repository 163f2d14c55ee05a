"""Concurrent-answer slots shared by every replica: a counting semaphore per principal in Redis.

Each running answer holds a *lease*: a member of the principal's sorted set, scored by the time it
expires. Acquiring runs one Lua script (so it is atomic across replicas): drop the expired leases,
count the rest, add ours if the count is under the cap. The holder renews its lease every third of
the lease time while the answer runs and removes it when the answer ends; a replica that dies
holding leases renews nothing, so its slots free themselves after at most one lease time.
The script takes the time from Redis (`TIME`), so replicas with skewed clocks agree.

All of a principal's keys carry the principal as a hash tag (`dmb-slots:{alice}`), so on Redis
Cluster a script only ever touches one slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio
from redis.exceptions import RedisError

from bridge.store.pool import RedisPool

logger = logging.getLogger(__name__)

_KEY_PREFIX = "dmb-slots"
_TAG_SAFE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_RELEASE_SECONDS = 2.0

# KEYS[1] the principal's lease set; ARGV: cap, lease ms, lease id. 1 = granted, 0 = full.
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return 1
"""

# KEYS[1] the lease set; ARGV: lease ms, lease id. Pushes the lease's expiry out (re-adding it if an
# outage outlasted it: the answer is really running, so it must be counted).
_RENEW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return 1
"""

# Every way the shared counter can fail: Redis errors, sockets, timeouts.
UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def slots_key(principal: str) -> str:
    """The principal's lease set; the `{...}` hash tag keeps a principal's keys in one cluster slot."""
    tag = principal if _TAG_SAFE.fullmatch(principal) else hashlib.sha256(principal.encode()).hexdigest()
    return f"{_KEY_PREFIX}:{{{tag}}}"


class SharedSlots:
    """Per-principal answer slots counted in Redis, leased for `lease_seconds` at a time, on the
    process's shared connections (`redis`, closed by its owner)."""

    def __init__(self, redis: RedisPool, lease_seconds: float) -> None:
        self._client: Any = redis.client
        self._lease_ms = max(1000, int(lease_seconds * 1000))
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)

    @property
    def lease_seconds(self) -> float:
        """How long a lease lives without renewal."""
        return self._lease_ms / 1000

    async def acquire(self, principal: str, cap: int) -> str | None:
        """A new lease id, or None when the principal already holds `cap` live leases.

        Raises:
            RedisError, OSError, TimeoutError: the shared counter is unreachable.
        """
        lease = secrets.token_hex(12)
        granted = await self._acquire(keys=[slots_key(principal)], args=[cap, self._lease_ms, lease])
        return lease if int(granted) == 1 else None

    async def renew(self, principal: str, lease: str) -> None:
        """Push the lease's expiry one lease time out."""
        await self._renew(keys=[slots_key(principal)], args=[self._lease_ms, lease])

    async def release(self, principal: str, lease: str) -> None:
        """Give the slot back now (a lease that cannot be removed expires by itself)."""
        await self._client.zrem(slots_key(principal), lease)

    async def holders(self, principal: str) -> int:
        """How many leases the principal has in the set, expired ones included (for tests and ops)."""
        return int(await self._client.zcard(slots_key(principal)))

    @contextlib.asynccontextmanager
    async def held(self, principal: str, lease: str) -> AsyncIterator[None]:
        """Keep `lease` alive while the block runs, then release it (shielded from cancellation)."""
        stop = asyncio.Event()
        renewer = asyncio.create_task(self._keep_renewing(principal, lease, stop))
        try:
            yield
        finally:
            stop.set()
            renewer.cancel()
            with anyio.CancelScope(shield=True):
                # Bounded: a cancellation can be swallowed inside a redis-py command (seen under
                # load: renewers "cancelling" yet still renewing, answers never returning). The
                # stop flag ends the loop at its next turn whatever happened to the cancel.
                await asyncio.wait([renewer], timeout=_RELEASE_SECONDS)
            with anyio.move_on_after(_RELEASE_SECONDS, shield=True):
                try:
                    await self.release(principal, lease)
                except UNAVAILABLE as exc:
                    logger.warning(
                        "could not release an answer slot (%s); it expires within %.0f s",
                        type(exc).__name__,
                        self.lease_seconds,
                    )

    async def _keep_renewing(self, principal: str, lease: str, stop: asyncio.Event) -> None:
        interval = self.lease_seconds / 3
        failing = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self.renew(principal, lease)
            except UNAVAILABLE as exc:
                # Keep trying: the answer goes on; at worst the slot is not counted for a while.
                if not failing:
                    logger.warning("could not renew an answer slot: %s", type(exc).__name__)
                failing = True
            else:
                failing = False
