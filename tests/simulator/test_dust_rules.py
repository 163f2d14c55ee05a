"""The simulator refuses and answers what Dust's own route code does, one rule per test.

Each test names the dust-tt/dust file whose behaviour it pins (see also bridge/simulator/).
"""

from __future__ import annotations

from typing import Any

import httpx2

from bridge.dust.timezone_names import TIMEZONE_NAMES
from tests.procs import Proc, running, start_simulator
from tests.simulator.support import (
    AUTH,
    CONTEXT,
    W,
    all_events,
    answer_text,
    assert_dust_error,
    assert_error,
    configure,
    events_url,
    read_answer,
    start,
    stats,
)

AGENTS = f"{W}/assistant/agent_configurations"
CONVERSATIONS = f"{W}/assistant/conversations"
NO_CONVERSATION = ("conversation_not_found", "Cannot access conversation: conversation_not_found")
BAD_ORIGIN = "This origin is not allowed. Remove the origin from the context property."
OVERFLOW = (
    "The message.context properties (username, timezone, fullName, and email) "
    "must be less than 255 characters."
)


def message(content: str = "hi", agent: str | None = None, **context: Any) -> dict[str, Any]:
    mentions = [{"configurationId": agent}] if agent else []
    return {"content": content, "mentions": mentions, "context": {**CONTEXT, **context}}


async def new_conversation(http: httpx2.AsyncClient) -> str:
    resp = await http.post(CONVERSATIONS, json={"message": message()})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["conversation"]["sId"])


async def agent_sids(http: httpx2.AsyncClient, **params: str) -> list[str]:
    resp = await http.get(AGENTS, params=params)
    assert resp.status_code == 200, resp.text
    return [agent["sId"] for agent in resp.json()["agentConfigurations"]]


async def create_file(http: httpx2.AsyncClient, **fields: Any) -> httpx2.Response:
    body = {"contentType": "text/plain", "fileName": "notes.txt", "fileSize": 5, "useCase": "conversation"}
    return await http.post(f"{W}/files", json={**body, **fields})


async def uploaded_file(http: httpx2.AsyncClient, data: bytes = b"hello") -> dict[str, Any]:
    file = (await create_file(http, fileSize=len(data))).json()["file"]
    resp = await http.post(file["uploadUrl"], files={"file": ("notes.txt", data, "text/plain")})
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["file"])


# ---------------------------------------------------------------- rule 1: listing agents
# front-api/routes/v1/w/[wId]/assistant/agent_configurations.ts


async def test_list_and_favorites_views_need_an_oauth_user(client: httpx2.AsyncClient) -> None:
    for role in ("builder", "admin"):  # a key is never a user, whatever its role
        await configure(client, api_key_role=role)
        for view in ("list", "favorites"):
            resp = await client.get(AGENTS, params={"view": view})
            assert_dust_error(
                resp,
                401,
                "invalid_request_error",
                f"The user must be authenticated with oAuth to retrieve {view} agents.",
            )


async def test_all_unrestricted_needs_an_admin_key(client: httpx2.AsyncClient) -> None:
    for role in ("builder", "user"):
        await configure(client, api_key_role=role)
        resp = await client.get(AGENTS, params={"view": "all_unrestricted"})
        assert_dust_error(resp, 403, "app_auth_error", "Only admins can list all agents of the workspace.")
    await configure(client, api_key_role="admin")
    assert "hidden0001" in await agent_sids(client, view="all_unrestricted")
    assert "hidden0001" not in await agent_sids(client, view="all")  # unpublished: not in `all`
    agents = (await client.get(AGENTS, params={"view": "all_unrestricted"})).json()["agentConfigurations"]
    assert {a["sId"]: a["canEdit"] for a in agents if a["sId"] in ("dust", "echo000001", "hidden0001")} == {
        "dust": False,  # nobody edits a global agent
        "echo000001": True,
        "hidden0001": True,
    }


async def test_api_key_role_is_a_start_up_option() -> None:
    with running(start_simulator(args=["--api-key-role", "admin"])) as sim:
        async with httpx2.AsyncClient(base_url=sim.url, headers=AUTH, timeout=10.0) as http:
            assert (await configure(http))["api_key_role"] == "admin"
            assert "hidden0001" in await agent_sids(http, view="all_unrestricted")
            resp = await http.post(CONVERSATIONS, json={})
            assert resp.json()["conversation"]["owner"]["role"] == "admin"
            await configure(http, api_key_role="builder")
            assert (await http.get(AGENTS, params={"view": "all_unrestricted"})).status_code == 403
            (await http.post("/_sim/reset")).raise_for_status()  # back to the start-up role
            assert (await http.get(AGENTS, params={"view": "all_unrestricted"})).status_code == 200
            assert (await http.post("/_sim/faults", json={"api_key_role": "owner"})).status_code == 400


async def test_unknown_view_is_a_query_validation_error(client: httpx2.AsyncClient) -> None:
    resp = await client.get(AGENTS, params={"view": "bogus"})
    views = "'all' | 'all_unrestricted' | 'list' | 'workspace' | 'published' | 'global' | 'favorites'"
    assert_dust_error(
        resp,
        400,
        "invalid_request_error",
        f"Invalid query parameters: Validation error: Invalid enum value. Expected {views}, "
        "received 'bogus' at \"view\"",
    )


async def test_missing_view_is_all_and_workspace_is_published(client: httpx2.AsyncClient) -> None:
    everything = await agent_sids(client)
    assert everything == await agent_sids(client, view="all")
    assert "dust" in everything and "hidden0001" not in everything
    assert await agent_sids(client, view="global") == ["dust"]
    published = await agent_sids(client, view="published")
    assert published == [sid for sid in everything if sid != "dust"]
    assert await agent_sids(client, view="workspace") == published


async def test_with_authors_adds_last_authors(client: httpx2.AsyncClient) -> None:
    agents = (await client.get(AGENTS, params={"withAuthors": "true"})).json()["agentConfigurations"]
    authors = {agent["sId"]: agent["lastAuthors"] for agent in agents}
    assert authors["dust"] == ["Dust"] and authors["echo000001"] == []
    agents = (await client.get(AGENTS, params={"withAuthors": "false"})).json()["agentConfigurations"]
    assert all("lastAuthors" not in agent for agent in agents)
    assert_error(await client.get(AGENTS, params={"withAuthors": "yes"}), 400, "invalid_request_error")


# ---------------------------------------------------------------- rule 2: one agent
# front-api/routes/v1/w/[wId]/assistant/agent_configurations/[sId]/index.ts


async def test_get_agent_variant_and_unpublished_agents(client: httpx2.AsyncClient) -> None:
    light = (await client.get(f"{AGENTS}/echo000001")).json()["agentConfiguration"]
    assert "actions" not in light and light["skills"] == []
    full = (await client.get(f"{AGENTS}/echo000001", params={"variant": "full"})).json()["agentConfiguration"]
    assert full["actions"] == [] and "instructionsHtml" in full
    resp = await client.get(f"{AGENTS}/echo000001", params={"variant": "huge"})
    assert_dust_error(
        resp,
        400,
        "invalid_request_error",
        "Invalid query parameters: Validation error: Invalid enum value. Expected 'light' | 'full', "
        "received 'huge' at \"variant\"",
    )
    assert_dust_error(
        await client.get(f"{AGENTS}/nope"),
        404,
        "agent_configuration_not_found",
        "The agent configuration you requested was not found.",
    )
    resp = await client.get(f"{AGENTS}/hidden0001")
    assert_dust_error(resp, 403, "workspace_auth_error", "Only admins can access unpublished agents.")
    await configure(client, api_key_role="admin")
    assert (await client.get(f"{AGENTS}/hidden0001")).status_code == 200


# ---------------------------------------------------------------- rule 3: messages
# front-api/routes/v1/w/[wId]/assistant/conversations/index.ts, [cId]/messages/index.ts, the SDK's
# PublicPostConversationsRequestBodySchema / PublicPostMessagesRequestBodySchema, and
# postUserMessage / isUserMessageContextValid in front/lib/api/assistant/conversation.ts.


async def test_timezone_must_be_in_the_sdk_list(client: httpx2.AsyncClient) -> None:
    assert "Europe/Paris" in TIMEZONE_NAMES and "Mars/Olympus" not in TIMEZONE_NAMES
    resp = await client.post(CONVERSATIONS, json={"message": message(timezone="Mars/Olympus")})
    assert_dust_error(
        resp,
        400,
        "invalid_request_error",
        'Invalid request body: Validation error: Invalid timezone at "message.context.timezone"',
    )
    assert (await stats(client))["conversations"] == 0  # refused before anything is stored
    c_id = await new_conversation(client)
    resp = await client.post(f"{CONVERSATIONS}/{c_id}/messages", json=message(timezone="CEST"))
    assert_dust_error(
        resp,
        400,
        "invalid_request_error",
        'Invalid request body: Validation error: Invalid timezone at "context.timezone"',
    )
    assert (
        await client.post(f"{CONVERSATIONS}/{c_id}/messages", json=message(timezone="UTC"))
    ).status_code == 200


async def test_unknown_origin_is_coerced_to_api(client: httpx2.AsyncClient) -> None:
    for origin in ("nowhere", None, 42):
        resp = await client.post(CONVERSATIONS, json={"message": message(origin=origin)})
        assert resp.status_code == 200, resp.text
        assert resp.json()["message"]["context"]["origin"] == "api"


async def test_origins_an_api_key_may_not_use(client: httpx2.AsyncClient) -> None:
    for origin in ("web", "slack", "cli", "extension", "email"):
        resp = await client.post(CONVERSATIONS, json={"message": message(origin=origin)})
        assert_dust_error(resp, 400, "invalid_request_error", BAD_ORIGIN)
    # The origin is checked once the conversation exists: each refusal left one behind.
    assert (await stats(client))["conversations"] == 5
    c_id = await new_conversation(client)
    url = f"{CONVERSATIONS}/{c_id}/messages"
    assert_dust_error(
        await client.post(url, json=message(origin="zendesk")), 400, "invalid_request_error", BAD_ORIGIN
    )
    resp = await client.post(url, json=message(origin="zendesk"), headers={"x-zendesk-user-id": "7"})
    assert resp.status_code == 200 and resp.json()["message"]["context"]["origin"] == "zendesk"
    for origin in ("excel", "gsheet", "make", "n8n", "powerpoint", "zapier"):
        assert (await client.post(url, json=message(origin=origin))).status_code == 200


async def test_username_and_context_length_rules(client: httpx2.AsyncClient) -> None:
    resp = await client.post(CONVERSATIONS, json={"message": message(username="   ")})
    assert_dust_error(
        resp, 400, "invalid_request_error", "The message.context.username must be a non-empty string."
    )
    resp = await client.post(CONVERSATIONS, json={"message": message(username="u" * 256)})
    assert_dust_error(resp, 400, "invalid_request_error", OVERFLOW)
    resp = await client.post(CONVERSATIONS, json={"message": message(profilePictureUrl="h" * 2049)})
    assert_dust_error(resp, 400, "invalid_request_error", OVERFLOW)
    ok = await client.post(CONVERSATIONS, json={"message": message(username="u" * 255)})
    assert ok.status_code == 200
    c_id = ok.json()["conversation"]["sId"]
    url = f"{CONVERSATIONS}/{c_id}/messages"
    assert_dust_error(
        await client.post(url, json=message(username="")),
        400,
        "invalid_request_error",
        "The context.username field is required.",
    )
    assert_dust_error(
        await client.post(url, json=message(email="e" * 256)), 400, "invalid_request_error", OVERFLOW
    )


async def test_one_agent_mention_per_message(client: httpx2.AsyncClient) -> None:
    two = {**message(), "mentions": [{"configurationId": "echo000001"}, {"configurationId": "dust"}]}
    resp = await client.post(CONVERSATIONS, json={"message": two})
    assert_dust_error(resp, 400, "invalid_request_error", "Only one agent can be mentioned per message.")
    c_id = await new_conversation(client)
    twice = {**message(), "mentions": [{"configurationId": "echo000001"}] * 2}
    resp = await client.post(f"{CONVERSATIONS}/{c_id}/messages", json=twice)
    assert_dust_error(resp, 400, "invalid_request_error", "Only one agent can be mentioned per message.")


async def test_no_other_agent_while_one_is_running(client: httpx2.AsyncClient) -> None:
    await configure(client, slow_seconds=30)
    c_id, running = await start(client, "wait", "slow000001")
    url = f"{CONVERSATIONS}/{c_id}/messages"
    assert_error(await client.post(url, json=message(agent="echo000001")), 400, "invalid_request_error")
    # A key cannot steer the running agent: mentioning it again starts another agent message.
    resp = await client.post(url, json=message(agent="slow000001"))
    assert resp.status_code == 200 and len(resp.json()["agentMessages"]) == 1
    conversation = (await client.get(f"{CONVERSATIONS}/{c_id}")).json()["conversation"]
    assert conversation["isRunningAgentLoop"] is True
    await client.post(
        f"{CONVERSATIONS}/{c_id}/cancel",
        json={"messageIds": [running, resp.json()["agentMessages"][0]["sId"]]},
    )
    assert (await client.post(url, json=message(agent="echo000001"))).status_code == 200


async def test_user_only_and_system_key_only_fields(client: httpx2.AsyncClient) -> None:
    local = "Local MCP servers are only available to authenticated users."
    resp = await client.post(CONVERSATIONS, json={"message": message(clientSideMCPServerIds=[])})
    assert_dust_error(resp, 401, "invalid_request_error", local)  # even an empty list
    agentic = {**message(), "agenticMessageData": {"type": "run_agent", "originMessageId": "m"}}
    resp = await client.post(CONVERSATIONS, json={"message": agentic})
    assert_dust_error(
        resp,
        401,
        "invalid_request_error",
        "Messages from run_agent or agent_handover must come from a system key.",
    )
    views = "Selecting MCP server views is only available to authenticated users."
    resp = await client.post(CONVERSATIONS, json={"message": message(selectedMCPServerViewIds=[])})
    assert_dust_error(resp, 401, "invalid_request_error", views)
    c_id = await new_conversation(client)
    url = f"{CONVERSATIONS}/{c_id}/messages"
    # On the messages route an empty list is fine, a server id is not (none is registered).
    assert (
        await client.post(url, json=message(clientSideMCPServerIds=[], selectedMCPServerViewIds=[]))
    ).status_code == 200
    resp = await client.post(url, json=message(clientSideMCPServerIds=["srv"]))
    assert_dust_error(
        resp, 403, "invalid_request_error", "User does not have access to the client-side MCP servers."
    )
    assert_dust_error(
        await client.post(url, json=message(selectedMCPServerViewIds=["v"])),
        401,
        "invalid_request_error",
        views,
    )


async def test_depth_space_and_inline_fragment_checks(client: httpx2.AsyncClient) -> None:
    resp = await client.post(CONVERSATIONS, json={"depth": 4})
    assert_dust_error(resp, 400, "invalid_request_error", "Recursive run_agent calls exceeded depth of 4")
    assert (await client.post(CONVERSATIONS, json={"depth": 3})).json()["conversation"]["depth"] == 3
    resp = await client.post(CONVERSATIONS, json={"spaceId": "vlt_x"})
    assert_dust_error(resp, 404, "space_not_found", "Space not found or access denied")
    huge = {"title": "big", "content": "x" * (512 * 1024 + 1), "contentType": "text/plain"}
    resp = await client.post(CONVERSATIONS, json={"contentFragments": [huge]})
    assert_dust_error(
        resp, 400, "invalid_request_error", "The content must be a non-empty string of less than 512kB."
    )
    image = {"title": "img", "content": "x", "contentType": "image/png"}
    resp = await client.post(CONVERSATIONS, json={"contentFragments": [image]})
    assert_dust_error(resp, 400, "invalid_request_error", "Invalid content fragment type.")
    empty = {"title": "empty", "content": "", "contentType": "text/plain"}  # `if (fragment.content)`
    fragment = (await client.post(CONVERSATIONS, json={"contentFragment": empty})).json()["contentFragment"]
    assert fragment["textBytes"] == 0


async def test_body_is_validated_first_with_the_sdk_schema(client: httpx2.AsyncClient) -> None:
    resp = await client.post(CONVERSATIONS, json={"message": None})
    assert_error(resp, 400, "invalid_request_error")  # `message` may be absent, not null
    resp = await client.post(CONVERSATIONS, json={"blocking": "yes"})
    assert_dust_error(
        resp,
        400,
        "invalid_request_error",
        'Invalid request body: Validation error: Expected boolean, received string at "blocking"',
    )
    # Not JSON by its content type: Hono's validator checks `{}`, which is a valid empty conversation.
    resp = await client.post(CONVERSATIONS, content=b"ignored", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200 and resp.json()["conversation"]["content"] == []
    # On an unknown conversation the body is checked before the conversation is looked up.
    resp = await client.post(f"{CONVERSATIONS}/nope/messages", json={"content": "x"})
    assert_error(resp, 400, "invalid_request_error")
    assert_dust_error(
        await client.post(f"{CONVERSATIONS}/nope/messages", json=message()), 404, *NO_CONVERSATION
    )
    assert_error(await client.post(f"{CONVERSATIONS}/nope/cancel", json={}), 400, "invalid_request_error")
    assert_dust_error(
        await client.post(f"{CONVERSATIONS}/nope/cancel", json={"messageIds": []}), 404, *NO_CONVERSATION
    )
    assert_dust_error(await client.get(f"{CONVERSATIONS}/nope"), 404, *NO_CONVERSATION)


async def test_user_message_context_as_dust_renders_it(client: httpx2.AsyncClient) -> None:
    context = {**CONTEXT, "email": "Ann@Example.COM", "junk": 1, "lastTriggerRunAt": 5}
    resp = await client.post(
        CONVERSATIONS, json={"message": {"content": "x", "mentions": [], "context": context}}
    )
    assert resp.json()["message"]["context"] == {
        "username": "tester",
        "timezone": "Europe/Paris",
        "fullName": None,
        "email": "ann@example.com",
        "profilePictureUrl": None,
        "origin": "api",
        "clientSideMCPServerIds": [],
        "lastTriggerRunAt": None,
    }


# ---------------------------------------------------------------- rule 4: events
# front-api/routes/v1/w/[wId]/assistant/conversations/[cId]/messages/[mId]/events.ts (redirectToSse
# under publicApiAuth) and front-api/lib/api/sse/message_events.ts.


async def test_events_redirect_before_any_lookup_but_after_auth(client: httpx2.AsyncClient) -> None:
    url = events_url("nope", "nothing")
    resp = await client.get(url, params={"lastEventId": "1-0"})
    assert resp.status_code == 307
    assert resp.headers["location"] == events_url("nope", "nothing", "/api/sse/v1") + "?lastEventId=1-0"
    assert_error(
        await client.get(url, headers={"Authorization": "Bearer nope"}),
        401,
        "malformed_authorization_header_error",
    )
    assert_error(await client.get(url.replace("/w/demo/", "/w/other/")), 404, "workspace_not_found")
    assert_dust_error(await client.get(url, follow_redirects=True), 404, *NO_CONVERSATION)
    resp = await client.post(CONVERSATIONS, json={"message": message()})
    conversation, user_message = resp.json()["conversation"]["sId"], resp.json()["message"]["sId"]
    resp = await client.get(events_url(conversation, user_message), follow_redirects=True)
    assert_dust_error(resp, 400, "invalid_request_error", "Events are only available for agent messages.")


async def test_an_invalid_last_event_id_skips_the_history(client: httpx2.AsyncClient) -> None:
    c_id, m_id = await start(client, "hi", "echo000001")
    await read_answer(client, c_id, m_id)  # finished
    await configure(client, connection_lifetime_seconds=0.3)
    params = {"lastEventId": "not-an-id"}
    async with client.stream("GET", events_url(c_id, m_id), params=params, follow_redirects=True) as resp:
        assert resp.status_code == 200
        body = (await resp.aread()).decode()
    assert body == "event: dust-handshake\ndata: {}\n\ndata: done\n\n"


# ---------------------------------------------------------------- rule 5: files and fragments
# front-api/routes/v1/w/[wId]/files/index.ts, files/[fileId].ts, front/lib/resources/file_resource.ts,
# front/lib/api/files/processing/index.ts and utils.ts, conversation/content_fragment.ts.


async def test_file_creation_answer_and_refusals(client: httpx2.AsyncClient, simulator: Proc) -> None:
    file = (
        await create_file(client, useCaseMetadata={"conversationId": await new_conversation(client)})
    ).json()["file"]
    assert set(file) == {
        "id",
        "sId",
        "contentType",
        "fileName",
        "fileSize",
        "version",
        "status",
        "useCase",
        "uploadUrl",
    }
    assert file["id"] == file["sId"] and file["version"] == 0 and file["status"] == "created"
    assert file["uploadUrl"] == f"{simulator.url}{W}/files/{file['sId']}"
    resp = await create_file(client, useCase="upsert_table")
    assert_dust_error(resp, 400, "invalid_request_error", "The file use case is not supported by the API.")
    assert_error(await create_file(client, useCase="avatar"), 400, "invalid_request_error")  # the SDK schema
    resp = await create_file(client, contentType="text/plain; charset=utf-8")
    assert_dust_error(
        resp, 400, "file_type_not_supported", 'Content type "text/plain; charset=utf-8" is not supported.'
    )
    resp = await create_file(client, contentType="image/x-icon")
    assert_dust_error(
        resp,
        400,
        "file_type_not_supported",
        'Content type "image/x-icon" is not supported for use-case conversation.',
    )
    resp = await create_file(
        client, contentType="image/png", fileName="big.png", fileSize=5 * 1024 * 1024 + 1
    )
    assert_dust_error(resp, 400, "file_too_large", 'File "big.png" is too large.')
    resp = await create_file(client, fileName="n" * 4097)
    assert_dust_error(
        resp,
        400,
        "invalid_request_error",
        'Invalid request body: Validation error: File name must be less than 4096 characters at "fileName"',
    )
    # The rate limiter only counts requests whose body passed validation.
    (await client.post("/_sim/reset")).raise_for_status()
    await configure(client, files_per_minute=1)
    assert_error(await create_file(client, fileSize="5"), 400, "invalid_request_error")
    assert (await create_file(client)).status_code == 200
    assert_error(await create_file(client), 429, "rate_limit_error")


async def test_file_upload_answer_and_failures(client: httpx2.AsyncClient, simulator: Proc) -> None:
    file = await uploaded_file(client)
    assert file["status"] == "ready" and "uploadUrl" not in file
    assert file["downloadUrl"] == f"{simulator.url}/api/w/demo/files/{file['sId']}"

    async def refused(upload: dict[str, Any]) -> tuple[httpx2.Response, httpx2.Response]:
        created = (await create_file(client, fileSize=3)).json()["file"]
        first = await client.post(created["uploadUrl"], files=upload)
        again = await client.post(created["uploadUrl"], files={"file": ("a.txt", b"abc", "text/plain")})
        return first, again

    failed = "The file has already been uploaded or the upload has failed."
    first, again = await refused({"file": ("a.txt", b"", "text/plain")})
    assert_dust_error(first, 400, "file_is_empty", "File is empty.")
    assert_dust_error(again, 400, "invalid_request_error", failed)  # a refused upload marks the file failed
    first, _ = await refused({"file": ("a.txt", b"abcd", "text/plain")})
    assert_dust_error(
        first,
        400,
        "file_too_large",
        "File is too large or the size passed to the File instance in the DB does not match the size of the "
        "uploaded file.",
    )
    first, _ = await refused(
        {"file": ("a.txt", b"ab", "text/plain"), "other": ("b.txt", b"cd", "text/plain")}
    )
    assert_dust_error(
        first, 500, "internal_server_error", "Error uploading file : Error: options.maxFiles (1) exceeded"
    )
    created = (await create_file(client, fileSize=3)).json()["file"]
    resp = await client.post(created["uploadUrl"], json={"file": "abc"})
    assert_dust_error(resp, 400, "file_type_not_supported", "No file postprocessed.")


async def test_file_delete_and_conversation_access(client: httpx2.AsyncClient) -> None:
    file = (await create_file(client)).json()["file"]
    resp = await client.delete(f"{W}/files/{file['sId']}")
    assert resp.status_code == 204 and resp.content == b""
    assert_dust_error(
        await client.delete(f"{W}/files/{file['sId']}"), 404, "file_not_found", "The file was not found."
    )
    # checkFileAccess: a file of a conversation the key cannot fetch is "not found".
    orphan = (await create_file(client, useCaseMetadata={"conversationId": "gone"})).json()["file"]
    resp = await client.post(orphan["uploadUrl"], files={"file": ("a.txt", b"hello", "text/plain")})
    assert_dust_error(resp, 404, "file_not_found", "File not found.")
    assert_dust_error(
        await client.delete(f"{W}/files/{orphan['sId']}"), 404, "file_not_found", "File not found."
    )


async def test_content_fragment_answers_and_errors(client: httpx2.AsyncClient, simulator: Proc) -> None:
    c_id = await new_conversation(client)
    url = f"{CONVERSATIONS}/{c_id}/content_fragments"
    file = await uploaded_file(client, b"hello")
    fragment = (await client.post(url, json={"title": "notes", "fileId": file["sId"]})).json()[
        "contentFragment"
    ]
    assert fragment["contentFragmentId"] != fragment["sId"] and fragment["contentFragmentType"] == "file"
    assert fragment["sourceUrl"] == f"{simulator.url}/api/w/demo/files/{file['sId']}"  # getPrivateUrl
    assert fragment["textUrl"] == (
        f"{simulator.url}/api/w/demo/assistant/conversations/{c_id}/messages/{fragment['sId']}"
        "/raw_content_fragment?format=text"
    )
    assert fragment["textBytes"] == 5 and fragment["expiredReason"] is None and fragment["hidden"] is False
    assert fragment["context"] == {
        "profilePictureUrl": None,
        "fullName": None,
        "email": None,
        "username": None,
    }
    pending = (await create_file(client)).json()["file"]
    resp = await client.post(url, json={"title": "p", "fileId": pending["sId"]})
    assert_dust_error(
        resp, 400, "invalid_request_error", "The file is not ready. Please re-upload the file to proceed."
    )
    resp = await client.post(url, json={"title": "n", "nodeId": "n1", "nodeDataSourceViewId": "dsv"})
    assert_dust_error(
        resp, 400, "invalid_request_error", "Unknown data source view for content fragment input"
    )
    resp = await client.post(url, json={"title": "i", "content": "x", "contentType": "image/png"})
    assert_dust_error(resp, 400, "invalid_request_error", "Unsupported content fragment type.")
    inline = (await client.post(url, json={"title": "t", "content": "a,b", "contentType": "text/csv"})).json()
    files = {f["sId"]: f for f in (await client.get("/_sim/files")).json()["files"]}
    assert files[inline["contentFragment"]["fileId"]]["fileName"] == "content.csv"
    assert_error(
        await client.post(f"{CONVERSATIONS}/nope/content_fragments", json={}), 400, "invalid_request_error"
    )
    resp = await client.post(
        f"{CONVERSATIONS}/nope/content_fragments", json={"title": "t", "fileId": file["sId"]}
    )
    assert_dust_error(resp, 404, *NO_CONVERSATION)
    # When creating a conversation, a bad fragment is refused once the conversation exists.
    before = (await stats(client))["conversations"]
    resp = await client.post(CONVERSATIONS, json={"contentFragments": [{"title": "x", "fileId": "fil_nope"}]})
    assert_dust_error(resp, 400, "invalid_request_error", "File not found.")
    assert (await stats(client))["conversations"] == before + 1


# ---------------------------------------------------------------- rule 6: event and message shapes
# front/lib/api/assistant/streaming/events.ts (`{...event, step}`), the SDK's AgentMessageTypeSchema,
# UserMessageSchema, ConversationSchema, and front/lib/api/v1/backward_compatibility.ts.


async def test_events_carry_the_agent_loop_step(client: httpx2.AsyncClient) -> None:
    c_id, m_id = await start(client, "tides", "research01")
    events = [event["data"] for event in all_events(await read_answer(client, c_id, m_id))]
    done = next(i for i, event in enumerate(events) if event["type"] == "agent_action_success")
    assert all(event["step"] == 0 for event in events[: done + 1])  # thinking and the tool call
    assert all(event["step"] == 1 for event in events[done + 1 :])  # the answer, after the tool
    final = events[-1]["message"]
    assert final["actions"][0]["step"] == 0
    assert final["rawContents"] == [{"step": 1, "content": "Research summary for: tides"}]
    c_id, m_id = await start(client, "hi", "echo000001")
    events = [event["data"] for event in all_events(await read_answer(client, c_id, m_id))]
    assert {event["step"] for event in events} == {0}
    assert answer_text(all_events(await read_answer(client, c_id, m_id))) == "Echo (turn 1): hi"


async def test_messages_and_conversation_carry_the_sdk_fields(client: httpx2.AsyncClient) -> None:
    c_id, m_id = await start(client, "hi", "echo000001")
    await read_answer(client, c_id, m_id)
    conversation = (await client.get(f"{CONVERSATIONS}/{c_id}")).json()["conversation"]
    assert {
        "id",
        "created",
        "unread",
        "actionRequired",
        "owner",
        "sId",
        "title",
        "visibility",
        "content",
        "url",
    } <= set(conversation)
    assert {
        "id",
        "sId",
        "name",
        "role",
        "segmentation",
        "whiteListedProviders",
        "defaultEmbeddingProvider",
    } <= set(conversation["owner"])
    user_message, agent_message = (versions[-1] for versions in conversation["content"])
    assert {
        "id",
        "created",
        "type",
        "sId",
        "visibility",
        "version",
        "user",
        "mentions",
        "content",
        "context",
    } <= set(user_message)
    assert user_message["user"] is None and user_message["mentions"] == [{"configurationId": "echo000001"}]
    required = {
        "id", "agentMessageId", "created", "type", "sId", "visibility", "version", "parentMessageId",
        "parentAgentMessageId", "configuration", "status", "actions", "content", "chainOfThought",
        "rawContents", "error",
    }  # fmt: skip
    assert required <= set(agent_message)
    assert agent_message["configuration"]["userFavorite"] is False
    assert agent_message["completedTs"] is not None and agent_message["status"] == "succeeded"
