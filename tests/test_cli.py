"""The command line: client configs (claude-config), agents and check against the simulator, config errors."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from tests.helpers import faults, run_cli
from tests.procs import Proc, bridge_env, running, start_bridge


def test_claude_config_is_a_working_stdio_entry_without_the_real_key() -> None:
    done = run_cli("claude-config", env={"DUST_API_KEY": "sk-realsecret12345", "DUST_WORKSPACE_ID": "ws1"})
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["mcpServers"]["dust"]
    assert entry["command"] == sys.executable
    assert entry["args"] == ["-m", "bridge", "stdio"]
    assert entry["env"]["DUST_WORKSPACE_ID"] == "ws1"
    assert "sk-realsecret12345" not in done.stdout


@pytest.mark.parametrize(
    ("options", "env"),
    [
        ([], {"DUST_API_KEY": "sk-realsecret12345", "DUST_WORKSPACE_ID": "ws1"}),
        ([], {"DUST_WORKSPACE_ID": "ws1", "DUST_BASE_URL": "https://eu.dust.tt"}),
        (["--demo"], {"DUST_WORKSPACE_ID": "ws1"}),
        (["--name", "dust-eu"], {}),
    ],
)
def test_claude_config_prints_exactly_what_client_config_claude_desktop_prints(
    options: list[str], env: dict[str, str]
) -> None:
    old = run_cli("claude-config", *options, env=env)
    new = run_cli("client-config", "claude-desktop", *options, env=env)
    assert old.returncode == new.returncode == 0, old.stderr + new.stderr
    assert old.stdout == new.stdout
    assert json.loads(old.stdout)["mcpServers"]  # one JSON document, nothing else on stdout


def test_client_config_help_lists_the_clients_and_the_options() -> None:
    done = run_cli("client-config", "--help")
    assert done.returncode == 0
    for word in ("claude-desktop", "claude-code", "cursor", "vscode", "remote", "--http", "--demo", "--name"):
        assert word in done.stdout


def test_agents_and_check_against_dust(simulator: Proc) -> None:
    env = bridge_env(simulator, BRIDGE_SCAN_MODE="off")
    agents = run_cli("agents", env=env)
    check = run_cli("check", env=env)
    assert agents.returncode == 0, agents.stderr
    assert "echo000001\techo\t" in agents.stdout
    assert check.returncode == 0, check.stdout + check.stderr
    # The same listing the tools use, and the single-agent read agent resolution falls back to.
    assert "dust agents: ok (14 active with view=all in " in check.stdout
    assert "dust agent: ok (read " in check.stdout
    assert "store: ok" in check.stdout
    assert "scanner: ok (off: BRIDGE_SCAN_MODE=off" in check.stdout


def test_check_tests_clamd_and_says_what_to_fix(simulator: Proc, clamd: Proc) -> None:
    check = run_cli("check", env=bridge_env(simulator, clamd=clamd))
    lines = check.stdout.splitlines()
    assert "scanner: ok (clamd answers PING)" in lines
    # The test clamd loads only a local EICAR signature: no official database, which check calls out.
    signatures = next(line for line in lines if line.startswith("scanner signatures: "))
    assert signatures.startswith("scanner signatures: FAILED: ClamAV ") and "freshclam" in signatures
    # Its StreamMaxLength is Debian's 25M, below the default 50 MiB upload cap.
    assert (
        "scanner limits: FAILED: clamd refuses a stream of BRIDGE_UPLOAD_MAX_BYTES (50 MiB);"
        " set `StreamMaxLength 50M` in clamd.conf" in check.stdout
    )
    assert "scanner limits: ok (AlertExceedsMax is on" in check.stdout
    assert check.returncode == 1


def test_check_without_clamd_fails_and_says_where_it_looked(simulator: Proc) -> None:
    check = run_cli("check", env=bridge_env(simulator, CLAMD_URL="tcp://127.0.0.1:1"))
    assert check.returncode == 1
    assert "scanner: FAILED: cannot connect to clamd at 127.0.0.1:1" in check.stdout
    assert "apt-get install clamav-daemon" in check.stdout


def test_check_ask_does_one_whole_turn_and_prints_the_answer_and_timings(simulator: Proc) -> None:
    env = bridge_env(simulator, BRIDGE_SCAN_MODE="off")
    check = run_cli("check", "--ask", "echo", "first contact", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    ask_line = next(line for line in check.stdout.splitlines() if line.startswith("ask: "))
    assert ask_line.startswith("ask: ok (echo answered in ")
    assert "first progress after " in ask_line and "Dust conversation " in ask_line
    assert "Echo (turn 1): first contact" in check.stdout


def test_check_ask_with_an_unknown_agent_fails_and_names_it(simulator: Proc) -> None:
    env = bridge_env(simulator, BRIDGE_SCAN_MODE="off")
    check = run_cli("check", "--ask", "nobody-here", "hello", env=env)
    assert check.returncode == 1
    assert "ask: FAILED: no active agent named or with sId 'nobody-here'" in check.stdout


def test_check_ask_with_an_agent_that_waits_for_approval_says_where_to_answer(simulator: Proc) -> None:
    env = bridge_env(simulator, BRIDGE_SCAN_MODE="off")
    check = run_cli("check", "--ask", "needs-approval", "hello", env=env)
    assert check.returncode == 1
    assert (
        "ask: FAILED: needs-approval waits for the user (approval for send_email); answer it in Dust:"
        in check.stdout
    )


@pytest.mark.parametrize(
    ("status", "err_type", "message", "meaning"),
    [
        (
            401,
            "invalid_request_error",
            "The user must be authenticated with oAuth to retrieve list agents.",
            "this needs a signed-in Dust user (OAuth); a workspace API key cannot use it",
        ),
        (
            401,
            "invalid_api_key_error",
            "The API key provided is invalid or disabled.",
            "DUST_API_KEY is unknown to Dust or was disabled",
        ),
        (
            401,
            "workspace_auth_error",
            "Only users of the workspace can access this content.",
            "the key belongs to another workspace than DUST_WORKSPACE_ID",
        ),
    ],
)
def test_check_reports_dusts_own_reason_and_what_it_means(
    simulator: Proc, status: int, err_type: str, message: str, meaning: str
) -> None:
    httpx2.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()
    rule = {
        "match": "agent_configurations",
        "status": status,
        "type": err_type,
        "message": message,
        "count": 50,
    }
    faults(simulator, fail_next=[rule])
    try:
        check = run_cli("check", env=bridge_env(simulator))
    finally:
        faults(simulator, fail_next=[])
    assert check.returncode == 1
    line = next(line for line in check.stdout.splitlines() if line.startswith("dust agents: "))
    assert f"HTTP {status} {err_type}: {message}" in line
    assert meaning in line
    if err_type == "invalid_request_error":
        assert "credentials (" not in line  # not reported as a bad key: the key is fine, the view is not


def test_check_fails_and_says_why_when_redis_is_unreachable(simulator: Proc) -> None:
    env = bridge_env(simulator, redis_port=1)
    check = run_cli("check", env=env)
    assert check.returncode == 1
    # Which Redis and why, for the operator, without the URL (it may carry a password).
    assert "store: FAILED: Redis at 127.0.0.1:1 is unreachable: Connection refused" in check.stdout
    assert "redis://" not in check.stdout


def test_bad_setting_is_one_line_and_exit_2() -> None:
    done = run_cli("serve", env={"BRIDGE_HEARTBEAT_SECONDS": "soon"})
    assert done.returncode == 2
    assert done.stderr.strip().startswith("dust-mcp-bridge: configuration error: BRIDGE_HEARTBEAT_SECONDS:")
    assert len(done.stderr.strip().splitlines()) == 1


async def test_per_agent_tools_from_the_allow_list(simulator: Proc) -> None:
    env = bridge_env(simulator, BRIDGE_AGENT_TOOLS="echo,file-reader")
    with running(start_bridge(env)) as bridge:
        async with Client(f"{bridge.url}/mcp") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            first = await client.call_tool("ask_echo", {"message": "direct tool"})
            handle = (first.structured_content or {})["conversation"]
            second = await client.call_tool("ask_echo", {"message": "again", "conversation": handle})
    assert {"ask_echo", "ask_file_reader"} <= names
    assert first.content[0].text == "Echo (turn 1): direct tool"  # type: ignore[union-attr]
    assert second.content[0].text == "Echo (turn 2): again"  # type: ignore[union-attr]


@pytest.mark.parametrize("access_log", ["on", "off"])
def test_access_log_lines_only_when_switched_on(simulator: Proc, access_log: str) -> None:
    import httpx2

    with running(start_bridge(bridge_env(simulator, BRIDGE_ACCESS_LOG=access_log))) as bridge:
        httpx2.get(f"{bridge.url}/status", timeout=10).raise_for_status()
        log = bridge.log()
    assert ("uvicorn.access" in log and '"GET /status HTTP/1.1" 200' in log) is (access_log == "on")
    assert "Application startup complete" in log  # the rest of uvicorn's log stays


def test_simulator_subcommand_serves_the_dust_api() -> None:
    import httpx2

    from tests.procs import free_port, spawn, wait_for_http

    port = free_port()
    proc = spawn([sys.executable, "-m", "bridge", "simulator", "--port", str(port)], port, name="sim-cli")
    with running(proc):
        wait_for_http(f"{proc.url}/_sim/health", proc.popen)
        agents = httpx2.get(
            f"{proc.url}/api/v1/w/demo/assistant/agent_configurations",
            headers={"Authorization": "Bearer sk-anything123"},
            timeout=5,
        )
    assert agents.status_code == 200
    assert "echo000001" in {a["sId"] for a in agents.json()["agentConfigurations"]}


async def test_claude_config_entry_starts_a_working_server_as_claude_desktop_would(
    simulator: Proc, tmp_path: os.PathLike[str]
) -> None:
    from mcp import StdioServerParameters

    from tests.helpers import text_of
    from tests.procs import TEST_DUST_KEY

    done = run_cli("claude-config", env={"DUST_WORKSPACE_ID": "demo", "DUST_BASE_URL": simulator.url})
    entry = json.loads(done.stdout)["mcpServers"]["dust"]
    # What the user does: paste the entry and put the real key in place of the placeholder.
    env = {**entry["env"], "DUST_API_KEY": TEST_DUST_KEY, "PATH": os.environ.get("PATH", "")}
    # Claude Desktop starts servers from a directory of its own, with only the entry's env.
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env, cwd=str(tmp_path))
    async with Client(params, mode="legacy") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("ask_agent", {"agent": "echo", "message": "from the desktop"})
    assert {"ask_agent", "list_agents", "upload_file"} <= tools
    assert not result.is_error, text_of(result)
    assert text_of(result).startswith("Echo (turn 1): from the desktop")


def test_serve_on_a_port_in_use_says_so_and_never_claims_to_listen() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--port", str(port), env={"BRIDGE_SCAN_MODE": "off"})
    assert done.returncode == 1
    assert f"127.0.0.1 port {port} is in use by another process" in done.stderr
    assert "listening on" not in done.stderr


def test_a_demo_conversation_link_carries_the_simulators_port() -> None:
    check = run_cli("check", "--ask", "echo", "link?", env={"BRIDGE_SCAN_MODE": "off"})
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"http://127\.0\.0\.1:\d+/w/demo/conversation/\w+\)", check.stdout), check.stdout


def test_simulator_help_names_the_command_the_user_typed() -> None:
    done = run_cli("simulator", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: dust-mcp-bridge simulator ")


@pytest.mark.parametrize("command", ["agents", "check", "stdio", "serve"])
def test_help_names_the_environment_variables_a_command_reads(command: str) -> None:
    done = run_cli(command, "--help")
    assert done.returncode == 0
    for variable in ("DUST_API_KEY", "DUST_WORKSPACE_ID", "DUST_BASE_URL", "BRIDGE_ENV_FILE", ".env.example"):
        assert variable in done.stdout


def test_every_command_reads_the_same_env_file_and_says_which(simulator: Proc, tmp_path: Path) -> None:
    env_file = tmp_path / "bridge.env"
    env_file.write_text(
        "\n".join(f"{k}={v}" for k, v in bridge_env(simulator, BRIDGE_SCAN_MODE="off").items()) + "\n"
    )
    check = run_cli("check", env={"BRIDGE_ENV_FILE": str(env_file)})
    agents = run_cli("agents", env={"BRIDGE_ENV_FILE": str(env_file)})
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"configuration: ok ({simulator.url}, workspace demo" in check.stdout  # not demo mode
    assert "echo000001\techo\t" in agents.stdout
    for done in (check, agents):
        assert f"dust-mcp-bridge: settings from the environment and {env_file}" in done.stderr


def test_a_dotenv_in_the_current_directory_is_read(simulator: Proc, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"DUST_API_KEY=sk-fromdotenv123\nDUST_WORKSPACE_ID=demo\nDUST_BASE_URL={simulator.url}\n"
    )
    done = run_cli("agents", env={"BRIDGE_ENV_FILE": ""}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"settings from the environment and {tmp_path / '.env'}" in done.stderr


def test_an_env_file_that_does_not_exist_is_a_one_line_error(tmp_path: Path) -> None:
    done = run_cli("check", env={"BRIDGE_ENV_FILE": str(tmp_path / "missing.env")})
    assert done.returncode == 2
    missing = tmp_path / "missing.env"
    assert done.stderr.strip() == (
        f"dust-mcp-bridge: configuration error: BRIDGE_ENV_FILE: no such file (got '{missing}')"
    )


def test_claude_config_points_at_the_env_file_that_holds_the_key_and_never_prints_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DUST_API_KEY=sk-secretindotenv99\nDUST_WORKSPACE_ID=ws1\n")
    done = run_cli("claude-config", env={"BRIDGE_ENV_FILE": str(env_file)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mcpServers"]["dust"]["env"] == {"BRIDGE_ENV_FILE": str(env_file)}
    assert "sk-secretindotenv99" not in done.stdout + done.stderr


async def test_the_demo_entry_starts_and_says_demo_where_the_model_reads(tmp_path: Path) -> None:
    from mcp import StdioServerParameters

    done = run_cli("claude-config", "--demo", env={"DUST_WORKSPACE_ID": "ws1"})
    entry = json.loads(done.stdout)["mcpServers"]["dust"]
    assert entry["env"] == {"BRIDGE_DEMO": "on"}
    env = {**entry["env"], "PATH": os.environ.get("PATH", ""), "BRIDGE_SCAN_MODE": "off"}
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env, cwd=str(tmp_path))
    async with Client(params, mode="legacy") as client:
        instructions = client.instructions or ""
        listing = await client.call_tool("list_agents", {})
    assert instructions.startswith("DEMO MODE: this bridge is not connected to a Dust workspace.")
    assert (listing.structured_content or {})["demo"].startswith("DEMO MODE")
