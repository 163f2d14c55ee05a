"""Simulator settings: the knobs tests and demos turn, at start-up or live through `/_sim/faults`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from pydantic import TypeAdapter

# The role of the API key the clients use. Dust stores a role on every key (`KeyModel.role`,
# default "builder", in front/lib/resources/storage/models/keys.ts); admin keys unlock e.g. the
# `all_unrestricted` agent view and unpublished agents.
ApiKeyRole = Literal["admin", "builder", "user"]


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulated Dust workspace behaves. Every field can be changed at runtime."""

    workspace_id: str = "demo"
    # None accepts any well-formed `Bearer sk-...` key; a value accepts only that key.
    api_key: str | None = None
    api_key_role: ApiKeyRole = "builder"
    # Base of the web-app links (`conversation.url`); upload URLs use the request's own base URL.
    public_url: str = "http://127.0.0.1"
    # Base of the signed download URLs (Dust's are https://storage.googleapis.com); None serves them
    # from `/_storage` on the request's own base URL. Another host name of this simulator (localhost
    # for 127.0.0.1, say) makes them another origin, as in production.
    storage_url: str | None = None
    redirect_sse: bool = True
    handshake: bool = True
    events_per_connection: int = 50
    connection_lifetime_seconds: float = 60.0
    token_delay_ms: float = 15.0
    chunk_chars: int = 4
    slow_seconds: float = 3.0
    # How long the long-runner agent works (12 steps of max(1, long_seconds / 12) seconds each).
    long_seconds: float = 180.0
    cancel_keeps_open: bool = True
    file_upload_window_seconds: float = 120.0
    # Seconds an accepted upload waits before its answer: a slow Dust (the bytes are already stored).
    file_upload_delay_seconds: float = 0.0
    files_per_minute: int = 40
    error_rate: float = 0.0
    seed: int | None = None
    down: bool = False
    cut_stream_after: int | None = None

    def __post_init__(self) -> None:
        # Reject values that would make the simulator hang or divide by nothing, at the door.
        if self.events_per_connection < 1:
            raise ValueError("events_per_connection must be at least 1")
        if self.chunk_chars < 1:
            raise ValueError("chunk_chars must be at least 1")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.cut_stream_after is not None and self.cut_stream_after < 1:
            raise ValueError("cut_stream_after must be at least 1")
        for name in (
            "token_delay_ms",
            "slow_seconds",
            "long_seconds",
            "connection_lifetime_seconds",
            "file_upload_window_seconds",
            "file_upload_delay_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        if self.files_per_minute < 0:
            raise ValueError("files_per_minute must be 0 or more")

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dict."""
        return asdict(self)


OPTION_NAMES = frozenset(f.name for f in fields(SimulatorOptions))
_ADAPTER = TypeAdapter(SimulatorOptions)


def merge_options(base: SimulatorOptions, patch: Mapping[str, object]) -> SimulatorOptions:
    """`base` with the fields in `patch` replaced, validated; raises ValueError on unknown or bad fields."""
    unknown = sorted(set(patch) - OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(unknown)}")
    return _ADAPTER.validate_python({**asdict(base), **patch})
