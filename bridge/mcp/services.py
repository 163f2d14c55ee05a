"""What the MCP face needs from the running bridge, named here so that it does not import the root.

`bridge.runtime.Runtime` has every attribute below and so satisfies `Services` structurally; the MCP
server is built before the runtime exists, so it is given a provider (`ServicesProvider`) that it
calls for each request once the lifespan has started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge.domain.agents import AgentDirectory
from bridge.domain.conversations import ConversationService
from bridge.observability.metrics import Metrics
from bridge.security.ratelimit import Limiter
from bridge.uploads.pipeline import UploadPipeline
from bridge.uploads.url_fetch import FetchPolicy


class Services(Protocol):
    """The long-lived parts the tools, resources and resource listing use (read-only)."""

    @property
    def agents(self) -> AgentDirectory:
        """The workspace's agents (cached listing, name/sId resolution)."""
        ...

    @property
    def conversations(self) -> ConversationService:
        """Agent turns, transcripts and conversation handles."""
        ...

    @property
    def uploads(self) -> UploadPipeline:
        """The upload pipeline and the caller's upload records."""
        ...

    @property
    def metrics(self) -> Metrics:
        """The Prometheus registry (`tool_calls` is counted here)."""
        ...

    @property
    def limiter(self) -> Limiter:
        """Per-principal budgets (`answer_slot` caps concurrent answers)."""
        ...

    @property
    def answer_deadline_seconds(self) -> float:
        """How long one tool call waits for an answer before it returns what it has (0: to the end)."""
        ...

    @property
    def upload_roots(self) -> list[str]:
        """Folders path uploads may read (BRIDGE_UPLOAD_ROOTS; the client's roots are added per call)."""
        ...

    @property
    def url_fetch_policy(self) -> FetchPolicy:
        """How URL uploads are fetched (SSRF guard, size cap, time bound)."""
        ...

    @property
    def file_read_max_bytes(self) -> int:
        """Largest generated file read back for a client (BRIDGE_FILE_READ_MAX_BYTES)."""
        ...

    @property
    def instance_id(self) -> str:
        """This process's random id: stdio is one session per process."""
        ...


ServicesProvider = Callable[[], Services]
