"""What the bridge sends to Dust is what Dust's official SDK (@dust-tt/client) would accept.

A real bridge talks to the simulator, which records every body POSTed to `/api/...`
(`GET /_sim/bodies`). The bridge is driven through /mcp with the MCP SDK client: a file uploaded with
the upload_file tool and asked about in a new conversation (`contentFragments`), a follow-up turn with
a second file (a content fragment, then a message), and a cancelled answer. harness/validate_bodies.mjs
then parses each recorded body with the SDK request schema of its route, on Node 24. The answers to a
paused agent (validate-action, answer-question), which no MCP tool sends yet, are sent with the
bridge's Dust client itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from pydantic import SecretStr

from bridge.dust import DustClient, MessageContext
from bridge.dust.pauses import PendingAction
from tests.contract.conftest import failure, run_harness
from tests.helpers import faults, stats, text_of
from tests.procs import Proc, bridge_env, running, start_bridge

# Every kind of body the bridge sends to Dust; each must be seen and valid.
KINDS = "conversation,message,content_fragment,cancel,file,file_upload"


@pytest.fixture
def bridge(fresh_simulator: Proc, tmp_path: Path) -> Iterator[Proc]:
    # Scanning changes nothing in what reaches Dust; off, so this test needs no clamd.
    env = bridge_env(fresh_simulator, BRIDGE_SCAN_MODE="off", BRIDGE_UPLOAD_DIR=str(tmp_path / "uploads"))
    with running(start_bridge(env)) as proc:
        yield proc


async def upload(client: Client, name: str, text: str) -> dict[str, Any]:
    result = await client.call_tool(
        "upload_file", {"filename": name, "content_base64": base64.b64encode(text.encode()).decode()}
    )
    assert not result.is_error, text_of(result)
    return result.structured_content or {}


async def cancelled_answer(client: Client, simulator: Proc) -> None:
    """Start a long answer, abandon the call once it streams, and wait for the bridge's cancel."""
    faults(simulator, token_delay_ms=200)
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()

    async with anyio.create_task_group() as tg:

        async def call() -> None:
            await client.call_tool(
                "ask_agent",
                {"agent": "storyteller", "message": "a long story"},
                progress_callback=on_progress,
            )

        tg.start_soon(call)
        with anyio.fail_after(20):
            await started.wait()
        tg.cancel_scope.cancel()  # the MCP client sends notifications/cancelled
    with anyio.fail_after(20):
        while not stats(simulator)["cancels"]:
            await anyio.sleep(0.05)
    faults(simulator, token_delay_ms=15)


async def test_every_body_the_bridge_posts_to_dust_parses_with_the_sdk_request_schemas(
    bridge: Proc, fresh_simulator: Proc, tmp_path: Path
) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        first = await upload(client, "notes.txt", "notes for the agent\n")
        asked = await client.call_tool(
            "ask_agent", {"agent": "file-reader", "message": "what do you see?", "files": [first["uri"]]}
        )
        assert not asked.is_error, text_of(asked)
        handle = (asked.structured_content or {})["conversation"]
        second = await upload(client, "more.txt", "more notes\n")
        again = await client.call_tool(
            "ask_agent",
            {"agent": "file-reader", "message": "and now?", "conversation": handle, "files": [second["uri"]]},
        )
        assert not again.is_error, text_of(again)
        assert text_of(again).startswith("I can see 2 file(s)"), text_of(again)
        await cancelled_answer(client, fresh_simulator)

    bodies = httpx2.get(f"{fresh_simulator.url}/_sim/bodies", timeout=5).json()
    recorded = tmp_path / "bodies.json"
    recorded.write_text(json.dumps(bodies, indent=2), encoding="utf-8")
    run = run_harness("validate_bodies.mjs", "--bodies", str(recorded), "--require", KINDS, home=tmp_path)
    print(run.stdout)  # shown with -rP / -s: every body and its verdict
    if run.returncode != 0:
        pytest.fail(f"a body the bridge sent does not match the Dust SDK:\n{failure(run)}", pytrace=False)
    assert " 0 failed" in run.stdout, run.stdout


def test_validator_fails_bodies_dust_would_refuse_or_silently_ignore(tmp_path: Path) -> None:
    context = {"username": "u", "timezone": "UTC", "origin": "api"}
    bodies = [
        # Refused by Dust: a timezone outside its list, a file size as a string.
        {
            "method": "POST",
            "path": "/api/v1/w/demo/assistant/conversations",
            "content_type": "application/json",
            "json": {
                "message": {"content": "hi", "mentions": [], "context": {**context, "timezone": "Mars"}}
            },
        },
        {
            "method": "POST",
            "path": "/api/v1/w/demo/files",
            "content_type": "application/json",
            "json": {
                "contentType": "text/plain",
                "fileName": "a",
                "fileSize": "3",
                "useCase": "conversation",
            },
        },
        # Accepted but silently changed: an origin Dust replaces, a key Dust strips.
        {
            "method": "POST",
            "path": "/api/v1/w/demo/assistant/conversations/c1/messages",
            "content_type": "application/json",
            "json": {
                "content": "hi",
                "mentions": [],
                "context": {**context, "origin": "bridge"},
                "stream": True,
            },
        },
        # A route the SDK has no request schema for.
        {"method": "POST", "path": "/api/v1/w/demo/assistant/conversations/c1/feedbacks", "json": {}},
    ]
    recorded = tmp_path / "bodies.json"
    recorded.write_text(json.dumps({"bodies": bodies}), encoding="utf-8")
    run = run_harness("validate_bodies.mjs", "--bodies", str(recorded), "--require", "cancel", home=tmp_path)
    assert run.returncode == 1, failure(run)
    for expected in [
        "message.context.timezone: Invalid timezone",
        'fileSize: Expected number, received string [invalid_type; expected "number", received "string"]',
        'context.origin: Dust\'s schema turns "bridge" into "api"',
        "stream: not in Dust's schema, so Dust ignores it",
        "no Dust SDK request schema is known for this method and route",
        "expected bodies of kind(s) never recorded: cancel",
        "0 passed, 5 failed",
    ]:
        assert expected in run.stdout, run.stdout


async def first_pause(client: DustClient, conversation_id: str, message_id: str) -> PendingAction:
    events = client.stream_agent_events(conversation_id, message_id)
    try:
        with anyio.fail_after(20):
            async for event in events:
                pending = PendingAction.from_event(event.data)
                if pending is not None:
                    return pending
    finally:
        await events.aclose()
    raise AssertionError("the agent message never paused")


async def test_the_clients_answers_to_pauses_parse_with_the_sdk_request_schemas(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    """DustClient.validate_action and answer_question (what the bridge answers a paused agent
    with) send what the SDK's ValidateActionRequestBodySchema and AnswerUserQuestionRequestBodySchema
    accept, without a key Dust would ignore."""
    context = MessageContext(username="contract", timezone="Europe/Paris")
    client = DustClient(
        base_url=fresh_simulator.url, workspace_id="demo", api_key=SecretStr("sk-contract0123"), timeout=10.0
    )
    try:
        for agent in ("approve001", "question01"):
            created = await client.create_conversation(
                content="the minutes", mentions=[agent], context=context
            )
            assert created.agent_message is not None
            pending = await first_pause(client, created.conversation.s_id, created.agent_message.s_id)
            if pending.kind == "approval":
                await client.validate_action(
                    pending.conversation_id, pending.message_id, pending.action_id, "always_approved"
                )
            else:
                await client.answer_question(
                    pending.conversation_id,
                    pending.message_id,
                    pending.action_id,
                    selected_options=[2],
                    custom_response="as a table",
                )
    finally:
        await client.aclose()
    bodies = httpx2.get(f"{fresh_simulator.url}/_sim/bodies", timeout=5).json()
    recorded = tmp_path / "bodies.json"
    recorded.write_text(json.dumps(bodies, indent=2), encoding="utf-8")
    run = run_harness(
        "validate_bodies.mjs",
        "--bodies",
        str(recorded),
        "--require",
        "validate_action,answer_question",
        home=tmp_path,
    )
    print(run.stdout)
    if run.returncode != 0:
        pytest.fail(
            f"a pause answer the client sent does not match the Dust SDK:\n{failure(run)}", pytrace=False
        )
    assert " 0 failed" in run.stdout, run.stdout
