"""The clamd client against a real clamd (EICAR test signature only), over its unix socket and TCP."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import time
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from bridge.uploads.clamav import ClamdClient, ScannerUnavailable, ScanResult, ScanTooLarge
from tests.procs import EICAR_NDB, Proc, free_port, running, start_clamd

# The EICAR test file, rebuilt from the signature's hex so the string itself is never committed.
EICAR = bytes.fromhex(EICAR_NDB.rsplit(":", 1)[1])
MB = 1024 * 1024


def test_eicar_is_the_real_68_byte_string() -> None:
    assert len(EICAR) == 68
    assert hashlib.md5(EICAR).hexdigest() == "44d88612fea8a8f36de82e1278abb02f"


@pytest.fixture(params=["unix", "tcp"])
def url(request: pytest.FixtureRequest, clamd: Proc) -> str:
    """The shared clamd, once over each transport."""
    return f"unix://{clamd.extra['socket']}" if request.param == "unix" else clamd.extra["tcp"]


@pytest.fixture(scope="module")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A clamd whose StreamMaxLength is 1M."""
    with running(start_clamd(tmp_path_factory.mktemp("clamd-1m"), stream_max_length="1M")) as proc:
        yield proc


def urls(proc: Proc) -> dict[str, str]:
    return {"unix": f"unix://{proc.extra['socket']}", "tcp": proc.extra["tcp"]}


async def pieces(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    """`data` in pieces that do not line up with the client's 64 KiB frames."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_ping_and_version(url: str) -> None:
    client = ClamdClient(url)
    await client.ping()
    assert (await client.version()).startswith("ClamAV ")


async def test_clean_bytes(url: str) -> None:
    result = await ClamdClient(url).scan(pieces(b"hello world"), 11)
    assert result.clean
    assert result.signature is None
    assert result.scanned_bytes == 11
    assert result.seconds >= 0


async def test_eicar_alone_is_found(url: str) -> None:
    result = await ClamdClient(url).scan(pieces(EICAR), len(EICAR))
    assert not result.clean
    assert result.signature is not None
    assert result.signature.startswith("Test.EICAR")
    assert result.signature.endswith(".UNOFFICIAL")  # the full name is kept


async def test_eicar_inside_a_larger_buffer_across_frames(url: str) -> None:
    # EICAR straddles the first 64 KiB frame boundary and sits in 1 MB of random bytes each side.
    data = os.urandom(65536 - 30) + EICAR + os.urandom(MB)
    result = await ClamdClient(url).scan(pieces(data, 7777), len(data))
    assert not result.clean
    assert result.signature is not None and result.signature.startswith("Test.EICAR")
    assert result.scanned_bytes == len(data)


async def test_empty_stream_is_clean(url: str) -> None:
    result = await ClamdClient(url).scan(pieces(b""), 0)
    assert result.clean
    assert result.scanned_bytes == 0


async def test_concurrent_scans(clamd: Proc) -> None:
    client = ClamdClient(f"unix://{clamd.extra['socket']}")
    payloads = [os.urandom(200_000) + (EICAR if i % 3 == 0 else b"") for i in range(20)]
    results: dict[int, bool] = {}

    async def one(i: int) -> None:
        results[i] = (await client.scan(pieces(payloads[i]), len(payloads[i]))).clean

    async with anyio.create_task_group() as tg:
        for i in range(len(payloads)):
            tg.start_soon(one, i)
    assert results == {i: i % 3 != 0 for i in range(20)}


async def test_size_above_the_client_limit_is_refused_before_connecting(tmp_path: Path) -> None:
    consumed = False

    async def never_read() -> AsyncIterator[bytes]:
        nonlocal consumed
        consumed = True
        yield b"x"

    # Nothing listens on this socket: a connection attempt would raise ScannerUnavailable instead.
    client = ClamdClient(f"unix://{tmp_path / 'nothing.sock'}", max_stream_bytes=1000)
    with pytest.raises(ScanTooLarge, match="1001 bytes"):
        await client.scan(never_read(), 1001)
    assert not consumed


async def test_chunks_beyond_the_declared_size_are_refused(clamd: Proc) -> None:
    client = ClamdClient(clamd.extra["tcp"])
    with pytest.raises(ValueError, match="declared size"):
        await client.scan(pieces(b"x" * 200), 100)
    await client.ping()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("size", [2 * MB, 8 * MB])
async def test_clamd_stream_limit_maps_to_too_large(small_clamd: Proc, transport: str, size: int) -> None:
    # The client allows 25 MB; clamd cuts the stream at 1M (reply, broken pipe or reset).
    client = ClamdClient(urls(small_clamd)[transport])
    with pytest.raises(ScanTooLarge):
        await client.scan(pieces(os.urandom(size), 65536), size)
    await client.ping()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_clamd_killed_mid_scan_is_unavailable(tmp_path: Path, transport: str) -> None:
    proc = start_clamd(tmp_path)
    with running(proc):
        client = ClamdClient(urls(proc)[transport], timeout=20)
        started, killed = anyio.Event(), anyio.Event()
        frames = 200
        block = os.urandom(65536)

        async def slow() -> AsyncIterator[bytes]:
            for i in range(frames):
                if i == 4:
                    started.set()
                    await killed.wait()
                yield block

        outcome: list[BaseException] = []

        async def scan() -> None:
            try:
                await client.scan(slow(), frames * len(block))
            except (ScannerUnavailable, ScanTooLarge) as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(scan)
            await started.wait()
            await anyio.to_thread.run_sync(proc.stop, signal.SIGKILL)
            killed.set()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ScannerUnavailable), outcome[0]


async def test_unreachable_unix_socket_fails_fast_without_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing.sock"
    client = ClamdClient(f"unix://{path}")
    with anyio.fail_after(2):
        with pytest.raises(ScannerUnavailable) as info:
            await client.ping()
        with pytest.raises(ScannerUnavailable):
            await client.scan(pieces(b"abc"), 3)
    assert str(tmp_path) not in str(info.value)


async def test_unreachable_tcp_port_fails_fast() -> None:
    client = ClamdClient(f"tcp://127.0.0.1:{free_port()}")
    with anyio.fail_after(2), pytest.raises(ScannerUnavailable, match="cannot connect"):
        await client.version()


async def test_silent_peer_times_out(tmp_path: Path) -> None:
    # A socket that is listening but never accepts: what an overloaded or hung clamd looks like.
    path = tmp_path / "stuck.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)
        client = ClamdClient(f"unix://{path}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ScannerUnavailable, match=r"did not answer within 0\.3s"):
            await client.ping()
        with pytest.raises(ScannerUnavailable, match="did not answer"):
            await client.scan(pieces(b"abc"), 3)
        assert time.monotonic() - started < 3


async def test_stalled_stream_times_out_and_clamd_stays_usable(clamd: Proc) -> None:
    never = anyio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"first piece"
        await never.wait()
        yield b"never sent"

    client = ClamdClient(f"unix://{clamd.extra['socket']}", timeout=0.3)
    with pytest.raises(ScannerUnavailable, match="did not answer"):
        await client.scan(stalled(), 100)
    await client.ping()


async def test_scan_file_streams_in_chunks(tmp_path: Path, clamd: Proc) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for _ in range(10):
            f.write(os.urandom(MB))
    client = ClamdClient(f"unix://{clamd.extra['socket']}")
    await client.scan_file(__file__)  # warm-up: lazy imports and worker threads are not the file
    tracemalloc.start()
    try:
        result = await client.scan_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.clean
    assert result.scanned_bytes == 10 * MB
    assert peak < 2 * MB, f"peak {peak} bytes: the file was not streamed"


async def test_scan_file_finds_eicar(tmp_path: Path, clamd: Proc) -> None:
    path = tmp_path / "sample.txt"
    path.write_bytes(b"header\n" + EICAR + b"\ntrailer\n")
    result = await ClamdClient(clamd.extra["tcp"]).scan_file(str(path))
    assert not result.clean
    assert result.signature is not None and result.signature.startswith("Test.EICAR")


async def test_scan_file_missing_is_an_os_error(tmp_path: Path, clamd: Proc) -> None:
    with pytest.raises(FileNotFoundError):
        await ClamdClient(clamd.extra["tcp"]).scan_file(tmp_path / "absent.bin")


async def test_eicar_inside_a_zip_is_found(url: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", b"nothing to see")
        archive.writestr("inner/test.com", EICAR)
    data = buffer.getvalue()
    result = await ClamdClient(url).scan(pieces(data), len(data))
    assert not result.clean


def _zip(members: dict[str, int]) -> bytes:
    """A deflated zip whose members are `size` zero bytes each (written 1 MB at a time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, size in members.items():
            with archive.open(name, "w") as member:
                for start in range(0, size, MB):
                    member.write(bytes(min(MB, size - start)))
    return buffer.getvalue()


def _nested_zip(depth: int) -> bytes:
    data = b"innermost"
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"level{level}.zip" if level else "inner.txt", data)
        data = buffer.getvalue()
    return data


def _many_files_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            archive.writestr(f"f{i}.txt", b"x")
    return buffer.getvalue()


# The shared clamd (tests/procs.py start_clamd): StreamMaxLength = MaxScanSize = MaxFileSize = 25M,
# MaxRecursion 16, MaxFiles 1000, AlertExceedsMax yes.
@pytest.mark.parametrize(
    ("build", "limit"),
    [
        # 64 MB of zeros in two members: each is cut at MaxFileSize, which exhausts MaxScanSize.
        pytest.param(lambda: _zip({"a.bin": 32 * MB, "b.bin": 32 * MB}), "MaxScanSize", id="two-members"),
        # One 200 MB member: without MaxFileSize >= MaxScanSize clamd would truncate it silently.
        pytest.param(lambda: _zip({"word/document.xml": 200 * MB}), "MaxScanSize", id="one-member"),
        pytest.param(lambda: _nested_zip(20), "MaxRecursion", id="nested"),
        pytest.param(lambda: _many_files_zip(1500), "MaxFiles", id="many-files"),
    ],
)
async def test_zip_bombs_are_flagged_by_clamd_limits(
    clamd: Proc, build: Callable[[], bytes], limit: str
) -> None:
    data = build()  # built here, not at collection: deflating 200 MB takes a moment
    assert len(data) < 300_000
    client = ClamdClient(f"unix://{clamd.extra['socket']}", timeout=30)
    with anyio.fail_after(30):
        result = await client.scan(pieces(data), len(data))
    assert not result.clean
    assert result.signature == f"Heuristics.Limits.Exceeded.{limit}"
    assert result.limits_exceeded == limit


async def test_an_archive_within_the_limits_is_clean(clamd: Proc) -> None:
    data = _zip({"a.bin": 8 * MB, "b.bin": 8 * MB})
    result = await ClamdClient(f"unix://{clamd.extra['socket']}").scan(pieces(data), len(data))
    assert result.clean and result.limits_exceeded is None


def test_only_limit_heuristics_count_as_limits_exceeded() -> None:
    def verdict(signature: str | None) -> ScanResult:
        return ScanResult(clean=signature is None, signature=signature, scanned_bytes=1, seconds=0.0)

    assert verdict("Heuristics.Limits.Exceeded.MaxFileSize").limits_exceeded == "MaxFileSize"
    assert verdict("Test.EICAR.UNOFFICIAL").limits_exceeded is None
    assert verdict("Heuristics.Phishing.Email.SpoofedDomain").limits_exceeded is None
    assert verdict(None).limits_exceeded is None


@pytest.mark.parametrize(
    "bad",
    [
        "http://127.0.0.1:3310",
        "unix://relative/clamd.sock",
        "unix:",
        "tcp://127.0.0.1",
        "tcp://:3310",
        "tcp://h:99999",
        "",
    ],
)
def test_bad_urls_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="clamd URL"):
        ClamdClient(bad)


def test_non_positive_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        ClamdClient("tcp://127.0.0.1:3310", chunk_size=0)
