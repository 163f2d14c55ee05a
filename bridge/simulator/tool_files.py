"""Files a tool generates: stored like uploaded files, copied to their conversation's file mount,
and shown as the action's output blocks and `generatedFiles`.

Mirrors dust-tt/dust: front/lib/actions/mcp_execution.ts processToolResults (the output blocks and
`generatedFiles`), front/lib/actions/mcp_utils.ts handleBase64Upload (an image block becomes a
`conversation` file), the tables_query tool with front/lib/actions/action_file_helpers.ts (a CSV the
tool makes is a `tool_output` file), and front/lib/resources/file_resource.ts (markAsReady copies a
`conversation` or `tool_output` file of a conversation to w/{wId}/conversations/{cId}/files/).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from bridge.simulator.agents import ToolFile
from bridge.simulator.ids import new_sid, now_ms
from bridge.simulator.model import Conversation, FileRecord
from bridge.simulator.state import Simulator

# INTERNAL_MIME_TYPES.TOOL_OUTPUT.FILE (SDK internal_mime_types.ts, output_schemas.ts ToolGeneratedFileSchema)
TOOL_GENERATED_FILE = "application/vnd.dust.tool-output.file"


def mount_name(conversation: Conversation, file: FileRecord) -> str:
    """resolveConversationMountPath: the file's own name, or, when another file has it already,
    disambiguateFileName's `<name>_<sId><.ext>` (front/lib/api/files/mount_path.ts)."""
    name = file.file_name
    if name not in conversation.mount:
        return name
    dot = name.rfind(".")
    if dot <= 0:
        return f"{name}_{file.sid}"
    return f"{name[:dot]}_{file.sid}{name[dot:]}"


def mount(conversation: Conversation, file: FileRecord) -> str:
    """Copy `file` to the conversation's mount (copyMountFiles); returns its path there."""
    name = mount_name(conversation, file)
    conversation.mount[name] = file.sid
    return name


def store_tool_file(sim: Simulator, conversation: Conversation, spec: ToolFile) -> FileRecord:
    """A ready file of the conversation with `spec`'s bytes, in the store and in the mount."""
    file = FileRecord(
        sid=f"fil_{new_sid()}",
        created_ms=now_ms(),
        created_at=asyncio.get_running_loop().time(),
        content_type=spec.content_type,
        file_name=spec.name,
        file_size=len(spec.data),
        use_case=spec.use_case,
        use_case_metadata={"conversationId": conversation.sid},
        status="ready",
        uploaded_size=len(spec.data),
        sha256=hashlib.sha256(spec.data).hexdigest(),
        data=spec.data,
    )
    sim.store.files[file.sid] = file
    mount(conversation, file)
    return file


def output_block(file: FileRecord, spec: ToolFile, api_base: str, workspace_id: str) -> dict[str, Any]:
    """The action's output block for a generated file (a `tool-output.file` resource).

    A file the tool made carries its public URL (file.getPublicUrl) and the tool's title (the file
    name without its extension, as tables_query titles its CSV) and snippet; an image Dust stored
    carries `file://<sId>`, its file name as title and the file's snippet (unset).
    """
    if spec.use_case == "tool_output":
        dot = file.file_name.rfind(".")
        uri = f"{api_base}/api/v1/w/{workspace_id}/files/{file.sid}"
        title, snippet = (file.file_name[:dot] if dot > 0 else file.file_name), spec.snippet
    else:
        uri, title, snippet = f"file://{file.sid}", file.file_name, None
    return {
        "type": "resource",
        "resource": {
            "mimeType": TOOL_GENERATED_FILE,
            "uri": uri,
            "fileId": file.sid,
            "title": title,
            "contentType": file.content_type,
            "snippet": snippet,
            "text": spec.text,
        },
    }


def generated_file(file: FileRecord) -> dict[str, Any]:
    """processToolResults' entry for a file: from the file itself (its name as `title`, its DB
    snippet, never set for these files); `hidden` only when the tool hid the file (never here)."""
    return {"contentType": file.content_type, "fileId": file.sid, "snippet": None, "title": file.file_name}
