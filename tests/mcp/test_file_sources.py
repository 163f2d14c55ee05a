"""Files by path end to end: the SDK's client starts `dust-mcp-bridge stdio` (as Claude Desktop
does) with allowed folders from the setting or from the client's roots; over HTTP paths are refused.
Each file goes through the real pipeline: libmagic, the allow-list, clamd, the simulator's Dust."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.types import ListRootsResult, Root

from tests.helpers import text_of
from tests.procs import Proc, bridge_env, free_port, running, spawn, start_bridge, wait_for_http

pytestmark = pytest.mark.usefixtures("reset_simulator")

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def stdio(simulator: Proc, clamd: Proc, **extra: str) -> StdioServerParameters:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_", "REDIS_", "CLAMD_"))},
        **bridge_env(simulator, clamd=clamd, **extra),
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "bridge", "stdio"], env=env)


def shared(*folders: Path) -> Any:
    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=folder.as_uri()) for folder in folders])

    return list_roots


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(PDF)
    (tmp_path / "private.pdf").write_bytes(PDF)
    return folder


async def test_a_file_in_an_allowed_folder_is_uploaded_by_path_and_attached_by_path(
    simulator: Proc, clamd: Proc, documents: Path
) -> None:
    params = stdio(simulator, clamd, BRIDGE_UPLOAD_ROOTS=str(documents))
    async with Client(params) as client:
        uploaded = await client.call_tool("upload_file", {"path": str(documents / "report.pdf")})
        record = uploaded.structured_content or {}
        asked = await client.call_tool(
            "ask_agent",
            {
                "agent": "file-reader",
                "message": "what is attached?",
                "files": [str(documents / "report.pdf")],
            },
        )
    assert not uploaded.is_error, text_of(uploaded)
    assert record["filename"] == "report.pdf" and record["mime_type"] == "application/pdf"
    assert record["scan"] == "clean" and record["size"] == len(PDF)
    assert text_of(asked).startswith("I can see 1 file(s): report.pdf (application/pdf)")


async def test_a_path_outside_the_allowed_folders_reads_nothing(
    simulator: Proc, clamd: Proc, documents: Path
) -> None:
    params = stdio(simulator, clamd, BRIDGE_UPLOAD_ROOTS=str(documents))
    async with Client(params) as client:
        outside = await client.call_tool("upload_file", {"path": str(documents.parent / "private.pdf")})
        dotted = await client.call_tool("upload_file", {"path": f"{documents}/../private.pdf"})
        attached = await client.call_tool(
            "ask_agent",
            {"agent": "file-reader", "message": "hi", "files": [str(documents.parent / "private.pdf")]},
        )
    for result in (outside, dotted, attached):
        assert result.is_error and "outside the folders the bridge may read" in text_of(result)


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # roots/list mid-call; 2026-07-28: input_required
async def test_the_clients_roots_allow_a_folder_and_nothing_allowed_says_how(
    simulator: Proc, clamd: Proc, documents: Path, mode: str
) -> None:
    async with Client(
        stdio(simulator, clamd),
        mode=mode,  # type: ignore[arg-type]
        list_roots_callback=shared(documents),
    ) as client:
        uploaded = await client.call_tool("upload_file", {"path": str(documents / "report.pdf")})
        asked = await client.call_tool(
            "ask_agent",
            {
                "agent": "file-reader",
                "message": "what is attached?",
                "files": [str(documents / "report.pdf")],
            },
        )
        by_url = await client.call_tool("upload_file", {"url": "https://127.0.0.1/x.pdf"})
    assert not uploaded.is_error, text_of(uploaded)
    assert text_of(asked).startswith("I can see 1 file(s): report.pdf (application/pdf)")
    assert by_url.is_error and "only public addresses" in text_of(by_url)  # no roots asked for a URL
    async with Client(stdio(simulator, clamd)) as client:
        refused = await client.call_tool("upload_file", {"path": str(documents / "report.pdf")})
    assert refused.is_error and "set BRIDGE_UPLOAD_ROOTS" in text_of(refused)


async def test_over_http_a_path_is_refused_because_the_servers_disk_is_not_the_users(
    bridge: Proc, documents: Path
) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        refused = await client.call_tool("upload_file", {"path": str(documents / "report.pdf")})
        attached = await client.call_tool(
            "ask_agent", {"agent": "file-reader", "message": "hi", "files": [str(documents / "report.pdf")]}
        )
    for result in (refused, attached):
        assert result.is_error and "only when the bridge runs on your own machine" in text_of(result)


async def test_a_call_with_no_source_or_two_sources_is_refused(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        none = await client.call_tool("upload_file", {})
        both = await client.call_tool(
            "upload_file", {"path": "/x", "filename": "a.txt", "content_base64": "YQ=="}
        )
    assert none.is_error and both.is_error and "exactly one of path, url or content_base64" in text_of(none)


# --- files by URL ----------------------------------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Proc]:
    """A plain web server on loopback serving report.pdf (the SSRF guard lets it through only where
    a test allows 127.0.0.1/32)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "report.pdf").write_bytes(PDF)
    port = free_port()
    args = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)]
    proc = spawn(args, port, name="web")
    with running(proc):
        wait_for_http(f"http://127.0.0.1:{port}/", proc.popen)
        yield proc


async def test_a_url_is_fetched_scanned_and_attached_when_the_guard_allows_its_address(
    simulator: Proc, clamd: Proc, web: Proc
) -> None:
    env = bridge_env(
        simulator,
        clamd=clamd,
        BRIDGE_URL_FETCH_ALLOW_HTTP="true",
        BRIDGE_URL_FETCH_ALLOW_NETWORKS="127.0.0.1/32",
    )
    with running(start_bridge(env)) as bridge:
        async with Client(f"{bridge.url}/mcp") as client:
            uploaded = await client.call_tool("upload_file", {"url": f"{web.url}/report.pdf"})
            asked = await client.call_tool(
                "ask_agent",
                {"agent": "file-reader", "message": "and this?", "files": [f"{web.url}/report.pdf"]},
            )
    record = uploaded.structured_content or {}
    assert not uploaded.is_error, text_of(uploaded)
    assert (
        record["filename"] == "report.pdf"
        and record["mime_type"] == "application/pdf"
        and record["scan"] == "clean"
    )
    assert text_of(asked).startswith("I can see 1 file(s): report.pdf (application/pdf)")


async def test_a_url_to_a_private_address_or_over_plain_http_is_refused_by_default(
    bridge: Proc, web: Proc
) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        plain = await client.call_tool("upload_file", {"url": f"{web.url}/report.pdf"})
        https_loopback = await client.call_tool(
            "upload_file", {"url": f"https://127.0.0.1:{web.port}/report.pdf"}
        )
        metadata = await client.call_tool(
            "ask_agent",
            {"agent": "file-reader", "message": "hi", "files": ["https://169.254.169.254/latest"]},
        )
    assert plain.is_error and "http" in text_of(plain).lower()
    for refused in (https_loopback, metadata):
        assert refused.is_error and "only public addresses may be fetched" in text_of(refused)


async def test_a_path_or_url_over_the_size_cap_is_refused_and_leaves_no_temp_file(
    simulator: Proc, clamd: Proc, documents: Path, web: Proc, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    params = stdio(
        simulator,
        clamd,
        BRIDGE_UPLOAD_ROOTS=str(documents),
        BRIDGE_UPLOAD_MAX_BYTES=str(len(PDF) - 1),
        BRIDGE_UPLOAD_DIR=str(spool),
        BRIDGE_URL_FETCH_ALLOW_HTTP="true",
        BRIDGE_URL_FETCH_ALLOW_NETWORKS="127.0.0.1/32",
    )
    async with Client(params) as client:
        by_path = await client.call_tool("upload_file", {"path": str(documents / "report.pdf")})
        by_url = await client.call_tool("upload_file", {"url": f"{web.url}/report.pdf"})
        left = sorted(path.name for path in spool.rglob("*"))
    for refused in (by_path, by_url):
        assert refused.is_error and "larger than the upload limit" in text_of(refused), text_of(refused)
    assert left == []
