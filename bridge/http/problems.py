"""HTTP errors as RFC 9457 problem details with a stable `type` per cause.

The HTTP boundary's one translation of the error tree (bridge/errors.py): the category decides the
status, a few causes a more precise one, and the `code` is the problem type (`problem_for`). Routes
only raise: `EXCEPTION_HANDLERS`, registered once on the app (bridge/app.py), answers any
`BridgeError` a route lets out. `problem()` itself also answers the refusals that are not failures
of a request's work but of its credentials or transport (401 no key, 403/421 Host/Origin, 429
over the rate): the middleware and the metrics route build those directly.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from bridge.errors import BridgeError, InvalidInput, LimitExceeded, NotFound, Unavailable

# Statuses of the causes that have a more precise one than their category's.
_STATUS_BY_CODE = {
    "too_large": 413,
    "type_mismatch": 415,
    "type_not_allowed": 415,
    "infected": 422,
    "scan_limits_exceeded": 422,
    "dust_rejected": 422,
}
_STATUS_BY_CATEGORY: tuple[tuple[type[BridgeError], int], ...] = (
    (InvalidInput, 400),
    (NotFound, 404),
    (LimitExceeded, 429),
    (Unavailable, 503),
)
# When to try again, for a refusal that says nothing more precise.
_RETRY_AFTER_SECONDS = 60

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


def problem_for(exc: BridgeError) -> JSONResponse:
    """The problem+json answer to a failure: status from its cause or category (502 for Dust's
    failures and anything else), type from its code, detail from its user-facing message."""
    status = _STATUS_BY_CODE.get(exc.code) or next(
        (status for category, status in _STATUS_BY_CATEGORY if isinstance(exc, category)), 502
    )
    headers = None
    if status in (429, 503):
        retry_after = exc.retry_after if isinstance(exc, LimitExceeded) else None
        headers = {"Retry-After": str(round(retry_after) if retry_after else _RETRY_AFTER_SECONDS)}
    return problem(status, exc.code, exc.for_user(), headers)


async def _answer_bridge_error(request: Request, exc: Exception) -> Response:
    """The answer to a `BridgeError` a route raised (Starlette calls this for that class only)."""
    if not isinstance(exc, BridgeError):
        raise exc
    return problem_for(exc)


# For `Starlette(exception_handlers=...)`: the one place an exception becomes an HTTP answer.
EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {BridgeError: _answer_bridge_error}
