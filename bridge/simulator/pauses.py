"""The steps that pause an agent on its user: an approval, a question, a missing personal
authorisation, and run_agent relaying a sub-agent's pause.

Each publishes the pause event Dust publishes, registers the blocked action (Store.actions), waits
without a sound until the answering route relaunches the message (AgentMessage.resume), then plays
the tool's end and returns what the agent does next. The answering routes are in
bridge/simulator/api_actions.py, the listing and relaunch rules in bridge/simulator/blocked.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.simulator.agents import (
    ASK_USER,
    RUN_AGENT,
    AskApproval,
    AskQuestion,
    NeedPersonalAuth,
    RunAgent,
    Step,
    Tool,
)
from bridge.simulator.conversations import post_run_agent_conversation
from bridge.simulator.eventlog import TERMINAL_TYPES, Event
from bridge.simulator.model import AgentMessage, BlockedAction
from bridge.simulator.state import Simulator
from bridge.simulator.toolcalls import finish_tool_call, forward, publish, start_tool_call

# The agent-message events that announce an action blocked on the user (SDK
# AgentActionSpecificEventSchema; front/lib/actions/mcp.ts isBlockedActionEvent).
PAUSE_EVENT_TYPES = frozenset(
    {
        "tool_approve_execution",
        "tool_ask_user_question",
        "tool_personal_auth_required",
        "tool_file_auth_required",
    }
)

# What the model reads instead of the output of a rejected tool call: front/lib/actions/mcp.ts renders
# an action in status `denied` so, and the tool runner's handleMCPActionError (yieldAsError false)
# publishes it as the action's output.
REJECTED_OUTPUT = (
    "The user rejected this specific action execution. Using this action is hence forbidden for this message."
)
# front/lib/actions/user_question.ts: what the ask_user_question tool returns once answered.
DECLINED_OUTPUT = "User declined to answer. Proceed with your best judgment."

# Tools that run without asking have the permission (stake) `never_ask`
# (front/lib/actions/utils.ts getExecutionStatusFromConfig).
NEVER_ASK = "never_ask"

StartGeneration = Callable[[Simulator, AgentMessage], None]


def _register(
    sim: Simulator, message: AgentMessage, tool: Tool, action: dict[str, Any], status: str, **extra: Any
) -> BlockedAction:
    blocked = BlockedAction(message=message, tool=tool, action=action, created=action["createdAt"], **extra)
    blocked.status = status
    if not any(known is action for known in message.actions):
        # The conversation shows the action in its blocked status while the message waits.
        message.actions.append(action)
    message.pauses.append(blocked)
    sim.store.actions[blocked.sid] = blocked
    return blocked


def _metadata(tool: Tool, agent_name: str, **extra: Any) -> dict[str, Any]:
    # SDK MCPValidationMetadataSchema (+ the optional mcpServerDisplayName / mcpServerId of
    # ToolExecutionMetadataSchema); `agentName` is deprecated there (2026-07-09) but still sent.
    metadata: dict[str, Any] = {
        "toolName": tool.name,
        "mcpServerName": tool.server_name,
        "agentName": agent_name,
    }
    if tool.icon is not None:
        metadata["icon"] = tool.icon
    return {**metadata, **extra}


async def ask_approval(sim: Simulator, message: AgentMessage, step: AskApproval) -> list[Step]:
    """A tool call that needs `validate-action`, unless the conversation skips tool validation."""
    tool = step.tool
    if message.skip_tools_validation:
        # getExecutionStatusFromConfig: `skipToolsValidation` runs every tool implicitly allowed.
        action = await start_tool_call(sim, message, tool, step.inputs)
        finish_tool_call(message, action, status="succeeded", output=step.output)
        return step.then(True)
    action = await start_tool_call(sim, message, tool, step.inputs, status="blocked_validation_required")
    blocked = _register(sim, message, tool, action, "blocked_validation_required", stake=step.stake)
    # create_tool_actions.ts: the approval event of the step's last blocking action carries
    # isLastBlockingEventForStep; `userId` is the user's, absent for an API key. The SDK's
    # ToolExecutionMetadataSchema also names the server's display name and sId.
    publish(
        message,
        "tool_approve_execution",
        conversationId=message.conversation_sid,
        actionId=blocked.sid,
        inputs=step.inputs,
        stake=step.stake,
        metadata=_metadata(
            tool, message.agent.name, mcpServerDisplayName=tool.server_display, mcpServerId=tool.server_sid
        ),
        isLastBlockingEventForStep=True,
    )
    await message.pause()
    # validate_actions.ts: `approved` and `always_approved` make the action ready_allowed_explicitly,
    # `rejected` makes it denied; the relaunched loop runs it or tells the model it was rejected.
    approved = blocked.status != "denied"
    if approved:
        finish_tool_call(message, action, status="succeeded", output=step.output)
    else:
        finish_tool_call(message, action, status="denied", output=REJECTED_OUTPUT)
    return step.then(approved)


def _chosen_labels(question: dict[str, Any], answer: dict[str, Any]) -> list[str]:
    # front/lib/actions/user_question.ts getUserQuestionSelections: indexes out of range are
    # skipped (answer-question accepts any number). A fractional index would make Dust's tool fail
    # (`options[0.5].label`); it is skipped here too.
    options = question["options"]
    chosen = [i for i in answer.get("selectedOptions") or [] if float(i).is_integer()]
    return [options[int(i)]["label"] for i in chosen if 0 <= i < len(options)]


def question_output(question: dict[str, Any], labels: list[str], custom: str | None) -> str:
    """The ask_user_question tool's output once answered (user_question.ts formatUserQuestionAnswer)."""
    selections = [*labels, *([f"Other: {custom}"] if custom else [])]
    if not selections:
        return DECLINED_OUTPUT
    return (
        f'User has answered your question: "{question["question"]}"="{", ".join(selections)}". '
        "You can now continue with the user's answers in mind."
    )


async def ask_question(sim: Simulator, message: AgentMessage, step: AskQuestion) -> list[Step]:
    """The ask_user_question tool: it runs, returns a pause, and waits for `answer-question`."""
    question = step.question
    action = await start_tool_call(sim, message, ASK_USER, dict(question))
    # front/lib/actions/mcp_internal_actions/exit_events.ts (`tool_user_answer_required`): the
    # action becomes blocked_user_answer_required, the question is kept in its resume state, and
    # the event carries no stake and no isLastBlockingEventForStep.
    blocked = _register(
        sim, message, ASK_USER, action, "blocked_user_answer_required", stake=NEVER_ASK, question=question
    )
    publish(
        message,
        "tool_ask_user_question",
        conversationId=message.conversation_sid,
        actionId=blocked.sid,
        metadata=_metadata(ASK_USER, "agent"),
        inputs=action["params"],
        question=question,
    )
    await message.pause()
    answer = blocked.answer or {}
    labels = _chosen_labels(question, answer)
    custom = answer.get("customResponse") or None
    finish_tool_call(message, action, status="succeeded", output=question_output(question, labels, custom))
    return step.then(labels, custom)


async def need_personal_auth(sim: Simulator, message: AgentMessage, step: NeedPersonalAuth) -> list[Step]:
    """A tool whose server needs the user's own account; it waits for the connection."""
    tool = step.tool
    action = await start_tool_call(sim, message, tool, step.inputs)
    blocked = _register(
        sim, message, tool, action, "blocked_authentication_required", stake=NEVER_ASK, provider=step.provider
    )
    # exit_events.ts (`tool_personal_auth_required`): its message names the function call, and
    # `mcpServerDisplayName` is the server's name there (the blocked-actions listing has the view's
    # display name).
    publish(
        message,
        "tool_personal_auth_required",
        conversationId=message.conversation_sid,
        actionId=blocked.sid,
        metadata=_metadata(tool, "agent", mcpServerDisplayName=tool.server_name, mcpServerId=tool.server_sid),
        inputs=step.inputs,
        authError={
            "mcpServerId": tool.server_sid,
            "provider": step.provider,
            "toolName": tool.function_call_name,
            "message": (
                f"The tool {tool.function_call_name} requires personal authentication, "
                "please authenticate to use it."
            ),
        },
    )
    await message.pause()
    finish_tool_call(message, action, status="succeeded", output=step.output)
    return step.then


EventKey = tuple[int, int] | None


async def _follow(child: AgentMessage, after: EventKey) -> tuple[EventKey, list[Event]]:
    """Read the sub-agent's events after `after` until its message ends (no blocking events) or it
    blocks on its user (the blocking events of that step)."""
    blocking: list[Event] = []
    while True:
        log = child.log
        for event in log.events[log.index_after(after) :]:
            after = event.key
            if event.type in TERMINAL_TYPES:
                return after, []
            if event.type in PAUSE_EVENT_TYPES:
                blocking.append(event)
                # run_agent returns on the step's last blocking event (isLastBlockingEventForStep);
                # pause events that do not carry the flag are taken as the last.
                if event.data.get("isLastBlockingEventForStep") is not False:
                    return after, blocking
        if log.abandoned:
            return after, []
        await log.wait_beyond(len(log.events), 3600.0)


async def run_agent(
    sim: Simulator, message: AgentMessage, step: RunAgent, start: StartGeneration
) -> list[Step]:
    """The run_agent tool: a sub-agent answers in a child conversation; when it blocks on its user,
    so does this message, relaying the sub-agent's pause events as they are."""
    action = await start_tool_call(sim, message, RUN_AGENT, {"query": step.query})
    conversation, child = post_run_agent_conversation(sim, message, step.agent_sid, step.query)
    start(sim, child)
    resume_state = {"conversationId": conversation.sid, "userMessageId": child.parent_sid}
    blocked: BlockedAction | None = None
    after, blocking = await _follow(child, None)
    while blocking:
        # exit_events.ts (`tool_blocked_awaiting_input`): the run_agent action becomes
        # blocked_child_action_input_required, its resume state names the child conversation,
        # and the child's blocking events are published on this message's channel unchanged: they
        # name the child's conversation and message, which is where the answer must go.
        status = "blocked_child_action_input_required"
        if blocked is None:
            blocked = _register(
                sim,
                message,
                RUN_AGENT,
                action,
                status,
                stake=NEVER_ASK,
                child=child,
                resume_state=resume_state,
            )
        blocked.status = status
        for event in blocking:
            forward(message, event.data)
        await message.pause()
        # retry_blocked_actions.ts (how the parent is relaunched): the message's blocked-action
        # events are deleted from its channel, then the run_agent tool resumes following the child.
        message.log.remove(lambda event: event.type in PAUSE_EVENT_TYPES)
        blocked.status = "running"
        after, blocking = await _follow(child, after)
    finish_tool_call(message, action, status="succeeded", output=child.content)
    return step.then(child.content)
