"""One pipeline for every upload: size cap while streaming, libmagic type check, ClamAV, then Dust.

Bytes go to a temp file as they arrive (never whole into memory), hashed on the way
(temp_files.py). Nothing reaches Dust before the type is allowed and the scan is clean; a failure
at any step loses nothing else and leaves no temp file behind. Only metadata is kept (in the
context store, with a TTL), so any replica can attach the file to a conversation. A pending
marker covers the Dust file from its creation until the record is stored, so that not even a
killed process leaves a file in Dust unaccounted for (reconcile.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from bridge.dust.client import DustClient
from bridge.dust.errors import DustBadRequest, DustForbidden
from bridge.dust.models import DustFile
from bridge.errors import BridgeError, InvalidInput
from bridge.observability.metrics import Metrics
from bridge.security.audit import audit_event
from bridge.store.base import ContextStore
from bridge.store.records import UploadRecord, new_upload_id
from bridge.uploads.clamav import ClamdClient, ScannerUnavailable, ScanTooLarge
from bridge.uploads.metadata import describe
from bridge.uploads.mime import (
    InvalidFileName,
    MimeSniffer,
    TypeMismatch,
    TypeNotAllowed,
    decide_type,
    sanitize_filename,
    size_limit,
)
from bridge.uploads.reconcile import PendingMarkers
from bridge.uploads.temp_files import TempFiles

logger = logging.getLogger(__name__)

_HEAD_BYTES = 8192
_CHUNK = 64 * 1024


@dataclass
class _Progress:
    """What is known about an upload so far (for the metrics of a refusal)."""

    mime: str = "unknown"


@dataclass(frozen=True)
class _Spooled:
    """An upload's bytes, written to its temp file."""

    path: Path
    size: int
    sha256: str
    head: bytes  # the first bytes, for libmagic


@dataclass(frozen=True)
class _Checked:
    """An upload that passed every check: what goes to Dust and into its record."""

    owner: str
    name: str
    mime: str
    spooled: _Spooled
    scan: str  # "clean" or "skipped"
    details: dict[str, int]  # from metadata.describe: pages, or width and height


def _too_large(limit: int, what: str = "the upload limit") -> InvalidInput:
    return InvalidInput(f"the file is larger than {what} ({limit} bytes)", code="too_large")


@dataclass(frozen=True)
class UploadPolicy:
    """What the pipeline enforces (from Settings)."""

    max_bytes: int
    allowed_types: frozenset[str]
    scan_required: bool
    ttl_seconds: int
    temp_dir: Path
    # Said after "the virus scanner is unavailable ...": how to get one, or to do without (the
    # Claude Desktop extension's settings); empty where an operator runs clamd.
    scanner_help: str = ""


class UploadPipeline:
    """Runs uploads; shared by `POST /v1/uploads` and the `upload_file` tool."""

    def __init__(
        self,
        policy: UploadPolicy,
        dust: DustClient,
        store: ContextStore,
        scanner: ClamdClient | None,
        sniffer: MimeSniffer,
        metrics: Metrics,
    ) -> None:
        self._policy = policy
        self._dust = dust
        self._store = store
        self._scanner = scanner
        self._sniffer = sniffer
        self._metrics = metrics
        self._temp_files = TempFiles(policy.temp_dir)
        self._markers = PendingMarkers(store, dust)

    @property
    def in_flight(self) -> int:
        """Uploads being received or processed right now."""
        return self._temp_files.in_use

    def sweep(self, max_age_seconds: float) -> int:
        """Remove leftover temp files (see `temp_files.sweep_temp_files`); blocking, call it in a thread."""
        return self._temp_files.sweep(max_age_seconds)

    async def reconcile(self, max_age_seconds: float = 3600.0) -> int:
        """Delete the Dust files of uploads whose process died mid-upload (see
        `reconcile.PendingMarkers.reconcile`); never raises for store or Dust failures.

        Returns:
            How many Dust files were deleted.
        """
        return await self._markers.reconcile(max_age_seconds)

    @property
    def scan_required(self) -> bool:
        """False only when BRIDGE_SCAN_MODE=off."""
        return self._policy.scan_required

    async def ingest(
        self, *, owner: str, filename: str, declared_type: str | None, chunks: AsyncIterable[bytes]
    ) -> UploadRecord:
        """Run one upload from a stream of chunks to a stored record.

        Raises:
            BridgeError: any refusal; its `code` names the cause (too_large, infected, ...).
        """
        progress = _Progress()
        try:
            record = await self._ingest(owner, filename, declared_type, chunks, progress)
        except BridgeError as exc:
            # Counted under the sniffed (or, once decided, the effective) type when it is known.
            self._metrics.uploads.labels(outcome=exc.code, mime=progress.mime).inc()
            raise
        self._metrics.uploads.labels(outcome="accepted", mime=record.mime).inc()
        return record

    async def _ingest(
        self,
        owner: str,
        filename: str,
        declared_type: str | None,
        chunks: AsyncIterable[bytes],
        progress: _Progress,
    ) -> UploadRecord:
        """Receive, check, then deliver; the temp file is gone when this returns, however it ends."""
        name = _clean_name(filename)
        async with self._temp_files.new() as path:
            spooled = await self._spool(chunks, path)
            checked = await self._check(owner, name, declared_type, spooled, progress)
            record = await self._deliver(checked)
            audit_event(
                "upload_accepted",
                principal=owner,
                upload_id=record.upload_id,
                file=name,
                mime=record.mime,
                size=record.size,
                sha256=record.sha256,
                scan=record.scan,
            )
            return record

    async def ingest_bytes(
        self, *, owner: str, filename: str, declared_type: str | None, data: bytes
    ) -> UploadRecord:
        """Run one upload whose bytes are already in memory (the `upload_file` tool).

        Raises:
            BridgeError: any refusal.
        """

        async def one() -> AsyncIterator[bytes]:
            for start in range(0, len(data), _CHUNK):
                yield data[start : start + _CHUNK]

        return await self.ingest(owner=owner, filename=filename, declared_type=declared_type, chunks=one())

    async def get(self, owner: str, upload_id: str) -> UploadRecord | None:
        """The owner's upload, or None (unknown, expired and foreign look alike).

        Raises:
            StoreUnavailable: the store is unreachable.
        """
        return await self._store.get_upload(upload_id, owner)

    async def list(self, owner: str) -> list[UploadRecord]:
        """The owner's live uploads, newest first.

        Raises:
            StoreUnavailable: the store is unreachable.
        """
        return await self._store.list_uploads(owner)

    async def ping_scanner(self) -> None:
        """Raise ScannerUnavailable unless clamd answers (or scanning is off on purpose)."""
        if self._scanner is not None:
            await self._scanner.ping()

    # -- steps -------------------------------------------------------------------------------

    async def _spool(self, chunks: AsyncIterable[bytes], path: Path) -> _Spooled:
        """Write the chunks to `path`, stopping as soon as the hard cap is passed.

        Raises:
            InvalidInput: too_large, or empty_file.
        """
        size = 0
        sha = hashlib.sha256()
        head = bytearray()
        cap = self._policy.max_bytes
        async with await anyio.open_file(path, "wb") as out:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > cap:
                    raise _too_large(cap)
                sha.update(chunk)
                if len(head) < _HEAD_BYTES:
                    head += chunk[: _HEAD_BYTES - len(head)]
                await out.write(chunk)
        if size == 0:
            raise InvalidInput("the file is empty", code="empty_file")
        return _Spooled(path=path, size=size, sha256=sha.hexdigest(), head=bytes(head))

    async def _check(
        self, owner: str, name: str, declared_type: str | None, spooled: _Spooled, progress: _Progress
    ) -> _Checked:
        """The type policy, the size limit of that type, then the virus scan.

        Raises:
            BridgeError: the refusal of the first check that failed.
        """
        mime = await self._decide_type(owner, name, declared_type, spooled.head, progress)
        limit = size_limit(mime, self._policy.max_bytes)
        if spooled.size > limit:
            raise _too_large(limit, f"the limit for {mime}")
        verdict = await self._scan(spooled.path, spooled.size, owner, name)
        details = await anyio.to_thread.run_sync(describe, spooled.path, mime)
        return _Checked(owner=owner, name=name, mime=mime, spooled=spooled, scan=verdict, details=details)

    async def _decide_type(
        self, owner: str, name: str, declared_type: str | None, head: bytes, progress: _Progress
    ) -> str:
        """The type to send to Dust (see `mime.decide_type`); `progress` learns the sniffed, then the
        decided type."""
        sniffed = await self._sniffer.sniff(head)
        progress.mime = sniffed
        try:
            mime = decide_type(
                filename=name, declared=declared_type, sniffed=sniffed, allowed=self._policy.allowed_types
            )
        except TypeMismatch as exc:
            audit_event(
                "upload_refused",
                level=logging.WARNING,
                principal=owner,
                file=name,
                reason="type_mismatch",
                sniffed=sniffed,
            )
            raise InvalidInput(str(exc), code="type_mismatch") from None
        except TypeNotAllowed as exc:
            raise InvalidInput(str(exc), code="type_not_allowed") from None
        progress.mime = mime
        return mime

    async def _scan(self, path: Path, size: int, owner: str, name: str) -> str:
        if self._scanner is None:
            return "skipped"
        try:
            result = await self._scanner.scan_file(path)
            self._metrics.scanned_bytes.inc(result.scanned_bytes)
            self._metrics.scan_seconds.observe(result.seconds)
        except ScanTooLarge:
            raise _too_large(size, "what the virus scanner accepts") from None
        except ScannerUnavailable as exc:
            help_text = f". {self._policy.scanner_help}" if self._policy.scanner_help else ""
            raise ScannerUnavailable(
                f"the virus scanner is unavailable ({exc}); the file was not accepted{help_text}"
            ) from None
        if not result.clean:
            exceeded = result.limits_exceeded
            audit_event(
                "upload_refused",
                level=logging.WARNING,
                principal=owner,
                file=name,
                reason="scan_limits_exceeded" if exceeded else "infected",
                signature=result.signature,
            )
            if exceeded:
                raise InvalidInput(
                    "the virus scanner could not inspect the whole file: its content expands beyond "
                    f"the scanner's limits ({exceeded}), as archives built to exhaust scanners "
                    "(zip bombs) do; the file was refused",
                    code="scan_limits_exceeded",
                )
            raise InvalidInput(
                f"the virus scanner found {result.signature}; the file was refused", code="infected"
            )
        return "clean"

    async def _deliver(self, checked: _Checked) -> UploadRecord:
        """Create the Dust file, upload the bytes, store the record, all under a pending marker.

        Whatever interrupts this (a refusal, a store failure, cancellation) deletes the Dust file
        again before returning; only a killed process leaves the marker for `reconcile`.
        """
        upload_id = new_upload_id()
        spooled = checked.spooled
        async with self._markers.cover(upload_id, checked.owner) as marked:
            created = await self._create_in_dust(checked.name, checked.mime, spooled.size)
            await marked.dust_file_created(created.s_id)
            uploaded = await self._upload_to_dust(created, spooled.path, checked.mime)
            record = self._record(upload_id, checked, uploaded.s_id)
            await self._store.put_upload(record)
            return record

    def _record(self, upload_id: str, checked: _Checked, dust_file_id: str) -> UploadRecord:
        now = time.time()
        return UploadRecord(
            upload_id=upload_id,
            owner=checked.owner,
            filename=checked.name,
            size=checked.spooled.size,
            sha256=checked.spooled.sha256,
            mime=checked.mime,
            scan=checked.scan,
            dust_file_id=dust_file_id,
            created_at=now,
            expires_at=now + self._policy.ttl_seconds,
            **checked.details,
        )

    async def _create_in_dust(self, name: str, mime: str, size: int) -> DustFile:
        with _file_refusals():
            return await self._dust.create_file(content_type=mime, file_name=name, file_size=size)

    async def _upload_to_dust(self, created: DustFile, path: Path, mime: str) -> DustFile:
        with _file_refusals():
            return await self._dust.upload_file(created, _read_chunks(path), content_type=mime)


@contextlib.contextmanager
def _file_refusals() -> Iterator[None]:
    """Dust refusing the file itself (its size, its type, an expired upload window) is the caller's
    to fix. Only that is mapped here: every other DustError (a key that may not upload, a rate
    limit, Dust unavailable or failing) is already in the error tree and passes unchanged."""
    try:
        yield
    except DustForbidden:
        raise
    except DustBadRequest as exc:
        message = f"Dust refused the file: {exc.type}: {exc.message}"
        raise InvalidInput(message, code="dust_rejected") from None


def _clean_name(filename: str) -> str:
    try:
        return sanitize_filename(filename)
    except InvalidFileName as exc:
        raise InvalidInput(str(exc), code="bad_request") from None


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as source:
        while chunk := await source.read(_CHUNK):
            yield chunk
