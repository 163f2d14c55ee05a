"""The production context store: Redis, shared by every replica; chats survive restarts.

Layout (prefix `dmb:`; ids inside keys are percent-encoded, so `:` in an id is unambiguous):

    conv:{handle}             a ConversationRecord's JSON, `EX ttl` (sliding: every load restarts it)
    owner:{owner}             sorted set of the owner's handles by `last_used_at` (pruned lazily,
                              capped at OWNER_INDEX_MAX, with its own TTL)
    sess:{session}:{agent}    the last handle of (MCP session, agent), `EX ttl`
    upload:{upload_id}        an UploadRecord's JSON, expiring at its `expires_at`
    uploads:{owner}           sorted set of the owner's upload ids by `created_at`
    pending:{upload_id}       a PendingUpload's JSON, `EX` the TTL its writer chose
    pending-uploads           sorted set of every pending upload id by `started_at`
    mcp-session:{session_id}  a SessionRecord's JSON, `EX` the session TTL (sliding: every load)

Every value is the JSON of `bridge.store.records`, sealed when a `Sealer` is given. The indexes are
advisory: listing reads the records they name and drops the entries whose record is gone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from redis.exceptions import AuthenticationError, MaxConnectionsError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.store.base import StoreUnavailable
from bridge.store.connection import RedisKind, failure_reason
from bridge.store.pool import PoolLimits, RedisPool
from bridge.store.records import (
    CONVERSATIONS,
    PENDING,
    SESSIONS,
    UPLOADS,
    Codec,
    ConversationRecord,
    PendingUpload,
    RecordT,
    SessionRecord,
    UploadRecord,
    is_valid_handle,
    is_valid_session_id,
    is_valid_upload_id,
    require_handle,
)
from bridge.store.sealing import Sealer

# Most handles one owner's index keeps; older entries drop out of listings (the records themselves
# stay loadable until their TTL ends). Without a cap, an owner that is active all the time keeps
# the index alive and it could only shrink when somebody lists it.
OWNER_INDEX_MAX = 1000

_UNREACHABLE = "context store (Redis) is unreachable"


@contextlib.contextmanager
def _redis_errors(target: str) -> Iterator[None]:
    """Turn every Redis failure into StoreUnavailable with a message that holds no URL."""
    try:
        yield
    except AuthenticationError as exc:
        # A subclass of ConnectionError, but "unreachable" would send operators to the network.
        message = "context store (Redis) rejected the credentials"
        raise StoreUnavailable(message, f"Redis at {target} rejected the credentials") from exc
    except MaxConnectionsError as exc:
        # Also a ConnectionError, but Redis may be fine: this process has every connection busy.
        raise StoreUnavailable(
            "context store (Redis) is busy: no connection came free in time; try again shortly",
            f"Redis at {target}: {failure_reason(exc)}",
        ) from exc
    except (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError) as exc:
        # RedisClusterException (no slot map, no startup node answers) is not a RedisError.
        raise StoreUnavailable(
            _UNREACHABLE, f"Redis at {target} is unreachable: {failure_reason(exc)}"
        ) from exc
    except RedisError as exc:
        # Server-side refusals (OOM, MISCONF, READONLY...) also mean the store cannot serve; the
        # server's text may quote keys, so only the error class is named.
        raise StoreUnavailable(f"context store (Redis) failed: {type(exc).__name__}") from exc


def _text(value: object) -> str | None:
    # `from_url` decodes replies; a client handed to the constructor might not.
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _key_part(value: str) -> str:
    # Percent-encoding keeps ordinary ids readable and makes `:` inside an id unambiguous, so
    # ("a:b", "c") and ("a", "b:c") can never share a key.
    return quote(value, safe="")


class RedisStore:
    """Context store in Redis, shared by every replica; survives restarts when Redis persists.

    The connections are borrowed from `redis` (`bridge.store.pool`): they open lazily and reconnect
    per command, so the store can be built while Redis is down and recovers by itself once Redis is
    back. The store closes the pool only when it owns it (`from_url`).
    """

    kind = "redis"

    def __init__(
        self,
        redis: RedisPool,
        ttl_seconds: int,
        prefix: str = "dmb:",
        sealer: Sealer | None = None,
        *,
        owns_pool: bool = False,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._pool = redis
        self._owns_pool = owns_pool
        self._target = redis.describe()
        self._client: Any = redis.client
        # A record and its owner index live in different hash slots, so Redis Cluster cannot run
        # them in one MULTI; there each write is a plain pipeline. The index is advisory either
        # way (listing drops entries whose record is gone), so a half-applied write loses nothing.
        self._atomic = redis.target.kind is not RedisKind.CLUSTER
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._sealer = sealer

    @classmethod
    def from_url(
        cls,
        url: str,
        ttl_seconds: int,
        prefix: str = "dmb:",
        sealer: Sealer | None = None,
        limits: PoolLimits | None = None,
    ) -> RedisStore:
        """A store on a pool of its own on `url` (any form of `bridge.store.connection`), closed with it.

        The bridge shares one pool between its Redis users instead (the runtime builds it).
        Raises ValueError (without the URL) when the URL is invalid.
        """
        return cls(RedisPool.from_url(url, limits), ttl_seconds, prefix, sealer, owns_pool=True)

    # -- keys ---------------------------------------------------------------------------------

    def _conv_key(self, handle: str) -> str:
        return f"{self._prefix}conv:{handle}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}owner:{_key_part(owner)}"

    def _session_key(self, session_key: str, agent_id: str) -> str:
        return f"{self._prefix}sess:{_key_part(session_key)}:{_key_part(agent_id)}"

    def _upload_key(self, upload_id: str) -> str:
        return f"{self._prefix}upload:{upload_id}"

    def _uploads_key(self, owner: str) -> str:
        return f"{self._prefix}uploads:{_key_part(owner)}"

    def _pending_key(self, upload_id: str) -> str:
        return f"{self._prefix}pending:{upload_id}"

    def _mcp_session_key(self, session_id: str) -> str:
        return f"{self._prefix}mcp-session:{session_id}"

    def _pending_index_key(self) -> str:
        return f"{self._prefix}pending-uploads"

    # -- values -------------------------------------------------------------------------------

    def _seal(self, plaintext: str) -> str:
        return self._sealer.seal(plaintext) if self._sealer is not None else plaintext

    def _open(self, stored: object) -> str | None:
        text = _text(stored)
        return self._sealer.open(text) if self._sealer is not None else text

    async def _mget(self, keys: list[str]) -> list[object]:
        # Cluster MGET must stay in one slot; `mget_nonatomic` splits by slot (reads are advisory).
        if self._atomic:
            return list(await self._client.mget(keys))
        return list(await self._client.mget_nonatomic(keys))

    async def _read(self, codec: Codec[RecordT], key: str, key_id: str) -> RecordT | None:
        return codec.decode(self._open(await self._client.get(key)), key_id)

    async def _write_indexed(
        self, key: str, value: str, ex: int, index: str, member: str, score: float
    ) -> None:
        """SET `key` with `EX ex`, ZADD it to `index`, cap the index and let it live as long (one MULTI,
        but in Redis Cluster)."""
        async with self._client.pipeline(transaction=self._atomic) as pipe:
            pipe.set(key, self._seal(value), ex=ex)
            pipe.zadd(index, {member: score})
            pipe.zremrangebyrank(index, 0, -(OWNER_INDEX_MAX + 1))
            # The index lives as long as its newest member could.
            pipe.expire(index, ex)
            await pipe.execute()

    async def _list_indexed(
        self,
        index: str,
        codec: Codec[RecordT],
        key_of: Callable[[str], str],
        limit: int,
        *,
        keep: Callable[[RecordT], bool] = lambda record: True,
        newest_first: bool = True,
    ) -> list[RecordT]:
        """The live records an index names, in its order, at most `limit`; drops dead entries.

        Reads the index a page at a time, so the usual case (the first entries are live) costs two
        round trips. A record that is gone, damaged or not `keep` is dead. Listing extends no TTL.
        """
        read_page = self._client.zrevrange if newest_first else self._client.zrange
        found: dict[str, RecordT] = {}
        start = 0
        while len(found) < limit:
            ids = [
                i
                for member in await read_page(index, start, start + limit - 1)
                if (i := _text(member)) is not None
            ]
            if not ids:
                break
            raws = await self._mget([key_of(i) for i in ids])
            dead = []
            for key_id, raw in zip(ids, raws, strict=True):
                record = codec.decode(self._open(raw), key_id)
                if record is None or not keep(record):
                    dead.append(key_id)
                elif len(found) < limit:
                    # setdefault: a concurrent write can move an entry into the next page.
                    found.setdefault(key_id, record)
            if dead:
                await self._client.zrem(index, *dead)
            # Removed entries no longer occupy ranks, so the next page starts earlier.
            start += len(ids) - len(dead)
        return list(found.values())

    # -- conversations ------------------------------------------------------------------------

    async def save(self, record: ConversationRecord) -> None:
        """Write the record with `EX ttl` and (re)index it under its owner, atomically."""
        require_handle(record.handle)
        with _redis_errors(self._target):
            await self._write_indexed(
                self._conv_key(record.handle),
                CONVERSATIONS.encode(record),
                self._ttl,
                self._owner_key(record.owner),
                record.handle,
                record.last_used_at,
            )

    async def load(self, handle: str, owner: str) -> ConversationRecord | None:
        """The owner's live record for `handle`, else None; a hit restarts its TTL."""
        if not is_valid_handle(handle):
            return None
        key = self._conv_key(handle)
        with _redis_errors(self._target):
            record = await self._read(CONVERSATIONS, key, handle)
            # Check ownership before touching the TTL so a foreign caller cannot keep a record alive.
            if record is None or record.owner != owner:
                return None
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.expire(key, self._ttl)
                pipe.expire(self._owner_key(owner), self._ttl)
                refreshed, _ = await pipe.execute()
        # The key can expire or be deleted between GET and EXPIRE; then it is gone for this caller too.
        return record if refreshed else None

    async def delete(self, handle: str, owner: str) -> bool:
        """Remove the owner's record and its index entry; False if absent, expired or foreign."""
        if not is_valid_handle(handle):
            return False
        key = self._conv_key(handle)
        with _redis_errors(self._target):
            record = await self._read(CONVERSATIONS, key, handle)
            if record is None or record.owner != owner:
                return False
            async with self._client.pipeline(transaction=self._atomic) as pipe:
                pipe.delete(key)
                pipe.zrem(self._owner_key(owner), handle)
                deleted, _ = await pipe.execute()
        return bool(deleted)

    async def list_for_owner(self, owner: str, limit: int = 100) -> list[ConversationRecord]:
        """The owner's live records, newest `last_used_at` first; drops dead index entries on the way."""
        with _redis_errors(self._target):
            return await self._list_indexed(
                self._owner_key(owner), CONVERSATIONS, self._conv_key, limit, keep=lambda r: r.owner == owner
            )

    async def remember(self, session_key: str, agent_id: str, handle: str) -> None:
        """Note `handle` for (session, agent) with `EX ttl`."""
        require_handle(handle)
        with _redis_errors(self._target):
            await self._client.set(self._session_key(session_key, agent_id), handle, ex=self._ttl)

    async def recall(self, session_key: str, agent_id: str) -> str | None:
        """The live handle noted for (session, agent), with its TTL restarted, else None."""
        with _redis_errors(self._target):
            value = _text(await self._client.getex(self._session_key(session_key, agent_id), ex=self._ttl))
        return value if value is not None and is_valid_handle(value) else None

    # -- uploads ------------------------------------------------------------------------------

    async def put_upload(self, record: UploadRecord) -> None:
        """Write the upload with an absolute expiry and index it under its owner, atomically."""
        if not is_valid_upload_id(record.upload_id):
            raise ValueError("not an upload id")
        expires = max(1, int(record.expires_at - time.time()))
        with _redis_errors(self._target):
            await self._write_indexed(
                self._upload_key(record.upload_id),
                UPLOADS.encode(record),
                expires,
                self._uploads_key(record.owner),
                record.upload_id,
                record.created_at,
            )

    async def get_upload(self, upload_id: str, owner: str) -> UploadRecord | None:
        """The owner's live upload, else None."""
        if not is_valid_upload_id(upload_id):
            return None
        with _redis_errors(self._target):
            record = await self._read(UPLOADS, self._upload_key(upload_id), upload_id)
        return record if record is not None and record.owner == owner else None

    async def list_uploads(self, owner: str, limit: int = 100) -> list[UploadRecord]:
        """The owner's live uploads, newest first; dead index entries are dropped."""
        with _redis_errors(self._target):
            return await self._list_indexed(
                self._uploads_key(owner), UPLOADS, self._upload_key, limit, keep=lambda r: r.owner == owner
            )

    # -- pending uploads ----------------------------------------------------------------------

    async def put_pending_upload(self, marker: PendingUpload, ttl_seconds: int) -> None:
        """Write the marker with `EX ttl_seconds` and index it by start time (one index for all owners)."""
        if not is_valid_upload_id(marker.upload_id) or ttl_seconds <= 0:
            raise ValueError("not an upload id, or a TTL that is not positive")
        index = self._pending_index_key()
        with _redis_errors(self._target):
            async with self._client.pipeline(transaction=self._atomic) as pipe:
                pipe.set(
                    self._pending_key(marker.upload_id), self._seal(PENDING.encode(marker)), ex=ttl_seconds
                )
                pipe.zadd(index, {marker.upload_id: marker.started_at})
                # Entries older than any marker can live are dead (their keys expired).
                pipe.zremrangebyscore(index, "-inf", f"({marker.started_at - ttl_seconds}")
                pipe.expire(index, ttl_seconds)
                await pipe.execute()

    async def clear_pending_upload(self, upload_id: str) -> None:
        """Delete the marker and its index entry."""
        with _redis_errors(self._target):
            async with self._client.pipeline(transaction=self._atomic) as pipe:
                pipe.delete(self._pending_key(upload_id))
                pipe.zrem(self._pending_index_key(), upload_id)
                await pipe.execute()

    async def list_pending_uploads(self, limit: int = 1000) -> list[PendingUpload]:
        """The live markers, oldest first; index entries whose marker is gone are dropped."""
        with _redis_errors(self._target):
            return await self._list_indexed(
                self._pending_index_key(), PENDING, self._pending_key, limit, newest_first=False
            )

    # -- MCP sessions -------------------------------------------------------------------------

    async def put_session(self, record: SessionRecord, ttl_seconds: int) -> None:
        """Write the session's record with `EX ttl_seconds`."""
        if not is_valid_session_id(record.session_id) or ttl_seconds <= 0:
            raise ValueError("not a session id, or a TTL that is not positive")
        value = self._seal(SESSIONS.encode(record))
        with _redis_errors(self._target):
            await self._client.set(self._mcp_session_key(record.session_id), value, ex=ttl_seconds)

    async def load_session(self, session_id: str, ttl_seconds: int) -> SessionRecord | None:
        """The live record, its TTL restarted in the same round trip (GETEX), else None."""
        if not is_valid_session_id(session_id):
            return None
        with _redis_errors(self._target):
            raw = await self._client.getex(self._mcp_session_key(session_id), ex=ttl_seconds)
        return SESSIONS.decode(self._open(raw), session_id)

    async def delete_session(self, session_id: str) -> None:
        """Delete the session's record."""
        if not is_valid_session_id(session_id):
            return
        with _redis_errors(self._target):
            await self._client.delete(self._mcp_session_key(session_id))

    # -- the connection -----------------------------------------------------------------------

    async def ping(self) -> None:
        """Round-trip a PING; StoreUnavailable if Redis does not answer."""
        with _redis_errors(self._target):
            await self._client.ping()

    async def aclose(self) -> None:
        """Close the connection pool if the store owns it (a shared one is closed by its owner)."""
        if self._owns_pool:
            await self._pool.aclose()
