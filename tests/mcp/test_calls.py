"""The one wrapper of every tool call (bridge/mcp/calls.py), through the SDK's Client in-process:
outcomes counted once, the audit event of ask_agent, a BridgeError shown as its `for_user()` text.

The services are stand-ins that answer or fail on demand; the end-to-end tests (test_tools.py,
tests/observability/) run the same tools on a real bridge.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from mcp import Client

from bridge.domain.handles import ConversationNotFound
from bridge.domain.transcripts import Transcript
from bridge.dust.errors import DustError
from bridge.dust.models import Agent
from bridge.errors import BridgeError
from bridge.mcp.server import build_mcp_server
from bridge.observability.metrics import Metrics
from bridge.security.audit import AUDIT_LOGGER
from bridge.security.ratelimit import TooManyAnswers
from bridge.store.records import UploadRecord
from tests.helpers import text_of

ECHO = Agent.model_validate({"sId": "echo000001", "name": "echo", "description": "Echoes"})
UPLOAD = UploadRecord(
    upload_id="upl_AAAAAAAAAAAAAAAAAAAAAA",
    owner="local",
    filename="a.txt",
    size=2,
    sha256="00",
    mime="text/plain",
    scan="clean",
    dust_file_id="fil_1",
    created_at=1.0,
    expires_at=2.0,
)


class FakeServices:
    """`Services` whose calls answer, or raise what `failures` holds for their name."""

    def __init__(self, **failures: BridgeError) -> None:
        self.failures = failures
        self.metrics = Metrics()
        self.instance_id = "test"
        self.answer_deadline_seconds = 0.0
        self.agents = SimpleNamespace(list=self._call("agents.list", [ECHO]))
        self.conversations = SimpleNamespace(
            ask=self._ask,
            transcript=self._call("transcript", Transcript("dmc_x", "c1", None, None)),
            end=self._call("end", None),
        )
        self.uploads = SimpleNamespace(ingest_bytes=self._call("ingest_bytes", UPLOAD))
        self.limiter = SimpleNamespace(answer_slot=self._slot)

    def _fail(self, name: str) -> None:
        if name in self.failures:
            raise self.failures[name]

    def _call(self, name: str, value: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self._fail(name)
            return value

        return call

    async def _ask(self, **kwargs: Any) -> Any:
        self._fail("ask")
        return SimpleNamespace(
            text="the answer",
            handle="dmc_x",
            agent=ECHO,
            dust_conversation_id="c1",
            url=None,
            continued=False,
            unremembered=None,
            note=None,
            status="complete",
            pending=[],
            files=[],
            sources=[],
            structured=lambda: {"answer": "the answer"},
        )

    @contextlib.asynccontextmanager
    async def _slot(self, principal: str) -> AsyncIterator[None]:
        self._fail("slot")
        yield

    def counted(self) -> dict[tuple[str, str], float]:
        """`bridge_tool_calls_total` by (tool, outcome)."""
        body, _ = self.metrics.render()
        text = body.decode() if isinstance(body, bytes) else body
        counts = {}
        for line in text.splitlines():
            if line.startswith("bridge_tool_calls_total{"):
                labels, value = line.split("} ")
                fields = dict(part.split("=") for part in labels.split("{")[1].split(","))
                counts[(fields["tool"].strip('"'), fields["outcome"].strip('"'))] = float(value)
        return counts


@contextlib.contextmanager
def audited() -> Iterator[list[dict[str, Any]]]:
    """The audit events written meanwhile, without their time stamp."""
    events: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            event = json.loads(record.getMessage())
            event.pop("ts")
            events.append(event)

    logger = logging.getLogger(AUDIT_LOGGER)
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def call(services: FakeServices, tool: str, arguments: dict[str, Any]) -> Any:
    server = build_mcp_server(lambda: services, agent_tools=["echo"])  # type: ignore[arg-type,return-value]
    async with Client(server) as client:
        return await client.call_tool(tool, arguments)


TOOLS = [
    ("list_agents", {}, "agents.list"),
    ("get_conversation", {"conversation": "dmc_x"}, "transcript"),
    ("end_conversation", {"conversation": "dmc_x"}, "end"),
    ("upload_file", {"filename": "a.txt", "content_base64": "aGk="}, "ingest_bytes"),
]


@pytest.mark.parametrize(("tool", "arguments", "failing"), TOOLS)
async def test_a_success_is_counted_ok(tool: str, arguments: dict[str, Any], failing: str) -> None:
    services = FakeServices()
    result = await call(services, tool, arguments)
    assert not result.is_error, text_of(result)
    assert services.counted() == {(tool, "ok"): 1.0}


@pytest.mark.parametrize(("tool", "arguments", "failing"), TOOLS)
async def test_a_failure_is_counted_by_its_code_and_shown_as_its_for_user_text(
    tool: str, arguments: dict[str, Any], failing: str
) -> None:
    error = DustError("boom", status=500, type="internal_server_error")
    services = FakeServices(**{failing: error})
    result = await call(services, tool, arguments)
    assert result.is_error
    assert text_of(result).endswith(error.for_user()) and error.for_user() != str(error)
    assert services.counted() == {(tool, "upstream_error"): 1.0}


async def test_the_outcome_is_the_code_of_the_failure() -> None:
    services = FakeServices(transcript=ConversationNotFound("unknown or expired conversation handle"))
    result = await call(services, "get_conversation", {"conversation": "dmc_x"})
    assert text_of(result).endswith("unknown or expired conversation handle")
    assert services.counted() == {("get_conversation", "conversation_not_found"): 1.0}


async def test_ask_agent_is_audited_with_the_answer_or_the_failure() -> None:
    with audited() as events:
        answered = FakeServices()
        await call(answered, "ask_agent", {"agent": "ECHO", "message": "hi", "files": ["upl_1"]})
        refused = FakeServices(slot=TooManyAnswers("too many answers at once", code="too_many_answers"))
        result = await call(refused, "ask_agent", {"agent": "ECHO", "message": "hi"})
    assert events == [
        {
            "event": "tool_call",
            "tool": "ask_agent",
            "principal": "local",
            "agent": "echo000001",
            "conversation": "c1",
            "continued": False,
            "files": 1,
            "status": "complete",
            "outcome": "ok",
        },
        {
            "event": "tool_call",
            "tool": "ask_agent",
            "principal": "local",
            "agent": "ECHO",
            "files": 0,
            "outcome": "too_many_answers",
        },
    ]
    assert text_of(result).endswith("too many answers at once")
    assert answered.counted() == {("ask_agent", "ok"): 1.0}
    assert refused.counted() == {("ask_agent", "too_many_answers"): 1.0}


async def test_an_agent_tool_counts_and_audits_as_ask_agent_with_its_agent() -> None:
    services = FakeServices(ask=DustError("slow down", status=429, type="rate_limit_error"))
    with audited() as events:
        await call(services, "ask_echo", {"message": "hi"})
    assert events == [
        {
            "event": "tool_call",
            "tool": "ask_agent",
            "principal": "local",
            "agent": "echo",
            "files": 0,
            "outcome": "upstream_error",
        }
    ]
    assert services.counted() == {("ask_agent", "upstream_error"): 1.0}


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"filename": "a.txt", "content_base64": "not base64!"}, "content_base64 is not valid base64"),
        ({"content_base64": "aGk="}, "content_base64 needs filename"),
        ({"path": "/tmp/a.txt", "url": "https://example.com/a.txt"}, "give exactly one of path, url"),
    ],
    ids=["bad-base64", "no-filename", "two-sources"],
)
async def test_bad_input_a_tool_finds_itself_is_counted_as_a_bad_request(
    arguments: dict[str, Any], said: str
) -> None:
    services = FakeServices()
    result = await call(services, "upload_file", arguments)
    assert result.is_error and said in text_of(result)
    assert services.counted() == {("upload_file", "bad_request"): 1.0}
