"""Routes under `/assistant/agent_configurations` (reference §4)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.agents import AGENTS, AGENTS_BY_SID, VIEWS
from bridge.simulator.errors import ApiError

PREFIX = "/api/v1/w/{wId}/assistant/agent_configurations"


async def list_agents(request: Request) -> Response:
    """`GET ...?view=`: API keys default to `all`; an unknown view is a 400."""
    view = request.query_params.get("view") or "all"
    keep = VIEWS.get(view)
    if keep is None:
        raise ApiError(
            400, "invalid_request_error", f"Unknown view {view!r}; expected one of {sorted(VIEWS)}."
        )
    return JSONResponse(
        {"agentConfigurations": [agent.light_configuration() for agent in AGENTS if keep(agent)]}
    )


async def get_agent(request: Request) -> Response:
    """`GET .../{sId}` or 404 `agent_configuration_not_found`."""
    agent = AGENTS_BY_SID.get(request.path_params["sId"])
    if agent is None:
        raise ApiError(
            404, "agent_configuration_not_found", "The agent configuration you requested was not found."
        )
    return JSONResponse({"agentConfiguration": agent.light_configuration()})


def agent_routes() -> list[BaseRoute]:
    """The Starlette routes."""
    return [
        Route(PREFIX, list_agents, methods=["GET"]),
        Route(PREFIX + "/{sId}", get_agent, methods=["GET"]),
    ]
