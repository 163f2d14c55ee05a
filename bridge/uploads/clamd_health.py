"""Is this clamd fit to guard the bridge's uploads? What `dust-mcp-bridge check` asks it.

clamd exposes neither its configuration nor its limits over its protocol, so the limits are tested
by what they do: a stream as large as the bridge's upload cap shows whether `StreamMaxLength`,
`MaxFileSize` or `MaxScanSize` is below it (clamd refuses the stream, or names the limit when
`AlertExceedsMax` is on), and a small archive nested deeper than clamd will unpack shows whether
`AlertExceedsMax` is on at all (with it off, clamd calls what it did not inspect clean).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.uploads.clamav import ClamdClient, ScannerUnavailable, ScanTooLarge

# Official signatures older than this mean freshclam is not running.
MAX_SIGNATURE_AGE_DAYS = 7
# Deeper than clamd's default MaxRecursion (17) and than any sane setting of it.
_NESTING = 64
_ZEROS = bytes(1024 * 1024)
# `ClamAV 1.4.6/27479/Sun Dec  1 09:34:21 2024`: engine, database version, database date.
_VERSION = re.compile(r"^ClamAV (?P<engine>[^/]+)(?:/(?P<db>\d+)/(?P<date>.+))?$")
_NOT_RUNNING_FIX = (
    "start clamd and point CLAMD_URL at it. Debian/Ubuntu: `sudo apt-get install clamav-daemon`, then"
    " `sudo freshclam` (clamd starts only once it has signatures); its socket is"
    " unix:///var/run/clamav/clamd.ctl, which the bridge uses by default when it exists."
    " Or set BRIDGE_SCAN_MODE=off to accept unscanned uploads"
)


@dataclass(frozen=True)
class Finding:
    """One fact about clamd: `fix` is None when it is fine, else what to change."""

    name: str
    detail: str
    fix: str | None = None


async def diagnose(client: ClamdClient, upload_max_bytes: int, now: datetime | None = None) -> list[Finding]:
    """The findings in order; stops after the first if clamd cannot be reached."""
    try:
        await client.ping()
    except ScannerUnavailable as exc:
        return [Finding("scanner", str(exc), _NOT_RUNNING_FIX)]
    findings = [Finding("scanner", "clamd answers PING")]
    try:
        findings.append(signature_finding(await client.version(), now or datetime.now(UTC)))
        findings.append(await _stream_limits(client, upload_max_bytes))
        findings.append(await _alert_exceeds_max(client))
    except ScannerUnavailable as exc:
        findings.append(Finding("scanner", f"clamd stopped answering: {exc}", _NOT_RUNNING_FIX))
    return findings


def signature_finding(version: str, now: datetime) -> Finding:
    """What clamd's VERSION reply says about its signature database."""
    match = _VERSION.match(version.strip())
    if match is None or match["db"] is None:
        return Finding(
            "scanner signatures",
            f"{version.strip()} has no official signature database loaded",
            "run `sudo freshclam` and keep the clamav-freshclam service running",
        )
    try:
        built = datetime.strptime(" ".join(match["date"].split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return Finding("scanner signatures", f"{version.strip()} (database date not understood)")
    age = (now - built).days
    detail = f"ClamAV {match['engine']}, database {match['db']} of {built:%Y-%m-%d} ({age} days old)"
    if age > MAX_SIGNATURE_AGE_DAYS:
        return Finding(
            "scanner signatures", detail, "signatures are out of date: run `sudo freshclam` (or its service)"
        )
    return Finding("scanner signatures", detail)


async def _stream_limits(client: ClamdClient, upload_max_bytes: int) -> Finding:
    size = min(upload_max_bytes, client.max_stream_bytes)
    cap = f"BRIDGE_UPLOAD_MAX_BYTES ({_mib(upload_max_bytes)})"
    try:
        result = await client.scan(_zeros(size), size)
    except ScanTooLarge:
        return Finding(
            "scanner limits",
            f"clamd refuses a stream of {cap}",
            f"set `StreamMaxLength {_mib_directive(upload_max_bytes)}` in clamd.conf, or lower {cap}",
        )
    if result.limits_exceeded is not None:
        return Finding(
            "scanner limits",
            f"clamd would not fully scan a file of {cap}: {result.limits_exceeded}",
            f"set `{result.limits_exceeded} {_mib_directive(upload_max_bytes)}` (or more) in clamd.conf,"
            f" or lower {cap}",
        )
    if not result.clean:
        return Finding(
            "scanner limits", f"clamd flags a stream of zeros as {result.signature}", "check clamd"
        )
    return Finding("scanner limits", f"clamd scans a whole stream of {cap} ({result.seconds:.2f} s)")


async def _alert_exceeds_max(client: ClamdClient) -> Finding:
    archive = _nested_zip(_NESTING)

    async def once() -> AsyncIterator[bytes]:
        yield archive

    result = await client.scan(once(), len(archive))
    if result.limits_exceeded is not None:
        return Finding("scanner limits", "AlertExceedsMax is on: what clamd cannot unpack is refused")
    return Finding(
        "scanner limits",
        f"an archive nested {_NESTING} deep was called clean: AlertExceedsMax is off",
        "set `AlertExceedsMax yes` in clamd.conf: without it clamd passes archives it did not inspect",
    )


async def _zeros(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = _ZEROS[: size - sent]
        sent += len(piece)
        yield piece


def _nested_zip(depth: int) -> bytes:
    payload = b"innermost"
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(f"level{level}.zip" if level else "note.txt", payload)
        payload = buffer.getvalue()
    return payload


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def _mib_directive(size: int) -> str:
    return f"{-(-size // (1024 * 1024))}M"
