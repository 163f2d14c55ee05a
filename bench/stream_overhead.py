"""Streaming overhead of dust-mcp-bridge against the direct floor, and its memory per live context.

Usage (from the repository root):

    .venv/bin/python bench/stream_overhead.py [--concurrency 1,50,200] [--turns N] [--quick]
                                              [--redis] [--phases latency,steady,rss] [--json PATH]
                                              [--steady-levels 50,200] [--steady-seconds 60]
                                              [--topologies one,workers2,replicas2]

What it does:

1. Starts the Dust simulator (token delay 15 ms, 4 characters per `generation_tokens` event) and two
   bridges against it: one with the default progress coalescing (BRIDGE_COALESCE_MS=100,
   BRIDGE_COALESCE_CHARS=200) and one with coalescing off (BRIDGE_COALESCE_MS=0: every token event
   is relayed at once). In-memory context store unless --redis.
2. For each concurrency level C, in rounds (all C callers start together; the round ends when all
   are done), and interleaving the three paths round by round so drift hits them alike:
   - direct: C tasks share one `bridge.dust.client.DustClient` (the bridge's own client code) and
     each creates a conversation with `echo000001` and reads its event stream to the terminal event;
   - bridge: C MCP clients (`mcp.Client`, created and warmed with `list_tools` before timing) each
     call `ask_agent` with the same message and a progress callback.
   Time to first chunk = first `generation_tokens` event (direct) / first progress notification
   carrying answer text (bridge); time to result = terminal event / `call_tool` returning. Both are
   measured from just before the create-conversation POST / `call_tool`.
3. Steady state: C callers (lean clients on both sides) keep C asks in flight, direct and bridged
   in alternating halves, against each topology in turn: `one` bridge process, `workers2` (`serve
   --workers 2`, Redis) and `replicas2` (two one-process bridges on one Redis behind nginx,
   round-robin, no affinity). CPU per answer counts every process of the topology (the workers
   with their supervisor; nginx apart, as "balancer").
4. RSS: a fresh bridge answers 1,000 then 1,000 more `ask_agent` calls (50 at a time) and its
   VmRSS/VmHWM are read from /proc before, between and after.

The benchmark process freezes its set-up objects (`gc.freeze()`) once the MCP clients are open, so
the garbage collector's cost does not grow with the number of clients and skew either path.

Every child process is stopped by pid on the way out; every loop is bounded and the whole run has
an overall timeout. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import math
import os
import platform
import shlex
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.types import CallToolResult, TextContent
from pydantic import SecretStr

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.wire import DustWire, McpWire, WireError  # noqa: E402
from bridge.dust.client import DustClient  # noqa: E402
from bridge.dust.models import MessageContext  # noqa: E402
from tests.procs import (  # noqa: E402
    Proc,
    free_port,
    spawn,
    start_bridge,
    start_nginx,
    start_redis,
    start_simulator,
    wait_for_http,
)

AGENT_SID = "echo000001"
AGENT_NAME = "echo"
# The echo agent answers "Echo (turn 1): <message>": 52 characters, i.e. 13 token events of 4
# characters, one every TOKEN_DELAY_MS, so about 200 ms of generation.
MESSAGE = "How long does a streamed answer take?"
EXPECTED = f"Echo (turn 1): {MESSAGE}"
RSS_MESSAGE = "x"
TOKEN_DELAY_MS = 15.0
CHUNK_CHARS = 4
API_KEY = "sk-bench123456"
WORKSPACE = "demo"
CALL_TIMEOUT = 60.0  # seconds one ask may take before it counts as an error
OVERALL_TIMEOUT = 1200.0  # seconds for the whole run

LEAN_DIRECT = "direct (lean client)"
LEAN_BRIDGE = "bridge (lean client)"
BRIDGE_VARIANTS: dict[str, dict[str, str]] = {
    # What a user sees: the defaults (first flush up to 100 ms after the first token).
    "bridge (coalesce 100ms)": {},
    # The bridge's own overhead: every token event relayed at once.
    "bridge (coalesce 0)": {"BRIDGE_COALESCE_MS": "0"},
}


# --- small utilities --------------------------------------------------------------------------


def int_list(value: str) -> list[int]:
    """argparse type for a comma-separated list of integers ("1,50,200")."""
    return [int(x) for x in value.split(",") if x.strip()]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process has used (this process when pid is None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (a worker supervisor's workers, nginx's worker)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{current}/task").iterdir():
                queue += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds of the processes under `roots` now alive (a process that ended is not counted:
    the topologies here keep theirs for the whole measurement)."""
    total = 0.0
    for root in roots:
        for pid in process_tree(root):
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent in user, nice and system mode since boot (no irq/steal)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:4]]
    return sum(values) / _TICK


def machine_facts() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def redis_dbsize(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"DBSIZE\r\n")
        reply = sock.recv(64)
    return int(reply.strip().lstrip(b":"))


class LoopLag:
    """Measures how late this process's event loop wakes up (a sign the client side is saturated)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await anyio.sleep(self.interval)
            self.samples.append(time.perf_counter() - start - self.interval)


@dataclass
class Sample:
    first_chunk: float | None
    result: float
    error: str | None = None


@dataclass
class PathStats:
    """All samples of one path at one concurrency level, plus the CPU it cost."""

    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.samples if s.error is not None]

    def ttfc(self) -> list[float]:
        return [s.first_chunk for s in self.ok if s.first_chunk is not None]

    def ttr(self) -> list[float]:
        return [s.result for s in self.ok]


# --- the two paths ----------------------------------------------------------------------------


async def direct_once(dust: DustClient, message: str, expected: str) -> Sample:
    """Create a conversation and read its events with the project's DustClient."""
    context = MessageContext(username="bench", timezone="UTC")
    t0 = time.perf_counter()
    first: float | None = None
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            created = await dust.create_conversation(content=message, mentions=[AGENT_SID], context=context)
            if created.agent_message is None:
                return Sample(None, time.perf_counter() - t0, "no agent message")
            events = dust.stream_agent_events(created.conversation.s_id, created.agent_message.s_id)
            text: list[str] = []
            terminal = None
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.type == "generation_tokens" and event.data.get("classification") == "tokens":
                        if first is None:
                            first = time.perf_counter() - t0
                        text.append(str(event.data.get("text") or ""))
                    if event.is_terminal:
                        terminal = event
                        break
            done = time.perf_counter() - t0
    except Exception as exc:
        return Sample(first, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:200])
    if terminal is None or terminal.type != "agent_message_success":
        return Sample(first, done, f"terminal {terminal.type if terminal else None}")
    if "".join(text) != expected:
        return Sample(first, done, f"wrong answer {''.join(text)!r}")
    return Sample(first, done)


async def lean_direct_once(wire: DustWire, message: str, expected: str) -> Sample:
    """Create a conversation and read its events over the lean HTTP client (bench/wire.py)."""
    t0 = time.perf_counter()
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            turn = await wire.ask(AGENT_SID, message, None)
    except (WireError, KeyError, ValueError, StopIteration, TimeoutError) as exc:
        return Sample(None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:200])
    done = time.perf_counter() - t0
    first = None if turn.first_chunk is None else turn.first_chunk - t0
    return Sample(first, done, None if turn.text == expected else f"wrong answer {turn.text[:80]!r}")


async def lean_bridge_once(wire: McpWire, message: str, expected: str) -> Sample:
    """Call ask_agent over the lean MCP client (2026-07-28 stateless, bench/wire.py)."""
    t0 = time.perf_counter()
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await wire.call_tool("ask_agent", {"agent": AGENT_NAME, "message": message})
    except (WireError, TimeoutError) as exc:
        return Sample(None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:200])
    done = time.perf_counter() - t0
    first = None if result.first_chunk is None else result.first_chunk - t0
    content = result.result.get("content") or [{}]
    answer = str(content[0].get("text"))  # the answer; a second block carries the handle
    if result.is_error or answer != expected:
        return Sample(first, done, f"wrong answer {answer[:80]!r}")
    return Sample(first, done)


async def bridge_once(client: Client, message: str, expected: str) -> Sample:
    """Call ask_agent through MCP, timing the first progress notification with answer text."""
    first: float | None = None
    t0 = 0.0

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal first
        # Heartbeats and tool status lines start with "["; answer chunks do not.
        if first is None and message and not message.startswith("["):
            first = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            result: CallToolResult = await client.call_tool(
                "ask_agent", {"agent": AGENT_NAME, "message": message}, progress_callback=on_progress
            )
        done = time.perf_counter() - t0
    except Exception as exc:
        return Sample(first, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:200])
    block = result.content[0] if result.content else None
    answer = block.text if isinstance(block, TextContent) else None
    if result.is_error:
        return Sample(first, done, f"tool error: {answer}"[:200])
    if answer != expected:
        return Sample(first, done, f"wrong answer {answer!r}"[:200])
    return Sample(first, done)


@contextlib.asynccontextmanager
async def mcp_clients(url: str, count: int) -> AsyncIterator[list[Client]]:
    """`count` connected MCP clients that have listed the tools (so no call pays for discovery)."""
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        for _ in range(count):
            client = Client(f"{url}/mcp", read_timeout_seconds=CALL_TIMEOUT)
            clients.append(await stack.enter_async_context(client))

        async def warm(c: Client) -> None:
            with anyio.fail_after(CALL_TIMEOUT):
                await c.list_tools()

        async with anyio.create_task_group() as tg:
            for c in clients:
                tg.start_soon(warm, c)
        yield clients


async def run_round(calls: Sequence[Callable[[], Awaitable[Sample]]]) -> list[Sample]:
    """Start all calls together; return their samples once all are done."""
    results: list[Sample | None] = [None] * len(calls)
    go = anyio.Event()

    async def one(i: int) -> None:
        await go.wait()
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
        await anyio.sleep(0)  # let every task reach the gate
        go.set()
    return [r for r in results if r is not None]


@contextlib.contextmanager
def measured(stats: PathStats, pids: dict[str, int | None], lag: LoopLag) -> Iterator[None]:
    """Add the wall time, CPU seconds per process and loop lag of the enclosed section to `stats`."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    busy_before = machine_busy_seconds()
    lag_start = len(lag.samples)
    start = time.perf_counter()
    try:
        yield
    finally:
        stats.wall += time.perf_counter() - start
        own = 0.0
        for name, pid in pids.items():
            used = cpu_seconds(pid) - before[name]
            own += used
            stats.cpu[name] = stats.cpu.get(name, 0.0) + used
        # CPU that something else on the machine used meanwhile (other jobs perturb the figures).
        # Not clipped per section: tick rounding errors must be able to cancel out over rounds.
        foreign = machine_busy_seconds() - busy_before - own
        stats.cpu["other"] = stats.cpu.get("other", 0.0) + foreign
        stats.lag.extend(lag.samples[lag_start:])


# --- phases -----------------------------------------------------------------------------------


async def latency_level(
    concurrency: int,
    rounds: int,
    dust: DustClient,
    bridges: dict[str, Proc],
    simulator: Proc,
    lag: LoopLag,
) -> dict[str, PathStats]:
    stats: dict[str, PathStats] = {"direct": PathStats(), **{name: PathStats() for name in bridges}}
    # The same comparison with lean clients on both sides (bench/wire.py), against the default bridge:
    # what the bridge adds when neither client's own cost is in the way.
    stats[LEAN_DIRECT] = PathStats()
    stats[LEAN_BRIDGE] = PathStats()
    default_bridge = bridges["bridge (coalesce 100ms)"]
    dust_wires = [
        DustWire(simulator.url, API_KEY, WORKSPACE, idle_timeout=CALL_TIMEOUT) for _ in range(concurrency)
    ]
    mcp_wires = [McpWire(f"{default_bridge.url}/mcp", idle_timeout=CALL_TIMEOUT) for _ in range(concurrency)]
    lean_rounds = {
        LEAN_DIRECT: ([functools.partial(lean_direct_once, w, MESSAGE, EXPECTED) for w in dust_wires], None),
        LEAN_BRIDGE: (
            [functools.partial(lean_bridge_once, w, MESSAGE, EXPECTED) for w in mcp_wires],
            default_bridge,
        ),
    }
    async with contextlib.AsyncExitStack() as stack:
        for dust_wire in dust_wires:
            stack.callback(dust_wire.close)
        for mcp_wire in mcp_wires:
            stack.callback(mcp_wire.close)
        clients = {
            name: await stack.enter_async_context(mcp_clients(proc.url, concurrency))
            for name, proc in bridges.items()
        }
        # Hundreds of live MCP clients make every full GC of this process slow, which would tax
        # whichever path is being timed (measured: +30% client CPU per direct request at C=200).
        # Freezing the set-up objects keeps the client side's cost per request flat.
        gc.collect()
        gc.freeze()
        stack.callback(gc.unfreeze)
        # One untimed warm-up round per path (connection pools, the bridge's agent cache).
        await run_round([lambda: direct_once(dust, MESSAGE, EXPECTED)] * concurrency)
        for name in bridges:
            await run_round([_bridge_call(c) for c in clients[name]])
        for calls, _ in lean_rounds.values():
            await run_round(calls)
        for _ in range(rounds):
            with measured(stats["direct"], {"client": None, "simulator": simulator.pid}, lag):
                stats["direct"].samples += await run_round(
                    [lambda: direct_once(dust, MESSAGE, EXPECTED)] * concurrency
                )
            for name, proc in bridges.items():
                pids = {"client": None, "simulator": simulator.pid, "bridge": proc.pid}
                with measured(stats[name], pids, lag):
                    stats[name].samples += await run_round([_bridge_call(c) for c in clients[name]])
            for name, (calls, target) in lean_rounds.items():
                pids = {"client": None, "simulator": simulator.pid}
                if target is not None:
                    pids["bridge"] = target.pid
                with measured(stats[name], pids, lag):
                    stats[name].samples += await run_round(calls)
    return stats


def _bridge_call(
    client: Client, message: str = MESSAGE, expected: str = EXPECTED
) -> Callable[[], Awaitable[Sample]]:
    return lambda: bridge_once(client, message, expected)


async def rss_phase(bridge: Proc, batches: int, per_batch: int, concurrency: int) -> dict[str, Any]:
    """RSS of `bridge` as it accumulates live conversation contexts."""
    readings: list[dict[str, Any]] = [{"label": "started, idle", "contexts": 0, **proc_status(bridge.pid)}]
    expected = f"Echo (turn 1): {RSS_MESSAGE}"
    errors: list[str] = []
    async with mcp_clients(bridge.url, concurrency) as clients:
        warm = await run_round([_bridge_call(clients[0], RSS_MESSAGE, expected)])
        errors += [s.error for s in warm if s.error]
        contexts = 1
        readings.append({"label": "after 1 call, idle", "contexts": contexts, **proc_status(bridge.pid)})
        for batch in range(batches):
            done = 0
            while done < per_batch:
                n = min(concurrency, per_batch - done)
                samples = await run_round([_bridge_call(c, RSS_MESSAGE, expected) for c in clients[:n]])
                errors += [s.error for s in samples if s.error]
                done += n
            contexts += per_batch
            readings.append(
                {"label": f"after batch {batch + 1}, idle", "contexts": contexts, **proc_status(bridge.pid)}
            )
    readings.append({"label": "clients closed, idle", "contexts": contexts, **proc_status(bridge.pid)})
    return {"readings": readings, "errors": errors}


# --- report -----------------------------------------------------------------------------------


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.1f}"


def level_table(concurrency: int, stats: dict[str, PathStats]) -> str:
    lines = [f"\n=== concurrency {concurrency} ==="]
    header = (
        f"{'path':<26}{'n':>5}{'err':>5}  {'TTFC p50':>9}{'p99':>8}{'max':>8}"
        f"  {'result p50':>10}{'p99':>8}{'max':>8}  {'cpu ms/req (client/sim/bridge/other)':>38}"
        f"  {'loop lag p99':>12}"
    )
    lines.append(header)
    for name, s in stats.items():
        ttfc, ttr = s.ttfc(), s.ttr()
        n = max(len(s.samples), 1)
        cpu = "/".join(
            f"{max(s.cpu.get(k, math.nan), 0.0) * 1000 / n:.2f}"
            for k in ("client", "simulator", "bridge", "other")
        )
        lines.append(
            f"{name:<26}{len(s.samples):>5}{len(s.errors):>5}  {ms(percentile(ttfc, 50)):>9}"
            f"{ms(percentile(ttfc, 99)):>8}{ms(max(ttfc, default=math.nan)):>8}"
            f"  {ms(percentile(ttr, 50)):>10}{ms(percentile(ttr, 99)):>8}{ms(max(ttr, default=math.nan)):>8}"
            f"  {cpu:>38}  {ms(percentile(s.lag, 99)):>12}"
        )
    for name, s in stats.items():
        if name in ("direct", LEAN_DIRECT):
            continue
        direct = stats[LEAN_DIRECT if name == LEAN_BRIDGE else "direct"]
        parts = []
        for label, get in (("first chunk", PathStats.ttfc), ("result", PathStats.ttr)):
            d, b = get(direct), get(s)
            added = [percentile(b, q) - percentile(d, q) for q in (50, 99)]
            ratio = percentile(b, 50) / percentile(d, 50) if d else math.nan
            parts.append(f"{label}: +{ms(added[0])} ms p50, +{ms(added[1])} ms p99, x{ratio:.2f} at p50")
        lines.append(f"  added by {name}: " + "; ".join(parts))
    for name, s in stats.items():
        if s.errors:
            lines.append(f"  {name} errors (first 3 of {len(s.errors)}): {s.errors[:3]}")
    return "\n".join(lines)


def stats_json(stats: PathStats) -> dict[str, Any]:
    ttfc, ttr = stats.ttfc(), stats.ttr()
    return {
        "n": len(stats.samples),
        "errors": len(stats.errors),
        "error_examples": stats.errors[:5],
        "ttfc_ms": {q: percentile(ttfc, p) * 1000 for q, p in (("p50", 50), ("p99", 99), ("max", 100))},
        "result_ms": {q: percentile(ttr, p) * 1000 for q, p in (("p50", 50), ("p99", 99), ("max", 100))},
        "cpu_ms_per_request": {k: v * 1000 / max(len(stats.samples), 1) for k, v in stats.cpu.items()},
        "wall_s": stats.wall,
        "loop_lag_p99_ms": percentile(stats.lag, 99) * 1000,
    }


def rss_table(title: str, rss: dict[str, Any]) -> str:
    lines = [f"\n=== RSS: {title} ===", f"{'state':<26}{'contexts':>9}{'VmRSS MiB':>11}{'VmHWM MiB':>11}"]
    for r in rss["readings"]:
        lines.append(
            f"{r['label']:<26}{r['contexts']:>9}{r['VmRSS'] / 1024:>11.1f}{r['VmHWM'] / 1024:>11.1f}"
        )
    readings = rss["readings"]
    base = next(r for r in readings if r["label"].startswith("after 1 call"))
    batch_rows = [r for r in readings if r["label"].startswith("after batch")]
    if batch_rows:
        first = batch_rows[0]
        per = (first["VmRSS"] - base["VmRSS"]) / max(first["contexts"] - base["contexts"], 1)
        lines.append(f"  growth over the first batch: {per:.2f} KiB RSS per call/context")
        if len(batch_rows) > 1:
            last = batch_rows[-1]
            per2 = (last["VmRSS"] - first["VmRSS"]) / max(last["contexts"] - first["contexts"], 1)
            lines.append(f"  growth over later batches: {per2:.2f} KiB RSS per call/context")
    if "redis_keys" in rss:
        lines.append(
            f"  redis keys: {rss['redis_keys']}, redis-server VmRSS {rss['redis_rss_kib'] / 1024:.1f} MiB"
        )
    lines.append(f"  errors: {len(rss['errors'])}" + (f" e.g. {rss['errors'][:3]}" if rss["errors"] else ""))
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def bench_env(simulator: Proc, redis: Proc | None, extra: dict[str, str]) -> dict[str, str]:
    """The bridge's environment: production defaults except where `extra` says otherwise."""
    env = {
        "DUST_BASE_URL": simulator.url,
        "DUST_API_KEY": API_KEY,
        "DUST_WORKSPACE_ID": WORKSPACE,
        "BRIDGE_DEMO": "off",
        # One principal ("local") makes every call here: lift its budgets (default 300 requests a
        # minute, 8 answers at once), or C >= 50 measures refusals instead of streaming.
        "BRIDGE_RATE_LIMIT": "1000000/minute",
        "BRIDGE_MAX_CONCURRENT_ANSWERS": "10000",
        # One process, whose CPU this measures (auto would start one worker per core with Redis).
        "BRIDGE_WORKERS": "1",
    }
    if redis is not None:
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/0"
    env.update(extra)
    return env


def rounds_for(concurrency: int, turns: int | None, quick: bool) -> int:
    if turns is not None:
        return turns
    if quick:
        return max(1, math.ceil(40 / concurrency))
    # At least 200 samples at C=1 and 400 at higher levels.
    return math.ceil((200 if concurrency == 1 else 400) / concurrency)


# --- steady state: C calls always in flight, lean clients on both sides --------------------------

STEADY_TOKEN_DELAY_MS = 200.0
STEADY_EVENTS = 40  # 40 token events 200 ms apart: an answer streams for about 8 s
STEADY_ANSWER_SECONDS = STEADY_EVENTS * STEADY_TOKEN_DELAY_MS / 1000


@dataclass
class SteadyPath:
    """Samples of one path in the steady-state phase."""

    ttfc: list[float] = field(default_factory=list)
    ttr: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


def steady_message() -> tuple[str, str]:
    """A message whose echo is STEADY_EVENTS chunks of CHUNK_CHARS characters, and that echo."""
    prefix = "Echo (turn 1): "
    body_len = STEADY_EVENTS * CHUNK_CHARS - len(prefix)
    message = ("steady-state-" * 40)[:body_len]
    return message, prefix + message


async def steady_path(
    concurrency: int,
    seconds: float,
    warmup: float,
    call: Callable[[int], Awaitable[Sample]],
    pids: dict[str, list[int]],
) -> SteadyPath:
    """`concurrency` callers ask back to back for `warmup + seconds`; samples started after the warm-up count.

    Callers start spread over one answer's duration, so asks arrive steadily instead of in waves.
    """
    out = SteadyPath()
    started = time.perf_counter()
    measure_from = started + warmup
    deadline = measure_from + seconds

    async def caller(i: int) -> None:
        await anyio.sleep(STEADY_ANSWER_SECONDS * i / concurrency)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            sample = await call(i)
            if t0 < measure_from:
                continue
            if sample.error is not None:
                out.errors.append(sample.error)
            elif sample.first_chunk is not None:
                out.ttfc.append(sample.first_chunk)
                out.ttr.append(sample.result)

    cpu0: dict[str, float] = {}

    async def start_counting() -> None:
        await anyio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu0.update({k: tree_cpu_seconds(roots) for k, roots in pids.items()}, client=cpu_seconds(None))

    with anyio.fail_after(warmup + seconds + STEADY_ANSWER_SECONDS + CALL_TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(start_counting)
            for i in range(concurrency):
                tg.start_soon(caller, i)
    out.seconds = time.perf_counter() - measure_from
    n = max(len(out.ttfc), 1)
    out.cpu = {k: (tree_cpu_seconds(roots) - cpu0[k]) * 1000 / n for k, roots in pids.items()}
    out.cpu["client"] = (cpu_seconds(None) - cpu0["client"]) * 1000 / n
    return out


async def steady_level(concurrency: int, seconds: float, simulator: Proc, bridge: Topology) -> dict[str, Any]:
    """Direct (lean Dust client) vs bridge (lean MCP client), `concurrency` asks always in flight."""
    message, expected = steady_message()
    dust_wires = [
        DustWire(simulator.url, API_KEY, WORKSPACE, idle_timeout=CALL_TIMEOUT) for _ in range(concurrency)
    ]
    mcp_wires = [McpWire(f"{bridge.url}/mcp", idle_timeout=CALL_TIMEOUT) for _ in range(concurrency)]
    for w in mcp_wires:
        await w.list_tools()

    async def direct(i: int) -> Sample:
        return await lean_direct_once(dust_wires[i], message, expected)

    async def bridged(i: int) -> Sample:
        return await lean_bridge_once(mcp_wires[i], message, expected)

    pids = {"simulator": [simulator.pid], **bridge.roots}
    warmup = STEADY_ANSWER_SECONDS + 2
    paths: dict[str, list[SteadyPath]] = {LEAN_DIRECT: [], LEAN_BRIDGE: []}
    try:
        # Two halves each, alternating, so drift on the machine hits both paths alike.
        for _ in range(2):
            for name, call in ((LEAN_DIRECT, direct), (LEAN_BRIDGE, bridged)):
                paths[name].append(await steady_path(concurrency, seconds / 2, warmup, call, pids))
    finally:
        for dust_wire in dust_wires:
            dust_wire.close()
        for mcp_wire in mcp_wires:
            mcp_wire.close()
    out: dict[str, Any] = {}
    for name, halves in paths.items():
        ttfc = [v for h in halves for v in h.ttfc]
        ttr = [v for h in halves for v in h.ttr]
        n = len(ttfc)
        out[name] = {
            "n": n,
            "errors": sum(len(h.errors) for h in halves),
            "error_examples": [e for h in halves for e in h.errors][:3],
            "answers_per_s": n / max(sum(h.seconds for h in halves), 1e-9),
            "ttfc_ms": {q: percentile(ttfc, p) * 1000 for q, p in (("p50", 50), ("p99", 99))},
            "ttr_ms": {q: percentile(ttr, p) * 1000 for q, p in (("p50", 50), ("p99", 99))},
            "cpu_ms_per_answer": {
                k: sum(h.cpu[k] * len(h.ttfc) for h in halves) / max(n, 1) for k in halves[0].cpu
            },
        }
    d, b = out[LEAN_DIRECT], out[LEAN_BRIDGE]
    out["added_ms"] = {
        "ttfc_p50": b["ttfc_ms"]["p50"] - d["ttfc_ms"]["p50"],
        "ttfc_p99": b["ttfc_ms"]["p99"] - d["ttfc_ms"]["p99"],
        "ttr_p50": b["ttr_ms"]["p50"] - d["ttr_ms"]["p50"],
        "ttr_p99": b["ttr_ms"]["p99"] - d["ttr_ms"]["p99"],
    }
    return out


TOPOLOGIES = ("one", "workers2", "replicas2")


@dataclass
class Topology:
    """The bridge(s) a steady level runs against: where to send MCP, whose CPU counts as what."""

    name: str
    url: str
    roots: dict[str, list[int]]  # "bridge" (and "balancer"): the processes (with their children)
    procs: list[Proc] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def start_topology(name: str, simulator: Proc, redis: Proc | None) -> Topology:
    """`one` bridge process; `workers2`: `serve --workers 2` (both workers answering); `replicas2`:
    two one-process bridges behind nginx, round-robin. The last two share `redis`."""
    if name == "one":
        bridge = start_bridge(bench_env(simulator, redis, {}))
        return Topology(name, bridge.url, {"bridge": [bridge.pid]}, [bridge])
    assert redis is not None, f"{name} needs Redis"
    if name == "workers2":
        port = free_port()
        args = [sys.executable, "-m", "bridge", "serve", "--port", str(port), "--workers", "2"]
        bridge = spawn(args, port, env=bench_env(simulator, redis, {}), name="workers")
        wait_for_http(f"{bridge.url}/healthz", bridge.popen)
        wait_for_workers(bridge.url, 2)
        return Topology(name, bridge.url, {"bridge": [bridge.pid]}, [bridge])
    replicas = [start_bridge(bench_env(simulator, redis, {})) for _ in range(2)]
    balancer = start_nginx([r.port for r in replicas])
    roots = {"bridge": [r.pid for r in replicas], "balancer": [balancer.pid]}
    return Topology(name, f"http://127.0.0.1:{balancer.port}", roots, [*replicas, balancer])


def wait_for_workers(url: str, count: int, timeout: float = 60.0) -> None:
    """Until `count` different workers have answered /status (each new connection may go to any)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {seen} answered")
        seen.add(httpx2.get(f"{url}/status", timeout=10).json()["worker"]["pid"])


async def steady_phase(args: argparse.Namespace, redis: Proc | None, procs: list[Proc]) -> dict[str, Any]:
    """Its own simulator (slower tokens, see STEADY_*), then every steady level on each topology."""
    simulator = start_simulator(
        args=["--token-delay-ms", str(STEADY_TOKEN_DELAY_MS), "--log-level", "warning"]
    )
    procs.append(simulator)
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{simulator.url}/_sim/faults", json={"chunk_chars": CHUNK_CHARS})
        response.raise_for_status()
    out: dict[str, Any] = {
        "token_delay_ms": STEADY_TOKEN_DELAY_MS,
        "events_per_answer": STEADY_EVENTS,
        "seconds_per_path": args.steady_seconds,
        "topologies": {},
    }
    for name in args.topologies:
        topology = start_topology(name, simulator, redis)
        levels: dict[str, Any] = {}
        try:
            for concurrency in args.steady_levels:
                started = time.perf_counter()
                level = await steady_level(concurrency, args.steady_seconds, simulator, topology)
                print(steady_table(f"{name}, {concurrency} calls in flight", level), flush=True)
                print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)
                levels[str(concurrency)] = level
        finally:
            topology.stop()
        out["topologies"][name] = levels
    return out


def steady_table(title: str, level: dict[str, Any]) -> str:
    lines = [
        f"\n=== steady state: {title} ===",
        f"{'path':<28}{'n':>6}{'err':>5}{'ans/s':>8}{'TTFC p50':>10}{'p99':>8}{'result p50':>12}{'p99':>9}"
        "   cpu ms/answer (client/sim/bridge[/balancer])",
    ]
    for name in (LEAN_DIRECT, LEAN_BRIDGE):
        s = level[name]
        cpu = s["cpu_ms_per_answer"]
        lines.append(
            f"{name:<28}{s['n']:>6}{s['errors']:>5}{s['answers_per_s']:>8.1f}{s['ttfc_ms']['p50']:>10.1f}"
            f"{s['ttfc_ms']['p99']:>8.1f}{s['ttr_ms']['p50']:>12.1f}{s['ttr_ms']['p99']:>9.1f}"
            f"   {cpu['client']:.2f}/{cpu['simulator']:.2f}/{cpu['bridge']:.2f}"
            + (f"/{cpu['balancer']:.2f}" if "balancer" in cpu else "")
        )
        for example in s["error_examples"]:
            lines.append(f"  error: {example}")
    a = level["added_ms"]
    lines.append(
        f"  added by bridge: first chunk +{a['ttfc_p50']:.1f} ms p50, +{a['ttfc_p99']:.1f} ms p99;"
        f" result +{a['ttr_p50']:.1f} ms p50, +{a['ttr_p99']:.1f} ms p99"
    )
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    procs: list[Proc] = []
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_facts(),
        "settings": {
            "agent": AGENT_SID,
            "answer_chars": len(EXPECTED),
            "token_delay_ms": TOKEN_DELAY_MS,
            "chunk_chars": CHUNK_CHARS,
            "store": "redis" if args.redis else "memory",
        },
        "levels": {},
        "rss": {},
    }
    print(f"machine: {report['machine']}")
    print(f"command: {report['command']}")
    try:
        simulator = start_simulator(args=["--token-delay-ms", str(TOKEN_DELAY_MS), "--log-level", "warning"])
        procs.append(simulator)
        async with httpx2.AsyncClient() as http:
            response = await http.post(f"{simulator.url}/_sim/faults", json={"chunk_chars": CHUNK_CHARS})
            response.raise_for_status()
        redis = start_redis() if args.redis else None
        if redis is not None:
            procs.append(redis)
        lag = LoopLag()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag.run)
            if "latency" in args.phases:
                bridges: dict[str, Proc] = {}
                for name, extra in BRIDGE_VARIANTS.items():
                    bridges[name] = start_bridge(bench_env(simulator, redis, extra))
                    procs.append(bridges[name])
                async with DustClient(simulator.url, WORKSPACE, SecretStr(API_KEY)) as dust:
                    for concurrency in args.concurrency:
                        rounds = rounds_for(concurrency, args.turns, args.quick)
                        started = time.perf_counter()
                        stats = await latency_level(concurrency, rounds, dust, bridges, simulator, lag)
                        print(level_table(concurrency, stats), flush=True)
                        print(f"  ({rounds} rounds, {time.perf_counter() - started:.1f} s)", flush=True)
                        report["levels"][str(concurrency)] = {
                            "rounds": rounds,
                            **{name: stats_json(s) for name, s in stats.items()},
                        }
                for proc in bridges.values():
                    proc.stop()
            if "steady" in args.phases:
                report["steady"] = await steady_phase(args, redis, procs)
            if "rss" in args.phases:
                stores: list[tuple[str, Proc | None]] = [("memory", None)]
                if redis is not None:
                    stores.append(("redis", redis))
                for label, store in stores:
                    bridge = start_bridge(bench_env(simulator, store, {}))
                    procs.append(bridge)
                    per_batch = 100 if args.quick else 1000
                    rss = await rss_phase(bridge, batches=2, per_batch=per_batch, concurrency=50)
                    if store is not None:
                        rss["redis_keys"] = redis_dbsize(store.port)
                        rss["redis_rss_kib"] = proc_status(store.pid)["VmRSS"]
                    bridge.stop()
                    print(rss_table(f"{label} store, {per_batch} contexts per batch", rss), flush=True)
                    report["rss"][label] = rss
            tg.cancel_scope.cancel()
    finally:
        for proc in reversed(procs):
            proc.stop()
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--concurrency",
        type=int_list,
        default=None,
        help="comma-separated levels (default 1,50,200; --quick: 1,50)",
    )
    parser.add_argument(
        "--turns", type=int, default=None, help="rounds per level (each caller asks once per round)"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--redis", action="store_true", help="bridges use a Redis context store")
    parser.add_argument(
        "--phases",
        type=lambda v: {x.strip() for x in v.split(",") if x.strip()},
        default={"latency", "steady", "rss"},
        help="comma-separated: latency, steady, rss (default all three)",
    )
    parser.add_argument(
        "--steady-levels",
        type=int_list,
        # C=1 is the burst phase's (200 samples); 8 s answers give it too few here.
        default=[50, 200],
        help="calls in flight in the steady-state phase (default 50,200)",
    )
    parser.add_argument(
        "--topologies",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=["one"],
        help="steady phase against: one (one process), workers2 (serve --workers 2), replicas2 (two"
        " bridges behind nginx, round-robin); the last two use Redis (default: one)",
    )
    parser.add_argument(
        "--steady-seconds", type=float, default=60.0, help="measured seconds per path and level (default 60)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = [1, 50] if args.quick else [1, 50, 200]
    if any(c < 1 or c > 1000 for c in args.concurrency):
        parser.error("concurrency levels must be between 1 and 1000")
    if args.turns is not None and not 1 <= args.turns <= 10_000:
        parser.error("--turns must be between 1 and 10000")
    if not args.phases <= {"latency", "steady", "rss"}:
        parser.error("--phases takes latency, steady and/or rss")
    if any(c < 1 or c > 500 for c in args.steady_levels):
        parser.error("steady levels must be between 1 and 500 calls in flight")
    if not set(args.topologies) <= set(TOPOLOGIES) or not args.topologies:
        parser.error(f"--topologies takes {', '.join(TOPOLOGIES)}")
    if set(args.topologies) - {"one"}:
        args.redis = True  # workers and replicas share sessions and limits through Redis
    if not 4 <= args.steady_seconds <= 600:
        parser.error("--steady-seconds must be between 4 and 600")
    return args


def main(argv: list[str] | None = None) -> None:
    from bench._common import run_bounded  # bench._common imports this module's helpers

    report = run_bounded(amain, parse_args(argv), OVERALL_TIMEOUT)
    print(f"\ntotal {report['duration_s']} s")


if __name__ == "__main__":
    main()
