"""Routes under `/assistant/conversations`: create, read, post, cancel, content fragments."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.bodies import CancelBody, ConversationBody, FragmentBody, MessageBody, parse_body
from bridge.simulator.conversations import (
    attach_fragment,
    create_conversation,
    get_conversation,
    post_message,
    resolve_fragment_file,
    wait_until_answered,
)
from bridge.simulator.generation import cancel_generation
from bridge.simulator.model import AgentMessage, Conversation
from bridge.simulator.state import Simulator

PREFIX = "/api/v1/w/{wId}/assistant/conversations"


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

    def _conversation_json(self, conversation: Conversation) -> dict[str, Any]:
        return conversation.to_json(self.sim.owner_json(), self.sim.conversation_url(conversation.sid))

    async def create(self, request: Request) -> Response:
        """`POST /assistant/conversations`: fragments first, then the message and its agent replies."""
        body = await parse_body(request, ConversationBody)
        fragments = [*body.contentFragments, *([body.contentFragment] if body.contentFragment else [])]
        # Resolve every file before storing anything, so an unknown fileId leaves no half-made conversation.
        files = [resolve_fragment_file(self.sim, fragment) for fragment in fragments]
        conversation = create_conversation(self.sim, body)
        created = [
            attach_fragment(self.sim, conversation, f, file) for f, file in zip(fragments, files, strict=True)
        ]
        result: dict[str, Any] = {}
        if body.message is not None:
            user_message, replies = post_message(self.sim, conversation, body.message)
            if body.blocking:
                await wait_until_answered(replies)
            result["message"] = user_message.to_json()
        if created:
            result["contentFragment"] = created[-1].to_json()
        return JSONResponse({"conversation": self._conversation_json(conversation), **result})

    async def read(self, request: Request) -> Response:
        """`GET /assistant/conversations/{cId}` with every message's current state."""
        conversation = get_conversation(self.sim, request.path_params["cId"])
        return JSONResponse({"conversation": self._conversation_json(conversation)})

    async def post(self, request: Request) -> Response:
        """`POST .../messages`: `agentMessages` is empty when no known agent was mentioned."""
        conversation = get_conversation(self.sim, request.path_params["cId"])
        body = await parse_body(request, MessageBody)
        user_message, replies = post_message(self.sim, conversation, body)
        if body.blocking:
            await wait_until_answered(replies)
        return JSONResponse(
            {"message": user_message.to_json(), "agentMessages": [reply.to_json() for reply in replies]}
        )

    async def cancel(self, request: Request) -> Response:
        """`POST .../cancel`: succeeds even when nothing was running; unknown ids are ignored."""
        conversation = get_conversation(self.sim, request.path_params["cId"])
        body = await parse_body(request, CancelBody)
        self.sim.stats.cancels.append({"conversationId": conversation.sid, "messageIds": body.messageIds})
        for message_sid in body.messageIds:
            message = self.sim.store.messages.get(message_sid)
            if isinstance(message, AgentMessage) and message in conversation.entries:
                cancel_generation(message)
        return JSONResponse({"success": True})

    async def add_fragment(self, request: Request) -> Response:
        """`POST .../content_fragments`: attaches to the next user message."""
        conversation = get_conversation(self.sim, request.path_params["cId"])
        body = await parse_body(request, FragmentBody)
        file = resolve_fragment_file(self.sim, body)
        fragment = attach_fragment(self.sim, conversation, body, file)
        return JSONResponse({"contentFragment": fragment.to_json()})
