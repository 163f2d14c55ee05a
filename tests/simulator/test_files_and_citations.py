"""Generated files, their downloads and citations, as Dust's code makes and serves them.

The rules come from dust-tt/dust: front/lib/actions/mcp_execution.ts processToolResults and
mcp_utils.ts handleBase64Upload (the action's output and `generatedFiles`), action_file_helpers.ts
(a file a tool makes is `tool_output`), front-api/routes/v1/w/[wId]/files/[fileId].ts (view,
download, the use cases an API key may read), .../conversations/[cId]/files/[...rel].ts (a file of
the conversation's mount), front/lib/resources/file_resource.ts (mount paths, signed URLs) and
front/lib/api/assistant/citations.ts with the websearch and search tools (refs and `:cite[...]`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from bridge.simulator.agents import citations_answer, citations_sources, filemaker_answer
from bridge.simulator.demo_files import chart_png, csv_snippet, report_csv
from tests.simulator.support import (
    CONTEXT,
    W,
    all_events,
    answer_text,
    assert_dust_error,
    configure,
    read_answer,
    start,
    stats,
)

FILE_MAKER, CITER = "filemaker1", "citations1"
CONVERSATIONS = f"{W}/assistant/conversations"
TOOL_FILE = "application/vnd.dust.tool-output.file"
# The tables_query tool's text for the CSV it makes.
CSV_TEXT = "Your query results were generated successfully. They are available as a structured CSV file."
NOT_FOR_API = "The file use case is not supported by the API."
BAD_SCOPE = "Invalid file path: must be a conversation-scoped path (e.g. `conversation/foo.pdf`)."
MARKER = re.compile(r":cite\[([a-z0-9]{3}(?:,[a-z0-9]{3})*)\]")


async def answered(http: httpx2.AsyncClient, agent: str, message: str) -> tuple[str, list[dict[str, Any]]]:
    """A new conversation with `agent`, read to its end: (conversation sId, event data)."""
    c_id, m_id = await start(http, message, agent)
    return c_id, [e["data"] for e in all_events(await read_answer(http, c_id, m_id))]


async def agent_message(http: httpx2.AsyncClient, c_id: str, index: int = -1) -> dict[str, Any]:
    conversation = (await http.get(f"{CONVERSATIONS}/{c_id}")).json()["conversation"]
    replies = [v[-1] for v in conversation["content"] if v[-1]["type"] == "agent_message"]
    return dict(replies[index])


def files_of(action: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["title"]: f for f in action["generatedFiles"]}


# --- the file-maker ----------------------------------------------------------------------------


async def test_the_file_maker_lists_both_files_in_its_action_and_answers(client: httpx2.AsyncClient) -> None:
    c_id, events = await answered(client, FILE_MAKER, "Q3 sales")
    kinds = [e["type"] for e in events if e["type"] != "generation_tokens"]
    assert kinds == ["tool_call_started", "tool_params", "agent_action_success", "agent_message_success"]
    assert answer_text([{"data": e} for e in events]) == filemaker_answer("Q3 sales")
    assert filemaker_answer("Q3 sales") == "I made a CSV and a chart for: Q3 sales"

    params = next(e for e in events if e["type"] == "tool_params")["action"]
    assert params["generatedFiles"] == [] and params["output"] is None
    action = next(e for e in events if e["type"] == "agent_action_success")["action"]
    csv_file, png_file = action["generatedFiles"]
    # processToolResults: the file's content type, sId, DB snippet (unset) and name; no `hidden`.
    assert csv_file == {
        "contentType": "text/csv",
        "fileId": csv_file["fileId"],
        "snippet": None,
        "title": "data.csv",
    }
    assert png_file == {
        "contentType": "image/png",
        "fileId": png_file["fileId"],
        "snippet": None,
        "title": "chart.png",
    }
    assert csv_file["fileId"].startswith("fil_") and png_file["fileId"].startswith("fil_")

    csv_block, png_block = (block["resource"] for block in action["output"])
    assert csv_block == {
        "mimeType": TOOL_FILE,
        "uri": f"{str(client.base_url).rstrip('/')}{W}/files/{csv_file['fileId']}",
        "fileId": csv_file["fileId"],
        "title": "data",
        "contentType": "text/csv",
        "snippet": csv_snippet(report_csv("Q3 sales")),
        "text": CSV_TEXT,
    }
    assert png_block == {
        "mimeType": TOOL_FILE,
        "uri": f"file://{png_file['fileId']}",
        "fileId": png_file["fileId"],
        "title": "chart.png",
        "contentType": "image/png",
        "snippet": None,
        "text": "Generated image: chart.png",
    }
    final = events[-1]["message"]
    assert final["actions"] == [action]
    # The conversation shows the same action on its agent message.
    assert (await agent_message(client, c_id))["actions"] == [action]


async def test_the_generated_files_are_stored_with_their_bytes(client: httpx2.AsyncClient) -> None:
    await answered(client, FILE_MAKER, "Q3 sales")
    stored = {f["fileName"]: f for f in (await client.get("/_sim/files")).json()["files"]}
    assert stored["data.csv"]["fileSize"] == len(report_csv("Q3 sales"))
    assert stored["chart.png"]["fileSize"] == len(chart_png("Q3 sales"))
    assert stored["data.csv"]["status"] == stored["chart.png"]["status"] == "ready"
    assert chart_png("Q3 sales").startswith(b"\x89PNG\r\n\x1a\n") and chart_png("Q3 sales") != chart_png("Q4")
    assert 200 < len(report_csv("Q3 sales")) < 1000 and report_csv("Q3 sales") == report_csv("Q3 sales")


# --- GET files/{fileId} ------------------------------------------------------------------------


async def made_files(
    http: httpx2.AsyncClient, message: str = "Q3 sales"
) -> tuple[str, dict[str, dict[str, Any]]]:
    c_id, events = await answered(http, FILE_MAKER, message)
    action = next(e for e in events if e["type"] == "agent_action_success")["action"]
    return c_id, files_of(action)


async def test_a_conversation_file_is_viewed_inline_when_safe_and_downloaded_through_a_signed_url(
    client: httpx2.AsyncClient,
) -> None:
    _, files = await made_files(client)
    chart = f"{W}/files/{files['chart.png']['fileId']}"
    viewed = await client.get(chart, params={"action": "view"})
    assert viewed.status_code == 200
    assert viewed.headers["content-type"] == "image/png"  # the file's type, no parameters
    assert viewed.content == chart_png("Q3 sales")

    for params in ({"action": "download"}, {}, {"action": "open"}):  # no or another action: download
        redirected = await client.get(chart, params=params)
        assert redirected.status_code == 302, params
        location = redirected.headers["location"]
        assert urlsplit(location).path.endswith(f"/files/w/demo/{files['chart.png']['fileId']}/original")
        query = parse_qs(urlsplit(location).query)
        assert query["X-Goog-Expires"] == ["30"]
        assert query["response-content-disposition"] == ['attachment; filename="chart.png"']
        fetched = await client.get(location, headers={"Authorization": ""})
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == "image/png"
        assert fetched.headers["content-disposition"] == 'attachment; filename="chart.png"'
        assert fetched.content == chart_png("Q3 sales")

    processed = await client.get(chart, params={"action": "download", "version": "processed"})
    assert urlsplit(processed.headers["location"]).path.endswith("/processed")


async def test_a_signed_url_that_was_tampered_with_is_refused(client: httpx2.AsyncClient) -> None:
    _, files = await made_files(client)
    location = (await client.get(f"{W}/files/{files['chart.png']['fileId']}")).headers["location"]
    tampered = location.replace("chart.png", "other.png")
    refused = await client.get(tampered)
    assert refused.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in refused.text
    recorded = (await stats(client))["storage_requests"]
    assert [r["status"] for r in recorded] == [403]


async def test_signed_urls_can_point_at_another_origin(client: httpx2.AsyncClient) -> None:
    _, files = await made_files(client)
    port = client.base_url.port
    await configure(client, storage_url=f"http://localhost:{port}/_storage")
    location = (await client.get(f"{W}/files/{files['chart.png']['fileId']}")).headers["location"]
    assert location.startswith(f"http://localhost:{port}/_storage/dust-private-uploads/files/w/demo/")
    fetched = await client.get(location)
    assert fetched.content == chart_png("Q3 sales")
    assert (await stats(client))["storage_requests"][-1]["authorization"] is True  # this client sent it


async def test_a_type_unsafe_to_display_is_downloaded_even_when_viewed(client: httpx2.AsyncClient) -> None:
    created = await client.post(
        f"{W}/files",
        json={
            "contentType": "text/x-python",
            "fileName": "run.py",
            "fileSize": 12,
            "useCase": "conversation",
        },
    )
    sid = created.json()["file"]["sId"]
    uploaded = await client.post(
        f"{W}/files/{sid}", files={"file": ("run.py", b"print('hi')\n", "text/x-python")}
    )
    assert uploaded.status_code == 200, uploaded.text
    viewed = await client.get(f"{W}/files/{sid}", params={"action": "view"})
    assert viewed.status_code == 302
    fetched = await client.get(viewed.headers["location"])
    assert fetched.content == b"print('hi')\n"
    assert fetched.headers["content-disposition"] == 'attachment; filename="run.py"'


async def test_a_tool_output_file_is_refused_to_an_api_key(client: httpx2.AsyncClient) -> None:
    _, files = await made_files(client)
    data = f"{W}/files/{files['data.csv']['fileId']}"
    for params in ({"action": "view"}, {"action": "download"}, {}):
        assert_dust_error(await client.get(data, params=params), 400, "invalid_request_error", NOT_FOR_API)
    assert_dust_error(await client.delete(data), 400, "invalid_request_error", NOT_FOR_API)
    assert_dust_error(
        await client.get(f"{W}/files/fil_unknown000"), 404, "file_not_found", "The file was not found."
    )


# --- GET .../conversations/{cId}/files/conversation/<path> ---------------------------------------


async def test_both_files_are_read_by_their_conversation_path(client: httpx2.AsyncClient) -> None:
    c_id, _ = await made_files(client)
    base = f"{CONVERSATIONS}/{c_id}/files"
    data = await client.get(f"{base}/conversation/data.csv")
    assert data.status_code == 200
    assert data.headers["content-type"] == "text/csv"
    assert data.content == report_csv("Q3 sales")
    chart = await client.get(f"{base}/conversation/chart.png")
    assert chart.headers["content-type"] == "image/png" and chart.content == chart_png("Q3 sales")
    # path.posix.normalize first: `./` and inner `..` that stay inside are fine.
    assert (await client.get(f"{base}/conversation/x/%2E%2E/data.csv")).content == report_csv("Q3 sales")


async def test_the_conversation_path_route_refuses_like_dust(client: httpx2.AsyncClient) -> None:
    c_id, _ = await made_files(client)
    base = f"{CONVERSATIONS}/{c_id}/files"
    assert_dust_error(
        await client.get(f"{CONVERSATIONS}/nope000000/files/conversation/data.csv"),
        404,
        "conversation_not_found",
        "Conversation not found.",
    )
    for rel in ("data.csv", "project/data.csv", "/conversation/data.csv", "pod/data.csv"):
        assert_dust_error(await client.get(f"{base}/{rel}"), 400, "invalid_request_error", BAD_SCOPE)
    outside = await client.get(f"{base}/conversation/%2E%2E/%2E%2E/files/fil_x")
    assert_dust_error(
        outside, 403, "workspace_auth_error", "Access denied: path is outside conversation scope."
    )
    assert_dust_error(
        await client.get(f"{base}/conversation/missing.csv"), 404, "file_not_found", "File not found."
    )


async def test_a_second_file_of_the_same_name_gets_its_sid_in_its_path(client: httpx2.AsyncClient) -> None:
    c_id, first = await made_files(client)
    resp = await client.post(
        f"{CONVERSATIONS}/{c_id}/messages",
        json={"content": "Q4 sales", "mentions": [{"configurationId": FILE_MAKER}], "context": CONTEXT},
    )
    m_id = resp.json()["agentMessages"][0]["sId"]
    events = [e["data"] for e in all_events(await read_answer(client, c_id, m_id))]
    second = files_of(next(e for e in events if e["type"] == "agent_action_success")["action"])
    assert second["data.csv"]["title"] == "data.csv"  # the title stays the file's name
    base = f"{CONVERSATIONS}/{c_id}/files/conversation"
    assert (await client.get(f"{base}/data.csv")).content == report_csv("Q3 sales")
    sid = second["data.csv"]["fileId"]
    assert (await client.get(f"{base}/data_{sid}.csv")).content == report_csv("Q4 sales")
    assert first["data.csv"]["fileId"] != sid


async def test_an_uploaded_file_of_a_conversation_is_in_its_mount(client: httpx2.AsyncClient) -> None:
    c_id, _ = await start(client, "hello", "echo000001")
    created = await client.post(
        f"{W}/files",
        json={
            "contentType": "text/plain",
            "fileName": "notes.txt",
            "fileSize": 6,
            "useCase": "conversation",
            "useCaseMetadata": {"conversationId": c_id},
        },
    )
    sid = created.json()["file"]["sId"]
    await client.post(f"{W}/files/{sid}", files={"file": ("notes.txt", b"notes\n", "text/plain")})
    read = await client.get(f"{CONVERSATIONS}/{c_id}/files/conversation/notes.txt")
    assert read.status_code == 200 and read.content == b"notes\n"
    assert (await client.get(f"{W}/files/{sid}", params={"action": "view"})).content == b"notes\n"


# --- cite-sources ------------------------------------------------------------------------------


async def test_the_citing_agent_searches_then_answers_with_cite_markers(client: httpx2.AsyncClient) -> None:
    c_id, events = await answered(client, CITER, "Q3 sales")
    web, docs = (e["action"] for e in events if e["type"] == "agent_action_success")
    sources = citations_sources("Q3 sales")
    assert (web["internalMCPServerName"], web["toolName"]) == ("web_search_&_browse", "websearch")
    assert web["functionCallName"] == "web_search_browse__websearch"
    assert (docs["internalMCPServerName"], docs["toolName"]) == ("search", "semantic_search")
    assert web["citationsAllocated"] == 2 and docs["citationsAllocated"] == 2
    assert [
        (r["resource"]["reference"], r["resource"]["title"], r["resource"]["uri"]) for r in web["output"]
    ] == sources[:2]
    for block in web["output"]:
        assert block["type"] == "resource"
        assert set(block["resource"]) == {"mimeType", "title", "text", "uri", "reference"}
        assert block["resource"]["mimeType"] == "application/vnd.dust.tool-output.websearch-result"
    assert [
        (r["resource"]["ref"], r["resource"]["text"], r["resource"]["uri"]) for r in docs["output"]
    ] == sources[2:]
    for block in docs["output"]:
        resource = block["resource"]
        assert set(resource) == {"mimeType", "uri", "text", "id", "tags", "ref", "chunks", "source"}
        assert resource["mimeType"] == "application/vnd.dust.tool-output.data-source-search-result"
        assert resource["source"]["provider"] in ("notion", "google_drive")
        assert resource["chunks"] and all(isinstance(c, str) for c in resource["chunks"])

    content = answer_text([{"data": e} for e in events])
    assert content == citations_answer("Q3 sales") == events[-1]["message"]["content"]
    assert (await agent_message(client, c_id))["actions"] == [web, docs]


def test_the_answer_cites_one_web_result_a_web_result_with_a_document_and_one_unknown_ref() -> None:
    answer = citations_answer("Q3 sales")
    sources = citations_sources("Q3 sales")
    known = {ref for ref, _, _ in sources}
    groups = [group.split(",") for group in MARKER.findall(answer)]
    assert len(groups) == 3 and answer.count(":cite[") == 3
    single, pair, unknown = groups
    assert single == [sources[0][0]]
    assert pair == [sources[1][0], sources[2][0]]  # a web result and a document
    assert len(unknown) == 1 and unknown[0] not in known
    assert len(known) == 4 and all(re.fullmatch(r"[a-z0-9]{3}", ref) for ref in known)
    # Deterministic, and a function of the message.
    assert citations_answer("Q3 sales") == answer and citations_sources("Q3 sales") == sources
    assert citations_sources("Q4 sales") != sources


@pytest.mark.parametrize("message", ["", 'a, b "c"', "été 2026"])
def test_sources_and_answers_hold_for_any_message(message: str) -> None:
    sources = citations_sources(message)
    refs = [ref for ref, _, _ in sources]
    assert len(set(refs)) == 4
    assert len(MARKER.findall(citations_answer(message))) == 3
