"""Every HTTP request counted and timed, refused ones included (it runs outermost but one).

The counters live in the Metrics registry (bridge/observability/metrics.py); requests are labelled
by route group (`route_group`: the transport or endpoint, never the raw path). A legacy SSE
session lives exactly as long as its `GET /sse` stream, so the open ones are counted here too.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.observability.metrics import Metrics, route_group


class HttpMetricsMiddleware:
    """Count every HTTP request and time it to the end of its response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, recording route group, method, status and duration."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        route = route_group(scope["path"])
        # A legacy SSE session lives exactly as long as its GET /sse stream.
        sse_session = route == "/sse" and scope["method"] == "GET"
        opened = False

        async def record_status(message: Message) -> None:
            nonlocal status, opened
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # `not opened`: the SDK's SSE endpoint starts a second (empty) response once the
                # stream has ended; only the first one opens a session.
                if sse_session and status == 200 and not opened:
                    opened = True
                    self._metrics.sse_session_opened()
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            if opened:
                self._metrics.sse_session_closed()
            self._metrics.http_requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            self._metrics.http_seconds.labels(route=route).observe(time.perf_counter() - started)
