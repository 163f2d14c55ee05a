"""Legacy SSE sessions shared between processes (bridge/http/sse_sharing.py): two "processes" in
this one, each with its own tap, store client and broadcast on one real Redis. The SDK's `GET /sse`
and `POST /messages/` handlers are stood in for by what the sharing relies on: the endpoint event
that names the session, and a handler that takes a message."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.http.sse_sessions import SseSessionTap
from bridge.http.sse_sharing import SseSessionSharing
from bridge.mcp.sessions import Owner, user_of
from bridge.store.base import ContextStore
from bridge.store.broadcast import RedisBroadcast
from bridge.store.pool import RedisPool
from bridge.store.records import SessionRecord, new_session_id
from bridge.store.redis import RedisStore
from tests.procs import free_port

TTL = 60
ALICE: Owner = ("alice", None, None)
BOB: Owner = ("bob", None, None)


@dataclass
class Backend:
    """What the sharing takes from the runtime (bridge.mcp.sessions.SessionBackend)."""

    store: ContextStore
    broadcast: RedisBroadcast
    session_ttl_seconds: int = TTL


class SdkMessages:
    """Stands in for the SDK's `POST /messages/` handler: takes each message it is given."""

    def __init__(self) -> None:
        self.given, self.taken = anyio.create_memory_object_stream[tuple[Scope, bytes]](16)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = (await receive())["body"]
        await self.given.send((scope, body))
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"Accepted"})

    async def next(self) -> tuple[Scope, bytes]:
        with anyio.fail_after(10):
            return await self.taken.receive()


@dataclass
class Process:
    backend: Backend
    tap: SseSessionTap
    sdk: SdkMessages
    route: ASGIApp  # its `POST /messages/`


@dataclass
class Stream:
    """One client's `GET /sse` on a process: what it received, and how to end it."""

    session: str = field(default_factory=new_session_id)
    received: list[bytes] = field(default_factory=list)
    record_when_announced: SessionRecord | None = None
    end: anyio.Event = field(default_factory=anyio.Event)


def process(name: str, url: str) -> Process:
    backend = Backend(RedisStore.from_url(url, 3600), RedisBroadcast(RedisPool.from_url(url)))
    tap, sdk = SseSessionTap(), SdkMessages()
    sharing = SseSessionSharing(tap, lambda: backend, lambda: name)
    route = sharing.messages_app(sdk)
    sharing.listen()
    return Process(backend, tap, sdk, route)


@contextlib.asynccontextmanager
async def two_processes(url: str) -> AsyncIterator[tuple[Process, Process]]:
    """Two processes hearing each other's broadcasts (subscribed once the block starts)."""
    first, second = process("first", url), process("second", url)
    heard = anyio.Event()

    async def probe(message: dict[str, Any]) -> None:
        heard.set()

    first.backend.broadcast.on("probe", probe)
    try:
        async with anyio.create_task_group() as tasks:
            for each in (first, second):
                tasks.start_soon(each.backend.broadcast.run)
            with anyio.fail_after(10):
                while not heard.is_set():
                    await second.backend.broadcast.publish({"kind": "probe"})
                    await anyio.sleep(0.05)
            yield first, second
            tasks.cancel_scope.cancel()
    finally:
        for each in (first, second):
            await each.backend.store.aclose()


def sdk_stream(stream: Stream) -> ASGIApp:
    """Stands in for the SDK's `GET /sse`: the endpoint event first, then the stream stays open."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        endpoint = f"event: endpoint\r\ndata: /messages/?session_id={stream.session}\r\n\r\n"
        await send({"type": "http.response.body", "body": endpoint.encode(), "more_body": True})
        await stream.end.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


@contextlib.asynccontextmanager
async def open_stream(holder: Process, owner: Owner) -> AsyncIterator[Stream]:
    """A client's legacy stream held by `holder` for the block (its endpoint event received)."""
    stream = Stream()
    announced = anyio.Event()

    async def client(message: Message) -> None:
        body = message.get("body", b"")
        if b"event: endpoint" in body:
            stream.record_when_announced = await holder.backend.store.load_session(stream.session, TTL)
            announced.set()
        stream.received.append(body)

    scope: Scope = {"type": "http", "method": "GET", "path": "/sse", "headers": [], "user": user_of(owner)}
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(holder.tap.serve, sdk_stream(stream), scope, _nothing, client)
        with anyio.fail_after(10):
            await announced.wait()
        yield stream
        stream.end.set()


async def _nothing() -> Message:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def post(to: Process, session: str, owner: Owner, message: dict[str, Any]) -> tuple[int, bytes]:
    """`POST /messages/?session_id=...` on a process: its status and body."""
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/messages/",
        "query_string": f"session_id={session}".encode(),
        "headers": [(b"host", b"bridge"), (b"content-type", b"application/json")],
        "user": user_of(owner),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": json.dumps(message).encode(), "more_body": False}

    async def send(reply: Message) -> None:
        sent.append(reply)

    await to.route(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def listing(request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}


async def test_a_stream_is_recorded_for_its_owner_before_it_is_announced_and_forgotten_when_it_ends(
    redis_url: str,
) -> None:
    async with two_processes(redis_url) as (first, _):
        async with open_stream(first, ALICE) as stream:
            pass
        with anyio.fail_after(10):
            while await first.backend.store.load_session(stream.session, TTL) is not None:
                await anyio.sleep(0.02)
    record = stream.record_when_announced
    assert record is not None and (record.kind, record.owner, record.instance) == ("sse", ALICE, "first")


async def test_a_post_landing_on_another_process_is_accepted_there_and_handed_to_the_holder(
    redis_url: str,
) -> None:
    async with two_processes(redis_url) as (first, second), open_stream(first, ALICE) as stream:
        answer = await post(second, stream.session, ALICE, listing(1))
        scope, body = await first.sdk.next()
    assert answer == (202, b"Accepted")
    assert json.loads(body) == listing(1)
    assert scope["path"] == "/messages/" and scope["query_string"] == f"session_id={stream.session}".encode()
    assert scope["user"].access_token.client_id == "alice"  # the SDK checks the credential again


async def test_a_post_with_another_credential_is_not_found_and_goes_nowhere(redis_url: str) -> None:
    async with two_processes(redis_url) as (first, second), open_stream(first, ALICE) as stream:
        stolen = await post(second, stream.session, BOB, listing(1))
        await post(second, stream.session, ALICE, listing(2))
        _, body = await first.sdk.next()  # the broadcast keeps order: the first one to arrive
    assert stolen == (404, b"Could not find session")
    assert json.loads(body)["id"] == 2


async def test_a_post_for_a_stream_no_process_holds_is_not_found(redis_url: str) -> None:
    async with two_processes(redis_url) as (_, second):
        assert await post(second, new_session_id(), ALICE, listing(1)) == (404, b"Could not find session")


async def test_with_the_store_down_a_post_for_another_process_says_to_connect_again(
    redis_url: str,
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    async with two_processes(redis_url) as (first, _), open_stream(first, ALICE) as stream:
        lonely = process("lonely", down)
        try:
            status, body = await post(lonely, stream.session, ALICE, listing(1))
        finally:
            await lonely.backend.store.aclose()
    assert status == 404 and b"Connect again (GET /sse)" in body


async def test_a_tool_call_forwarded_to_a_draining_holder_is_refused_on_its_stream(
    redis_url: str,
) -> None:
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_agents"}}
    async with two_processes(redis_url) as (first, second), open_stream(first, ALICE) as stream:
        await post(second, stream.session, ALICE, listing(1))
        await first.sdk.next()  # unanswered: it keeps the draining stream open
        await first.tap.drain()
        assert await post(second, stream.session, ALICE, call) == (202, b"Accepted")
        with anyio.fail_after(10):
            while not any(b"shutting_down" in chunk for chunk in stream.received):
                await anyio.sleep(0.02)
    [refusal] = [chunk for chunk in stream.received if b"shutting_down" in chunk]
    assert json.loads(refusal.split(b"data: ", 1)[1])["id"] == 2
    with pytest.raises(anyio.WouldBlock):
        first.sdk.taken.receive_nowait()  # the call never reached the SDK
