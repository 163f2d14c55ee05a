"""Putting what a paused agent waits for to the MCP user, in the form each client can take.

- Handshake-era sessions that declare elicitation get it mid-call (`elicitation/create`, form mode
  for approvals and questions, URL mode for an authorisation in Dust) and the answer stream goes on.
- 2026-07-28 clients that declare elicitation get an `InputRequiredResult` holding the same forms;
  their retry carries the answers and the request state (sealed by the SDK's request-state boundary
  with keys every replica shares: `bridge.mcp.server`), and the call resumes from there.
- Every other client gets a tool result that says what is pending and which tool answers it
  (approve_action, answer_question, wait_for_answer): `bridge.mcp.results`.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.types import (
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestURLParams,
    ElicitResult,
    InputRequiredResult,
)
from mcp_types.version import is_version_at_least

from bridge.domain.replies import AnswerQuestion, Approve, Connected, Reply
from bridge.dust.pauses import Approval, PendingAction
from bridge.store.records import ConversationRecord

MODERN_ERA = "2026-07-28"
_STATE_VERSION = 1
DECISIONS: dict[str, Approval] = {
    "approve": "approved",
    "reject": "rejected",
    "always_approve": "always_approved",
}
_OWN_WORDS = "answer"


def is_modern(ctx: Context) -> bool:
    """True for a 2026-07-28 request (no back channel: ask with InputRequiredResult)."""
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, MODERN_ERA)


def elicitation_modes(ctx: Context) -> tuple[bool, bool]:
    """(form, url): the elicitation modes the client declared."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None:
        return False, False
    # A bare `elicitation: {}` (before modes existed) means form mode.
    return elicitation.form is not None or elicitation.url is None, elicitation.url is not None


def can_ask(ctx: Context, action: PendingAction) -> bool:
    """Whether this client can be asked about `action` by elicitation."""
    form, url = elicitation_modes(ctx)
    return url if action.kind in ("personal_auth", "file_auth") else form


def request_for(action: PendingAction, url: str | None) -> ElicitRequest:
    """The elicitation that asks the user about one pending action."""
    if action.kind in ("personal_auth", "file_auth"):
        return ElicitRequest(
            params=ElicitRequestURLParams(
                message=_auth_message(action),
                url=url or "https://dust.tt",
                elicitation_id=action.action_id,
            )
        )
    schema = _question_schema(action) if action.kind == "question" else _APPROVAL_SCHEMA
    return ElicitRequest(params=ElicitRequestFormParams(message=describe(action), requested_schema=schema))


def reply_from(action: PendingAction, result: ElicitResult) -> Reply | None:
    """The reply an elicitation result gives, or None when the user declined, cancelled or left it blank."""
    if result.action != "accept":
        return None
    if action.kind in ("personal_auth", "file_auth"):
        return Connected(action.action_id)
    content = result.content or {}
    if action.kind == "approval":
        decision = DECISIONS.get(str(content.get("decision")))
        return Approve(action.action_id, decision) if decision else None
    return _answer_from(action, content)


async def ask_now(
    ctx: Context, pending: list[PendingAction], record: ConversationRecord
) -> list[Reply] | None:
    """Ask the user over the session's back channel, one action after the other; stop at the first
    one not answered (the rest stay pending)."""
    replies: list[Reply] = []
    for action in pending:
        request = request_for(action, record.url)
        try:
            result = await _send(ctx, request)
        except MCPError:
            break
        reply = reply_from(action, result)
        if reply is None:
            break
        replies.append(reply)
    return replies or None


async def _send(ctx: Context, request: ElicitRequest) -> ElicitResult:
    params = request.params
    session: ServerSession = ctx.session
    if isinstance(params, ElicitRequestURLParams):
        return await session.elicit_url(
            params.message, params.url, params.elicitation_id or "", related_request_id=ctx.request_id
        )
    return await session.elicit_form(
        params.message, params.requested_schema, related_request_id=ctx.request_id
    )


def can_ask_now(ctx: Context, pending: list[PendingAction]) -> bool:
    """A handshake-era session with a back channel, and every action askable."""
    return not is_modern(ctx) and ctx.session.can_send_request and all(can_ask(ctx, a) for a in pending)


def input_required(
    ctx: Context, pending: list[PendingAction], handle: str, url: str | None
) -> InputRequiredResult | None:
    """The 2026-07-28 way to ask about `pending`, or None when this client cannot be asked."""
    if not is_modern(ctx) or not pending or not all(can_ask(ctx, action) for action in pending):
        return None
    state = {"v": _STATE_VERSION, "conversation": handle, "actions": [a.to_json() for a in pending]}
    return InputRequiredResult(
        input_requests={action.action_id: request_for(action, url) for action in pending},
        request_state=json.dumps(state, separators=(",", ":")),
    )


def retried(ctx: Context) -> tuple[str, list[Reply], bool] | None:
    """On the retry of an `InputRequiredResult`: the conversation, the replies, and whether every
    action got one. None on a first call."""
    state = _state(ctx.request_state)
    if state is None:
        return None
    responses = ctx.input_responses or {}
    replies: list[Reply] = []
    for item in state["actions"]:
        action = PendingAction.from_json(item)
        response = responses.get(action.action_id)
        reply = reply_from(action, response) if isinstance(response, ElicitResult) else None
        if reply is not None:
            replies.append(reply)
    return state["conversation"], replies, len(replies) == len(state["actions"])


def _state(raw: str | None) -> dict[str, Any] | None:
    # The SDK's boundary has verified and unsealed it: it is a value this server minted.
    if not raw:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(state, dict) or state.get("v") != _STATE_VERSION:
        return None
    return state


def describe(action: PendingAction) -> str:
    """One paragraph a person can decide on."""
    if action.kind == "question" and action.question is not None:
        return f"The Dust agent asks: {action.question.text}"
    if action.kind in ("personal_auth", "file_auth"):
        return _auth_message(action)
    inputs = json.dumps(action.inputs, ensure_ascii=False, sort_keys=True)
    if len(inputs) > 1500:
        inputs = inputs[:1500] + "…"
    stake = f" (stake: {action.stake})" if action.stake else ""
    return f"The Dust agent wants to run {action.tool} on {action.server}{stake} with {inputs}. Allow it?"


def _auth_message(action: PendingAction) -> str:
    what = action.auth_message or f"{action.tool} needs you to connect your account in Dust."
    subject = action.auth_subject or "the account"
    return f"{what} Open the conversation in Dust, connect {subject}, then come back."


_APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {
            "type": "string",
            "title": "Decision",
            "description": "approve once, reject, or always approve this tool for this agent",
            "enum": list(DECISIONS),
        }
    },
    "required": ["decision"],
}


def _question_schema(action: PendingAction) -> dict[str, Any]:
    question = action.question
    labels = [option.label for option in question.options] if question is not None else []
    properties: dict[str, Any] = {}
    if labels and question is not None and question.multi_select:
        properties["choices"] = {
            "type": "array",
            "title": "Choices",
            "items": {"type": "string", "enum": labels},
        }
    elif labels:
        properties["choice"] = {"type": "string", "title": "Choice", "enum": labels}
    properties[_OWN_WORDS] = {"type": "string", "title": "Or in your own words"}
    return {"type": "object", "properties": properties, "required": [] if labels else [_OWN_WORDS]}


def _answer_from(action: PendingAction, content: dict[str, Any]) -> Reply | None:
    labels = [option.label for option in action.question.options] if action.question else []
    many = content.get("choices")
    chosen: list[Any] = many if isinstance(many, list) else [content.get("choice")]
    indexes = tuple(labels.index(label) for label in chosen if isinstance(label, str) and label in labels)
    text = content.get(_OWN_WORDS)
    words = text.strip() if isinstance(text, str) and text.strip() else None
    if not indexes and words is None:
        return None
    return AnswerQuestion(action.action_id, indexes, words)
