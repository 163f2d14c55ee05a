"""What the agent made and cited, as a client receives it: generated files as resource links (and
in the text), read back byte for byte with resources/read; citations as numbered footnotes over the
sources of the agent's searches. End to end through the SDK's client, the simulator and Redis."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import BlobResourceContents, ResourceLink, TextResourceContents

from bridge.simulator.agents import citations_answer, citations_sources, filemaker_answer
from bridge.simulator.demo_files import chart_png, report_csv
from tests.helpers import faults, text_of
from tests.mcp.support import ERAS
from tests.procs import Proc

pytestmark = pytest.mark.usefixtures("reset_simulator")


@pytest.mark.parametrize("mode", ERAS)
async def test_generated_files_come_back_as_links_and_read_back_byte_for_byte(
    bridge: Proc, mode: str
) -> None:
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:  # type: ignore[arg-type]
        result = await client.call_tool("ask_agent", {"agent": "file-maker", "message": "sales"})
        links = {block.name: block for block in result.content if isinstance(block, ResourceLink)}
        chart = (await client.read_resource(str(links["chart.png"].uri))).contents[0]
        table = (await client.read_resource(str(links["data.csv"].uri))).contents[0]
        transcript = (
            await client.call_tool("get_conversation", {"conversation": _handle(result)})
        ).structured_content
    content: dict[str, Any] = result.structured_content or {}
    assert content["answer"] == filemaker_answer("sales")
    assert {f["name"]: f["type"] for f in content["files"]} == {
        "data.csv": "text/csv",
        "chart.png": "image/png",
    }
    assert links["chart.png"].mime_type == "image/png" and str(links["chart.png"].uri).startswith(
        "dust://files/fil_"
    )
    assert "chart.png (image/png): dust://files/" in text_of(result)  # clients that hide resources
    assert isinstance(chart, BlobResourceContents) and chart.mime_type == "image/png"
    assert base64.b64decode(chart.blob) == chart_png("sales")
    assert isinstance(table, TextResourceContents) and table.text.encode() == report_csv("sales")
    assert transcript is not None
    assert {f["name"] for f in transcript["messages"][-1]["files"]} == {"data.csv", "chart.png"}


async def test_an_unknown_file_is_refused_by_resources_read(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        with pytest.raises(MCPError, match="not a file an agent made in one of your conversations"):
            await client.read_resource("dust://files/fil_unknown000")


async def test_citations_become_numbered_footnotes_over_the_listed_sources(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        result = await client.call_tool("ask_agent", {"agent": "cite-sources", "message": "onboarding"})
        handle = _handle(result)
        transcript = await client.call_tool("get_conversation", {"conversation": handle})
        resource = (await client.read_resource(f"dust://conversations/{handle}")).contents[0]
    content: dict[str, Any] = result.structured_content or {}
    (web_1, title_1, url_1), (web_2, title_2, url_2), (doc_1, title_3, url_3), _ = citations_sources(
        "onboarding"
    )
    raw = citations_answer("onboarding")
    assert ":cite[" in raw and ":cite[" not in content["answer"]
    expected = (
        raw.replace(f":cite[{web_1}]", "[1]")
        .replace(f":cite[{web_2},{doc_1}]", "[2][3]")
        .split(" One figure")[0]
    )
    assert content["answer"].startswith(expected)
    assert [(s["number"], s["title"], s["url"]) for s in content["sources"]] == [
        (1, title_1, url_1),
        (2, title_2, url_2),
        (3, title_3, url_3),
    ]
    assert content["answer"].endswith(
        f"Sources:\n[1] {title_1} — {url_1}\n[2] {title_2} — {url_2}\n[3] {title_3} — {url_3}"
    )
    # Read back later, the answer is the same footnoted text with the same sources, never raw markers.
    agent_turn = (transcript.structured_content or {})["messages"][-1]
    assert agent_turn["content"] == content["answer"] and agent_turn["sources"] == content["sources"]
    assert ":cite[" not in text_of(transcript)
    assert isinstance(resource, TextResourceContents) and ":cite[" not in resource.text
    assert json.loads(resource.text)["messages"][-1]["sources"] == content["sources"]


def _handle(result: Any) -> str:
    return str((result.structured_content or {})["conversation"])


async def test_a_file_dust_will_not_serve_to_the_key_says_so_with_the_dust_link(
    bridge: Proc, simulator: Proc
) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        result = await client.call_tool("ask_agent", {"agent": "file-maker", "message": "q4"})
        links = {block.name: block for block in result.content if isinstance(block, ResourceLink)}
        # data.csv is a tool's own file: refused by id to an API key; its conversation path is gone too.
        faults(
            simulator,
            fail_next=[
                {"match": "/files/conversation/", "method": "GET", "status": 404, "type": "file_not_found"}
            ],
        )
        with pytest.raises(MCPError) as refused:
            await client.read_resource(str(links["data.csv"].uri))
    url = (result.structured_content or {})["url"]
    assert "Dust does not serve 'data.csv' to the bridge's API key; open it in Dust" in str(refused.value)
    assert url in str(refused.value)
