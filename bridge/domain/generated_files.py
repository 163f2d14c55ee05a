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
