"""The always-on subset of bench/load.py and bench/chaos.py: small N, seconds, failing on regressions.

Each chaos test runs one fault from bench/chaos.py against the shared stack while a background
load of conversationalists (bench/_common.py: every answer checked for its own nonce, turn
number, handle and exact streamed text) keeps asking; the fault's report must show nothing lost
and every affected client recovered, plus the fault's own checks.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from bench import chaos
from bench._common import ClientKeys, Conversationalist, Stack, TurnSample
from bench.chaos import Ctx, FaultReport
from tests.bench.conftest import CLIENTS


def assert_passed(report: FaultReport) -> None:
    chaos.print_report(report)
    details = report.as_dict()
    assert report.lost == 0, details
    assert report.recovered_clients == report.affected_clients, details
    failed = {name: value for name, value in report.checks.items() if value is not True}
    assert not failed, details


async def sdk_conversation(url: str, key: str, mode: str, turns: int) -> list[str]:
    """`turns` asks through the MCP SDK's own Client; returns the problems found (none expected)."""
    problems: list[str] = []
    nonce = secrets.token_hex(4)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(60))
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        if "ask_agent" not in tools:
            return [f"{mode}: tools/list lacks ask_agent: {tools}"]
        handle: str | None = None
        for turn in range(1, turns + 1):
            streamed: list[str] = []

            async def progress(
                value: float, total: float | None, message: str | None, into: list[str] = streamed
            ) -> None:
                if message and not message.startswith("["):
                    into.append(message)

            message = f"sdk {mode} {nonce} turn {turn}"
            arguments: dict[str, Any] = {"agent": "echo", "message": message}
            if handle is not None:
                arguments["conversation"] = handle
            result = await client.call_tool("ask_agent", arguments, progress_callback=progress)
            got = result.structured_content or {}
            answer = (
                result.content[0].text
                if result.content and isinstance(result.content[0], TextContent)
                else ""
            )
            expected = f"Echo (turn {turn}): {message}"
            if result.is_error or answer != expected or got.get("answer") != expected:
                problems.append(f"{mode} turn {turn}: {answer!r}")
            if got.get("continued") is not (turn > 1):
                problems.append(f"{mode} turn {turn}: continued={got.get('continued')}")
            if handle is not None and got.get("conversation") != handle:
                problems.append(f"{mode} turn {turn}: the handle changed")
            if "".join(streamed) != expected:
                problems.append(f"{mode} turn {turn}: streamed {''.join(streamed)!r}")
            handle = str(got.get("conversation"))
    return problems


async def test_concurrent_clients_keep_their_own_conversations(stack: Stack, keys: ClientKeys) -> None:
    """20 lean clients x 3 turns at once, plus the SDK Client in both protocol eras: every answer
    exact, in its own conversation, at the right turn; the streamed text equals the answer."""
    clients = [
        Conversationalist(
            i, stack.mcp_url, key=keys.keys[i], answer_chars=200, idle_timeout=60, call_timeout=90
        )
        for i in range(CLIENTS)
    ]
    await asyncio.gather(*(c.warm() for c in clients))

    async def converse(c: Conversationalist) -> None:
        for _ in range(3):
            await c.turn()

    sdk = [
        sdk_conversation(stack.mcp_url, keys.keys[CLIENTS + i], mode, 3)
        for i, mode in enumerate(("auto", "auto", "legacy", "legacy"))
    ]
    outcome = await asyncio.gather(*(converse(c) for c in clients), *sdk)
    for c in clients:
        c.close()
    samples: list[TurnSample] = [s for c in clients for s in c.samples]
    assert len(samples) == CLIENTS * 3
    assert [s.crossed for s in samples if s.crossed] == []
    assert [s.error for s in samples if s.error] == []
    assert [problem for problems in outcome if problems for problem in problems] == []


async def test_redis_restart_mid_load_recovers_with_contexts(ctx: Ctx) -> None:
    """Redis killed under load: clear errors, not ready, no crash; back by itself, handles intact."""
    assert_passed(await chaos.fault_redis(ctx, down_seconds=3.0))


async def test_stream_cut_mid_answer_yields_exact_text(ctx: Ctx) -> None:
    """Every Dust stream cut once after 3 events, then `done` every 4: resumed by lastEventId with
    nothing duplicated or lost (the streamed progress text equals the final answer)."""
    report = await chaos.fault_stream_cut(ctx, seconds=3.0)
    assert_passed(report)
    assert report.extra["turns_while_cutting"] >= 5


@pytest.mark.parametrize(("fault", "count"), [("dust_5xx", 3), ("dust_503", 6), ("dust_429", 6)])
async def test_dust_error_bursts_recover(ctx: Ctx, fault: str, count: int) -> None:
    """500s reach the client as a clear Dust error and a retry succeeds at the right turn (the
    failed POST created nothing); 503 and 429 bursts are retried by the bridge itself."""
    function = {
        "dust_5xx": chaos.fault_dust_5xx,
        "dust_503": chaos.fault_dust_503,
        "dust_429": chaos.fault_dust_429,
    }
    report = await function[fault](ctx, count=count)
    assert_passed(report)
    if fault == "dust_5xx":
        assert report.affected >= 1
        assert all(
            "Dust returned an error (HTTP N internal_server_error" in kind for kind in report.errors_seen
        ), report.errors_seen


async def test_mass_disconnect_cancels_at_dust_and_leaks_nothing(ctx: Ctx) -> None:
    """20 clients drop mid-answer, twice: 20 cancels reach Dust each time, and the bridge's tasks,
    fds and streams (from /status) and the simulator's open streams come back."""
    assert_passed(await chaos.fault_disconnect(ctx, clients=20))


async def test_heartbeats_keep_a_silent_answer_alive(ctx: Ctx) -> None:
    """An agent silent for 4 s, clients that give up after 2.5 s without a byte: 1 s heartbeats
    keep every call alive to its answer."""
    report = await chaos.fault_dust_slow(ctx, clients=3, idle_timeout=2.5, heartbeat=1.0)
    assert_passed(report)


async def test_clamd_killed_during_uploads_refuses_cleanly(ctx: Ctx) -> None:
    """clamd killed mid-uploads: every refusal is 503 scanner_unavailable, no temp file is left in
    BRIDGE_UPLOAD_DIR, uploads work again once clamd is back."""
    assert_passed(await chaos.fault_clamd(ctx, uploaders=4, down_seconds=1.5))


async def test_sigterm_mid_stream_lets_answers_finish(ctx: Ctx) -> None:
    """SIGTERM with 8 answers streaming: all complete exactly within the grace period, the bridge
    exits, and after a restart the load's conversations continue (Redis kept them)."""
    report = await chaos.fault_sigterm(ctx, clients=8, grace=15.0, key_offset=40)
    assert_passed(report)
    assert report.extra["bridge_exit_code"] == 0
