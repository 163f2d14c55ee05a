"""`POST /v1/uploads`: a multipart upload streamed through the pipeline, answered with the record.

Refusals are raised as `BridgeError`s; the app's exception handler (bridge/http/problems.py)
answers them as problem+json.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.errors import InvalidInput
from bridge.http.services import Services
from bridge.security.auth import principal_of_request
from bridge.uploads.multipart import MultipartError, file_part
from bridge.uploads.record_json import upload_json

# Room for the multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024


def upload_route(
    services: Callable[[], Services], max_bytes: int
) -> Callable[[Request], Awaitable[Response]]:
    """The request handler, bound to the runtime provider and the upload limit (in bytes).

    Raises (from the handler):
        BridgeError: a refused upload (`too_large` before reading a byte when the declared length
            is over; `bad_request` for a body that is not a usable multipart upload; the pipeline's).
    """
    limit = max_bytes + _MULTIPART_OVERHEAD

    async def upload(request: Request) -> Response:
        uploads = services().uploads
        declared_length = request.headers.get("content-length")
        if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
            # Refused before reading a byte; the streamed cap still guards bodies without a length.
            raise InvalidInput(
                f"the file is larger than the upload limit ({max_bytes} bytes)", code="too_large"
            )
        try:
            part = await file_part(request)
            record = await uploads.ingest(
                owner=principal_of_request(request),
                filename=part.filename,
                declared_type=part.content_type,
                chunks=part.chunks,
            )
        except MultipartError as exc:
            raise InvalidInput(str(exc), code="bad_request") from exc
        return JSONResponse(upload_json(record), status_code=201, headers={"Location": record.uri})

    return upload
