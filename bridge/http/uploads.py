"""`POST /v1/uploads`: a multipart upload streamed through the pipeline, answered with the record."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.errors import BridgeError
from bridge.http.problems import problem, problem_for
from bridge.runtime import Runtime
from bridge.security.auth import principal_of_request
from bridge.uploads.multipart import MultipartError, file_part
from bridge.uploads.record_json import upload_json


def upload_route(runtime: Callable[[], Runtime]) -> Callable[[Request], object]:
    """The request handler, bound to the runtime provider."""

    async def upload(request: Request) -> Response:
        rt = runtime()
        declared_length = request.headers.get("content-length")
        limit = rt.settings.upload_max_bytes + _MULTIPART_OVERHEAD
        if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
            # Refused before reading a byte; the streamed cap still guards bodies without a length.
            return problem(
                413,
                "too_large",
                f"the file is larger than the upload limit ({rt.settings.upload_max_bytes} bytes)",
            )
        try:
            part = await file_part(request)
            record = await rt.uploads.ingest(
                owner=principal_of_request(request),
                filename=part.filename,
                declared_type=part.content_type,
                chunks=part.chunks,
            )
        except MultipartError as exc:
            return problem(400, "bad_request", str(exc))
        except BridgeError as exc:
            return problem_for(exc)
        return JSONResponse(upload_json(record), status_code=201, headers={"Location": record.uri})

    return upload


# Room for the multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024
