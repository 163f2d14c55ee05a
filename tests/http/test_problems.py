"""The one HTTP translation of the error tree (bridge/http/problems.py): a route raises a BridgeError,
the exception handler registered on the app answers problem+json with the status of its cause or
category, `Retry-After` where waiting helps; anything else is not its business."""

from __future__ import annotations

from http import HTTPStatus

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.desktop import NotConfigured
from bridge.dust.errors import error_from_response
from bridge.errors import BridgeError, InvalidInput, LimitExceeded, NotFound, Unavailable, UpstreamFailure
from bridge.http.problems import EXCEPTION_HANDLERS

DUST_ERROR = b'{"error": {"type": "some_error", "message": "Dust says no."}}'

CASES: list[tuple[BridgeError, int, str | None]] = [
    (InvalidInput("no file part", code="bad_request"), 400, None),
    (InvalidInput("the file is larger than the upload limit (5 bytes)", code="too_large"), 413, None),
    (InvalidInput("not allowed", code="type_not_allowed"), 415, None),
    (InvalidInput("infected", code="infected"), 422, None),
    (NotFound("unknown or expired upload"), 404, None),
    (LimitExceeded("slow down", retry_after=2.6), 429, "3"),
    (LimitExceeded("slow down"), 429, "60"),
    (Unavailable("the context store (Redis) is unreachable", code="store_unavailable"), 503, "60"),
    (UpstreamFailure("Dust refused it"), 502, None),
    (NotConfigured('"Workspace ID": must be set'), 400, None),
    # Dust's errors reach this boundary unmapped: their category decides.
    (error_from_response(429, DUST_ERROR, retry_after="7"), 429, "7"),
    (error_from_response(503, DUST_ERROR), 503, "60"),
    (error_from_response(500, DUST_ERROR), 502, None),
    (error_from_response(400, DUST_ERROR), 502, None),
]


def _app(failure: Exception) -> Starlette:
    async def fails(request: Request) -> Response:
        raise failure

    return Starlette(routes=[Route("/fails", fails)], exception_handlers=EXCEPTION_HANDLERS)


@pytest.mark.parametrize(("failure", "status", "retry_after"), CASES, ids=lambda case: str(case))
async def test_a_raised_bridge_error_is_answered_as_problem_json(
    failure: BridgeError, status: int, retry_after: str | None
) -> None:
    transport = httpx2.ASGITransport(app=_app(failure))
    async with httpx2.AsyncClient(transport=transport, base_url="http://bridge") as http:
        response = await http.get("/fails")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": failure.code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": failure.for_user(),
    }
    assert response.headers.get("retry-after") == retry_after


async def test_other_exceptions_are_not_mapped() -> None:
    transport = httpx2.ASGITransport(app=_app(ValueError("a bug")), raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://bridge") as http:
        response = await http.get("/fails")
    assert response.status_code == 500
    assert response.headers["content-type"] != "application/problem+json"
