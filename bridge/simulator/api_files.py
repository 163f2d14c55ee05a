"""Routes under `/files`: create an upload slot, upload once within the window, delete (reference §7)."""

from __future__ import annotations

import asyncio
import hashlib

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.bodies import FileCreateBody, parse_body
from bridge.simulator.errors import ApiError
from bridge.simulator.ids import new_sid, now_ms
from bridge.simulator.model import FileRecord
from bridge.simulator.state import Simulator

PREFIX = "/api/v1/w/{wId}/files"
_MB = 1024 * 1024
_RATE_WINDOW_SECONDS = 60.0

# Accepted content types (Dust's FILE_FORMATS, trimmed to the common ones) and their size category.
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_AUDIO_TYPES = frozenset({"audio/mpeg", "audio/mp4", "audio/x-m4a", "audio/wav", "audio/ogg", "audio/webm"})
_DOCUMENT_TYPES = frozenset(
    {
        "text/plain",
        "text/markdown",
        "text/csv",
        "text/tab-separated-values",
        "text/html",
        "text/xml",
        "text/calendar",
        "message/rfc822",
        "application/json",
        "application/pdf",
        "application/xml",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/octet-stream",
        "application/x-yaml",
        "text/yaml",
        "text/x-python",
        "text/javascript",
        "application/javascript",
        "text/x-typescript",
        "text/x-sh",
        "text/x-java",
        "text/x-c",
        "text/x-go",
        "text/x-rust",
        "text/css",
        "text/x-sql",
    }
)


def max_size(content_type: str) -> int | None:
    """The byte limit for a content type, or None if the type is not supported."""
    if content_type in _IMAGE_TYPES:
        return 5 * _MB
    if content_type in _AUDIO_TYPES:
        return 100 * _MB
    if content_type in _DOCUMENT_TYPES:
        return 50 * _MB
    return None


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


class FileRoutes:
    """Handlers bound to one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes."""
        return [
            Route(PREFIX, self.create, methods=["POST"]),
            Route(PREFIX + "/{fileId}", self.upload, methods=["POST"]),
            Route(PREFIX + "/{fileId}", self.delete, methods=["DELETE"]),
        ]

    def _upload_url(self, request: Request, file: FileRecord) -> str:
        # Built from the request's own base URL, so it is reachable however the simulator was started.
        base = str(request.base_url).rstrip("/")
        return f"{base}/api/v1/w/{self.sim.options.workspace_id}/files/{file.sid}"

    def _file(self, request: Request) -> FileRecord:
        file = self.sim.store.files.get(request.path_params["fileId"])
        if file is None:
            raise ApiError(404, "file_not_found", "File not found.")
        return file

    def _check_rate(self) -> None:
        # Dust's limiter counts every creation attempt in a sliding 60 s window per workspace.
        now = asyncio.get_running_loop().time()
        recent = self.sim.store.file_creations
        while recent and recent[0] <= now - _RATE_WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= self.sim.options.files_per_minute:
            raise ApiError(429, "rate_limit_error", "You have reached the rate limit for this workspace.")
        recent.append(now)

    async def create(self, request: Request) -> Response:
        """`POST /files`: an upload slot with its `uploadUrl`."""
        self._check_rate()
        body = await parse_body(request, FileCreateBody)
        if body.useCase != "conversation":
            raise ApiError(
                400, "invalid_request_error", "Only the 'conversation' use case is allowed for API keys."
            )
        content_type = _media_type(body.contentType)
        limit = max_size(content_type)
        if limit is None:
            raise ApiError(
                400, "file_type_not_supported", f"Content type {body.contentType!r} is not supported."
            )
        if body.fileSize > limit:
            raise ApiError(
                400, "file_too_large", f"File is too large (limit {limit // _MB} MB for this type)."
            )
        file = FileRecord(
            sid=f"fil_{new_sid()}",
            created_ms=now_ms(),
            created_at=asyncio.get_running_loop().time(),
            content_type=content_type,
            file_name=body.fileName,
            file_size=body.fileSize,
            use_case=body.useCase,
            use_case_metadata=body.useCaseMetadata,
        )
        self.sim.store.files[file.sid] = file
        return JSONResponse({"file": file.to_json(self._upload_url(request, file))})

    async def upload(self, request: Request) -> Response:
        """`POST /files/{sId}`: multipart with exactly one part named `file`, once, within the window."""
        file = self._file(request)
        if file.status != "created":
            raise ApiError(400, "invalid_request_error", "File has already been uploaded.")
        age = asyncio.get_running_loop().time() - file.created_at
        if age > self.sim.options.file_upload_window_seconds:
            raise ApiError(400, "invalid_request_error", "File upload has expired. Create a new file.")
        data, part_type = await self._read_single_part(request)
        if not data:
            raise ApiError(400, "file_is_empty", "The uploaded file is empty.")
        if len(data) > file.file_size:
            raise ApiError(400, "file_too_large", "The uploaded file is larger than the declared fileSize.")
        if part_type is not None and _media_type(part_type) not in {
            file.content_type,
            "application/octet-stream",
        }:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Part content type {part_type!r} does not match {file.content_type!r}.",
            )
        # Hash off the event loop: uploads can be tens of megabytes.
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        file.status, file.uploaded_size, file.sha256 = "ready", len(data), digest
        if self.sim.options.file_upload_delay_seconds:
            # The file is ready in Dust, but the client has not heard so yet.
            await asyncio.sleep(self.sim.options.file_upload_delay_seconds)
        return JSONResponse({"file": file.to_json(self._upload_url(request, file))})

    async def _read_single_part(self, request: Request) -> tuple[bytes, str | None]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "invalid_request_error", "Expected a multipart/form-data body.")
        try:
            form = await request.form()
        except Exception as exc:  # the multipart parser raises several types for malformed bodies
            raise ApiError(400, "invalid_request_error", "Malformed multipart body.") from exc
        try:
            parts = form.multi_items()
            if len(parts) != 1 or parts[0][0] != "file" or not isinstance(parts[0][1], UploadFile):
                raise ApiError(400, "invalid_request_error", "Expected exactly one file part named 'file'.")
            upload = parts[0][1]
            return await upload.read(), upload.content_type
        finally:
            await form.close()

    async def delete(self, request: Request) -> Response:
        """`DELETE /files/{sId}` → 204."""
        file = self._file(request)
        del self.sim.store.files[file.sid]
        return Response(status_code=204)
