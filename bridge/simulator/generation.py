"""Plays an agent's script into its message's event log, paced like a real model."""

from __future__ import annotations

import asyncio

from bridge.simulator.agents import (
    AskApproval,
    AskQuestion,
    Fail,
    MakeFiles,
    NeedPersonalAuth,
    RunAgent,
    Say,
    Step,
    UseTool,
)
from bridge.simulator.ids import now_ms
from bridge.simulator.model import AgentMessage
from bridge.simulator.pauses import ask_approval, ask_question, need_personal_auth, run_agent
from bridge.simulator.state import Simulator
from bridge.simulator.tool_files import generated_file, output_block, store_tool_file
from bridge.simulator.toolcalls import finish_tool_call, pace, publish, start_tool_call

# The resource blocks that carry a citation ref (the SDK's SearchResultResourceSchema and
# WebsearchResultResourceSchema): a call is allocated one ref per result.
_CITED_MIME_TYPES = frozenset(
    {
        "application/vnd.dust.tool-output.data-source-search-result",
        "application/vnd.dust.tool-output.websearch-result",
    }
)


def start_generation(sim: Simulator, message: AgentMessage) -> None:
    """Begin generating `message` (its agent's script) in the background."""
    steps = message.agent.script(message.script_input)
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
    publish(message, "agent_generation_cancelled")


async def _generate(sim: Simulator, message: AgentMessage, steps: list[Step]) -> None:
    if not await _play(sim, message, steps):
        return
    message.status = "succeeded"
    message.completed = now_ms()
    publish(message, "agent_message_success", message=message.to_json(), runIds=[])


async def _play(sim: Simulator, message: AgentMessage, steps: list[Step]) -> bool:
    """Play `steps` and whatever they lead to; False when the message ended in an error."""
    for step in steps:
        if isinstance(step, Fail):
            _fail(message, step)
            return False
        follow = await _run(sim, message, step)
        if follow and not await _play(sim, message, follow):
            return False
    return True


async def _run(sim: Simulator, message: AgentMessage, step: Step) -> list[Step]:
    """One step; a pause returns what the agent does once the user answered."""
    if isinstance(step, Say):
        await _say(sim, message, step)
        return []
    if isinstance(step, UseTool):
        await _use_tool(sim, message, step)
        return []
    if isinstance(step, MakeFiles):
        await _make_files(sim, message, step)
        return []
    if isinstance(step, AskApproval):
        return await ask_approval(sim, message, step)
    if isinstance(step, AskQuestion):
        return await ask_question(sim, message, step)
    if isinstance(step, NeedPersonalAuth):
        return await need_personal_auth(sim, message, step)
    assert isinstance(step, RunAgent), step
    return await run_agent(sim, message, step, start_generation)


async def _say(sim: Simulator, message: AgentMessage, step: Say) -> None:
    size = sim.options.chunk_chars
    starts = range(0, len(step.text), size)
    for start in starts:
        if step.seconds:
            await asyncio.sleep(step.seconds / len(starts))
        else:
            await pace(sim)
        chunk = step.text[start : start + size]
        if step.classification == "chain_of_thought":
            message.chain_of_thought += chunk
        else:
            message.add_text(chunk)
        publish(message, "generation_tokens", text=chunk, classification=step.classification)


async def _use_tool(sim: Simulator, message: AgentMessage, step: UseTool) -> None:
    cited = sum(1 for block in step.blocks if block.get("resource", {}).get("mimeType") in _CITED_MIME_TYPES)
    action = await start_tool_call(sim, message, step.tool, step.params, citations=cited)
    if step.label is not None:
        await pace(sim)
        data = {"label": step.label}
        notification = {"progress": 1, "total": 2, "data": data, "_meta": {"data": data}}
        publish(message, "tool_notification", action=dict(action), notification=notification)
    # The quiet part: a real long tool call sends nothing at all on the stream (no heartbeats).
    await asyncio.sleep(step.wait_seconds)
    output = [dict(block) for block in step.blocks] if step.blocks else step.output
    finish_tool_call(message, action, status="succeeded", output=output)


async def _make_files(sim: Simulator, message: AgentMessage, step: MakeFiles) -> None:
    """A tool call that generates files: each is stored, mounted in the conversation, and listed in
    the action's output and `generatedFiles` (processToolResults)."""
    action = await start_tool_call(sim, message, step.tool, step.params)
    await pace(sim)
    conversation = sim.store.conversations[message.conversation_sid]
    blocks, generated = [], []
    for spec in step.files:
        file = store_tool_file(sim, conversation, spec)
        blocks.append(output_block(file, spec, message.api_base, sim.options.workspace_id))
        generated.append(generated_file(file))
    finish_tool_call(message, action, status="succeeded", output=blocks, generated_files=generated)


def _fail(message: AgentMessage, step: Fail) -> None:
    message.status = "failed"
    message.completed = now_ms()
    message.error = {"code": step.code, "message": step.message, "metadata": None}
    publish(message, "agent_error", error=message.error, runIds=[])
