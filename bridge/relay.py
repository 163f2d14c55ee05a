"""Turn a Dust agent-message event stream into MCP progress messages.

Answer tokens are coalesced (a client must not get one notification per token), tool activity
becomes short status lines, and while Dust is silent (tools, long reasoning: Dust itself sends no
heartbeats) a heartbeat goes out every `heartbeat_seconds` so clients that reset their timeout on
progress keep waiting and proxies see traffic.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from bridge.dust.events import AgentEvent

Emit = Callable[[str], Awaitable[None]]


@dataclass
class RelayOutcome:
    """What the stream produced: the answer and the terminal event (None if the stream ended without one)."""

    text: str
    terminal: AgentEvent | None
    notifications: int = 0
    heartbeats: int = 0
    first_chunk_at: float | None = None
    tools: list[str] = field(default_factory=list)


@dataclass
class _Failed:
    error: BaseException


@dataclass
class _Finished:
    pass


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
        return f"[tool] {name} is waiting for approval in Dust"
    if event.type in ("tool_personal_auth_required", "tool_file_auth_required"):
        return "[tool] waiting for a personal authorisation in Dust"
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

    async def run(self, events: AsyncIterator[AgentEvent]) -> RelayOutcome:
        """Relay `events` until a terminal event or the end of the stream.

        Errors raised by the event stream are re-raised here. Cancellation propagates as usual; the
        caller owns cancelling the generation at Dust.
        """
        send, receive = anyio.create_memory_object_stream[AgentEvent | _Failed | _Finished](64)
        result: RelayOutcome | _Failed
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, events, send)
            try:
                result = await self._relay(receive)
            except Exception as exc:
                # Raised outside the task group below, so callers see the error itself, not a group.
                result = _Failed(exc)
            finally:
                tg.cancel_scope.cancel()
        if isinstance(result, _Failed):
            raise result.error
        return result

    async def _pump(
        self, events: AsyncIterator[AgentEvent], send: ObjectSendStream[AgentEvent | _Failed | _Finished]
    ) -> None:
        # A separate task reads Dust so the relay loop can wake up for heartbeats and flushes while
        # the HTTP read is blocked; cancelling the read itself would tear the stream down.
        async with send:
            try:
                async for event in events:
                    await send.send(event)
                    if event.is_terminal:
                        return
                await send.send(_Finished())
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                await send.send(_Failed(exc))
            finally:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()

    async def _relay(self, receive: ObjectReceiveStream[AgentEvent | _Failed | _Finished]) -> RelayOutcome:
        outcome = RelayOutcome(text="", terminal=None)
        answer: list[str] = []
        pending: list[str] = []
        pending_chars = 0
        pending_since = 0.0
        last_emit = self._clock()
        current_tool: str | None = None
        started = last_emit

        async def emit(message: str, *, heartbeat: bool = False) -> None:
            nonlocal last_emit
            await self._emit(message)
            last_emit = self._clock()
            outcome.notifications += 1
            if heartbeat:
                outcome.heartbeats += 1

        async def flush() -> None:
            nonlocal pending, pending_chars
            if pending:
                chunk = "".join(pending)
                pending, pending_chars = [], 0
                if outcome.first_chunk_at is None:
                    outcome.first_chunk_at = self._clock()
                await emit(chunk)

        while True:
            now = self._clock()
            deadline = last_emit + self._heartbeat
            if pending:
                deadline = min(deadline, pending_since + self._coalesce_seconds)
            item: AgentEvent | _Failed | _Finished | None = None
            with anyio.move_on_after(max(0.0, deadline - now)):
                item = await receive.receive()
            if item is None:
                if pending:
                    await flush()
                else:
                    waited = math.floor(self._clock() - started)
                    doing = f"{current_tool} running" if current_tool else "Dust is working"
                    await emit(f"[waiting] {doing} ({waited}s)", heartbeat=True)
                continue
            if isinstance(item, _Failed):
                await flush()
                raise item.error
            if isinstance(item, _Finished):
                await flush()
                outcome.text = "".join(answer)
                return outcome
            event = item
            if event.type == "generation_tokens":
                text = str(event.data.get("text") or "")
                classification = event.data.get("classification")
                if classification == "tokens" and text:
                    answer.append(text)
                    if not pending:
                        pending_since = self._clock()
                    pending.append(text)
                    pending_chars += len(text)
                    # The first chunk goes out at once: coalescing is for the flood that follows,
                    # not for the moment the user first sees the answer start.
                    first = outcome.first_chunk_at is None
                    if first or pending_chars >= self._coalesce_chars or self._coalesce_seconds == 0:
                        await flush()
                elif classification == "chain_of_thought" and text and self._show_cot:
                    await flush()
                    await emit(f"[thinking] {text}")
                continue
            if event.type == "tool_call_started":
                current_tool = str(event.data.get("toolName") or "tool")
                outcome.tools.append(current_tool)
            elif event.type in ("agent_action_success", "tool_error"):
                current_tool = None
            status = tool_status(event)
            if status is not None:
                await flush()
                await emit(status)
            if event.is_terminal:
                await flush()
                outcome.terminal = event
                message = event.data.get("message")
                final = message.get("content") if isinstance(message, dict) else None
                # The terminal message carries the authoritative final text; tokens can miss pieces
                # (e.g. the stream was joined late), so prefer it when present.
                outcome.text = final if isinstance(final, str) and final else "".join(answer)
                return outcome
