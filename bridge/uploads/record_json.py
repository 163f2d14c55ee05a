"""The upload record as clients see it: one JSON shape for the `upload_file` tool, the upload
resource and `POST /v1/uploads`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.store.records import UploadRecord


def upload_json(record: UploadRecord) -> dict[str, Any]:
    """The upload record as both the tool and the HTTP route return it."""
    body: dict[str, Any] = {
        "id": record.upload_id,
        "uri": record.uri,
        "filename": record.filename,
        "size": record.size,
        "sha256": record.sha256,
        "mime_type": record.mime,
        "scan": record.scan,
        "dust_file_id": record.dust_file_id,
        "expires_at": datetime.fromtimestamp(record.expires_at, tz=UTC).isoformat(),
    }
    for key in ("pages", "width", "height"):
        value = getattr(record, key)
        if value is not None:
            body[key] = value
    return body
