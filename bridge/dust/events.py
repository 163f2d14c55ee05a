"""Agent message events: frame parsing and the reconnecting consumer (dust-api.md section 6).

Dust's message stream is SSE with a few quirks this module absorbs:
- a named `dust-handshake` frame comes first on current servers: skipped;
- each real frame is one unnamed `data:` line of JSON `{"eventId", "data": {"type", ...}}`;
- `data: done` ends the *connection*, not the answer: unless a terminal event was seen, reconnect
  with `?lastEventId=` (the server then replays what came after it);
- after a cancellation the server may keep the socket open without sending anything, so the
  consumer must stop on the terminal event itself;
- there are no heartbeats: a long tool call is silence, so only a generous read timeout (which
  merely triggers a reconnect) tells a dead socket from a quiet agent.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import anyio

from bridge.dust.errors import (
    DustAuthError,
    DustBadRequest,
    DustError,
    DustNotFound,
    DustRateLimited,
    DustStreamError,
)
from bridge.dust.sse import SseFrame

log = logging.getLogger(__name__)

TERMINAL_TYPES = frozenset(
    {
        "agent_message_success",
        "agent_message_gracefully_stopped",
        "agent_error",
        "agent_generation_cancelled",
        "user_message_error",
    }
)

# Reconnecting to a stream that produced nothing backs off from `reconnect_delay` up to this
# multiple of it, so a struggling Dust is not hammered yet a blip costs well under a second.
_MAX_DELAY_FACTOR = 10.0

# A connection that stayed open this long before ending without news was a quiet agent (a long
# tool call: Dust sends no heartbeats and ends message streams after about 60 s), not a failing
# server, so it does not count towards `max_reconnects`; `total_timeout` still bounds the wait.
QUIET_CONNECTION_SECONDS = 10.0

# Errors that no reconnect can fix: the message is gone, the key is bad, or the request is wrong.
_FATAL_ERRORS = (DustNotFound, DustAuthError, DustBadRequest)

# Terminal events after which Dust ends the response at once (`data: done`; after a cancellation
# it may keep the socket open instead). Reading that end, for at most DRAIN_SECONDS, lets the
# connection go back to the pool: without it every answer costs a new TCP (and TLS) connection.
_ENDS_STREAM = frozenset({"agent_message_success", "agent_message_gracefully_stopped", "agent_error"})
DRAIN_SECONDS = 0.05


class StreamBroken(Exception):
    """The connection of an event stream broke mid-stream (reset, read timeout, truncated or
    oversized body, not an event stream): the stream may be resumed on a new connection."""


@dataclass(frozen=True)
class AgentEvent:
    """One event of an agent message stream: Dust's eventId, `data.type` and the whole `data`."""

    event_id: str
    type: str
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        """True for the events after which the agent message will not change any more."""
        return self.type in TERMINAL_TYPES


def parse_frame(frame: SseFrame) -> AgentEvent | None:
    """The agent event in an SSE frame, or None for frames that carry none.

    Skipped: named events (`dust-handshake`), `data: done`, non-JSON data, and JSON without an
    `eventId` string or a `data` object with a string `type`.
    """
    if frame.event != "message":
        return None
    text = frame.data.strip()
    if not text or text == "done":
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    event_id = payload.get("eventId")
    data = payload.get("data")
    if not isinstance(event_id, str) or not event_id or not isinstance(data, dict):
        return None
    event_type = data.get("type")
    if not isinstance(event_type, str):
        return None
    return AgentEvent(event_id=event_id, type=event_type, data=data)


async def _drain(frames: AsyncIterator[SseFrame]) -> None:
    """Read what is left of a response after its terminal event, briefly; errors do not matter."""
    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            async for _ in frames:
                pass
        except (StreamBroken, DustError):
            pass


OpenConnection = Callable[[str | None, float], AbstractAsyncContextManager[AsyncIterator[SseFrame]]]
"""`open(last_event_id, read_timeout)`: one connection to the stream, as an async context manager
yielding its frames. It raises a `DustError` when the connection is refused (HTTP error, network,
circuit open); frames may raise `StreamBroken` when the connection breaks mid-stream."""


async def follow_events(
    open_connection: OpenConnection,
    *,
    last_event_id: str | None = None,
    max_reconnects: int = 10,
    total_timeout: float = 900.0,
    read_timeout: float = 120.0,
    reconnect_delay: float = 0.5,
    on_reconnect: Callable[[], None] | None = None,
) -> AsyncGenerator[AgentEvent, None]:
    """Yield an agent message's events across reconnects until a terminal event.

    A connection that yields at least one new event resets the failure count and is followed at
    once, and so is one that stayed open `QUIET_CONNECTION_SECONDS` (a silent agent). Any other
    connection (refused with 429/5xx/network, or ended or broken early without news) counts as a
    failure and is retried after a jittered, growing delay. More than `max_reconnects` failures in
    a row, or `total_timeout` seconds in all, end the stream. Events already seen are dropped, so
    a server that replays too much causes no duplicates. Closing the generator closes the
    connection. `on_reconnect` is told of every connection after the first (for metrics).

    Raises:
        DustNotFound: the conversation or message does not exist.
        DustAuthError: the key was refused.
        DustBadRequest: the server rejected the request (not an agent message, say).
        DustStreamError: too many failed reconnects, or `total_timeout` exceeded.
    """
    deadline = _Deadline(total_timeout)
    stream = _EventStream(open_connection, last_event_id, deadline)
    reconnects = _Reconnects(max_reconnects, reconnect_delay)
    for number in itertools.count():
        if number and on_reconnect is not None:
            on_reconnect()
        connection = _Connection(read_timeout=min(read_timeout, deadline.remaining_or_raise()))
        async with contextlib.aclosing(stream.events(connection)) as events:
            async for event in events:
                yield event
        if connection.ended:
            return
        delay = reconnects.delay_after(connection)
        if delay is not None:
            await anyio.sleep(min(delay, max(0.0, deadline.remaining())))


class _Deadline:
    """The `total_timeout` of one `follow_events`, counted from its start."""

    def __init__(self, total_timeout: float) -> None:
        self.total_timeout = total_timeout
        self._at = anyio.current_time() + total_timeout

    def remaining(self) -> float:
        return self._at - anyio.current_time()

    def passed(self) -> bool:
        return anyio.current_time() >= self._at

    def remaining_or_raise(self) -> float:
        """The time left, if any.

        Raises:
            DustStreamError: the time is up (type `stream_timeout`).
        """
        remaining = self.remaining()
        if remaining <= 0:
            raise DustStreamError(
                f"no terminal event within {self.total_timeout:g}s; giving up", type="stream_timeout"
            )
        return remaining


@dataclass
class _Connection:
    """How one connection of the stream went."""

    read_timeout: float
    connected_at: float | None = None  # None: refused
    progressed: bool = False  # it yielded at least one new event
    ended: bool = False  # it yielded the terminal event: the stream is over
    cause: str = "the stream ended without a terminal event"
    retry_after: float | None = None  # from a 429

    def broke(self, exc: DustError | StreamBroken) -> None:
        """Note why the connection was refused or broke."""
        if isinstance(exc, StreamBroken):
            self.cause = f"the connection broke ({exc})"
            return
        self.cause = str(exc)
        if isinstance(exc, DustRateLimited):
            self.retry_after = exc.retry_after

    def failed(self) -> bool:
        """Neither news nor a long quiet wait (a silent agent): the connection counts as a failure."""
        quiet = (
            self.connected_at is not None
            and anyio.current_time() - self.connected_at >= QUIET_CONNECTION_SECONDS
        )
        return not (self.progressed or quiet)


class _EventStream:
    """The stream's connections, each resuming after the last event yielded."""

    def __init__(
        self, open_connection: OpenConnection, last_event_id: str | None, deadline: _Deadline
    ) -> None:
        self._open = open_connection
        self._last_event_id = last_event_id
        self._seen: set[str] = set()
        self._deadline = deadline

    async def events(self, connection: _Connection) -> AsyncGenerator[AgentEvent, None]:
        """One connection's new events, up to and including a terminal one (or until the deadline).

        How it went is noted in `connection`; a refused or broken connection just ends the events.

        Raises:
            DustNotFound, DustAuthError, DustBadRequest: no reconnect can help.
        """
        try:
            async with self._open(self._last_event_id, connection.read_timeout) as frames:
                connection.connected_at = anyio.current_time()
                async for frame in frames:
                    event = self._new_event(frame)
                    if event is None:
                        continue
                    connection.progressed = True
                    connection.ended = event.is_terminal
                    try:
                        yield event
                    finally:
                        # Also when the consumer closes us on this event (the usual case).
                        if event.type in _ENDS_STREAM:
                            await _drain(frames)
                    if event.is_terminal or self._deadline.passed():
                        return
        except _FATAL_ERRORS:
            raise
        except (DustError, StreamBroken) as exc:
            connection.broke(exc)

    def _new_event(self, frame: SseFrame) -> AgentEvent | None:
        """The frame's event, unless it carries none or one already yielded (a replay)."""
        event = parse_frame(frame)
        if event is None or event.event_id in self._seen:
            return None
        self._seen.add(event.event_id)
        self._last_event_id = event.event_id
        return event


class _Reconnects:
    """The reconnect policy: how long to wait after a connection, and when to give up."""

    def __init__(self, max_reconnects: int, reconnect_delay: float) -> None:
        self._max_reconnects = max_reconnects
        self._reconnect_delay = reconnect_delay
        self._failures = 0  # in a row

    def delay_after(self, connection: _Connection) -> float | None:
        """Seconds to wait before the next connection, or None to reconnect at once.

        Raises:
            DustStreamError: more than `max_reconnects` failures in a row (`stream_reconnects_exhausted`).
        """
        if not connection.failed():
            self._failures = 0
            return None
        self._failures += 1
        if self._failures > self._max_reconnects:
            raise DustStreamError(
                f"gave up after {self._failures} connections without a new event; last: {connection.cause}",
                type="stream_reconnects_exhausted",
            )
        log.info(
            "Dust event stream: reconnecting (failure %d of %d): %s",
            self._failures,
            self._max_reconnects,
            connection.cause,
        )
        cap = self._reconnect_delay * _MAX_DELAY_FACTOR
        delay: float = min(cap, self._reconnect_delay * 2 ** (self._failures - 1)) * random.uniform(0.5, 1.0)
        if connection.retry_after is not None:
            delay = max(delay, min(connection.retry_after, cap))
        return delay
