"""Logging: one stderr handler (stdout belongs to the stdio transport), text or JSON lines, every
line masked by `redact` and stamped with the request id and principal it was logged for."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Literal

from bridge.observability.context import PRINCIPAL, REQUEST_ID
from bridge.observability.redact import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
# Loggers that install handlers of their own (uvicorn, the MCP SDK): routed through ours instead.
_ADOPTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "mcp")


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the whole rendered record (arguments, exception text
    and reprs included), so a secret that slipped into an exception's repr is masked too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the record once, mask it, and freeze the result into the record."""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            message = f"{message}\n{record.stack_info}"
            record.stack_info = None
        record.msg = redact(message, self._secrets)
        record.args = None
        return True


class ContextFilter(logging.Filter):
    """Stamp each record with the request id and principal of the request it was logged for."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach `request_id`, `principal` and a ready-made `context` suffix for the text format."""
        request_id, principal = REQUEST_ID.get(), PRINCIPAL.get()
        # LogRecord takes extra attributes by design (what `extra=` does); setattr says so to mypy.
        setattr(record, "request_id", request_id)  # noqa: B010
        setattr(record, "principal", principal)  # noqa: B010
        parts = [
            f"{key}={value}" for key, value in (("request", request_id), ("principal", principal)) if value
        ]
        setattr(record, "context", f" [{' '.join(parts)}]" if parts else "")  # noqa: B010
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; audit events (already JSON) are merged in, not quoted."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON with time, level, logger, message, request id and principal."""
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.getMessage()
        if record.name == "bridge.audit" and message.startswith("{"):
            try:
                entry.update(json.loads(message))
            except ValueError:
                entry["message"] = message
        else:
            entry["message"] = message
        for key in ("request_id", "principal"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        return json.dumps(entry, default=str)


def configure_logging(
    level: str, log_format: Literal["text", "json"] = "text", secrets: Iterable[str] = ()
) -> None:
    """Send every log line to one stderr handler at `level`, as text or JSON, masking `secrets`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    # Redaction first: the formatter then only ever sees masked text.
    handler.addFilter(RedactingFilter(secrets))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _ADOPTED_LOGGERS:
        named = logging.getLogger(name)
        named.handlers = []
        named.propagate = True
        # The root's level rules: a server started earlier in this process may have set its own.
        named.setLevel(logging.NOTSET)
