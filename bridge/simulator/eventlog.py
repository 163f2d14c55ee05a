"""The replayable event log of one agent message, which stream readers follow live."""

from __future__ import annotations

import asyncio
import contextlib
import json
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.simulator.ids import EventIdClock

TERMINAL_TYPES = frozenset({"agent_message_success", "agent_error", "agent_generation_cancelled"})


@dataclass(frozen=True)
class Event:
    """One published event: its sortable id and its `data` payload."""

    key: tuple[int, int]
    data: dict[str, Any]

    @property
    def event_id(self) -> str:
        return f"{self.key[0]}-{self.key[1]}"

    @property
    def type(self) -> str:
        return str(self.data["type"])

    def frame(self) -> bytes:
        """The SSE frame: one unnamed `data:` line holding `{"eventId", "data"}`."""
        payload = json.dumps({"eventId": self.event_id, "data": self.data}, separators=(",", ":"))
        return f"data: {payload}\n\n".encode()


class EventLog:
    """Append-only events of one agent message; closed for writing after a terminal event."""

    def __init__(self, clock: EventIdClock) -> None:
        self._clock = clock
        self.events: list[Event] = []
        self.terminal: Event | None = None
        # Set when the simulator is reset: readers stop following a log nobody will write again.
        self.abandoned = False
        self._changed = asyncio.Event()

    def publish(self, data: dict[str, Any]) -> Event | None:
        """Append an event and wake the readers; ignored once the log is terminal or abandoned."""
        if self.terminal is not None or self.abandoned:
            return None
        event = Event(self._clock.next(), data)
        self.events.append(event)
        if event.type in TERMINAL_TYPES:
            self.terminal = event
        self._wake()
        return event

    def remove(self, predicate: Callable[[Event], bool]) -> None:
        """Delete the events `predicate` picks from the history (front/lib/api/redis-hybrid-manager.ts
        removeEvent: XDEL on the stream). Readers already given them keep them; a replay no longer
        has them. Ids of the events left are unchanged, so a `lastEventId` stays valid."""
        self.events = [event for event in self.events if not predicate(event)]

    def abandon(self) -> None:
        """Mark the log dead so that open streams on it end."""
        self.abandoned = True
        self._wake()

    def index_after(self, key: tuple[int, int] | None) -> int:
        """Index of the first event whose id is greater than `key` (0 when `key` is None)."""
        if key is None:
            return 0
        return bisect_right(self.events, key, key=lambda event: event.key)

    async def wait_beyond(self, cursor: int, at_most: float) -> None:
        """Return once there is an event at `cursor`, the log is abandoned, or `at_most` seconds pass."""
        if cursor < len(self.events) or self.abandoned:
            return
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), at_most)

    def _wake(self) -> None:
        # One Event per generation: waiters hold the old one, which is set; new waiters get a fresh one.
        self._changed.set()
        self._changed = asyncio.Event()
