"""A small asyncio client for clamd (the ClamAV daemon): PING, VERSION and INSTREAM scans.

Why not a package: `clamd`/`clamav-client` use blocking sockets, `aioclamd` speaks TCP only and
reads 1 KiB per worker-thread hop (about 17x slower on 10 MB), `pyvalve` never drains its writes
(reference/infra.md §2). The protocol is small enough to own (man 8 clamd):

- one command per connection; the `z` prefix makes clamd terminate its reply with NUL;
- INSTREAM: `zINSTREAM\\0`, then chunks each prefixed by a 4-byte big-endian length, then a
  zero-length chunk; the reply is `stream: OK`, `stream: <Signature> FOUND` or `<message> ERROR`.

When the stream exceeds clamd's `StreamMaxLength`, clamd replies `INSTREAM size limit exceeded.
ERROR` and closes at once, so a client still sending usually sees a broken pipe or a reset and,
over TCP, may lose the reply. The client therefore enforces its own limit before sending anything
and classifies a connection dropped mid-INSTREAM with a probe (see `ClamdClient.scan`).

Archives that expand too far (zip bombs) are clamd's business: with `AlertExceedsMax yes` it
reports content it would not fully inspect (over `MaxScanSize`, `MaxFileSize`, `MaxRecursion`,
`MaxFiles`) as `stream: Heuristics.Limits.Exceeded.<Limit> FOUND`; `ScanResult.limits_exceeded`
tells those verdicts from real signatures. Without it, clamd silently truncates an oversized
archive member and may answer OK for bytes it never looked at.
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import anyio.abc

from bridge.errors import Unavailable

_LENGTH = struct.Struct("!I")
_END_OF_STREAM = _LENGTH.pack(0)
# Replies are one short line; anything longer is not clamd (or not a sane clamd).
_MAX_REPLY_BYTES = 4096
# How long the "is clamd still alive?" probe after a dropped stream may take.
_PROBE_SECONDS = 2.0
# Absolute paths in clamd's messages (temp files, sockets) are not for end users.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/[^\s'\"]+")
# After connecting, anyio reports socket failures as these (the OSError is the __cause__).
_CONNECTION_LOST = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)


class ScannerUnavailable(Unavailable):
    """clamd cannot give a verdict: unreachable, too slow, broken reply or an error of its own."""

    code = "scanner_unavailable"


class ScanTooLarge(Exception):
    """The stream is larger than the client's limit or clamd's `StreamMaxLength`."""


# The name clamd gives a file it refused to inspect fully (AlertExceedsMax), e.g. `...MaxScanSize`.
LIMITS_EXCEEDED_PREFIX = "Heuristics.Limits.Exceeded."


@dataclass(frozen=True)
class ScanResult:
    """A verdict: `clean`, or the `signature` clamd matched (e.g. `Test.EICAR.UNOFFICIAL`)."""

    clean: bool
    signature: str | None
    scanned_bytes: int
    seconds: float

    @property
    def limits_exceeded(self) -> str | None:
        """The clamd limit the file ran into (`MaxScanSize`, `MaxFileSize`, `MaxRecursion`,
        `MaxFiles`, ...) when that, not a signature, is why it is not clean; else None."""
        if self.signature is None or not self.signature.startswith(LIMITS_EXCEEDED_PREFIX):
            return None
        return self.signature.removeprefix(LIMITS_EXCEEDED_PREFIX) or "unknown"


class _StreamDropped(Exception):
    """clamd closed or reset the connection mid-INSTREAM without a usable reply."""


@dataclass(frozen=True)
class _Target:
    unix_path: str | None
    host: str
    port: int

    def describe(self) -> str:
        # Deliberately no socket path: messages may reach users.
        return "clamd's unix socket" if self.unix_path is not None else f"clamd at {self.host}:{self.port}"


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(
                f"clamd URL {url!r}: a unix socket needs an absolute path, e.g. unix:///run/clamd.sock"
            )
        return _Target(unix_path=parts.path, host="", port=0)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"clamd URL {url!r}: the port is not a number in 1-65535") from exc
        if not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ValueError(f"clamd URL {url!r}: use tcp://host:port, e.g. tcp://127.0.0.1:3310")
        return _Target(unix_path=None, host=parts.hostname, port=port)
    raise ValueError(f"clamd URL {url!r}: expected unix:///path/to/clamd.sock or tcp://host:port")


def _scrub(text: str) -> str:
    return _ABSOLUTE_PATH.sub("<path>", text)[:200]


def _verdict(reply: str) -> tuple[bool, str | None]:
    """(clean, signature) from an INSTREAM reply.

    Raises:
        ScanTooLarge: clamd's StreamMaxLength was exceeded.
        ScannerUnavailable: any other `... ERROR` or an unrecognised reply.
    """
    if reply == "ERROR" or reply.endswith(" ERROR"):
        message = reply.removesuffix("ERROR").strip()
        if "size limit exceeded" in message.lower():
            raise ScanTooLarge("the file is larger than the virus scanner accepts (clamd StreamMaxLength)")
        raise ScannerUnavailable(f"the virus scanner could not scan the file: {_scrub(message)}")
    body = reply.removeprefix("stream: ")
    if body != reply:
        if body == "OK":
            return True, None
        signature = body.removesuffix(" FOUND").strip()
        if body.endswith(" FOUND") and signature:
            return False, signature
    raise ScannerUnavailable(f"unexpected reply from the virus scanner: {_scrub(reply)!r}")


async def _read_reply(stream: anyio.abc.ByteStream) -> str:
    """One NUL-terminated reply (raises anyio's EndOfStream if clamd closes first)."""
    buffer = bytearray()
    while True:
        buffer += await stream.receive()
        end = buffer.find(b"\0")
        if end >= 0:
            return buffer[:end].decode("utf-8", "replace").strip()
        if len(buffer) > _MAX_REPLY_BYTES:
            raise ScannerUnavailable("the virus scanner sent an over-long reply")


async def _close(stream: anyio.abc.ByteStream) -> None:
    # Shielded so a cancelled caller still releases the socket (clamd holds a thread per connection).
    with anyio.CancelScope(shield=True):
        await stream.aclose()


class ClamdClient:
    """Talks to one clamd over a unix socket or TCP; one connection per command.

    `url` is `unix:///path/to/clamd.sock` or `tcp://host:port`. Every operation, including the
    time spent pulling chunks from the caller, is bounded by `timeout` seconds. Streams are sent
    in frames of `chunk_size` bytes; streams above `max_stream_bytes` are refused before
    connecting, so keep it at or below clamd's `StreamMaxLength` (Debian's default is 25M).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        chunk_size: int = 65536,
        max_stream_bytes: int = 25 * 1024 * 1024,
    ) -> None:
        """Validate the settings; nothing is connected yet.

        Raises:
            ValueError: `url` is neither unix:///abs/path nor tcp://host:port, or a number is not positive.
        """
        self._target = _parse_url(url)
        if timeout <= 0 or chunk_size <= 0 or max_stream_bytes <= 0:
            raise ValueError("timeout, chunk_size and max_stream_bytes must be positive")
        self._timeout = timeout
        self._chunk_size = chunk_size
        self._max_stream_bytes = max_stream_bytes

    @property
    def max_stream_bytes(self) -> int:
        """The largest stream this client sends to clamd."""
        return self._max_stream_bytes

    async def ping(self) -> None:
        """Check that clamd answers (`zPING` -> `PONG`).

        Raises:
            ScannerUnavailable: no connection, timeout, or a reply other than PONG.
        """
        reply = await self._run_command(b"zPING\0")
        if reply != "PONG":
            raise ScannerUnavailable(f"the virus scanner answered PING with {_scrub(reply)!r}")

    async def version(self) -> str:
        """clamd's version string, e.g. `ClamAV 1.4.6` (plus `/<db version>/<date>` with official DBs).

        Raises:
            ScannerUnavailable: no connection, timeout, or an empty reply.
        """
        reply = await self._run_command(b"zVERSION\0")
        if not reply:
            raise ScannerUnavailable("the virus scanner sent an empty VERSION reply")
        return reply

    async def scan(self, chunks: AsyncIterable[bytes], size: int) -> ScanResult:
        """Stream `chunks` (declared total `size` bytes) to clamd with INSTREAM and return its verdict.

        `size` is checked against `max_stream_bytes` before connecting. The pieces are re-framed
        to `chunk_size`, so the caller may yield any sizes. If clamd drops the connection
        mid-stream without a readable reply, a fresh PING decides what happened: clamd alive
        means it cut the stream at its own StreamMaxLength (the only reason clamd closes an
        INSTREAM early while still serving), so `ScanTooLarge`; no answer means it died or
        restarted, so `ScannerUnavailable`. `chunks` stays the caller's: an async generator
        abandoned midway is not closed here.

        Raises:
            ScanTooLarge: `size` exceeds `max_stream_bytes`, or clamd refused the stream as too long.
            ScannerUnavailable: clamd unreachable, timed out, lost, or answered with an error.
            ValueError: `size` is negative or `chunks` yields more than `size` bytes.
        """
        if size < 0:
            raise ValueError("size must not be negative")
        if size > self._max_stream_bytes:
            raise ScanTooLarge(
                f"the file is {size} bytes; the virus scanner accepts at most {self._max_stream_bytes} bytes"
            )
        started = time.monotonic()
        try:
            with anyio.fail_after(self._timeout):
                try:
                    reply, sent, complete = await self._instream(chunks, size)
                except _StreamDropped:
                    raise await self._classify_drop(size) from None
                clean, signature = _verdict(reply)
                if clean and not complete:
                    # clamd said OK without having seen every byte: never report that as clean.
                    raise await self._classify_drop(size)
        except TimeoutError as exc:
            raise ScannerUnavailable(f"the virus scanner did not answer within {self._timeout:g}s") from exc
        except _CONNECTION_LOST as exc:
            raise ScannerUnavailable(f"lost the connection to {self._target.describe()}") from exc
        return ScanResult(
            clean=clean, signature=signature, scanned_bytes=sent, seconds=time.monotonic() - started
        )

    async def scan_file(self, path: os.PathLike[str] | str) -> ScanResult:
        """Scan a file, read `chunk_size` bytes at a time in a worker thread (never whole into memory).

        Raises:
            OSError: the file cannot be opened or read.
            ScanTooLarge, ScannerUnavailable: as for `scan`.
        """
        async with await anyio.open_file(path, "rb") as file:
            size = (await anyio.to_thread.run_sync(os.fstat, file.wrapped.fileno())).st_size

            async def pieces() -> AsyncGenerator[bytes, None]:
                # Stop at the size measured up front so a file still being written cannot exceed it.
                remaining = size
                while remaining > 0:
                    block = await file.read(min(self._chunk_size, remaining))
                    if not block:
                        return
                    remaining -= len(block)
                    yield block

            generator = pieces()
            try:
                return await self.scan(generator, size)
            finally:
                await generator.aclose()

    async def _connect(self) -> anyio.abc.ByteStream:
        """A connection to clamd; only here does OSError mean "unreachable" (later it is the caller's)."""
        try:
            if self._target.unix_path is not None:
                return await anyio.connect_unix(self._target.unix_path)
            return await anyio.connect_tcp(self._target.host, self._target.port)
        except OSError as exc:
            raise ScannerUnavailable(f"cannot connect to {self._target.describe()}: {_reason(exc)}") from exc

    async def _command(self, command: bytes) -> str:
        stream = await self._connect()
        try:
            await stream.send(command)
            return await _read_reply(stream)
        finally:
            await _close(stream)

    async def _run_command(self, command: bytes) -> str:
        try:
            with anyio.fail_after(self._timeout):
                return await self._command(command)
        except TimeoutError as exc:
            raise ScannerUnavailable(f"the virus scanner did not answer within {self._timeout:g}s") from exc
        except _CONNECTION_LOST as exc:
            raise ScannerUnavailable(f"lost the connection to {self._target.describe()}") from exc

    async def _instream(self, chunks: AsyncIterable[bytes], size: int) -> tuple[str, int, bool]:
        """(reply, bytes taken from `chunks`, whether the whole stream was sent)."""
        stream = await self._connect()
        sent = 0
        try:
            try:
                await stream.send(b"zINSTREAM\0")
                pending = bytearray()
                async for piece in chunks:
                    sent += len(piece)
                    if sent > size:
                        raise ValueError(f"the chunks exceed the declared size of {size} bytes")
                    pending += piece
                    while len(pending) >= self._chunk_size:
                        await stream.send(_LENGTH.pack(self._chunk_size) + pending[: self._chunk_size])
                        del pending[: self._chunk_size]
                if pending:
                    await stream.send(_LENGTH.pack(len(pending)) + pending)
                await stream.send(_END_OF_STREAM)
                complete = True
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # clamd stopped reading (limit hit, or it died); its reply may still be buffered.
                complete = False
            try:
                return await _read_reply(stream), sent, complete
            except _CONNECTION_LOST as exc:
                raise _StreamDropped from exc
        finally:
            await _close(stream)

    async def _classify_drop(self, size: int) -> Exception:
        """What a dropped stream means: too large if clamd still answers PING, else unavailable."""
        alive = False
        with anyio.move_on_after(_PROBE_SECONDS):
            try:
                alive = await self._command(b"zPING\0") == "PONG"
            except (*_CONNECTION_LOST, ScannerUnavailable):
                alive = False
        if alive:
            return ScanTooLarge(
                f"the virus scanner closed the stream early: the file ({size} bytes) is larger "
                "than it accepts (clamd StreamMaxLength)"
            )
        return ScannerUnavailable("the connection to the virus scanner was lost during the scan")


def _reason(exc: OSError) -> str:
    """A short cause without file names (OSError's str() includes the socket path)."""
    return exc.strerror or type(exc).__name__
