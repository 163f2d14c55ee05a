"""Files an agent made (charts, CSVs, reports): read from its actions' `generatedFiles`.

Dust lists them on each action (`AgentAction.generatedFiles`: fileId, title, contentType,
snippet, hidden); hidden ones are the agent's own scratch files and are not shown, as Dust's own
clients do. A file is read back through Dust's file route; the bridge lets only the principal
whose conversation produced it read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.dust.client import DustClient
from bridge.dust.errors import DustFileNotDownloadable, DustNotFound
from bridge.dust.models import AgentMessage, DownloadedFile
from bridge.errors import NotFound
from bridge.store.records import ConversationRecord


class FileNotFound(NotFound):
    """Not a file an agent made in one of the caller's conversations."""

    code = "file_not_found"


class FileNotServed(NotFound):
    """Dust will not serve the file to the bridge's key."""

    code = "file_not_served"


@dataclass(frozen=True)
class GeneratedFile:
    file_id: str
    title: str
    content_type: str
    snippet: str | None = None

    @property
    def uri(self) -> str:
        """The MCP resource that reads it."""
        return f"dust://files/{self.file_id}"

    def as_dict(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "name": self.title, "type": self.content_type, "uri": self.uri}


def generated_files(actions: Iterable[Any]) -> list[GeneratedFile]:
    """The visible files the actions generated, in order, each once."""
    found: dict[str, GeneratedFile] = {}
    for action in actions:
        listed = action.get("generatedFiles") if isinstance(action, dict) else None
        for item in listed if isinstance(listed, list) else []:
            made = _generated(item)
            if made is not None:
                found.setdefault(made.file_id, made)
    return list(found.values())


def _generated(item: Any) -> GeneratedFile | None:
    if not isinstance(item, dict) or item.get("hidden") is True:
        return None
    file_id = item.get("fileId")
    if not isinstance(file_id, str) or not file_id:
        return None  # a path-only file of the conversation's file system
    snippet = item.get("snippet")
    return GeneratedFile(
        file_id=file_id,
        title=str(item.get("title") or file_id),
        content_type=str(item.get("contentType") or "application/octet-stream"),
        snippet=snippet if isinstance(snippet, str) else None,
    )


async def download_generated(
    dust: DustClient, record: ConversationRecord, file_id: str, max_bytes: int
) -> DownloadedFile:
    """The bytes of a generated file: by its id where Dust serves it to an API key (use case
    `conversation`), else from the conversation's file system under its name (a file a tool made
    itself is `tool_output`, refused by id: front-api/routes/v1/w/[wId]/files/[fileId].ts).

    Raises:
        FileNotServed: neither route serves it.
        BridgeError: too large, or a Dust failure.
    """
    try:
        return await dust.download_file(file_id, max_bytes=max_bytes)
    except DustFileNotDownloadable:
        pass
    title = await _title_of(dust, record, file_id)
    try:
        return await dust.download_conversation_file(
            record.dust_conversation_id, f"conversation/{title}", max_bytes=max_bytes
        )
    except (DustNotFound, DustFileNotDownloadable, ValueError):
        where = record.url or f"Dust conversation {record.dust_conversation_id}"
        raise FileNotServed(
            f"Dust does not serve {title!r} to the bridge's API key; open it in Dust: {where}"
        ) from None


async def _title_of(dust: DustClient, record: ConversationRecord, file_id: str) -> str:
    conversation = await dust.get_conversation(record.dust_conversation_id)
    messages = [item for item in conversation.current_messages() if isinstance(item, AgentMessage)]
    for message in messages:
        for action in message.actions:
            for made in action.generated_files:
                if made.file_id == file_id:
                    return made.title or file_id
    return file_id
