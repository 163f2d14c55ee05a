"""Dust-shaped error responses: `{"error": {"type": ..., "message": ...}}`."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ApiError(Exception):
    """Raised by a handler to answer with a Dust error body."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def error_response(status: int, error_type: str, message: str) -> JSONResponse:
    """A response with Dust's error body."""
    return JSONResponse({"error": {"type": error_type, "message": message}}, status_code=status)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for `ApiError`."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error_type, exc.message)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods also answer with Dust's error body, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(405, "method_not_supported_error", "The method passed is not supported.")
    return error_response(exc.status_code, "invalid_request_error", str(exc.detail))
