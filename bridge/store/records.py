"""Conversation context: which Dust conversation a `conversation` handle continues (DESIGN.md section 4).

A handle is an unguessable bearer-style name for one Dust conversation, bound to the principal that
created it. Records live for a sliding TTL: every successful `load` pushes the deadline back, so an
active chat never expires and an abandoned one disappears on its own. Two back ends share one
contract:

* `RedisStore` -- the production store; any replica can continue any chat, and chats survive
  restarts. Layout (prefix `dmb:`):
  `conv:{handle}` JSON record with `EX ttl`; `owner:{owner}` sorted set of handles scored by
  `last_used_at` (pruned lazily, capped, with its own TTL); `sess:{session}:{agent}` last handle
  per (MCP session, agent) with `EX ttl`.
* `MemoryStore` -- a single-process fallback for stdio and demos: same semantics, bounded size.

Unknown, expired, malformed and foreign handles are indistinguishable to callers (all `None`), so a
probe cannot learn whether somebody else's handle exists.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import pydantic
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.errors import Unavailable
from bridge.security.sealing import Sealer
from bridge.store.connection import failure_reason, parse_redis_url, redis_client

HANDLE_PREFIX = "dmc_"
_HANDLE_BYTES = 24  # 192 random bits; DESIGN.md asks for at least 128
# token_urlsafe(24) is exactly 32 base64url characters: 24 bytes = 192 bits = 32 * 6, so no padding
# and every 32-character string over the alphabet is a possible token.
_HANDLE_RE = re.compile(rf"{HANDLE_PREFIX}[A-Za-z0-9_-]{{32}}")

# Most handles one owner's index keeps; older entries drop out of listings (the records themselves
# stay loadable until their TTL ends). Without a cap, an owner that is active all the time keeps
# the index alive and it could only shrink when somebody lists it.
OWNER_INDEX_MAX = 1000

_UNREACHABLE = "context store (Redis) is unreachable"


class StoreUnavailable(Unavailable):
    """The store back end cannot be reached. The message is for humans and never holds a URL.

    `detail` adds, for operators (`check`, logs), which Redis and why ("Redis at 10.0.0.5:6379:
    Connection refused"); the message, which MCP clients may see, names neither.
    """

    code = "store_unavailable"

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True)
class ConversationRecord:
    """What a handle stands for: one Dust conversation, who owns it and how it was last used."""

    handle: str
    owner: str  # principal id that created it
    dust_conversation_id: str
    agent_id: str  # Dust agent sId last asked
    agent_name: str
    last_agent_message_id: str | None
    url: str | None  # Dust web URL of the conversation
    created_at: float  # epoch seconds
    last_used_at: float  # epoch seconds
    turns: int


# Strict so that a record damaged or written by something else is rejected rather than coerced;
# unknown keys are ignored so a newer replica may add fields during a rolling deploy.
_RECORD_ADAPTER = pydantic.TypeAdapter(ConversationRecord)


def _encode(record: ConversationRecord) -> str:
    return _RECORD_ADAPTER.dump_json(record).decode()


def _decode(raw: str | None, handle: str) -> ConversationRecord | None:
    """The record in `raw`, or None if it is missing, malformed or filed under another handle."""
    if raw is None:
        return None
    try:
        record = _RECORD_ADAPTER.validate_json(raw, strict=True)
    except pydantic.ValidationError:
        return None
    return record if record.handle == handle else None


def new_handle() -> str:
    """A fresh, unguessable conversation handle: `dmc_` followed by 192 random bits (base64url)."""
    return HANDLE_PREFIX + secrets.token_urlsafe(_HANDLE_BYTES)


def is_valid_handle(value: str) -> bool:
    """Whether `value` has exactly the shape `new_handle()` produces (no I/O, constant cost)."""
    return isinstance(value, str) and _HANDLE_RE.fullmatch(value) is not None


def _require_handle(handle: str) -> None:
    # Writing a malformed handle is a bug in the caller, not a condition to hide.
    if not is_valid_handle(handle):
        raise ValueError("not a conversation handle")


UPLOAD_PREFIX = "upl_"
_UPLOAD_RE = re.compile(rf"{UPLOAD_PREFIX}[A-Za-z0-9_-]{{22}}")  # 16 random bytes = 128 bits


@dataclass(frozen=True)
class UploadRecord:
    """A scanned file that reached Dust: only metadata is kept (the bytes live in Dust)."""

    upload_id: str
    owner: str
    filename: str
    size: int
    sha256: str
    mime: str
    scan: str  # "clean", or "skipped" when BRIDGE_SCAN_MODE=off
    dust_file_id: str
    created_at: float  # epoch seconds
    expires_at: float  # epoch seconds
    pages: int | None = None
    width: int | None = None
    height: int | None = None

    @property
    def uri(self) -> str:
        """The MCP resource URI of this upload."""
        return f"bridge://uploads/{self.upload_id}"


_UPLOAD_ADAPTER = pydantic.TypeAdapter(UploadRecord)


def new_upload_id() -> str:
    """A fresh, unguessable upload id: `upl_` followed by 128 random bits (base64url)."""
    return UPLOAD_PREFIX + secrets.token_urlsafe(16)


def is_valid_upload_id(value: str) -> bool:
    """Whether `value` has exactly the shape `new_upload_id()` produces."""
    return isinstance(value, str) and _UPLOAD_RE.fullmatch(value) is not None


def _decode_upload(raw: str | None, upload_id: str) -> UploadRecord | None:
    if raw is None:
        return None
    try:
        record = _UPLOAD_ADAPTER.validate_json(raw, strict=True)
    except pydantic.ValidationError:
        return None
    return record if record.upload_id == upload_id else None


@dataclass(frozen=True)
class PendingUpload:
    """An upload on its way into Dust whose record is not stored yet: what to undo if its process dies.

    Written before Dust's file is created, updated with `dust_file_id` once Dust answers, cleared
    once the upload record is stored (or the Dust file deleted again). `host` names the process's
    host and PID namespace, so `pid` can be checked for liveness by a process in the same one.
    """

    upload_id: str
    owner: str
    started_at: float  # epoch seconds
    host: str
    pid: int
    instance: str  # random per process: tells a restarted process that reused the pid from its past self
    dust_file_id: str | None = None


_PENDING_ADAPTER = pydantic.TypeAdapter(PendingUpload)


def _decode_pending(raw: str | None, upload_id: str) -> PendingUpload | None:
    if raw is None:
        return None
    try:
        marker = _PENDING_ADAPTER.validate_json(raw, strict=True)
    except pydantic.ValidationError:
        return None
    return marker if marker.upload_id == upload_id else None


class ContextStore(Protocol):
    """Where conversation records and per-session memory live, with one sliding TTL."""

    kind: str  # "redis" or "memory"

    async def save(self, record: ConversationRecord) -> None:
        """Write `record` with a fresh TTL and index it under its owner."""
        ...

    async def load(self, handle: str, owner: str) -> ConversationRecord | None:
        """The record if it exists, is live and belongs to `owner` (then its TTL restarts); else None."""
        ...

    async def delete(self, handle: str, owner: str) -> bool:
        """Remove the record; False if it does not exist or belongs to someone else."""
        ...

    async def list_for_owner(self, owner: str, limit: int = 100) -> list[ConversationRecord]:
        """The owner's live records, most recently used first, at most `limit`."""
        ...

    async def remember(self, session_key: str, agent_id: str, handle: str) -> None:
        """Note `handle` as the last conversation of (session, agent), with the same TTL."""
        ...

    async def recall(self, session_key: str, agent_id: str) -> str | None:
        """The handle last remembered for (session, agent), if still live (its TTL restarts)."""
        ...

    async def put_upload(self, record: UploadRecord) -> None:
        """Keep an upload's metadata until `record.expires_at` (a fixed, not sliding, expiry)."""
        ...

    async def get_upload(self, upload_id: str, owner: str) -> UploadRecord | None:
        """The owner's live upload, else None (unknown, expired, malformed and foreign look alike)."""
        ...

    async def list_uploads(self, owner: str, limit: int = 100) -> list[UploadRecord]:
        """The owner's live uploads, newest first."""
        ...

    async def put_pending_upload(self, marker: PendingUpload, ttl_seconds: int) -> None:
        """Write (or overwrite) the pending marker of `marker.upload_id`; it expires after `ttl_seconds`."""
        ...

    async def clear_pending_upload(self, upload_id: str) -> None:
        """Remove the pending marker of `upload_id` (absent is fine)."""
        ...

    async def list_pending_uploads(self, limit: int = 1000) -> list[PendingUpload]:
        """Live pending markers of every owner and process, oldest first, at most `limit`."""
        ...

    async def ping(self) -> None:
        """Return if the back end answers; raise StoreUnavailable otherwise."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


_V = TypeVar("_V")


@dataclass
class _Entry(Generic[_V]):
    value: _V
    expires_at: float  # on the store's monotonic clock


class MemoryStore:
    """In-process store for one replica: TTL on a monotonic clock, at most `max_entries` of each kind.

    Both maps are kept in least-recently-touched order. Because every touch sets the deadline to
    `now + ttl`, that is also expiry order, so expired entries are swept from the front in amortised
    constant time on each write, and the bound evicts the entry touched longest ago.
    """

    kind = "memory"

    def __init__(
        self, ttl_seconds: int, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_seconds <= 0 or max_entries <= 0:
            raise ValueError("ttl_seconds and max_entries must be positive")
        self._ttl = float(ttl_seconds)
        self._max = max_entries
        self._clock = clock
        self._records: OrderedDict[str, _Entry[ConversationRecord]] = OrderedDict()
        self._sessions: OrderedDict[tuple[str, str], _Entry[str]] = OrderedDict()
        self._by_owner: dict[str, set[str]] = {}
        # Uploads all share one TTL, so insertion order is expiry order here too.
        self._uploads: OrderedDict[str, UploadRecord] = OrderedDict()
        self._pending: dict[str, _Entry[PendingUpload]] = {}

    def _live_record(self, handle: str, now: float) -> ConversationRecord | None:
        entry = self._records.get(handle)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._drop_record(handle)
            return None
        return entry.value

    def _drop_record(self, handle: str) -> None:
        entry = self._records.pop(handle, None)
        if entry is None:
            return
        owned = self._by_owner.get(entry.value.owner)
        if owned is not None:
            owned.discard(handle)
            if not owned:
                del self._by_owner[entry.value.owner]

    def _sweep(self, now: float) -> None:
        while self._records:
            handle, record_entry = next(iter(self._records.items()))
            if record_entry.expires_at > now:
                break
            self._drop_record(handle)
        while self._sessions:
            key, session_entry = next(iter(self._sessions.items()))
            if session_entry.expires_at > now:
                break
            del self._sessions[key]

    async def save(self, record: ConversationRecord) -> None:
        """Write `record` with a fresh TTL, evicting the least recently touched record when full."""
        _require_handle(record.handle)
        now = self._clock()
        self._sweep(now)
        # An overwrite must not leave the handle indexed under a previous owner.
        self._drop_record(record.handle)
        while len(self._records) >= self._max:
            self._drop_record(next(iter(self._records)))
        self._records[record.handle] = _Entry(record, now + self._ttl)
        self._by_owner.setdefault(record.owner, set()).add(record.handle)

    async def load(self, handle: str, owner: str) -> ConversationRecord | None:
        """The owner's live record for `handle` (its TTL restarts), else None."""
        now = self._clock()
        record = self._live_record(handle, now)
        if record is None or record.owner != owner:
            return None
        self._records[handle].expires_at = now + self._ttl
        self._records.move_to_end(handle)
        return record

    async def delete(self, handle: str, owner: str) -> bool:
        """Remove the owner's record; False if it is absent, expired or foreign."""
        record = self._live_record(handle, self._clock())
        if record is None or record.owner != owner:
            return False
        self._drop_record(handle)
        return True

    async def list_for_owner(self, owner: str, limit: int = 100) -> list[ConversationRecord]:
        """The owner's live records, newest `last_used_at` first (does not extend their TTL)."""
        now = self._clock()
        live = [
            record
            for handle in list(self._by_owner.get(owner, ()))
            if (record := self._live_record(handle, now)) is not None
        ]
        live.sort(key=lambda record: record.last_used_at, reverse=True)
        return live[: max(limit, 0)]

    async def remember(self, session_key: str, agent_id: str, handle: str) -> None:
        """Note `handle` for (session, agent), evicting the least recently touched note when full."""
        _require_handle(handle)
        now = self._clock()
        self._sweep(now)
        key = (session_key, agent_id)
        self._sessions.pop(key, None)
        while len(self._sessions) >= self._max:
            self._sessions.popitem(last=False)
        self._sessions[key] = _Entry(handle, now + self._ttl)

    async def recall(self, session_key: str, agent_id: str) -> str | None:
        """The live handle noted for (session, agent), with its TTL restarted, else None."""
        now = self._clock()
        key = (session_key, agent_id)
        entry = self._sessions.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._sessions[key]
            return None
        entry.expires_at = now + self._ttl
        self._sessions.move_to_end(key)
        return entry.value

    async def put_upload(self, record: UploadRecord) -> None:
        """Keep the upload until it expires, evicting the oldest upload when full."""
        if not is_valid_upload_id(record.upload_id):
            raise ValueError("not an upload id")
        now = time.time()
        while self._uploads and next(iter(self._uploads.values())).expires_at <= now:
            self._uploads.popitem(last=False)
        while len(self._uploads) >= self._max:
            self._uploads.popitem(last=False)
        self._uploads[record.upload_id] = record

    async def get_upload(self, upload_id: str, owner: str) -> UploadRecord | None:
        """The owner's live upload, else None."""
        record = self._uploads.get(upload_id)
        if record is None or record.owner != owner or record.expires_at <= time.time():
            return None
        return record

    async def list_uploads(self, owner: str, limit: int = 100) -> list[UploadRecord]:
        """The owner's live uploads, newest first."""
        now = time.time()
        mine = [r for r in reversed(self._uploads.values()) if r.owner == owner and r.expires_at > now]
        return mine[: max(limit, 0)]

    async def put_pending_upload(self, marker: PendingUpload, ttl_seconds: int) -> None:
        """Keep the marker for `ttl_seconds` (only in-flight uploads have one, so no bound is needed)."""
        if not is_valid_upload_id(marker.upload_id) or ttl_seconds <= 0:
            raise ValueError("not an upload id, or a TTL that is not positive")
        now = self._clock()
        for upload_id in [i for i, e in self._pending.items() if e.expires_at <= now]:
            del self._pending[upload_id]
        self._pending[marker.upload_id] = _Entry(marker, now + ttl_seconds)

    async def clear_pending_upload(self, upload_id: str) -> None:
        """Forget the marker."""
        self._pending.pop(upload_id, None)

    async def list_pending_uploads(self, limit: int = 1000) -> list[PendingUpload]:
        """The live markers, oldest first."""
        now = self._clock()
        live = [e.value for e in self._pending.values() if e.expires_at > now]
        live.sort(key=lambda marker: marker.started_at)
        return live[: max(limit, 0)]

    async def ping(self) -> None:
        """Always answers: the store is this process."""

    async def aclose(self) -> None:
        """Drop everything (nothing to release)."""
        self._records.clear()
        self._sessions.clear()
        self._by_owner.clear()
        self._uploads.clear()


@contextlib.contextmanager
def _redis_errors(target: str) -> Iterator[None]:
    """Turn every Redis failure into StoreUnavailable with a message that holds no URL."""
    try:
        yield
    except AuthenticationError as exc:
        # A subclass of ConnectionError, but "unreachable" would send operators to the network.
        message = "context store (Redis) rejected the credentials"
        raise StoreUnavailable(message, f"Redis at {target} rejected the credentials") from exc
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

    The client connects lazily and reconnects per command, so the store can be built while Redis
    is down and recovers by itself once Redis is back. The store owns `client` and closes it.
    """

    kind = "redis"

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        ttl_seconds: int,
        prefix: str = "dmb:",
        sealer: Sealer | None = None,
        target: str = "the configured address",
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._target = target
        self._client: Any = client
        # A record and its owner index live in different hash slots, so Redis Cluster cannot run
        # them in one MULTI; there each write is a plain pipeline. The index is advisory either
        # way (listing drops entries whose record is gone), so a half-applied write loses nothing.
        self._atomic = not isinstance(client, RedisCluster)
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._sealer = sealer

    def _seal(self, plaintext: str) -> str:
        return self._sealer.seal(plaintext) if self._sealer is not None else plaintext

    def _open(self, stored: object) -> str | None:
        text = _text(stored)
        return self._sealer.open(text) if self._sealer is not None else text

    @classmethod
    def from_url(
        cls, url: str, ttl_seconds: int, prefix: str = "dmb:", sealer: Sealer | None = None
    ) -> RedisStore:
        """A store on `url` (any form of `bridge.store.connection`) that fails fast when Redis is down.

        Short timeouts keep a dead Redis from stalling a tool call; one quick retry absorbs the
        stale pooled socket left by a Redis restart or failover; health checks catch idle sockets
        that died.
        """
        try:
            target = parse_redis_url(url)
            client = redis_client(
                target,
                decode_responses=True,
                socket_timeout=2.0,
                socket_connect_timeout=2.0,
                health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.05), retries=1),
            )
        except ValueError:
            # The parser's message may echo parts of the URL; the URL can carry a password.
            raise ValueError("invalid Redis URL") from None
        return cls(client, ttl_seconds, prefix, sealer, target=target.describe())

    async def _mget(self, keys: list[str]) -> list[object]:
        # Cluster MGET must stay in one slot; `mget_nonatomic` splits by slot (reads are advisory).
        if self._atomic:
            return list(await self._client.mget(keys))
        return list(await self._client.mget_nonatomic(keys))

    def _conv_key(self, handle: str) -> str:
        return f"{self._prefix}conv:{handle}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}owner:{_key_part(owner)}"

    def _session_key(self, session_key: str, agent_id: str) -> str:
        return f"{self._prefix}sess:{_key_part(session_key)}:{_key_part(agent_id)}"

    async def save(self, record: ConversationRecord) -> None:
        """Write the record with `EX ttl` and (re)index it under its owner, atomically."""
        _require_handle(record.handle)
        owner_key = self._owner_key(record.owner)
        with _redis_errors(self._target):
            async with self._client.pipeline(transaction=self._atomic) as pipe:
                pipe.set(self._conv_key(record.handle), self._seal(_encode(record)), ex=self._ttl)
                pipe.zadd(owner_key, {record.handle: record.last_used_at})
                pipe.zremrangebyrank(owner_key, 0, -(OWNER_INDEX_MAX + 1))
                # The index lives as long as its newest member could.
                pipe.expire(owner_key, self._ttl)
                await pipe.execute()

    async def load(self, handle: str, owner: str) -> ConversationRecord | None:
        """The owner's live record for `handle`, else None; a hit restarts its TTL."""
        if not is_valid_handle(handle):
            return None
        key = self._conv_key(handle)
        with _redis_errors(self._target):
            record = _decode(self._open(await self._client.get(key)), handle)
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
            record = _decode(self._open(await self._client.get(key)), handle)
            if record is None or record.owner != owner:
                return False
            async with self._client.pipeline(transaction=self._atomic) as pipe:
                pipe.delete(key)
                pipe.zrem(self._owner_key(owner), handle)
                deleted, _ = await pipe.execute()
        return bool(deleted)

    async def list_for_owner(self, owner: str, limit: int = 100) -> list[ConversationRecord]:
        """The owner's live records, newest `last_used_at` first; drops dead index entries on the way.

        Reads the index a page at a time, so the usual case (the newest entries are live) costs
        two round trips. Listing does not extend any TTL.
        """
        owner_key = self._owner_key(owner)
        found: dict[str, ConversationRecord] = {}
        start = 0
        with _redis_errors(self._target):
            while len(found) < limit:
                members = await self._client.zrevrange(owner_key, start, start + limit - 1)
                handles = [handle for member in members if (handle := _text(member)) is not None]
                if not handles:
                    break
                raws = [self._open(raw) for raw in await self._mget([self._conv_key(h) for h in handles])]
                dead = []
                for handle, raw in zip(handles, raws, strict=True):
                    record = _decode(raw, handle)
                    if record is None or record.owner != owner:
                        dead.append(handle)
                    elif len(found) < limit:
                        # setdefault: a concurrent save can move a handle into the next page.
                        found.setdefault(handle, record)
                if dead:
                    await self._client.zrem(owner_key, *dead)
                # Removed entries no longer occupy ranks, so the next page starts earlier.
                start += len(handles) - len(dead)
        return list(found.values())

    async def remember(self, session_key: str, agent_id: str, handle: str) -> None:
        """Note `handle` for (session, agent) with `EX ttl`."""
        _require_handle(handle)
        with _redis_errors(self._target):
            await self._client.set(self._session_key(session_key, agent_id), handle, ex=self._ttl)

    async def recall(self, session_key: str, agent_id: str) -> str | None:
        """The live handle noted for (session, agent), with its TTL restarted, else None."""
        with _redis_errors(self._target):
            value = _text(await self._client.getex(self._session_key(session_key, agent_id), ex=self._ttl))
        return value if value is not None and is_valid_handle(value) else None

    def _upload_key(self, upload_id: str) -> str:
        return f"{self._prefix}upload:{upload_id}"

    def _uploads_key(self, owner: str) -> str:
        return f"{self._prefix}uploads:{_key_part(owner)}"

    async def put_upload(self, record: UploadRecord) -> None:
        """Write the upload with an absolute expiry and index it under its owner, atomically."""
        if not is_valid_upload_id(record.upload_id):
            raise ValueError("not an upload id")
        expires = max(1, int(record.expires_at - time.time()))
        index = self._uploads_key(record.owner)
        with _redis_errors(self._target):
            async with self._client.pipeline(transaction=self._atomic) as pipe:
                pipe.set(
                    self._upload_key(record.upload_id),
                    self._seal(_UPLOAD_ADAPTER.dump_json(record).decode()),
                    ex=expires,
                )
                pipe.zadd(index, {record.upload_id: record.created_at})
                pipe.zremrangebyrank(index, 0, -(OWNER_INDEX_MAX + 1))
                pipe.expire(index, expires)
                await pipe.execute()

    async def get_upload(self, upload_id: str, owner: str) -> UploadRecord | None:
        """The owner's live upload, else None."""
        if not is_valid_upload_id(upload_id):
            return None
        with _redis_errors(self._target):
            record = _decode_upload(
                self._open(await self._client.get(self._upload_key(upload_id))), upload_id
            )
        return record if record is not None and record.owner == owner else None

    async def list_uploads(self, owner: str, limit: int = 100) -> list[UploadRecord]:
        """The owner's live uploads, newest first; dead index entries are dropped."""
        index = self._uploads_key(owner)
        with _redis_errors(self._target):
            ids = [i for m in await self._client.zrevrange(index, 0, max(limit, 1) - 1) if (i := _text(m))]
            if not ids:
                return []
            raws = await self._mget([self._upload_key(i) for i in ids])
            found: list[UploadRecord] = []
            dead: list[str] = []
            for upload_id, raw in zip(ids, raws, strict=True):
                record = _decode_upload(self._open(raw), upload_id)
                if record is None or record.owner != owner:
                    dead.append(upload_id)
                else:
                    found.append(record)
            if dead:
                await self._client.zrem(index, *dead)
        return found[: max(limit, 0)]

    def _pending_key(self, upload_id: str) -> str:
        return f"{self._prefix}pending:{upload_id}"

    def _pending_index_key(self) -> str:
        return f"{self._prefix}pending-uploads"

    async def put_pending_upload(self, marker: PendingUpload, ttl_seconds: int) -> None:
        """Write the marker with `EX ttl_seconds` and index it by start time (one index for all owners)."""
        if not is_valid_upload_id(marker.upload_id) or ttl_seconds <= 0:
            raise ValueError("not an upload id, or a TTL that is not positive")
        index = self._pending_index_key()
        with _redis_errors(self._target):
            async with self._client.pipeline(transaction=self._atomic) as pipe:
                pipe.set(
                    self._pending_key(marker.upload_id),
                    self._seal(_PENDING_ADAPTER.dump_json(marker).decode()),
                    ex=ttl_seconds,
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
        index = self._pending_index_key()
        with _redis_errors(self._target):
            ids = [i for m in await self._client.zrange(index, 0, max(limit, 1) - 1) if (i := _text(m))]
            if not ids:
                return []
            raws = await self._mget([self._pending_key(i) for i in ids])
            found: list[PendingUpload] = []
            dead: list[str] = []
            for upload_id, raw in zip(ids, raws, strict=True):
                marker = _decode_pending(self._open(raw), upload_id)
                if marker is None:
                    dead.append(upload_id)
                else:
                    found.append(marker)
            if dead:
                await self._client.zrem(index, *dead)
        return found[: max(limit, 0)]

    async def ping(self) -> None:
        """Round-trip a PING; StoreUnavailable if Redis does not answer."""
        with _redis_errors(self._target):
            await self._client.ping()

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        with _redis_errors(self._target):
            await self._client.aclose()


def create_store(redis_url: str | None, ttl_seconds: int, sealer: Sealer | None = None) -> ContextStore:
    """The Redis store when `redis_url` is set (sealed when `sealer` is given), else the in-process one.

    Never touches the network. The in-process store is not sealed: it never leaves the process.
    """
    if redis_url:
        return RedisStore.from_url(redis_url, ttl_seconds, sealer=sealer)
    return MemoryStore(ttl_seconds)


__all__ = [
    "HANDLE_PREFIX",
    "OWNER_INDEX_MAX",
    "ContextStore",
    "ConversationRecord",
    "MemoryStore",
    "PendingUpload",
    "RedisStore",
    "StoreUnavailable",
    "UploadRecord",
    "create_store",
    "is_valid_handle",
    "is_valid_upload_id",
    "new_handle",
    "new_upload_id",
]
