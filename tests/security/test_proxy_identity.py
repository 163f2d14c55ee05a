"""Users known by an authenticating proxy in front (BRIDGE_PRINCIPAL_HEADER): the rules of the header
and of the peers that may set it, then running bridges with the test client as "the proxy" (requests
from 127.0.0.1, trusted) or as a caller around it (only 10.1.2.3 trusted).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.types import Message, Receive, Scope, Send

from bridge.http.middleware.forwarded import ForwardedMiddleware, peer_of
from bridge.security.auth import hash_key, new_key
from bridge.security.proxy_identity import (
    MAX_USER_CHARS,
    ProxyIdentity,
    ProxyUserRefused,
    claimed_user,
    parse_networks,
)
from tests.helpers import approval_of, audit_events, faults, text_of
from tests.procs import Proc, bridge_env, running, start_bridge

HEADER = "X-Auth-Request-Email"
ALICE, BOB = "alice@example.com", "bob@example.com"
PROXY = ProxyIdentity(HEADER, parse_networks(["127.0.0.1", "10.1.0.0/16", "fd00::/8"]))
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


# --- the header's value -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user",
    [
        ALICE,
        "O'Brien.Siobhan+mcp@example.ie",
        "EXAMPLE\\alice",
        "bridge/ci@EXAMPLE.COM",
        "josé@exemple.fr",
        "a" * MAX_USER_CHARS,
    ],
)
def test_a_user_name_becomes_the_principal_proxy_user(user: str) -> None:
    assert PROXY.principal([user.encode()]) == f"proxy:{user}"
    assert PROXY.principal([f"  {user}\t".encode()]) == f"proxy:{user}"  # surrounding blanks are no part
    assert claimed_user([user.encode()]) == user


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], "proxy_user_missing"),
        ([b""], "proxy_user_empty"),
        ([b"   "], "proxy_user_empty"),
        ([b"alice@example.com", b"bob@example.com"], "proxy_user_repeated"),
        ([b"alice smith"], "proxy_user_malformed"),
        ([b"alice@example.com, bob@example.com"], "proxy_user_malformed"),
        ([b"Alice <alice@example.com>"], "proxy_user_malformed"),
        ([b"a" * (MAX_USER_CHARS + 1)], "proxy_user_malformed"),
        ([b"ali\x01ce"], "proxy_user_malformed"),
        ([b"alice\x7f"], "proxy_user_malformed"),
        ([b"alice\r\nx-admin: 1"], "proxy_user_malformed"),
        (["ali\u200bce".encode()], "proxy_user_malformed"),  # invisible: a look-alike of alice
        ([b"\xff\xfealice"], "proxy_user_malformed"),  # not UTF-8
    ],
)
def test_no_usable_user_is_refused_with_a_sentence_that_quotes_nothing(
    values: list[bytes], reason: str
) -> None:
    with pytest.raises(ProxyUserRefused) as refused:
        PROXY.principal(values)
    assert refused.value.reason == reason
    assert HEADER in str(refused.value)
    assert "alice" not in str(refused.value)
    if reason != "proxy_user_missing" and values[0].strip():
        assert claimed_user(values) is None  # what a caller wrote is never logged unless well-formed


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),  # a dual-stack listener's view of an IPv4 peer
        ("10.1.200.3", True),
        ("fd00::7", True),
        ("127.0.0.2", False),
        ("10.2.0.1", False),
        ("::1", False),
        ("", False),
        (None, False),
        ("proxy.internal", False),
    ],
)
def test_only_the_configured_peers_are_the_proxy(peer: str | None, trusted: bool) -> None:
    assert PROXY.trusts(peer) is trusted


def test_the_header_is_found_whatever_its_case_and_as_often_as_it_was_sent() -> None:
    scope = {
        "headers": [(b"x-auth-request-email", b"a@x"), (b"x-other", b"b"), (b"x-auth-request-email", b"c")]
    }
    assert PROXY.values(scope) == [b"a@x", b"c"]
    assert ProxyIdentity("x-AUTH-request-EMAIL", PROXY.proxies).values(scope) == [b"a@x", b"c"]


# --- the connecting peer ----------------------------------------------------------------------------


async def _seen_through(
    middleware_of: Callable[[Any], Any], client: tuple[str, int], xff: bytes
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(client=scope["client"][0], peer=peer_of(scope))

    scope = {"type": "http", "client": client, "headers": [(b"x-forwarded-for", xff)]}

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        pass

    await middleware_of(app)(scope, receive, send)
    return seen


@pytest.mark.parametrize(
    "trusted", [["10.0.0.0/8"], ["10.0.0.1/8"]]
)  # host bits are allowed, as in the settings
async def test_the_peer_is_kept_when_a_trusted_proxy_forwards_for_a_client(trusted: list[str]) -> None:
    seen = await _seen_through(
        lambda app: ForwardedMiddleware(app, trusted_proxies=trusted), ("10.0.0.5", 4000), b"203.0.113.7"
    )
    assert seen == {"client": "203.0.113.7", "peer": "10.0.0.5"}


async def test_a_forwarded_address_from_an_untrusted_peer_changes_nothing() -> None:
    seen = await _seen_through(lambda app: ForwardedMiddleware(app), ("127.0.0.1", 4000), b"10.1.2.3")
    assert seen == {"client": "127.0.0.1", "peer": "127.0.0.1"}


async def test_without_the_record_there_is_no_peer_to_trust() -> None:
    seen = await _seen_through(lambda app: app, ("127.0.0.1", 4000), b"")
    assert seen["peer"] is None


# --- two users behind the proxy -------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxied(simulator: Proc, redis_server: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    env = bridge_env(
        simulator,
        redis_server.port,
        BRIDGE_PRINCIPAL_HEADER=HEADER,
        BRIDGE_PRINCIPAL_PROXIES="127.0.0.1",
        BRIDGE_SCAN_MODE="off",
        BRIDGE_UPLOAD_DIR=str(tmp_path_factory.mktemp("up")),
    )
    with running(start_bridge(env)) as proc:
        yield proc


def as_user(bridge: Proc, user: str | None, **headers: str) -> Client:
    """An MCP client whose every request carries the proxy's header (as the proxy would add it)."""
    sent = {**headers, **({HEADER: user} if user is not None else {})}
    transport = streamable_http_client(
        f"{bridge.url}/mcp", http_client=httpx2.AsyncClient(headers=sent, timeout=60)
    )
    return Client(transport)


async def test_a_proxy_user_cannot_see_or_continue_anothers_conversation(proxied: Proc) -> None:
    async with as_user(proxied, ALICE) as alice:
        first = await alice.call_tool("ask_agent", {"agent": "echo", "message": "alice's secret plan"})
    handle = (first.structured_content or {})["conversation"]
    async with as_user(proxied, BOB) as bob:
        stolen = await bob.call_tool("ask_agent", {"agent": "echo", "message": "hi", "conversation": handle})
        peek = await bob.call_tool("get_conversation", {"conversation": handle})
        listed = {r.uri for r in (await bob.list_resources()).resources}
    async with as_user(proxied, ALICE) as alice:
        mine = await alice.call_tool(
            "ask_agent", {"agent": "echo", "message": "still mine", "conversation": handle}
        )
        alice_listed = {r.uri for r in (await alice.list_resources()).resources}
    assert stolen.is_error and "unknown or expired conversation handle" in text_of(stolen)
    assert peek.is_error and "unknown or expired conversation handle" in text_of(peek)
    assert f"dust://conversations/{handle}" not in listed
    assert f"dust://conversations/{handle}" in alice_listed
    assert text_of(mine).startswith("Echo (turn 2): still mine")


async def test_a_pending_approval_is_answered_by_its_proxy_user_only(proxied: Proc) -> None:
    async with as_user(proxied, ALICE) as alice:
        paused: dict[str, Any] = (
            await alice.call_tool("ask_agent", {"agent": "needs-approval", "message": "alice's report"})
        ).structured_content or {}
    approval = approval_of(paused)
    async with as_user(proxied, BOB) as bob:
        refused = await bob.call_tool("approve_action", approval)
    async with as_user(proxied, ALICE) as alice:
        done = await alice.call_tool("approve_action", approval)
    assert refused.is_error and "unknown or expired conversation handle" in text_of(refused)
    assert (done.structured_content or {})["answer"] == "Email sent to team@example.com: alice's report"


async def test_uploads_belong_to_the_proxy_user_that_sent_them(proxied: Proc) -> None:
    async with as_user(proxied, ALICE) as alice:
        uploaded = await alice.call_tool(
            "upload_file",
            {"filename": "plan.txt", "content_base64": base64.b64encode(b"alice only").decode()},
        )
    uri = (uploaded.structured_content or {})["uri"]
    over_http = httpx2.post(
        f"{proxied.url}/v1/uploads",
        files={"file": ("note.txt", b"bob's note", "text/plain")},
        headers={HEADER: BOB},
        timeout=30,
    )
    assert over_http.status_code == 201, over_http.text
    async with as_user(proxied, BOB) as bob:
        bob_listed = {r.uri for r in (await bob.list_resources()).resources}
        with pytest.raises(Exception, match="unknown or expired upload"):
            await bob.read_resource(uri)
    async with as_user(proxied, ALICE) as alice:
        alice_listed = {r.uri for r in (await alice.list_resources()).resources}
    assert uri in alice_listed and uri not in bob_listed
    assert over_http.json()["uri"] in bob_listed and over_http.json()["uri"] not in alice_listed


def test_an_mcp_session_is_bound_to_the_proxy_user_that_opened_it(proxied: Proc) -> None:
    opened = _initialize(proxied, [(HEADER, ALICE)])
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}

    def list_tools(user: str) -> httpx2.Response:
        return httpx2.post(
            f"{proxied.url}/mcp",
            headers={**MCP_ACCEPT, **session, HEADER: user},
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            timeout=10,
        )

    assert opened.status_code == 200
    assert list_tools(BOB).status_code == 404
    assert list_tools(ALICE).status_code == 200


async def test_the_audit_log_names_the_proxy_user(proxied: Proc) -> None:
    async with as_user(proxied, ALICE) as alice:
        await alice.call_tool("ask_agent", {"agent": "echo", "message": "audited"})
    events = audit_events(proxied.log())
    assert any(
        e["event"] == "auth_success"
        and e["principal"] == f"proxy:{ALICE}"
        and e["via"] == "proxy_header"
        and e["peer"] == "127.0.0.1"
        and e["header"] == HEADER
        for e in events
    )
    assert any(e["event"] == "tool_call" and e["principal"] == f"proxy:{ALICE}" for e in events)
    assert not any(e.get("principal") == "local" for e in events)


def _initialize(bridge: Proc, headers: list[tuple[str, str]]) -> httpx2.Response:
    return httpx2.post(f"{bridge.url}/mcp", headers=[*MCP_ACCEPT.items(), *headers], json=INIT, timeout=10)


@pytest.mark.parametrize(
    ("headers", "reason", "sentence"),
    [
        ([], "proxy_user_missing", f"the authenticating proxy named no user (no {HEADER} header)"),
        ([(HEADER, "")], "proxy_user_empty", f"the authenticating proxy sent an empty {HEADER} header"),
        ([(HEADER, ALICE), (HEADER, BOB)], "proxy_user_repeated", f"sent {HEADER} more than once"),
        ([(HEADER, "alice smith")], "proxy_user_malformed", "is not a user name the bridge accepts"),
        ([(HEADER, f"{ALICE},{BOB}")], "proxy_user_malformed", "is not a user name the bridge accepts"),
        ([(HEADER, "a" * 300)], "proxy_user_malformed", "is not a user name the bridge accepts"),
    ],
)
def test_no_usable_user_from_the_proxy_is_401_never_the_local_user(
    proxied: Proc, headers: list[tuple[str, str]], reason: str, sentence: str
) -> None:
    response = _initialize(proxied, headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="dust-mcp-bridge"'
    assert response.json()["type"] == "unauthorized"
    assert sentence in response.json()["detail"]
    failures = [e for e in audit_events(proxied.log()) if e["event"] == "auth_failure"]
    assert any(
        e["reason"] == reason and e["via"] == "proxy_header" and e["peer"] == "127.0.0.1" for e in failures
    )


@pytest.mark.parametrize("raw", [b"ali\x01ce@example.com", b"\xff\xfe@example.com", b"alice\x7f"])
def test_control_characters_and_bytes_that_are_no_text_never_name_a_user(proxied: Proc, raw: bytes) -> None:
    request = (
        b"POST /v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        + HEADER.encode()
        + b": "
        + raw
        + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", proxied.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    # The HTTP parser may refuse the line itself (400); if it lets it through, the bridge refuses it.
    assert status in (400, 401), answer
    if status == 401:
        assert b"is not a user name the bridge accepts" in answer


def test_open_routes_need_no_proxy_user(proxied: Proc) -> None:
    for path in ("/healthz", "/status", "/openapi.json"):
        assert httpx2.get(f"{proxied.url}{path}", timeout=10).status_code == 200, path


# --- the header from anyone else ------------------------------------------------------------------


@pytest.fixture(scope="module")
def around_the_proxy(simulator: Proc) -> Iterator[Proc]:
    """Only 10.1.2.3 is the proxy: the test client (127.0.0.1) reaches the bridge around it. It is a
    trusted X-Forwarded-For proxy, though, which must not make it the authenticating one."""
    env = bridge_env(
        simulator,
        BRIDGE_PRINCIPAL_HEADER=HEADER,
        BRIDGE_PRINCIPAL_PROXIES="10.1.2.3/32",
        BRIDGE_TRUSTED_PROXIES="127.0.0.1",
    )
    with running(start_bridge(env)) as proc:
        yield proc


async def test_the_header_from_another_peer_is_ignored_logged_and_audited(around_the_proxy: Proc) -> None:
    async with as_user(around_the_proxy, ALICE) as claiming:
        first = await claiming.call_tool("ask_agent", {"agent": "echo", "message": "who am i"})
    handle = (first.structured_content or {})["conversation"]
    # Claiming to be forwarded for the proxy's own address changes nothing: the peer is what counts.
    async with as_user(around_the_proxy, BOB, **{"X-Forwarded-For": "10.1.2.3"}) as forwarded:
        await forwarded.list_tools()
    async with as_user(around_the_proxy, None) as local:
        same = await local.call_tool(
            "ask_agent", {"agent": "echo", "message": "mine", "conversation": handle}
        )
    assert text_of(same).startswith("Echo (turn 2): mine")  # both were the local user
    log = around_the_proxy.log()
    events = audit_events(log)
    spoofed = [e for e in events if e["event"] == "spoofed_identity_header"]
    assert {e["claimed"] for e in spoofed} == {ALICE, BOB}
    assert all(e["peer"] == "127.0.0.1" and e["header"] == HEADER for e in spoofed)
    assert {e["client"] for e in spoofed} == {"127.0.0.1", "10.1.2.3"}
    assert not any(str(e.get("principal", "")).startswith("proxy:") for e in events)
    assert f"ignored the {HEADER} header of a request from 127.0.0.1" in log
    assert log.count(f"ignored the {HEADER} header") == 1  # warned once a minute, audited every time


def test_a_malformed_header_from_another_peer_is_audited_without_its_value(around_the_proxy: Proc) -> None:
    response = _initialize(around_the_proxy, [(HEADER, "mallory <evil@example.com>")])
    assert response.status_code == 200  # the local user, as any caller without the header
    last = [e for e in audit_events(around_the_proxy.log()) if e["event"] == "spoofed_identity_header"][-1]
    assert last["claimed"] is None
    assert "evil@example.com" not in around_the_proxy.log()


# --- limits per proxy user ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(simulator: Proc) -> Iterator[Proc]:
    env = bridge_env(
        simulator,
        BRIDGE_PRINCIPAL_HEADER=HEADER,
        BRIDGE_PRINCIPAL_PROXIES="127.0.0.1",
        BRIDGE_RATE_LIMIT="3/minute",
    )
    with running(start_bridge(env)) as proc:
        yield proc


def poke(bridge: Proc, user: str) -> httpx2.Response:
    # An empty upload: refused as a bad request, but counted like any request.
    return httpx2.post(f"{bridge.url}/v1/uploads", headers={HEADER: user}, timeout=10)


def test_the_request_rate_is_each_proxy_users_own(limited: Proc) -> None:
    carol, dave = "carol@example.com", "dave@example.com"
    assert [poke(limited, carol).status_code for _ in range(3)] == [400] * 3
    over = poke(limited, carol)
    assert over.status_code == 429
    assert f"too many requests for proxy:{carol}" in over.json()["detail"]
    assert poke(limited, dave).status_code == 400  # not slowed down by Carol
    hits = [e for e in audit_events(limited.log()) if e["event"] == "limit_hit"]
    assert [e["principal"] for e in hits] == [f"proxy:{carol}"]


def _answering(bridge: Proc, user: str, started: anyio.Event) -> Callable[[], Awaitable[None]]:
    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    async def long_answer() -> None:
        async with as_user(bridge, user) as client:
            await client.call_tool(
                "ask_agent", {"agent": "storyteller", "message": "long"}, progress_callback=on_progress
            )

    return long_answer


async def test_concurrent_answers_are_capped_per_proxy_user(simulator: Proc) -> None:
    erin, frank = "erin@example.com", "frank@example.com"
    env = bridge_env(
        simulator,
        BRIDGE_PRINCIPAL_HEADER=HEADER,
        BRIDGE_PRINCIPAL_PROXIES="127.0.0.1",
        BRIDGE_MAX_CONCURRENT_ANSWERS="1",
    )
    faults(simulator, token_delay_ms=100)
    started = anyio.Event()
    try:
        with running(start_bridge(env)) as limited:
            await _one_busy_user(limited, erin, frank, started)
    finally:
        faults(simulator, token_delay_ms=15)


async def _one_busy_user(limited: Proc, erin: str, frank: str, started: anyio.Event) -> None:
    async with (
        as_user(limited, erin) as second,
        as_user(limited, frank) as other,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_answering(limited, erin, started))
        with anyio.fail_after(20):
            await started.wait()
        refused = await second.call_tool("ask_agent", {"agent": "echo", "message": "me too"})
        bystander = await other.call_tool("ask_agent", {"agent": "echo", "message": "unaffected"})
        tg.cancel_scope.cancel()
    assert refused.is_error
    assert f"proxy:{erin} already has 1 answer(s) streaming" in text_of(refused)
    assert not bystander.is_error and text_of(bystander).startswith("Echo (turn 1): unaffected")


# --- with client keys -----------------------------------------------------------------------------

CI_KEY = new_key()


def test_a_presented_client_key_wins_over_the_proxy_header(simulator: Proc) -> None:
    env = bridge_env(
        simulator,
        BRIDGE_API_KEYS=f"ci:{hash_key(CI_KEY).hex()}",
        BRIDGE_PRINCIPAL_HEADER=HEADER,
        BRIDGE_PRINCIPAL_PROXIES="127.0.0.1",
    )
    with running(start_bridge(env)) as bridge:
        keyed = _initialize(bridge, [(HEADER, ALICE), ("X-API-Key", CI_KEY)])
        wrong_key = _initialize(bridge, [(HEADER, ALICE), ("X-API-Key", "dmb_wrong")])
        by_header = _initialize(bridge, [(HEADER, BOB)])
        events = audit_events(bridge.log())
    assert keyed.status_code == 200 and by_header.status_code == 200
    assert wrong_key.status_code == 401  # a presented key decides, even from the proxy
    principals = [e["principal"] for e in events if e["event"] == "auth_success"]
    assert principals == ["ci", f"proxy:{BOB}"]


def test_status_says_callers_are_known_by_the_proxy(proxied: Proc) -> None:
    status = httpx2.get(f"{proxied.url}/status", headers={HEADER: "alice"}, timeout=10).json()
    assert status["identities"] == ["proxy"] and status["client_keys"] == "off"
