"""The process's one bounded set of connections to Redis, shared by every Redis user in it.

The context store, the request counter (`limits`) and the answer slots all borrow their connections
from one `RedisPool`, which the runtime builds from `REDIS_URL` and closes last. Its `PoolLimits`:

* at most `max_connections` connections (`BRIDGE_REDIS_MAX_CONNECTIONS`);
* a command that finds them all in use waits up to `wait_seconds`
  (`BRIDGE_REDIS_POOL_TIMEOUT_SECONDS`) for one to come free, then fails with `PoolExhausted`: the
  store answers that it is busy, the limiter takes its Redis-is-down path (requests uncounted,
  answer slots counted per process) until connections come free again;
* a connection nobody has used for `idle_seconds` (`BRIDGE_REDIS_IDLE_SECONDS`) is closed by
  `close_idle_forever`, which the runtime runs for its lifetime. redis-py keeps every connection it
  ever opened until the pool closes, and has no idle timeout of its own.

Each connection takes at most one socket, and a broken one (a Redis restart, a failover) is
reconnected in place, so the bound holds for sockets across outages too. Every connection names
itself `dust-mcp-bridge` (`CLIENT LIST` on the server counts them).

Per `REDIS_URL` form (`bridge.store.connection`):

* one server (`redis://`, `rediss://`, `unix://`): everything above.
* Sentinel: the same for the master's connections. Each sentinel is asked for the master's address
  once per new master connection, on a pool of its own of at most `SENTINEL_CONNECTIONS`, waiting
  and closed when idle in the same way.
* Cluster: redis-py keeps connections per node, and its nodes neither wait for a free connection
  (a command that finds none fails at once, as `MaxConnectionsError`) nor say which connection was
  idle for how long. So each node holds at most `max_connections` for the store and the slots (one
  shared client), and as many again for the request counter, whose `limits` client cannot be
  handed ours; each client also keeps the connection to the first startup node that learnt the
  slot map. Idle connections stay open until the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

import anyio
import redis.asyncio as aioredis
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.store.connection import PoolExhausted, RedisKind, RedisTarget, parse_redis_url

logger = logging.getLogger(__name__)

# The defaults of the settings (bridge/config.py says why these values).
DEFAULT_MAX_CONNECTIONS = 128
DEFAULT_IDLE_SECONDS = 60.0
DEFAULT_WAIT_SECONDS = 2.0
# Connections to each sentinel: one short query per new master connection.
SENTINEL_CONNECTIONS = 4
CLIENT_NAME = "dust-mcp-bridge"
HELD_CLIENT_NAME = "dust-mcp-bridge-held"
# Short timeouts keep a dead Redis from stalling a tool call.
_SOCKET_TIMEOUT = 2.0
# The longest pause between two passes of the idle-connection sweep.
_MAX_SWEEP_INTERVAL = 15.0
# `limits` picks its storage class by URI; with `connection_pool` given it builds its client on that
# pool and never uses the URI to connect.
_LIMITS_ON_A_POOL = "async+redis://shared-pool:6379"


@dataclass(frozen=True)
class PoolLimits:
    """How many connections, how long a command waits for one, how long one may stay idle."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    wait_seconds: float = DEFAULT_WAIT_SECONDS

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.idle_seconds <= 0 or self.wait_seconds <= 0:
            raise ValueError("a pool needs at least one connection and positive times")

    @property
    def sweep_interval(self) -> float:
        """How often idle connections are looked for: a connection idle for `idle_seconds` is closed
        within a quarter of that again (at most 15 s later)."""
        return min(max(self.idle_seconds / 4, 0.05), _MAX_SWEEP_INTERVAL)


@dataclass(frozen=True)
class PoolStats:
    """Connections of the bounded pools at one moment."""

    open: int  # connected: each holds a socket
    in_use: int  # lent to a command right now


def _options() -> dict[str, Any]:
    """Every user's connection options: replies decoded, short timeouts, one quick retry for the stale
    socket a Redis restart or failover leaves behind, a health check on a connection idle for 30 s."""
    return {
        "decode_responses": True,
        "socket_timeout": _SOCKET_TIMEOUT,
        "socket_connect_timeout": _SOCKET_TIMEOUT,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.05), retries=1),
        "client_name": CLIENT_NAME,
    }


class _BoundedPool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool, remembering when each connection was given back, so the ones idle for
    too long can be closed; a wait that runs out raises `PoolExhausted`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle_since: weakref.WeakKeyDictionary[AbstractConnection, float] = weakref.WeakKeyDictionary()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        base: Any = super()  # redis-py leaves this method unannotated
        try:
            return await base.get_connection(*args, **kwargs)
        except RedisConnectionError as exc:
            # redis-py's words for a wait that ran out, over the timeout it came from (a connect
            # that fails says otherwise, and a connect that times out raises a TimeoutError).
            if str(exc) == "No connection available." and isinstance(exc.__cause__, TimeoutError):
                raise PoolExhausted(self.max_connections, self.timeout) from exc
            raise

    async def release(self, connection: AbstractConnection) -> None:
        self._idle_since[connection] = time.monotonic()
        await super().release(connection)

    async def close_idle(self, idle_seconds: float) -> int:
        """Take the connections idle for `idle_seconds` out of the pool and close them; how many had
        a socket open. The pool opens new ones when it needs them."""
        cutoff = time.monotonic() - idle_seconds
        async with self._lock:
            idle = [c for c in self._available_connections if self._idle_since.get(c, 0.0) <= cutoff]
            if not idle:
                return 0
            leaving = set(idle)
            self._available_connections[:] = [c for c in self._available_connections if c not in leaving]
        connected = sum(1 for c in idle if c.is_connected)
        await asyncio.gather(*(c.disconnect() for c in idle), return_exceptions=True)
        return connected

    def stats(self) -> PoolStats:
        """Connections open and in use now."""
        every = [*self._available_connections, *self._in_use_connections]
        return PoolStats(open=sum(1 for c in every if c.is_connected), in_use=len(self._in_use_connections))


class _BoundedSentinelPool(SentinelConnectionPool, _BoundedPool):
    """The master's connections of a Sentinel deployment, found through the sentinels, bounded."""


class RedisPool:
    """The connections of this process to the Redis deployment `target` names, for every user.

    Builds nothing on the network: the first command connects, so the bridge starts while Redis is
    down. `client` is shared (it never closes the pool); `aclose` closes every connection.
    """

    def __init__(self, target: RedisTarget, limits: PoolLimits | None = None) -> None:
        self.target = target
        self.limits = limits or PoolLimits()
        self._pools: list[_BoundedPool] = []
        # Pools of connections held open for as long as the process lives (the broadcast's), apart
        # from the bounded pool: a held connection would take a place the round trips need.
        self._held: list[aioredis.ConnectionPool] = []
        self._sentinel: Any = None
        self.client: aioredis.Redis | RedisCluster
        if target.kind is RedisKind.SINGLE:
            # The URL's query string wins over these options, as in redis-py.
            pool = _BoundedPool.from_url(
                target.url,
                max_connections=self.limits.max_connections,
                timeout=self.limits.wait_seconds,
                **_options(),
            )
            self._pools.append(pool)
            self.client = aioredis.Redis(connection_pool=pool)
        elif target.kind is RedisKind.SENTINEL:
            self.client = self._sentinel_master()
        else:
            self.client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                ssl=target.tls,
                max_connections=self.limits.max_connections,
                **target.auth,
                **{key: value for key, value in _options().items() if key != "health_check_interval"},
            )

    @classmethod
    def from_url(cls, url: str, limits: PoolLimits | None = None) -> RedisPool:
        """A pool on `url` (any form of `bridge.store.connection`). Raises ValueError without the URL."""
        try:
            return cls(parse_redis_url(url), limits)
        except ValueError:
            # The parsers' messages (ours, redis-py's) may echo parts of the URL, which can carry a
            # password.
            raise ValueError("invalid Redis URL") from None

    def describe(self) -> str:
        """Where this Redis is, for operators: hosts and ports, never credentials."""
        return self.target.describe()

    def _sentinel_master(self) -> aioredis.Redis:
        """The master's client, and each sentinel's client on a small bounded pool of its own."""
        target = self.target
        assert target.service_name is not None
        tls: dict[str, Any] = {"ssl": True} if target.tls else {}
        # redis-py < 8.2 ships Sentinel without annotations and 8.2 with them; going through Any
        # type-checks against both (an ignore comment would be "unused" on one of them).
        sentinel_type: Any = Sentinel
        sentinel = self._sentinel = sentinel_type(target.nodes, **target.auth, **tls, **_options())
        query = {
            **target.auth,
            "socket_timeout": _SOCKET_TIMEOUT,
            "socket_connect_timeout": _SOCKET_TIMEOUT,
            "client_name": CLIENT_NAME,
            # Master discovery moves on to the next sentinel by itself (as redis-py's own default).
            "retry": Retry(NoBackoff(), 0),
            "connection_class": SSLConnection if target.tls else Connection,
        }
        sentinel.sentinels = [
            aioredis.Redis(connection_pool=self._sentinel_pool(host, port, query))
            for host, port in target.nodes
        ]
        master: aioredis.Redis = sentinel.master_for(
            target.service_name,
            connection_pool_class=_BoundedSentinelPool,
            db=target.db,
            max_connections=self.limits.max_connections,
            timeout=self.limits.wait_seconds,
        )
        pool = master.connection_pool
        assert isinstance(pool, _BoundedSentinelPool)
        self._pools.append(pool)
        return aioredis.Redis(connection_pool=pool)

    def _sentinel_pool(self, host: str, port: int, options: dict[str, Any]) -> _BoundedPool:
        pool = _BoundedPool(
            host=host,
            port=port,
            max_connections=SENTINEL_CONNECTIONS,
            timeout=self.limits.wait_seconds,
            **options,
        )
        self._pools.append(pool)
        return pool

    def held_client(self) -> aioredis.Redis | RedisCluster:
        """A client for one connection held for the process's lifetime (pub/sub), outside the bound:
        one more connection per process, named `dust-mcp-bridge-held` (a cluster's: its own node's)."""
        if self.target.kind is RedisKind.CLUSTER:
            return self.client
        options = {**_options(), "client_name": HELD_CLIENT_NAME}
        if self.target.kind is RedisKind.SINGLE:
            pool = aioredis.ConnectionPool.from_url(self.target.url, max_connections=1, **options)
        else:
            master = self._sentinel.master_for(self.target.service_name, db=self.target.db, max_connections=1)
            pool = master.connection_pool
            pool.connection_kwargs["client_name"] = HELD_CLIENT_NAME
        self._held.append(pool)
        return aioredis.Redis(connection_pool=pool)

    def limits_storage(self, key_prefix: str) -> Storage:
        """The `limits` request counter on these connections (on a cluster, on a client of its own)."""
        if self.target.kind is RedisKind.CLUSTER:
            tls: dict[str, Any] = {"ssl": True} if self.target.tls else {}
            hosts = ",".join(f"{host}:{port}" for host, port in self.target.nodes)
            return RedisClusterStorage(
                f"async+redis+cluster://{hosts}",
                implementation="redispy",
                key_prefix=key_prefix,
                socket_timeout=_SOCKET_TIMEOUT,
                max_connections=self.limits.max_connections,
                client_name=CLIENT_NAME,
                **self.target.auth,
                **tls,
            )
        assert isinstance(self.client, aioredis.Redis)
        shared: dict[str, Any] = {"connection_pool": self.client.connection_pool}
        return RedisStorage(_LIMITS_ON_A_POOL, implementation="redispy", key_prefix=key_prefix, **shared)

    def stats(self) -> PoolStats | None:
        """Connections open and in use over the bounded pools; None on a cluster (not counted)."""
        if self.target.kind is RedisKind.CLUSTER:
            return None
        each = [pool.stats() for pool in self._pools]
        return PoolStats(open=sum(s.open for s in each), in_use=sum(s.in_use for s in each))

    async def close_idle(self) -> int:
        """Close the connections idle for `limits.idle_seconds`; how many sockets that closed."""
        closed = 0
        for pool in self._pools:
            closed += await pool.close_idle(self.limits.idle_seconds)
        return closed

    async def close_idle_forever(self) -> None:
        """Close idle connections every `limits.sweep_interval` until cancelled (the runtime's task)."""
        while True:
            await anyio.sleep(self.limits.sweep_interval)
            try:
                closed = await self.close_idle()
            except Exception as exc:  # never end the runtime over housekeeping
                logger.warning("closing idle Redis connections failed: %s", type(exc).__name__)
                continue
            if closed:
                logger.debug("closed %d Redis connection(s) idle for %g s", closed, self.limits.idle_seconds)

    async def aclose(self) -> None:
        """Close every connection (the shared client first, then each pool)."""
        with contextlib.suppress(Exception):
            await self.client.aclose()
        for pool in [*self._pools, *self._held]:
            with contextlib.suppress(Exception):
                await pool.aclose()
