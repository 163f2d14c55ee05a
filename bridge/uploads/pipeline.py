"""One pipeline for every upload: size cap while streaming, libmagic type check, ClamAV, then Dust.

Bytes go to a temp file as they arrive (never whole into memory), hashed on the way. Nothing
reaches Dust before the type is allowed and the scan is clean; a failure at any step loses nothing
else and leaves no temp file behind. Only metadata is kept (in the context store, with a TTL), so
any replica can attach the file to a conversation.

From just before Dust's file is created until the upload record is stored, a pending marker in the
context store names the upload and (once Dust answers) its Dust file. A process killed in between
leaves the marker behind; `UploadPipeline.reconcile` (at start-up and with every periodic sweep)
deletes the Dust file of every marker whose process is gone, so a crash leaves nothing in Dust.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from bridge.dust.client import DustClient
from bridge.dust.errors import DustBadRequest, DustError, DustRateLimited
from bridge.dust.models import DustFile
from bridge.errors import BridgeError, InvalidInput, LimitExceeded, UpstreamFailure
from bridge.observability.metrics import Metrics
from bridge.security.audit import audit_event
from bridge.store.base import ContextStore, StoreUnavailable
from bridge.store.records import PendingUpload, UploadRecord, new_upload_id
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

logger = logging.getLogger(__name__)

TEMP_PREFIX = "dmb-upload-"
_HEAD_BYTES = 8192
_CHUNK = 64 * 1024
# Pending markers outlive any plausible outage; reconcile clears them long before.
_PENDING_TTL_SECONDS = 7 * 86400
# How long settling an unfinished upload (deleting its Dust file, clearing its marker) may take.
_SETTLE_SECONDS = 10.0


@dataclass
class _Progress:
    """What is known about an upload so far (for the metrics of a refusal)."""

    mime: str = "unknown"


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
        self._temp_files: set[Path] = set()
        # Identifies this process in pending markers (see `reconcile`).
        self._instance = secrets.token_hex(8)
        self._host = _process_host()
        self._pending_ids: set[str] = set()

    @property
    def in_flight(self) -> int:
        """Uploads being received or processed right now."""
        return len(self._temp_files)

    def sweep(self, max_age_seconds: float) -> int:
        """Remove leftover temp files (see `sweep_temp_files`); blocking, call it in a thread."""
        return sweep_temp_files(
            self._policy.temp_dir, max_age_seconds=max_age_seconds, in_use=set(self._temp_files)
        )

    async def reconcile(self, max_age_seconds: float = 3600.0) -> int:
        """Undo uploads whose process died between creating their Dust file and storing their record.

        Looks at every pending marker in the context store. One is abandoned when it is this
        process's own but no longer in progress, when its process ran on this host (and PID
        namespace) and is dead or is this very pid under an earlier incarnation (a restarted
        container's PID 1), or when it is older than `max_age_seconds` (another host's process
        that never finished). For each, the Dust file is deleted and the marker cleared; a marker
        whose upload record exists after all is just cleared. A Dust file that cannot be deleted
        now keeps its marker for the next run. Never raises for store or Dust failures.

        Returns:
            How many Dust files were deleted.
        """
        deleted = 0
        try:
            markers = await self._store.list_pending_uploads()
        except StoreUnavailable as exc:
            logger.warning("could not look for unfinished uploads: %s", exc.detail)
            return 0
        now = time.time()
        for marker in markers:
            if not self._abandoned(marker, now, max_age_seconds):
                continue
            try:
                if await self._store.get_upload(marker.upload_id, marker.owner) is not None:
                    # The upload finished; only clearing its marker did not.
                    await self._store.clear_pending_upload(marker.upload_id)
                    continue
                if marker.dust_file_id is not None:
                    if not await self._forget_in_dust(marker.dust_file_id):
                        continue
                    deleted += 1
                await self._store.clear_pending_upload(marker.upload_id)
            except StoreUnavailable as exc:
                logger.warning("could not finish cleaning up unfinished uploads: %s", exc)
                break
            audit_event(
                "upload_abandoned",
                level=logging.WARNING,
                principal=marker.owner,
                upload_id=marker.upload_id,
                dust_file_id=marker.dust_file_id,
                started_at=marker.started_at,
            )
        if deleted:
            logger.info("deleted %d Dust file(s) of uploads interrupted by a crash", deleted)
        return deleted

    def _abandoned(self, marker: PendingUpload, now: float, max_age_seconds: float) -> bool:
        if marker.instance == self._instance:
            return marker.upload_id not in self._pending_ids
        if now - marker.started_at > max_age_seconds:
            return True
        if marker.host != self._host:
            return False  # another host's process may still be working on it
        return marker.pid == os.getpid() or not _alive(marker.pid)

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
        try:
            name = sanitize_filename(filename)
        except InvalidFileName as exc:
            raise InvalidInput(str(exc), code="bad_request") from None
        path = await self._new_temp_file()
        self._temp_files.add(path)
        try:
            size, digest, head = await self._spool(chunks, path)
            if size == 0:
                raise InvalidInput("the file is empty", code="empty_file")
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
            limit = size_limit(mime, self._policy.max_bytes)
            if size > limit:
                raise _too_large(limit, f"the limit for {mime}")
            verdict = await self._scan(path, size, owner, name)
            details = await anyio.to_thread.run_sync(describe, path, mime)
            upload_id = new_upload_id()

            def make_record(dust_file_id: str) -> UploadRecord:
                now = time.time()
                return UploadRecord(
                    upload_id=upload_id,
                    owner=owner,
                    filename=name,
                    size=size,
                    sha256=digest,
                    mime=mime,
                    scan=verdict,
                    dust_file_id=dust_file_id,
                    created_at=now,
                    expires_at=now + self._policy.ttl_seconds,
                    **details,
                )

            record = await self._deliver(upload_id, owner, path, name, mime, size, make_record)
            audit_event(
                "upload_accepted",
                principal=owner,
                upload_id=record.upload_id,
                file=name,
                mime=mime,
                size=size,
                sha256=digest,
                scan=verdict,
            )
            return record
        finally:
            self._temp_files.discard(path)
            with anyio.CancelScope(shield=True), contextlib.suppress(FileNotFoundError):
                await anyio.Path(path).unlink()

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

    async def _new_temp_file(self) -> Path:
        directory = self._policy.temp_dir
        await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
        # The pid in the name lets a later start-up tell a dead process's leftovers from a live one's.
        fd, name = await anyio.to_thread.run_sync(
            lambda: tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".part", dir=directory)
        )
        os.close(fd)
        return Path(name)

    async def _spool(self, chunks: AsyncIterable[bytes], path: Path) -> tuple[int, str, bytes]:
        """Write the chunks to `path`, stopping as soon as the hard cap is passed."""
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
        return size, sha.hexdigest(), bytes(head)

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
            raise ScannerUnavailable(
                f"the virus scanner is unavailable ({exc}); the file was not accepted"
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

    async def _deliver(
        self,
        upload_id: str,
        owner: str,
        path: Path,
        name: str,
        mime: str,
        size: int,
        make_record: Callable[[str], UploadRecord],
    ) -> UploadRecord:
        """Create the Dust file, upload the bytes, store the record; a pending marker covers it all.

        Whatever interrupts this (a refusal, a store failure, cancellation) deletes the Dust file
        again before returning; only a killed process leaves the marker for `reconcile`.
        """
        marker = PendingUpload(
            upload_id=upload_id,
            owner=owner,
            started_at=time.time(),
            host=self._host,
            pid=os.getpid(),
            instance=self._instance,
        )
        self._pending_ids.add(upload_id)
        dust_file_id: str | None = None
        stored = False
        try:
            await self._mark_pending(marker)
            created = await self._create_in_dust(name, mime, size)
            dust_file_id = created.s_id
            await self._mark_pending(replace(marker, dust_file_id=dust_file_id))
            uploaded = await self._upload_to_dust(created, path, mime)
            record = make_record(uploaded.s_id)
            await self._store.put_upload(record)
            stored = True
            return record
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE_SECONDS):
                await self._settle(upload_id, dust_file_id, stored)
            self._pending_ids.discard(upload_id)

    async def _mark_pending(self, marker: PendingUpload) -> None:
        await self._store.put_pending_upload(marker, _PENDING_TTL_SECONDS)

    async def _settle(self, upload_id: str, dust_file_id: str | None, stored: bool) -> None:
        """Clear the marker once nothing in Dust is left unaccounted for; else leave it to `reconcile`."""
        if not stored and dust_file_id is not None and not await self._forget_in_dust(dust_file_id):
            return
        try:
            await self._store.clear_pending_upload(upload_id)
        except StoreUnavailable as exc:
            # Harmless: reconcile finds the record (or a deleted file) and clears the marker later.
            logger.warning("could not clear the pending marker of an upload: %s", exc)

    async def _create_in_dust(self, name: str, mime: str, size: int) -> DustFile:
        try:
            return await self._dust.create_file(content_type=mime, file_name=name, file_size=size)
        except DustRateLimited as exc:
            raise LimitExceeded(
                f"Dust is rate-limiting file uploads: {exc.message}", retry_after=exc.retry_after
            ) from None
        except DustBadRequest as exc:
            raise InvalidInput(
                f"Dust refused the file: {exc.type}: {exc.message}", code="dust_rejected"
            ) from None
        except DustError as exc:
            raise UpstreamFailure(
                f"Dust could not take the file: {exc.type}: {exc.message}", code="dust_unavailable"
            ) from None

    async def _upload_to_dust(self, created: DustFile, path: Path, mime: str) -> DustFile:
        try:
            return await self._dust.upload_file(created, _read_chunks(path), content_type=mime)
        except DustRateLimited as exc:
            raise LimitExceeded(
                f"Dust refused the file: {exc.type}: {exc.message}", retry_after=exc.retry_after
            ) from None
        except DustError as exc:
            raise InvalidInput(
                f"Dust refused the file: {exc.type}: {exc.message}", code="dust_rejected"
            ) from None

    async def _forget_in_dust(self, file_id: str) -> bool:
        """Delete a Dust file nothing will use (created but not uploaded, or never recorded); False if
        Dust could not be reached in time."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._dust.delete_file(file_id)
            except DustError as exc:
                logger.warning("could not delete an unfinished Dust file: %s", exc.message)
                return False
            return True
        logger.warning("could not delete an unfinished Dust file: Dust did not answer in time")
        return False


def _process_host() -> str:
    """This host's name plus its PID namespace: where a pid in a pending marker can be checked."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    host = socket.gethostname()
    return f"{host}/{namespace}" if namespace else host


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as source:
        while chunk := await source.read(_CHUNK):
            yield chunk


def sweep_temp_files(directory: Path, *, max_age_seconds: float, in_use: set[Path]) -> int:
    """Delete upload temp files nobody is writing; return how many.

    A file is a leftover when it is not one of this process's uploads in progress and its writer
    (the pid in its name) is dead, is this very process (a restart that reused the pid, as PID 1 in
    a container does), or it is older than `max_age_seconds`. Files of other live processes that
    are young are left alone: another replica on the same host may be streaming into them.
    """
    removed = 0
    now = time.time()
    try:
        entries = list(directory.glob(f"{TEMP_PREFIX}*.part"))
    except OSError:
        return 0
    for entry in entries:
        if entry in in_use:
            continue
        pid_text = entry.name.removeprefix(TEMP_PREFIX).split("-", 1)[0]
        other_live_writer = pid_text.isdigit() and int(pid_text) != os.getpid() and _alive(int(pid_text))
        try:
            old = now - entry.stat().st_mtime > max_age_seconds
        except FileNotFoundError:
            continue
        if not other_live_writer or old:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
