"""Mask secrets in log records: Dust keys (`sk-...`), client keys (`dmb_...`), bearer tokens, URL
passwords and every configured secret.

The filter rewrites the formatted message (arguments and exception text included), so a secret
that slipped into an exception's repr is masked too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
_KEYS = re.compile(r"\b(?:sk-|dmb_)[A-Za-z0-9_-]{6,}")  # Dust API keys, the bridge's client keys
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}")
_HEADER = re.compile(r"(?i)((?:authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret shape and every given secret masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _KEYS.sub(MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the whole rendered record."""

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
