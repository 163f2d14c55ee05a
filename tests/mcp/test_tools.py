"""The tools end to end: the SDK's own Client drives a running bridge (over /mcp in both eras), which
talks to the Dust simulator and a real Redis. Nothing in between is mocked."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import faults, stats, text_of
from tests.mcp.support import ERAS, Progress, answer_of, ask, status
from tests.procs import Proc, bridge_env, running, start_bridge

pytestmark = pytest.mark.usefixtures("reset_simulator")


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_are_listed_and_tell_the_model_to_pass_conversation_back(bridge: Proc, mode: str) -> None:
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"list_agents", "ask_agent", "get_conversation", "end_conversation"} <= set(tools)
    assert "conversation" in (tools["ask_agent"].description or "")
    assert tools["ask_agent"].output_schema is not None
    # Descriptions reach the model on every turn: no docstring indentation, no trailing blank line.
    for tool in tools.values():
        assert tool.description and tool.description == tool.description.strip()
        assert "\n    " not in tool.description


@pytest.mark.parametrize("mode", ERAS)
async def test_answer_streams_as_progress_before_the_exact_result(bridge: Proc, mode: str) -> None:
    progress = Progress()
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        result = await ask(client, progress, agent="echo", message="hello there, streaming world")
    expected = "Echo (turn 1): hello there, streaming world"
    assert answer_of(result) == expected
    # The relayed chunks are the answer, in order, and arrived before the result.
    assert "".join(m for m in progress.messages if not m.startswith("[")) == expected
    assert len(progress.messages) >= 2
    structured = result.structured_content or {}
    assert structured["conversation"].startswith("dmc_")
    assert structured["agent"] == {"sId": "echo000001", "name": "echo"}
    assert structured["dust_conversation_id"] and structured["message_id"]
    assert structured["url"].endswith(structured["dust_conversation_id"])
    assert structured["conversation"] in text_of(result)


@pytest.mark.parametrize("mode", ERAS)
async def test_passing_the_handle_continues_the_same_dust_conversation(bridge: Proc, mode: str) -> None:
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        first = await ask(client, agent="echo", message="one")
        handle = (first.structured_content or {})["conversation"]
        second = await ask(client, agent="ECHO", message="two", conversation=handle)
    assert answer_of(second) == "Echo (turn 2): two"
    assert (second.structured_content or {})["dust_conversation_id"] == (first.structured_content or {})[
        "dust_conversation_id"
    ]
    assert (second.structured_content or {})["continued"] is True


async def test_handshake_session_remembers_its_last_conversation_per_agent(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp", mode="legacy") as client:
        await ask(client, agent="echo", message="one")
        again = await ask(client, agent="echo", message="two")
        fresh = await ask(client, agent="echo", message="three", new_conversation=True)
    assert answer_of(again) == "Echo (turn 2): two"
    assert answer_of(fresh) == "Echo (turn 1): three"


async def test_sessionless_modern_calls_without_a_handle_start_new_conversations(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        assert client.protocol_version == "2026-07-28"
        await ask(client, agent="echo", message="one")
        second = await ask(client, agent="echo", message="two")
    assert answer_of(second) == "Echo (turn 1): two"


async def test_list_agents_and_filter(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        everything = (await client.call_tool("list_agents", {})).structured_content or {}
        filtered = (await client.call_tool("list_agents", {"query": "ECHO"})).structured_content or {}
    names = {a["name"] for a in everything["agents"]}
    assert {"echo", "dust", "slow", "broken"} <= names
    assert [a["sId"] for a in filtered["agents"]] == ["echo000001"]


async def test_unknown_agent_is_rejected_before_anything_is_posted(bridge: Proc, simulator: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        result = await ask(client, agent="no-such-agent", message="hi")
    assert result.is_error
    assert "no active agent named or with sId 'no-such-agent'" in text_of(result)
    assert stats(simulator)["messages"] == 0


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"agent": "echo", "message": "   "}, "message must not be empty"),
        ({"agent": "echo", "message": "x" * 100_001}, "the limit is 100000"),
        ({"agent": "echo", "message": "hi", "conversation": "not-a-handle"}, "malformed conversation handle"),
        (
            {"agent": "echo", "message": "hi", "conversation": "dmc_" + "A" * 32},
            "unknown or expired conversation handle",
        ),
    ],
)
async def test_bad_arguments_get_a_clear_tool_error(
    bridge: Proc, simulator: Proc, arguments: dict[str, Any], expected: str
) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        result = await ask(client, **arguments)
    assert result.is_error
    assert expected in text_of(result)
    assert stats(simulator)["messages"] == 0


async def test_missing_required_argument_is_an_error_not_a_crash(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        result = await client.call_tool("ask_agent", {"agent": "echo"})
    assert result.is_error
    assert "message" in text_of(result)


async def test_agent_error_is_reported_with_its_cause(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        result = await ask(client, agent="broken", message="please fail")
    assert result.is_error
    assert "agent broken failed: The model provider failed (model_error)" in text_of(result)


async def test_heartbeats_arrive_while_a_slow_agent_is_silent(bridge: Proc, simulator: Proc) -> None:
    faults(simulator, slow_seconds=3.5)
    progress = Progress()
    async with Client(f"{bridge.url}/mcp", mode="legacy") as client:
        result = await ask(client, progress, agent="slow", message="take your time")
    assert answer_of(result) == "Done after waiting: take your time"
    beats = [m for m in progress.messages if m.startswith("[waiting]")]
    assert len(beats) >= 2, progress.messages
    assert any("web_search" in m for m in beats)


@pytest.mark.parametrize("mode", ERAS)
async def test_client_cancel_cancels_the_generation_at_dust_and_leaks_nothing(
    bridge: Proc, simulator: Proc, mode: str
) -> None:
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        await ask(client, agent="echo", message="warm up")  # lazily created pools and tasks exist now
    baseline = status(bridge)["process"]
    faults(simulator, token_delay_ms=200)
    settled: list[dict[str, int]] = []
    for round_ in range(1, 4):
        progress = Progress()
        async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
            async with anyio.create_task_group() as tg:

                async def call(client: Client, progress: Progress) -> None:
                    await ask(client, progress, agent="storyteller", message="a long story")

                tg.start_soon(call, client, progress)
                with anyio.fail_after(20):
                    await progress.first.wait()
                tg.cancel_scope.cancel()
            with anyio.fail_after(20):
                while len(stats(simulator)["cancels"]) < round_:
                    await anyio.sleep(0.05)
        with anyio.fail_after(20):
            while stats(simulator)["open_streams"]:
                await anyio.sleep(0.05)
        # Nothing left behind in the bridge: no stream, no extra task.
        with anyio.fail_after(20):
            while (now := status(bridge))["active_streams"] or now["process"]["tasks"] > baseline["tasks"]:
                await anyio.sleep(0.05)
        settled.append(now["process"])
    cancels = stats(simulator)["cancels"]
    assert len(cancels) == 3 and all(len(c["messageIds"]) == 1 for c in cancels)
    # Repeated cancels leave no socket behind: an idle pooled keep-alive connection may be open at
    # one count and not the other, so wait (bounded) for them to close; a leak never would.
    with anyio.fail_after(15):  # idle Dust connections close after BRIDGE_DUST_KEEPALIVE_SECONDS (4)
        while status(bridge)["process"]["open_fds"] > settled[0]["open_fds"]:
            await anyio.sleep(0.1)


async def test_stream_cut_mid_answer_is_resumed_without_loss_or_duplication(
    bridge: Proc, simulator: Proc
) -> None:
    faults(simulator, cut_stream_after=7, events_per_connection=5)
    async with Client(f"{bridge.url}/mcp") as client:
        result = await ask(client, agent="echo", message="resume me across several connections please")
    assert answer_of(result) == "Echo (turn 1): resume me across several connections please"
    assert stats(simulator)["stream_connections"] >= 3


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"api_key": "sk-someotherkey"}, "Dust refused the bridge's credentials"),
        (
            {
                "fail_next": [
                    {
                        "match": "/assistant/conversations",
                        "method": "POST",
                        "status": 429,
                        "type": "rate_limit_error",
                        "message": "slow down",
                        "count": 10,
                    }
                ]
            },
            "Dust is rate-limiting this workspace",
        ),
        (
            {
                "fail_next": [
                    {
                        "match": "/assistant/conversations",
                        "method": "POST",
                        "status": 403,
                        "type": "workspace_can_use_product_required_error",
                        "message": "plan",
                        "count": 1,
                    }
                ]
            },
            "Dust refused the bridge's credentials",
        ),
        (
            {
                "fail_next": [
                    {
                        "match": "/assistant/conversations",
                        "method": "POST",
                        "status": 404,
                        "type": "workspace_not_found",
                        "message": "gone",
                        "count": 1,
                    }
                ]
            },
            "workspace_not_found",
        ),
        (
            {
                "fail_next": [
                    {
                        "match": "/assistant/conversations",
                        "method": "POST",
                        "status": 500,
                        "type": "internal_server_error",
                        "message": "oops",
                        "count": 1,
                    }
                ]
            },
            "Dust returned an error (HTTP 500",
        ),
    ],
)
async def test_dust_failures_become_clear_tool_errors_without_secrets(
    bridge: Proc, simulator: Proc, fault: dict[str, Any], expected: str
) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        await client.call_tool("list_agents", {})  # warm the agent cache so the fault hits the post
        faults(simulator, **fault)
        result = await ask(client, agent="echo", message="hi")
        assert result.is_error
        assert expected in text_of(result)
        assert "sk-" not in text_of(result)
        faults(simulator, fail_next=[], api_key=None)
        healthy = await ask(client, agent="echo", message="still serving")
    assert answer_of(healthy) == "Echo (turn 1): still serving"
    assert "sk-testkey" not in bridge.log()


async def test_transcript_and_end_conversation(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        first = await ask(client, agent="echo", message="remember me")
        handle = (first.structured_content or {})["conversation"]
        transcript = await client.call_tool("get_conversation", {"conversation": handle})
        resource = await client.read_resource(f"dust://conversations/{handle}")
        listed = {r.uri for r in (await client.list_resources()).resources}
        ended = await client.call_tool("end_conversation", {"conversation": handle})
        after = await ask(client, agent="echo", message="again", conversation=handle)
    messages = (transcript.structured_content or {})["messages"]
    assert [m["role"] for m in messages] == ["user", "agent"]
    assert messages[1]["content"] == "Echo (turn 1): remember me"
    assert "remember me" in resource.contents[0].text  # type: ignore[union-attr]
    assert f"dust://conversations/{handle}" in listed
    assert "dust://agents/echo000001" in listed
    assert not ended.is_error
    assert after.is_error and "unknown or expired conversation handle" in text_of(after)


async def test_expired_handle_is_a_clear_error_and_a_new_conversation_works(simulator: Proc) -> None:
    with running(start_bridge(bridge_env(simulator, BRIDGE_CONTEXT_TTL_SECONDS="1"))) as short_lived:
        async with Client(f"{short_lived.url}/mcp") as client:
            first = await ask(client, agent="echo", message="soon forgotten")
            handle = (first.structured_content or {})["conversation"]
            # Expiry is time itself, not an event to await; and polling would refresh the sliding TTL.
            await anyio.sleep(1.6)
            late = await client.call_tool("get_conversation", {"conversation": handle})
            again = await ask(client, agent="echo", message="continue?", conversation=handle)
            fresh = await ask(client, agent="echo", message="fresh start")
    assert "unknown or expired conversation handle" in text_of(late)
    assert again.is_error and "unknown or expired conversation handle" in text_of(again)
    assert answer_of(fresh) == "Echo (turn 1): fresh start"
