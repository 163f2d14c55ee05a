"""The in-process context store: one replica's memory, for stdio and demos.

Same semantics as the Redis store (sliding TTL, owner checks, fixed upload expiry), bounded in size;
nothing survives the process, and nothing is sealed, because nothing leaves it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bridge.store.records import (
    ConversationRecord,
    PendingUpload,
    SessionRecord,
    UploadRecord,
    is_valid_session_id,
    is_valid_upload_id,
    require_handle,
)

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
        # Touched order is expiry order only per TTL; sessions all use the one session TTL.
        self._mcp_sessions: OrderedDict[str, _Entry[SessionRecord]] = OrderedDict()

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
        require_handle(record.handle)
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
        require_handle(handle)
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

    async def put_session(self, record: SessionRecord, ttl_seconds: int) -> None:
        """Keep the session's record for `ttl_seconds`, evicting the one touched longest ago when full."""
        if not is_valid_session_id(record.session_id) or ttl_seconds <= 0:
            raise ValueError("not a session id, or a TTL that is not positive")
        now = self._clock()
        while self._mcp_sessions and next(iter(self._mcp_sessions.values())).expires_at <= now:
            self._mcp_sessions.popitem(last=False)
        self._mcp_sessions.pop(record.session_id, None)
        while len(self._mcp_sessions) >= self._max:
            self._mcp_sessions.popitem(last=False)
        self._mcp_sessions[record.session_id] = _Entry(record, now + ttl_seconds)

    async def load_session(self, session_id: str, ttl_seconds: int) -> SessionRecord | None:
        """The live record (its TTL restarted), else None."""
        entry = self._mcp_sessions.get(session_id)
        now = self._clock()
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._mcp_sessions[session_id]
            return None
        entry.expires_at = now + ttl_seconds
        self._mcp_sessions.move_to_end(session_id)
        return entry.value

    async def delete_session(self, session_id: str) -> None:
        """Forget the session."""
        self._mcp_sessions.pop(session_id, None)

    async def ping(self) -> None:
        """Always answers: the store is this process."""

    async def aclose(self) -> None:
        """Drop everything (nothing to release)."""
        self._records.clear()
        self._sessions.clear()
        self._by_owner.clear()
        self._uploads.clear()
        self._mcp_sessions.clear()
