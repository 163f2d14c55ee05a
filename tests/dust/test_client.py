"""The Dust client against the project's Dust simulator, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from pydantic import SecretStr

from bridge.dust import (
    AgentEvent,
    CircuitBreaker,
    DownloadedFile,
    DustAuthError,
    DustBadRequest,
    DustClient,
    DustError,
    DustFileNotDownloadable,
    DustFileTooLarge,
    DustNotFound,
    DustRateLimited,
    DustServerError,
    DustStreamError,
    DustUnavailable,
    GeneratedFile,
    MessageContext,
)
from bridge.dust.pauses import PendingAction
from bridge.simulator.agents import filemaker_answer
from bridge.simulator.demo_files import chart_png, report_csv
from tests.procs import Proc, free_port

WORKSPACE = "demo"
KEY = "sk-testKey0123456789"
CONTEXT = MessageContext(username="tester", timezone="Europe/Paris")


@dataclass
class Sim:
    """The simulator's control API."""

    url: str
    control: httpx2.AsyncClient

    async def faults(self, **options: Any) -> None:
        response = await self.control.post(f"{self.url}/_sim/faults", json=options)
        response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        response = await self.control.get(f"{self.url}/_sim/stats")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def requests(self, method: str, path_part: str) -> list[dict[str, Any]]:
        return [
            r
            for r in (await self.stats())["requests"]
            if r.get("method") == method and path_part in str(r.get("path", ""))
        ]

    async def wait_no_open_streams(self, timeout: float = 5.0) -> None:
        with anyio.fail_after(timeout):
            while (await self.stats())["open_streams"] != 0:
                await anyio.sleep(0.02)


@pytest.fixture
async def sim(simulator: Proc) -> AsyncIterator[Sim]:
    async with httpx2.AsyncClient(timeout=10) as control:
        (await control.post(f"{simulator.url}/_sim/reset")).raise_for_status()
        # Fast token pacing keeps the suite quick; the stream logic does not depend on it.
        (await control.post(f"{simulator.url}/_sim/faults", json={"token_delay_ms": 1})).raise_for_status()
        yield Sim(simulator.url, control)


MakeClient = Callable[..., DustClient]


@pytest.fixture
async def make_client(sim: Sim) -> AsyncIterator[MakeClient]:
    clients: list[DustClient] = []

    def make(**overrides: Any) -> DustClient:
        options: dict[str, Any] = {
            "base_url": sim.url,
            "workspace_id": WORKSPACE,
            "api_key": SecretStr(KEY),
            "timeout": 10.0,
            "reconnect_delay": 0.02,
            "breaker": CircuitBreaker(failures=50),
        }
        options.update(overrides)
        client = DustClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: MakeClient) -> DustClient:
    return make_client()


async def collect(events: AsyncIterator[AgentEvent], timeout: float = 30.0) -> list[AgentEvent]:
    with anyio.fail_after(timeout):
        return [event async for event in events]


def answer_text(events: list[AgentEvent]) -> str:
    return "".join(
        e.data["text"]
        for e in events
        if e.type == "generation_tokens" and e.data.get("classification") == "tokens"
    )


async def ask(client: DustClient, agent: str, message: str) -> tuple[str, str]:
    """Start a conversation with `agent`; returns (conversation sId, agent message sId)."""
    created = await client.create_conversation(content=message, mentions=[agent], context=CONTEXT)
    assert created.agent_message is not None
    return created.conversation.s_id, created.agent_message.s_id


# --- agents ---------------------------------------------------------------------------------------


async def test_list_and_get_agents(client: DustClient) -> None:
    agents = {agent.s_id: agent for agent in await client.list_agents()}
    assert {
        "dust",
        "echo000001",
        "slow000001",
        "research01",
        "broken0001",
        "files00001",
        "story00001",
    } <= set(agents)
    assert agents["echo000001"].name == "echo"
    assert agents["echo000001"].status == "active"
    assert [agent.s_id for agent in await client.list_agents(view="global")] == ["dust"]
    echo = await client.get_agent("echo000001")
    assert echo.name == "echo"
    assert echo.picture_url


async def test_unknown_agent_is_not_found(client: DustClient) -> None:
    with pytest.raises(DustNotFound) as caught:
        await client.get_agent("nosuchagnt")
    assert caught.value.status == 404
    assert caught.value.type == "agent_configuration_not_found"


async def test_ids_cannot_escape_their_path_segment(client: DustClient) -> None:
    with pytest.raises(DustNotFound):
        await client.get_agent("../../files")


async def test_auth_error_never_shows_the_key(sim: Sim, make_client: MakeClient) -> None:
    await sim.faults(api_key="sk-theRightOne")
    wrong = "sk-wrongKeyABCDEF123"
    client = make_client(api_key=SecretStr(wrong))
    with pytest.raises(DustAuthError) as caught:
        await client.list_agents()
    assert caught.value.status == 401
    for text in (str(caught.value), repr(caught.value)):
        assert wrong not in text
        assert "wrongKeyABCDEF123" not in text
    with pytest.raises(DustAuthError):
        await client.probe()
    assert client.breaker_state == "closed"  # a 4xx proves Dust is up


async def test_probe(client: DustClient) -> None:
    await client.probe()


# --- conversations and streaming ----------------------------------------------------------------


@pytest.mark.parametrize("redirect_sse", [True, False])
@pytest.mark.parametrize("handshake", [True, False])
async def test_create_conversation_and_stream_exact_text(
    sim: Sim, client: DustClient, redirect_sse: bool, handshake: bool
) -> None:
    await sim.faults(redirect_sse=redirect_sse, handshake=handshake)
    created = await client.create_conversation(
        content="hello there", mentions=["echo000001"], context=CONTEXT, title="A test"
    )
    assert created.user_message.content == "hello there"
    assert created.agent_message is not None
    assert created.agent_message.parent_message_id == created.user_message.s_id
    assert created.agent_message.configuration_id == "echo000001"
    assert created.conversation.title == "A test"

    events = await collect(client.stream_agent_events(created.conversation.s_id, created.agent_message.s_id))
    assert answer_text(events) == "Echo (turn 1): hello there"
    assert events[-1].type == "agent_message_success"
    assert events[-1].data["message"]["content"] == "Echo (turn 1): hello there"
    assert len({e.event_id for e in events}) == len(events)

    conversation = await client.get_conversation(created.conversation.s_id)
    answer = conversation.agent_message_for(created.user_message.s_id)
    assert answer is not None
    assert answer.status == "succeeded"
    assert answer.content == "Echo (turn 1): hello there"
    await sim.wait_no_open_streams()
    if redirect_sse:
        assert await sim.requests("GET", "/api/sse/v1/")


async def test_the_sse_redirect_is_remembered_and_forgotten_when_it_stops_working(
    sim: Sim, client: DustClient
) -> None:
    for turn in range(2):
        conversation_id, message_id = await ask(client, "echo000001", f"turn {turn}")
        assert answer_text(await collect(client.stream_agent_events(conversation_id, message_id)))
    # One redirect hop on /api/v1 for the first stream; the second went straight to /api/sse.
    assert len(await sim.requests("GET", "/api/v1/w/demo/assistant/conversations/")) == 1
    assert len(await sim.requests("GET", "/api/sse/v1/")) == 2
    # A deployment without the SSE base: the remembered base answers 404, the client falls back.
    await sim.faults(
        fail_next=[
            {"match": "/api/sse/", "method": "GET", "status": 404, "type": "message_not_found", "count": 1}
        ]
    )
    conversation_id, message_id = await ask(client, "echo000001", "after the 404")
    events = await collect(client.stream_agent_events(conversation_id, message_id))
    assert answer_text(events) == "Echo (turn 1): after the 404"


async def test_post_message_continues_the_conversation(client: DustClient) -> None:
    conversation_id, message_id = await ask(client, "echo000001", "first")
    assert answer_text(await collect(client.stream_agent_events(conversation_id, message_id))) == (
        "Echo (turn 1): first"
    )
    posted = await client.post_message(
        conversation_id, content="second", mentions=["echo000001"], context=CONTEXT
    )
    assert posted.user_message.content == "second"
    assert len(posted.agent_messages) == 1
    reply = posted.agent_messages[0]
    assert reply.parent_message_id == posted.user_message.s_id
    events = await collect(client.stream_agent_events(conversation_id, reply.s_id))
    assert answer_text(events) == "Echo (turn 2): second"

    conversation = await client.get_conversation(conversation_id)
    kinds = [type(m).__name__ for m in conversation.current_messages()]
    assert kinds == ["UserMessage", "AgentMessage", "UserMessage", "AgentMessage"]


async def test_agent_error_is_a_terminal_event(client: DustClient) -> None:
    conversation_id, message_id = await ask(client, "broken0001", "please")
    events = await collect(client.stream_agent_events(conversation_id, message_id))
    assert events[-1].type == "agent_error"
    assert events[-1].is_terminal
    assert events[-1].data["error"]["code"] == "model_error"


async def test_unknown_message_stream_is_not_found(client: DustClient) -> None:
    conversation_id, _ = await ask(client, "echo000001", "hi")
    with pytest.raises(DustNotFound):
        await collect(client.stream_agent_events(conversation_id, "nosuchmsg0"))
    with pytest.raises(DustNotFound):
        await client.get_conversation("nosuchconv")


@pytest.mark.parametrize("redirect_sse", [True, False])
async def test_reconnects_after_events_per_connection(
    sim: Sim, client: DustClient, redirect_sse: bool
) -> None:
    await sim.faults(events_per_connection=5, chunk_chars=25, redirect_sse=redirect_sse)
    conversation_id, message_id = await ask(client, "story00001", "the sea")
    events = await collect(client.stream_agent_events(conversation_id, message_id))
    final = events[-1]
    assert final.type == "agent_message_success"
    text = answer_text(events)
    assert text.startswith("A story about the sea. 1. The lighthouse keeper")
    assert text == final.data["message"]["content"]
    assert len({e.event_id for e in events}) == len(events)
    # Every connection replays from lastEventId; had the client not sent it, each would repeat the
    # first five (already seen) events and the stream would give up instead of finishing.
    assert (await sim.stats())["stream_connections"] >= len(events) // 5


async def test_reconnects_after_a_cut_connection(sim: Sim, client: DustClient) -> None:
    await sim.faults(cut_stream_after=3, chunk_chars=25)
    conversation_id, message_id = await ask(client, "story00001", "a cut")
    events = await collect(client.stream_agent_events(conversation_id, message_id))
    assert events[-1].type == "agent_message_success"
    assert answer_text(events) == events[-1].data["message"]["content"]
    assert len({e.event_id for e in events}) == len(events)
    assert (await sim.stats())["stream_connections"] >= 2


async def test_resume_from_a_last_event_id(sim: Sim, client: DustClient) -> None:
    await sim.faults(chunk_chars=25)
    conversation_id, message_id = await ask(client, "story00001", "resuming")
    first_part: list[AgentEvent] = []
    stream = client.stream_agent_events(conversation_id, message_id)
    async for event in stream:
        first_part.append(event)
        if len(first_part) == 4:
            break
    await stream.aclose()
    await sim.wait_no_open_streams()  # closing the generator closed the HTTP response
    rest = await collect(
        client.stream_agent_events(conversation_id, message_id, last_event_id=first_part[-1].event_id)
    )
    events = first_part + rest
    assert answer_text(events) == events[-1].data["message"]["content"]
    assert len({e.event_id for e in events}) == len(events)


async def test_silence_longer_than_the_read_timeout_reconnects(sim: Sim, make_client: MakeClient) -> None:
    await sim.faults(slow_seconds=1.5)
    client = make_client(stream_read_timeout=0.4)
    conversation_id, message_id = await ask(client, "slow000001", "wait")
    events = await collect(client.stream_agent_events(conversation_id, message_id))
    assert answer_text(events) == "Done after waiting: wait"
    assert (await sim.stats())["stream_connections"] >= 2


@contextlib.asynccontextmanager
async def counting_proxy(target_url: str) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback TCP proxy in front of `target_url`; the list holds how many connections it accepted."""
    target = httpx2.URL(target_url)
    accepted = [0]

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(target.host, target.port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted


async def test_a_finished_answer_hands_its_connection_back_to_the_pool(sim: Sim) -> None:
    # Like the relay, the consumer stops at the terminal event; the client still reads the end of
    # the response (`data: done`), so the next turn needs no new TCP (with real Dust: TLS) connection.
    async with counting_proxy(sim.url) as (url, opened), DustClient(url, WORKSPACE, SecretStr(KEY)) as client:
        for turn in range(3):
            conversation_id, message_id = await ask(client, "echo000001", f"turn {turn}")
            events = client.stream_agent_events(conversation_id, message_id)
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.is_terminal:
                        break
            assert event.type == "agent_message_success"
    assert opened == [1]


async def test_an_egress_proxy_from_the_environment_carries_every_request(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with counting_proxy(sim.url) as (proxy_url, opened):
        for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        async with DustClient(sim.url, WORKSPACE, SecretStr(KEY)) as client:
            conversation_id, message_id = await ask(client, "echo000001", "through the proxy")
            events = await collect(client.stream_agent_events(conversation_id, message_id))
        assert answer_text(events) == "Echo (turn 1): through the proxy"
        assert opened[0] >= 1
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        before = opened[0]
        async with DustClient(sim.url, WORKSPACE, SecretStr(KEY)) as client:
            await ask(client, "echo000001", "not through the proxy")
        assert opened[0] == before


async def test_cancel_ends_the_stream_although_the_socket_stays_open(sim: Sim, client: DustClient) -> None:
    await sim.faults(slow_seconds=30)
    conversation_id, message_id = await ask(client, "slow000001", "never mind")
    seen: list[AgentEvent] = []
    with anyio.fail_after(10):
        async for event in client.stream_agent_events(conversation_id, message_id):
            seen.append(event)
            if len(seen) == 1:
                await client.cancel(conversation_id, [message_id])
    assert seen[-1].type == "agent_generation_cancelled"
    stats = await sim.stats()
    assert stats["cancels"] == [{"conversationId": conversation_id, "messageIds": [message_id]}]
    await sim.wait_no_open_streams()


async def test_cancel_on_unknown_conversation(client: DustClient) -> None:
    with pytest.raises(DustNotFound):
        await client.cancel("nosuchconv", ["nosuchmsg0"])


async def test_consumer_cancellation_closes_the_stream(sim: Sim, client: DustClient) -> None:
    await sim.faults(slow_seconds=30)
    conversation_id, message_id = await ask(client, "slow000001", "cancel me")

    async def consume() -> None:
        async for _ in client.stream_agent_events(conversation_id, message_id):
            pass

    task = asyncio.create_task(consume())
    with anyio.fail_after(5):
        while (await sim.stats())["open_streams"] == 0:
            await anyio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sim.wait_no_open_streams()
    await client.cancel(conversation_id, [message_id])


# --- retries, rate limits and the breaker -------------------------------------------------------


async def test_429_burst_on_post_is_retried(sim: Sim, client: DustClient) -> None:
    await sim.faults(
        fail_next=[
            {
                "match": "/assistant/conversations",
                "method": "POST",
                "status": 429,
                "type": "rate_limit_error",
                "count": 2,
            }
        ]
    )
    conversation_id, message_id = await ask(client, "echo000001", "after the burst")
    assert len(await sim.requests("POST", "/assistant/conversations")) == 3
    assert answer_text(await collect(client.stream_agent_events(conversation_id, message_id))) == (
        "Echo (turn 1): after the burst"
    )


async def test_429_beyond_the_retries_raises_rate_limited(sim: Sim, make_client: MakeClient) -> None:
    client = make_client(max_retries=1)
    await sim.faults(
        fail_next=[
            {"match": "/files", "method": "POST", "status": 429, "type": "rate_limit_error", "count": 5}
        ]
    )
    with pytest.raises(DustRateLimited) as caught:
        await client.create_file(content_type="text/plain", file_name="a.txt", file_size=3)
    assert caught.value.type == "rate_limit_error"
    assert len(await sim.requests("POST", "/files")) == 2


async def test_500_on_post_is_not_retried(sim: Sim, client: DustClient) -> None:
    await sim.faults(
        fail_next=[{"match": "/assistant/conversations", "method": "POST", "status": 500, "count": 1}]
    )
    with pytest.raises(DustServerError) as caught:
        await ask(client, "echo000001", "once only")
    assert caught.value.status == 500
    assert len(await sim.requests("POST", "/assistant/conversations")) == 1


async def test_get_is_retried_on_503(sim: Sim, client: DustClient) -> None:
    await sim.faults(
        fail_next=[{"match": "/agent_configurations", "method": "GET", "status": 503, "count": 2}]
    )
    assert await client.list_agents()
    assert len(await sim.requests("GET", "/agent_configurations")) == 3


async def test_down_opens_the_breaker_which_fails_fast_then_recovers(
    sim: Sim, make_client: MakeClient
) -> None:
    client = make_client(max_retries=1, breaker=CircuitBreaker(failures=2, reset_seconds=0.5))
    await sim.faults(down=True)
    for _ in range(2):
        with pytest.raises((DustServerError, DustUnavailable)) as caught:
            await client.list_agents()
        assert caught.value.status == 503
    assert client.breaker_state == "open"
    before = (await sim.stats())["requests_total"]
    with pytest.raises(DustUnavailable) as fast:
        await client.list_agents()
    assert fast.value.type == "circuit_open"
    assert "failing fast" in str(fast.value)
    assert (await sim.stats())["requests_total"] == before  # nothing was sent

    await sim.faults(down=False)
    await anyio.sleep(0.55)
    assert client.breaker_state == "half_open"
    assert await client.list_agents()
    assert client.breaker_state == "closed"


async def test_stream_gives_up_after_max_reconnects(sim: Sim, make_client: MakeClient) -> None:
    client = make_client(stream_max_reconnects=3)
    conversation_id, message_id = await ask(client, "echo000001", "no stream for you")
    await sim.faults(fail_next=[{"match": "/events", "method": "GET", "status": 503, "count": 100}])
    with pytest.raises(DustStreamError) as caught:
        await collect(client.stream_agent_events(conversation_id, message_id))
    assert caught.value.type == "stream_reconnects_exhausted"
    assert "503" in str(caught.value)
    # The redirect target path also contains "/events": count the first hop only.
    attempts = [r for r in await sim.requests("GET", "/events") if "/api/v1/" in str(r.get("path"))]
    assert len(attempts) == 4


async def test_stream_auth_error_is_raised_at_once(sim: Sim, client: DustClient) -> None:
    conversation_id, message_id = await ask(client, "echo000001", "hi")
    await sim.faults(api_key="sk-someoneElse")
    with pytest.raises(DustAuthError):
        await collect(client.stream_agent_events(conversation_id, message_id))


# --- files and content fragments ----------------------------------------------------------------


async def test_file_upload_and_attach_on_create(client: DustClient) -> None:
    data = b"name,value\nalpha,1\n"
    created = await client.create_file(content_type="text/csv", file_name="data.csv", file_size=len(data))
    assert created.s_id.startswith("fil_")
    assert created.status == "created"
    assert created.upload_url
    uploaded = await client.upload_file(created, data, content_type="text/csv")
    assert uploaded.status == "ready"
    assert uploaded.file_size == len(data)

    result = await client.create_conversation(
        content="what do you see?",
        mentions=["files00001"],
        context=CONTEXT,
        content_fragments=[{"title": "data.csv", "fileId": uploaded.s_id}],
    )
    assert result.agent_message is not None
    events = await collect(client.stream_agent_events(result.conversation.s_id, result.agent_message.s_id))
    assert answer_text(events) == "I can see 1 file(s): data.csv (text/csv)"


async def test_streamed_upload_and_content_fragment(client: DustClient) -> None:
    conversation_id, message_id = await ask(client, "echo000001", "first")
    await collect(client.stream_agent_events(conversation_id, message_id))

    chunks = [b"# Notes\n", b"line two\n" * 100, b"end\n"]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    size = sum(len(c) for c in chunks)
    created = await client.create_file(
        content_type="text/markdown",
        file_name='notes "v2".md',
        file_size=size,
        conversation_id=conversation_id,
    )
    uploaded = await client.upload_file(created, body(), content_type="text/markdown")
    assert uploaded.status == "ready"

    fragment = await client.create_content_fragment(conversation_id, title="notes.md", file_id=uploaded.s_id)
    assert fragment.title == "notes.md"
    assert fragment.file_id == uploaded.s_id
    assert fragment.content_type == "text/markdown"

    posted = await client.post_message(
        conversation_id, content="and now?", mentions=["files00001"], context=CONTEXT
    )
    events = await collect(client.stream_agent_events(conversation_id, posted.agent_messages[0].s_id))
    assert answer_text(events) == "I can see 1 file(s): notes.md (text/markdown)"


async def test_an_upload_url_on_another_origin_is_not_given_the_key(sim: Sim, client: DustClient) -> None:
    # The upload carries the API key: a foreign uploadUrl (or another port of the same host) is
    # ignored and the bytes go to the file's path on Dust's own origin.
    # (Had the client followed them, the first would fail to resolve, the second be refused.)
    for foreign in ("http://upload.example.net/files/x", sim.url.rsplit(":", 1)[0] + ":1/files/x"):
        created = await client.create_file(content_type="text/plain", file_name="a.txt", file_size=3)
        assert created.upload_url and created.upload_url.startswith(sim.url)
        redirected = created.model_copy(update={"upload_url": foreign})
        uploaded = await client.upload_file(redirected, b"abc", content_type="text/plain")
        assert uploaded.status == "ready"
        assert await sim.requests("POST", f"/files/{created.s_id}")


async def test_second_upload_of_a_file_is_rejected(client: DustClient) -> None:
    created = await client.create_file(content_type="text/plain", file_name="a.txt", file_size=3)
    await client.upload_file(created, b"abc", content_type="text/plain")
    with pytest.raises(DustError) as caught:
        await client.upload_file(created, b"abc", content_type="text/plain")
    assert caught.value.status is not None and 400 <= caught.value.status < 500


# --- pauses: approvals, questions, blocked actions ------------------------------------------------


# --- downloads ----------------------------------------------------------------------------------


async def made_files(client: DustClient, message: str = "Q3 sales") -> tuple[str, dict[str, GeneratedFile]]:
    """Ask the file-maker; (conversation sId, its generated files by title) read with the models."""
    c_id, m_id = await ask(client, "filemaker1", message)
    await collect(client.stream_agent_events(c_id, m_id))
    conversation = await client.get_conversation(c_id)
    answer = conversation.agent_message_for(conversation.current_messages()[0].s_id)
    assert answer is not None and answer.content == filemaker_answer(message)
    (action,) = answer.actions
    return c_id, {f.title: f for f in action.generated_files}


async def test_download_file_follows_dusts_redirect_to_the_signed_url(sim: Sim, client: DustClient) -> None:
    _, files = await made_files(client)
    chart = files["chart.png"]
    assert chart.file_id is not None and chart.content_type == "image/png" and not chart.hidden
    got = await client.download_file(chart.file_id, max_bytes=1_000_000)
    assert got == DownloadedFile(content_type="image/png", data=chart_png("Q3 sales"), filename="chart.png")
    assert await sim.requests("GET", f"/files/{chart.file_id}")
    # Dust's own origin: the same pooled connections, key included.
    assert [r["authorization"] for r in (await sim.stats())["storage_requests"]] == [True]


async def test_a_signed_url_on_another_origin_never_gets_the_key(sim: Sim, client: DustClient) -> None:
    _, files = await made_files(client)
    port = urlsplit(sim.url).port
    await sim.faults(storage_url=f"http://localhost:{port}/_storage")  # another host name: another origin
    chart = files["chart.png"].file_id
    assert chart is not None
    got = await client.download_file(chart, max_bytes=1_000_000)
    assert got.data == chart_png("Q3 sales")
    (storage,) = (await sim.stats())["storage_requests"]
    assert storage["authorization"] is False and storage["status"] == 200


async def test_a_tool_output_file_is_refused_but_read_by_its_conversation_path(client: DustClient) -> None:
    c_id, files = await made_files(client)
    data = files["data.csv"]
    assert data.file_id is not None and data.snippet is None
    with pytest.raises(DustFileNotDownloadable) as refused:
        await client.download_file(data.file_id, max_bytes=1_000_000)
    assert refused.value.status == 400 and refused.value.type == "invalid_request_error"
    assert refused.value.message == "The file use case is not supported by the API."
    assert isinstance(refused.value, DustBadRequest) and refused.value.code == "file_not_downloadable"
    assert "API key" in refused.value.for_user()

    got = await client.download_conversation_file(c_id, f"conversation/{data.title}", max_bytes=10_000)
    assert got == DownloadedFile(content_type="text/csv", data=report_csv("Q3 sales"), filename=None)


async def test_downloads_stop_at_the_byte_limit(client: DustClient) -> None:
    c_id, files = await made_files(client)
    chart = files["chart.png"].file_id
    assert chart is not None
    size = len(chart_png("Q3 sales"))
    assert (await client.download_file(chart, max_bytes=size)).data == chart_png("Q3 sales")
    with pytest.raises(DustFileTooLarge) as caught:
        await client.download_file(chart, max_bytes=size - 1)
    assert caught.value.type == "file_too_large" and caught.value.code == "file_too_large"
    with pytest.raises(DustFileTooLarge):
        await client.download_conversation_file(c_id, "conversation/data.csv", max_bytes=10)


async def test_download_refusals_are_dust_errors(client: DustClient) -> None:
    c_id, _ = await made_files(client)
    with pytest.raises(DustNotFound):
        await client.download_file("fil_nothing00", max_bytes=100)
    with pytest.raises(DustNotFound):
        await client.download_conversation_file(c_id, "conversation/missing.csv", max_bytes=100)
    with pytest.raises(DustBadRequest) as bad:
        await client.download_conversation_file(c_id, "project/data.csv", max_bytes=100)
    assert bad.value.status == 400 and not isinstance(bad.value, DustFileNotDownloadable)
    for path in ("conversation/../x", "conversation//x", "./conversation/x", ""):
        with pytest.raises(ValueError):
            await client.download_conversation_file(c_id, path, max_bytes=100)


@contextlib.asynccontextmanager
async def fake_dust_and_storage(location: str | None = None) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A Dust whose file route redirects to a storage on another port (or to `location`); the
    storage streams 5,000 bytes chunked, without a Content-Length. Yields (Dust's URL, storage heads)."""
    heads: list[bytes] = []

    async def storage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            writer.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    storage_server = await asyncio.start_server(storage, "127.0.0.1", 0)
    target = (
        location
        if location is not None
        else f"http://127.0.0.1:{storage_server.sockets[0].getsockname()[1]}/obj?sig=1"
    )

    async def dust(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    dust_server = await asyncio.start_server(dust, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{dust_server.sockets[0].getsockname()[1]}", heads
    finally:
        for server in (dust_server, storage_server):
            server.close()
            await server.wait_closed()


async def test_a_chunked_download_is_cut_at_the_limit_and_the_key_stays_home() -> None:
    async with fake_dust_and_storage() as (url, heads), DustClient(url, WORKSPACE, SecretStr(KEY)) as client:
        got = await client.download_file("fil_x", max_bytes=5000)
        assert got == DownloadedFile(content_type="text/csv", data=b"x" * 5000, filename=None)
        with pytest.raises(DustFileTooLarge):
            await client.download_file("fil_x", max_bytes=2500)
    assert len(heads) == 2
    for head in heads:
        assert b"authorization" not in head.lower() and KEY.encode() not in head
        assert b"\r\nuser-agent: dust-mcp-bridge/" in head.lower()


@pytest.mark.parametrize("location", ["ftp://files.example.net/x", "", "javascript:alert(1)"])
async def test_a_redirect_to_anything_but_http_is_refused(location: str) -> None:
    async with (
        fake_dust_and_storage(location) as (url, heads),
        DustClient(url, WORKSPACE, SecretStr(KEY)) as client,
    ):
        with pytest.raises(DustServerError) as caught:
            await client.download_file("fil_x", max_bytes=5000)
    assert caught.value.type == "bad_redirect" and not heads


async def until_paused(
    client: DustClient, conversation_id: str, message_id: str
) -> tuple[PendingAction, str]:
    """Follow the message until it pauses: the pending action and the id of its event."""
    events = client.stream_agent_events(conversation_id, message_id)
    try:
        with anyio.fail_after(15):
            async for event in events:
                pending = PendingAction.from_event(event.data)
                if pending is not None:
                    return pending, event.event_id
    finally:
        await events.aclose()
    raise AssertionError("the message ended without pausing")


async def rest_of(client: DustClient, conversation_id: str, message_id: str, after: str) -> list[AgentEvent]:
    return await collect(client.stream_agent_events(conversation_id, message_id, last_event_id=after))


@pytest.fixture
async def paused_client(sim: Sim, client: DustClient) -> DustClient:
    # A paused message's stream is quiet: short connections keep the reconnects quick.
    await sim.faults(connection_lifetime_seconds=0.3)
    return client


async def test_validate_action_approves_and_the_message_goes_on_to_its_answer(
    paused_client: DustClient,
) -> None:
    client = paused_client
    c_id, m_id = await ask(client, "approve001", "quarterly numbers")
    pending, after = await until_paused(client, c_id, m_id)
    assert (pending.kind, pending.conversation_id, pending.message_id) == ("approval", c_id, m_id)
    await client.validate_action(pending.conversation_id, pending.message_id, pending.action_id, "approved")
    events = await rest_of(client, c_id, m_id, after)
    assert answer_text(events) == "Email sent to team@example.com: quarterly numbers"


async def test_a_rejected_action_ends_with_the_agent_saying_so(paused_client: DustClient) -> None:
    client = paused_client
    c_id, m_id = await ask(client, "approve001", "quarterly numbers")
    pending, after = await until_paused(client, c_id, m_id)
    await client.validate_action(c_id, m_id, pending.action_id, "rejected")
    events = await rest_of(client, c_id, m_id, after)
    assert answer_text(events) == "The email was not sent: the action was rejected."


async def test_validate_action_refusals_are_bad_request_not_found_and_server_errors(
    paused_client: DustClient,
) -> None:
    client = paused_client
    c_id, m_id = await ask(client, "approve001", "quarterly numbers")
    pending, _ = await until_paused(client, c_id, m_id)
    with pytest.raises(DustNotFound) as unknown_action:
        await client.validate_action(c_id, m_id, "act_nosuchaction", "approved")
    assert unknown_action.value.type == "action_not_found"
    with pytest.raises(DustNotFound) as unknown_conversation:
        await client.validate_action("nosuchconv", m_id, pending.action_id, "approved")
    assert unknown_conversation.value.type == "conversation_not_found"
    # Dust looks the message up with an assertion: an unknown one is an unhandled 500.
    with pytest.raises(DustServerError):
        await client.validate_action(c_id, "nosuchmsg0", pending.action_id, "approved")
    await client.validate_action(c_id, m_id, pending.action_id, "approved")
    with pytest.raises(DustBadRequest) as twice:
        await client.validate_action(c_id, m_id, pending.action_id, "approved")
    assert twice.value.type == "action_not_blocked"


async def test_answer_question_sends_option_indexes_and_the_free_text(
    sim: Sim, paused_client: DustClient
) -> None:
    client = paused_client
    c_id, m_id = await ask(client, "question01", "which one")
    pending, after = await until_paused(client, c_id, m_id)
    assert pending.kind == "question" and pending.question is not None
    await client.answer_question(
        c_id, m_id, pending.action_id, selected_options=[0, 2], custom_response="soon"
    )
    events = await rest_of(client, c_id, m_id, after)
    assert answer_text(events) == "You chose: Summary, Table (note: soon)"
    bodies = (await sim.control.get(f"{sim.url}/_sim/bodies")).json()["bodies"]
    assert bodies[-1]["json"] == {
        "actionId": pending.action_id,
        "answer": {"selectedOptions": [0, 2], "customResponse": "soon"},
    }


async def test_blocked_actions_lists_the_waiting_actions_until_they_are_answered(
    sim: Sim, paused_client: DustClient
) -> None:
    client = paused_client
    c_id, m_id = await ask(client, "auth000001", "roadmap")
    pending, after = await until_paused(client, c_id, m_id)
    [listed] = await client.blocked_actions(c_id)
    assert (listed.kind, listed.action_id, listed.message_id) == ("personal_auth", pending.action_id, m_id)
    assert listed.server == "Google Drive" and listed.auth_subject == "google_drive"
    (await sim.control.post(f"{sim.url}/_sim/connect")).raise_for_status()
    assert await client.blocked_actions(c_id) == []
    events = await rest_of(client, c_id, m_id, after)
    assert answer_text(events) == "Found 2 documents in Google Drive for: roadmap"
    with pytest.raises(DustNotFound):
        await client.blocked_actions("nosuchconv")


async def test_a_sub_agents_approval_answered_on_its_own_ids_lets_the_caller_finish(
    paused_client: DustClient,
) -> None:
    client = paused_client
    c_id, m_id = await ask(client, "delegate01", "board minutes")
    pending, after = await until_paused(client, c_id, m_id)
    assert (pending.conversation_id, pending.message_id) != (c_id, m_id)
    # From the caller's conversation, Dust nests the sub-agent's action under run_agent: still found,
    # with the sub-agent's own conversation and message.
    [nested] = await client.blocked_actions(c_id)
    assert (nested.action_id, nested.conversation_id, nested.message_id) == (
        pending.action_id,
        pending.conversation_id,
        pending.message_id,
    )
    assert [p.action_id for p in await client.blocked_actions(pending.conversation_id)] == [pending.action_id]
    await client.validate_action(pending.conversation_id, pending.message_id, pending.action_id, "approved")
    events = await rest_of(client, c_id, m_id, after)
    assert answer_text(events) == "The sub-agent finished: Email sent to team@example.com: board minutes"


# --- unreachable Dust (no simulator needed) -----------------------------------------------------


def content_length(head: bytes) -> int:
    """The Content-Length of a request head (0 without one)."""
    lines = head.split(b"\r\n")
    return next(
        (int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")), 0
    )


@dataclass
class Captured:
    head: bytes
    body: bytes


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[tuple[int, list[Captured]]]:
    """A TCP server that reads each request and never answers; yields (port, requests seen)."""
    seen: list[Captured] = []
    handlers: list[asyncio.Task[Any]] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        writers.append(writer)
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(Captured(head, await reader.readexactly(content_length(head))))
            await reader.read()  # hold the connection open until the client gives up

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_post_that_timed_out_is_never_retried_but_get_is() -> None:
    async with black_hole() as (port, seen):
        client = DustClient(f"http://127.0.0.1:{port}", WORKSPACE, SecretStr(KEY), timeout=0.3, max_retries=2)
        async with client:
            with pytest.raises(DustUnavailable) as caught:
                await ask(client, "echo000001", "did it arrive?")
            assert caught.value.type == "timeout"
            assert len(seen) == 1
            assert seen[0].head.startswith(b"POST /api/v1/w/demo/assistant/conversations ")
            assert KEY not in str(caught.value) and KEY not in repr(caught.value)
            seen.clear()
            with pytest.raises(DustUnavailable):
                await client.list_agents()
            assert len(seen) == 3


async def test_request_headers_and_create_body() -> None:
    async with black_hole() as (port, seen):
        client = DustClient(f"http://127.0.0.1:{port}", WORKSPACE, SecretStr(KEY), timeout=0.3, max_retries=0)
        async with client:
            with pytest.raises(DustUnavailable):
                await client.create_conversation(
                    content="hi",
                    mentions=["echo000001"],
                    context=MessageContext(username="tester", timezone="UTC", email="t@example.com"),
                    content_fragments=[{"title": "a.txt", "fileId": "fil_1"}],
                )
    head = seen[0].head.lower()
    assert b"\r\nauthorization: bearer " + KEY.lower().encode() + b"\r\n" in head
    assert b"\r\nuser-agent: dust-mcp-bridge/" in head
    assert b"\r\ncontent-type: application/json\r\n" in head
    assert json.loads(seen[0].body) == {
        "title": None,
        "visibility": "unlisted",
        "blocking": False,
        "message": {
            "content": "hi",
            "mentions": [{"configurationId": "echo000001"}],
            "context": {"username": "tester", "timezone": "UTC", "origin": "api", "email": "t@example.com"},
        },
        "contentFragments": [{"title": "a.txt", "fileId": "fil_1"}],
    }


async def test_connection_refused_is_unavailable_and_feeds_the_breaker() -> None:
    port = free_port()  # nothing listens there
    breaker = CircuitBreaker(failures=2, reset_seconds=60)
    async with DustClient(
        f"http://127.0.0.1:{port}", WORKSPACE, SecretStr(KEY), max_retries=1, breaker=breaker
    ) as client:
        for _ in range(2):
            with pytest.raises(DustUnavailable) as caught:
                await client.create_conversation(content="x", mentions=["echo000001"], context=CONTEXT)
            assert caught.value.type == "unreachable"
        assert client.breaker_state == "open"
        with pytest.raises(DustUnavailable) as fast:
            await client.probe()
        assert fast.value.type == "circuit_open"


@contextlib.asynccontextmanager
async def idle_closing_server(
    idle_timeout: float, *, reset_posts: bool = False
) -> AsyncIterator[tuple[int, list[tuple[int, str]]]]:
    """An HTTP/1.1 server that drops a keep-alive connection when a request arrives after it sat idle
    for `idle_timeout` (the request that meets a server's idle close), and with `reset_posts` every
    POST, fresh connection or not (a server failing mid-request). Yields (port, log of (connection
    number, "answered"/"dropped" and the request line))."""
    log: list[tuple[int, str]] = []
    handlers: list[asyncio.Task[Any]] = []
    body = json.dumps({"agentConfigurations": []}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        number = len(handlers)
        idle_since = time.monotonic()
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                if time.monotonic() - idle_since > idle_timeout or (reset_posts and line.startswith("POST")):
                    log.append((number, f"dropped {line}"))
                    writer.transport.abort()  # RST, and no answer
                    return
                await reader.readexactly(content_length(head))
                log.append((number, f"answered {line}"))
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                idle_since = time.monotonic()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], log
    finally:
        server.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


POST_LINE = "POST /api/v1/w/demo/assistant/conversations HTTP/1.1"


async def post_after_idle(port: int, keepalive: float) -> str:
    """GET, stay idle 0.6 s, then POST a new conversation; the POST's outcome."""
    url = f"http://127.0.0.1:{port}"
    async with DustClient(
        url, WORKSPACE, SecretStr(KEY), max_retries=3, keepalive_seconds=keepalive
    ) as client:
        await client.list_agents()
        await anyio.sleep(0.6)  # the idleness under test
        try:
            await client.create_conversation(content="hello", mentions=["echo000001"], context=CONTEXT)
        except DustUnavailable as exc:
            return exc.type
        except DustError as exc:  # the canned body is no conversation; reaching the server is the point
            return f"answered ({exc.type})"
    raise AssertionError("the canned body cannot pass for a conversation")


async def test_an_idle_connection_is_not_reused_past_the_keepalive_time() -> None:
    async with idle_closing_server(idle_timeout=0.4) as (port, log):
        outcome = await post_after_idle(port, keepalive=0.2)
    assert outcome.startswith("answered")
    assert log == [
        (1, "answered GET /api/v1/w/demo/assistant/agent_configurations?view=all HTTP/1.1"),
        (2, f"answered {POST_LINE}"),
    ]


async def test_a_post_that_met_a_closed_kept_alive_connection_is_sent_again_on_a_new_one() -> None:
    # The server closed the connection for idleness just as the POST went out on it (the client's
    # keep-alive time outlived the server's): it never read the request, so sending it again
    # cannot duplicate anything.
    async with idle_closing_server(idle_timeout=0.4) as (port, log):
        outcome = await post_after_idle(port, keepalive=5.0)
    assert outcome.startswith("answered")
    assert log[1:] == [(1, f"dropped {POST_LINE}"), (2, f"answered {POST_LINE}")]


async def test_a_post_broken_on_a_fresh_connection_is_not_repeated() -> None:
    # On a connection opened for it, a broken POST may have reached Dust: never sent twice.
    async with idle_closing_server(idle_timeout=60, reset_posts=True) as (port, log):
        outcome = await post_after_idle(port, keepalive=0.2)
    assert outcome == "unreachable"
    assert [entry for entry in log if "POST" in entry[1]] == [(2, f"dropped {POST_LINE}")]


async def test_a_stream_answered_with_something_else_than_events_is_retried_then_given_up() -> None:
    # A proxy or captive portal answering 200 with a web page: not an event stream, so no frames
    # are invented from it; the stream is tried again and then fails with the cause named.
    answered: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while head := await reader.readuntil(b"\r\n\r\n"):
                answered.append(head.split(b"\r\n", 1)[0])
                page = b"<html>sign in to the network</html>"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                    + f"Content-Length: {len(page)}\r\n\r\n".encode()
                    + page
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        url = f"http://127.0.0.1:{port}"
        client = DustClient(url, WORKSPACE, SecretStr(KEY), stream_max_reconnects=2, reconnect_delay=0.01)
        async with client:
            with pytest.raises(DustStreamError) as caught:
                await collect(client.stream_agent_events("c1", "m1"))
    assert "not an event stream: text/html" in str(caught.value)
    assert len(answered) == 3  # the first connection and 2 reconnects
    events_path = b"GET /api/v1/w/demo/assistant/conversations/c1/messages/m1/events"
    assert all(line.startswith(events_path) for line in answered)
