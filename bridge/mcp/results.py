"""An agent turn as the tool result a client shows: the answer, then what to do next.

The text says it all in words (some clients show nothing but text): a complete answer and its
handle; an agent waiting for the user, with each pending action and the tool call that answers it;
an agent still working, with the wait_for_answer call that picks it up.
"""

from __future__ import annotations

import json

from mcp.types import CallToolResult, ContentBlock, ResourceLink, TextContent

from bridge.domain.answers import Answer
from bridge.dust.pauses import PendingAction
from bridge.mcp.pauses import describe


def answer_result(answer: Answer) -> CallToolResult:
    """The tool result of a turn, whatever state it is in."""
    texts = [answer.text] if answer.text else []
    if answer.note:
        texts.append(f"[note] {answer.note}; what the agent waits for is still pending.")
    if answer.status == "waiting_for_user":
        texts.append(_waiting(answer))
    elif answer.status == "working":
        texts.append(_working(answer))
    if answer.files:
        texts.append(_files(answer))
    texts.append(_footer(answer))
    content: list[ContentBlock] = [TextContent(type="text", text=text) for text in texts]
    # Links too, for clients that show resources (Claude Desktop does not: hence the text above).
    content += [
        ResourceLink(type="resource_link", uri=made.uri, name=made.title, mime_type=made.content_type)
        for made in answer.files
    ]
    return CallToolResult(content=content, structured_content=answer.structured())


def _files(answer: Answer) -> str:
    lines = [f"[files] {answer.agent.name} made {len(answer.files)} file(s):"]
    lines += [f"- {made.title} ({made.content_type}): {made.uri}" for made in answer.files]
    where = f" or open them in Dust: {answer.url}" if answer.url else ""
    lines.append(f"Read one with resources/read on its dust://files/ URI{where}.")
    return "\n".join(lines)


def _footer(answer: Answer) -> str:
    if answer.unremembered is not None:
        where = answer.url or f"Dust conversation {answer.dust_conversation_id}"
        return (
            f"[conversation not remembered: {answer.unremembered}. This chat cannot be continued from"
            f" here; start a new conversation next time. It stays in Dust: {where}]"
        )
    return (
        f"[conversation: {answer.handle}] Pass this value as `conversation` to continue this chat with"
        f" {answer.agent.name}."
    )


def _working(answer: Answer) -> str:
    return (
        f"[still working] {answer.agent.name} is still working on this answer in Dust; nothing is lost."
        f' Call wait_for_answer(conversation="{answer.handle}") to get the rest.'
    )


def _waiting(answer: Answer) -> str:
    lines = [f"[waiting for you] {answer.agent.name} is paused until the user decides:"]
    lines.extend(f"- {describe(action)} {_how_to_answer(action, answer)}" for action in answer.pending)
    lines.append("Ask the user, then make the call they choose. Nothing happens in Dust until then.")
    return "\n".join(lines)


def _how_to_answer(action: PendingAction, answer: Answer) -> str:
    handle = json.dumps(answer.handle)
    action_id = json.dumps(action.action_id)
    if action.kind == "approval":
        return (
            f"Answer with approve_action(conversation={handle}, action_id={action_id},"
            ' decision="approve" | "reject" | "always_approve").'
        )
    if action.kind == "question" and action.question is not None:
        options = "; ".join(
            f"{index} = {option.label}" for index, option in enumerate(action.question.options)
        )
        many = "one or more options" if action.question.multi_select else "one option"
        choices = f" Options: {options}; choose {many} by number, and/or answer in words." if options else ""
        return (
            f"{choices} Answer with answer_question(conversation={handle}, action_id={action_id},"
            " options=[...], text=...)."
        )
    link = answer.url or "the conversation in Dust"
    return f"Open {link} to do it, then call wait_for_answer(conversation={handle})."
