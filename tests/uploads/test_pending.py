"""Pending upload markers: the store methods (memory and Redis), how the pipeline writes and clears
them around the Dust upload, and `UploadPipeline.reconcile`, which deletes the Dust file of an
upload whose process died between creating it and storing the record."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from bridge.dust.client import DustClient
from bridge.dust.errors import DustServerError
from bridge.dust.models import DustFile
from bridge.errors import BridgeError, Unavailable
from bridge.observability.metrics import Metrics
from bridge.store.base import ContextStore, StoreUnavailable
from bridge.store.memory import MemoryStore
from bridge.store.records import PendingUpload, UploadRecord, new_upload_id
from bridge.store.redis import RedisStore
from bridge.uploads.mime import MimeSniffer, allowed_types
from bridge.uploads.pipeline import UploadPipeline, UploadPolicy
from bridge.uploads.processes import process_host
from tests.procs import Proc, free_port

TEXT = b"plain words for a plain file\n"


class FakeDust:
    """The three file calls of DustClient, recorded; failures on demand."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.uploaded: list[str] = []
        self.deleted: list[str] = []
        self.fail_upload = False
        self.fail_delete = False
        self.block_upload: anyio.Event | None = None
        self.upload_started = anyio.Event()

    async def create_file(self, *, content_type: str, file_name: str, file_size: int) -> DustFile:
        s_id = f"fil_{len(self.created) + 1}"
        self.created.append(s_id)
        return DustFile.model_validate(
            {"sId": s_id, "contentType": content_type, "fileName": file_name, "fileSize": file_size}
        )

    async def upload_file(
        self, file: DustFile, content: AsyncIterator[bytes], *, content_type: str
    ) -> DustFile:
        self.upload_started.set()
        if self.block_upload is not None:
            await self.block_upload.wait()
        if self.fail_upload:
            raise DustServerError("injected", status=500, type="internal_server_error")
        async for _ in content:
            pass
        self.uploaded.append(file.s_id)
        return replace_status(file)

    async def delete_file(self, file_id: str) -> None:
        if self.fail_delete:
            raise DustServerError("injected", status=503, type="service_unavailable")
        self.deleted.append(file_id)


def replace_status(file: DustFile) -> DustFile:
    return file.model_copy(update={"status": "ready", "upload_url": None})


def pipeline(store: ContextStore, dust: FakeDust, temp_dir: Path) -> UploadPipeline:
    policy = UploadPolicy(
        max_bytes=1024 * 1024,
        allowed_types=allowed_types(),
        scan_required=False,
        ttl_seconds=3600,
        temp_dir=temp_dir,
    )
    return UploadPipeline(policy, cast(DustClient, dust), store, None, MimeSniffer(), Metrics())


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_server: Proc) -> AsyncIterator[ContextStore]:
    if request.param == "memory":
        yield MemoryStore(3600)
        return
    redis_store = RedisStore.from_url(f"redis://127.0.0.1:{redis_server.port}/0", 3600)
    await redis_store._client.flushdb()
    try:
        yield redis_store
    finally:
        await redis_store.aclose()


def marker(owner: str = "alice", **fields: Any) -> PendingUpload:
    values: dict[str, Any] = {
        "upload_id": new_upload_id(),
        "owner": owner,
        "started_at": time.time(),
        "host": "elsewhere/pid:[1]",
        "pid": 1,
        "instance": "other-process",
        "dust_file_id": "fil_orphan",
    }
    values.update(fields)
    return PendingUpload(**values)


def record_for(pending: PendingUpload) -> UploadRecord:
    now = time.time()
    return UploadRecord(
        upload_id=pending.upload_id,
        owner=pending.owner,
        filename="a.txt",
        size=3,
        sha256="0" * 64,
        mime="text/plain",
        scan="clean",
        dust_file_id=pending.dust_file_id or "fil_x",
        created_at=now,
        expires_at=now + 3600,
    )


# -- the store ---------------------------------------------------------------------------------


async def test_pending_markers_are_written_overwritten_listed_oldest_first_and_cleared(
    store: ContextStore,
) -> None:
    older = marker(started_at=time.time() - 100, dust_file_id=None)
    newer = marker(owner="bob")
    await store.put_pending_upload(newer, 60)
    await store.put_pending_upload(older, 60)
    await store.put_pending_upload(replace(older, dust_file_id="fil_now_known"), 60)
    assert await store.list_pending_uploads() == [replace(older, dust_file_id="fil_now_known"), newer]
    assert await store.list_pending_uploads(limit=1) == [replace(older, dust_file_id="fil_now_known")]
    await store.clear_pending_upload(older.upload_id)
    await store.clear_pending_upload(older.upload_id)  # absent is fine
    assert await store.list_pending_uploads() == [newer]
    with pytest.raises(ValueError):
        await store.put_pending_upload(replace(newer, upload_id="not-an-id"), 60)


async def test_memory_markers_expire() -> None:
    now = [1000.0]
    store = MemoryStore(3600, clock=lambda: now[0])
    await store.put_pending_upload(marker(), 10)
    now[0] += 11
    assert await store.list_pending_uploads() == []


async def test_redis_markers_carry_their_ttl_and_dead_index_entries_drop_out(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, 3600)
    try:
        gone, kept = marker(), marker()
        await store.put_pending_upload(gone, 120)
        await store.put_pending_upload(kept, 120)
        client = store._client
        assert 0 < await client.ttl(f"dmb:pending:{kept.upload_id}") <= 120
        await client.delete(f"dmb:pending:{gone.upload_id}")  # as if it had expired
        assert await store.list_pending_uploads() == [kept]
        assert await client.zrange("dmb:pending-uploads", 0, -1) == [kept.upload_id]
    finally:
        await store.aclose()


async def test_redis_down_is_store_unavailable() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", 3600)
    try:
        with pytest.raises(StoreUnavailable):
            await store.put_pending_upload(marker(), 60)
        with pytest.raises(StoreUnavailable):
            await store.list_pending_uploads()
    finally:
        await store.aclose()


# -- the pipeline writes and clears markers ----------------------------------------------------


async def test_a_finished_upload_leaves_no_marker(store: ContextStore, tmp_path: Path) -> None:
    dust = FakeDust()
    uploads = pipeline(store, dust, tmp_path)
    seen: list[list[PendingUpload]] = []
    dust.block_upload = anyio.Event()
    async with anyio.create_task_group() as tg:
        result: list[UploadRecord] = []

        async def run() -> None:
            result.append(
                await uploads.ingest_bytes(owner="alice", filename="a.txt", declared_type=None, data=TEXT)
            )

        tg.start_soon(run)
        await dust.upload_started.wait()
        seen.append(await store.list_pending_uploads())
        # Our own upload in progress is never reconciled away.
        assert await uploads.reconcile(max_age_seconds=0) == 0
        dust.block_upload.set()
    [record] = result
    [in_flight] = seen[0]
    assert in_flight.upload_id == record.upload_id and in_flight.owner == "alice"
    assert in_flight.dust_file_id == record.dust_file_id == "fil_1"
    assert in_flight.pid == os.getpid()
    assert await store.list_pending_uploads() == []
    assert dust.deleted == []


async def test_a_dust_upload_failure_deletes_the_file_clears_the_marker_and_passes_through(
    store: ContextStore, tmp_path: Path
) -> None:
    dust = FakeDust()
    dust.fail_upload = True
    with pytest.raises(BridgeError) as info:
        await pipeline(store, dust, tmp_path).ingest_bytes(
            owner="alice", filename="a.txt", declared_type=None, data=TEXT
        )
    # Dust failing is not the caller's file being refused: the error is Dust's own, unmapped.
    assert isinstance(info.value, DustServerError) and info.value.status == 500
    assert dust.deleted == ["fil_1"]
    assert await store.list_pending_uploads() == []


class RecordlessStore(MemoryStore):
    """A store that loses its connection just when the upload record is written."""

    async def put_upload(self, record: UploadRecord) -> None:
        raise StoreUnavailable("context store (Redis) is unreachable")


async def test_a_store_failure_after_the_dust_upload_deletes_the_dust_file(tmp_path: Path) -> None:
    store = RecordlessStore(3600)
    dust = FakeDust()
    with pytest.raises(BridgeError) as info:
        await pipeline(store, dust, tmp_path).ingest_bytes(
            owner="alice", filename="a.txt", declared_type=None, data=TEXT
        )
    assert info.value.code == "store_unavailable" and isinstance(info.value, Unavailable)
    assert dust.uploaded == ["fil_1"] and dust.deleted == ["fil_1"]
    assert await store.list_pending_uploads() == []


async def test_a_dust_file_that_cannot_be_deleted_keeps_its_marker_for_reconcile(tmp_path: Path) -> None:
    store = RecordlessStore(3600)
    dust = FakeDust()
    dust.fail_delete = True
    uploads = pipeline(store, dust, tmp_path)
    with pytest.raises(BridgeError):
        await uploads.ingest_bytes(owner="alice", filename="a.txt", declared_type=None, data=TEXT)
    [left] = await store.list_pending_uploads()
    assert left.dust_file_id == "fil_1"
    dust.fail_delete = False
    assert await uploads.reconcile() == 1  # its own, no longer in progress
    assert dust.deleted == ["fil_1"]
    assert await store.list_pending_uploads() == []


async def test_a_cancelled_upload_deletes_the_dust_file(store: ContextStore, tmp_path: Path) -> None:
    dust = FakeDust()
    dust.block_upload = anyio.Event()  # never set: the client goes away meanwhile
    uploads = pipeline(store, dust, tmp_path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: uploads.ingest_bytes(owner="alice", filename="a.txt", declared_type=None, data=TEXT)
        )
        await dust.upload_started.wait()
        tg.cancel_scope.cancel()
    assert dust.deleted == ["fil_1"]
    assert await store.list_pending_uploads() == []
    assert list(tmp_path.glob("*.part")) == []


# -- reconcile ---------------------------------------------------------------------------------


async def test_reconcile_deletes_what_a_dead_process_left_and_keeps_what_a_live_one_is_doing(
    store: ContextStore, tmp_path: Path, live_pid: int, dead_pid: int
) -> None:
    dust = FakeDust()
    uploads = pipeline(store, dust, tmp_path)
    here = process_host()
    dead = marker(host=here, pid=dead_pid, dust_file_id="fil_dead")
    restarted = marker(host=here, pid=os.getpid(), dust_file_id="fil_reused_pid")  # our pid, earlier life
    live = marker(host=here, pid=live_pid, dust_file_id="fil_live")
    live_but_old = marker(host=here, pid=live_pid, started_at=time.time() - 7200, dust_file_id="fil_old")
    remote = marker(dust_file_id="fil_remote")  # another host: its pid means nothing here
    remote_old = marker(started_at=time.time() - 7200, dust_file_id="fil_remote_old")
    never_created = marker(host=here, pid=dead_pid, dust_file_id=None)
    for each in (dead, restarted, live, live_but_old, remote, remote_old, never_created):
        await store.put_pending_upload(each, 3600 * 24)
    assert await uploads.reconcile(max_age_seconds=3600) == 4
    assert sorted(dust.deleted) == ["fil_dead", "fil_old", "fil_remote_old", "fil_reused_pid"]
    assert {m.upload_id for m in await store.list_pending_uploads()} == {live.upload_id, remote.upload_id}


async def test_reconcile_never_deletes_the_file_of_an_upload_that_was_recorded(
    store: ContextStore, tmp_path: Path, dead_pid: int
) -> None:
    dust = FakeDust()
    uploads = pipeline(store, dust, tmp_path)
    finished = marker(host=process_host(), pid=dead_pid, dust_file_id="fil_kept")
    await store.put_pending_upload(finished, 3600)
    await store.put_upload(record_for(finished))
    assert await uploads.reconcile() == 0
    assert dust.deleted == []
    assert await store.list_pending_uploads() == []
    assert await store.get_upload(finished.upload_id, finished.owner) is not None


async def test_reconcile_retries_when_dust_cannot_delete_now(
    store: ContextStore, tmp_path: Path, dead_pid: int
) -> None:
    dust = FakeDust()
    dust.fail_delete = True
    uploads = pipeline(store, dust, tmp_path)
    orphan = marker(host=process_host(), pid=dead_pid)
    await store.put_pending_upload(orphan, 3600)
    assert await uploads.reconcile() == 0
    assert await store.list_pending_uploads() == [orphan]
    dust.fail_delete = False
    assert await uploads.reconcile() == 1
    assert dust.deleted == ["fil_orphan"]
    assert await store.list_pending_uploads() == []


class DeadStore(MemoryStore):
    async def list_pending_uploads(self, limit: int = 1000) -> list[PendingUpload]:
        raise StoreUnavailable("context store (Redis) is unreachable")


async def test_reconcile_with_the_store_down_does_nothing_and_does_not_raise(tmp_path: Path) -> None:
    dust = FakeDust()
    assert await pipeline(DeadStore(3600), dust, tmp_path).reconcile() == 0
    assert dust.deleted == []
