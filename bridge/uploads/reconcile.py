"""Crash safety for uploads: nothing is left in Dust by a process that dies mid-upload.

From just before an upload's Dust file is created until its upload record is stored, a pending
marker in the context store names the upload and (once Dust answers) its Dust file
(`PendingMarkers.cover`). Whatever interrupts an upload in a live process (a refusal, a store
failure, cancellation) deletes the Dust file again and clears the marker at once. A process
killed in between leaves the marker behind; `PendingMarkers.reconcile` (at start-up and with every
periodic sweep) deletes the Dust file of every marker whose process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio

from bridge.dust.client import DustClient
from bridge.dust.errors import DustError
from bridge.security.audit import audit_event
from bridge.store.base import ContextStore, StoreUnavailable
from bridge.store.records import PendingUpload
from bridge.uploads.processes import process_alive, process_host

logger = logging.getLogger(__name__)

# Pending markers outlive any plausible outage; reconcile clears them long before.
_PENDING_TTL_SECONDS = 7 * 86400
# How long settling an unfinished upload (deleting its Dust file, clearing its marker) may take.
_SETTLE_SECONDS = 10.0
# How long deleting one Dust file may take.
_DELETE_SECONDS = 5.0


class MarkedUpload:
    """One upload under its pending marker (yielded by `PendingMarkers.cover`)."""

    def __init__(self, markers: PendingMarkers, marker: PendingUpload) -> None:
        self._markers = markers
        self.marker = marker

    async def dust_file_created(self, dust_file_id: str) -> None:
        """Name the new Dust file in the marker, before any byte is uploaded to it.

        Raises:
            StoreUnavailable: the marker could not be updated (the Dust file is still deleted).
        """
        self.marker = replace(self.marker, dust_file_id=dust_file_id)
        await self._markers.put(self.marker)


class PendingMarkers:
    """This process's pending markers, and the clean-up of other processes' abandoned ones."""

    def __init__(self, store: ContextStore, dust: DustClient) -> None:
        self._store = store
        self._dust = dust
        # Identifies this process in pending markers (see `_abandoned`).
        self._instance = secrets.token_hex(8)
        self._host = process_host()
        self._in_progress: set[str] = set()

    @contextlib.asynccontextmanager
    async def cover(self, upload_id: str, owner: str) -> AsyncIterator[MarkedUpload]:
        """Keep a pending marker for the upload while the block runs; leaving it normally means the
        upload record is stored.

        On any other exit (a refusal, a store failure, cancellation) the Dust file named by
        `MarkedUpload.dust_file_created`, if any, is deleted again before the exception goes on;
        the marker is then cleared, or left for `reconcile` when Dust could not be reached.

        Raises:
            StoreUnavailable: the marker could not be written (no Dust file was created yet).
        """
        upload = MarkedUpload(
            self,
            PendingUpload(
                upload_id=upload_id,
                owner=owner,
                started_at=time.time(),
                host=self._host,
                pid=os.getpid(),
                instance=self._instance,
            ),
        )
        self._in_progress.add(upload_id)
        stored = False
        try:
            await self.put(upload.marker)
            yield upload
            stored = True
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE_SECONDS):
                await self._settle(upload_id, upload.marker.dust_file_id, stored)
            self._in_progress.discard(upload_id)

    async def put(self, marker: PendingUpload) -> None:
        """Write (or overwrite) a marker. Raises StoreUnavailable."""
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

    async def reconcile(self, max_age_seconds: float) -> int:
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
        try:
            markers = await self._store.list_pending_uploads()
        except StoreUnavailable as exc:
            logger.warning("could not look for unfinished uploads: %s", exc.detail)
            return 0
        now = time.time()
        deleted = 0
        for marker in (m for m in markers if self._abandoned(m, now, max_age_seconds)):
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
            _audit_abandoned(marker)
        if deleted:
            logger.info("deleted %d Dust file(s) of uploads interrupted by a crash", deleted)
        return deleted

    def _abandoned(self, marker: PendingUpload, now: float, max_age_seconds: float) -> bool:
        if marker.instance == self._instance:
            return marker.upload_id not in self._in_progress
        if now - marker.started_at > max_age_seconds:
            return True
        if marker.host != self._host:
            return False  # another host's process may still be working on it
        return marker.pid == os.getpid() or not process_alive(marker.pid)

    async def _forget_in_dust(self, file_id: str) -> bool:
        """Delete a Dust file nothing will use (created but not uploaded, or never recorded); False if
        Dust could not be reached in time."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_DELETE_SECONDS):
            try:
                await self._dust.delete_file(file_id)
            except DustError as exc:
                logger.warning("could not delete an unfinished Dust file: %s", exc.message)
                return False
            return True
        logger.warning("could not delete an unfinished Dust file: Dust did not answer in time")
        return False


def _audit_abandoned(marker: PendingUpload) -> None:
    audit_event(
        "upload_abandoned",
        level=logging.WARNING,
        principal=marker.owner,
        upload_id=marker.upload_id,
        dust_file_id=marker.dust_file_id,
        started_at=marker.started_at,
    )
