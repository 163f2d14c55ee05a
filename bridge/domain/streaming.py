"""Following one agent message's answer from Dust, and what happens when its caller stops listening.

A stream ends at the answer's terminal event, when the agent waits for the user (a pause nobody
answered mid-stream), or at the caller's deadline; in the last two cases Dust keeps the message and
the caller gets the position to resume from. A caller cancelled for good (a user's cancel) stops the
generation at Dust; a caller whose client merely gave up waiting (a client-side timeout) does not:
the answer is still worth reading later with wait_for_answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from bridge.domain.relay import OnPause, RelayOutcome, StreamRelay
from bridge.dust.client import DustClient
from bridge.dust.errors import DustError, DustStreamError
from bridge.errors import UpstreamFailure
from bridge.observability.metrics import Metrics

logger = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]

# Asked once the call was cancelled, with what was relayed so far: True when the client only timed
# out and the Dust work is kept (the callee records where the stream stood).
KeepOnCancel = Callable[[RelayOutcome], Awaitable[bool]]

# How long a cancel POST to Dust may take once the client has gone; it runs shielded.
_CANCEL_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class StreamSettings:
    heartbeat_seconds: float
    coalesce_seconds: float
    coalesce_chars: int
    show_chain_of_thought: bool
    answer_timeout_seconds: float


@dataclass(frozen=True)
class StreamTarget:
    """The agent message to follow, where to resume it, and what to tell in errors."""

    conversation_id: str
    message_id: str
    handle: str
    position: str | None = None


@dataclass
class Listener:
    """How the caller listens: progress, pauses answered mid-stream, deadline, cancel policy."""

    progress: Progress | None = None
    on_pause: OnPause | None = None
    deadline: float | None = None  # seconds; None or 0: until the end
    keep_on_cancel: KeepOnCancel | None = None


class AnswerStreamer:
    """Relays agent messages from Dust and keeps count of the ones in flight."""

    def __init__(self, dust: DustClient, settings: StreamSettings, metrics: Metrics) -> None:
        self._dust = dust
        self._settings = settings
        self._metrics = metrics
        self.active = 0

    async def follow(self, target: StreamTarget, listener: Listener) -> RelayOutcome:
        """Relay the message's events to the listener until the answer ends, pauses or the deadline.

        Raises:
            UpstreamFailure: the answer timeout passed (the generation was cancelled), or the stream
                was lost (the generation goes on).
            Cancellation: as usual, after stopping the generation at Dust unless the listener's
                `keep_on_cancel` keeps it.
        """
        relay = self._relay(listener.progress)
        finished = False
        self._started()
        started = time.monotonic()
        outcome: RelayOutcome | None = None
        try:
            with anyio.fail_after(self._settings.answer_timeout_seconds):
                outcome = await relay.run(
                    self._dust.stream_agent_events(
                        target.conversation_id, target.message_id, last_event_id=target.position
                    ),
                    on_pause=listener.on_pause,
                    deadline=listener.deadline or None,
                )
            finished = True
            self._observe(outcome, started)
            return outcome
        except TimeoutError:
            finished = True
            self._metrics.cancellations.inc()
            await self.cancel_at_dust(target.conversation_id, target.message_id)
            raise UpstreamFailure(
                f"Dust did not finish within {self._settings.answer_timeout_seconds:g}s"
                " (BRIDGE_ANSWER_TIMEOUT_SECONDS); the generation was cancelled."
                f" Conversation handle: {target.handle}"
            ) from None
        except DustStreamError as exc:
            # The generation may still finish in Dust: keep it running and say how to read it.
            finished = True
            raise UpstreamFailure(
                f"the answer stream from Dust was lost ({exc.message}); the answer may still complete:"
                f" call wait_for_answer(conversation={target.handle!r})"
            ) from None
        finally:
            self._stopped()
            if not finished:
                await self._after_cancel(target, listener, relay.partial)

    def _relay(self, progress: Progress | None) -> StreamRelay:
        async def emit(message: str) -> None:
            if progress is not None:
                await progress(message)

        return StreamRelay(
            emit,
            heartbeat_seconds=self._settings.heartbeat_seconds,
            coalesce_seconds=self._settings.coalesce_seconds,
            coalesce_chars=self._settings.coalesce_chars,
            show_chain_of_thought=self._settings.show_chain_of_thought,
        )

    def _started(self) -> None:
        self.active += 1
        self._metrics.active_streams.inc()

    def _stopped(self) -> None:
        self.active -= 1
        self._metrics.active_streams.dec()

    def _observe(self, outcome: RelayOutcome, started: float) -> None:
        self._metrics.heartbeats.inc(outcome.heartbeats)
        if outcome.terminal is not None:
            self._metrics.answer_seconds.observe(time.monotonic() - started)
        if outcome.first_chunk_at is not None:
            self._metrics.first_chunk_seconds.observe(outcome.first_chunk_at - started)

    async def _after_cancel(self, target: StreamTarget, listener: Listener, partial: RelayOutcome) -> None:
        """The call ended without an outcome: stop the generation, unless the client only timed out."""
        with anyio.CancelScope(shield=True):
            if listener.keep_on_cancel is not None and await listener.keep_on_cancel(partial):
                logger.info("the client timed out; the answer goes on in Dust for wait_for_answer")
                return
            self._metrics.cancellations.inc()
            await self.cancel_at_dust(target.conversation_id, target.message_id)

    async def cancel_at_dust(self, conversation_id: str, message_id: str) -> None:
        """Ask Dust to stop generating the message; failures are logged, not raised."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_TIMEOUT_SECONDS):
            try:
                await self._dust.cancel(conversation_id, [message_id])
            except DustError as exc:
                logger.warning("could not cancel the generation at Dust: %s", exc)
