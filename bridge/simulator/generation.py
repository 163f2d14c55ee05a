"""Plays an agent's script into its message's event log, paced like a real model."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.simulator.agents import Fail, Say, Step, UseTool
from bridge.simulator.ids import new_sid, now_ms
from bridge.simulator.model import AgentMessage
from bridge.simulator.state import Simulator


def start_generation(sim: Simulator, message: AgentMessage, steps: list[Step]) -> None:
    """Begin generating `message` in the background."""
    message.task = sim.spawn(_generate(sim, message, steps))


def cancel_generation(message: AgentMessage) -> None:
    """Stop generating `message` and publish `agent_generation_cancelled` (no-op once it has ended)."""
    if message.log.terminal is not None:
        return
    if message.task is not None:
        # The task is suspended at an await, so it cannot publish anything after this point.
        message.task.cancel()
    message.status = "cancelled"
    message.completed = now_ms()
    _publish(message, "agent_generation_cancelled")


def _publish(message: AgentMessage, event_type: str, /, **fields: Any) -> None:
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


async def _pause(sim: Simulator) -> None:
    # Read the delay live so `/_sim/faults` can speed up or slow down a running answer.
    await asyncio.sleep(sim.options.token_delay_ms / 1000)


async def _generate(sim: Simulator, message: AgentMessage, steps: list[Step]) -> None:
    for step in steps:
        if isinstance(step, Say):
            await _say(sim, message, step)
        elif isinstance(step, UseTool):
            await _use_tool(sim, message, step)
        else:
            _fail(message, step)
            return
    message.status = "succeeded"
    message.completed = now_ms()
    _publish(message, "agent_message_success", message=message.to_json(), runIds=[])


async def _say(sim: Simulator, message: AgentMessage, step: Say) -> None:
    size = sim.options.chunk_chars
    for start in range(0, len(step.text), size):
        await _pause(sim)
        chunk = step.text[start : start + size]
        if step.classification == "chain_of_thought":
            message.chain_of_thought += chunk
        else:
            message.add_text(chunk)
        _publish(message, "generation_tokens", text=chunk, classification=step.classification)


async def _use_tool(sim: Simulator, message: AgentMessage, step: UseTool) -> None:
    started = now_ms()
    call_id = f"call_{new_sid()}"
    action: dict[str, Any] = {
        "id": sim.store.next_id(),
        "sId": f"act_{new_sid()}",
        "createdAt": started,
        "updatedAt": started,
        "mcpServerId": None,
        "internalMCPServerName": "web_search_&_browse",
        "toolName": step.tool_name,
        "agentMessageId": message.model_id,
        "functionCallName": f"web_search_browse__{step.tool_name}",
        "functionCallId": call_id,
        "status": "running",
        "params": step.params,
        "step": message.step,
        "executionDurationMs": None,
        "citationsAllocated": 0,
        "output": None,
        "generatedFiles": [],
        "displayLabels": {"running": "Searching the web", "done": "Searched the web"},
    }
    await _pause(sim)
    _publish(message, "tool_call_started", toolName=step.tool_name, toolCallId=call_id, toolCallIndex=0)
    await _pause(sim)
    _publish(message, "tool_params", action=dict(action))
    if step.label is not None:
        await _pause(sim)
        data = {"label": step.label}
        notification = {"progress": 1, "total": 2, "data": data, "_meta": {"data": data}}
        _publish(message, "tool_notification", action=dict(action), notification=notification)
    # The quiet part: a real long tool call sends nothing at all on the stream (no heartbeats).
    await asyncio.sleep(step.wait_seconds)
    finished = now_ms()
    action.update(
        status="succeeded",
        updatedAt=finished,
        executionDurationMs=finished - started,
        output=[{"type": "text", "text": step.output}],
    )
    message.actions.append(action)
    _publish(message, "agent_action_success", action=dict(action))
    # The tool's output goes back to the model: what follows is generated in the next step.
    message.step += 1


def _fail(message: AgentMessage, step: Fail) -> None:
    message.status = "failed"
    message.completed = now_ms()
    message.error = {"code": step.code, "message": step.message, "metadata": None}
    _publish(message, "agent_error", error=message.error, runIds=[])
