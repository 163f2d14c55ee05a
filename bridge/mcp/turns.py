"""One agent turn delivered to an MCP caller: progress as it streams, pauses put to the user the way
the client allows (bridge/mcp/pauses.py), a result before the client's own timeout.

Every tool that streams an answer (ask_agent and the ask_<agent> tools, wait_for_answer,
approve_action, answer_question) goes through `deliver`, so each of them also takes the retry of
an `InputRequiredResult` it returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from mcp.server.mcpserver import Context
from mcp.server.session import ServerSession
from mcp.types import CallToolResult, InputRequiredResult

from bridge.domain.answers import Answer, TurnListener
from bridge.domain.replies import Reply
from bridge.dust.pauses import PendingAction
from bridge.mcp.calls import ToolCall
from bridge.mcp.cancellations import CancelReasons
from bridge.mcp.pauses import ask_now, can_ask_now, input_required, is_modern, retried
from bridge.mcp.results import answer_result
from bridge.store.records import ConversationRecord

Start = Callable[[TurnListener], Awaitable[Answer]]


async def deliver(call: ToolCall, start: Start) -> CallToolResult | InputRequiredResult:
    """Run `start` (or, on the retry of an InputRequiredResult, record its answers and go on) and
    return the turn as a result, or as the questions a 2026-07-28 client should put to its user."""
    listener = listener_for(call)
    again = retried(call.ctx)
    if again is None:
        answer = await start(listener)
        ask_again = True
    else:
        handle, replies, complete = again
        quiet = replace(listener, ask_user=None)
        conversations = call.services.conversations
        if replies:
            answer = await conversations.reply(call.principal, handle, replies, quiet)
        else:
            answer = await conversations.resume(call.principal, handle, quiet)
        # A user who declined or dismissed a question is not asked it again in this call.
        ask_again = complete
    call.note(conversation=answer.dust_conversation_id, status=answer.status)
    if answer.pending and ask_again:
        required = input_required(call.ctx, answer.pending, answer.handle, answer.url)
        if required is not None:
            return required
    return answer_result(answer)


def listener_for(call: ToolCall) -> TurnListener:
    """Progress to the caller, elicitation where the session allows it, the answer deadline, and
    the client's cancel reason."""
    ctx = call.ctx
    # Resolved once: `ctx.report_progress` looks the session up through pydantic's private
    # attributes on every call, 5% of the bridge's CPU at 200 streaming answers.
    session: ServerSession = ctx.session
    sequence = 0

    async def progress(text: str) -> None:
        nonlocal sequence
        sequence += 1
        await session.report_progress(sequence, None, text)

    async def ask_user(pending: list[PendingAction], record: ConversationRecord) -> list[Reply] | None:
        if not can_ask_now(ctx, pending):
            return None
        return await ask_now(ctx, pending, record)

    async def client_timed_out() -> bool:
        reasons = _cancel_reasons(call)
        if reasons is None or not _cancel_says_why(ctx):
            return False
        return await reasons.timed_out(ctx.request_context)

    return TurnListener(
        progress=progress,
        ask_user=ask_user,
        deadline=call.services.answer_deadline_seconds or None,
        client_timed_out=client_timed_out,
    )


def _cancel_says_why(ctx: Context) -> bool:
    """Whether a cancel of this request carries its reason.

    `notifications/cancelled` does: every handshake-era transport, and stdio in both eras (the
    SDK's stream transports still write it for a 2026-07-28 request). A 2026-07-28 client over HTTP
    cancels by closing the response stream, which says nothing: that is a cancel.
    """
    return not is_modern(ctx) or ctx.request_context.request is None  # no HTTP request: stdio


def _cancel_reasons(call: ToolCall) -> CancelReasons | None:
    server = call.ctx.mcp_server
    reasons = getattr(server, "cancel_reasons", None)
    return reasons if isinstance(reasons, CancelReasons) else None
