"""Small helpers shared by the end-to-end tests: reading tool results, steering the simulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import httpx2
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
