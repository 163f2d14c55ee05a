"""Routes under `/files`: create an upload slot, upload once within the window, delete.

Mirrors front-api/routes/v1/w/[wId]/files/index.ts (create), files/[fileId].ts (upload, delete),
front/lib/api/files/processing/index.ts processAndStoreFile and front/lib/api/files/utils.ts
parseUploadRequest (formidable) in dust-tt/dust. Downloads are bridge/simulator/api_downloads.py.
"""

from __future__ import annotations

import asyncio
import hashlib

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator import file_formats
from bridge.simulator.bodies import parse_body
from bridge.simulator.errors import ApiError
from bridge.simulator.ids import new_sid, now_ms
from bridge.simulator.model import FileRecord
from bridge.simulator.schemas import FileUploadUrlBody
from bridge.simulator.state import Simulator
from bridge.simulator.tool_files import mount

PREFIX = "/api/v1/w/{wId}/files"
_RATE_WINDOW_SECONDS = 60.0
# The simulator keeps the bytes of uploads up to this size, so they can be downloaded again.
KEPT_UPLOAD_BYTES = 1024 * 1024


def _part_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def readable_file(sim: Simulator, file_id: str) -> FileRecord:
    """The file a `/files/{fileId}` route may act on for an API key, checked in the routes' order:
    FileResource.fetchById (404), the publicly supported use cases for a non-system key (400,
    isPubliclySupportedUseCase: `conversation` only; the simulator's keys are never system keys),
    then checkFileAccess (a file of a conversation the key cannot fetch is "not found")."""
    file = sim.store.files.get(file_id)
    if file is None:
        raise ApiError(404, "file_not_found", "The file was not found.")
    if file.use_case != "conversation":
        raise ApiError(400, "invalid_request_error", "The file use case is not supported by the API.")
    conversation_id = (file.use_case_metadata or {}).get("conversationId")
    if conversation_id and conversation_id not in sim.store.conversations:
        raise ApiError(404, "file_not_found", "File not found.")
    return file


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

    def _api_base(self, request: Request) -> str:
        # Dust's `config.getApiBaseUrl()`: the request's own base, so the URLs work however the
        # simulator was started.
        return str(request.base_url).rstrip("/")

    def _file(self, request: Request) -> FileRecord:
        return readable_file(self.sim, request.path_params["fileId"])

    def _check_rate(self) -> None:
        # rateLimiter({key: `workspace:${id}:file_uploads`, maxPerTimeframe: 40, timeframeSeconds: 60})
        # for every key but system keys, counting the requests whose body passed validation.
        now = asyncio.get_running_loop().time()
        recent = self.sim.store.file_creations
        while recent and recent[0] <= now - _RATE_WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= self.sim.options.files_per_minute:
            raise ApiError(429, "rate_limit_error", "You have reached the rate limit for this workspace.")
        recent.append(now)

    async def create(self, request: Request) -> Response:
        """`POST /files`: an upload slot, answered with the file's public JSON and its `uploadUrl`."""
        body = await parse_body(request, FileUploadUrlBody)
        self._check_rate()
        content_type, file_name, file_size = body["contentType"], body["fileName"], body["fileSize"]
        if body["useCase"] != "conversation":  # isPubliclySupportedUseCase
            raise ApiError(400, "invalid_request_error", "The file use case is not supported by the API.")
        if not file_formats.is_supported(content_type):
            raise ApiError(400, "file_type_not_supported", f'Content type "{content_type}" is not supported.')
        if content_type not in file_formats.CONVERSATION_CONTENT_TYPES:  # isUploadSupportedForContentType
            raise ApiError(
                400,
                "file_type_not_supported",
                f'Content type "{content_type}" is not supported for use-case conversation.',
            )
        if file_size > file_formats.max_size(content_type):  # ensureFileSize
            raise ApiError(400, "file_too_large", f'File "{file_name}" is too large.')
        file = FileRecord(
            sid=f"fil_{new_sid()}",
            created_ms=now_ms(),
            created_at=asyncio.get_running_loop().time(),
            content_type=content_type,
            file_name=file_name,
            file_size=int(file_size),
            use_case="conversation",
            use_case_metadata=body.get("useCaseMetadata"),
        )
        self.sim.store.files[file.sid] = file
        payload = file.to_public_json(
            self._api_base(request), self.sim.options.workspace_id, with_upload_url=True
        )
        return JSONResponse({"file": payload})

    async def upload(self, request: Request) -> Response:
        """`POST /files/{sId}`: multipart with one file part named `file`, once, within the window.

        Any refusal after the window check marks the file failed (processAndStoreFile), so it can
        never be uploaded again.
        """
        file = self._file(request)
        if file.status != "created":
            raise ApiError(
                400, "invalid_request_error", "The file has already been uploaded or the upload has failed."
            )
        age = asyncio.get_running_loop().time() - file.created_at
        if age > self.sim.options.file_upload_window_seconds:
            file.status = "failed"
            raise ApiError(400, "invalid_request_error", "File upload has expired. Create a new file.")
        try:
            data = await self._read_file_part(request, file)
        except ApiError:
            file.status = "failed"
            raise
        # Hash off the event loop: uploads can be tens of megabytes.
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        file.status, file.uploaded_size, file.sha256 = "ready", len(data), digest
        if len(data) <= KEPT_UPLOAD_BYTES:
            file.data = data
            conversation = self.sim.store.conversations.get(
                (file.use_case_metadata or {}).get("conversationId", "")
            )
            if conversation is not None:
                mount(conversation, file)  # markAsReady: resolveAndSetMountFilePath
        if self.sim.options.file_upload_delay_seconds:
            # The file is ready in Dust, but the client has not heard so yet.
            await asyncio.sleep(self.sim.options.file_upload_delay_seconds)
        return JSONResponse(
            {"file": file.to_public_json(self._api_base(request), self.sim.options.workspace_id)}
        )

    async def _read_file_part(self, request: Request, file: FileRecord) -> bytes:
        """parseUploadRequest: formidable with `maxFiles: 1`, `maxFileSize: file.fileSize`, empty files
        refused, and a filter that keeps only file parts whose type is the file's (or none, or
        application/octet-stream); the accepted part must be named `file`."""
        content_type = request.headers.get("content-type", "")
        media_type = _part_type(content_type)
        if media_type in ("application/json", "application/x-www-form-urlencoded"):
            # formidable parses these as fields: no file at all.
            raise ApiError(400, "file_type_not_supported", "No file postprocessed.")
        if media_type != "multipart/form-data":
            detail = f"unknown content-type: {content_type}" if content_type else "no content-type"
            raise ApiError(
                500,
                "internal_server_error",
                f"Error uploading file : Error: bad content-type header, {detail}",
            )
        try:
            form = await request.form()
        except Exception as exc:  # the multipart parser raises several types for malformed bodies
            raise ApiError(
                500,
                "internal_server_error",
                f"Error uploading file : Error: {exc or 'malformed multipart body'}",
            ) from exc
        try:
            accepted: list[tuple[str, UploadFile]] = []
            for name, value in form.multi_items():
                if not isinstance(value, UploadFile):
                    continue  # a plain field
                part_type = _part_type(value.content_type or "")
                if part_type and part_type != "application/octet-stream" and part_type != file.content_type:
                    continue  # filtered out
                accepted.append((name, value))
            if len(accepted) > 1:
                raise ApiError(
                    500,
                    "internal_server_error",
                    "Error uploading file : Error: options.maxFiles (1) exceeded",
                )
            data = await accepted[0][1].read() if accepted else b""
        finally:
            await form.close()
        if accepted and len(data) > file.file_size:
            raise ApiError(
                400,
                "file_too_large",
                "File is too large or the size passed to the File instance in the DB does not match the "
                "size of the uploaded file.",
            )
        if accepted and not data:
            raise ApiError(400, "file_is_empty", "File is empty.")
        if not accepted or accepted[0][0] != "file":
            raise ApiError(400, "file_type_not_supported", "No file postprocessed.")
        return data

    async def delete(self, request: Request) -> Response:
        """`DELETE /files/{sId}` → 204 with no body."""
        file = self._file(request)
        del self.sim.store.files[file.sid]
        return Response(status_code=204)
