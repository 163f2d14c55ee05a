"""Helpers for driving the Dust simulator over real HTTP (the session `simulator` fixture)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

KEY = "sk-test123"
AUTH = {"Authorization": f"Bearer {KEY}"}
W = "/api/v1/w/demo"
CONTEXT = {"username": "tester", "timezone": "Europe/Paris"}
TERMINAL = {"agent_message_success", "agent_error", "agent_generation_cancelled"}


# ---------------------------------------------------------------- helpers


async def configure(http: httpx2.AsyncClient, **patch: Any) -> dict[str, Any]:
    resp = await http.post("/_sim/faults", json=patch)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def stats(http: httpx2.AsyncClient) -> dict[str, Any]:
    return dict((await http.get("/_sim/stats")).json())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll `check` until it is true (short steps, hard deadline)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def assert_error(resp: httpx2.Response, status: int, error_type: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["type"] == error_type
    assert isinstance(resp.json()["error"]["message"], str)


def assert_dust_error(resp: httpx2.Response, status: int, error_type: str, message: str) -> None:
    """Dust's exact error: status, `error.type` and `error.message`."""
    assert resp.status_code == status, resp.text
    assert resp.json() == {"error": {"type": error_type, "message": message}}


async def start(http: httpx2.AsyncClient, content: str, agent: str, **extra: Any) -> tuple[str, str]:
    """Create a conversation mentioning `agent`; returns (conversation sId, agent message sId)."""
    body = {
        "message": {"content": content, "mentions": [{"configurationId": agent}], "context": CONTEXT},
        **extra,
    }
    resp = await http.post(f"{W}/assistant/conversations", json=body)
    assert resp.status_code == 200, resp.text
    conversation, user_message = resp.json()["conversation"], resp.json()["message"]
    replies = [v[-1] for v in conversation["content"] if v[-1]["type"] == "agent_message"]
    reply = next(r for r in replies if r["parentMessageId"] == user_message["sId"])
    assert reply["status"] == "created"
    return conversation["sId"], reply["sId"]


def events_url(c_id: str, m_id: str, prefix: str = "/api/v1") -> str:
    return f"{prefix}/w/demo/assistant/conversations/{c_id}/messages/{m_id}/events"


async def frames(resp: httpx2.Response) -> AsyncIterator[list[str]]:
    """SSE frames as lists of lines."""
    lines: list[str] = []
    async for line in resp.aiter_lines():
        if line:
            lines.append(line)
        elif lines:
            yield lines
            lines = []


@dataclass
class Connection:
    """What one SSE connection delivered."""

    status: int = 0
    handshake_first: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    broken: bool = False

    @property
    def types(self) -> list[str]:
        return [e["data"]["type"] for e in self.events]


async def read_connection(
    http: httpx2.AsyncClient, c_id: str, m_id: str, last_event_id: str | None = None
) -> Connection:
    """Read one connection to its end (done, clean close or broken)."""
    conn = Connection()
    params = {"lastEventId": last_event_id} if last_event_id else {}
    async with http.stream("GET", events_url(c_id, m_id), params=params, follow_redirects=True) as resp:
        conn.status = resp.status_code
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        first = True
        try:
            async for frame in frames(resp):
                if frame == ["event: dust-handshake", "data: {}"]:
                    conn.handshake_first = first
                elif frame == ["data: done"]:
                    conn.done = True
                else:
                    assert len(frame) == 1 and frame[0].startswith("data: "), frame  # no comments, ids, retry
                    conn.events.append(json.loads(frame[0].removeprefix("data: ")))
                first = False
        except httpx2.RemoteProtocolError:
            conn.broken = True
    return conn


async def read_answer(http: httpx2.AsyncClient, c_id: str, m_id: str) -> list[Connection]:
    """Reconnect with lastEventId, like the SDK, until a terminal event arrives."""
    connections: list[Connection] = []
    last: str | None = None
    while not any(c.types and c.types[-1] in TERMINAL for c in connections):
        assert len(connections) < 50, "too many connections"
        conn = await read_connection(http, c_id, m_id, last)
        connections.append(conn)
        if conn.events:
            last = conn.events[-1]["eventId"]
    return connections


def answer_text(events: list[dict[str, Any]], classification: str = "tokens") -> str:
    return "".join(
        e["data"]["text"]
        for e in events
        if e["data"]["type"] == "generation_tokens" and e["data"]["classification"] == classification
    )


def all_events(connections: list[Connection]) -> list[dict[str, Any]]:
    return [e for c in connections for e in c.events]
