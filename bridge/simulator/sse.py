"""The agent-message event stream, with Dust's framing and connection quirks (reference §6)."""

from __future__ import annotations

import asyncio
import enum
import logging

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.simulator.model import AgentMessage
from bridge.simulator.state import Simulator

log = logging.getLogger(__name__)

HANDSHAKE_FRAME = b"event: dust-handshake\ndata: {}\n\n"
DONE_FRAME = b"data: done\n\n"


class _End(enum.Enum):
    DONE = "done"  # write `data: done` and finish the response properly
    CUT = "cut"  # stop without finishing the response: the client sees a broken connection


class MessageEventStream(Response):
    """Streams one agent message's events after `after` (an event id key, or None for all)."""

    media_type = "text/event-stream"

    def __init__(self, sim: Simulator, message: AgentMessage, after: tuple[int, int] | None) -> None:
        # Like Starlette's StreamingResponse: no body, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache"})
        self._sim = sim
        self._message = message
        self._after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self._sim
        sim.open_streams += 1
        sim.stats.stream_connections += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            end: _End | None = None
            # Watch for the client leaving while the stream is silent (e.g. after a cancel), since
            # nothing would be written that could fail and tell us.
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                end = await self._pump(send)
                group.cancel_scope.cancel()
            if end is _End.DONE:
                await send({"type": "http.response.body", "body": DONE_FRAME, "more_body": False})
            # _End.CUT: return with the response unfinished; the server drops the connection.
        except* OSError:
            # ASGI 2.4 servers report a client gone mid-write this way (uvicorn just drops the write).
            pass
        finally:
            sim.open_streams -= 1

    async def _pump(self, send: Send) -> _End:
        options = self._sim.options

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.connection_lifetime_seconds
        if options.handshake:
            await write(HANDSHAKE_FRAME)
        event_log = self._message.log
        # The position is the id of the last event sent, not an index: events can be deleted from
        # the history meanwhile (EventLog.remove), which shifts the indexes but not the ids.
        last = self._after
        sent = 0
        while True:
            if event_log.abandoned:
                return _End.CUT
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _End.DONE
            cursor = event_log.index_after(last)
            if cursor < len(event_log.events):
                event = event_log.events[cursor]
                last = event.key
                await write(event.frame())
                sent += 1
                if self._should_cut(sent, options.cut_stream_after):
                    return _End.CUT
                if sent >= options.events_per_connection:
                    return _End.DONE
                continue
            terminal = event_log.terminal
            if terminal is not None and not (
                terminal.type == "agent_generation_cancelled" and options.cancel_keeps_open
            ):
                return _End.DONE
            # Nothing to send yet (or a cancelled message): wait quietly, never with heartbeats.
            await event_log.wait_beyond(cursor, remaining)

    def _should_cut(self, sent: int, limit: int | None) -> bool:
        # Cut each message's stream only once, so the client's reconnection can finish the answer.
        cut = self._sim.store.cut_messages
        if limit is None or sent < limit or self._message.sid in cut:
            return False
        cut.add(self._message.sid)
        log.info(
            "cutting the stream of message %s after %d events (cut_stream_after)", self._message.sid, sent
        )
        return True
