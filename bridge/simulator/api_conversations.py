"""Routes under `/assistant/conversations`: create, read, post, cancel, content fragments.

Each handler runs Dust's checks in Dust's order (files under
front-api/routes/v1/w/[wId]/assistant/conversations/ in dust-tt/dust): the body schema first
(bridge/simulator/schemas.py), then the route's own checks, then the work.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.bodies import parse_body
from bridge.simulator.conversations import (
    MAX_CONVERSATION_DEPTH,
    MAX_INLINE_CONTENT_CHARS,
    context_overflows,
    create_conversation,
    fragment_context,
    get_conversation,
    inline_fragment_file,
    is_fragment_input,
    is_inline_fragment,
    message_context,
    origin_allowed,
    post_content_fragment,
    post_message,
    username_is_empty,
    wait_until_answered,
)
from bridge.simulator.errors import ApiError
from bridge.simulator.generation import cancel_generation, start_generation
from bridge.simulator.model import AgentMessage, ContentFragment, Conversation, UserMessage
from bridge.simulator.schemas import (
    CancelBody,
    PostContentFragmentBody,
    PostConversationsBody,
    PostMessagesBody,
)
from bridge.simulator.state import Simulator
from bridge.simulator.zod import js_length

PREFIX = "/api/v1/w/{wId}/assistant/conversations"

_OVERFLOW_MESSAGE = (
    "The message.context properties (username, timezone, fullName, and email) "
    "must be less than 255 characters."
)
_NOT_FROM_SYSTEM_KEY = "Messages from run_agent or agent_handover must come from a system key."
_MCP_VIEWS_NEED_USER = "Selecting MCP server views is only available to authenticated users."
_ORIGIN_NOT_ALLOWED = "This origin is not allowed. Remove the origin from the context property."


def _api_base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _inline_too_long(fragment: dict[str, Any]) -> bool:
    # `if (fragment.content)` (an empty string is skipped) then `length > 512 * 1024`.
    content = fragment.get("content")
    return isinstance(content, str) and content != "" and js_length(content) > MAX_INLINE_CONTENT_CHARS


def _check_first_message(message: dict[str, Any]) -> None:
    """The checks of a new conversation's message that come before the conversation is created, in
    conversations/index.ts's order."""
    context = message["context"]
    if context_overflows(context):
        raise ApiError(400, "invalid_request_error", _OVERFLOW_MESSAGE)
    if username_is_empty(context):
        raise ApiError(
            400, "invalid_request_error", "The message.context.username must be a non-empty string."
        )
    if context.get("clientSideMCPServerIds") is not None:  # any array, even empty
        raise ApiError(
            401,
            "invalid_request_error",
            "Local MCP servers are only available to authenticated users.",
        )
    if message.get("agenticMessageData") is not None:
        raise ApiError(401, "invalid_request_error", _NOT_FROM_SYSTEM_KEY)


def _checked_fragments(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A new conversation's `contentFragments`, then its `contentFragment`, checked as
    conversations/index.ts does before the conversation is created."""
    fragments: list[dict[str, Any]] = [*(body.get("contentFragments") or [])]
    if body.get("contentFragment"):
        fragments.append(body["contentFragment"])
    if any(_inline_too_long(fragment) for fragment in fragments):
        raise ApiError(
            400, "invalid_request_error", "The content must be a non-empty string of less than 512kB."
        )
    if not all(is_fragment_input(fragment) for fragment in fragments):
        raise ApiError(400, "invalid_request_error", "Invalid content fragment type.")
    return fragments


class ConversationRoutes:
    """Handlers bound to one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes."""
        return [
            Route(PREFIX, self.create, methods=["POST"]),
            Route(PREFIX + "/{cId}", self.read, methods=["GET"]),
            Route(PREFIX + "/{cId}/messages", self.post, methods=["POST"]),
            Route(PREFIX + "/{cId}/cancel", self.cancel, methods=["POST"]),
            Route(PREFIX + "/{cId}/content_fragments", self.add_fragment, methods=["POST"]),
        ]

    def _conversation_json(self, request: Request, conversation: Conversation) -> dict[str, Any]:
        return conversation.to_json(
            self.sim.owner_json(), self.sim.conversation_url(conversation.sid), _api_base(request)
        )

    async def create(self, request: Request) -> Response:
        """`POST /assistant/conversations` (conversations/index.ts).

        The conversation is created before the fragments and the message are processed, so a
        fragment or message refused at that point leaves it behind, as on Dust.
        """
        body = await parse_body(request, PostConversationsBody)
        message = body.get("message")
        if message is not None:
            _check_first_message(message)
        depth = body.get("depth")
        if depth and depth >= MAX_CONVERSATION_DEPTH:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Recursive run_agent calls exceeded depth of {MAX_CONVERSATION_DEPTH}",
            )
        fragments = _checked_fragments(body)
        if body.get("spaceId"):
            # The simulated workspace has no spaces (projects).
            raise ApiError(404, "space_not_found", "Space not found or access denied")

        conversation = create_conversation(
            self.sim, title=body.get("title"), visibility=body["visibility"], depth=int(depth or 0)
        )
        created: ContentFragment | None = None
        for fragment in fragments:
            author = fragment_context(fragment.get("context"), lower_email=True)
            created = self._add_fragment(request, conversation, fragment, author)
        result: dict[str, Any] = {}
        if message is not None:
            if message["context"].get("selectedMCPServerViewIds") is not None:  # any array, even empty
                raise ApiError(401, "invalid_request_error", _MCP_VIEWS_NEED_USER)
            user_message, _ = await self._post_message(
                request,
                conversation,
                message,
                skip_tools_validation=bool(body.get("skipToolsValidation")),
                blocking=body.get("blocking") is True,
            )
            result["message"] = user_message.to_json()
        if created is not None:
            result["contentFragment"] = created.to_json(_api_base(request), self.sim.options.workspace_id)
        return JSONResponse({"conversation": self._conversation_json(request, conversation), **result})

    def _add_fragment(
        self, request: Request, conversation: Conversation, fragment: dict[str, Any], author: dict[str, Any]
    ) -> ContentFragment:
        """Attach one checked fragment; inline content first becomes a file, as on Dust."""
        if is_inline_fragment(fragment):
            file_sid = inline_fragment_file(self.sim, fragment)
            fragment = {"title": fragment["title"], "url": fragment.get("url"), "fileId": file_sid}
        return post_content_fragment(self.sim, conversation, fragment, author, _api_base(request))

    async def _post_message(
        self,
        request: Request,
        conversation: Conversation,
        message: dict[str, Any],
        *,
        skip_tools_validation: bool,
        blocking: bool,
    ) -> tuple[UserMessage, list[AgentMessage]]:
        """Post a user message (`context`, `content`, `mentions`, `modelSelection`) whose other checks
        passed: its origin is checked last, then the agents are started (and awaited if `blocking`)."""
        stored_context = message_context(message["context"])
        if not origin_allowed(stored_context["origin"], request.headers):
            raise ApiError(400, "invalid_request_error", _ORIGIN_NOT_ALLOWED)
        user_message, replies = post_message(
            self.sim,
            conversation,
            content=message["content"],
            mentions=message["mentions"],
            context=stored_context,
            skip_tools_validation=skip_tools_validation,
            model_selection=message.get("modelSelection"),
        )
        for reply in replies:
            reply.api_base = _api_base(request)
            start_generation(self.sim, reply)
        if blocking:
            await wait_until_answered(replies)
        return user_message, replies

    async def read(self, request: Request) -> Response:
        """`GET /assistant/conversations/{cId}` with every message's current state ([cId]/index.ts)."""
        conversation = get_conversation(self.sim, request.path_params["cId"])
        return JSONResponse({"conversation": self._conversation_json(request, conversation)})

    async def post(self, request: Request) -> Response:
        """`POST .../messages` ([cId]/messages/index.ts): the body is validated before the conversation
        is looked up; `agentMessages` is empty when no known agent was mentioned."""
        body = await parse_body(request, PostMessagesBody)
        conversation = get_conversation(self.sim, request.path_params["cId"])
        context = body["context"]
        if username_is_empty(context):
            raise ApiError(400, "invalid_request_error", "The context.username field is required.")
        if context_overflows(context):
            raise ApiError(400, "invalid_request_error", _OVERFLOW_MESSAGE)
        if context.get("clientSideMCPServerIds"):
            # No client-side MCP server is registered for the key: validateMCPServerAccess fails.
            raise ApiError(
                403, "invalid_request_error", "User does not have access to the client-side MCP servers."
            )
        if body.get("agenticMessageData") is not None:
            raise ApiError(401, "invalid_request_error", _NOT_FROM_SYSTEM_KEY)
        if context.get("selectedMCPServerViewIds"):  # `?.length`: a non-empty array
            raise ApiError(401, "invalid_request_error", _MCP_VIEWS_NEED_USER)
        user_message, replies = await self._post_message(
            request,
            conversation,
            body,
            skip_tools_validation=bool(body.get("skipToolsValidation")),
            blocking=body.get("blocking") is True,
        )
        return JSONResponse(
            {"message": user_message.to_json(), "agentMessages": [reply.to_json() for reply in replies]}
        )

    async def cancel(self, request: Request) -> Response:
        """`POST .../cancel` ([cId]/cancel.ts): body first, then the conversation; succeeds even when
        nothing was running, unknown ids are ignored."""
        body = await parse_body(request, CancelBody)
        conversation = get_conversation(self.sim, request.path_params["cId"])
        self.sim.stats.cancels.append({"conversationId": conversation.sid, "messageIds": body["messageIds"]})
        for message_sid in body["messageIds"]:
            message = self.sim.store.messages.get(message_sid)
            if isinstance(message, AgentMessage) and message in conversation.entries:
                cancel_generation(message)
        return JSONResponse({"success": True})

    async def add_fragment(self, request: Request) -> Response:
        """`POST .../content_fragments` ([cId]/content_fragments.ts): attaches to the next user message."""
        fragment = await parse_body(request, PostContentFragmentBody)
        conversation = get_conversation(self.sim, request.path_params["cId"])
        if _inline_too_long(fragment):
            raise ApiError(
                400, "invalid_request_error", "The content must be a non-empty string of less than 512kB."
            )
        if not is_fragment_input(fragment):
            raise ApiError(400, "invalid_request_error", "Unsupported content fragment type.")
        author = fragment_context(fragment.get("context"), lower_email=False)
        created = self._add_fragment(request, conversation, fragment, author)
        return JSONResponse(
            {"contentFragment": created.to_json(_api_base(request), self.sim.options.workspace_id)}
        )
