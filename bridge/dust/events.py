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
    deadline = anyio.current_time() + total_timeout
    seen: set[str] = set()
    failures = 0
    connections = 0
    while True:
        if connections and on_reconnect is not None:
            on_reconnect()
        connections += 1
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            raise DustStreamError(
                f"no terminal event within {total_timeout:g}s; giving up", type="stream_timeout"
            )
        progressed = False
        cause = "the stream ended without a terminal event"
        retry_after: float | None = None
        connected_at: float | None = None
        try:
            async with open_connection(last_event_id, min(read_timeout, remaining)) as frames:
                connected_at = anyio.current_time()
                async for frame in frames:
                    event = parse_frame(frame)
                    if event is None or event.event_id in seen:
                        continue
                    seen.add(event.event_id)
                    last_event_id = event.event_id
                    progressed = True
                    if event.is_terminal:
                        try:
                            yield event
                        finally:
                            # Also when the consumer closes us on this event (the usual case).
                            if event.type in _ENDS_STREAM:
                                await _drain(frames)
                        return
                    yield event
                    if anyio.current_time() >= deadline:
                        break
        except _FATAL_ERRORS:
            raise
        except DustError as exc:
            cause = str(exc)
            if isinstance(exc, DustRateLimited):
                retry_after = exc.retry_after
        except StreamBroken as exc:
            cause = f"the connection broke ({exc})"
        quiet = connected_at is not None and anyio.current_time() - connected_at >= QUIET_CONNECTION_SECONDS
        if progressed or quiet:
            failures = 0
            continue
        failures += 1
        if failures > max_reconnects:
            raise DustStreamError(
                f"gave up after {failures} connections without a new event; last: {cause}",
                type="stream_reconnects_exhausted",
            )
        log.info("Dust event stream: reconnecting (failure %d of %d): %s", failures, max_reconnects, cause)
        cap = reconnect_delay * _MAX_DELAY_FACTOR
        delay = min(cap, reconnect_delay * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        await anyio.sleep(min(delay, max(0.0, deadline - anyio.current_time())))
