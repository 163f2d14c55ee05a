"""`POST /v1/uploads` (bridge/http/uploads.py): capped by BRIDGE_UPLOAD_MAX_BYTES, not the MCP cap, and
refused before a byte is read when the declared length is over it. (The pipeline's refusals:
tests/uploads/test_uploads.py.)"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx2

from tests.http.helpers import refused
from tests.procs import Proc, bridge_env, running, start_bridge


def test_uploads_are_capped_by_bridge_upload_max_bytes_not_the_mcp_cap(
    simulator: Proc, tmp_path: Path
) -> None:
    cap = 6 * 1024 * 1024
    env = bridge_env(
        simulator,
        BRIDGE_SCAN_MODE="off",
        BRIDGE_UPLOAD_DIR=str(tmp_path),
        BRIDGE_UPLOAD_MAX_BYTES=str(cap),
    )
    with running(start_bridge(env)) as bridge:
        above_mcp_cap = httpx2.post(
            f"{bridge.url}/v1/uploads",
            files={"file": ("big.txt", b"a" * (5 * 1024 * 1024), "text/plain")},
            timeout=60,
        )
        above_upload_cap = httpx2.post(
            f"{bridge.url}/v1/uploads",
            files={"file": ("big.txt", b"a" * (cap + 1), "text/plain")},
            timeout=60,
        )
    assert above_mcp_cap.status_code == 201, above_mcp_cap.text
    assert above_mcp_cap.json()["size"] == 5 * 1024 * 1024
    refused(above_upload_cap, 413, "too_large")
    assert str(cap) in above_upload_cap.json()["detail"]


def test_a_declared_length_over_the_cap_is_refused_before_a_byte_is_read(
    simulator: Proc, tmp_path: Path
) -> None:
    env = bridge_env(
        simulator, BRIDGE_SCAN_MODE="off", BRIDGE_UPLOAD_DIR=str(tmp_path), BRIDGE_UPLOAD_MAX_BYTES="1024"
    )
    with running(start_bridge(env)) as bridge:
        head = (
            f"POST /v1/uploads HTTP/1.1\r\nHost: 127.0.0.1:{bridge.port}\r\nContent-Length: {10**9}\r\n"
            "Content-Type: multipart/form-data; boundary=b0undary\r\nConnection: close\r\n\r\n"
        )
        # Headers only: the answer comes without the body ever being sent.
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
            sock.sendall(head.encode("latin-1"))
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    status_line, rest = answer.split(b"\r\n", 1)
    headers, body = rest.split(b"\r\n\r\n", 1)
    assert status_line.split(b" ")[1] == b"413", answer[:300]
    assert b"content-type: application/problem+json" in headers.lower()
    assert json.loads(body) == {
        "type": "too_large",
        "title": "Request Entity Too Large",
        "status": 413,
        "detail": "the file is larger than the upload limit (1024 bytes)",
    }
