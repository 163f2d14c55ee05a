"""HTTP errors as RFC 9457 problem details with a stable `type` per cause."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int, problem_type: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A problem+json response; `problem_type` is one stable word such as `too_large`."""
    return JSONResponse(
        {"type": problem_type, "title": HTTPStatus(status).phrase, "status": status, "detail": detail},
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )
