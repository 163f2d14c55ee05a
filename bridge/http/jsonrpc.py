"""Refusals on the MCP endpoints: a JSON-RPC error at an HTTP error status, or as one SSE event.

MCP clients read a JSON-RPC error from a non-2xx answer only when it is `application/json` (the
SDK's client turns anything else into a generic "Server returned an error response"), so this is
what names the cause to the user; `data.type` is the same word as in problem+json.
"""

from __future__ import annotations

from typing import Any, Final

from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp_types import INVALID_REQUEST
from starlette.responses import JSONResponse

# The SDK's default for a message; larger files go through POST /v1/uploads (BRIDGE_UPLOAD_MAX_BYTES).
MCP_MAX_BODY_BYTES = DEFAULT_MAX_REQUEST_BODY_SIZE
# JSON-RPC error codes of the refusals (the server-error range; `data.type` names the cause).
RATE_LIMITED_CODE = -32029
TOO_LARGE_CODE = -32013
SHUTTING_DOWN_CODE = -32003

# What an id that is neither a string nor an integer is called in the error message.
_KIND_NAMES: Final = {
    "object": "an object",
    "list": "a list",
    "boolean": "a boolean",
    "null": "null",
    "number": "a number that is not an integer",
}


def jsonrpc_refusal(
    status: int,
    problem_type: str,
    message: str,
    *,
    code: int,
    request_id: str | int | None = None,
    headers: dict[str, str] | None = None,
    **data: Any,
) -> JSONResponse:
    """A refusal on an MCP endpoint: a JSON-RPC error at an HTTP error status."""
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": code,
                "message": message,
                "data": {"type": problem_type, "status": status, **data},
            },
        },
        status_code=status,
        headers=headers,
    )


def too_large_refusal(limit: int, request_id: str | int | None = None) -> JSONResponse:
    """The refusal of an MCP message over `limit` bytes: 413 and a JSON-RPC error naming the way out."""
    return jsonrpc_refusal(
        413,
        "too_large",
        f"request body too large: an MCP message may be at most {limit} bytes"
        f" ({limit // (1024 * 1024)} MiB); send files through POST /v1/uploads"
        " and pass the returned uri in ask_agent's files",
        code=TOO_LARGE_CODE,
        request_id=request_id,
        limit_bytes=limit,
    )


def rate_limited_refusal(detail: str, wait: int, request_id: str | int | None = None) -> JSONResponse:
    """The refusal of a request over its principal's rate: 429, `Retry-After` and a JSON-RPC error."""
    return jsonrpc_refusal(
        429,
        "rate_limited",
        detail,
        code=RATE_LIMITED_CODE,
        request_id=request_id,
        headers={"Retry-After": str(wait)},
        retry_after=wait,
    )


def shutting_down_refusal(request_id: str | int | None) -> JSONResponse:
    """The refusal of a request that reached a process on its way out: 503, retryable at once."""
    return jsonrpc_refusal(
        503,
        "shutting_down",
        "this bridge process is shutting down (a restart or a deploy): nothing was sent to Dust;"
        " connect again and retry",
        code=SHUTTING_DOWN_CODE,
        request_id=request_id,
        headers={"Retry-After": "1"},
        retry_after=1,
    )


def invalid_id_refusal(kind: str) -> JSONResponse:
    """Invalid Request for a request whose id is `kind`: 400, `id: null` (the id is unusable)."""
    return jsonrpc_refusal(
        400,
        "invalid_request",
        f"Invalid Request: a request's id must be a string or an integer, not {_KIND_NAMES.get(kind, kind)}"
        " (JSON-RPC 2.0, MCP)",
        code=INVALID_REQUEST,
    )


def sse_event(response: JSONResponse) -> bytes:
    """A JSON response's body as one SSE `message` event (the body is one line of JSON)."""
    return b"event: message\r\ndata: " + bytes(response.body) + b"\r\n\r\n"
