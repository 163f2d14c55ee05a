"""Turn a Dust agent-message event stream into MCP progress messages.

Answer tokens are coalesced (a client must not get one notification per token: at most one per
coalescing interval, sooner once enough text waits; text after a quieter spell goes at once), tool
activity becomes short status lines, and while Dust is silent (tools, long reasoning: Dust itself
sends no heartbeats) a heartbeat goes out every `heartbeat_seconds` so clients that reset their
timeout on progress keep waiting and proxies see traffic.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from bridge.domain.citations import MarkerFilter
from bridge.dust.events import AgentEvent
from bridge.dust.pauses import PendingAction

Emit = Callable[[str], Awaitable[None]]

OnPause = Callable[[list[PendingAction], float | None], Awaitable[bool]]
"""Called with the actions an agent step is blocked on and the seconds left of the caller's deadline
(None: no deadline), which it must keep to; True once they were answered (the stream goes on),
False to stop relaying and leave them pending."""


@dataclass
class RelayOutcome:
    """What the stream produced: the answer and the terminal event (None if the stream ended without one).

    Without a terminal event the relay stopped early: `pauses` holds what the agent waits for, or
    `deadline_passed` says the caller's deadline came first; `last_event_id` is where to resume.
    """

    text: str
    terminal: AgentEvent | None
    last_event_id: str | None = None
    pauses: list[PendingAction] = field(default_factory=list)
    deadline_passed: bool = False
    notifications: int = 0
    heartbeats: int = 0
    first_chunk_at: float | None = None
    tools: list[str] = field(default_factory=list)


@dataclass
class _Failed:
    error: BaseException


def tool_status(event: AgentEvent) -> str | None:
    """A one-line status message for a tool event, or None for events that are not worth showing."""
    data = event.data
    if event.type == "tool_call_started":
        return f"[tool] {data.get('toolName') or 'tool'} started"
    if event.type == "tool_notification":
        notification = data.get("notification") or {}
        meta = notification.get("_meta") or {}
        label = (meta.get("data") or {}).get("label") or (notification.get("data") or {}).get("label")
        return f"[tool] {_tool_name(data)}: {label}" if label else None
    if event.type == "agent_action_success":
        return f"[tool] {_tool_name(data)} done"
    if event.type == "tool_error":
        error = data.get("error") or {}
        return f"[tool] error: {str(error.get('message') or 'tool failed')[:200]}"
    if event.type == "tool_approve_execution":
        name = (data.get("metadata") or {}).get("toolName") or "a tool"
        return f"[waiting for you] {name} needs your approval"
    if event.type == "tool_ask_user_question":
        question = (data.get("question") or {}).get("question") or "a question"
        return f"[waiting for you] the agent asks: {str(question)[:200]}"
    if event.type in ("tool_personal_auth_required", "tool_file_auth_required"):
        return "[waiting for you] a tool needs you to connect an account in Dust"
    if event.type == "agent_context_pruned":
        return "[agent] conversation context trimmed by Dust"
    return None


def _tool_name(data: dict[str, Any]) -> str:
    action = data.get("action") or {}
    return str(action.get("toolName") or action.get("functionCallName") or data.get("toolName") or "tool")


class StreamRelay:
    """Consume one agent message's events and emit coalesced progress messages through `emit`."""

    def __init__(
        self,
        emit: Emit,
        *,
        heartbeat_seconds: float,
        coalesce_seconds: float,
        coalesce_chars: int,
        show_chain_of_thought: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._heartbeat = heartbeat_seconds
        self._coalesce_seconds = coalesce_seconds
        self._coalesce_chars = coalesce_chars
        self._show_cot = show_chain_of_thought
        self._clock = clock
        # The current (or last) run's outcome: a cancelled caller still finds its last_event_id here.
        self.partial = RelayOutcome(text="", terminal=None)

    async def run(
        self,
        events: AsyncIterator[AgentEvent],
        *,
        on_pause: OnPause | None = None,
        deadline: float | None = None,
    ) -> RelayOutcome:
        """Relay `events` until a terminal event or the end of the stream.

        When an agent step blocks on the user, `on_pause` is asked to get the answers (without it,
        or when it returns False, the relay stops with the pauses). `deadline` (seconds of the whole
        relay, the time `on_pause` takes included: it gets what is left) stops it with
        `deadline_passed`.

        Errors raised by the event stream are re-raised here. Cancellation propagates as usual; the
        caller owns cancelling the generation at Dust.

        The events are read and handled in the calling task; a second task only wakes up at the
        coalescing deadline and for heartbeats. That keeps the per-token cost to handling the event
        itself (no hand-over between tasks, no timeout scope per event), and the HTTP read of Dust is
        never cancelled by a timer (that would tear the stream down).
        """
        turn = _Turn(self, on_pause, deadline)
        self.partial = turn.outcome
        result: RelayOutcome | _Failed
        async with anyio.create_task_group() as tg:
            tg.start_soon(turn.watch)
            try:
                with anyio.CancelScope() as turn.consumer:
                    result = await turn.consume(events)
                if turn.consumer.cancelled_caught:  # only the watcher cancels it
                    result = turn.stopped_early()
            except Exception as exc:
                # Raised outside the task group below, so callers see the error itself, not a group.
                result = _Failed(exc)
            finally:
                tg.cancel_scope.cancel()
        if isinstance(result, _Failed):
            raise result.error
        return result


class _Turn:
    """The state of one relayed answer, shared by the consuming task and the timer task."""

    def __init__(self, relay: StreamRelay, on_pause: OnPause | None, deadline: float | None) -> None:
        self._relay = relay
        self._clock = relay._clock
        self._on_pause = on_pause
        self._deadline = None if deadline is None else self._clock() + deadline
        # on_pause is running: it keeps to the deadline itself, so that an answer it is sending to
        # Dust is not cut off half-way.
        self._pausing = False
        self._blocked: list[PendingAction] = []
        self._markers = MarkerFilter()
        self.outcome = RelayOutcome(text="", terminal=None)
        self._answer: list[str] = []
        self._pending: list[str] = []
        self._pending_chars = 0
        self._last_emit = self._started = self._clock()
        self._current_tool: str | None = None
        # Emits (and taking the pending text) happen under the lock, so messages keep their order.
        self._lock = anyio.Lock(fast_acquire=True)
        self._timer: anyio.CancelScope | None = None
        self.consumer: anyio.CancelScope | None = None
        self.failure: BaseException | None = None

    # -- the consuming task ------------------------------------------------------------------

    async def consume(self, events: AsyncIterator[AgentEvent]) -> RelayOutcome:
        iterator = aiter(events)
        try:
            while True:
                try:
                    event = await anext(iterator)
                except StopAsyncIteration:
                    self._release_held()
                    await self._flush()
                    self.outcome.text = "".join(self._answer)
                    return self.outcome
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception:
                    await self._flush()
                    raise
                self.outcome.last_event_id = event.event_id
                if await self._handle(event) or await self._paused(event):
                    self.outcome.text = self.outcome.text or "".join(self._answer)
                    return self.outcome
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _handle(self, event: AgentEvent) -> bool:
        """Handle one event; True once it was the terminal one."""
        relay = self._relay
        if event.type == "generation_tokens":
            text = str(event.data.get("text") or "")
            classification = event.data.get("classification")
            if classification == "tokens" and text:
                self._answer.append(text)
                shown = self._markers.feed(text)  # no raw citation markers in progress
                if not shown:
                    return False
                started_pending = not self._pending
                self._pending.append(shown)
                self._pending_chars += len(shown)
                # Coalescing spaces notifications at least `coalesce_seconds` apart; it does not
                # delay text that arrives after a quieter spell (nor the first chunk: the moment the
                # user sees the answer start), so a slow stream goes out token by token with no
                # timer involved, and a fast one in one notification per interval.
                first = self.outcome.first_chunk_at is None
                if (
                    first
                    or self._pending_chars >= relay._coalesce_chars
                    or self._clock() - self._last_emit >= relay._coalesce_seconds
                ):
                    await self._flush()
                elif started_pending:
                    self._rearm()  # the coalescing deadline now comes before the heartbeat's
            elif classification == "chain_of_thought" and text and relay._show_cot:
                async with self._lock:
                    await self._flush_locked()
                    await self._send(f"[thinking] {text}")
            return False
        if event.type == "tool_call_started":
            self._current_tool = str(event.data.get("toolName") or "tool")
            self.outcome.tools.append(self._current_tool)
        elif event.type in ("agent_action_success", "tool_error"):
            self._current_tool = None
        status = tool_status(event)
        if status is not None:
            async with self._lock:
                await self._flush_locked()
                await self._send(status)
        if not event.is_terminal:
            return False
        self._release_held()
        await self._flush()
        self.outcome.terminal = event
        message = event.data.get("message")
        final = message.get("content") if isinstance(message, dict) else None
        # The terminal message carries the authoritative final text; tokens can miss pieces
        # (e.g. the stream was joined late), so prefer it when present.
        self.outcome.text = final if isinstance(final, str) and final else "".join(self._answer)
        return True

    def _release_held(self) -> None:
        """What the marker filter held back was not a marker after all: it goes out with the rest."""
        held = self._markers.flush()
        if held:
            self._pending.append(held)
            self._pending_chars += len(held)

    async def _paused(self, event: AgentEvent) -> bool:
        """Collect a pause event; at the last one of its step, True unless `on_pause` answered them."""
        pending = PendingAction.from_event(event.data)
        if pending is None:
            return False
        self._blocked.append(pending)
        if not pending.last_of_step:
            return False
        blocked, self._blocked = self._blocked, []
        await self._flush()
        if self._on_pause is not None:
            left = None if self._deadline is None else max(0.0, self._deadline - self._clock())
            self._pausing = True
            try:
                if await self._on_pause(blocked, left):
                    return False
            finally:
                self._pausing = False
                self._rearm()
        self.outcome.pauses = blocked
        return True

    def stopped_early(self) -> RelayOutcome | _Failed:
        """The result once the watcher stopped the consumer: the deadline, or a failed emit."""
        if self.failure is not None or not self.outcome.deadline_passed:
            return _Failed(self.failure or RuntimeError("relay stopped"))
        self.outcome.text = "".join(self._answer)
        return self.outcome

    # -- the timer task ----------------------------------------------------------------------

    async def watch(self) -> None:
        """Flush pending text at its coalescing deadline; send a heartbeat when nothing went out
        for `heartbeat_seconds`."""
        try:
            while True:
                with anyio.CancelScope(deadline=anyio.current_time() + self._due_in()) as timer:
                    self._timer = timer
                    await anyio.sleep_forever()
                self._timer = None
                if self._deadline_passed():
                    return
                async with self._lock:
                    if self._due_in() > 0:
                        continue  # something went out meanwhile: wait for the new deadline
                    if self._pending:
                        await self._flush_locked()
                    else:
                        waited = math.floor(self._clock() - self._started)
                        doing = f"{self._current_tool} running" if self._current_tool else "Dust is working"
                        await self._send(f"[waiting] {doing} ({waited}s)", heartbeat=True)
        except Exception as exc:
            # A failed emit ends the relay with that error, as one from the consuming task would.
            self.failure = exc
            if self.consumer is not None:
                self.consumer.cancel()

    def _deadline_passed(self) -> bool:
        """Stop the consumer once the caller's deadline has passed (never while on_pause runs)."""
        if self._deadline is None or self._pausing or self._clock() < self._deadline:
            return False
        self.outcome.deadline_passed = True
        if self.consumer is not None:
            self.consumer.cancel()
        return True

    def _due_in(self) -> float:
        """Seconds until the timer task has something to do."""
        deadline = self._last_emit + self._relay._heartbeat
        if self._pending:
            deadline = min(deadline, self._last_emit + self._relay._coalesce_seconds)
        if self._deadline is not None and not self._pausing:
            deadline = min(deadline, self._deadline)
        return deadline - self._clock()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.deadline = anyio.current_time() + self._due_in()

    # -- emitting ----------------------------------------------------------------------------

    async def _flush(self) -> None:
        # Always under the lock, even when nothing is pending: the timer task may have taken the
        # pending text and still be sending it, and the relay must not end (and cancel that send)
        # before it has gone out.
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if self._pending:
            chunk = "".join(self._pending)
            self._pending, self._pending_chars = [], 0
            if self.outcome.first_chunk_at is None:
                self.outcome.first_chunk_at = self._clock()
            await self._send(chunk)

    async def _send(self, message: str, *, heartbeat: bool = False) -> None:
        await self._relay._emit(message)
        self._last_emit = self._clock()
        self.outcome.notifications += 1
        if heartbeat:
            self.outcome.heartbeats += 1
        # No re-arming here: a send only moves the timer's deadline later, and the timer task,
        # woken at the earlier one, waits again for the new one. Moving it on every send cost a
        # timer handle per relayed token.
