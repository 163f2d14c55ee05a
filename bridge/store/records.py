"""What the context store keeps (DESIGN.md section 4): the records, their ids, and their stored JSON.

* `ConversationRecord` -- which Dust conversation a `conversation` handle continues. A handle is an
  unguessable bearer-style name for one Dust conversation, bound to the principal that created it.
* `UploadRecord` -- the metadata of a scanned file that reached Dust (the bytes live in Dust).
* `PendingUpload` -- an upload on its way into Dust: what to undo if its process dies.
* `SessionRecord` -- a handshake-era MCP session (Streamable HTTP or legacy SSE): what any process
  needs to serve its next request, or to find the process that holds its stream.

Every back end stores a record as the JSON of its `Codec`. The format is what replicas and restarts
share: fields are only ever added (with defaults), never renamed, so records written by an older
replica still load.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic

HANDLE_PREFIX = "dmc_"
_HANDLE_BYTES = 24  # 192 random bits; DESIGN.md asks for at least 128
# token_urlsafe(24) is exactly 32 base64url characters: 24 bytes = 192 bits = 32 * 6, so no padding
# and every 32-character string over the alphabet is a possible token.
_HANDLE_RE = re.compile(rf"{HANDLE_PREFIX}[A-Za-z0-9_-]{{32}}")

# A session id is 128 random bits as 32 lowercase hex: what the SDK's legacy SSE transport issues
# (`uuid4().hex`) and what the bridge issues for Streamable HTTP.
_SESSION_RE = re.compile(r"[0-9a-f]{32}")

UPLOAD_PREFIX = "upl_"
_UPLOAD_BYTES = 16  # 128 random bits
_UPLOAD_RE = re.compile(rf"{UPLOAD_PREFIX}[A-Za-z0-9_-]{{22}}")


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
    # Where the stream of `last_agent_message_id` was left when a call returned before its end
    # (deadline, pause, client timeout): the Dust eventId to resume after.
    stream_position: str | None = None
    # What that message waits for from the user (`PendingAction.to_json()` each), as last seen.
    pending: tuple[dict[str, Any], ...] = ()
    # Dust file ids of the files its agents generated: what its owner may read through the bridge.
    files: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class SessionRecord:
    """A handshake-era MCP session, as every process needs it.

    `owner` is the credential that opened it, as the SDK's transports compare them (client id,
    issuer, subject; None without client keys): a request with another credential must find no
    session. A Streamable HTTP session (`kind` "http") carries what its `initialize` negotiated, so
    any process can serve it as if it had seen the handshake; a legacy SSE session (`kind` "sse")
    names the process that holds its event stream, where its POSTs must go.
    """

    session_id: str
    kind: str  # "http" (Streamable HTTP) or "sse" (legacy HTTP+SSE)
    owner: tuple[str, str | None, str | None] | None
    created_at: float  # epoch seconds
    protocol_version: str | None = None
    # The client's `initialize` params (its info and capabilities), as the SDK dumps them.
    client_params: dict[str, Any] | None = None
    instance: str | None = None  # the process holding a legacy SSE session's stream


def new_session_id() -> str:
    """A fresh MCP session id: 128 random bits as 32 lowercase hex."""
    return secrets.token_hex(16)


def is_valid_session_id(value: str) -> bool:
    """Whether `value` has the shape of a session id (no I/O, so a forged one costs nothing)."""
    return isinstance(value, str) and _SESSION_RE.fullmatch(value) is not None


def new_handle() -> str:
    """A fresh, unguessable conversation handle: `dmc_` followed by 192 random bits (base64url)."""
    return HANDLE_PREFIX + secrets.token_urlsafe(_HANDLE_BYTES)


def is_valid_handle(value: str) -> bool:
    """Whether `value` has exactly the shape `new_handle()` produces (no I/O, constant cost)."""
    return isinstance(value, str) and _HANDLE_RE.fullmatch(value) is not None


def require_handle(handle: str) -> None:
    """Raise ValueError unless `handle` is well formed: writing a malformed one is a bug in the caller."""
    if not is_valid_handle(handle):
        raise ValueError("not a conversation handle")


def new_upload_id() -> str:
    """A fresh, unguessable upload id: `upl_` followed by 128 random bits (base64url)."""
    return UPLOAD_PREFIX + secrets.token_urlsafe(_UPLOAD_BYTES)


def is_valid_upload_id(value: str) -> bool:
    """Whether `value` has exactly the shape `new_upload_id()` produces."""
    return isinstance(value, str) and _UPLOAD_RE.fullmatch(value) is not None


RecordT = TypeVar("RecordT", ConversationRecord, UploadRecord, PendingUpload, SessionRecord)


class Codec(Generic[RecordT]):
    """The stored JSON of one record type, and the check that a stored value is the one asked for.

    Decoding is strict, so that a record damaged or written by something else is rejected rather
    than coerced; unknown keys are ignored, so a newer replica may add fields during a rolling deploy.
    """

    def __init__(self, kind: type[RecordT], key_field: str) -> None:
        self._adapter: pydantic.TypeAdapter[RecordT] = pydantic.TypeAdapter(kind)
        self._key_field = key_field

    def encode(self, record: RecordT) -> str:
        """The JSON the store writes for `record`."""
        return self._adapter.dump_json(record).decode()

    def decode(self, raw: str | None, key: str) -> RecordT | None:
        """The record in `raw`, or None if it is missing, malformed or filed under another key."""
        if raw is None:
            return None
        try:
            record = self._adapter.validate_json(raw, strict=True)
        except pydantic.ValidationError:
            return None
        return record if getattr(record, self._key_field) == key else None


CONVERSATIONS = Codec(ConversationRecord, "handle")
UPLOADS = Codec(UploadRecord, "upload_id")
PENDING = Codec(PendingUpload, "upload_id")
SESSIONS = Codec(SessionRecord, "session_id")
