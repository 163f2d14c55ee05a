"""Logging set-up: everything to stderr (stdout belongs to the stdio transport), secrets masked."""

from __future__ import annotations

import logging
import sys

from bridge.config import Settings
from bridge.security.redact import RedactingFilter


def configure_logging(settings: Settings) -> None:
    """One stderr handler with the redaction filter, at `BRIDGE_LOG_LEVEL`."""
    secrets = [settings.dust_api_key.get_secret_value()] if settings.dust_api_key else []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # uvicorn and the SDK install their own handlers; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mcp"):
        named = logging.getLogger(name)
        named.handlers = []
        named.propagate = True
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpcore2").setLevel(max(logging.WARNING, root.level))
