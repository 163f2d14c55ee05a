"""Request bodies and queries, validated the way Dust's Hono routes do.

`parse_body` / `parse_query` are `validate("json" | "query", schema)` of front-api/middlewares/validator.ts
(over @hono/zod-validator): a refused value is `400 invalid_request_error "Invalid <target>: <zod message>"`.
The schemas are in bridge/simulator/schemas.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from bridge.simulator.errors import ApiError
from bridge.simulator.zod import Schema, format_issues

# Hono's validator (hono/validator): the JSON body is read only for a JSON content type; any other
# content type validates `{}`.
_JSON_CONTENT_TYPE = re.compile(r"^application/([a-z-.]+\+)?json(;\s*[a-zA-Z0-9-]+=([^;]+))*$")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse refuses NaN and Infinity


def _validate(schema: Schema, value: Any, label: str) -> Any:
    ok, parsed, issues = schema.safe_parse(value)
    if not ok:
        # front-api/middlewares/validator.ts
        raise ApiError(400, "invalid_request_error", f"Invalid {label}: {format_issues(issues)}")
    return parsed


async def parse_body(request: Request, schema: Schema) -> Any:
    """The body validated like `validate("json", schema)`; errors are Dust's 400s."""
    value: Any = {}
    if _JSON_CONTENT_TYPE.match(request.headers.get("content-type", "")):
        try:
            value = json.loads(await request.body(), parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            # Hono throws HTTPException(400, "Malformed JSON in request body"); Dust's onError
            # (front-api/middlewares/utils.ts unhandledErrorHandler) renders it as a 4xx error body.
            raise ApiError(400, "invalid_request_error", "Malformed JSON in request body") from exc
    return _validate(schema, value, "request body")


def parse_query(request: Request, schema: Schema) -> Any:
    """The query validated like `validate("query", schema)`: a repeated key becomes an array."""
    grouped: dict[str, list[str]] = {}
    for key, item in request.query_params.multi_items():
        grouped.setdefault(key, []).append(item)
    value = {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}
    return _validate(schema, value, "query parameters")
