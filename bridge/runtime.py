"""The bridge's long-lived parts (Dust client, context store, services), built and closed together.

Both the HTTP app's lifespan and the stdio runner enter `start_runtime()`, so every transport
serves the same objects and nothing global outlives them.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import uvicorn
from pydantic import SecretStr

from bridge.config import ConfiguredIn, ScanMode, Settings
from bridge.desktop import scanner_help
from bridge.domain.agents import AgentDirectory
from bridge.domain.conversations import ConversationService
from bridge.dust.breaker import CircuitBreaker
from bridge.dust.client import DustClient
from bridge.mcp.internals import serve_without_signals
from bridge.observability.metrics import Metrics
from bridge.security.auth import parse_keys
from bridge.security.ratelimit import Limiter, build_limiter
from bridge.store import create_store
from bridge.store.base import ContextStore
from bridge.store.broadcast import Broadcast, LocalBroadcast, RedisBroadcast
from bridge.store.pool import PoolLimits, RedisPool
from bridge.store.sealing import Sealer
from bridge.store.timed import timed_store
from bridge.uploads.clamav import ClamdClient
from bridge.uploads.mime import MimeSniffer, allowed_types
from bridge.uploads.pipeline import UploadPipeline, UploadPolicy
from bridge.uploads.url_fetch import FetchPolicy

logger = logging.getLogger(__name__)

DEMO_WORKSPACE = "demo"
# An upload that has not finished within this long is dead; its temp file may go.
_TEMP_MAX_AGE_SECONDS = 3600.0
_SWEEP_INTERVAL_SECONDS = 600.0
DEMO_BANNER = (
    "DEMO MODE: no DUST_API_KEY is set, so the bridge talks to its bundled Dust simulator, not to Dust."
    " Set DUST_API_KEY and DUST_WORKSPACE_ID to use your workspace (BRIDGE_DEMO=off makes this an error)."
)


@dataclass
class Runtime:
    """Everything a request handler needs, alive for the lifetime of the process."""

    settings: Settings
    dust: DustClient
    store: ContextStore
    agents: AgentDirectory
    conversations: ConversationService
    uploads: UploadPipeline
    metrics: Metrics
    limiter: Limiter
    demo: bool
    dust_base_url: str
    workspace_id: str
    started_at: float
    instance_id: str
    broadcast: Broadcast

    @property
    def session_ttl_seconds(self) -> int:
        """How long a handshake-era MCP session lives unused (BRIDGE_SESSION_TTL_SECONDS)."""
        return self.settings.session_ttl_seconds

    @property
    def answer_deadline_seconds(self) -> float:
        """How long one tool call waits for an answer before it returns what it has (0: to the end)."""
        return self.settings.answer_deadline_seconds

    @property
    def upload_roots(self) -> list[str]:
        """Folders path uploads may read (BRIDGE_UPLOAD_ROOTS)."""
        return self.settings.upload_roots

    @property
    def url_fetch_policy(self) -> FetchPolicy:
        """How `upload_file(url=...)` fetches: https, public addresses only, the upload size cap."""
        return FetchPolicy.from_settings(self.settings, max_bytes=self.settings.upload_max_bytes)

    @property
    def file_read_max_bytes(self) -> int:
        """Largest generated file read back for a client."""
        return self.settings.file_read_max_bytes

    @property
    def uptime_seconds(self) -> float:
        """Seconds since start-up."""
        return time.time() - self.started_at


@contextlib.asynccontextmanager
async def _demo_simulator() -> AsyncIterator[str]:
    """Serve the bundled simulator on a free loopback port inside this process; yield its base URL."""
    # Imported here: production processes never load the simulator.
    from bridge.simulator import SimulatorOptions, create_app

    simulator = create_app(SimulatorOptions(workspace_id=DEMO_WORKSPACE))
    config = uvicorn.Config(
        simulator,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        # Not `serve`, whose signal handlers belong to the bridge's own server: stopped through
        # `should_exit` below.
        tg.start_soon(serve_without_signals, server)
        while not server.started:
            if server.should_exit:
                raise RuntimeError("the demo Dust simulator failed to start")
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        # Conversation links then carry the port the simulator really listens on.
        simulator.state.sim.configure({"public_url": base_url})
        try:
            yield base_url
        finally:
            server.should_exit = True


def _upload_pipeline(
    settings: Settings, dust: DustClient, store: ContextStore, metrics: Metrics
) -> UploadPipeline:
    scanner: ClamdClient | None = None
    if settings.scan_mode is ScanMode.REQUIRED:
        scanner = ClamdClient(
            settings.clamd_url,
            timeout=settings.scan_timeout_seconds,
            max_stream_bytes=settings.upload_max_bytes,
        )
    else:
        logger.warning(
            "BRIDGE_SCAN_MODE=off: uploads are NOT virus-scanned; every upload record says scan: skipped"
        )
    in_extension = settings.configured_in is ConfiguredIn.CLAUDE_DESKTOP_EXTENSION
    policy = UploadPolicy(
        max_bytes=settings.upload_max_bytes,
        allowed_types=allowed_types(settings.upload_allowed_types),
        scan_required=scanner is not None,
        ttl_seconds=settings.upload_ttl_seconds,
        temp_dir=Path(settings.upload_dir),
        scanner_help=scanner_help() if in_extension else "",
    )
    return UploadPipeline(policy, dust, store, scanner, MimeSniffer(), metrics)


async def _sweep_forever(uploads: UploadPipeline) -> None:
    """Remove upload temp files left behind by crashed processes: now, then every few minutes."""
    while True:
        removed = await anyio.to_thread.run_sync(uploads.sweep, _TEMP_MAX_AGE_SECONDS)
        if removed:
            logger.info("removed %d leftover upload temp file(s)", removed)
        await uploads.reconcile(_TEMP_MAX_AGE_SECONDS)
        await anyio.sleep(_SWEEP_INTERVAL_SECONDS)


@dataclass(frozen=True)
class _DustTarget:
    """Which Dust the runtime talks to: the configured workspace, or the demo's simulator."""

    base_url: str
    workspace_id: str
    api_key: SecretStr


async def _dust_target(settings: Settings, stack: contextlib.AsyncExitStack) -> _DustTarget:
    """The configured Dust, or in demo mode the bundled simulator, started on `stack`."""
    if settings.demo_active:
        logger.warning(DEMO_BANNER)
        base_url = await stack.enter_async_context(_demo_simulator())
        return _DustTarget(base_url, DEMO_WORKSPACE, SecretStr("sk-" + secrets.token_hex(16)))
    assert settings.dust_api_key is not None and settings.dust_workspace_id is not None
    return _DustTarget(settings.dust_base_url, settings.dust_workspace_id, settings.dust_api_key)


def _dust_client(settings: Settings, target: _DustTarget, metrics: Metrics) -> DustClient:
    """The Dust client, its calls and stream reconnects counted in `metrics`."""
    return DustClient(
        target.base_url,
        target.workspace_id,
        target.api_key,
        timeout=settings.dust_timeout_seconds,
        max_retries=settings.dust_max_retries,
        max_connections=settings.dust_max_connections,
        keepalive_seconds=settings.dust_keepalive_seconds,
        breaker=CircuitBreaker(
            failures=settings.breaker_failures, reset_seconds=settings.breaker_reset_seconds
        ),
        stream_max_reconnects=settings.stream_max_reconnects,
        stream_total_timeout=settings.answer_timeout_seconds,
        observer=metrics.observe_dust,
        on_reconnect=metrics.stream_reconnects.inc,
    )


def _redis_pool(settings: Settings) -> RedisPool | None:
    """The one pool of Redis connections every Redis user of the process shares (None without Redis)."""
    if not settings.redis_url:
        return None
    limits = PoolLimits(
        max_connections=settings.redis_max_connections,
        idle_seconds=settings.redis_idle_seconds,
        wait_seconds=settings.redis_pool_timeout_seconds,
    )
    return RedisPool.from_url(settings.redis_url, limits)


def _sealer(settings: Settings) -> Sealer | None:
    """What seals the store's records and the forwarded MCP messages (BRIDGE_STORE_ENCRYPTION_KEY)."""
    if not settings.store_keys:
        return None
    return Sealer(settings.store_keys, require_sealed=settings.store_require_encryption)


def _context_store(
    settings: Settings, redis: RedisPool | None, sealer: Sealer | None, metrics: Metrics
) -> ContextStore:
    """Redis or in-process, sealed when BRIDGE_STORE_ENCRYPTION_KEY is set, every operation timed."""
    store = create_store(redis, settings.context_ttl_seconds, sealer)
    return timed_store(store, metrics.observe_store)


def _broadcast(redis: RedisPool | None, sealer: Sealer | None) -> Broadcast:
    """Redis pub/sub between the processes that share the store, or this process alone."""
    return RedisBroadcast(redis, sealer) if redis is not None else LocalBroadcast()


def _limiter(settings: Settings, redis: RedisPool | None) -> Limiter:
    """Request budgets and answer slots, with the per-key limits of BRIDGE_API_KEYS."""
    keys = parse_keys(settings.api_keys)
    return build_limiter(
        settings.rate_limit,
        settings.max_concurrent_answers,
        {key.name: (key.rate, key.concurrency) for key in keys if key.rate or key.concurrency},
        redis,
        settings.concurrency_lease_seconds,
    )


@contextlib.asynccontextmanager
async def start_runtime(settings: Settings, metrics: Metrics | None = None) -> AsyncIterator[Runtime]:
    """Build the runtime (starting the demo simulator when demo mode is active) and close it on exit.

    `metrics` is the app's registry when there is an HTTP app (its middleware counts requests too).
    This is the one place that wires the parts together; each is closed in the reverse order.
    """
    metrics = metrics or Metrics()
    async with contextlib.AsyncExitStack() as stack:
        target = await _dust_target(settings, stack)
        dust = _dust_client(settings, target, metrics)
        stack.push_async_callback(dust.aclose)
        redis = _redis_pool(settings)
        if redis is not None:
            # Closed after everything that borrows from it (the exit stack unwinds in reverse).
            stack.push_async_callback(redis.aclose)
        sealer = _sealer(settings)
        store = _context_store(settings, redis, sealer, metrics)
        stack.push_async_callback(store.aclose)
        agents = AgentDirectory(dust, settings.agents_cache_seconds)
        conversations = ConversationService(dust, store, agents, settings, metrics)
        limiter = _limiter(settings, redis)
        uploads = _upload_pipeline(settings, dust, store, metrics)
        task_group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(task_group.cancel_scope.cancel)
        task_group.start_soon(_sweep_forever, uploads)
        broadcast = _broadcast(redis, sealer)
        task_group.start_soon(broadcast.run)
        task_group.start_soon(metrics.keep_sampling)
        if redis is not None:
            task_group.start_soon(redis.close_idle_forever)
        yield Runtime(
            settings=settings,
            dust=dust,
            store=store,
            agents=agents,
            conversations=conversations,
            uploads=uploads,
            metrics=metrics,
            limiter=limiter,
            demo=settings.demo_active,
            dust_base_url=target.base_url,
            workspace_id=target.workspace_id,
            started_at=time.time(),
            instance_id=secrets.token_hex(6),
            broadcast=broadcast,
        )
