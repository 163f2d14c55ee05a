"""Logging (to stderr: stdout belongs to the stdio transport; secrets masked) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from bridge.config import Settings
from bridge.security.redact import RedactingFilter


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold, for the redaction filter."""
    secrets = [settings.dust_api_key.get_secret_value()] if settings.dust_api_key else []
    secrets += settings.store_keys
    if settings.metrics_key:
        secrets.append(settings.metrics_key.get_secret_value())
    if settings.redis_url:
        password = urlsplit(settings.redis_url).password
        if password:
            secrets.append(password)
    return secrets


def configure_logging(settings: Settings) -> None:
    """One stderr handler with the redaction filter, at `BRIDGE_LOG_LEVEL`."""
    secrets = configured_secrets(settings)
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


class Metrics:
    """The bridge's Prometheus metrics, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter(
            "bridge_uploads_total",
            "Uploads by outcome (accepted or the problem type) and MIME type",
            ["outcome", "mime"],
            registry=self.registry,
        )
        self.scanned_bytes = Counter(
            "bridge_scanned_bytes_total", "Bytes sent to the virus scanner", registry=self.registry
        )
        self.scan_seconds = Histogram(
            "bridge_scan_duration_seconds",
            "Time to scan one upload with clamd",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
