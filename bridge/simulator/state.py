"""The simulator's live state: options, stored objects, statistics, injected faults, running tasks."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.simulator.faults import FaultQueue
from bridge.simulator.ids import EventIdClock
from bridge.simulator.model import AgentMessage, BlockedAction, Conversation, FileRecord, UserMessage
from bridge.simulator.options import SimulatorOptions, merge_options

log = logging.getLogger(__name__)

# Enough history for any test or benchmark run to inspect, without growing forever.
_MAX_RECORDED_REQUESTS = 10_000
_MAX_RECORDED_BODIES = 1000


@dataclass
class Store:
    """Conversations, messages and files of the one simulated workspace."""

    conversations: dict[str, Conversation] = field(default_factory=dict)
    messages: dict[str, UserMessage | AgentMessage] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    # Every action that was blocked on the user, by sId (AgentMCPActionResource.fetchById is
    # workspace-wide: the routes find an action whatever conversation or message they name).
    actions: dict[str, BlockedAction] = field(default_factory=dict)
    file_creations: deque[float] = field(default_factory=deque)  # loop times, for the per-minute limit
    cut_messages: set[str] = field(default_factory=set)  # agent messages whose stream was already cut
    _last_id: int = 0

    def next_id(self) -> int:
        """The next integer model id (shared by all object kinds, like a database sequence)."""
        self._last_id += 1
        return self._last_id


@dataclass
class Stats:
    """What the simulator has seen since start or the last reset."""

    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_MAX_RECORDED_REQUESTS))
    requests_total: int = 0
    cancels: list[dict[str, Any]] = field(default_factory=list)
    stream_connections: int = 0
    # Request bodies POSTed to /api/... (bridge.simulator.capture), oldest first.
    bodies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_MAX_RECORDED_BODIES))
    # Requests to the signed storage URLs: path, status and whether an Authorization header came.
    storage_requests: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=_MAX_RECORDED_REQUESTS)
    )


class Simulator:
    """Everything one simulator app holds; routes and middleware share this object."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.initial_options = options
        self.options = options
        self.rng = random.Random(options.seed)
        self.clock = EventIdClock()
        self.store = Store()
        self.stats = Stats()
        self.faults = FaultQueue()
        # A gauge of live connections, deliberately kept across resets: streams still open decrement it.
        self.open_streams = 0
        self.tasks: set[asyncio.Task[None]] = set()
        # The key the signed storage URLs are signed with (the storage's own secret).
        self.signing_key = secrets.token_bytes(32)

    def configure(self, patch: Mapping[str, object]) -> None:
        """Merge `patch` into the live options (raises ValueError if invalid)."""
        self.options = merge_options(self.options, patch)
        if "seed" in patch:
            self.rng = random.Random(self.options.seed)

    def reset(self) -> None:
        """Forget all data, statistics and faults; go back to the start-up options."""
        self._stop_generation()
        self.options = self.initial_options
        self.rng = random.Random(self.options.seed)
        self.store = Store()
        self.stats = Stats()
        self.faults = FaultQueue()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a tracked background task (cancelled on reset and shutdown)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def shutdown(self) -> None:
        """Cancel all generation and wait for it to unwind."""
        tasks = list(self.tasks)
        self._stop_generation()
        if tasks:
            await asyncio.wait(tasks)

    def owner_json(self) -> dict[str, Any]:
        """The workspace object (`owner`) embedded in conversations."""
        return {
            "id": 1,
            "sId": self.options.workspace_id,
            "name": "Dust simulator",
            # The role of the authenticated key (Authenticator.workspace() renders it).
            "role": self.options.api_key_role,
            "segmentation": None,
            "whiteListedProviders": None,
            "defaultEmbeddingProvider": None,
            "regionalModelsOnly": False,
            "ssoEnforced": False,
        }

    def conversation_url(self, conversation_sid: str) -> str:
        """The web-app link of a conversation (getConversationRoute in front/lib/utils/router.ts)."""
        base = self.options.public_url.rstrip("/")
        return f"{base}/w/{self.options.workspace_id}/conversation/{conversation_sid}"

    def stats_json(self) -> dict[str, Any]:
        """The `/_sim/stats` body."""
        store = self.store
        return {
            "requests": list(self.stats.requests),
            "requests_total": self.stats.requests_total,
            "cancels": self.stats.cancels,
            "conversations": len(store.conversations),
            "messages": sum(1 for message in store.messages.values() if isinstance(message, UserMessage)),
            "agent_messages": sum(
                1 for message in store.messages.values() if isinstance(message, AgentMessage)
            ),
            "files": len(store.files),
            "open_streams": self.open_streams,
            "stream_connections": self.stats.stream_connections,
            "generating": len(self.tasks),
            "storage_requests": list(self.stats.storage_requests),
        }

    def _stop_generation(self) -> None:
        for task in self.tasks:
            task.cancel()
        for message in self.store.messages.values():
            if isinstance(message, AgentMessage):
                message.log.abandon()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("generation task failed", exc_info=task.exception())
