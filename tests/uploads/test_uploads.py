"""Uploads end to end: POST /v1/uploads and the upload_file tool through a running bridge, a real
clamd and libmagic, into the Dust simulator, then attached to a conversation. Every bad input gets a
clear refusal, nothing unscanned or refused reaches Dust, and no temp file is left behind."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import redis.asyncio as aioredis
from mcp import Client

from tests.helpers import audit_events, faults, stats, text_of
from tests.procs import EICAR_NDB, Proc, bridge_env, free_port, running, start_bridge, start_clamd

EICAR = bytes.fromhex(EICAR_NDB.rsplit(":", 1)[1])  # rebuilt here, never committed as such
CAP = 4 * 1024 * 1024
MB = 1024 * 1024
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def pdf(pages: int = 2, padding: int = 0) -> bytes:
    """A small valid PDF with `pages` pages (hand-built, so no PDF writer is needed)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>")
    objects += ["<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"] * pages
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    if padding:
        out.write(b"%" + b"x" * padding + b"\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + b"\x00" * 200


def docx(document_bytes: int) -> bytes:
    """A docx-shaped zip whose document is `document_bytes` zeros (deflated: about 1000:1)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("_rels/.rels", "<Relationships/>")
        with archive.open("word/document.xml", "w") as member:
            for start in range(0, document_bytes, MB):
                member.write(bytes(min(MB, document_bytes - start)))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def bridge(simulator: Proc, redis_server: Proc, clamd: Proc, upload_dir: Path) -> Iterator[Proc]:
    env = bridge_env(
        simulator,
        redis_server.port,
        clamd,
        BRIDGE_UPLOAD_MAX_BYTES=str(CAP),
        BRIDGE_UPLOAD_DIR=str(upload_dir),
    )
    with running(start_bridge(env)) as proc:
        yield proc


@pytest.fixture(autouse=True)
def reset_simulator(simulator: Proc) -> None:
    httpx2.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()


def sim_files(simulator: Proc) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = httpx2.get(f"{simulator.url}/_sim/files", timeout=5).json()["files"]
    return files


def post_file(
    bridge: Proc, name: str, data: bytes, content_type: str | None = None, part: str = "file"
) -> httpx2.Response:
    file_tuple = (name, data, content_type) if content_type else (name, data)
    return httpx2.post(f"{bridge.url}/v1/uploads", files={part: file_tuple}, timeout=60)


def leftovers(upload_dir: Path) -> list[Path]:
    return list(upload_dir.glob("*.part"))


def dust_file_calls(simulator: Proc) -> list[dict[str, Any]]:
    """Every request the simulator saw on Dust's file endpoints since the last reset."""
    return [r for r in stats(simulator)["requests"] if "/files" in r["path"]]


_SAMPLE = re.compile(r"^bridge_uploads_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)


def upload_counts(bridge: Proc) -> dict[tuple[str, str], float]:
    """`bridge_uploads_total` from /metrics, by (outcome, mime)."""
    text = httpx2.get(f"{bridge.url}/metrics", timeout=5).text
    counts: dict[tuple[str, str], float] = {}
    for match in _SAMPLE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        counts[(labels["outcome"], labels["mime"])] = float(match.group("value"))
    return counts


def test_pdf_upload_is_scanned_sent_to_dust_and_described(
    bridge: Proc, simulator: Proc, upload_dir: Path
) -> None:
    data = pdf(pages=3)
    response = post_file(bridge, "report.pdf", data, "application/pdf")
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["uri"] == f"bridge://uploads/{record['id']}"
    assert record["filename"] == "report.pdf"
    assert record["size"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["mime_type"] == "application/pdf"
    assert record["scan"] == "clean"
    assert record["pages"] == 3
    [in_dust] = sim_files(simulator)
    assert in_dust["sId"] == record["dust_file_id"]
    assert in_dust["sha256"] == record["sha256"]
    assert leftovers(upload_dir) == []


async def test_upload_file_tool_and_attachment_to_new_and_continued_conversations(
    bridge: Proc, simulator: Proc, upload_dir: Path
) -> None:
    first = post_file(bridge, "report.pdf", pdf()).json()
    async with Client(f"{bridge.url}/mcp") as client:
        tool = await client.call_tool(
            "upload_file", {"filename": "chart.png", "content_base64": base64.b64encode(png(5, 4)).decode()}
        )
        assert not tool.is_error, text_of(tool)
        image = tool.structured_content or {}
        assert image["mime_type"] == "image/png" and image["width"] == 5 and image["height"] == 4
        asked = await client.call_tool(
            "ask_agent", {"agent": "file-reader", "message": "what do you see?", "files": [first["uri"]]}
        )
        assert not asked.is_error, text_of(asked)
        assert text_of(asked).startswith("I can see 1 file(s): report.pdf (application/pdf)")
        handle = (asked.structured_content or {})["conversation"]
        again = await client.call_tool(
            "ask_agent",
            {"agent": "file-reader", "message": "and now?", "conversation": handle, "files": [image["id"]]},
        )
        listed = {r.uri for r in (await client.list_resources()).resources}
        resource = await client.read_resource(image["uri"])
    assert text_of(again).startswith(
        "I can see 2 file(s): report.pdf (application/pdf), chart.png (image/png)"
    )
    assert image["uri"] in listed and first["uri"] in listed
    assert '"scan": "clean"' in resource.contents[0].text  # type: ignore[union-attr]
    assert leftovers(upload_dir) == []


async def test_unknown_upload_reference_is_refused_before_posting(bridge: Proc, simulator: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        result = await client.call_tool(
            "ask_agent",
            {"agent": "file-reader", "message": "hi", "files": ["bridge://uploads/upl_" + "A" * 22]},
        )
        resource_error = None
        try:
            await client.read_resource("bridge://uploads/upl_" + "B" * 22)
        except Exception as exc:
            resource_error = str(exc)
    assert result.is_error and "unknown or expired upload" in text_of(result)
    assert httpx2.get(f"{simulator.url}/_sim/stats", timeout=5).json()["messages"] == 0
    assert resource_error is not None and "unknown or expired upload" in resource_error


@pytest.mark.parametrize(
    ("name", "data", "content_type", "status", "problem"),
    [
        ("empty.txt", b"", "text/plain", 400, "empty_file"),
        ("report.pdf", ELF, "application/pdf", 415, "type_mismatch"),
        ("photo.png", pdf(), "image/png", 415, "type_mismatch"),
        ("archive.zip", b"PK\x05\x06" + b"\x00" * 18, "application/zip", 415, "type_not_allowed"),
        ("eicar.txt", EICAR, "text/plain", 422, "infected"),
        ("notes.txt", os.urandom(0) + b"A" * 300_000 + EICAR + b"B" * 300_000, "text/plain", 422, "infected"),
        ("big.txt", b"a" * (CAP + 1), "text/plain", 413, "too_large"),
    ],
)
def test_bad_files_are_refused_with_a_problem_and_nothing_reaches_dust(
    bridge: Proc,
    simulator: Proc,
    upload_dir: Path,
    name: str,
    data: bytes,
    content_type: str,
    status: int,
    problem: str,
) -> None:
    response = post_file(bridge, name, data, content_type)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == problem and body["status"] == status and body["detail"]
    assert sim_files(simulator) == []
    assert leftovers(upload_dir) == []


def test_malformed_requests_are_bad_requests(bridge: Proc, simulator: Proc) -> None:
    wrong_part = post_file(bridge, "a.txt", b"hello", "text/plain", part="document")
    not_multipart = httpx2.post(
        f"{bridge.url}/v1/uploads", content=b"hello", headers={"content-type": "text/plain"}
    )
    no_filename = httpx2.post(f"{bridge.url}/v1/uploads", files={"file": (None, b"x")}, timeout=10)
    for response, expected in (
        (wrong_part, "no part named 'file'"),
        (not_multipart, "multipart/form-data"),
        (no_filename, "must be a file"),
    ):
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "bad_request"
        assert expected in response.json()["detail"]
    assert sim_files(simulator) == []


def test_hostile_file_names_are_sanitised(bridge: Proc) -> None:
    # Built by hand: HTTP clients percent-encode control characters, a hostile one does not.
    name = "..\\..\\etc/pass\x01wd\u202e\x7f.txt".encode()
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
        b"Content-Type: text/plain\r\n\r\nharmless text\r\n--b0undary--\r\n"
    )
    response = httpx2.post(
        f"{bridge.url}/v1/uploads",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "passwd.txt"
    only_dots = post_file(bridge, "../..", b"text", "text/plain")
    assert only_dots.status_code == 400 and only_dots.json()["type"] == "bad_request"


async def test_streamed_body_over_the_cap_is_stopped_while_streaming(bridge: Proc, upload_dir: Path) -> None:
    """A raw client streams 100 MiB; the bridge answers 413 long before the end and stays flat."""
    boundary = "streamingboundary"
    head = (
        f"POST /v1/uploads HTTP/1.1\r\nHost: 127.0.0.1:{bridge.port}\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    preamble = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    block = b"z" * (256 * 1024)
    offered = 400 * len(block)  # 100 MiB, far above the 4 MiB cap
    rss_before = _rss_kb(bridge.pid)
    sent = 0
    answer = b""
    async with await anyio.connect_tcp("127.0.0.1", bridge.port) as stream:
        await stream.send(head + b"%x\r\n%s\r\n" % (len(preamble), preamble))
        with anyio.fail_after(60):
            while sent < offered and not answer:
                await stream.send(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
                with anyio.move_on_after(0.001):
                    answer = await stream.receive()
            while not answer.rstrip().endswith(b"}"):  # the rest of the problem body
                answer += await stream.receive()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"type":"too_large"' in answer
    assert sent < 4 * CAP, f"the bridge read {sent} bytes before refusing"
    assert _rss_kb(bridge.pid) - rss_before < 30 * 1024
    assert leftovers(upload_dir) == []


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        pytest.param("a.txt", lambda: "not base64!!", "not valid base64", id="bad-base64"),
        pytest.param("a.txt", lambda: b64(EICAR), "virus scanner found Test.EICAR", id="eicar"),
        pytest.param("report.pdf", lambda: b64(ELF), "claims to be application/pdf", id="disguised-exe"),
        pytest.param("empty.txt", lambda: "", "the file is empty", id="empty"),
        pytest.param("archive.zip", lambda: b64(b"PK\x05\x06" + bytes(18)), "application/zip", id="zip"),
        pytest.param("bomb.docx", lambda: b64(docx(64 * MB)), "(zip bombs)", id="zip-bomb"),
        pytest.param("../..", lambda: b64(b"text"), "file name", id="bad-name"),
    ],
)
async def test_upload_file_refusals_are_tool_errors_and_leave_nothing(
    bridge: Proc,
    simulator: Proc,
    upload_dir: Path,
    filename: str,
    content: Callable[[], str],
    expected: str,
) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        before = len((await client.list_resources()).resources)
        result = await client.call_tool("upload_file", {"filename": filename, "content_base64": content()})
        after = len((await client.list_resources()).resources)
    assert result.is_error, text_of(result)
    assert expected in text_of(result)
    assert dust_file_calls(simulator) == [] and sim_files(simulator) == []
    assert leftovers(upload_dir) == []
    assert after == before  # no upload record either


def test_dust_rate_limit_and_expired_upload_window(bridge: Proc, simulator: Proc, upload_dir: Path) -> None:
    faults(
        simulator,
        fail_next=[
            {
                "match": "/files",
                "method": "POST",
                "status": 429,
                "type": "rate_limit_error",
                "message": "slow down",
                "count": 10,
            }
        ],
    )
    limited = post_file(bridge, "a.txt", b"hello", "text/plain")
    assert limited.status_code == 429 and limited.json()["type"] == "rate_limited"
    assert limited.headers["retry-after"]
    faults(simulator, fail_next=[], file_upload_window_seconds=0.000001)
    expired = post_file(bridge, "a.txt", b"hello", "text/plain")
    assert expired.status_code == 422, expired.text
    assert expired.json()["type"] == "dust_rejected" and "expired" in expired.json()["detail"]
    # The file Dust created for the refused upload was deleted again: nothing half-done stays there.
    assert sim_files(simulator) == []
    assert leftovers(upload_dir) == []


@pytest.mark.parametrize("path", ["/files", "/files/fil_"], ids=["file-creation", "byte-upload"])
async def test_dust_unavailable_for_a_file_is_a_503_over_http_and_says_so_over_mcp(
    bridge: Proc, simulator: Proc, upload_dir: Path, path: str
) -> None:
    # Enough 503s to outlast the bridge's retries of the creation, for both calls below.
    unavailable = {
        "match": path,
        "method": "POST",
        "status": 503,
        "type": "service_unavailable",
        "message": "Down for maintenance.",
        "count": 20,
    }
    faults(simulator, fail_next=[unavailable])
    response = post_file(bridge, "a.txt", b"hello", "text/plain")
    async with Client(f"{bridge.url}/mcp") as client:
        result = await client.call_tool(
            "upload_file", {"filename": "a.txt", "content_base64": base64.b64encode(b"hello").decode()}
        )
    faults(simulator, fail_next=[])
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "dust_unavailable" and response.headers["retry-after"]
    said = "Dust is unavailable right now (HTTP 503 service_unavailable: Down for maintenance.)"
    assert said in response.json()["detail"]
    assert result.is_error and said in text_of(result)
    # A file Dust created before refusing the bytes was deleted again.
    assert sim_files(simulator) == []
    assert leftovers(upload_dir) == []


def test_metrics_and_openapi_describe_uploads(bridge: Proc) -> None:
    post_file(bridge, "note.txt", b"counted", "text/plain")
    metrics = httpx2.get(f"{bridge.url}/metrics", timeout=5).text
    spec = httpx2.get(f"{bridge.url}/openapi.json", timeout=5).json()
    assert 'bridge_uploads_total{mime="text/plain",outcome="accepted"}' in metrics
    assert "bridge_scan_duration_seconds_bucket" in metrics
    assert "/v1/uploads" in spec["paths"]
    assert "too_large" in spec["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]


def test_scanner_down_fails_closed(simulator: Proc, redis_server: Proc, upload_dir: Path) -> None:
    env = bridge_env(
        simulator,
        redis_server.port,
        CLAMD_URL=f"tcp://127.0.0.1:{free_port()}",
        BRIDGE_UPLOAD_DIR=str(upload_dir),
    )
    with running(start_bridge(env)) as lonely:
        response = post_file(lonely, "a.txt", b"hello", "text/plain")
        ready = httpx2.get(f"{lonely.url}/readyz", timeout=10)
    assert response.status_code == 503 and response.json()["type"] == "scanner_unavailable"
    assert response.headers["retry-after"]
    assert ready.status_code == 503 and ready.json()["checks"]["scanner"] == "unavailable"
    assert sim_files(simulator) == []
    assert leftovers(upload_dir) == []


def test_scan_mode_off_is_explicit_and_says_skipped(simulator: Proc, upload_dir: Path) -> None:
    env = bridge_env(simulator, BRIDGE_SCAN_MODE="off", BRIDGE_UPLOAD_DIR=str(upload_dir))
    with running(start_bridge(env)) as unscanned:
        response = post_file(unscanned, "a.txt", b"hello", "text/plain")
        log = unscanned.log()
    assert response.status_code == 201 and response.json()["scan"] == "skipped"
    assert "BRIDGE_SCAN_MODE=off: uploads are NOT virus-scanned" in log


async def test_clamd_killed_mid_scan_refuses_cleanly(simulator: Proc, tmp_path: Path) -> None:
    private = start_clamd(tmp_path / "clamd")
    upload_dir = tmp_path / "uploads"
    env = bridge_env(
        simulator,
        clamd=private,
        BRIDGE_UPLOAD_DIR=str(upload_dir),
        BRIDGE_UPLOAD_MAX_BYTES=str(40 * 1024 * 1024),
    )
    with running(private), running(start_bridge(env)) as bridge:
        data = b"plain words for the scanner to read\n" * (30 * 1024 * 1024 // 36)
        async with httpx2.AsyncClient(timeout=60) as http, anyio.create_task_group() as tg:
            result: dict[str, httpx2.Response] = {}

            async def send() -> None:
                result["r"] = await http.post(
                    f"{bridge.url}/v1/uploads", files={"file": ("big.txt", data, "text/plain")}
                )

            tg.start_soon(send)
            # Kill clamd once the bridge has started talking to it (its INSTREAM connection is open).
            with anyio.fail_after(30):
                while "r" not in result and not _has_client(private.pid):
                    await anyio.sleep(0.005)
            os.kill(private.pid, signal.SIGKILL)
        response = result["r"]
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "scanner_unavailable"
    assert sim_files(simulator) == []
    assert leftovers(upload_dir) == []


def _has_client(pid: int) -> bool:
    # clamd accepted a connection once it has more than its listening sockets open.
    try:
        return len(os.listdir(f"/proc/{pid}/fd")) > _BASE_FDS.setdefault(
            pid, len(os.listdir(f"/proc/{pid}/fd"))
        )
    except FileNotFoundError:
        return True


_BASE_FDS: dict[int, int] = {}


def test_zip_bomb_shaped_office_file_is_refused_by_the_scan_limits(
    bridge: Proc, simulator: Proc, upload_dir: Path
) -> None:
    """200 MB of document in a 200 KB docx: clamd (AlertExceedsMax, MaxScanSize 25M) flags it, promptly."""
    bomb = docx(200 * MB)
    assert len(bomb) < MB
    started = time.monotonic()
    response = post_file(bridge, "bomb.docx", bomb, DOCX)
    assert time.monotonic() - started < 30
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "scan_limits_exceeded"
    assert "MaxScanSize" in body["detail"] and "zip bomb" in body["detail"]
    assert dust_file_calls(simulator) == [] and sim_files(simulator) == []
    assert leftovers(upload_dir) == []
    # The module's bridge has refused other files; this one's event is the latest about it.
    refusal = [e for e in audit_events(bridge.log()) if e["event"] == "upload_refused"][-1]
    assert refusal["file"] == "bomb.docx"
    assert refusal["reason"] == "scan_limits_exceeded"
    assert refusal["signature"] == "Heuristics.Limits.Exceeded.MaxScanSize"


def test_an_office_file_within_the_scan_limits_is_accepted(bridge: Proc, simulator: Proc) -> None:
    # Same shape, 2 MB of document: the limits refuse bombs, not ordinary compressed documents.
    response = post_file(bridge, "fine.docx", docx(2 * MB), DOCX)
    assert response.status_code == 201, response.text
    assert response.json()["mime_type"] == DOCX and response.json()["scan"] == "clean"
    assert [f["sId"] for f in sim_files(simulator)] == [response.json()["dust_file_id"]]


def test_refusals_are_counted_under_the_sniffed_type(bridge: Proc) -> None:
    before = upload_counts(bridge)
    refusals = [
        ("report.pdf", ELF, "application/pdf", "type_mismatch", "application/x-executable"),
        (
            "archive.zip",
            b"PK\x05\x06" + b"\x00" * 18,
            "application/zip",
            "type_not_allowed",
            "application/zip",
        ),
        ("eicar.txt", b"junk " + EICAR + b" junk", "text/plain", "infected", "text/plain"),
        ("bomb.docx", docx(64 * MB), DOCX, "scan_limits_exceeded", DOCX),
        # Nothing to sniff yet: refused while streaming, or empty.
        ("big.txt", b"a" * (CAP + 1), "text/plain", "too_large", "unknown"),
        ("empty.txt", b"", "text/plain", "empty_file", "unknown"),
    ]
    for name, data, content_type, outcome, _ in refusals:
        response = post_file(bridge, name, data, content_type)
        assert response.json()["type"] == outcome, response.text
    after = upload_counts(bridge)
    for _, _, _, outcome, mime in refusals:
        assert after.get((outcome, mime), 0) - before.get((outcome, mime), 0) == 1, (outcome, mime)
    # Only the refusals that happen before sniffing are counted as unknown.
    unknown = sum(v - before.get(k, 0) for k, v in after.items() if k[1] == "unknown")
    assert unknown == 2


async def test_bridge_killed_mid_upload_leaves_nothing_and_the_retry_succeeds(
    simulator: Proc, redis_server: Proc, clamd: Proc, tmp_path: Path
) -> None:
    upload_dir = tmp_path / "uploads"
    env = bridge_env(simulator, redis_server.port, clamd, BRIDGE_UPLOAD_DIR=str(upload_dir))
    first = start_bridge(env)
    with running(first):
        stream = await anyio.connect_tcp("127.0.0.1", first.port)
        await stream.send(
            b"POST /v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n"
            b"Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="half.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + b"half of a file\n" * 100_000
        )
        with anyio.fail_after(20):
            while not leftovers(upload_dir):
                await anyio.sleep(0.01)
        first.stop(signal.SIGKILL)
        await stream.aclose()
    assert len(leftovers(upload_dir)) == 1
    assert sim_files(simulator) == []
    with running(start_bridge(env)) as second:
        with anyio.fail_after(20):
            while leftovers(upload_dir):  # swept at start-up
                await anyio.sleep(0.05)
        retry = post_file(second, "half.txt", b"the whole file now\n", "text/plain")
        async with Client(f"{second.url}/mcp") as client:
            listed = [
                r.uri for r in (await client.list_resources()).resources if r.uri.startswith("bridge://")
            ]
    assert retry.status_code == 201, retry.text
    assert [f["sId"] for f in sim_files(simulator)] == [retry.json()["dust_file_id"]]
    assert retry.json()["uri"] in listed


async def test_bridge_killed_after_dust_created_the_file_leaves_nothing_and_the_retry_succeeds(
    simulator: Proc, redis_server: Proc, clamd: Proc, tmp_path: Path
) -> None:
    """Killed while Dust holds the uploaded bytes but before the record is stored: the next start
    finds the pending marker, deletes the Dust file, and the client's retry goes through."""
    redis_url = f"redis://127.0.0.1:{redis_server.port}/7"  # a database of its own: the checks are exact
    redis = aioredis.from_url(redis_url, decode_responses=True)
    await redis.flushdb()
    upload_dir = tmp_path / "uploads"
    env = bridge_env(simulator, clamd=clamd, REDIS_URL=redis_url, BRIDGE_UPLOAD_DIR=str(upload_dir))
    data = pdf(pages=2)
    faults(simulator, file_upload_delay_seconds=60)  # Dust stores the bytes, then is slow to answer
    first = start_bridge(env)
    failure: list[BaseException] = []
    with running(first):
        async with httpx2.AsyncClient(timeout=90) as http, anyio.create_task_group() as tg:

            async def upload() -> None:
                try:
                    await http.post(
                        f"{first.url}/v1/uploads", files={"file": ("report.pdf", data, "application/pdf")}
                    )
                except httpx2.HTTPError as exc:
                    failure.append(exc)

            tg.start_soon(upload)
            with anyio.fail_after(30):
                while not [f for f in sim_files(simulator) if f["status"] == "ready"]:
                    await anyio.sleep(0.02)
            [marker_key] = await redis.keys("dmb:pending:*")
            marker = json.loads(await redis.get(marker_key) or "{}")
            await anyio.to_thread.run_sync(first.stop, signal.SIGKILL)
    [orphan] = sim_files(simulator)
    assert failure, "the first upload should have died with the bridge"
    assert marker["dust_file_id"] == orphan["sId"] and marker["pid"] == first.pid
    assert orphan["sha256"] == hashlib.sha256(data).hexdigest()  # the bytes really were in Dust
    assert await redis.keys("dmb:upload:*") == []
    faults(simulator, file_upload_delay_seconds=0)

    with running(start_bridge(env)) as second:
        with anyio.fail_after(20):
            while sim_files(simulator):  # reconciled at start-up
                await anyio.sleep(0.05)
        assert await redis.keys("dmb:pending:*") == []
        assert await redis.keys("dmb:upload:*") == []
        async with Client(f"{second.url}/mcp") as client:
            before = [
                r.uri for r in (await client.list_resources()).resources if r.uri.startswith("bridge://")
            ]
        retry = post_file(second, "report.pdf", data, "application/pdf")
        log = second.log()
    await redis.aclose()
    assert before == []
    assert retry.status_code == 201, retry.text
    assert [f["sId"] for f in sim_files(simulator)] == [retry.json()["dust_file_id"]]
    [abandoned] = [e for e in audit_events(log) if e["event"] == "upload_abandoned"]
    assert abandoned["dust_file_id"] == orphan["sId"] and abandoned["upload_id"] == marker["upload_id"]
    assert leftovers(upload_dir) == []
