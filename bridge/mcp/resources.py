"""The bridge's resources: an upload's record, an agent's card, a conversation's transcript, a file
an agent made.

All are resource templates; `resources/list` shows the concrete ones the caller may read
(`listed_resources`: their conversations and uploads, the workspace's agents). Every read runs in
`bridge_resource`, the resources' one translation of a `BridgeError` (as `bridge_tool` is the tools').
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import BlobResourceContents, ReadResourceResult, Resource, TextResourceContents

from bridge.dust.errors import DustError
from bridge.dust.models import DownloadedFile
from bridge.errors import BridgeError, NotFound
from bridge.mcp.caller import principal_of
from bridge.mcp.services import Services, ServicesProvider
from bridge.uploads.record_json import upload_json

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def bridge_resource(read: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """Run a resource read so that a `BridgeError` reaches the client as the SDK's `ResourceError`
    with the error's `for_user()` text: the MCP face's one translation for resources."""

    @functools.wraps(read)
    async def read_translated(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await read(*args, **kwargs)
        except BridgeError as exc:
            raise ResourceError(exc.for_user()) from None

    return read_translated


def register_resources(mcp: MCPServer[Any], services: ServicesProvider) -> None:
    """Register the resource templates on `mcp`."""

    @mcp.resource(
        "bridge://uploads/{upload_id}",
        name="upload",
        title="Uploaded file",
        description="An uploaded file's metadata: name, size, sha256, type, scan verdict, Dust file id",
        mime_type="application/json",
    )
    async def upload_resource(upload_id: str, ctx: Context) -> str:
        return await upload_record(services(), principal_of(ctx), upload_id)

    @mcp.resource(
        "dust://agents/{s_id}",
        name="agent-card",
        title="Dust agent card",
        description="An agent's card: sId, name, description, scope",
        mime_type="application/json",
    )
    async def agent_card(s_id: str) -> str:
        return await agent_card_json(services(), s_id)

    @mcp.resource(
        "dust://files/{file_id}",
        name="generated-file",
        title="A file an agent made",
        description="A file an agent generated in one of your conversations (chart, CSV, report)",
        mime_type="application/octet-stream",
    )
    async def generated_file(file_id: str, ctx: Context) -> bytes:
        # resources/read itself goes through `generated_file_contents` (BridgeMCPServer), which
        # gives each file its own type; this serves in-process reads of the template.
        return (await generated_file_bytes(services(), principal_of(ctx), file_id)).data

    @mcp.resource(
        "dust://conversations/{handle}",
        name="conversation",
        title="Conversation transcript",
        description="The transcript of one of your conversations",
        mime_type="application/json",
    )
    async def conversation_resource(handle: str, ctx: Context) -> str:
        return await transcript_json(services(), principal_of(ctx), handle)


@bridge_resource
async def upload_record(services: Services, principal: str, upload_id: str) -> str:
    """`bridge://uploads/{upload_id}`: the record of one of the caller's uploads."""
    record = await services.uploads.get(principal, upload_id)
    if record is None:
        raise NotFound(f"unknown or expired upload {upload_id}", code="upload_not_found")
    return json.dumps(upload_json(record))


FILE_URI_PREFIX = "dust://files/"


@bridge_resource
async def generated_file_bytes(services: Services, principal: str, file_id: str) -> DownloadedFile:
    """The bytes of a file an agent made in one of the caller's conversations."""
    return await services.conversations.read_file(principal, file_id, services.file_read_max_bytes)


async def generated_file_contents(services: Services, principal: str, uri: str) -> ReadResourceResult:
    """`dust://files/{file_id}` with the file's own type: text for text, else base64."""
    downloaded = await generated_file_bytes(services, principal, uri.removeprefix(FILE_URI_PREFIX))
    mime = downloaded.content_type or "application/octet-stream"
    if mime.startswith("text/") or mime in _TEXT_TYPES:
        try:
            text = downloaded.data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return ReadResourceResult(contents=[TextResourceContents(uri=uri, mime_type=mime, text=text)])
    blob = base64.b64encode(downloaded.data).decode("ascii")
    return ReadResourceResult(contents=[BlobResourceContents(uri=uri, mime_type=mime, blob=blob)])


_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/x-yaml", "application/yaml"})


@bridge_resource
async def agent_card_json(services: Services, s_id: str) -> str:
    """`dust://agents/{s_id}`: an agent's card."""
    agent = await services.agents.resolve(s_id)
    return json.dumps(
        {
            "sId": agent.s_id,
            "name": agent.name,
            "description": agent.description,
            "scope": agent.scope,
            "status": agent.status,
            "pictureUrl": agent.picture_url,
        }
    )


@bridge_resource
async def transcript_json(services: Services, principal: str, handle: str) -> str:
    """`dust://conversations/{handle}`: the transcript of one of the caller's conversations."""
    transcript = await services.conversations.transcript(principal, handle)
    return json.dumps(transcript.as_dict())


async def listed_resources(services: Services, principal: str) -> list[Resource]:
    """The caller's conversations and uploads, then the workspace's agents, as `resources/list`
    shows them; a part that cannot be listed now is left out (and logged)."""
    return [
        *await _conversations(services, principal),
        *await _uploads(services, principal),
        *await _agents(services),
    ]


async def _conversations(services: Services, principal: str) -> list[Resource]:
    try:
        records = await services.conversations.list_conversations(principal)
    except BridgeError as exc:
        logger.warning("conversation listing unavailable: %s", exc)
        return []
    return [
        Resource(
            uri=f"dust://conversations/{record.handle}",
            name=f"conversation-{record.handle[-8:]}",
            title=f"Conversation with {record.agent_name} ({record.turns} turn(s))",
            mime_type="application/json",
        )
        for record in records
    ]


async def _uploads(services: Services, principal: str) -> list[Resource]:
    try:
        uploads = await services.uploads.list(principal)
    except BridgeError as exc:
        logger.warning("upload listing unavailable: %s", exc)
        return []
    return [
        Resource(
            uri=upload.uri,
            name=f"upload-{upload.upload_id[-8:]}",
            title=upload.filename,
            description=f"{upload.mime}, {upload.size} bytes, scan {upload.scan}",
            mime_type="application/json",
        )
        for upload in uploads
    ]


async def _agents(services: Services) -> list[Resource]:
    try:
        agents = await services.agents.list()
    except DustError as exc:
        logger.warning("agent listing unavailable: %s", exc.message)
        return []
    return [
        Resource(
            uri=f"dust://agents/{agent.s_id}",
            name=f"agent-{agent.s_id}",
            title=f"Agent {agent.name}",
            description=agent.description,
            mime_type="application/json",
        )
        for agent in agents
    ]
