"""The Dust simulator, driven over real HTTP as a separate process (the session `simulator` fixture)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2

from bridge.simulator.agents import story_text
from tests.procs import Proc
from tests.simulator.support import (
    CONTEXT,
    TERMINAL,
    W,
    all_events,
    answer_text,
    assert_error,
    configure,
    events_url,
    eventually,
    frames,
    read_answer,
    read_connection,
    start,
    stats,
)

# ---------------------------------------------------------------- auth and agents


async def test_auth_errors(client: httpx2.AsyncClient) -> None:
    # front-api/middlewares/public_api_auth.ts and front/lib/auth.ts getBearerToken / getAPIKey.
    path = f"{W}/assistant/agent_configurations"
    # An empty header is no header (`if (!authHeader)`).
    assert_error(await client.get(path, headers={"Authorization": ""}), 401, "not_authenticated")
    async with httpx2.AsyncClient(base_url=str(client.base_url)) as anonymous:
        assert_error(await anonymous.get(path), 401, "not_authenticated")
    resp = await client.get(path, headers={"Authorization": "Token sk-abc"})
    assert_error(resp, 401, "malformed_authorization_header_error")
    assert resp.json()["error"]["message"] == "Missing Authorization header"
    resp = await client.get(path, headers={"Authorization": "Bearer abc"})
    assert_error(resp, 401, "malformed_authorization_header_error")
    assert resp.json()["error"]["message"] == "Malformed Authorization header"
    # The scheme is case-insensitive and the token may hold `-._~+/` (getBearerToken's regex).
    assert (await client.get(path, headers={"Authorization": "bearer  sk-a_b.c~d"})).status_code == 200
    assert_error(
        await client.get("/api/v1/w/other/assistant/agent_configurations"), 404, "workspace_not_found"
    )
    assert (await client.get(path)).status_code == 200  # any sk- key while api_key is unset

    await configure(client, api_key="sk-right")
    assert_error(await client.get(path), 401, "invalid_api_key_error")
    assert (await client.get(path, headers={"Authorization": "Bearer sk-right"})).status_code == 200

    recorded = (await stats(client))["requests"]
    assert {
        "method": "GET",
        "path": "/api/v1/w/other/assistant/agent_configurations",
        "status": 404,
    } in recorded


async def test_agent_list_and_lookup(client: httpx2.AsyncClient) -> None:
    # No view means `all` for an API key; the unpublished agent is not in it.
    resp = await client.get(f"{W}/assistant/agent_configurations")
    agents = resp.json()["agentConfigurations"]
    assert [a["sId"] for a in agents] == [
        "dust",
        "echo000001",
        "slow000001",
        "research01",
        "broken0001",
        "files00001",
        "story00001",
        "approve001",
        "question01",
        "auth000001",
        "delegate01",
        "longrun001",
        "filemaker1",
        "citations1",
    ]
    required = {
        "id", "sId", "version", "versionCreatedAt", "versionAuthorId", "name", "description", "instructions",
        "pictureUrl", "status", "scope", "userFavorite", "model", "maxStepsPerRun", "templateId",
    }  # fmt: skip
    for agent in agents:
        assert required <= agent.keys()
        assert agent["status"] == "active"
        assert agent["userFavorite"] is False  # favorites are per user; a key has none
        assert agent["skills"] == []
        assert agent["description"]
        assert {"providerId", "modelId", "temperature"} <= agent["model"].keys()
    names = {a["sId"]: a["name"] for a in agents}
    assert names["echo000001"] == "echo" and names["files00001"] == "file-reader"

    resp = await client.get(f"{W}/assistant/agent_configurations", params={"view": "global"})
    assert [a["sId"] for a in resp.json()["agentConfigurations"]] == ["dust"]
    resp = await client.get(f"{W}/assistant/agent_configurations/echo000001")
    assert resp.json()["agentConfiguration"]["name"] == "echo"
    assert_error(
        await client.get(f"{W}/assistant/agent_configurations/nope"), 404, "agent_configuration_not_found"
    )
    assert_error(
        await client.get(f"{W}/assistant/agent_configurations?view=bogus"), 400, "invalid_request_error"
    )


# ---------------------------------------------------------------- conversations and streaming


async def test_echo_through_redirect_and_turn_two(client: httpx2.AsyncClient) -> None:
    c_id, m_id = await start(client, "hello", "echo000001")

    resp = await client.get(events_url(c_id, m_id), params={"lastEventId": ""})
    assert resp.status_code == 307
    assert resp.headers["location"] == events_url(c_id, m_id, "/api/sse/v1") + "?lastEventId="

    [conn] = await read_answer(client, c_id, m_id)
    assert conn.status == 200 and conn.handshake_first and conn.done and not conn.broken
    assert answer_text(conn.events) == "Echo (turn 1): hello"
    final = conn.events[-1]["data"]
    assert final["type"] == "agent_message_success" and final["runIds"] == []
    assert final["message"]["content"] == "Echo (turn 1): hello" and final["message"]["status"] == "succeeded"
    for event in conn.events:
        assert event["data"]["configurationId"] == "echo000001" and event["data"]["messageId"] == m_id
        assert isinstance(event["data"]["created"], int)

    body = {"content": "again", "mentions": [{"configurationId": "echo000001"}], "context": CONTEXT}
    resp = await client.post(f"{W}/assistant/conversations/{c_id}/messages", json=body)
    assert resp.status_code == 200, resp.text
    [reply] = resp.json()["agentMessages"]
    assert reply["parentMessageId"] == resp.json()["message"]["sId"]
    connections = await read_answer(client, c_id, reply["sId"])
    assert answer_text(all_events(connections)) == "Echo (turn 2): again"

    conversation = (await client.get(f"{W}/assistant/conversations/{c_id}")).json()["conversation"]
    assert conversation["url"].endswith(f"/w/demo/conversation/{c_id}")
    assert [v[-1]["type"] for v in conversation["content"]] == ["user_message", "agent_message"] * 2
    assert conversation["content"][3][0]["status"] == "succeeded"
    assert conversation["content"][3][0]["content"] == "Echo (turn 2): again"


async def test_direct_stream_without_handshake(client: httpx2.AsyncClient) -> None:
    await configure(client, redirect_sse=False, handshake=False)
    c_id, m_id = await start(client, "hi", "dust")
    [conn] = await read_answer(client, c_id, m_id)
    assert conn.status == 200 and not conn.handshake_first and conn.done
    assert answer_text(conn.events) == "Hello from the Dust simulator. You said: hi"
    paths = [(r["path"], r["status"]) for r in (await stats(client))["requests"]]
    assert (events_url(c_id, m_id), 200) in paths


async def test_done_after_events_per_connection_then_resume(client: httpx2.AsyncClient) -> None:
    await configure(client, token_delay_ms=0, events_per_connection=50)
    c_id, m_id = await start(client, "the sea", "story00001")
    connections = await read_answer(client, c_id, m_id)

    assert len(connections) >= 10  # ~530 events
    for conn in connections:
        assert conn.done and not conn.broken and len(conn.events) <= 50
    events = all_events(connections)
    ids = [e["eventId"] for e in events]
    assert len(ids) == len(set(ids))
    keys = [tuple(int(part) for part in i.split("-")) for i in ids]
    assert keys == sorted(keys)
    assert answer_text(events) == story_text("the sea")

    # No gaps: one uncapped replay from the start gives exactly the same events.
    await configure(client, events_per_connection=100_000)
    [replay] = await read_answer(client, c_id, m_id)
    assert [e["eventId"] for e in replay.events] == ids
    assert (await stats(client))["stream_connections"] == len(connections) + 1


async def test_cut_stream_after_then_reconnect(client: httpx2.AsyncClient) -> None:
    await configure(client, cut_stream_after=3)
    c_id, m_id = await start(client, "cut me", "echo000001")
    connections = await read_answer(client, c_id, m_id)
    first, *rest = connections
    assert first.broken and not first.done and len(first.events) == 3
    assert rest and all(not c.broken for c in rest)  # only once per message
    assert answer_text(all_events(connections)) == "Echo (turn 1): cut me"


async def test_connection_lifetime_ends_with_done(client: httpx2.AsyncClient) -> None:
    await configure(client, slow_seconds=30, connection_lifetime_seconds=0.3)
    c_id, m_id = await start(client, "wait", "slow000001")
    conn = await read_connection(client, c_id, m_id)
    assert conn.done and conn.types[:2] == ["tool_call_started", "tool_params"]
    assert not set(conn.types) & TERMINAL


async def test_cancel_keeps_socket_open(client: httpx2.AsyncClient) -> None:
    await configure(client, slow_seconds=30)
    c_id, m_id = await start(client, "please wait", "slow000001")
    seen: list[str] = []
    async with client.stream("GET", events_url(c_id, m_id), follow_redirects=True) as resp:
        stream = frames(resp)
        async for frame in stream:
            if frame[0].startswith("data: {"):
                seen.append(json.loads(frame[0][6:])["data"]["type"])
            if "tool_params" in seen:
                break
        resp_cancel = await client.post(
            f"{W}/assistant/conversations/{c_id}/cancel", json={"messageIds": [m_id]}
        )
        assert resp_cancel.json() == {"success": True}
        frame = await anext(stream)
        assert json.loads(frame[0][6:])["data"]["type"] == "agent_generation_cancelled"
        # Nothing more, no `done`: the socket stays open and silent. (Cancelling a read would close the
        # connection, so the pending read runs as a task that must still be waiting.)
        pending = asyncio.ensure_future(anext(stream))
        finished, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not finished
        assert (await stats(client))["open_streams"] == 1
        pending.cancel()
    # Leaving the `async with` closed the socket; the simulator notices without writing anything.

    async def closed() -> bool:
        return bool((await stats(client))["open_streams"] == 0)

    await eventually(closed)
    assert (await stats(client))["cancels"] == [{"conversationId": c_id, "messageIds": [m_id]}]
    conversation = (await client.get(f"{W}/assistant/conversations/{c_id}")).json()["conversation"]
    assert conversation["content"][1][0]["status"] == "cancelled"
    # Cancelling again, or an unknown id, still succeeds.
    again = await client.post(f"{W}/assistant/conversations/{c_id}/cancel", json={"messageIds": ["nothing"]})
    assert again.json() == {"success": True}
    assert_error(
        await client.post(f"{W}/assistant/conversations/nope/cancel", json={"messageIds": []}),
        404,
        "conversation_not_found",
    )


async def test_researcher_and_broken_event_sequences(client: httpx2.AsyncClient) -> None:
    c_id, m_id = await start(client, "tides", "research01")
    events = all_events(await read_answer(client, c_id, m_id))
    types = [e["data"]["type"] for e in events]
    tool_part = [t for t in types if t != "generation_tokens"]
    assert tool_part == [
        "tool_call_started",
        "tool_params",
        "tool_notification",
        "agent_action_success",
        "agent_message_success",
    ]
    assert types.index("tool_call_started") > 0 and events[0]["data"]["classification"] == "chain_of_thought"
    notification = events[types.index("tool_notification")]["data"]["notification"]
    assert notification["_meta"]["data"]["label"] == "Searching the web"
    assert events[types.index("tool_call_started")]["data"]["toolName"] == "web_search"
    assert answer_text(events) == "Research summary for: tides"
    assert answer_text(events, "chain_of_thought")

    c_id, m_id = await start(client, "oops", "broken0001")
    [conn] = await read_answer(client, c_id, m_id)
    assert conn.done and conn.types[-1] == "agent_error" and conn.types.count("generation_tokens") >= 2
    assert conn.events[-1]["data"]["error"] == {
        "code": "model_error",
        "message": "The model provider failed",
        "metadata": None,
    }
    conversation = (await client.get(f"{W}/assistant/conversations/{c_id}")).json()["conversation"]
    assert conversation["content"][1][0]["status"] == "failed"


async def test_unknown_mention_is_dropped_silently(client: httpx2.AsyncClient) -> None:
    body = {"message": {"content": "hi", "mentions": [{"configurationId": "ghost"}], "context": CONTEXT}}
    resp = await client.post(f"{W}/assistant/conversations", json=body)
    assert resp.status_code == 200
    conversation = resp.json()["conversation"]
    assert [v[-1]["type"] for v in conversation["content"]] == ["user_message"]
    resp = await client.post(
        f"{W}/assistant/conversations/{conversation['sId']}/messages", json=body["message"]
    )
    assert resp.status_code == 200 and resp.json()["agentMessages"] == []
    assert resp.json()["message"]["mentions"] == []


async def test_validation_and_not_found(client: httpx2.AsyncClient) -> None:
    url = f"{W}/assistant/conversations"
    bad_messages = [
        {"content": "", "mentions": [], "context": CONTEXT},
        {"content": "x", "mentions": [], "context": {"username": "", "timezone": "UTC"}},
        {"content": "x", "mentions": [], "context": {"username": "u"}},
        {"content": "x", "context": CONTEXT},  # `mentions` is required
    ]
    for message in bad_messages:
        assert_error(await client.post(url, json={"message": message}), 400, "invalid_request_error")
    resp = await client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(resp, 400, "invalid_request_error")
    assert resp.json()["error"]["message"] == "Malformed JSON in request body"
    assert (await stats(client))["conversations"] == 0

    assert_error(await client.get(f"{url}/nope"), 404, "conversation_not_found")
    body = {"content": "x", "mentions": [], "context": CONTEXT}
    assert_error(await client.post(f"{url}/nope/messages", json=body), 404, "conversation_not_found")
    c_id, _ = await start(client, "x", "dust")
    # The /api/v1 path redirects without looking anything up; the SSE route reports the 404.
    resp = await client.get(events_url(c_id, "nope"), follow_redirects=True)
    assert_error(resp, 404, "message_not_found")


async def test_blocking_create_returns_finished_answer(client: httpx2.AsyncClient) -> None:
    body = {
        "blocking": True,
        "message": {"content": "now", "mentions": [{"configurationId": "echo000001"}], "context": CONTEXT},
    }
    resp = await client.post(f"{W}/assistant/conversations", json=body)
    reply = resp.json()["conversation"]["content"][1][0]
    assert reply["status"] == "succeeded" and reply["content"] == "Echo (turn 1): now"


# ---------------------------------------------------------------- faults


async def test_fail_next_burst_then_success(client: httpx2.AsyncClient) -> None:
    rule = {
        "match": "/assistant/conversations",
        "method": "POST",
        "status": 429,
        "type": "rate_limit_error",
        "count": 2,
    }
    effective = await configure(client, fail_next=[rule])
    assert effective["fail_next"][0]["count"] == 2
    body = {"message": {"content": "x", "mentions": [], "context": CONTEXT}}
    assert (await client.get(f"{W}/assistant/agent_configurations")).status_code == 200  # not matching
    for _ in range(2):
        assert_error(await client.post(f"{W}/assistant/conversations", json=body), 429, "rate_limit_error")
    assert (await client.post(f"{W}/assistant/conversations", json=body)).status_code == 200
    statuses = [r["status"] for r in (await stats(client))["requests"]]
    assert statuses == [200, 429, 429, 200]


async def test_down_mode_and_error_rate(client: httpx2.AsyncClient) -> None:
    await configure(client, down=True)
    assert_error(await client.get(f"{W}/assistant/agent_configurations"), 503, "service_unavailable")
    assert (await client.get("/_sim/health")).json() == {"ok": True}
    await configure(client, down=False, error_rate=1.0, seed=7)
    assert_error(await client.get(f"{W}/assistant/agent_configurations"), 500, "internal_server_error")
    assert (await client.post("/_sim/faults", json={"no_such_option": 1})).status_code == 400

    # Reset restores the start-up options.
    await client.post("/_sim/reset")
    assert (await client.get(f"{W}/assistant/agent_configurations")).status_code == 200


# ---------------------------------------------------------------- files


async def create_file(
    http: httpx2.AsyncClient, size: int, content_type: str = "text/plain"
) -> httpx2.Response:
    body = {"contentType": content_type, "fileName": "notes.txt", "fileSize": size, "useCase": "conversation"}
    return await http.post(f"{W}/files", json=body)


async def test_file_upload_flow(client: httpx2.AsyncClient, simulator: Proc) -> None:
    data = b"hello world"
    resp = await create_file(client, len(data))
    assert resp.status_code == 200, resp.text
    file = resp.json()["file"]
    assert (
        file["sId"].startswith("fil_") and file["status"] == "created" and file["useCase"] == "conversation"
    )
    assert file["uploadUrl"] == f"{simulator.url}{W}/files/{file['sId']}"

    resp = await client.post(file["uploadUrl"], files={"file": ("notes.txt", data, "text/plain")})
    assert resp.status_code == 200, resp.text
    assert resp.json()["file"]["status"] == "ready"
    again = await client.post(file["uploadUrl"], files={"file": ("notes.txt", data, "text/plain")})
    assert_error(again, 400, "invalid_request_error")

    [details] = (await client.get("/_sim/files")).json()["files"]
    assert details["uploadedSize"] == len(data)
    assert details["sha256"] == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"

    assert (await client.delete(f"{W}/files/{file['sId']}")).status_code == 204
    assert_error(await client.delete(f"{W}/files/{file['sId']}"), 404, "file_not_found")


async def test_file_upload_rejections(client: httpx2.AsyncClient) -> None:
    assert_error(await create_file(client, 10, "application/x-unknown"), 400, "file_type_not_supported")
    assert_error(await create_file(client, 6 * 1024 * 1024, "image/png"), 400, "file_too_large")

    async def upload(files: dict[str, Any], size: int = 5) -> httpx2.Response:
        file = (await create_file(client, size)).json()["file"]
        return await client.post(file["uploadUrl"], files=files)

    # formidable (front/lib/api/files/utils.ts parseUploadRequest): no accepted part named `file`.
    assert_error(await upload({"document": ("a.txt", b"abc", "text/plain")}), 400, "file_type_not_supported")
    assert_error(await upload({"file": ("a.txt", b"", "text/plain")}), 400, "file_is_empty")
    assert_error(await upload({"file": ("a.txt", b"too many bytes", "text/plain")}), 400, "file_too_large")
    # A part of another type is filtered out, which leaves no file either.
    assert_error(await upload({"file": ("a.png", b"abc", "image/png")}), 400, "file_type_not_supported")
    assert (await upload({"file": ("a.txt", b"abc", "application/octet-stream")})).status_code == 200

    await configure(client, file_upload_window_seconds=0)
    resp = await upload({"file": ("a.txt", b"abc", "text/plain")})
    assert_error(resp, 400, "invalid_request_error")
    assert resp.json()["error"]["message"] == "File upload has expired. Create a new file."


async def test_file_creation_rate_limit(client: httpx2.AsyncClient) -> None:
    await configure(client, files_per_minute=3)
    for _ in range(3):
        assert (await create_file(client, 3)).status_code == 200
    resp = await create_file(client, 3)
    assert_error(resp, 429, "rate_limit_error")
    assert resp.json()["error"]["message"] == "You have reached the rate limit for this workspace."
    assert "retry-after" not in resp.headers


async def test_file_reader_sees_content_fragments(client: httpx2.AsyncClient) -> None:
    data = b"some notes"
    file = (await create_file(client, len(data))).json()["file"]
    await client.post(file["uploadUrl"], files={"file": ("notes.txt", data, "text/plain")})

    c_id, m_id = await start(
        client, "what files?", "files00001", contentFragments=[{"title": "notes.txt", "fileId": file["sId"]}]
    )
    assert (
        answer_text(all_events(await read_answer(client, c_id, m_id)))
        == "I can see 1 file(s): notes.txt (text/plain)"
    )

    inline = {"title": "data.csv", "content": "a,b\n1,2\n", "contentType": "text/csv"}
    resp = await client.post(f"{W}/assistant/conversations/{c_id}/content_fragments", json=inline)
    assert resp.status_code == 200, resp.text
    fragment = resp.json()["contentFragment"]
    assert fragment["type"] == "content_fragment" and fragment["fileId"].startswith("fil_")
    body = {"content": "and now?", "mentions": [{"configurationId": "files00001"}], "context": CONTEXT}
    reply = (await client.post(f"{W}/assistant/conversations/{c_id}/messages", json=body)).json()[
        "agentMessages"
    ][0]
    text = answer_text(all_events(await read_answer(client, c_id, reply["sId"])))
    assert text == "I can see 2 file(s): notes.txt (text/plain), data.csv (text/csv)"

    c_id, m_id = await start(client, "none?", "files00001")
    assert answer_text(all_events(await read_answer(client, c_id, m_id))) == "I can see 0 file(s)."

    # postNewContentFragment's errors are 400 invalid_request_error (content_fragments.ts).
    bad = {"title": "x", "fileId": "fil_missing"}
    resp = await client.post(f"{W}/assistant/conversations/{c_id}/content_fragments", json=bad)
    assert_error(resp, 400, "invalid_request_error")
    assert resp.json()["error"]["message"] == "File not found."
