"""The simulator's body capture (`GET /_sim/bodies`): it records what clients POST to `/api/...`
without changing what the routes receive or how responses stream."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx2
from starlette.types import Message, Receive, Scope, Send

from bridge.simulator.capture import BodyCapture
from bridge.simulator.options import SimulatorOptions
from bridge.simulator.state import Simulator
from tests.procs import TEST_DUST_KEY, Proc

AUTH = {"Authorization": f"Bearer {TEST_DUST_KEY}"}


def bodies(simulator: Proc) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = httpx2.get(f"{simulator.url}/_sim/bodies", timeout=5).json()["bodies"]
    return recorded


def test_json_bodies_are_recorded_and_still_reach_the_route(fresh_simulator: Proc) -> None:
    body = {"contentType": "text/plain", "fileName": "a.txt", "fileSize": 5, "useCase": "conversation"}
    answer = httpx2.post(f"{fresh_simulator.url}/api/v1/w/demo/files", json=body, headers=AUTH, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["file"]["fileName"] == "a.txt"  # the route parsed the very body
    [entry] = bodies(fresh_simulator)
    assert entry["method"] == "POST" and entry["path"] == "/api/v1/w/demo/files"
    assert entry["json"] == body and entry["status"] == 200
    assert entry["content_type"].startswith("application/json")


def test_multipart_uploads_are_recorded_as_metadata_and_the_bytes_still_arrive(fresh_simulator: Proc) -> None:
    data = b"hello capture\n" * 1000
    created = httpx2.post(
        f"{fresh_simulator.url}/api/v1/w/demo/files",
        json={
            "contentType": "text/plain",
            "fileName": "a.txt",
            "fileSize": len(data),
            "useCase": "conversation",
        },
        headers=AUTH,
        timeout=5,
    ).json()["file"]
    uploaded = httpx2.post(
        created["uploadUrl"], files={"file": ("a.txt", data, "text/plain")}, headers=AUTH, timeout=10
    )
    assert uploaded.status_code == 200, uploaded.text
    [stored] = httpx2.get(f"{fresh_simulator.url}/_sim/files", timeout=5).json()["files"]
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    upload = bodies(fresh_simulator)[-1]
    assert upload["multipart"] is True and upload["status"] == 200
    assert upload["content_type"].startswith("multipart/form-data; boundary=")
    assert "json" not in upload and "text" not in upload


def test_gets_and_control_routes_are_not_recorded_and_reset_clears_the_record(fresh_simulator: Proc) -> None:
    httpx2.get(f"{fresh_simulator.url}/api/v1/w/demo/assistant/agent_configurations", headers=AUTH, timeout=5)
    httpx2.post(f"{fresh_simulator.url}/_sim/faults", json={"token_delay_ms": 1}, timeout=5)
    assert bodies(fresh_simulator) == []
    # Recorded even when refused before any route (here: no API key).
    refused = httpx2.post(f"{fresh_simulator.url}/api/v1/w/demo/files", json={"x": 1}, timeout=5)
    assert refused.status_code == 401
    assert [(b["json"], b["status"]) for b in bodies(fresh_simulator)] == [({"x": 1}, 401)]
    httpx2.post(f"{fresh_simulator.url}/_sim/reset", timeout=5).raise_for_status()
    assert bodies(fresh_simulator) == []


# --- in process: bounds, invalid JSON, streamed answers ---------------------------------------


async def call(
    capture: BodyCapture, path: str, chunks: list[bytes], headers: dict[str, str]
) -> list[Message]:
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    queue: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await capture(scope, receive, send)
    return sent


async def echo_in_parts(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body and streams it back in three messages."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 201, "headers": []})
    for part in (b"got:", body, b""):
        await send({"type": "http.response.body", "body": part, "more_body": part != b""})


async def test_the_route_gets_the_body_whole_and_the_answer_streams_message_by_message() -> None:
    sim = Simulator(SimulatorOptions())
    capture = BodyCapture(echo_in_parts, sim=sim)
    sent = await call(
        capture, "/api/v1/w/demo/x", [b'{"a": ', b"[1, 2]}"], {"content-type": "application/json"}
    )
    assert [m.get("body") for m in sent[1:]] == [b"got:", b'{"a": [1, 2]}', b""]
    [entry] = list(sim.stats.bodies)
    assert entry["json"] == {"a": [1, 2]} and entry["status"] == 201 and entry["size"] == 13


async def test_invalid_json_is_recorded_as_text_and_the_record_is_bounded() -> None:
    sim = Simulator(SimulatorOptions())
    kept = sim.stats.bodies.maxlen or 0
    assert kept == 1000
    capture = BodyCapture(echo_in_parts, sim=sim)
    await call(capture, "/api/v1/w/demo/x", [b"not json"], {"content-type": "application/json"})
    [entry] = list(sim.stats.bodies)
    assert entry["invalid_json"] is True and entry["text"] == "not json"
    for n in range(kept + 5):
        await call(capture, f"/api/v1/w/demo/{n}", [b"{}"], {"content-type": "application/json"})
    recorded = list(sim.stats.bodies)
    assert len(recorded) == kept
    assert recorded[-1]["path"] == f"/api/v1/w/demo/{kept + 4}"
    # Paths outside /api/ pass untouched and unrecorded.
    await call(capture, "/_sim/faults", [b"{}"], {"content-type": "application/json"})
    assert list(sim.stats.bodies)[-1]["path"] != "/_sim/faults"
