"""Why a client cancelled a tool call: a client that only timed out keeps the Dust work.

A client cancels with `notifications/cancelled` on every handshake-era transport and, in both eras,
on stdio (the Python SDK's stream transports write it for a 2026-07-28 request too). Its `reason`
tells a user's cancel from a timeout: the TypeScript SDK (Claude Desktop, Cursor, VS Code) sends
"McpError: MCP error -32001: Request timed out", the Python SDK "timed out after <n>s". The SDK
cancels the tool's scope before any handler sees the notification, so this server middleware
records the reason as it passes and a cancelled tool waits a moment for it (a call that ended some
other way, a client gone without a word, finds none and counts as cancelled). A 2026-07-28 client
over HTTP cancels by closing the response stream instead: no reason travels, and that is a cancel
(the spec's meaning of it; bridge.mcp.turns does not wait for a reason there).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext

from bridge.mcp.caller import session_of_request

TIMEOUT_REASON = re.compile(r"time[d\s-]*out|timeout|-32001", re.IGNORECASE)

# How long a cancelled call waits for its notification's reason to reach the middleware (it is
# handled in a task of its own, right after the cancel).
REASON_WAIT_SECONDS = 1.0
# Reasons nobody asked for (a cancel of a request that had already ended) are dropped oldest first.
_MAX_KEPT = 1024


class _Reason:
    def __init__(self) -> None:
        self.text: str | None = None
        self.arrived = anyio.Event()


class CancelReasons(ServerMiddleware[Any]):
    """SDK server middleware that keeps each `notifications/cancelled` reason for its request."""

    def __init__(self) -> None:
        self._reasons: OrderedDict[tuple[str | None, str], _Reason] = OrderedDict()

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Record the reason of a cancellation notification, then carry on."""
        if ctx.request_id is None and ctx.method == "notifications/cancelled" and ctx.params is not None:
            request_id = ctx.params.get("requestId")
            reason = ctx.params.get("reason")
            if isinstance(request_id, str | int) and not isinstance(request_id, bool):
                slot = self._slot(ctx, request_id)
                slot.text = reason if isinstance(reason, str) else ""
                slot.arrived.set()
        return await call_next(ctx)

    async def timed_out(self, ctx: ServerRequestContext[Any, Any]) -> bool:
        """True when the client cancelled this request, by notification, because it timed out.

        Called once the request was cancelled; waits up to REASON_WAIT_SECONDS for the reason.
        """
        if ctx.request_id is None:
            return False
        slot = self._slot(ctx, ctx.request_id)
        with anyio.move_on_after(REASON_WAIT_SECONDS):
            await slot.arrived.wait()
        self._reasons.pop(_key(ctx, ctx.request_id), None)
        return bool(slot.text and TIMEOUT_REASON.search(slot.text))

    def _slot(self, ctx: ServerRequestContext[Any, Any], request_id: str | int) -> _Reason:
        key = _key(ctx, request_id)
        slot = self._reasons.get(key)
        if slot is None:
            slot = self._reasons[key] = _Reason()
            if len(self._reasons) > _MAX_KEPT:
                self._reasons.popitem(last=False)
        return slot


def _key(ctx: ServerRequestContext[Any, Any], request_id: str | int) -> tuple[str | None, str]:
    # The SDK hands each message its own session object: the connection is named by the request
    # (stdio has none: one connection per process).
    return session_of_request(ctx.request) if ctx.request is not None else "stdio", str(request_id)
