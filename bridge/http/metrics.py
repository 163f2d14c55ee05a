"""`GET /metrics`: the Prometheus exposition, behind its own key when BRIDGE_METRICS_KEY is set.

A scrape without the key (or with a wrong one) is refused like a request without a client key:
401 problem+json with a `WWW-Authenticate` challenge, the same answer either way.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from bridge.http.problems import problem
from bridge.http.services import Services
from bridge.security.auth import hash_key, presented_key


def metrics_route(
    services: Callable[[], Services], metrics_key: str | None
) -> Callable[[Request], Awaitable[Response]]:
    """The request handler, bound to the runtime provider and the scrape key (None: open)."""
    key_hash = hash_key(metrics_key) if metrics_key else None

    async def metrics(request: Request) -> Response:
        if key_hash is not None:
            presented = presented_key(request.scope)
            if presented is None or not hmac.compare_digest(hash_key(presented), key_hash):
                return problem(
                    401,
                    "unauthorized",
                    "BRIDGE_METRICS_KEY is set: scrape with Authorization: Bearer <key>",
                    headers={"WWW-Authenticate": 'Bearer realm="dust-mcp-bridge-metrics"'},
                )
        body, content_type = services().metrics.render()
        return Response(body, media_type=content_type)

    return metrics
