"""Unauthenticated `/_sim/` routes that tests use to steer and inspect a running simulator."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.blocked import connect_accounts
from bridge.simulator.faults import parse_rules
from bridge.simulator.state import Simulator


class ControlRoutes:
    """Handlers bound to one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes."""
        return [
            Route("/_sim/health", self.health, methods=["GET"]),
            Route("/_sim/faults", self.faults, methods=["POST"]),
            Route("/_sim/reset", self.reset, methods=["POST"]),
            Route("/_sim/stats", self.stats, methods=["GET"]),
            Route("/_sim/files", self.files, methods=["GET"]),
            Route("/_sim/bodies", self.bodies, methods=["GET"]),
            Route("/_sim/connect", self.connect, methods=["POST"]),
        ]

    def _effective(self) -> dict[str, Any]:
        return {**self.sim.options.to_json(), "fail_next": self.sim.faults.to_json()}

    async def health(self, request: Request) -> Response:
        """Readiness probe."""
        return JSONResponse({"ok": True})

    async def faults(self, request: Request) -> Response:
        """Merge options and queue `fail_next` rules (`[]` clears them); answer the effective settings.

        A bad request gets 400 and changes nothing.
        """
        try:
            patch = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        if not isinstance(patch, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        rules = patch.pop("fail_next", None)
        try:
            # Rules are parsed before the options change, so a bad request changes nothing.
            new_rules = parse_rules(rules) if rules is not None else []
            if patch:
                self.sim.configure(patch)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if rules == []:
            # An explicit empty list is how a test ends a burst it started.
            self.sim.faults.rules.clear()
        self.sim.faults.add(new_rules)
        return JSONResponse(self._effective())

    async def reset(self, request: Request) -> Response:
        """Forget everything and restore the start-up options."""
        self.sim.reset()
        return JSONResponse(self._effective())

    async def stats(self, request: Request) -> Response:
        """Counters and the request/cancel history."""
        return JSONResponse(self.sim.stats_json())

    async def files(self, request: Request) -> Response:
        """Every stored file with its uploaded size and sha256."""
        return JSONResponse({"files": [file.details() for file in self.sim.store.files.values()]})

    async def bodies(self, request: Request) -> Response:
        """The request bodies POSTed to `/api/...` since start or the last reset, oldest first."""
        return JSONResponse({"bodies": list(self.sim.stats.bodies)})

    async def connect(self, request: Request) -> Response:
        """The user connects, in Dust's web app, every account an agent is waiting for: each action
        blocked on a personal authorisation is unblocked and its agent goes on."""
        return JSONResponse({"connected": connect_accounts(self.sim)})
