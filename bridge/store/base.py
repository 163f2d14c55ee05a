"""What every context store promises (`ContextStore`), and the one way it fails (`StoreUnavailable`).

Records live for a sliding TTL: every successful `load` pushes the deadline back, so an active chat
never expires and an abandoned one disappears on its own. Unknown, expired, malformed and foreign
handles are indistinguishable to callers (all `None`), so a probe cannot learn whether somebody
else's handle exists.
"""

from __future__ import annotations

from typing import Protocol

from bridge.errors import Unavailable
from bridge.store.records import ConversationRecord, PendingUpload, SessionRecord, UploadRecord


class StoreUnavailable(Unavailable):
    """The store back end cannot be reached. The message is for humans and never holds a URL.

    `detail` adds, for operators (`check`, logs), which Redis and why ("Redis at 10.0.0.5:6379:
    Connection refused"); the message, which MCP clients may see, names neither.
    """

    code = "store_unavailable"

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


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

    async def put_session(self, record: SessionRecord, ttl_seconds: int) -> None:
        """Write (or overwrite) an MCP session's record; it expires after `ttl_seconds` unused."""
        ...

    async def load_session(self, session_id: str, ttl_seconds: int) -> SessionRecord | None:
        """The session's live record (its TTL restarts at `ttl_seconds`), else None."""
        ...

    async def delete_session(self, session_id: str) -> None:
        """Forget the session (absent is fine)."""
        ...

    async def ping(self) -> None:
        """Return if the back end answers; raise StoreUnavailable otherwise."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
