"""The OpenAPI description of the bridge's plain HTTP routes (the MCP endpoints speak JSON-RPC)."""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge import __version__

_PROBLEM = {
    "description": "Refused; `type` is one of the stable problem types",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

# The document served at `/openapi.json`.
OPENAPI_SPEC: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "dust-mcp-bridge",
        "version": __version__,
        "description": "HTTP routes beside the MCP endpoints (/mcp Streamable HTTP, /sse legacy SSE).",
    },
    "paths": {
        "/v1/uploads": {
            "post": {
                "summary": "Upload a file for Dust agents",
                "description": (
                    "Streams one file (multipart part `file`) through the size cap, the MIME allow-list"
                    " and the ClamAV scan, then to Dust. Pass the returned `uri` in ask_agent's `files`."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {"file": {"type": "string", "format": "binary"}},
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "Accepted: scanned and in Dust",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Upload"}}},
                    },
                    **{
                        code: _PROBLEM
                        for code in ("400", "401", "403", "413", "415", "421", "422", "429", "502", "503")
                    },
                },
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: context store, virus scanner and Dust answer",
                "responses": {
                    "200": {"description": "Ready"},
                    "503": {"description": "Not ready, with a reason"},
                },
            }
        },
        "/status": {
            "get": {
                "summary": "Version, mode, store, scanner",
                "responses": {"200": {"description": "Status"}},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics"}}}
        },
    },
    "components": {
        "schemas": {
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": [
                            "bad_request",
                            "unauthorized",
                            "forbidden_origin",
                            "misdirected_request",
                            "empty_file",
                            "too_large",
                            "type_not_allowed",
                            "type_mismatch",
                            "infected",
                            "scan_limits_exceeded",
                            "scanner_unavailable",
                            "dust_rejected",
                            "dust_unavailable",
                            "upstream_error",
                            "rate_limited",
                            "store_unavailable",
                        ],
                    },
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                },
            },
            "Upload": {
                "type": "object",
                "required": [
                    "id",
                    "uri",
                    "filename",
                    "size",
                    "sha256",
                    "mime_type",
                    "scan",
                    "dust_file_id",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "uri": {"type": "string", "description": "bridge://uploads/{id}"},
                    "filename": {"type": "string"},
                    "size": {"type": "integer"},
                    "sha256": {"type": "string"},
                    "mime_type": {"type": "string", "description": "Sniffed with libmagic"},
                    "scan": {"type": "string", "enum": ["clean", "skipped"]},
                    "dust_file_id": {"type": "string"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "pages": {"type": "integer"},
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                },
            },
        }
    },
}


async def openapi(request: Request) -> JSONResponse:
    """`GET /openapi.json`."""
    return JSONResponse(OPENAPI_SPEC)
