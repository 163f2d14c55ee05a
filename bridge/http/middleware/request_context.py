"""A request id for every HTTP request, bound for everything logged while it is served.

The id is the client's `X-Request-Id` when it is sane (else a fresh one) and is echoed in the
response; the client-auth middleware adds the principal to the same log context once it is known.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.observability.context import REQUEST_ID


class RequestContextMiddleware:
    """Give every HTTP request an id (the client's `X-Request-Id` when it is sane) for the logs and
    echo it in the response; the principal is added once authentication has run."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Bind the request id (and later the principal) to everything logged for this request."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        # Also on the request itself: MCP handlers run in tasks that do not inherit this context.
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self._app(scope, receive, with_id)
        finally:
            REQUEST_ID.reset(token)
