"""Reading a user's file by path: only regular files, only inside the allowed folders, symlinks and
`..` resolved before the check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.uploads.local_files import FileUnreadable, PathNotAllowed, allowed_file
from tests.procs import REPO


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "report.txt").write_text("quarterly report\n")
    (tmp_path / "docs2").mkdir()
    (tmp_path / "docs2" / "other.txt").write_text("not allowed\n")
    (tmp_path / "secret.txt").write_text("top secret\n")
    return tmp_path


async def read(path: str, roots: list[str]) -> bytes:
    async with allowed_file(path, roots) as local:
        return b"".join([chunk async for chunk in local.chunks()])


async def test_a_file_inside_an_allowed_folder_is_read_whole(tree: Path) -> None:
    assert await read(str(tree / "docs" / "report.txt"), [str(tree / "docs")]) == b"quarterly report\n"


async def test_a_file_url_and_a_path_with_dots_inside_the_folder_are_read(tree: Path) -> None:
    roots = [str(tree / "docs")]
    assert await read(f"file://{tree}/docs/report.txt", roots) == b"quarterly report\n"
    assert await read(f"{tree}/docs/../docs/report.txt", roots) == b"quarterly report\n"


async def test_a_file_url_is_percent_decoded_and_may_name_localhost(tree: Path) -> None:
    (tree / "docs" / "My Report é.txt").write_text("spaced\n")
    roots = [str(tree / "docs")]
    assert await read(f"file://{tree}/docs/My%20Report%20%C3%A9.txt", roots) == b"spaced\n"
    assert await read(f"file://localhost{tree}/docs/report.txt", roots) == b"quarterly report\n"


async def test_a_file_url_of_another_host_is_refused(tree: Path) -> None:
    with pytest.raises(PathNotAllowed, match="another machine"):
        await read(f"file://fileserver{tree}/docs/report.txt", [str(tree / "docs")])


_READ = """
import asyncio, sys
from bridge.uploads.local_files import FileUnreadable, allowed_file
async def main():
    try:
        async with allowed_file(sys.argv[1], [sys.argv[2]]):
            print("read")
    except FileUnreadable as exc:
        print(f"unreadable: {exc}")
asyncio.run(main())
"""


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs util-linux's setpriv (Linux)")
def test_a_file_the_user_may_not_read_is_unreadable(tree: Path) -> None:
    locked = tree / "docs" / "locked.txt"
    locked.write_text("private\n")
    locked.chmod(0)
    # Root reads whatever a file's mode says: the read runs without the capabilities that allow it.
    as_a_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    run = subprocess.run(
        [*as_a_user, sys.executable, "-c", _READ, str(locked), str(tree / "docs")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert run.stdout.startswith("unreadable: ") and "locked.txt" in run.stdout, run.stderr
    assert "private" not in run.stdout


@pytest.mark.parametrize(
    "relative",
    ["secret.txt", "docs/../secret.txt", "docs2/other.txt"],  # outside, through `..`, a prefix twin
)
async def test_a_path_outside_the_allowed_folders_is_refused(tree: Path, relative: str) -> None:
    with pytest.raises(PathNotAllowed, match="outside the folders the bridge may read"):
        await read(f"{tree}/{relative}", [str(tree / "docs")])


async def test_a_symlink_out_of_the_folder_is_refused(tree: Path) -> None:
    (tree / "docs" / "link.txt").symlink_to(tree / "secret.txt")
    (tree / "docs" / "up").symlink_to(tree)
    for path in (tree / "docs" / "link.txt", tree / "docs" / "up" / "secret.txt"):
        with pytest.raises(PathNotAllowed):
            await read(str(path), [str(tree / "docs")])


async def test_a_symlink_inside_the_folder_is_followed(tree: Path) -> None:
    (tree / "docs" / "alias.txt").symlink_to(tree / "docs" / "report.txt")
    assert await read(str(tree / "docs" / "alias.txt"), [str(tree / "docs")]) == b"quarterly report\n"


async def test_a_fifo_a_device_and_a_folder_are_not_regular_files(tree: Path) -> None:
    os.mkfifo(tree / "docs" / "pipe")
    with pytest.raises(FileUnreadable, match="not a regular file"):
        await read(str(tree / "docs" / "pipe"), [str(tree / "docs")])  # would block if opened for a writer
    with pytest.raises(FileUnreadable, match="not a regular file"):
        await read(str(tree / "docs"), [str(tree / "docs")])
    with pytest.raises(FileUnreadable, match="not a regular file"):
        await read("/dev/zero", ["/dev"])


async def test_a_missing_file_and_a_dangling_link_are_unreadable(tree: Path) -> None:
    (tree / "docs" / "dangling").symlink_to(tree / "docs" / "gone.txt")
    for name in ("missing.txt", "dangling"):
        with pytest.raises(FileUnreadable, match="no such file"):
            await read(str(tree / "docs" / name), [str(tree / "docs")])


async def test_with_no_folder_allowed_the_error_says_how_to_allow_one(tree: Path) -> None:
    for roots in ([], [str(tree / "does-not-exist")]):
        with pytest.raises(PathNotAllowed, match="BRIDGE_UPLOAD_ROOTS"):
            await read(str(tree / "docs" / "report.txt"), roots)


@pytest.mark.parametrize("path", ["", "relative/report.txt", "/docs/\0report.txt"])
async def test_an_empty_relative_or_nul_path_is_refused(tree: Path, path: str) -> None:
    with pytest.raises(PathNotAllowed):
        await read(path, [str(tree / "docs")])


async def test_a_folder_that_does_not_exist_is_named_when_a_path_is_refused(tree: Path) -> None:
    gone = str(tree / "Gone Folder")
    skipped = r"skipped, because they do not exist: .*Gone"
    with pytest.raises(PathNotAllowed, match=rf"BRIDGE_UPLOAD_ROOTS.*{skipped}"):
        await read(str(tree / "docs" / "report.txt"), [gone])
    with pytest.raises(PathNotAllowed, match=rf"outside the folders .*{skipped}"):
        await read(str(tree / "secret.txt"), [str(tree / "docs"), gone])
    assert await read(str(tree / "docs" / "report.txt"), [str(tree / "docs"), gone]) == b"quarterly report\n"
