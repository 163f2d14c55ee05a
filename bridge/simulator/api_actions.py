"""The routes that answer an agent paused on its user: validate-action, answer-question, and the
listing of a conversation's blocked actions.

Each runs Dust's checks in Dust's order (front-api/routes/v1/w/[wId]/assistant/conversations/[cId]/
messages/[mId]/validate-action.ts and answer-question.ts, [cId]/actions/blocked.ts, with
front/lib/api/assistant/conversation/validate_actions.ts and answer_user_question.ts): the body
schema, then the conversation, then the agent message, then the action. The action is looked up in
the whole workspace (AgentMCPActionResource.fetchById), not in the conversation or message the
request names: what is relaunched is the message the request names.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.blocked import blocked_actions_json, relaunch, remove_pause_event
from bridge.simulator.bodies import parse_body
from bridge.simulator.errors import ApiError
from bridge.simulator.model import AgentMessage, BlockedAction, Conversation
from bridge.simulator.schemas import AnswerQuestionBody, ValidateActionBody
from bridge.simulator.state import Simulator

PREFIX = "/api/v1/w/{wId}/assistant/conversations/{cId}"


class ActionRoutes:
    """Handlers bound to one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes."""
        return [
            Route(PREFIX + "/messages/{mId}/validate-action", self.validate, methods=["POST"]),
            Route(PREFIX + "/messages/{mId}/answer-question", self.answer, methods=["POST"]),
            Route(PREFIX + "/actions/blocked", self.blocked, methods=["GET"]),
        ]

    def _conversation(self, request: Request) -> Conversation:
        # These routes answer a missing conversation themselves, with their own message.
        conversation = self.sim.store.conversations.get(request.path_params["cId"])
        if conversation is None:
            raise ApiError(404, "conversation_not_found", "Conversation not found.")
        return conversation

    def _agent_message(self, request: Request) -> AgentMessage:
        # getUserMessageIdFromMessageId (front/lib/api/assistant/conversation/messages.ts) looks the
        # agent message up by sId in the whole workspace and asserts it exists: an unknown message,
        # or a user message, throws, which Dust's onError (front-api/middlewares/utils.ts
        # unhandledErrorHandler) answers with a 500. The message's user is the API key's (none), so
        # canCurrentUserRespondToParentUserMessage lets any caller answer.
        message = self.sim.store.messages.get(request.path_params["mId"])
        if not isinstance(message, AgentMessage):
            raise ApiError(
                500,
                "internal_server_error",
                "Unhandled internal server error: Agent message is expected to have a parentId",
            )
        return message

    def _action(self, action_id: str) -> BlockedAction:
        action = self.sim.store.actions.get(action_id)
        if action is None:
            raise ApiError(404, "action_not_found", f"Action not found: {action_id}")
        return action

    async def validate(self, request: Request) -> Response:
        """`POST .../messages/{mId}/validate-action` `{actionId, approved}` → `{success: true}`.

        `approved` and `always_approved` make the action ready_allowed_explicitly, `rejected` denied
        (getMCPApprovalStateFromUserApprovalState; `always_approved` is remembered only for a user,
        never for an API key). The public route does not ask validateAction to resume the callers
        of a sub-agent (`resumeAncestorConversations`, which Dust's web app sets and its newest
        resolve_authentication.ts always applies): the simulator resumes them, or a run_agent
        caller would wait forever.
        """
        body = await parse_body(request, ValidateActionBody)
        conversation = self._conversation(request)
        message = self._agent_message(request)
        action = self._action(body["actionId"])
        if action.status != "blocked_validation_required":
            raise ApiError(400, "action_not_blocked", f"Action is not blocked: {action.status}")
        action.status = "denied" if body["approved"] == "rejected" else "ready_allowed_explicitly"
        remove_pause_event(message, "tool_approve_execution", action.sid)
        relaunch(self.sim, conversation, message, resume_ancestors=True)
        return JSONResponse({"success": True})

    async def answer(self, request: Request) -> Response:
        """`POST .../messages/{mId}/answer-question` `{actionId, answer: {selectedOptions,
        customResponse?}}` → `{success: true}`.

        Option indexes are not checked here: the ask_user_question tool skips those out of range
        when it resumes (front/lib/actions/user_question.ts). registerUserAnswer does not resume
        the callers of a sub-agent.
        """
        body = await parse_body(request, AnswerQuestionBody)
        conversation = self._conversation(request)
        message = self._agent_message(request)
        action = self._action(body["actionId"])
        if action.status != "blocked_user_answer_required":
            raise ApiError(
                400, "action_not_blocked", f"Action is not blocked for user question: {action.status}"
            )
        if not action.is_blocked:  # AgentMCPActionResource.canAgentMessageResume
            raise ApiError(
                400, "action_not_blocked", "Action belongs to an agent message that can no longer resume"
            )
        action.answer = dict(body["answer"])
        action.status = "ready_allowed_explicitly"
        remove_pause_event(message, "tool_ask_user_question", action.sid)
        relaunch(self.sim, conversation, message, resume_ancestors=False)
        return JSONResponse({"success": True})

    async def blocked(self, request: Request) -> Response:
        """`GET .../actions/blocked` → `{blockedActions: [...]}` (no query, no body)."""
        conversation = self._conversation(request)
        return JSONResponse({"blockedActions": blocked_actions_json(self.sim, conversation)})
