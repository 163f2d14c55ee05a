"""Small helpers shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

import httpx2
from mcp_types import INVALID_REQUEST

# A handshake-era `initialize`, as a client opens an MCP session with it.
INIT: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


# Each id that is neither a string nor an integer, by the name the error message gives it.
BAD_IDS: dict[str, Any] = {"object": {"n": 1}, "list": [1], "boolean": True, "number": 1.5, "null": None}


def is_invalid_request(error: dict[str, Any]) -> None:
    """Assert that `error` is the JSON-RPC Invalid Request a request with an unusable id gets."""
    assert error["jsonrpc"] == "2.0" and error["id"] is None, error
    assert error["error"]["code"] == INVALID_REQUEST, error
    assert "id must be a string or an integer" in error["error"]["message"], error


def mcp_headers(key: str) -> dict[str, str]:
    """The headers of a POST /mcp by a client with `key`."""
    return {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {key}"}


def refused(response: httpx2.Response, status: int, problem_type: str) -> None:
    """Assert that `response` is a problem+json refusal of this status and type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == problem_type
