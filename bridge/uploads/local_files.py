"""Reading a file from the user's own disk, inside the folders the user allowed (stdio only).

The path is resolved, symlinks included, before it is checked against the allowed folders (after
CVE-2025-53109 in the reference filesystem server: check the real path, and match a folder only
with its separator). What is opened is that resolved path, without following a symlink swapped in
since, and the open file itself must be a regular file (not a device, FIFO or folder) still inside
an allowed folder. Every file-system call runs in a worker thread: none blocks the event loop.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread

from bridge.errors import InvalidInput, NotFound

_CHUNK = 256 * 1024
# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: no symlink swapped in. Windows has
# neither (nor FIFOs in the file system), and needs O_BINARY, without which os.read translates line
# ends and stops at Ctrl-Z.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class PathNotAllowed(InvalidInput):
    """A path outside the allowed folders, or path mode not available here."""

    code = "path_not_allowed"


class FileUnreadable(NotFound):
    """No such file, or it cannot be read."""

    code = "file_unreadable"


@dataclass
class LocalFile:
    """An open, checked file: its name, size and a reader of its bytes. Close it when done."""

    name: str
    size: int
    fd: int
    closed: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes, read in a worker thread."""
        while chunk := await anyio.to_thread.run_sync(os.read, self.fd, _CHUNK):
            yield chunk

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def no_roots_message() -> str:
    return (
        "no folder is allowed for path uploads: set BRIDGE_UPLOAD_ROOTS to the folders the bridge may"
        " read (comma-separated, e.g. BRIDGE_UPLOAD_ROOTS=~/Documents; in Claude Desktop, in the `env`"
        " of the bridge's entry, or \"Folders the bridge may read\" in the extension's settings), or share"
        " a folder as a root from your client"
    )


async def open_allowed(path: str, roots: Iterable[str]) -> LocalFile:
    """Open `path` for reading if it is a regular file inside one of `roots`.

    Raises:
        PathNotAllowed: no roots, a malformed path, or a path (after resolving) outside them.
        FileUnreadable: missing, unreadable, or not a regular file.
    """
    allowed, missing = await anyio.to_thread.run_sync(_resolve_roots, list(roots))
    # Folders that do not exist allow nothing; a refusal says which, so a typo or a moved folder in
    # the settings is found without reading logs.
    skipped = f" (skipped, because they do not exist: {', '.join(missing)})" if missing else ""
    if not allowed:
        raise PathNotAllowed(no_roots_message() + skipped)
    try:
        return await anyio.to_thread.run_sync(_open_checked, path, allowed)
    except PathNotAllowed as exc:
        raise PathNotAllowed(f"{exc}{skipped}") from None


@asynccontextmanager
async def allowed_file(path: str, roots: Iterable[str]) -> AsyncIterator[LocalFile]:
    """`open_allowed`, closed on the way out."""
    local = await open_allowed(path, roots)
    try:
        yield local
    finally:
        local.close()


def _resolve_roots(roots: list[str]) -> tuple[list[Path], list[str]]:
    """The roots that are folders, resolved; and the others, as given."""
    resolved, missing = [], []
    for root in roots:
        try:
            candidate = Path(root).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            missing.append(root)  # a root that does not exist allows nothing
            continue
        if candidate.is_dir():
            resolved.append(candidate)
        else:
            missing.append(root)
    return resolved, missing


def _open_checked(path: str, roots: list[Path]) -> LocalFile:
    resolved = _resolve(path)
    if not _inside(resolved, roots):
        raise PathNotAllowed(f"{path!r} is outside the folders the bridge may read ({_names(roots)})")
    try:
        fd = os.open(resolved, _OPEN_FLAGS)
    except OSError as exc:
        raise FileUnreadable(f"cannot open {path!r}: {exc.strerror}") from None
    try:
        return _checked_file(fd, path, resolved, roots)
    except BaseException:
        os.close(fd)
        raise


def path_of_file_uri(uri: str) -> str | None:
    """The local path a `file://` URI names (percent-decoded; `file://localhost/` is local too), or
    None for a file on another host. On Windows `file:///C:/x` is `C:/x`."""
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    path = unquote(parts.path)
    if os.name == "nt" and len(path) > 2 and path[0] == "/" and path[2] == ":":
        path = path[1:]
    return path


def _resolve(path: str) -> Path:
    if not path or "\0" in path:
        raise PathNotAllowed("the path is empty or contains a NUL character")
    if path.startswith("file://"):
        local = path_of_file_uri(path)
        if local is None:
            raise PathNotAllowed(f"{path!r} names a file on another machine: only this machine's files")
        path = local
    expanded = Path(path).expanduser()
    if not expanded.is_absolute():
        raise PathNotAllowed(f"{path!r} is not an absolute path: pass the full path (or ~/...)")
    try:
        return expanded.resolve(strict=True)
    except FileNotFoundError:
        raise FileUnreadable(f"no such file: {path!r}") from None
    except (OSError, RuntimeError) as exc:
        raise FileUnreadable(f"cannot resolve {path!r}: {exc}") from None


def _checked_file(fd: int, path: str, resolved: Path, roots: list[Path]) -> LocalFile:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise FileUnreadable(f"{path!r} is not a regular file (a folder, device or pipe cannot be uploaded)")
    # Where the open file really is (Linux): a folder on the way swapped for a symlink since the
    # check would show here.
    real = _real_path_of(fd) or resolved
    if not _inside(real, roots):
        raise PathNotAllowed(f"{path!r} is outside the folders the bridge may read ({_names(roots)})")
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return LocalFile(name=resolved.name, size=info.st_size, fd=fd)


def _real_path_of(fd: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def _inside(path: Path, roots: list[Path]) -> bool:
    # Path.is_relative_to compares whole components: /data/docs2 is not inside /data/docs.
    return any(path == root or path.is_relative_to(root) for root in roots)


def _names(roots: list[Path]) -> str:
    return ", ".join(str(root) for root in roots)
