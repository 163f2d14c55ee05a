"""Where a file given to the bridge comes from: the model's base64, the user's disk, or a URL.

A URL is fetched by the bridge with its SSRF guard (https only by default, public addresses only,
every redirect checked, size and time bounded), on any transport.

A path is read only when the bridge runs on the user's own machine (stdio), from the folders the
user allowed: `BRIDGE_UPLOAD_ROOTS` plus the roots the client shares (`roots/list` mid-call in the
handshake era; in the 2026-07-28 era, which has no back channel, an `InputRequiredResult` asking for
them, answered in the client's retry of the call).
Over HTTP the server's disk is not the user's, so paths are refused there.
"""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import InputRequiredResult, ListRootsRequest, ListRootsResult, Root

from bridge.mcp.calls import AskClient, ToolCall
from bridge.mcp.pauses import is_modern
from bridge.store.records import UploadRecord
from bridge.uploads.local_files import PathNotAllowed, allowed_file, path_of_file_uri
from bridge.uploads.url_fetch import fetch_url

HTTP_PATHS_OFF = (
    "path uploads work only when the bridge runs on your own machine (stdio): over HTTP the server's"
    " disk is not yours. Pass url=... for a file on the web, or upload with POST /v1/uploads."
)


def on_users_machine(ctx: Context) -> bool:
    """stdio: the bridge was started by the user's client, on the user's machine."""
    return ctx.request_context.request is None


ROOTS_INPUT = "roots"


async def client_roots(ctx: Context) -> list[str]:
    """The folders the client shares (file:// roots), where it declares the capability."""
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.roots is None:
        return []
    if is_modern(ctx):
        answer = (ctx.input_responses or {}).get(ROOTS_INPUT)
        if answer is None:
            raise AskClient(InputRequiredResult(input_requests={ROOTS_INPUT: ListRootsRequest()}))
        return _local_paths(answer.roots) if isinstance(answer, ListRootsResult) else []
    try:
        listed = await ctx.session.list_roots()
    except MCPError:
        return []
    return _local_paths(listed.roots)


def _local_paths(roots: list[Root]) -> list[str]:
    paths = (path_of_file_uri(str(root.uri)) for root in roots)
    return [path for path in paths if path is not None]


async def upload_path(call: ToolCall, path: str) -> UploadRecord:
    """Upload a file from the user's disk through the pipeline.

    Raises:
        PathNotAllowed, FileUnreadable: see bridge.uploads.local_files.
        BridgeError: any refusal of the pipeline.
    """
    if not on_users_machine(call.ctx):
        raise PathNotAllowed(HTTP_PATHS_OFF)
    roots = [*call.services.upload_roots, *await client_roots(call.ctx)]
    async with allowed_file(path, roots) as local:
        return await call.services.uploads.ingest(
            owner=call.principal, filename=local.name, declared_type=None, chunks=local.chunks()
        )


async def upload_url(call: ToolCall, url: str) -> UploadRecord:
    """Fetch a file from the web (SSRF-guarded: bridge.uploads.url_fetch) through the pipeline.

    Raises:
        BridgeError: the URL is refused or fails, or the pipeline refuses the file.
    """
    async with fetch_url(url, call.services.url_fetch_policy) as (fetched, chunks):
        return await call.services.uploads.ingest(
            owner=call.principal, filename=fetched.filename, declared_type=fetched.content_type, chunks=chunks
        )


def is_url(reference: str) -> bool:
    """A reference to a file on the web."""
    return reference.lower().startswith(("https://", "http://"))


def is_path(reference: str) -> bool:
    """A reference to a file on disk rather than an upload id or URI."""
    return reference.startswith(("/", "~", "file://")) or (
        len(reference) > 2 and reference[1:3] in (":\\", ":/")
    )


async def resolve_files(call: ToolCall, references: list[str] | None) -> list[str] | None:
    """ask_agent's `files`, each path or URL uploaded first (the upload id takes its place)."""
    if not references:
        return references
    resolved = []
    for reference in references:
        reference = reference.strip()
        if is_path(reference):
            reference = (await upload_path(call, reference)).upload_id
        elif is_url(reference):
            reference = (await upload_url(call, reference)).upload_id
        resolved.append(reference)
    return resolved
