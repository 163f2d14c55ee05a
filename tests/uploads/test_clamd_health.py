"""What `check` finds out about a clamd: reachable, signatures, limits against the upload cap,
AlertExceedsMax. Each case runs a real clamd configured that way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.uploads.clamav import ClamdClient
from bridge.uploads.clamd_health import Finding, diagnose, signature_finding
from tests.procs import Proc, free_port, running, start_clamd

MIB = 1024 * 1024
CAP = 4 * MIB  # a small upload cap keeps the streamed probe quick


def client_for(url: str) -> ClamdClient:
    return ClamdClient(url, timeout=30, max_stream_bytes=CAP)


@pytest.fixture(scope="module")
def roomy_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with running(start_clamd(tmp_path_factory.mktemp("roomy"), stream_max_length="8M")) as proc:
        yield proc


def by_name(findings: list[Finding]) -> dict[str, list[Finding]]:
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.name, []).append(finding)
    return grouped


async def test_a_well_configured_clamd_passes_the_limit_checks(roomy_clamd: Proc) -> None:
    findings = by_name(await diagnose(client_for(f"unix://{roomy_clamd.extra['socket']}"), CAP))
    assert findings["scanner"] == [Finding("scanner", "clamd answers PING")]
    limits = findings["scanner limits"]
    assert [f.fix for f in limits] == [None, None]
    assert limits[0].detail.startswith("clamd scans a whole stream of BRIDGE_UPLOAD_MAX_BYTES (4 MiB)")
    assert limits[1].detail == "AlertExceedsMax is on: what clamd cannot unpack is refused"


async def test_only_local_signatures_is_a_failure_that_says_run_freshclam(roomy_clamd: Proc) -> None:
    (signatures,) = by_name(await diagnose(client_for(roomy_clamd.extra["tcp"]), CAP))["scanner signatures"]
    assert signatures.detail.endswith("has no official signature database loaded")
    assert signatures.fix is not None and "freshclam" in signatures.fix


@pytest.mark.parametrize(
    ("limits", "detail", "directive"),
    [
        (
            {"stream_max_length": "2M"},
            "clamd refuses a stream of BRIDGE_UPLOAD_MAX_BYTES (4 MiB)",
            "StreamMaxLength 4M",
        ),
        (
            {"stream_max_length": "8M", "max_file_size": "1M"},
            "clamd would not fully scan a file of BRIDGE_UPLOAD_MAX_BYTES (4 MiB): MaxFileSize",
            "MaxFileSize 4M",
        ),
    ],
)
async def test_limits_below_the_upload_cap_name_the_directive_to_raise(
    tmp_path: Path, limits: dict[str, str], detail: str, directive: str
) -> None:
    with running(start_clamd(tmp_path, **limits)) as clamd:
        findings = await diagnose(client_for(clamd.extra["tcp"]), CAP)
    stream = by_name(findings)["scanner limits"][0]
    assert stream.detail == detail
    assert stream.fix is not None and f"`{directive}`" in stream.fix


async def test_alert_exceeds_max_off_is_found_by_what_clamd_does(tmp_path: Path) -> None:
    with running(start_clamd(tmp_path, stream_max_length="8M", alert_exceeds_max=False)) as clamd:
        findings = await diagnose(client_for(clamd.extra["tcp"]), CAP)
    alert = by_name(findings)["scanner limits"][1]
    assert "AlertExceedsMax is off" in alert.detail
    assert alert.fix is not None and "`AlertExceedsMax yes`" in alert.fix


async def test_no_clamd_stops_at_the_first_finding_and_says_how_to_get_one() -> None:
    findings = await diagnose(client_for(f"tcp://127.0.0.1:{free_port()}"), CAP)
    assert len(findings) == 1 and findings[0].name == "scanner"
    assert findings[0].fix is not None
    assert "apt-get install clamav-daemon" in findings[0].fix and "BRIDGE_SCAN_MODE=off" in findings[0].fix


@pytest.mark.parametrize(
    ("version", "fix"),
    [
        ("ClamAV 1.4.6/27479/Sat Dec  5 09:34:21 2026", None),
        ("ClamAV 1.4.6/27400/Sun Nov  1 09:00:00 2026", "out of date"),
    ],
)
def test_signature_age_comes_from_clamds_version(version: str, fix: str | None) -> None:
    finding = signature_finding(version, datetime(2026, 12, 7, tzinfo=UTC))
    assert finding.detail.startswith("ClamAV 1.4.6, database 27")
    assert (finding.fix is None) if fix is None else (finding.fix is not None and fix in finding.fix)
