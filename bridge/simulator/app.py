"""The simulator's Starlette application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from bridge.simulator.api_actions import ActionRoutes
from bridge.simulator.api_agents import AgentRoutes
from bridge.simulator.api_conversations import ConversationRoutes
from bridge.simulator.api_downloads import DownloadRoutes
from bridge.simulator.api_events import EventRoutes
from bridge.simulator.api_files import FileRoutes
from bridge.simulator.capture import BodyCapture
from bridge.simulator.control import ControlRoutes
from bridge.simulator.errors import ApiError, handle_api_error, handle_http_exception
from bridge.simulator.gate import ApiGate
from bridge.simulator.options import SimulatorOptions
from bridge.simulator.state import Simulator


def create_app(options: SimulatorOptions | None = None) -> Starlette:
    """A Starlette app speaking Dust's public API for one simulated workspace, plus `/_sim/` controls."""
    sim = Simulator(options or SimulatorOptions())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await sim.shutdown()

    app = Starlette(
        routes=[
            *ControlRoutes(sim).routes(),
            *AgentRoutes(sim).routes(),
            *ConversationRoutes(sim).routes(),
            *ActionRoutes(sim).routes(),
            *EventRoutes(sim).routes(),
            *FileRoutes(sim).routes(),
            *DownloadRoutes(sim).routes(),
        ],
        middleware=[Middleware(BodyCapture, sim=sim), Middleware(ApiGate, sim=sim)],
        exception_handlers={ApiError: handle_api_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    # Reachable for in-process users (e.g. a test holding the app) that want to inspect the state.
    app.state.sim = sim
    return app
