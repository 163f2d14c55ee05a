"""What the load, chaos and soak runs share: the servers, client keys, the conversing clients and their
checks, process sampling, and the figures.

A *conversationalist* is one MCP client holding one conversation with the echo agent over its own
keep-alive connection. Every message carries the client's nonce and turn number, and the echo agent
answers `Echo (turn N): <message>` where N is Dust's count of user messages in that conversation,
so each answer proves which conversation it came from. A turn is good when:

* the result is not an error and its `answer` is exactly the expected text;
* the `conversation` handle and `dust_conversation_id` are the ones of the client's first turn, and
  `continued` is false on the first turn only;
* the answer text that streamed as progress, concatenated, equals the final answer (nothing
  duplicated or lost on the way, reconnects to Dust included).

An answer holding another client's nonce, or a turn number outside what this client can explain,
is a *crossed context*. (Without faults the turn number must be exactly the next one; a failed
attempt may still have reached Dust, so after failures Dust may be that many turns ahead.)
Anything else that is not exact is an *error*.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.stream_overhead import (  # noqa: E402
    cpu_seconds,
    machine_busy_seconds,
    machine_facts,
    percentile,
    proc_status,
)
from bench.wire import McpError, McpWire, ToolResult, WireError  # noqa: E402
from bridge.security.auth import hash_key, new_key  # noqa: E402
from tests.procs import (  # noqa: E402
    TEST_DUST_KEY,
    Proc,
    bridge_env,
    free_port,
    start_bridge,
    start_clamd,
    start_redis,
    start_simulator,
)

__all__ = [
    "TEST_DUST_KEY",
    "ClientKeys",
    "Conversationalist",
    "ProcSampler",
    "Stack",
    "TurnSample",
    "bridge_status",
    "cpu_seconds",
    "fd_count",
    "load_average",
    "machine_busy_seconds",
    "machine_facts",
    "percentile",
    "proc_status",
    "sim_faults",
    "sim_stats",
    "summarise",
]

ECHO = "echo"
# Filler that makes answers realistic in length; no "[" (the bridge's status lines start with one).
_FILLER = (
    "the quick brown fox jumps over the lazy dog while the harbour bell rings for the boats "
    "and the lighthouse keeper counts the waves before dawn "
)


# --- machine and processes ----------------------------------------------------------------------


def load_average() -> str:
    """`uptime`'s load averages (1, 5, 15 min), straight from /proc/loadavg."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def fd_count(pid: int) -> int:
    """Open file descriptors of a process."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass
class _Series:
    t: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


class ProcSampler:
    """Samples RSS, CPU seconds and open fds of named processes every `interval` seconds."""

    def __init__(self, pids: dict[str, Callable[[], int | None]], interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self.series: dict[str, _Series] = {name: _Series() for name in pids}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        now = time.monotonic()
        for name, get_pid in self.pids.items():
            pid = get_pid()
            if pid is None:
                continue
            with contextlib.suppress(OSError, ValueError, KeyError):
                rss = proc_status(pid)["VmRSS"]
                cpu = cpu_seconds(pid if pid != os.getpid() else None)
                s = self.series[name]
                s.t.append(now)
                s.rss_kib.append(rss)
                s.cpu_s.append(cpu)
                s.fds.append(fd_count(pid))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    def peak_rss_mib(self, name: str) -> float:
        s = self.series[name]
        return max(s.rss_kib, default=0) / 1024

    def cpu_between(self, name: str, start: float, end: float) -> float:
        """CPU seconds the process used between two monotonic times (nearest samples)."""
        s = self.series[name]
        inside = [
            c for t, c in zip(s.t, s.cpu_s, strict=True) if start - self.interval <= t <= end + self.interval
        ]
        return inside[-1] - inside[0] if len(inside) >= 2 else float("nan")


# --- servers ------------------------------------------------------------------------------------


class ClientKeys:
    """`count` client keys, one principal each (`load-0001`...), in a BRIDGE_API_KEYS file."""

    def __init__(self, count: int, directory: Path | None = None, options: str = "") -> None:
        self.keys = [new_key() for _ in range(count)]
        self.names = [f"load-{i:04d}" for i in range(1, count + 1)]
        directory = directory or Path(tempfile.mkdtemp(prefix="bench-keys-"))
        self.path = directory / "keys.txt"
        lines = [
            f"{name}:{hash_key(key).hex()}{options}" for name, key in zip(self.names, self.keys, strict=True)
        ]
        self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.path.chmod(0o600)

    @property
    def env(self) -> dict[str, str]:
        return {"BRIDGE_API_KEYS": f"@{self.path}"}

    def remove(self) -> None:
        """Delete the keys file and its directory."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


class Stack:
    """The simulator, optionally Redis (with its data on disk) and clamd, and a bridge; every one stopped
    by pid on exit. Ports stay fixed across restarts, so clients reconnect to the same URLs."""

    def __init__(
        self,
        *,
        redis: bool = True,
        redis_persistent: bool = False,
        clamd: bool = False,
        sim_args: Sequence[str] = ("--log-level", "warning"),
        bridge_extra: dict[str, str] | None = None,
    ) -> None:
        self.want_redis = redis
        self.redis_persistent = redis_persistent
        self.want_clamd = clamd
        self.sim_args = list(sim_args)
        self.bridge_extra = dict(bridge_extra or {})
        self.simulator: Proc | None = None
        self.redis: Proc | None = None
        self.clamd: Proc | None = None
        self.bridge: Proc | None = None
        self.redis_dir: Path | None = None
        self.upload_dir = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
        self._clamd_dir: Path | None = None

    def __enter__(self) -> Stack:
        try:
            if self.want_redis:
                self.redis_dir = (
                    Path(tempfile.mkdtemp(prefix="bench-redis-")) if self.redis_persistent else None
                )
                self.redis = start_redis(data_dir=self.redis_dir)
            if self.want_clamd:
                self._clamd_dir = Path(tempfile.mkdtemp(prefix="bench-clamd-"))
                self.clamd = start_clamd(self._clamd_dir)
            # The bridge does not call Dust before its first request, so both start at once.
            sim_port = free_port()
            with ThreadPoolExecutor(2) as pool:
                sim = pool.submit(start_simulator, sim_port, self.sim_args)
                bridge = pool.submit(start_bridge, self.env(f"http://127.0.0.1:{sim_port}"))
                for future in (sim, bridge):
                    with contextlib.suppress(Exception):
                        future.result()
                self.simulator = sim.result() if sim.exception() is None else None
                self.bridge = bridge.result() if bridge.exception() is None else None
                for future in (sim, bridge):
                    if (error := future.exception()) is not None:
                        raise error
        except BaseException:
            self.stop_all()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def env(self, dust_url: str | None = None) -> dict[str, str]:
        dust_url = dust_url or (self.simulator.url if self.simulator is not None else None)
        assert dust_url is not None
        extra = {
            # Production defaults except: warnings only (per-request INFO lines would dominate the
            # CPU at these rates), and uploads in a directory this run can inspect.
            "BRIDGE_LOG_LEVEL": "WARNING",
            "BRIDGE_HEARTBEAT_SECONDS": "15",
            "BRIDGE_COALESCE_MS": "100",
            "BRIDGE_UPLOAD_DIR": str(self.upload_dir),
            **({} if self.want_clamd else {"BRIDGE_SCAN_MODE": "off"}),
            **self.bridge_extra,
        }
        env = bridge_env(None, self.redis.port if self.redis is not None else None, self.clamd, **extra)
        env.update(
            {
                "DUST_BASE_URL": dust_url,
                "DUST_API_KEY": TEST_DUST_KEY,
                "DUST_WORKSPACE_ID": "demo",
                "BRIDGE_DEMO": "off",
            }
        )
        env.update(extra)
        return env

    @property
    def mcp_url(self) -> str:
        assert self.bridge is not None
        return f"{self.bridge.url}/mcp"

    def bridge_pid(self) -> int | None:
        return self.bridge.pid if self.bridge is not None and self.bridge.popen.poll() is None else None

    def restart_bridge(self) -> Proc:
        assert self.bridge is not None
        port = self.bridge.port
        self.bridge.stop()
        self.bridge = start_bridge(self.env(), port=port)
        return self.bridge

    def start_redis_again(self) -> Proc:
        assert self.redis is not None
        self.redis = start_redis(port=self.redis.port, data_dir=self.redis_dir)
        return self.redis

    def start_clamd_again(self) -> Proc:
        assert self.clamd is not None and self._clamd_dir is not None
        old_socket = self.clamd.extra["socket"]
        self.clamd = start_clamd(self._clamd_dir)
        assert self.clamd.extra["socket"] == old_socket
        return self.clamd

    def stop_all(self) -> None:
        for proc in (self.bridge, self.clamd, self.redis, self.simulator):
            if proc is not None:
                proc.stop()
        for directory in (self.upload_dir, self.redis_dir, self._clamd_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


async def sim_faults(http: httpx2.AsyncClient, simulator: Proc, **values: Any) -> dict[str, Any]:
    response = await http.post(f"{simulator.url}/_sim/faults", json=values, timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def sim_stats(http: httpx2.AsyncClient, simulator: Proc) -> dict[str, Any]:
    response = await http.get(f"{simulator.url}/_sim/stats", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    body.pop("requests", None)  # up to 10,000 entries nobody here reads
    return body


async def bridge_status(http: httpx2.AsyncClient, bridge: Proc) -> dict[str, Any]:
    response = await http.get(f"{bridge.url}/status", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


# --- conversing clients -------------------------------------------------------------------------


@dataclass
class TurnSample:
    """One attempt at one turn."""

    client: int
    turn: int  # the client's own turn number (1 = first message of its conversation)
    attempt: int
    started: float  # perf_counter
    ended: float
    first_chunk: float | None = None  # perf_counter of the first answer text
    error: str | None = None
    crossed: str | None = None
    heartbeats: int = 0
    dust_turn: int | None = None
    # Answered, but the bridge said it could not store the new conversation (`remembered: false`).
    unremembered: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.crossed is None

    @property
    def ttr(self) -> float:
        return self.ended - self.started

    @property
    def ttfc(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.started


class Conversationalist:
    """One MCP client with its own connection, key, nonce and conversation (see the module docstring)."""

    def __init__(
        self,
        index: int,
        url: str,
        *,
        key: str | None = None,
        answer_chars: int = 120,
        idle_timeout: float = 120.0,
        legacy: bool = False,
        agent: str = ECHO,
        call_timeout: float = 300.0,
    ) -> None:
        self.index = index
        self.call_timeout = call_timeout
        self.nonce = f"n{index:04d}x{secrets.token_hex(4)}"
        self.wire = McpWire(url, key=key, legacy=legacy, idle_timeout=idle_timeout)
        self.answer_chars = answer_chars
        self.agent = agent
        self.handle: str | None = None
        self.dust_conversation: str | None = None
        self.acked = 0  # turns answered exactly
        self.dust_turns = 0  # Dust's turn number at the last good answer (acked + messages Dust kept)
        self.unacked_posts = 0  # failed attempts since the last good turn that Dust may have received
        self.samples: list[TurnSample] = []
        self.in_call = False
        self.call_started = 0.0  # perf_counter when the current call began

    def new_conversation(self) -> None:
        """Start afresh: the next turn opens a new conversation (with a new nonce)."""
        self.nonce = f"n{self.index:04d}x{secrets.token_hex(4)}"
        self.handle = self.dust_conversation = None
        self.acked = self.dust_turns = self.unacked_posts = 0

    def message(self, turn: int) -> str:
        head = f"{self.nonce} turn {turn} "
        tail = f" end {self.nonce}"
        room = max(0, self.answer_chars - len(f"Echo (turn {turn}): ") - len(head) - len(tail))
        filler = (_FILLER * (room // len(_FILLER) + 1))[:room]
        return head + filler + tail

    async def warm(self) -> None:
        """Connect and list the tools, as an MCP client does before its first call."""
        if self.wire.legacy:
            await self.wire.initialize()
        await self.wire.list_tools()

    async def turn(self, attempt: int = 1, *, on_open: Callable[[], Any] | None = None) -> TurnSample:
        """Ask the next turn once; record and return its sample."""
        turn = self.acked + 1
        message = self.message(turn)
        sample = TurnSample(self.index, turn, attempt, time.perf_counter(), 0.0)
        arguments: dict[str, Any] = {"agent": self.agent, "message": message}
        if self.handle is not None:
            arguments["conversation"] = self.handle
        self.in_call = True
        self.call_started = sample.started
        try:
            async with asyncio.timeout(self.call_timeout):
                result = await self.wire.call_tool("ask_agent", arguments, on_open=on_open)
        except TimeoutError:
            # The SDK keeps a silent call's stream alive with pings, so only this catches a hang.
            self.wire.abort()
            sample.ended = time.perf_counter()
            sample.error = f"HangError: no result within {self.call_timeout:g}s"
            self.unacked_posts += 1
            self.samples.append(sample)
            return sample
        except (McpError, WireError) as exc:
            sample.ended = time.perf_counter()
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
            self.unacked_posts += 1
            self.samples.append(sample)
            return sample
        finally:
            self.in_call = False
        sample.ended = time.perf_counter()
        sample.first_chunk = result.first_chunk
        sample.heartbeats = result.heartbeats
        self._check(sample, result, message)
        if sample.ok and sample.unremembered:
            self.new_conversation()  # told its handle will not work: the next turn starts afresh
        elif sample.ok:
            self.acked += 1
            self.dust_turns = sample.dust_turn or self.dust_turns + 1
            self.unacked_posts = 0
        elif sample.error is not None and sample.crossed is None:
            self.unacked_posts += 1
        self.samples.append(sample)
        return sample

    def _check(self, sample: TurnSample, result: ToolResult, message: str) -> None:
        if result.is_error:
            sample.error = f"tool error: {result.text[:300]}"
            return
        got = result.structured
        answer = str(got.get("answer", ""))
        prefix, sep, echoed = answer.partition("): ")
        dust_turn: int | None = None
        if sep and prefix.startswith("Echo (turn "):
            with contextlib.suppress(ValueError):
                dust_turn = int(prefix.removeprefix("Echo (turn "))
        sample.dust_turn = dust_turn
        if echoed != message:
            sample.crossed = (
                f"answer for another message: {answer[:120]!r}" if self.nonce not in answer else None
            )
            if sample.crossed is None:
                sample.error = f"wrong answer {answer[:160]!r}"
            return
        # A failed attempt may still have reached Dust (e.g. the store failed after the post), so
        # Dust may be up to that many turns ahead; never behind, never beyond.
        low, high = self.dust_turns + 1, self.dust_turns + 1 + self.unacked_posts
        if dust_turn is None or not low <= dust_turn <= high:
            sample.crossed = f"turn {dust_turn} in a conversation at turn {low}..{high}"
            return
        handle = got.get("conversation")
        conversation = got.get("dust_conversation_id")
        if self.handle is None:
            if got.get("continued") is not False:
                sample.error = "first turn reported continued"
                return
            self.handle, self.dust_conversation = str(handle), str(conversation)
        elif handle != self.handle or conversation != self.dust_conversation:
            sample.crossed = f"handle/conversation changed: {handle} {conversation}"
            return
        elif got.get("continued") is not True:
            sample.error = "a later turn reported continued=false"
            return
        sample.unremembered = got.get("remembered") is False
        first_block = (result.result.get("content") or [{}])[0].get("text")
        if first_block != answer:
            sample.error = "text content differs from structured answer"
            return
        streamed = "".join(result.chunks)
        if streamed != answer:
            sample.error = f"streamed text differs from the answer ({len(streamed)} vs {len(answer)} chars)"

    def close(self) -> None:
        self.wire.close()


# --- figures ------------------------------------------------------------------------------------


def _pcts(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50) * 1000,
        "p95": percentile(values, 95) * 1000,
        "p99": percentile(values, 99) * 1000,
        "max": max(values, default=float("nan")) * 1000,
    }


def summarise(samples: list[TurnSample], wall: float) -> dict[str, Any]:
    """Counts and p50/p95/p99 (ms) of time to first chunk and to result for the good turns."""
    good = [s for s in samples if s.ok]
    errors = [s for s in samples if s.error is not None and s.crossed is None]
    crossed = [s for s in samples if s.crossed is not None]
    kinds: dict[str, int] = {}
    for s in errors:
        kind = (s.error or "")[:90]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "turns": len(samples),
        "ok": len(good),
        "errors": len(errors),
        "crossed": len(crossed),
        "unremembered": sum(1 for s in good if s.unremembered),
        "error_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:8]),
        "crossed_examples": [s.crossed for s in crossed[:5]],
        "answers_per_s": len(good) / wall if wall > 0 else float("nan"),
        # Throughput while answers were flowing: not diluted by calls that hung until their timeout.
        "answers_per_s_active": (
            len(good) / (max(s.ended for s in good) - min(s.started for s in samples))
            if good
            else float("nan")
        ),
        "wall_s": wall,
        "ttfc_ms": _pcts([s.ttfc for s in good if s.ttfc is not None]),
        "ttr_ms": _pcts([s.ttr for s in good]),
    }


def fmt_ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.0f}"


def row(label: str, s: dict[str, Any]) -> str:
    t, r = s["ttfc_ms"], s["ttr_ms"]
    return (
        f"{label:<28}{s['turns']:>6}{s['errors']:>5}{s['crossed']:>6}{s['answers_per_s']:>9.1f}"
        f"  {fmt_ms(t['p50']):>6}{fmt_ms(t['p95']):>7}{fmt_ms(t['p99']):>7}"
        f"  {fmt_ms(r['p50']):>6}{fmt_ms(r['p95']):>7}{fmt_ms(r['p99']):>7}"
    )


HEADER = (
    f"{'path':<28}{'turns':>6}{'err':>5}{'cross':>6}{'ans/s':>9}"
    f"  {'TTFC p50':>6}{'p95':>7}{'p99':>7}  {'TTR p50':>6}{'p95':>7}{'p99':>7}   (ms)"
)


def run_bounded(
    amain: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
    args: argparse.Namespace,
    timeout: float,
) -> dict[str, Any]:
    """Run a benchmark's `amain(args)` within `timeout` seconds and a raised fd limit; add its
    `duration_s`, write the report to `args.json` when given and return it."""
    started = time.perf_counter()

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await amain(args)

    with raised_fd_limit():
        report = asyncio.run(bounded())
    report["duration_s"] = round(time.perf_counter() - started, 1)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


@contextlib.contextmanager
def raised_fd_limit(wanted: int = 20000) -> Iterator[None]:
    """Make sure this process may hold `wanted` sockets (the hard limit permitting)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield
    finally:
        if target != soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def metric_value(http: httpx2.AsyncClient, bridge: Proc, name: str) -> float:
    """The sum of every sample of one Prometheus metric on the bridge's /metrics."""
    response = await http.get(f"{bridge.url}/metrics", timeout=10)
    response.raise_for_status()
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def fd_breakdown(pid: int, ports: dict[str, int]) -> dict[str, int]:
    """A process's open descriptors by kind: TCP sockets by the named port they use (its own
    listening port's connections, or the peer's), `tcp_other`, and `other` (files, pipes, ...).

    Sockets in CLOSE_WAIT (the peer has gone, nobody closed them here) are also counted per name,
    as `<name>_close_wait`.
    """
    sockets: dict[str, tuple[int, int, str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
                sockets[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state)
    counts: dict[str, int] = {name: 0 for name in ports} | {f"{name}_close_wait": 0 for name in ports}
    counts |= {"tcp_other": 0, "other": 0}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return counts
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("socket:["):
            counts["other"] += 1
            continue
        found = sockets.get(target[8:-1])
        if found is None:
            counts["other"] += 1  # a unix socket, or one that closed meanwhile
            continue
        local, remote, state = found
        if state == "0A":
            continue
        for name, port in ports.items():
            if port in (local, remote):
                counts[name] += 1
                if state == "08":
                    counts[f"{name}_close_wait"] += 1
                break
        else:
            counts["tcp_other"] += 1
    return counts
