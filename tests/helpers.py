"""Small helpers shared by the end-to-end tests: reading tool results, steering the simulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.types import CallToolResult, TextContent

from tests.procs import Proc


def text_of(result: CallToolResult) -> str:
    """All text content of a tool result, concatenated."""
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


def faults(simulator: Proc, **values: Any) -> None:
    """Merge `values` into the simulator's live options (`fail_next=[]` clears pending failures)."""
    httpx2.post(f"{simulator.url}/_sim/faults", json=values, timeout=5).raise_for_status()


def stats(simulator: Proc) -> dict[str, Any]:
    """The simulator's counters."""
    body: dict[str, Any] = httpx2.get(f"{simulator.url}/_sim/stats", timeout=5).json()
    return body


def posted(simulator: Proc, endpoint: str) -> list[dict[str, Any]]:
    """The JSON bodies POSTed to Dust's `.../{endpoint}` since the last reset (each accepted)."""
    recorded = httpx2.get(f"{simulator.url}/_sim/bodies", timeout=5).json()["bodies"]
    sent = [body for body in recorded if body["path"].endswith(f"/{endpoint}")]
    assert all(body["status"] == 200 for body in sent), sent
    return [body["json"] for body in sent]


_AUDIT_LINE = re.compile(r"bridge\.audit(?: \[[^\]]*\])?: (\{.*\})$")


def audit_events(log: str) -> list[dict[str, Any]]:
    """The audit events in a bridge's text-format log, in order."""
    return [json.loads(match.group(1)) for line in log.splitlines() if (match := _AUDIT_LINE.search(line))]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m bridge ARGS` with only `env` as its DUST_/BRIDGE_/REDIS_ settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_", "REDIS_"))}
    base["BRIDGE_ENV_FILE"] = "none"  # a developer's .env never leaks into a test
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def answer_through_sigterm(bridge: Proc, message: str) -> tuple[CallToolResult, int]:
    """Ask the echo agent `message` and SIGTERM the bridge once the answer streams: the result the
    client got, and the bridge's exit status."""
    progress = anyio.Event()
    outcome: dict[str, CallToolResult] = {}

    async def on_progress(value: float, total: float | None, text: str | None) -> None:
        progress.set()

    async with Client(f"{bridge.url}/mcp") as client, anyio.create_task_group() as tg:
        # The client validates results against the tool's output schema: list the tools now,
        # while the server still answers new requests.
        await client.list_tools()

        async def call() -> None:
            outcome["result"] = await client.call_tool(
                "ask_agent", {"agent": "echo", "message": message}, progress_callback=on_progress
            )

        tg.start_soon(call)
        with anyio.fail_after(20):
            await progress.wait()
        bridge.popen.send_signal(signal.SIGTERM)
    exit_code = await anyio.to_thread.run_sync(bridge.popen.wait, 30)
    return outcome["result"], int(exit_code)


def approval_of(paused: dict[str, Any], decision: str = "approve") -> dict[str, Any]:
    """`approve_action`'s arguments deciding the one action a paused answer waits for."""
    (pending,) = paused["pending"]
    return {"conversation": paused["conversation"], "action_id": pending["action_id"], "decision": decision}
