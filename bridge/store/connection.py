"""`REDIS_URL` in its four forms, and what a Redis failure was, in words that hold no URL.

* `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path/redis.sock?db=0`:
  one server, `redis.asyncio.Redis.from_url`.
* `redis+sentinel://[user:password@]host:26379,host2:26379/service_name[/db]` (`rediss+sentinel://`
  for TLS): the master of `service_name` as the sentinels report it, followed across failovers by
  redis-py's `Sentinel`. The credentials authenticate to the sentinels and to the master alike, as
  in the `limits` library (one URL serves both users).
* `redis+cluster://[user:password@]host:port[,host2:port2]` (`rediss+cluster://` for TLS): Redis
  Cluster through `RedisCluster`, which learns the slot map from any startup node.

Parsing never echoes the URL in an error: it can carry a password. The clients for each form, all on
one bounded set of connections, are built by `bridge.store.pool`.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import MaxConnectionsError
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


class PoolExhausted(MaxConnectionsError):
    """Every connection of the bounded pool stayed in use for the whole wait: Redis may be fine, the
    process is asking too much of it at once (or `BRIDGE_REDIS_MAX_CONNECTIONS` is too low)."""

    def __init__(self, max_connections: int, wait_seconds: float | None) -> None:
        waited = f" within {wait_seconds:g} s" if wait_seconds else ""
        super().__init__(
            f"no free Redis connection{waited}: all {max_connections} in use (BRIDGE_REDIS_MAX_CONNECTIONS)"
        )


def failure_reason(exc: BaseException) -> str:
    """The operating system's reason under a Redis connection failure ("Connection refused",
    "timed out"), a full pool's own sentence, else the error class; never redis-py's own text, which
    may grow to quote a URL."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PoolExhausted):
            return str(seen)
        if isinstance(seen, MaxConnectionsError):  # a cluster node's pool, which does not wait
            return "no free Redis connection: all in use (BRIDGE_REDIS_MAX_CONNECTIONS)"
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
