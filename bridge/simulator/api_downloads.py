"""Downloads: a file by sId, a conversation's file by path, and the signed storage URLs.

Mirrors dust-tt/dust: front-api/routes/v1/w/[wId]/files/[fileId].ts (GET, `action=view|download`,
`version=original|processed`), front-api/routes/v1/w/[wId]/assistant/conversations/[cId]/files/
[...rel].ts (a file of the conversation's mount), FileResource.getSignedUrlForDownload
(front/lib/resources/file_resource.ts: 30 seconds, `promptSaveAs` the file name) and
front/lib/api/files/mount_path.ts parseScopedFilePath. The signed URLs stand in for Google Cloud
Storage's (V4 query parameters, XML errors); the simulator has one version of each file, so
`version=processed` serves the original's bytes (Dust's processed version is a resized image or
extracted text).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.api_files import readable_file
from bridge.simulator.errors import ApiError
from bridge.simulator.file_formats import is_safe_to_display
from bridge.simulator.model import FileRecord
from bridge.simulator.state import Simulator

FILE = "/api/v1/w/{wId}/files/{fileId}"
CONVERSATION_FILE = "/api/v1/w/{wId}/assistant/conversations/{cId}/files/{rel:path}"
STORAGE = "/_storage"
BUCKET = "dust-private-uploads"
SIGNED_URL_SECONDS = 30
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_SIGNATURE = "X-Goog-Signature"
_BAD_SCOPE = "Invalid file path: must be a conversation-scoped path (e.g. `conversation/foo.pdf`)."


def js_normalize(path: str) -> str:
    """Node's path.posix.normalize: `.` and `..` resolved, slashes collapsed, a trailing slash
    kept, `.` for an empty result."""
    absolute, trailing = path.startswith("/"), path.endswith("/")
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment != "..":
            parts.append(segment)
        elif parts and parts[-1] != "..":
            parts.pop()
        elif not absolute:
            parts.append("..")
    joined = "/".join(parts)
    if not joined and not absolute:
        joined = "."
    if joined and trailing:
        joined += "/"
    return ("/" if absolute else "") + joined


def _first(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    return values[0] if values else None


def _storage_error(status: int, code: str, message: str, details: str) -> Response:
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message><Details>{details}</Details></Error>"
    )
    return Response(body, status_code=status, headers={"content-type": "application/xml; charset=UTF-8"})


class DownloadRoutes:
    """Handlers bound to one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes."""
        return [
            Route(FILE, self.file, methods=["GET"]),
            Route(CONVERSATION_FILE, self.conversation_file, methods=["GET"]),
            Route(STORAGE + "/{bucket}/{name:path}", self.storage, methods=["GET"]),
        ]

    async def file(self, request: Request) -> Response:
        """`GET /files/{fileId}`: the bytes (`view`, only for a type safe to display) or a 302 to a
        signed storage URL (`download`, and any other or missing action)."""
        file = readable_file(self.sim, request.path_params["fileId"])
        action = _first(request, "action")
        if action not in ("view", "download") or (
            action == "view" and not is_safe_to_display(file.content_type)
        ):
            action = "download"  # getSecureFileAction
        version = _first(request, "version")
        version = version if version in ("original", "processed") else "original"
        if action == "download":
            return RedirectResponse(self._signed_url(request, file, version), status_code=302)
        if file.data is None:
            # The object was never stored (a slot never uploaded, an upload too big to keep).
            raise ApiError(500, "internal_server_error", "The file's content could not be read.")
        return Response(file.data, headers={"content-type": file.content_type})

    def _signed_url(self, request: Request, file: FileRecord, version: str) -> str:
        base = self.sim.options.storage_url or str(request.base_url).rstrip("/") + STORAGE
        path = f"/{BUCKET}/files/w/{self.sim.options.workspace_id}/{file.sid}/{version}"
        params = {
            "X-Goog-Algorithm": "GOOG4-HMAC-SHA256",
            "X-Goog-Date": time.strftime(_DATE_FORMAT, time.gmtime()),
            "X-Goog-Expires": str(SIGNED_URL_SECONDS),
            # promptSaveAs: the storage answers with this Content-Disposition.
            "response-content-disposition": f'attachment; filename="{file.file_name}"',
        }
        query = urlencode(sorted(params.items()), quote_via=quote)
        return f"{base.rstrip('/')}{path}?{query}&{_SIGNATURE}={self._sign(path, query)}"

    def _sign(self, path: str, query: str) -> str:
        return hmac.new(self.sim.signing_key, f"{path}?{query}".encode(), hashlib.sha256).hexdigest()

    async def storage(self, request: Request) -> Response:
        """A signed storage URL: the object's bytes with its content type and the disposition the
        URL asks for, unless the signature is wrong (403) or expired (400)."""
        response = self._stored_object(request)
        self.sim.stats.storage_requests.append(
            {
                "path": request.url.path,
                "status": response.status_code,
                "authorization": "authorization" in request.headers,
            }
        )
        return response

    def _stored_object(self, request: Request) -> Response:
        bucket, name = request.path_params["bucket"], request.path_params["name"]
        path = f"/{bucket}/{name}"
        params = sorted((k, v) for k, v in request.query_params.multi_items() if k != _SIGNATURE)
        signature = request.query_params.get(_SIGNATURE, "")
        if not hmac.compare_digest(signature, self._sign(path, urlencode(params, quote_via=quote))):
            return _storage_error(
                403,
                "SignatureDoesNotMatch",
                "Access denied.",
                "The request signature we calculated does not match the signature you provided.",
            )
        query = dict(params)
        signed_at = calendar.timegm(time.strptime(query["X-Goog-Date"], _DATE_FORMAT))
        if time.time() > signed_at + int(query["X-Goog-Expires"]):
            return _storage_error(400, "ExpiredToken", "Invalid argument.", "The provided token has expired.")
        file = self._object(name)
        if file is None or file.data is None:
            return _storage_error(
                404, "NoSuchKey", "The specified key does not exist.", f"No such object: {path[1:]}"
            )
        headers = {"content-type": file.content_type}
        if "response-content-disposition" in query:
            headers["content-disposition"] = query["response-content-disposition"]
        return Response(file.data, headers=headers)

    def _object(self, name: str) -> FileRecord | None:
        # files/w/{wId}/{sId}/{version} (FileResource.getCloudStoragePathForId)
        parts = name.split("/")
        if len(parts) != 5 or parts[:2] != ["files", "w"] or parts[2] != self.sim.options.workspace_id:
            return None
        return self.sim.store.files.get(parts[3])

    async def conversation_file(self, request: Request) -> Response:
        """`GET .../conversations/{cId}/files/conversation/<path>`: a file of the conversation's
        mount, streamed with the stored object's content type."""
        rel = request.path_params["rel"]
        if not rel:
            raise HTTPException(404, "Not Found")  # the route is `/:rel{.+}`
        conversation = self.sim.store.conversations.get(request.path_params["cId"])
        if conversation is None:
            raise ApiError(404, "conversation_not_found", "Conversation not found.")
        # parseScopedFilePath: `<scope>/<rest>`, the scope one of conversation or project; only
        # conversation is accepted here.
        scope, slash, relative = rel.partition("/")
        if not slash or scope != "conversation":
            raise ApiError(400, "invalid_request_error", _BAD_SCOPE)
        normalized = js_normalize(relative)
        if normalized.startswith(("..", "/")):
            raise ApiError(403, "workspace_auth_error", "Access denied: path is outside conversation scope.")
        file = self.sim.store.files.get(conversation.mount.get(normalized, ""))
        if file is None or file.data is None:
            raise ApiError(404, "file_not_found", "File not found.")
        return Response(file.data, headers={"content-type": file.content_type or "application/octet-stream"})
