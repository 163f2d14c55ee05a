"""`GET /status`: what this bridge is and what it is doing, for a person or a dashboard.

Version, mode, where Dust is and the state of its circuit, the store, client keys, transports,
streams and sessions, uploads, what readiness last found, and what a leak would make grow. It
probes nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge import __version__
from bridge.http.health import Readiness
from bridge.http.services import Services


@dataclass(frozen=True)
class StatusFacts:
    """What /status says that the wiring knows, not the runtime."""

    client_keys_required: bool
    # Who a caller is, besides a client key: "oauth" (JWTs), "proxy" (a trusted proxy's header).
    identities: tuple[str, ...]
    streamable_sessions: Callable[[], int]  # open handshake-era Streamable HTTP sessions
    demo_warning: str  # shown in demo mode
    workers: int  # worker processes serving (`serve --workers`), this one among them


def process_counts() -> dict[str, int]:
    """Tasks and file descriptors of this process: what a leak would make grow."""
    counts = {"tasks": len(asyncio.all_tasks())}
    with contextlib.suppress(OSError):
        counts["open_fds"] = len(os.listdir("/proc/self/fd"))
    return counts


def status_body(services: Services, readiness: Readiness, facts: StatusFacts) -> dict[str, Any]:
    """The document served at /status."""
    body: dict[str, Any] = {
        "name": "dust-mcp-bridge",
        "version": __version__,
        "uptime_seconds": round(services.uptime_seconds, 1),
        "mode": "demo" if services.demo else "dust",
        "dust": {
            "base_url": services.dust_base_url,
            "workspace_id": services.workspace_id,
            "circuit": services.dust.breaker_state,
        },
        "store": services.store.kind,
        "client_keys": "required" if facts.client_keys_required else "off",
        "identities": list(facts.identities),
        "transports": ["streamable-http:/mcp", "sse:/sse"],
        "active_streams": services.conversations.active_streams,
        "mcp_sessions": {
            "streamable_http": facts.streamable_sessions(),
            "sse": services.metrics.sse_sessions,
        },
        "uploads": {
            "scan": "required" if services.uploads.scan_required else "off",
            "in_flight": services.uploads.in_flight,
        },
        # What the last readiness check found (store, dust, scanner), and how long ago.
        "dependencies": readiness.last_checks(),
        "process": process_counts(),
        # Which worker answered: with several, each keeps its own streams, sessions and readiness.
        "worker": {"pid": os.getpid(), "workers": facts.workers},
    }
    if services.demo:
        body["warning"] = facts.demo_warning
    return body


def status_route(
    services: Callable[[], Services], readiness: Readiness, facts: StatusFacts
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """The request handler, bound to the runtime provider."""

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(status_body(services(), readiness, facts))

    return status
