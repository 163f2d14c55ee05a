"""`serve --workers N`: how many worker processes, and serving with them under uvicorn's supervisor.

The supervisor binds the port once (bridge.cli), then starts N workers, each listening on that port
(`PerWorkerListener`); each builds its own app from the environment the supervisor hands down
(`app_from_environment`, an import string, since the workers are new interpreters), as the single
process would. SIGTERM to the supervisor reaches every worker, which drains its answers for
BRIDGE_SHUTDOWN_GRACE_SECONDS.

Workers share nothing in memory, so what must be shared lives in Redis: more than one needs
REDIS_URL, and demo mode (the bundled simulator lives inside the process) always runs one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from bridge.cli import configure_bridge_logging, freeze_startup_objects
from bridge.config import ConfigError, Settings, find_env_file, load_settings
from bridge.observability.metrics import SHARED_DIR_VARIABLE

logger = logging.getLogger(__name__)

APP_FACTORY = "bridge.workers:app_from_environment"
_WORKER_HEALTHCHECK_SECONDS = 15
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# Linux spreads a port's new connections over the sockets listening on it with SO_REUSEPORT; other
# systems do not balance that way (or lack the option), and their workers share one socket.
SPREAD_BY_KERNEL: Final = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers `serve` runs, and why not what was asked, when it is not."""

    count: int
    note: str | None = None


def resolve_workers(
    requested: int | None, *, shared_store: bool, demo: bool, cores: int | None = None
) -> WorkerPlan:
    """The worker count for BRIDGE_WORKERS or `--workers` (`requested`, None: automatic).

    Automatic is one per core the process may use (`cores`, else `available_cores()`) with Redis,
    else one. Demo mode always runs one.

    Raises:
        ConfigError: more than one was asked for without Redis.
    """
    if demo:
        if requested is not None and requested > 1:
            return WorkerPlan(
                1, f"demo mode runs 1 worker, not {requested}: the bundled Dust simulator lives in it"
            )
        return WorkerPlan(1)
    if requested is None:
        return WorkerPlan((cores or available_cores()) if shared_store else 1)
    if requested > 1 and not shared_store:
        raise ConfigError(
            f"{requested} workers need REDIS_URL, where they share sessions, conversations and limits:"
            " set REDIS_URL, or use --workers 1"
        )
    return WorkerPlan(requested)


def available_cores() -> int:
    """The cores this process may use: its CPU affinity (else every core), capped by its cgroup's CPU
    quota, at least 1. A container's CPU limit is such a quota, not an affinity: without the cap a
    pod limited to one CPU would start a worker per core of its node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(cores, 1)


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT, membership: str | None = None) -> float | None:
    """The CPUs the cgroup quotas over this process allow (1.5: one and a half), None when there is
    none: cgroup v2's cpu.max, or v1's cpu.cfs_quota_us, in the process's cgroup and those above it.

    `membership` is /proc/self/cgroup's text (read when None).
    """
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text(encoding="ascii")
        except OSError:
            return None
    limits = [limit for directory in _cgroup_dirs(root, membership) if (limit := _quota(directory))]
    return min(limits, default=None)


def _cgroup_dirs(root: Path, membership: str) -> Iterator[Path]:
    """The directories of the process's CPU cgroups, innermost first, up to the hierarchy's root. In
    a container the path named may not exist there (its own cgroup is the root it sees): the
    directories above it are still read."""
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            base = root  # v2: one hierarchy
        elif "cpu" in controllers.split(","):
            base = root / "cpu"  # v1: the cpu controller's own hierarchy
        else:
            continue
        directory = base / path.strip().lstrip("/")
        yield directory
        yield from (parent for parent in directory.parents if parent.is_relative_to(base))


def _quota(directory: Path) -> float | None:
    """The CPUs one cgroup's quota allows, None when it sets none (or cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (directory / "cpu.max").read_text(encoding="ascii").split()
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        v1_quota = int((directory / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        v1_period = int((directory / "cpu.cfs_period_us").read_text(encoding="ascii"))
        return None if v1_quota <= 0 else v1_quota / v1_period
    return None


def serve_workers(
    settings: Settings, listener: socket.socket, count: int, handed_down: Mapping[str, str]
) -> int:
    """Serve on `listener` with `count` worker processes until SIGTERM or SIGINT; the exit status (3,
    as uvicorn's own, when a worker could not start: the supervisor then stops them all).

    `handed_down` are the settings the command line changed (host, port, demo, workers): they reach
    the workers through the environment, as everything else does.
    """
    os.environ.update(handed_down)
    with _shared_metrics_dir():
        config = WorkerConfig(
            APP_FACTORY,
            factory=True,
            workers=count,
            # A new worker answers the supervisor's pings only once it has read its settings (which
            # imports most of the bridge, a second of CPU), and one that replaces another (SIGHUP)
            # must be serving within this long: uvicorn's 5 s is tight for a throttled container,
            # whose supervisor would then kill and start its workers again and again. Not longer:
            # a worker that fails to start is noticed only this late (the bridge then exits 3).
            timeout_worker_healthcheck=_WORKER_HEALTHCHECK_SECONDS,
            **uvicorn_options(settings),
        )
        shared = per_worker(listener) if SPREAD_BY_KERNEL else listener
        supervisor = Multiprocess(config, sockets=[shared])
        supervisor.run()
    for process in supervisor.processes:
        # A drained worker exits 0; anything else (a crash on the way out, a failed start) is said.
        if process.exitcode != 0:
            logger.warning("worker %s ended with exit status %s", process.pid, process.exitcode)
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


class PerWorkerListener(socket.socket):
    """The port the supervisor holds, which every worker listens on with a socket of its own.

    On one shared socket, the worker whose event loop wakes first accepts a whole burst of new
    connections (asyncio accepts up to its backlog per wake-up), and keep-alive connections stay
    where they landed: one worker then serves most of the clients. With a socket per worker, bound
    with SO_REUSEPORT, the kernel spreads new connections over the workers. This socket is bound and
    never listens, so it takes no connection itself; it keeps the port the bridge's while workers
    come and go.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # How multiprocessing hands this socket to a new worker: as a new socket on the same address.
        return (worker_listener, (self.family, self.getsockname()))


def per_worker(listener: socket.socket) -> PerWorkerListener:
    """`listener`'s address, held for workers that each listen on it (`listener` is closed)."""
    address = listener.getsockname()
    held = PerWorkerListener(listener.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.close()  # bound without SO_REUSEPORT, so that a port in use was a clear error
    _reuse_port(held)
    held.bind(address)
    return held


def worker_listener(family: int, address: Any) -> socket.socket:
    """A worker's own socket on the supervisor's address (a worker that cannot get one fails its
    start, so the supervisor stops instead of starting it again and again)."""
    # IPPROTO_TCP by name: asyncio turns Nagle's algorithm off only on connections of such a socket
    # (with protocol 0 each answer's first small write waited out a delayed ACK, about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        _reuse_port(sock)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        print(
            f"dust-mcp-bridge: a worker cannot listen on {address!r}: {exc.strerror or exc}", file=sys.stderr
        )
        raise SystemExit(STARTUP_FAILURE) from None
    return sock


def _reuse_port(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What uvicorn is told besides the app, the same for one process and for workers."""
    return {
        "log_config": None,
        "log_level": settings.log_level.lower(),
        "access_log": settings.access_log,
        # httptools, never uvicorn's "auto" choice: the app trims header values for it
        # (bridge.http.middleware.trim_headers.TrimHeaderValuesMiddleware), and it costs a fifth less CPU
        # per request than h11 (docs/performance.md).
        "http": "httptools",
        # On SIGTERM uvicorn stops accepting, lets in-flight answers finish for this long, then
        # cancels them (each cancelled ask_agent cancels its generation at Dust).
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        # Off here: the app believes X-Forwarded-For/-Proto (only from BRIDGE_TRUSTED_PROXIES), after
        # writing down the connecting peer that uvicorn's own handling would overwrite
        # (bridge/http/middleware/forwarded.py).
        "proxy_headers": False,
        "lifespan": "on",
    }


@contextlib.contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """A fresh private directory where every worker writes its metric values (prometheus_client's
    multiprocess mode, which each worker takes up at start from the environment), removed when the
    workers are gone."""
    directory = tempfile.mkdtemp(prefix="dust-mcp-bridge-metrics-")
    os.environ[SHARED_DIR_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[SHARED_DIR_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


class WorkerConfig(uvicorn.Config):
    """uvicorn's configuration, which also sets each worker up as the single process is set up.

    `configure_logging` is what uvicorn calls first in a new worker (and in the supervisor, where the
    command line has already done this), before the worker's server takes over the signals.
    """

    def configure_logging(self) -> None:
        if multiprocessing.parent_process() is not None:
            configure_bridge_logging(_worker_settings())
            # uvicorn's server raises SIGTERM again once it has drained: the worker then exits 0, as
            # the single process does, rather than being killed by the signal.
            signal.signal(signal.SIGTERM, _exit_cleanly)
        # After the bridge's logging, as in the single process: uvicorn's access-log switch holds.
        super().configure_logging()


def app_from_environment() -> Starlette:
    """One worker's app, built from the settings in the environment (uvicorn's app factory)."""
    from bridge.app import create_app

    app = create_app(_worker_settings())
    freeze_startup_objects()
    return app


def _worker_settings() -> Settings:
    """The settings as the supervisor read them; if they no longer load, say why and fail the start
    (the supervisor then stops rather than restarting the worker again and again)."""
    try:
        return load_settings(find_env_file())
    except ConfigError as exc:
        print(f"dust-mcp-bridge: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)
