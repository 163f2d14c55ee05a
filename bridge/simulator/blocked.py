"""A conversation's actions blocked on the user: the listing, and the relaunch once one is answered."""

from __future__ import annotations

from typing import Any

from bridge.simulator.conversations import MAX_CONVERSATION_DEPTH
from bridge.simulator.model import AgentMessage, BlockedAction, Conversation
from bridge.simulator.pauses import PAUSE_EVENT_TYPES
from bridge.simulator.state import Simulator


def blocked_actions(conversation: Conversation) -> list[BlockedAction]:
    """AgentMCPActionResource.listBlockedActionsForConversation: the actions in a blocked status of
    the conversation's agent messages, leaving out those of messages that can no longer resume,
    oldest first."""
    found = [
        pause
        for entry in conversation.entries
        if isinstance(entry, AgentMessage)
        for pause in entry.pauses
        if pause.is_blocked
    ]
    return sorted(found, key=lambda pause: pause.created)


def blocked_actions_json(sim: Simulator, conversation: Conversation) -> list[dict[str, Any]]:
    """The `blockedActions` of `GET .../actions/blocked` (front-api/routes/v1/w/[wId]/assistant/
    conversations/[cId]/actions/blocked.ts answers the listing as is)."""
    return [_blocked_json(sim, conversation, pause) for pause in blocked_actions(conversation)]


def _blocked_json(sim: Simulator, conversation: Conversation, pause: BlockedAction) -> dict[str, Any]:
    """One AgentLoopBlockedToolExecution as listBlockedActionsForConversation builds it. `userId`
    (the user of the message the agent answers) is left out: an API key's message has none.
    `configurationId` is the tool configuration's sId; neither it nor `authorizationInfo`,
    `resumeState` or `childBlockedActionsList` is in the SDK's BlockedActionExecutionSchema."""
    tool, message = pause.tool, pause.message
    metadata: dict[str, Any] = {"toolName": tool.name, "mcpServerName": tool.server_name}
    if tool.labels is not None:
        metadata["displayLabel"] = tool.labels[1]
    metadata["agentName"] = message.agent.name
    if tool.icon is not None:
        metadata["icon"] = tool.icon
    item: dict[str, Any] = {
        "messageId": message.sid,
        "conversationId": conversation.sid,
        "actionId": pause.sid,
        "configurationId": tool.config_sid,
        "created": pause.created,
        "inputs": pause.action["params"],
        "stake": pause.stake,
        "metadata": metadata,
        "status": pause.status,
        "authorizationInfo": None,
    }
    if pause.status == "blocked_authentication_required":
        # The server view's authorization and display name (MCPServerViewResource).
        item["authorizationInfo"] = {"provider": pause.provider, "supported_use_cases": ["personal_actions"]}
        metadata.update(mcpServerId=tool.server_sid, mcpServerDisplayName=tool.server_display)
    elif pause.status == "blocked_user_answer_required":
        item["question"] = pause.question
    elif pause.status == "blocked_child_action_input_required" and pause.child is not None:
        # A sub-agent's blocked actions are nested in its caller's entry, listed from the child
        # conversation; they are not listed on their own at the top of the parent's listing.
        child_conversation = sim.store.conversations[pause.child.conversation_sid]
        item["resumeState"] = pause.resume_state
        item["childBlockedActionsList"] = blocked_actions_json(sim, child_conversation)
    return item


def relaunch(
    sim: Simulator, conversation: Conversation, message: AgentMessage, *, resume_ancestors: bool
) -> None:
    """What validate_actions.ts, answer_user_question.ts and resolve_authentication.ts do once an
    action is unblocked: relaunch the agent loop of the message the request named, unless that
    message still has blocked actions in the conversation; then, optionally, the callers waiting
    on it (resume_ancestor_conversations.ts)."""
    if message not in conversation.entries:
        # Nothing checks that the message is in the conversation the request named, but the
        # relaunched loop is given that conversation, where it cannot find the message: nothing
        # runs (and findAgenticParent, scoped to the conversation, finds no caller either).
        return
    if any(pause.message is message for pause in blocked_actions(conversation)):
        return
    message.resume()
    if resume_ancestors:
        _resume_ancestors(message)


def _resume_ancestors(message: AgentMessage) -> None:
    # resumeAncestorConversations walks up findAgenticParent and retries each caller's blocked
    # actions (retryBlockedActions relaunches a message only if it has some).
    current = message
    for _ in range(MAX_CONVERSATION_DEPTH):
        parent = current.agentic_parent
        if parent is None:
            return
        if any(pause.is_blocked for pause in parent.pauses):
            parent.resume()
        current = parent


def remove_pause_event(message: AgentMessage, event_type: str, action_id: str) -> None:
    """Delete the pause event of an answered action from the channel of `message` (the message the
    request named), as the answering routes do (getRedisHybridManager().removeEvent)."""
    assert event_type in PAUSE_EVENT_TYPES
    message.log.remove(lambda event: event.type == event_type and event.data.get("actionId") == action_id)


def connect_accounts(sim: Simulator) -> list[str]:
    """The user connects the accounts Dust asked for: every action waiting for a personal
    authorisation is resolved as resolve_authentication.ts does with outcome `completed`
    (markSameMCPServerAuthenticationActionsReady, the event deleted, the loop relaunched and its
    callers resumed). Returns the sIds of the actions unblocked."""
    waiting = [
        pause
        for pause in sim.store.actions.values()
        if pause.status == "blocked_authentication_required" and pause.is_blocked
    ]
    for pause in waiting:
        pause.status = "ready_allowed_explicitly"
        remove_pause_event(pause.message, "tool_personal_auth_required", pause.sid)
    for pause in waiting:
        conversation = sim.store.conversations[pause.message.conversation_sid]
        relaunch(sim, conversation, pause.message, resume_ancestors=True)
    return [pause.sid for pause in waiting]
