"""Routes under `/assistant/agent_configurations`, as Dust's Hono routes answer an API key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.agents import AGENTS, AGENTS_BY_SID, VIEWS
from bridge.simulator.bodies import parse_query
from bridge.simulator.errors import ApiError
from bridge.simulator.schemas import GetAgentConfigurationsQuery, VariantQuery
from bridge.simulator.state import Simulator

PREFIX = "/api/v1/w/{wId}/assistant/agent_configurations"


class AgentRoutes:
    """Handlers bound to one simulator (the key's role decides what an admin-only view shows)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes."""
        return [
            Route(PREFIX, self.list_agents, methods=["GET"]),
            Route(PREFIX + "/{sId}", self.get_agent, methods=["GET"]),
        ]

    async def list_agents(self, request: Request) -> Response:
        """`GET ...?view=&withAuthors=`.

        Mirrors front-api/routes/v1/w/[wId]/assistant/agent_configurations.ts: the query schema
        first (an unknown view is a 400), then `list`/`favorites` need an OAuth user (401 for any
        key, even admin), then `all_unrestricted` needs an admin key (403); no view means `all`
        for a key, and `workspace` is the deprecated name of `published`.
        """
        query = parse_query(request, GetAgentConfigurationsQuery)
        view = query.get("view")
        role = self.sim.options.api_key_role
        if view in ("list", "favorites"):
            raise ApiError(
                401,
                "invalid_request_error",
                f"The user must be authenticated with oAuth to retrieve {view} agents.",
            )
        if view == "all_unrestricted" and role != "admin":
            raise ApiError(403, "app_auth_error", "Only admins can list all agents of the workspace.")
        effective = "published" if view == "workspace" else (view or "all")
        keep = VIEWS[effective]
        agents = []
        for agent in AGENTS:
            if not keep(agent):
                continue
            configuration = agent.public_configuration(role)
            if query.get("withAuthors") == "true":
                configuration["lastAuthors"] = agent.recent_authors()
            agents.append(configuration)
        return JSONResponse({"agentConfigurations": agents})

    async def get_agent(self, request: Request) -> Response:
        """`GET .../{sId}?variant=light|full`.

        Mirrors front-api/routes/v1/w/[wId]/assistant/agent_configurations/[sId]/index.ts: the variant
        query schema (400), unknown agent (404), an unpublished agent for a non-admin key (403).
        """
        query = parse_query(request, VariantQuery)
        agent = AGENTS_BY_SID.get(request.path_params["sId"])
        if agent is None:
            raise ApiError(
                404, "agent_configuration_not_found", "The agent configuration you requested was not found."
            )
        role = self.sim.options.api_key_role
        if agent.scope == "hidden" and role != "admin":
            raise ApiError(403, "workspace_auth_error", "Only admins can access unpublished agents.")
        configuration = agent.public_configuration(role, variant=query.get("variant") or "light")
        return JSONResponse({"agentConfiguration": configuration})
