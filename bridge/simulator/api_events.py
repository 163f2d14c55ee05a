"""The agent-message events route, on `/api/v1` (redirecting or direct) and on `/api/sse/v1`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.conversations import get_conversation
from bridge.simulator.errors import ApiError
from bridge.simulator.ids import parse_event_id
from bridge.simulator.model import AgentMessage
from bridge.simulator.sse import MessageEventStream
from bridge.simulator.state import Simulator

_TAIL = "/w/{wId}/assistant/conversations/{cId}/messages/{mId}/events"


class EventRoutes:
    """Handlers bound to one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes."""
        return [
            Route("/api/v1" + _TAIL, self.api_events, methods=["GET"]),
            Route("/api/sse/v1" + _TAIL, self.sse_events, methods=["GET"]),
        ]

    async def api_events(self, request: Request) -> Response:
        """The historical path: a 307 to `/api/sse/v1/...` like current Dust, or (`redirect_sse` off,
        older deployments) the stream itself.

        front-api/routes/v1/w/[wId]/assistant/conversations/[cId]/messages/[mId]/events.ts only
        registers `redirectToSse`: nothing is looked up, so an unknown conversation or message is
        only reported by the SSE route after the redirect. Authentication does come first: that
        route is mounted under front-api/routes/v1/w/[wId]/index.ts, whose `publicApiAuth` runs on
        every request (here: the ApiGate middleware).
        """
        if self.sim.options.redirect_sse:
            # front-api/lib/api/sse/redirect.ts: a relative Location (path + query), so the client
            # resolves it against its own https origin and keeps the Authorization header.
            location = "/api/sse" + request.url.path.removeprefix("/api")
            if request.url.query:
                location += "?" + request.url.query
            return Response(status_code=307, headers={"Location": location})
        message, after = self._target(request)
        return MessageEventStream(self.sim, message, after)

    async def sse_events(self, request: Request) -> Response:
        """The SSE path (front-api/routes/sse/v1/w/[wId]/.../[mId]/events.ts, checks in
        front-api/lib/api/sse/message_events.ts): conversation, then message, then agent message."""
        message, after = self._target(request)
        return MessageEventStream(self.sim, message, after)

    def _target(self, request: Request) -> tuple[AgentMessage, tuple[int, int] | None]:
        conversation = get_conversation(self.sim, request.path_params["cId"])
        message = self.sim.store.messages.get(request.path_params["mId"])
        if message is None or message not in conversation.entries:
            raise ApiError(404, "message_not_found", "The message you're trying to access was not found.")
        if not isinstance(message, AgentMessage):
            raise ApiError(400, "invalid_request_error", "Events are only available for agent messages.")
        # SseQuerySchema (front-api/lib/api/sse/stream_events.ts) accepts any string; absent or empty
        # means the whole history.
        raw = request.query_params.get("lastEventId") or ""
        if not raw:
            return message, None
        after = parse_event_id(raw)
        if after is None:
            # Not a Redis stream id: the history read (XREAD) fails, Dust logs it and streams only the
            # events published from then on (front/lib/api/redis-hybrid-manager.ts).
            events = message.log.events
            return message, events[-1].key if events else None
        return message, after
