"""Leftover upload temp files: the rules of `sweep_temp_files` (writer's pid, age, files in use),
the pipeline's own in-flight files, and the periodic sweep the runtime runs."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import anyio
import pytest

from bridge import runtime
from bridge.dust.client import DustClient
from bridge.errors import BridgeError
from bridge.observability.metrics import Metrics
from bridge.store.memory import MemoryStore
from bridge.uploads.mime import MimeSniffer, allowed_types
from bridge.uploads.pipeline import UploadPipeline, UploadPolicy
from bridge.uploads.temp_files import TEMP_PREFIX, sweep_temp_files

HOUR = 3600.0


def temp_file(directory: Path, pid: int | str, age_seconds: float = 0.0, tag: str = "x") -> Path:
    """A temp file named as the pipeline names them, with its mtime `age_seconds` in the past."""
    path = directory / f"{TEMP_PREFIX}{pid}-{tag}.part"
    path.write_bytes(b"partial upload")
    if age_seconds:
        stamp = time.time() - age_seconds
        os.utime(path, (stamp, stamp))
    return path


def test_sweep_rules(tmp_path: Path, live_pid: int, dead_pid: int) -> None:
    me = os.getpid()
    dead_writer = temp_file(tmp_path, dead_pid, tag="dead")
    mine_abandoned = temp_file(tmp_path, me, tag="mine")  # this pid, but not an upload in progress
    mine_in_use = temp_file(tmp_path, me, age_seconds=2 * HOUR, tag="busy")
    live_young = temp_file(tmp_path, live_pid, age_seconds=60, tag="young")
    live_old = temp_file(tmp_path, live_pid, age_seconds=2 * HOUR, tag="old")
    no_pid = temp_file(tmp_path, "nopid", tag="odd")
    unrelated = [tmp_path / "notes.part", tmp_path / f"{TEMP_PREFIX}{dead_pid}-x.tmp", tmp_path / "keep.txt"]
    for path in unrelated:
        path.write_text("not ours")

    removed = sweep_temp_files(tmp_path, max_age_seconds=HOUR, in_use={mine_in_use})

    assert removed == 4
    for gone in (dead_writer, mine_abandoned, live_old, no_pid):
        assert not gone.exists(), gone.name
    # Another live process's young file may be an upload streaming on another replica.
    assert live_young.exists()
    assert mine_in_use.exists()
    assert all(path.exists() for path in unrelated)


def test_sweep_of_a_missing_directory_is_a_no_op(tmp_path: Path) -> None:
    assert sweep_temp_files(tmp_path / "absent", max_age_seconds=HOUR, in_use=set()) == 0


def test_age_is_measured_against_max_age(tmp_path: Path, live_pid: int) -> None:
    just_under = temp_file(tmp_path, live_pid, age_seconds=HOUR - 60, tag="under")
    just_over = temp_file(tmp_path, live_pid, age_seconds=HOUR + 60, tag="over")
    assert sweep_temp_files(tmp_path, max_age_seconds=HOUR, in_use=set()) == 1
    assert just_under.exists() and not just_over.exists()


def _pipeline(temp_dir: Path) -> UploadPipeline:
    policy = UploadPolicy(
        max_bytes=1024 * 1024,
        allowed_types=allowed_types(),
        scan_required=False,
        ttl_seconds=3600,
        temp_dir=temp_dir,
    )
    # Dust is never reached in these tests: the uploads stop before.
    return UploadPipeline(policy, cast(DustClient, None), MemoryStore(60), None, MimeSniffer(), Metrics())


async def test_the_pipeline_never_sweeps_its_own_uploads_in_progress(tmp_path: Path, dead_pid: int) -> None:
    uploads = _pipeline(tmp_path)
    leftover = temp_file(tmp_path, dead_pid)
    release = anyio.Event()
    streaming = anyio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + bytes(200)
        streaming.set()
        await release.wait()
        yield bytes(100)

    outcome: list[BaseException] = []

    async def upload() -> None:
        try:
            await uploads.ingest(
                owner="alice", filename="program.txt", declared_type=None, chunks=slow_body()
            )
        except BridgeError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(upload)
        await streaming.wait()
        [in_flight] = [p for p in tmp_path.glob("*.part") if p != leftover]
        assert uploads.in_flight == 1
        # Even with max age 0, the file being written stays; the dead process's leftover goes.
        assert await anyio.to_thread.run_sync(uploads.sweep, 0.0) == 1
        assert in_flight.exists() and not leftover.exists()
        release.set()
    # The upload then finished (refused: an executable named .txt) and removed its own file.
    assert [exc.code for exc in outcome if isinstance(exc, BridgeError)] == ["type_mismatch"]
    assert uploads.in_flight == 0
    assert list(tmp_path.glob("*.part")) == []


async def test_the_runtime_sweeps_at_start_up_and_then_periodically(
    tmp_path: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "_SWEEP_INTERVAL_SECONDS", 0.05)
    uploads = _pipeline(tmp_path)
    reconciles: list[float] = []
    original = uploads.reconcile

    async def counting_reconcile(max_age_seconds: float = HOUR) -> int:
        reconciles.append(max_age_seconds)
        return await original(max_age_seconds)

    monkeypatch.setattr(uploads, "reconcile", counting_reconcile)
    first = temp_file(tmp_path, dead_pid, tag="before-start")
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime._sweep_forever, uploads)
        with anyio.fail_after(5):
            while first.exists():  # at start-up
                await anyio.sleep(0.01)
            later = temp_file(tmp_path, dead_pid, tag="after-start")
            while later.exists():  # by a later round
                await anyio.sleep(0.01)
            while len(reconciles) < 3:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    # Every round also reconciles pending uploads, with the same age limit as the temp files.
    assert set(reconciles) == {runtime._TEMP_MAX_AGE_SECONDS}
