"""One tool call, accounted for once: the wrapper every bridge tool runs in.

A tool is written as `async def name(call: ToolCall, <its arguments>) -> result`, with its docstring
as the description clients see, and marked with `@bridge_tool(...)`. Registered on a server
(`BridgeTool.bind`), it runs inside the wrapper, which

- builds the `ToolCall`: the services, the principal the request acts for, the SDK's context;
- counts the call in `tool_calls`, with outcome "ok" or the failure's `BridgeError.code`;
- for an audited tool, writes the `tool_call` audit event with the fields the tool noted;
- turns a `BridgeError` into the tool error the client sees (`exc.for_user()`): the MCP face's one
  translation (bridge/errors.py); so does a services provider that raises one (a bridge whose
  settings are invalid answers every call with that).

A tool reports bad input it finds itself as `InvalidInput`, so that it is counted like any other
refusal; anything else it raises (a bug) passes through uncounted, to the SDK's own handling.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import InputRequiredResult, ToolAnnotations

from bridge.errors import BridgeError
from bridge.mcp.caller import principal_of
from bridge.mcp.services import Services, ServicesProvider
from bridge.security.audit import audit_event

ToolBody = Callable[..., Awaitable[Any]]


class AskClient(Exception):  # control flow, not a failure: outside the error tree
    """Raised under a tool body that needs something from a 2026-07-28 client first (its roots):
    the call is answered with `result`, and the client calls again with its answers."""

    def __init__(self, result: InputRequiredResult) -> None:
        super().__init__("the client is asked first")
        self.result = result


@dataclass
class ToolCall:
    """One call of a bridge tool: what it may use and who it acts for."""

    services: Services
    principal: str
    ctx: Context
    demo: bool
    audit: dict[str, Any] = field(default_factory=dict)

    def note(self, **fields: Any) -> None:
        """Add fields to this call's audit event (later values win), for an audited tool."""
        self.audit.update(fields)


@dataclass(frozen=True)
class BridgeTool:
    """A tool body and how it is registered and accounted for."""

    body: ToolBody
    annotations: ToolAnnotations
    # The `tool` label of `tool_calls` and of the audit event (the agent tools count as ask_agent).
    metric: str
    audited: bool

    def bind(self, services: ServicesProvider, *, demo: bool) -> ToolBody:
        """The function the SDK registers: the body's arguments, with `ctx` instead of `call`."""
        body = self.body

        @functools.wraps(body)
        async def run_tool(ctx: Context, **arguments: Any) -> Any:
            try:
                live = services()
            except BridgeError as exc:
                # No runtime to count in: the bridge could not start (bridge.desktop.serve_unconfigured).
                raise ToolError(exc.for_user()) from None
            call = ToolCall(live, principal_of(ctx), ctx, demo)
            try:
                result = await body(call, **arguments)
            except AskClient as ask:
                return ask.result  # not accounted: the call goes on in the client's retry
            except BridgeError as exc:
                self._account(call, exc.code)
                raise ToolError(exc.for_user()) from None
            self._account(call, "ok")
            return result

        # The SDK reads a tool's arguments (and where to pass its Context) from the signature.
        signature = _sdk_signature(body)
        run_tool.__signature__ = signature  # type: ignore[attr-defined]
        run_tool.__annotations__ = {
            **{name: parameter.annotation for name, parameter in signature.parameters.items()},
            "return": signature.return_annotation,
        }
        return run_tool

    def _account(self, call: ToolCall, outcome: str) -> None:
        call.services.metrics.tool_calls.labels(tool=self.metric, outcome=outcome).inc()
        if self.audited:
            audit_event(
                "tool_call", tool=self.metric, principal=call.principal, **call.audit, outcome=outcome
            )


def bridge_tool(
    annotations: ToolAnnotations, *, metric: str | None = None, audited: bool = False
) -> Callable[[ToolBody], BridgeTool]:
    """Mark `async def name(call: ToolCall, ...)` as a tool; `metric` defaults to its name."""

    def mark(body: ToolBody) -> BridgeTool:
        return BridgeTool(body, annotations, metric or body.__name__, audited)

    return mark


def _sdk_signature(body: ToolBody) -> inspect.Signature:
    """`body`'s signature with its first parameter (`call: ToolCall`) turned into `ctx: Context`,
    the parameter the SDK fills with the request's context; the others are the tool's arguments."""
    signature = inspect.signature(body, eval_str=True)
    first, *arguments = signature.parameters.values()
    return signature.replace(parameters=[first.replace(name="ctx", annotation=Context), *arguments])
