"""Property-based fuzzing: arbitrary tool arguments and arbitrary HTTP requests never crash the bridge,
never get a 5xx for bad input, and never show a traceback; the bridge keeps serving afterwards."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from tests.helpers import text_of
from tests.procs import Proc, bridge_env, running, start_bridge

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=300)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
AGENTS = st.sampled_from(["echo", "ECHO", "echo000001", "nope", "", " ", "@echo", "x" * 500]) | st.text(
    max_size=40
)
HANDLES = st.sampled_from(["dmc_" + "A" * 32, "dmc_", "not-a-handle", "", "dmc_" + "A" * 31 + "é"]) | st.text(
    max_size=60
)
TOOLS = {
    "ask_agent": st.fixed_dictionaries(
        {"agent": AGENTS, "message": st.text(max_size=200)},
        optional={
            "conversation": HANDLES | JSON,
            "files": st.lists(st.text(max_size=40), max_size=3) | JSON,
            "new_conversation": JSON,
        },
    ),
    "get_conversation": st.fixed_dictionaries({"conversation": HANDLES}, optional={"extra": JSON}),
    "end_conversation": st.fixed_dictionaries({"conversation": HANDLES}),
    "list_agents": st.fixed_dictionaries({}, optional={"query": st.text(max_size=40) | JSON}),
    "upload_file": st.fixed_dictionaries(
        {},
        optional={
            "filename": st.text(max_size=80),
            "content_base64": st.text(max_size=200)
            | st.binary(max_size=150).map(lambda b: base64.b64encode(b).decode()),
            "mime_type": JSON,
        },
    ),
}
CALLS = st.lists(
    st.sampled_from(sorted(TOOLS)).flatmap(lambda name: st.tuples(st.just(name), TOOLS[name])),
    min_size=25,
    max_size=25,
)


@pytest.fixture(scope="module")
def bridge(simulator: Proc, clamd: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    env = bridge_env(
        simulator,
        clamd=clamd,
        BRIDGE_UPLOAD_DIR=str(tmp_path_factory.mktemp("fuzz")),
        BRIDGE_RATE_LIMIT="100000/minute",
    )
    with running(start_bridge(env)) as proc:
        yield proc


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=CALLS)
def test_arbitrary_tool_arguments_get_results_or_clear_errors(
    bridge: Proc, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    async def run() -> None:
        async with Client(f"{bridge.url}/mcp") as client:
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                text = text_of(result)
                assert "Traceback" not in text
                if result.is_error:
                    # A clear message, not the SDK's generic "Error executing tool X" for a crash.
                    assert text.strip() != f"Error executing tool {name}", (name, arguments)
            healthy = await client.call_tool("list_agents", {})
            assert not healthy.is_error

    anyio.run(run)


# What an HTTP client can put in a header at all: printable ASCII without surrounding whitespace.
HEADER_VALUES = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(
        ["/v1/uploads", "/mcp", "/messages/", "/readyz", "/status", "/openapi.json", "/metrics"]
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    content_type=st.sampled_from(
        ["multipart/form-data; boundary=x", "multipart/form-data", "application/json", "text/plain", ""]
    )
    | HEADER_VALUES,
    body=st.binary(max_size=2000),
    session=st.none() | HEADER_VALUES,
)
def test_arbitrary_http_requests_never_get_a_5xx_or_a_traceback(
    bridge: Proc, path: str, method: str, content_type: str, body: bytes, session: str | None
) -> None:
    headers = {"content-type": content_type, "accept": "application/json, text/event-stream"}
    if session is not None:
        headers["mcp-session-id"] = session
    query = {"session_id": session} if path == "/messages/" and session else None
    response = httpx2.request(
        method, f"{bridge.url}{path}", content=body, headers=headers, params=query, timeout=30
    )
    # /readyz may be 503 by design (it names what is down); nothing else may be a server error.
    assert response.status_code < 500 or (path == "/readyz" and response.status_code == 503), response.text[
        :300
    ]
    assert "Traceback" not in response.text
