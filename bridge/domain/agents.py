"""The workspace's agents: a short-lived cache and name/sId resolution.

Dust silently drops a mention of an unknown agent and never answers, so every agent reference is
resolved here before anything is posted.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from collections.abc import Callable

from bridge.dust.client import DustClient
from bridge.dust.errors import DustNotFound
from bridge.dust.models import Agent
from bridge.errors import InvalidInput


class UnknownAgent(InvalidInput):
    """The agent reference matches no active agent of the workspace."""

    code = "unknown_agent"


class AgentDirectory:
    """Caches the active agents for `ttl_seconds` and resolves references by sId or name."""

    def __init__(
        self, dust: DustClient, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._dust = dust
        self._ttl = ttl_seconds
        self._clock = clock
        self._agents: list[Agent] = []
        self._fetched_at: float | None = None
        self._fetching: asyncio.Task[None] | None = None

    async def list(self, *, refresh: bool = False) -> list[Agent]:
        """The active agents, from the cache while it is fresh.

        Concurrent callers share one fetch (no lock to queue on: under load, callers queued on a
        lock were seen waiting with no holder); a caller that is cancelled leaves the fetch running
        for the others.
        """
        now = self._clock()
        if refresh or self._fetched_at is None or now - self._fetched_at >= self._ttl:
            if self._fetching is None or self._fetching.done():
                self._fetching = asyncio.ensure_future(self._fetch(now))
                # Retrieved here so that a fetch whose callers all went away logs no warning.
                self._fetching.add_done_callback(lambda task: task.cancelled() or task.exception())
            await asyncio.shield(self._fetching)
        return list(self._agents)

    async def _fetch(self, now: float) -> None:
        agents = await self._dust.list_agents()
        self._agents = sorted((a for a in agents if a.status == "active"), key=lambda a: a.name.lower())
        self._fetched_at = now

    async def resolve(self, reference: str) -> Agent:
        """The agent whose sId equals `reference`, or whose name matches it case-insensitively.

        Raises:
            UnknownAgent: nothing matches; the message suggests close names.
        """
        wanted = reference.strip().removeprefix("@")
        if not wanted:
            raise UnknownAgent("agent must not be empty: pass an agent name or sId from list_agents")
        for refresh in (False, True):
            agents = await self.list(refresh=refresh)
            found = _match(agents, wanted)
            if found is not None:
                return found
        # Not in the list view (e.g. unlisted but reachable by sId): ask Dust directly.
        try:
            agent = await self._dust.get_agent(wanted)
        except DustNotFound:
            agent = None
        if agent is not None and agent.status == "active":
            return agent
        names = [a.name for a in agents]
        close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownAgent(
            f"no active agent named or with sId {wanted!r} in this workspace.{hint} Use list_agents."
        )


def _match(agents: list[Agent], wanted: str) -> Agent | None:
    for agent in agents:
        if agent.s_id == wanted:
            return agent
    lowered = wanted.lower()
    for agent in agents:
        if agent.name.lower() == lowered:
            return agent
    return None
