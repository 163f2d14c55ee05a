"""client-config: every client's snippet is well-formed, holds no key, and starts (or reaches) a
bridge the way that client would; Claude Code's own `claude mcp add` and `claude mcp list` run for real.

The snippets refer to the Dust key in each client's own way; the tests fill the references in as
that client does (Claude Code `${VAR}` and Cursor `${env:VAR}` from the environment, VS Code
`${input:id}` from what the user typed once, Claude Desktop's placeholder by hand), then start
exactly the command, arguments and environment the snippet names, from a directory of their own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bridge.security.auth import hash_key, new_key
from tests.conformance import ToolRun, node_env, node_tool, run_tool
from tests.helpers import run_cli
from tests.procs import TEST_DUST_KEY, Proc, bridge_env, running, start_bridge

STDIO_CLIENTS = ["claude-desktop", "claude-code", "cursor", "vscode"]
HTTP_CLIENTS = ["claude-code", "cursor", "vscode"]
HOW = ["key-by-reference", "key-in-env-file", "demo"]
CLIENT_KEY = new_key()
CLIENT_KEYS = f"tester:{hash_key(CLIENT_KEY).hex()}"
KEY_PLACEHOLDER = "<your client key, dmb_...>"
# What each client puts in place of a reference: the variables of its environment, or (VS Code)
# what the user typed when it asked.
FILLED = {"DUST_API_KEY": TEST_DUST_KEY, "DUST_BRIDGE_KEY": CLIENT_KEY}
TYPED = {"dust-api-key": TEST_DUST_KEY, "dust-bridge-key": CLIENT_KEY}
REFERENCE = {
    "claude-code": re.compile(r"\$\{(\w+)\}"),
    "cursor": re.compile(r"\$\{env:(\w+)\}"),
    "vscode": re.compile(r"\$\{input:([\w-]+)\}"),
}


def client_config(*args: str, env: dict[str, str]) -> list[str]:
    """The blocks `client-config ARGS` prints on stdout; neither stream ever holds a key."""
    done = run_cli("client-config", *args, env=env)
    assert done.returncode == 0, done.stderr
    for secret in (TEST_DUST_KEY, CLIENT_KEY):
        assert secret not in done.stdout + done.stderr
    return done.stdout.rstrip("\n").split("\n\n")


def fill(client: str, value: str) -> str:
    """`value` once `client` has put its values in place of the references."""
    if client == "claude-desktop":
        return value.replace("<your Dust API key, sk-...>", TEST_DUST_KEY)  # what the user pastes
    values = TYPED if client == "vscode" else FILLED
    return REFERENCE[client].sub(lambda match: values[match.group(1)], value)


def settings_for(how: str, simulator: Proc, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The environment `client-config` runs in, and its options, for each way of holding the key."""
    dust = {"DUST_API_KEY": TEST_DUST_KEY, "DUST_WORKSPACE_ID": "demo", "DUST_BASE_URL": simulator.url}
    if how == "key-by-reference":
        return dust, []
    if how == "key-in-env-file":
        env_file = tmp_path / "secrets" / "bridge.env"
        env_file.parent.mkdir()
        env_file.write_text("".join(f"{name}={value}\n" for name, value in dust.items()))
        return {"BRIDGE_ENV_FILE": str(env_file)}, []
    return {"DUST_WORKSPACE_ID": "demo"}, ["--demo"]


@dataclass
class Launch:
    """What a stdio snippet tells its client to start."""

    command: str
    args: list[str]
    env: dict[str, str]


def stdio_launch(client: str, blocks: list[str]) -> Launch:
    if client == "claude-code":
        return claude_mcp_add_launch(blocks[0])
    document = json.loads(blocks[0])
    server = document["servers" if client == "vscode" else "mcpServers"]["dust"]
    return Launch(server["command"], server["args"], server["env"])


def claude_mcp_add_launch(line: str) -> Launch:
    """`claude mcp add --scope user NAME -e K=V ... -- COMMAND ARGS`, as `claude mcp add --help` documents."""
    argv = shlex.split(line)
    assert argv[:6] == ["claude", "mcp", "add", "--scope", "user", "dust"], argv
    split = argv.index("--")
    options = argv[6:split]
    assert len(options) % 2 == 0 and set(options[0::2]) == {"-e"}, options
    command, *args = argv[split + 1 :]
    return Launch(command, args, dict(pair.split("=", 1) for pair in options[1::2]))


async def list_agents_over_stdio(
    client: str, launch: Launch, cwd: Path, inherited: dict[str, str]
) -> dict[str, Any]:
    """Start what `launch` names as `client` would, list the tools and call list_agents."""
    env = {name: fill(client, value) for name, value in launch.env.items()} | inherited
    # PATH, and the PYTHONPATH that points this checkout's tests at its own code.
    env |= {name: os.environ[name] for name in ("PATH", "PYTHONPATH") if name in os.environ}
    params = StdioServerParameters(command=launch.command, args=launch.args, env=env, cwd=str(cwd))
    async with Client(params, mode="legacy") as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        listing = await session.call_tool("list_agents", {})
    assert {"ask_agent", "list_agents", "upload_file"} <= tools
    assert not listing.is_error
    return listing.structured_content or {}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("client", STDIO_CLIENTS)
async def test_every_stdio_snippet_starts_the_bridge_as_its_client_would(
    simulator: Proc, tmp_path: Path, client: str, how: str
) -> None:
    env, options = settings_for(how, simulator, tmp_path)
    launch = stdio_launch(client, client_config(client, *options, env=env))
    assert Path(launch.command).is_absolute()  # clients do not see the shell's PATH
    (tmp_path / "client").mkdir()
    # A workspace sId the client's environment hands down must not stop a demo entry (it once did: exit 2).
    inherited = {"DUST_WORKSPACE_ID": "elsewhere1"} if how == "demo" else {}
    listing = await list_agents_over_stdio(client, launch, tmp_path / "client", inherited)
    assert ("demo" in listing) is (how == "demo")  # the key, workspace and Dust URL reached the bridge
    assert "echo" in json.dumps(listing)


def test_an_env_file_is_named_only_when_it_holds_the_key(simulator: Proc, tmp_path: Path) -> None:
    env_file = tmp_path / "bridge.env"
    env_file.write_text(f"DUST_WORKSPACE_ID=demo\nDUST_BASE_URL={simulator.url}\n")
    (entry,) = client_config(
        "claude-desktop", env={"BRIDGE_ENV_FILE": str(env_file), "DUST_API_KEY": TEST_DUST_KEY}
    )
    # Naming the file would start the bridge with the workspace and no key: exit 2.
    assert json.loads(entry)["mcpServers"]["dust"]["env"] == {
        "DUST_API_KEY": "<your Dust API key, sk-...>",
        "DUST_WORKSPACE_ID": "demo",
        "DUST_BASE_URL": simulator.url,
    }


def test_an_env_file_that_holds_the_key_but_not_the_workspace_gets_the_workspace_beside_it(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "bridge.env"
    env_file.write_text(f"dust_api_key={TEST_DUST_KEY}\n")
    (entry,) = client_config("cursor", env={"BRIDGE_ENV_FILE": str(env_file), "DUST_WORKSPACE_ID": "ws1"})[:1]
    assert json.loads(entry)["mcpServers"]["dust"]["env"] == {
        "BRIDGE_ENV_FILE": str(env_file),
        "DUST_WORKSPACE_ID": "ws1",
    }


def test_the_claude_code_line_splits_into_the_arguments_claude_mcp_add_documents() -> None:
    env = {"DUST_API_KEY": TEST_DUST_KEY, "DUST_WORKSPACE_ID": "ws1", "DUST_BASE_URL": "https://eu.dust.tt"}
    (line,) = client_config("claude-code", "--name", "dust-eu", env=env)
    argv = shlex.split(line)
    assert argv[:6] == ["claude", "mcp", "add", "--scope", "user", "dust-eu"]
    assert argv[6:12] == [
        "-e",
        "DUST_API_KEY=${DUST_API_KEY}",  # single-quoted in the line: the shell leaves it to Claude Code
        "-e",
        "DUST_WORKSPACE_ID=ws1",
        "-e",
        "DUST_BASE_URL=https://eu.dust.tt",
    ]
    assert argv[12] == "--" and argv[14:] == ["stdio"]
    assert Path(argv[13]).is_absolute() and Path(argv[13]).name.startswith(("dust-mcp-bridge", "python"))


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_cursors_install_link_decodes_to_its_mcp_json_entry(transport: str) -> None:
    args = ["--http", "http://127.0.0.1:8080/mcp"] if transport == "http" else []
    env = {"DUST_API_KEY": TEST_DUST_KEY, "DUST_WORKSPACE_ID": "ws1", "BRIDGE_API_KEYS": CLIENT_KEYS}
    entry, link = client_config("cursor", *args, env=env)
    server = json.loads(entry)["mcpServers"]["dust"]
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("cursor", "anysphere.cursor-deeplink", "/mcp/install")
    query = parse_qs(parts.query, strict_parsing=True)
    assert query["name"] == ["dust"]
    assert json.loads(base64.b64decode(query["config"][0], validate=True)) == server
    if transport == "http":
        assert server == {
            "url": "http://127.0.0.1:8080/mcp",
            "headers": {"Authorization": "Bearer ${env:DUST_BRIDGE_KEY}"},
        }
    else:
        assert server["env"] == {"DUST_API_KEY": "${env:DUST_API_KEY}", "DUST_WORKSPACE_ID": "ws1"}


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_vscode_gets_the_documented_mcp_json_and_the_same_server_in_its_add_mcp_line(transport: str) -> None:
    args = ["--http", "http://127.0.0.1:8080/mcp"] if transport == "http" else []
    env = {"DUST_API_KEY": TEST_DUST_KEY, "BRIDGE_API_KEYS": CLIENT_KEYS}  # no workspace: asked for too
    document_text, add_mcp = client_config("vscode", *args, env=env)
    document = json.loads(document_text)
    assert set(document) == {"inputs", "servers"}
    server = document["servers"]["dust"]
    assert server["type"] == transport
    inputs = {item["id"]: item for item in document["inputs"]}
    for item in inputs.values():
        assert item["type"] == "promptString" and item["description"]
    # Every ${input:...} the server uses is declared, and the keys are typed as passwords.
    assert set(REFERENCE["vscode"].findall(json.dumps(server))) == set(inputs)
    if transport == "http":
        assert server["headers"] == {"Authorization": "Bearer ${input:dust-bridge-key}"}
        assert inputs["dust-bridge-key"]["password"] is True
    else:
        assert server["env"]["DUST_API_KEY"] == "${input:dust-api-key}"
        assert inputs["dust-api-key"]["password"] is True and inputs["dust-workspace-id"]["password"] is False
    code, flag, one_server = shlex.split(add_mcp)
    assert (code, flag) == ("code", "--add-mcp")
    assert json.loads(one_server) == {"name": "dust", **server, "inputs": document["inputs"]}


@pytest.mark.parametrize("client", HTTP_CLIENTS)
def test_http_snippets_carry_a_key_header_only_when_the_bridge_has_client_keys(client: str) -> None:
    with_keys = client_config(client, "--http", env={"BRIDGE_API_KEYS": CLIENT_KEYS})
    without = client_config(client, "--http", env={"BRIDGE_PORT": "9090"})
    assert "Authorization" in with_keys[0] and "Authorization" not in without[0]
    assert "http://127.0.0.1:8080/mcp" in with_keys[0] and "http://127.0.0.1:9090/mcp" in without[0]


def test_remote_gives_the_url_the_header_and_an_mcp_remote_entry() -> None:
    url = "https://dust-bridge.example.com/mcp"
    endpoint, header, entry = client_config("remote", "--url", url, env={})
    assert endpoint == url
    assert header == "Authorization: Bearer <your client key, dmb_...>"  # beyond loopback: keys required
    assert json.loads(entry)["mcpServers"]["dust"] == {
        "command": "npx",
        "args": ["-y", "mcp-remote", url, "--header", "Authorization:${DUST_BRIDGE_AUTH}"],
        "env": {"DUST_BRIDGE_AUTH": "Bearer <your client key, dmb_...>"},
    }


def test_remote_over_plain_http_beyond_loopback_says_mcp_remote_needs_allow_http_and_warns() -> None:
    done = run_cli("client-config", "remote", "--url", "http://10.0.0.5:8080/mcp", env={})
    entry = json.loads(done.stdout.split("\n\n")[-1])
    assert "--allow-http" in entry["mcpServers"]["dust"]["args"]
    assert "sends the key and every answer in clear" in done.stderr


@dataclass
class Target:
    """Where an HTTP snippet connects, and with which headers (references filled in)."""

    url: str
    headers: dict[str, str]


def http_target(client: str, blocks: list[str]) -> Target:
    if client == "claude-code":
        argv = shlex.split(blocks[0])
        assert argv[:8] == ["claude", "mcp", "add", "--scope", "user", "--transport", "http", "dust"], argv
        assert argv[9::2] == ["--header"] * len(argv[10::2])
        headers = dict(header.split(": ", 1) for header in argv[10::2])
        return Target(argv[8], {name: fill(client, value) for name, value in headers.items()})
    document = json.loads(blocks[0])
    server = document["servers" if client == "vscode" else "mcpServers"]["dust"]
    return Target(
        server["url"], {name: fill(client, value) for name, value in server.get("headers", {}).items()}
    )


def mcp_remote_target(entry: dict[str, Any]) -> Target:
    """The URL and headers mcp-remote takes from its arguments: `--header Name:value` with `${VAR}`
    read from its environment (parseCommandLineArgs in its src/lib/utils.ts)."""
    args = list(entry["args"])
    assert args[:2] == ["-y", "mcp-remote"]
    env = {name: value.replace(KEY_PLACEHOLDER, CLIENT_KEY) for name, value in entry["env"].items()}
    headers = {}
    for index in [i for i, arg in enumerate(args) if arg == "--header"]:
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(.*)", args[index + 1])
        assert match, args[index + 1]
        headers[match.group(1)] = re.sub(r"\$\{([^}]+)\}", lambda m: env[m.group(1)], match.group(2))
    return Target(args[2], headers)


@pytest.fixture
def keyed_bridge(simulator: Proc) -> Iterator[Proc]:
    with running(
        start_bridge(bridge_env(simulator, BRIDGE_API_KEYS=CLIENT_KEYS, BRIDGE_SCAN_MODE="off"))
    ) as proc:
        yield proc


async def list_agents_over_http(target: Target) -> dict[str, Any]:
    http = httpx2.AsyncClient(headers=target.headers, timeout=60)
    async with Client(streamable_http_client(target.url, http_client=http)) as session:
        listing = await session.call_tool("list_agents", {})
    assert not listing.is_error
    return listing.structured_content or {}


async def test_the_mcp_remote_entry_runs_as_printed_and_reaches_the_bridge_with_its_key(
    keyed_bridge: Proc, tmp_path: Path
) -> None:
    """The real mcp-remote (pinned in tools/node), started with the printed arguments and environment
    (the key in place of the placeholder): it expands `${DUST_BRIDGE_AUTH}` and proxies stdio to /mcp."""
    url = f"{keyed_bridge.url}/mcp"
    blocks = client_config("remote", "--url", url, env={"BRIDGE_API_KEYS": CLIENT_KEYS})
    entry = json.loads(blocks[-1])["mcpServers"]["dust"]
    assert entry["command"] == "npx" and entry["args"][:2] == ["-y", "mcp-remote"]  # npx runs this tool
    env = node_env(tmp_path)  # mcp-remote keeps its state in ~/.mcp-auth
    env.update({name: value.replace(KEY_PLACEHOLDER, CLIENT_KEY) for name, value in entry["env"].items()})
    params = StdioServerParameters(command=str(node_tool("mcp-remote")), args=entry["args"][2:], env=env)
    async with Client(params) as client:
        listing = await client.call_tool("list_agents", {})
    assert not listing.is_error and "echo" in json.dumps(listing.structured_content)


@pytest.mark.parametrize("client", [*HTTP_CLIENTS, "remote"])
async def test_every_http_snippet_reaches_a_bridge_that_requires_client_keys(
    keyed_bridge: Proc, client: str
) -> None:
    url = f"{keyed_bridge.url}/mcp"
    options = ["--url", url] if client == "remote" else ["--http", url]
    blocks = client_config(client, *options, env={"BRIDGE_API_KEYS": CLIENT_KEYS})
    if client == "remote":
        target = mcp_remote_target(json.loads(blocks[-1])["mcpServers"]["dust"])
    else:
        target = http_target(client, blocks)
    assert target.url == url and target.headers == {"Authorization": f"Bearer {CLIENT_KEY}"}
    assert "echo" in json.dumps(await list_agents_over_http(target))


def test_an_unknown_client_exits_2_and_lists_the_clients() -> None:
    done = run_cli("client-config", "zed", env={})
    assert done.returncode == 2
    assert "invalid choice: 'zed'" in done.stderr
    for client in ("claude-desktop", "claude-code", "cursor", "vscode", "remote"):
        assert f"'{client}'" in done.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["claude-desktop", "--http"], "Claude Desktop starts its servers over stdio"),
        (["cursor", "--http", "--demo"], "--demo is for a bridge the client starts itself"),
        (["remote", "--demo"], "--demo is for a bridge the client starts itself"),
        (["vscode", "--http", "127.0.0.1:8080"], "--http/--url needs the bridge's http(s) URL"),
        (["claude-code", "--name", "my server"], "--name takes letters, digits"),
    ],
)
def test_a_combination_no_client_takes_exits_2_with_the_reason(args: list[str], reason: str) -> None:
    done = run_cli("client-config", *args, env={})
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"dust-mcp-bridge: {reason}" in done.stderr


@dataclass
class ClaudeCode:
    """Claude Code 2.1.332 from tools/node, with a throwaway HOME and config dir: nothing touches the
    real user's, nothing calls a model, and nothing leaves loopback."""

    tool: Path
    home: Path

    def run(self, argv: list[str], **extra: str) -> ToolRun:
        env = {k: v for k, v in node_env(self.home).items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
        env |= {
            "CLAUDE_CONFIG_DIR": str(self.home / ".claude"),
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, error reports or update checks
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        return run_tool([str(self.tool), *argv], env | extra, timeout=120, cwd=self.home / "project")


@pytest.fixture
def claude(tmp_path: Path) -> ClaudeCode:
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    return ClaudeCode(node_tool("claude"), home)


@pytest.mark.parametrize("how", HOW)
def test_claude_code_adds_the_printed_stdio_bridge_and_lists_it_connected(
    claude: ClaudeCode, simulator: Proc, tmp_path: Path, how: str
) -> None:
    env, options = settings_for(how, simulator, tmp_path)
    (line,) = client_config("claude-code", *options, env=env)
    launch = claude_mcp_add_launch(line)
    # Claude Code hands its whole environment down: the key it fills in, and (demo) a stray workspace.
    environment = {"DUST_API_KEY": TEST_DUST_KEY} if how == "key-by-reference" else {}
    if how == "demo":
        environment["DUST_WORKSPACE_ID"] = "elsewhere1"
    added = claude.run(shlex.split(line)[1:], **environment)
    listed = claude.run(["mcp", "list"], **environment)
    assert added.returncode == 0, added.report()
    assert "Added stdio MCP server dust with command: " in added.stdout
    assert "to user config" in added.stdout
    expected = f"dust: {shlex.join([launch.command, *launch.args])} - ✔ Connected"
    assert expected in listed.stdout.splitlines(), listed.report()


def test_claude_code_without_the_key_it_should_fill_in_lists_the_bridge_failed(
    claude: ClaudeCode, simulator: Proc, tmp_path: Path
) -> None:
    env, _ = settings_for("key-by-reference", simulator, tmp_path)
    (line,) = client_config("claude-code", env=env)
    claude.run(shlex.split(line)[1:])
    listed = claude.run(["mcp", "list"])
    assert "✘ Failed to connect" in listed.stdout, listed.report()
    assert "Missing environment variables: DUST_API_KEY" in listed.stdout
    # The bridge said why, in Claude Code's MCP log (which masks what follows "KEY:" itself).
    logs = "".join(log.read_text() for log in claude.home.glob(".cache/claude-cli-nodejs/*/mcp-logs-dust/*"))
    assert "dust-mcp-bridge: configuration error: DUST_API_KEY: " in logs
    assert "is a reference the MCP client did not fill in" in logs


def test_claude_code_adds_the_printed_http_bridge_and_lists_it_connected_with_the_client_key(
    claude: ClaudeCode, keyed_bridge: Proc
) -> None:
    url = f"{keyed_bridge.url}/mcp"
    (line,) = client_config("claude-code", "--http", url, env={"BRIDGE_API_KEYS": CLIENT_KEYS})
    added = claude.run(shlex.split(line)[1:])
    without_key = claude.run(["mcp", "list"])
    listed = claude.run(["mcp", "list"], DUST_BRIDGE_KEY=CLIENT_KEY)
    assert f"Added HTTP MCP server dust with URL: {url} to user config" in added.stdout, added.report()
    assert CLIENT_KEY not in added.stdout + listed.stdout
    assert f"dust: {url} (HTTP) - ✔ Connected" in listed.stdout.splitlines(), listed.report()
    assert f"dust: {url} (HTTP) - ✘ Failed to connect" in without_key.stdout, without_key.report()
    assert "Missing environment variables: DUST_BRIDGE_KEY" in without_key.stdout
