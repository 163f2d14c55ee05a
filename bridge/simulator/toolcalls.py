"""Publishing an agent message's events, and the tool calls (public AgentActions) they carry."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.simulator.agents import Tool
from bridge.simulator.ids import new_sid, now_ms
from bridge.simulator.model import AgentMessage
from bridge.simulator.state import Simulator


def publish(message: AgentMessage, event_type: str, /, **fields: Any) -> None:
    """Publish an event of `message` on its own channel."""
    # Dust publishes every agent-message event as `{...event, step}`, `step` being the agent-loop
    # step that produced it (front/lib/api/assistant/streaming/events.ts publishMessageEvent).
    message.log.publish(
        {
            "type": event_type,
            "created": now_ms(),
            "configurationId": message.agent.sid,
            "messageId": message.sid,
            **fields,
            "step": message.step,
        }
    )


def forward(message: AgentMessage, data: dict[str, Any]) -> None:
    """Publish another message's event, unchanged but for `step`, on `message`'s channel (how
    run_agent surfaces a sub-agent's blocking events on the calling agent's message)."""
    message.log.publish({**data, "step": message.step})


async def pace(sim: Simulator) -> None:
    """The model's pace between two events."""
    # Read the delay live so `/_sim/faults` can speed up or slow down a running answer.
    await asyncio.sleep(sim.options.token_delay_ms / 1000)


def new_action(
    sim: Simulator,
    message: AgentMessage,
    tool: Tool,
    params: dict[str, Any],
    status: str,
    citations: int = 0,
) -> dict[str, Any]:
    """The public AgentAction of a new tool call (SDK AgentActionTypeSchema); `citations` is the
    number of citation refs the call was given (`citationsAllocated`)."""
    created = now_ms()
    labels = {"running": tool.labels[0], "done": tool.labels[1]} if tool.labels else None
    return {
        "id": sim.store.next_id(),
        "sId": f"act_{new_sid()}",
        "createdAt": created,
        "updatedAt": created,
        "mcpServerId": tool.server_sid,
        "internalMCPServerName": tool.server_name,
        "toolName": tool.name,
        "agentMessageId": message.model_id,
        "functionCallName": tool.function_call_name,
        "functionCallId": f"call_{new_sid()}",
        "status": status,
        "params": params,
        "step": message.step,
        "executionDurationMs": None,
        "citationsAllocated": citations,
        "output": None,
        "generatedFiles": [],
        "displayLabels": labels,
    }


async def start_tool_call(
    sim: Simulator,
    message: AgentMessage,
    tool: Tool,
    params: dict[str, Any],
    status: str = "running",
    citations: int = 0,
) -> dict[str, Any]:
    """The model calls `tool`: `tool_call_started`, then `tool_params` with the new action.

    front/temporal/agent_loop/lib/create_tool_actions.ts creates the action in the status its
    stake gives (`blocked_validation_required` when it needs approval) and publishes `tool_params`
    with it, before any approval event.
    """
    action = new_action(sim, message, tool, params, status, citations)
    await pace(sim)
    call_id = action["functionCallId"]
    publish(message, "tool_call_started", toolName=tool.name, toolCallId=call_id, toolCallIndex=0)
    await pace(sim)
    publish(message, "tool_params", action=dict(action))
    return action


def finish_tool_call(
    message: AgentMessage,
    action: dict[str, Any],
    *,
    status: str,
    output: str | list[dict[str, Any]],
    generated_files: list[dict[str, Any]] | None = None,
) -> None:
    """The tool call ends (`agent_action_success`, also for a rejected call: Dust's
    handleMCPActionError with yieldAsError false); its output (a text, or content blocks as they
    are) goes back to the model, so what follows is generated in the next step."""
    finished = now_ms()
    action.update(
        status=status,
        updatedAt=finished,
        executionDurationMs=finished - action["createdAt"],
        output=[{"type": "text", "text": output}] if isinstance(output, str) else output,
        generatedFiles=generated_files or [],
    )
    if not any(known is action for known in message.actions):
        message.actions.append(action)
    publish(message, "agent_action_success", action=dict(action))
    message.step += 1
