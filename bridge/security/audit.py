"""The audit log: one JSON object per security-relevant event, on its own logger (`bridge.audit`),
so operators can route it separately from the application log."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

AUDIT_LOGGER = "bridge.audit"
_logger = logging.getLogger(AUDIT_LOGGER)


def audit_event(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Record `event` (e.g. `auth_failure`, `tool_call`, `upload`, `limit_hit`) with its fields."""
    if _logger.isEnabledFor(level):
        record = {"ts": round(time.time(), 3), "event": event, **fields}
        _logger.log(level, json.dumps(record, default=str, sort_keys=True))
