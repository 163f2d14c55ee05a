"""The MCP Inspector CLI (@modelcontextprotocol/inspector --cli, pinned in tools/node) as an outside client:
it lists the bridge's tools and asks the simulator's echo agent, over stdio (`python -m bridge stdio`) and
over Streamable HTTP (/mcp, both protocol eras)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import node_env, node_tool, run_tool, tail
from tests.procs import REPO, Proc, bridge_env, running, start_bridge

ASK_ECHO = ["--method", "tools/call", "--tool-name", "ask_agent", "--tool-arg", "agent=echo", "message=hello"]
ECHO_ANSWER = "Echo (turn 1): hello"  # bridge/simulator/agents.py: 'Echo (turn <n>): <message>'


@pytest.fixture(scope="module")
def inspector() -> Path:
    return node_tool("inspector")


@pytest.fixture(scope="module")
def bridge(simulator: Proc) -> Iterator[Proc]:
    with running(start_bridge(bridge_env(simulator))) as proc:
        yield proc


def stdio_target(simulator: Proc) -> list[str]:
    """Inspector options that make it spawn `python -m bridge stdio` against the simulator."""
    env_options = [arg for key, value in bridge_env(simulator).items() for arg in ("-e", f"{key}={value}")]
    return [*env_options, "--cwd", str(REPO), "--", sys.executable, "-m", "bridge", "stdio"]


def inspect(
    inspector: Path, home: Path, options: list[str], target: list[str], bridge: Proc | None = None
) -> Any:
    """Run the Inspector CLI once and return its JSON result (`--format json` prints {"result": ...})."""
    run = run_tool(
        [str(inspector), "--cli", "--format", "json", *options, *target], env=node_env(home), timeout=60
    )
    failure = run.report()
    if bridge is not None:  # over stdio the bridge's log is the Inspector's stderr, already in the report
        failure += f"\n--- bridge log (last 30 lines) ---\n{tail(bridge.log(), 30)}"
    assert run.returncode == 0, failure
    try:
        body = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not one JSON object\n{failure}", pytrace=False)
    assert isinstance(body, dict), failure
    assert "result" in body, failure
    return body["result"]


def tool_names(result: Any) -> set[str]:
    return {tool["name"] for tool in result["tools"]}


def assert_echo_answer(result: Any) -> None:
    assert result.get("isError") is not True, result
    first = result["content"][0]
    assert first == {"type": "text", "text": ECHO_ANSWER}, result
    assert result["structuredContent"]["answer"] == ECHO_ANSWER, result
    assert result["structuredContent"]["conversation"], result


def test_tools_list_over_stdio(inspector: Path, simulator: Proc, tmp_path: Path) -> None:
    result = inspect(inspector, tmp_path, ["--method", "tools/list"], stdio_target(simulator))
    assert {"list_agents", "ask_agent", "get_conversation", "end_conversation"} <= tool_names(result)


def test_ask_agent_over_stdio(inspector: Path, simulator: Proc, tmp_path: Path) -> None:
    assert_echo_answer(inspect(inspector, tmp_path, ASK_ECHO, stdio_target(simulator)))


def test_tools_list_over_http(inspector: Path, bridge: Proc, tmp_path: Path) -> None:
    result = inspect(inspector, tmp_path, ["--method", "tools/list"], ["--", f"{bridge.url}/mcp"], bridge)
    assert {"list_agents", "ask_agent", "get_conversation", "end_conversation"} <= tool_names(result)


@pytest.mark.parametrize("era", ["legacy", "modern"])  # 2025-11-25 with Mcp-Session-Id; 2026-07-28 stateless
def test_ask_agent_over_http(inspector: Path, bridge: Proc, era: str, tmp_path: Path) -> None:
    options = ["--protocol-era", era, *ASK_ECHO]
    assert_echo_answer(inspect(inspector, tmp_path, options, ["--", f"{bridge.url}/mcp"], bridge))
