"""The conversation service on its own: a memory store, and the Dust simulator served in this process.

Each test is one rule of a turn: what reaches Dust, what is remembered, and what the caller is told.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.domain.agents import AgentDirectory, UnknownAgent
from bridge.domain.answers import AgentFailed, TurnListener
from bridge.domain.conversations import ConversationService, InvalidMessage
from bridge.domain.handles import ConversationNotFound
from bridge.dust.client import DustClient
from bridge.observability.metrics import Metrics
from bridge.simulator.state import Simulator
from bridge.store.base import StoreUnavailable
from bridge.store.memory import MemoryStore


@dataclass(frozen=True)
class Turns:
    """The settings a turn reads (bridge.domain.conversations.TurnSettings)."""

    dust_username: str = "tester"
    dust_timezone: str = "Europe/Paris"
    dust_origin: str = "api"
    max_message_chars: int = 1000
    heartbeat_seconds: float = 15.0
    coalesce_ms: int = 0
    coalesce_chars: int = 200
    show_chain_of_thought: bool = False
    answer_timeout_seconds: float = 30.0


@dataclass
class World:
    service: ConversationService
    store: MemoryStore
    sim: Simulator


class DownStore(MemoryStore):
    """A store that has gone away."""

    async def ping(self) -> None:
        raise StoreUnavailable("context store (Redis) is unreachable")


async def world(simulator: tuple[str, Simulator], store: MemoryStore | None = None) -> AsyncIterator[World]:
    url, sim = simulator
    async with DustClient(url, "demo", SecretStr("sk-test0123456789")) as dust:
        store = store or MemoryStore(ttl_seconds=3600)
        service = ConversationService(dust, store, AgentDirectory(dust, 60), Turns(), Metrics())
        yield World(service, store, sim)


@pytest.fixture
async def w(simulator: tuple[str, Simulator]) -> AsyncIterator[World]:
    async for made in world(simulator):
        yield made


async def ask(w: World, principal: str = "alice", **kwargs: Any) -> Any:
    return await w.service.ask(principal=principal, session_key=None, **kwargs)


async def test_a_new_conversation_streams_its_answer_and_its_handle_is_remembered(w: World) -> None:
    seen: list[str] = []

    async def progress(text: str) -> None:
        seen.append(text)

    answer = await ask(w, agent_ref="echo", message="hello", listener=TurnListener(progress=progress))
    assert answer.text == "Echo (turn 1): hello" and not answer.continued
    assert "".join(seen).endswith("hello")  # the answer streamed in as progress
    record = await w.store.load(answer.handle, "alice")
    assert record is not None and record.dust_conversation_id == answer.dust_conversation_id


async def test_the_handle_continues_the_same_dust_conversation(w: World) -> None:
    first = await ask(w, agent_ref="echo", message="one")
    second = await ask(w, agent_ref="Echo", message="two", conversation=first.handle)
    assert second.text == "Echo (turn 2): two" and second.continued
    assert second.dust_conversation_id == first.dust_conversation_id
    assert len(w.sim.store.conversations) == 1


async def test_a_session_continues_its_last_conversation_with_an_agent(w: World) -> None:
    first = await w.service.ask(principal="alice", session_key="s1", agent_ref="echo", message="one")
    second = await w.service.ask(principal="alice", session_key="s1", agent_ref="echo", message="two")
    fresh = await w.service.ask(
        principal="alice", session_key="s1", agent_ref="echo", message="three", new_conversation=True
    )
    assert second.handle == first.handle and second.text == "Echo (turn 2): two"
    assert fresh.handle != first.handle and fresh.text == "Echo (turn 1): three"


async def test_an_unknown_agent_is_refused_before_anything_reaches_dust(w: World) -> None:
    with pytest.raises(UnknownAgent, match="no active agent named or with sId 'nobody'"):
        await ask(w, agent_ref="nobody", message="hello")
    assert w.sim.store.conversations == {}


async def test_someone_elses_handle_is_not_found(w: World) -> None:
    mine = await ask(w, agent_ref="echo", message="private")
    with pytest.raises(ConversationNotFound):
        await ask(w, principal="bob", agent_ref="echo", message="peek", conversation=mine.handle)


async def test_an_empty_or_contradictory_request_is_refused(w: World) -> None:
    with pytest.raises(InvalidMessage):
        await ask(w, agent_ref="echo", message="   ")
    with pytest.raises(InvalidMessage, match="not both"):
        await ask(w, agent_ref="echo", message="x", conversation="dmc_x", new_conversation=True)


async def test_an_agent_error_names_the_agent_and_the_handle(w: World) -> None:
    with pytest.raises(AgentFailed, match=r"agent broken failed: The model provider failed \(model_error\)"):
        await ask(w, agent_ref="broken", message="try")


async def test_a_conversation_gone_from_dust_is_forgotten(w: World) -> None:
    first = await ask(w, agent_ref="echo", message="one")
    w.sim.store.conversations.clear()
    # Dust's own reason goes with it.
    with pytest.raises(
        ConversationNotFound, match=r"no longer exists \(HTTP 404 conversation_not_found: .+\)"
    ):
        await ask(w, agent_ref="echo", message="two", conversation=first.handle)
    assert await w.store.load(first.handle, "alice") is None


async def test_with_the_store_down_a_new_conversation_is_refused_before_posting(
    simulator: tuple[str, Simulator],
) -> None:
    async for down in world(simulator, DownStore(ttl_seconds=3600)):
        with pytest.raises(StoreUnavailable):
            await ask(down, agent_ref="echo", message="hello")
        assert down.sim.store.conversations == {}
