"""Upload temp files: where an upload's bytes wait while they are checked, and the sweep of leftovers.

Each upload streams into its own temp file in the upload directory, named after the writing
process's pid (`dmb-upload-<pid>-....part`), and deletes it when it ends, however it ends. Only a
killed process leaves one behind; `sweep_temp_files` (at start-up and every few minutes, see
bridge/runtime.py) removes those without touching what another live process is still writing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from bridge.uploads.processes import process_alive

TEMP_PREFIX = "dmb-upload-"


class TempFiles:
    """This process's upload temp files in `directory`: made, tracked while in use, then deleted."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._in_use: set[Path] = set()

    @property
    def in_use(self) -> int:
        """How many temp files uploads in progress are using right now."""
        return len(self._in_use)

    @contextlib.asynccontextmanager
    async def new(self) -> AsyncIterator[Path]:
        """A new, empty temp file for one upload, deleted on leaving the block (even when cancelled)."""
        path = await self._create()
        self._in_use.add(path)
        try:
            yield path
        finally:
            self._in_use.discard(path)
            with anyio.CancelScope(shield=True), contextlib.suppress(FileNotFoundError):
                await anyio.Path(path).unlink()

    def sweep(self, max_age_seconds: float) -> int:
        """Remove leftover temp files (see `sweep_temp_files`), never one in use; blocking, call it in
        a thread."""
        return sweep_temp_files(self._directory, max_age_seconds=max_age_seconds, in_use=set(self._in_use))

    async def _create(self) -> Path:
        directory = self._directory
        await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
        # The pid in the name lets a later start-up tell a dead process's leftovers from a live one's.
        fd, name = await anyio.to_thread.run_sync(
            lambda: tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".part", dir=directory)
        )
        os.close(fd)
        return Path(name)


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
        other_live_writer = (
            pid_text.isdigit() and int(pid_text) != os.getpid() and process_alive(int(pid_text))
        )
        try:
            old = now - entry.stat().st_mtime > max_age_seconds
        except FileNotFoundError:
            continue
        if not other_live_writer or old:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
    return removed
