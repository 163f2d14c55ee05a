"""The bridge as the Claude Desktop extension (bridge/desktop.py): settings errors answered per tool
call in the form's words, ClamAV missing explained per system, folders passed as arguments, a folder
that does not exist skipped and named. `dust-mcp-bridge stdio` is started by the SDK's client, as
Claude Desktop starts it (tests/deploy/test_bundle.py does the same from the packed bundle)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from bridge.desktop import FIELD_TITLES, for_extension, scanner_help
from tests.helpers import text_of
from tests.procs import free_port

EXTENSION = {"BRIDGE_CONFIGURED_IN": "claude-desktop-extension", "BRIDGE_ENV_FILE": "none"}
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def stdio(*args: str, **env: str) -> StdioServerParameters:
    prefixes = ("DUST_", "BRIDGE_", "REDIS_", "CLAMD_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "bridge", "stdio", *args], env={**clean, **EXTENSION, **env}
    )


def test_a_configuration_error_names_the_forms_fields_and_where_the_form_is() -> None:
    sentence = for_extension(
        "DUST_WORKSPACE_ID: must be the workspace sId (letters and digits only, from the Dust URL /w/<sId>)"
        " (got 'my workspace'); BRIDGE_SCAN_MODE: Input should be 'required' or 'off' (got 'of')"
    )
    assert sentence == (
        'The Dust agents extension is not set up correctly, so it cannot reach Dust: "Workspace ID":'
        " must be the workspace sId (letters and digits only, from the Dust URL /w/<sId>) (got 'my"
        " workspace'); \"Scan mode\": Input should be 'required' or 'off' (got 'of'). Fix it in Claude"
        " Desktop → Settings → Extensions → Dust agents → Configure; the extension restarts when you save."
    )
    assert set(FIELD_TITLES) >= {"DUST_API_KEY", "DUST_WORKSPACE_ID", "DUST_BASE_URL", "BRIDGE_SCAN_MODE"}


@pytest.mark.parametrize(
    ("platform", "install"),
    [
        ("darwin", "`brew install clamav`"),
        ("linux", "`sudo apt-get install clamav-daemon`"),
        ("win32", "the Windows installer from clamav.net"),
    ],
)
def test_clamav_missing_says_how_to_install_it_or_switch_scanning_off(platform: str, install: str) -> None:
    sentence = scanner_help(platform)
    assert sentence.startswith(
        "Every file is scanned by ClamAV before it reaches Dust, and no ClamAV daemon answers on this"
        " computer:"
    )
    assert install in sentence
    assert sentence.endswith(
        'Or upload without scanning: set "Scan mode" to off in Claude Desktop → Settings → Extensions →'
        " Dust agents → Configure"
    )


async def test_invalid_settings_start_a_server_that_answers_every_tool_call_with_the_error() -> None:
    params = stdio(DUST_API_KEY="sk-whatever", DUST_WORKSPACE_ID="my workspace")
    async with Client(params) as client:
        tools = await client.list_tools()
        listed = await client.call_tool("list_agents", {})
        asked = await client.call_tool("ask_agent", {"agent": "echo", "message": "hi"})
        resources = await client.list_resources()
        instructions = client.instructions or ""
    assert {"list_agents", "ask_agent", "upload_file"} <= {tool.name for tool in tools.tools}
    for result in (listed, asked):
        assert result.is_error
        assert (
            'The Dust agents extension is not set up correctly, so it cannot reach Dust: "Workspace ID": must'
            " be the workspace sId" in text_of(result)
        )
        assert "(got 'my workspace')" in text_of(result) and "sk-whatever" not in text_of(result)
    assert all(not r.uri.startswith("dust://conversations/") for r in resources.resources)
    assert instructions.startswith("The Dust agents extension is not set up correctly")


async def test_an_empty_key_is_demo_mode_even_with_a_workspace_typed_in() -> None:
    params = stdio(DUST_API_KEY="", DUST_WORKSPACE_ID="my workspace")
    async with Client(params) as client:
        listed = await client.call_tool("list_agents", {})
        instructions = client.instructions or ""
    assert not listed.is_error, text_of(listed)
    assert "DEMO MODE" in (listed.structured_content or {})["demo"]
    assert "DEMO MODE" in instructions


def test_outside_the_extension_invalid_settings_still_exit_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "stdio"],
        env={**env, "BRIDGE_ENV_FILE": "none", "DUST_API_KEY": "sk-x", "DUST_WORKSPACE_ID": "my workspace"},
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"configuration error: DUST_WORKSPACE_ID: must be the workspace sId" in done.stderr


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "Mes documents", tmp_path / "Bureau ü"
    for folder in (first, second):
        folder.mkdir()
        (folder / "report.pdf").write_bytes(PDF)
    return first, second


async def test_folders_arrive_as_arguments_and_a_missing_one_is_named_when_a_path_is_refused(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = folders
    gone = tmp_path / "Gone"
    (tmp_path / "elsewhere.pdf").write_bytes(PDF)
    # As Claude Desktop expands a multiple-folder field: one argument per folder after the option; a
    # field it left unsubstituted is ignored. No scanner here: scanning off.
    params = stdio(
        "--upload-root",
        str(first),
        str(gone),
        "${user_config.more_folders}",
        "--upload-root",
        str(second),
        BRIDGE_SCAN_MODE="off",
    )
    async with Client(params) as client:
        from_first = await client.call_tool("upload_file", {"path": str(first / "report.pdf")})
        from_second = await client.call_tool("upload_file", {"path": str(second / "report.pdf")})
        outside = await client.call_tool("upload_file", {"path": str(tmp_path / "elsewhere.pdf")})
    assert not from_first.is_error and not from_second.is_error, text_of(from_first) + text_of(from_second)
    assert (from_first.structured_content or {})["scan"] == "skipped"
    assert outside.is_error
    assert f"skipped, because they do not exist: {gone}" in text_of(outside)


async def test_without_clamd_an_upload_is_refused_with_how_to_get_it_or_switch_scanning_off(
    folders: tuple[Path, Path],
) -> None:
    first, _ = folders
    params = stdio("--upload-root", str(first), CLAMD_URL=f"tcp://127.0.0.1:{free_port()}")
    async with Client(params) as client:
        refused = await client.call_tool("upload_file", {"path": str(first / "report.pdf")})
    assert refused.is_error
    assert "the virus scanner is unavailable (cannot connect to clamd at 127.0.0.1:" in text_of(refused)
    assert text_of(refused).endswith(f"the file was not accepted. {scanner_help()}")
