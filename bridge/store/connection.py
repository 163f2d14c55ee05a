"""`REDIS_URL` in its four forms, and the redis-py client (or `limits` storage) for each.

* `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path/redis.sock?db=0`:
  one server, `redis.asyncio.Redis.from_url`.
* `redis+sentinel://[user:password@]host:26379,host2:26379/service_name[/db]` (`rediss+sentinel://`
  for TLS): the master of `service_name` as the sentinels report it, followed across failovers by
  redis-py's `Sentinel`. The credentials authenticate to the sentinels and to the master alike, as
  in the `limits` library (one URL serves both users).
* `redis+cluster://[user:password@]host:port[,host2:port2]` (`rediss+cluster://` for TLS): Redis
  Cluster through `RedisCluster`, which learns the slot map from any startup node.

Parsing never echoes the URL in an error: it can carry a password.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from limits.aio.storage import RedisClusterStorage, RedisSentinelStorage, RedisStorage, Storage
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import TimeoutError as RedisTimeoutError


class RedisKind(enum.StrEnum):
    """How the Redis deployment is reached."""

    SINGLE = "single"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


_SCHEMES = {
    "redis": (RedisKind.SINGLE, False),
    "rediss": (RedisKind.SINGLE, True),
    "unix": (RedisKind.SINGLE, False),
    "redis+sentinel": (RedisKind.SENTINEL, False),
    "rediss+sentinel": (RedisKind.SENTINEL, True),
    "redis+cluster": (RedisKind.CLUSTER, False),
    "rediss+cluster": (RedisKind.CLUSTER, True),
}
SUPPORTED_SCHEMES = tuple(f"{scheme}://" for scheme in _SCHEMES)
# Connections one process may open to one Redis node; each answer streaming holds none for long.
POOL_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class RedisTarget:
    """A parsed `REDIS_URL`."""

    kind: RedisKind
    url: str
    tls: bool
    nodes: list[tuple[str, int]] = field(default_factory=list)
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Where this Redis is, for operators: hosts and ports, never credentials."""
        if self.kind is RedisKind.SENTINEL:
            return f"sentinel service {self.service_name} via {_hosts(self.nodes)}"
        if self.kind is RedisKind.CLUSTER:
            return f"cluster {_hosts(self.nodes)}"
        parts = urlsplit(self.url)
        if parts.scheme.lower() == "unix":
            return f"unix socket {parts.path}"
        return f"{parts.hostname}:{parts.port or 6379}"

    @property
    def auth(self) -> dict[str, Any]:
        """`username`/`password` keyword arguments for redis-py, only those that are set."""
        found = {"username": self.username, "password": self.password}
        return {key: value for key, value in found.items() if value}


def failure_reason(exc: BaseException) -> str:
    """The operating system's reason under a Redis connection failure ("Connection refused",
    "timed out"), else the error class; never redis-py's own text, which may grow to quote a URL."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | RedisTimeoutError):
            return "timed out"
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _hosts(nodes: list[tuple[str, int]]) -> str:
    return ",".join(f"{host}:{port}" for host, port in nodes)


def _nodes(netloc: str, default_port: int) -> list[tuple[str, int]]:
    nodes = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = port, str(default_port)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("each host must look like host:port")
        nodes.append((host, int(port)))
    return nodes


def parse_redis_url(url: str) -> RedisTarget:
    """Split a `REDIS_URL` into what redis-py needs. Raises ValueError (without the URL) when invalid."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError("must start with one of " + ", ".join(SUPPORTED_SCHEMES))
    kind, tls = _SCHEMES[scheme.lower()]
    if kind is RedisKind.SINGLE:
        parts = urlsplit(url)
        if scheme.lower() != "unix" and not parts.hostname:
            raise ValueError("names no host")
        return RedisTarget(kind=kind, url=url, tls=tls)
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ValueError("names no host")
    nodes = _nodes(hosts, 26379 if kind is RedisKind.SENTINEL else 6379)
    service_name = None
    db = 0
    if kind is RedisKind.SENTINEL:
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if not segments:
            raise ValueError("needs the sentinel service name as its path (.../mymaster)")
        service_name = segments[0]
        if len(segments) > 1:
            if not segments[1].isdigit():
                raise ValueError("the database after the service name must be a number")
            db = int(segments[1])
    query_db = parse_qs(parts.query).get("db")
    if query_db and query_db[0].isdigit():
        db = int(query_db[0])
    return RedisTarget(
        kind=kind,
        url=url,
        tls=tls,
        nodes=nodes,
        service_name=service_name,
        db=db,
        username=username,
        password=password,
    )


def redis_client(target: RedisTarget, **options: Any) -> aioredis.Redis | RedisCluster:
    """A client for `target`; `options` are redis-py connection options (timeouts, retry, ...).

    Nothing connects yet: every form connects lazily, so the bridge starts while Redis is down.
    """
    if target.kind is RedisKind.SINGLE:
        # A blocking pool: under load a command waits (up to the socket timeout) for a connection,
        # where redis-py's default pool of 100 raises MaxConnectionsError at once (seen at 500
        # concurrent answers: the rate limiter failed open and answer slots fell back).
        timeout = options.get("socket_timeout") or 2.0
        pool = aioredis.BlockingConnectionPool.from_url(
            target.url, max_connections=POOL_MAX_CONNECTIONS, timeout=timeout, **options
        )
        client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        return client
    if target.kind is RedisKind.SENTINEL:
        assert target.service_name is not None
        tls: dict[str, Any] = {"ssl": True} if target.tls else {}
        # redis-py < 8.2 ships Sentinel without annotations and 8.2 with them; going through Any
        # type-checks against both (an ignore comment would be "unused" on one of them).
        sentinel_type: Any = Sentinel
        sentinel = sentinel_type(
            target.nodes,
            sentinel_kwargs={
                **target.auth,
                **tls,
                "socket_timeout": options.get("socket_timeout"),
                "socket_connect_timeout": options.get("socket_connect_timeout"),
            },
            **target.auth,
            **tls,
            **options,
        )
        master: aioredis.Redis = sentinel.master_for(
            target.service_name, db=target.db, max_connections=POOL_MAX_CONNECTIONS
        )
        return master
    cluster_options = {
        key: value for key, value in options.items() if key not in ("health_check_interval", "db")
    }
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        ssl=target.tls,
        **target.auth,
        **cluster_options,
    )


def limits_storage(target: RedisTarget, key_prefix: str, socket_timeout: float) -> Storage:
    """The `limits` storage on the same deployment, so every replica shares one set of counters."""
    if target.kind is RedisKind.SINGLE:
        uri = target.url
        if uri.lower().startswith("unix://"):
            uri = "redis+unix://" + uri[len("unix://") :]
        return RedisStorage(
            "async+" + uri,
            implementation="redispy",
            key_prefix=key_prefix,
            socket_timeout=socket_timeout,
            max_connections=POOL_MAX_CONNECTIONS,
        )
    hosts = ",".join(f"{host}:{port}" for host, port in target.nodes)
    tls: dict[str, Any] = {"ssl": True} if target.tls else {}
    if target.kind is RedisKind.SENTINEL:
        return RedisSentinelStorage(
            f"async+redis+sentinel://{hosts}/{target.service_name}",
            implementation="redispy",
            key_prefix=key_prefix,
            use_replicas=False,
            sentinel_kwargs={**target.auth, **tls},
            socket_timeout=socket_timeout,
            db=target.db,
            **target.auth,
            **tls,
        )
    return RedisClusterStorage(
        f"async+redis+cluster://{hosts}",
        implementation="redispy",
        key_prefix=key_prefix,
        socket_timeout=socket_timeout,
        **target.auth,
        **tls,
    )
