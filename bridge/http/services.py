"""What the HTTP routes use of the running bridge, as protocols.

bridge/app.py hands the routes a provider of the runtime (bridge/runtime.py), which has these and
more; the routes see only what they read, and the http layer needs nothing from the root.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Protocol

from bridge.observability.metrics import Metrics
from bridge.store.records import UploadRecord


class Store(Protocol):
    """The context store: its kind for /status, a ping for /readyz."""

    @property
    def kind(self) -> str:
        """ "redis" or "memory"."""
        ...

    async def ping(self) -> None:
        """Return if the back end answers; raise StoreUnavailable otherwise."""
        ...


class Dust(Protocol):
    """The Dust client: its circuit for /status, a probe for /readyz."""

    @property
    def breaker_state(self) -> str:
        """The circuit breaker's state: "closed", "open" or "half_open"."""
        ...

    async def probe(self) -> None:
        """A readiness check; raises DustError on any failure."""
        ...


class Uploads(Protocol):
    """The upload pipeline: `POST /v1/uploads`, the scanner's state for /readyz and /status."""

    @property
    def scan_required(self) -> bool:
        """False only when BRIDGE_SCAN_MODE=off."""
        ...

    @property
    def in_flight(self) -> int:
        """Uploads being processed right now."""
        ...

    async def ping_scanner(self) -> None:
        """Return if clamd answers; raise ScannerUnavailable otherwise."""
        ...

    async def ingest(
        self, *, owner: str, filename: str, declared_type: str | None, chunks: AsyncIterable[bytes]
    ) -> UploadRecord:
        """Run one upload from a stream of chunks to a stored record (raises BridgeError)."""
        ...


class Conversations(Protocol):
    """The conversation service: how many answers stream right now."""

    @property
    def active_streams(self) -> int:
        """Answers streaming from Dust right now."""
        ...


class Services(Protocol):
    """The running bridge, as far as the HTTP routes read it."""

    @property
    def store(self) -> Store:
        """The context store."""
        ...

    @property
    def dust(self) -> Dust:
        """The Dust client."""
        ...

    @property
    def uploads(self) -> Uploads:
        """The upload pipeline."""
        ...

    @property
    def conversations(self) -> Conversations:
        """The conversation service."""
        ...

    @property
    def metrics(self) -> Metrics:
        """The Prometheus registry."""
        ...

    @property
    def demo(self) -> bool:
        """Whether the bridge talks to its bundled Dust simulator."""
        ...

    @property
    def dust_base_url(self) -> str:
        """Where Dust is."""
        ...

    @property
    def workspace_id(self) -> str:
        """The Dust workspace."""
        ...

    @property
    def uptime_seconds(self) -> float:
        """Seconds since start-up."""
        ...
