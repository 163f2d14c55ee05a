"""Chaos run: faults injected and lifted while a load of conversing MCP clients runs.

Usage (from the repository root):

    .venv/bin/python bench/chaos.py [--clients 100] [--only redis,dust_5xx,...] [--slow-seconds 70]
                                    [--bridges 3] [--per-kind 10] [--grace 30] [--call-timeout 60]
                                    [--json PATH]

One simulator, one Redis (append-only file, `appendfsync always`, in a data directory), one clamd
(unix socket, EICAR signature only) and one bridge (production settings, warnings-only logs, one
client key per client). `--clients` conversationalists (bench/_common.py) loop turns with the
echo agent, each in its own conversation, checking every answer; a failed turn is retried with
the same message after a short backoff, like a patient user. Faults, one after another:

* `redis`: Redis killed (SIGKILL) and restarted on the same port and data after a while. While it
  is down the bridge must answer every call with a clear error naming the context store, stay
  up, and report not-ready; afterwards it must recover by itself, and every conversation handed
  out before the crash must continue (same handle, same Dust conversation, next turn number).
* `dust_5xx`, `dust_503`, `dust_429`: the simulator fails the next N conversation POSTs with 500,
  503 or 429.
* `stream_cut`: every answer's event stream is cut once after 3 events, and then Dust's own
  end-of-connection (`data: done`) comes every 4 events: the bridge must resume with lastEventId,
  and the streamed text must equal the final answer (nothing duplicated, nothing lost).
* `dust_slow`: extra clients ask the slow agent, which stays silent for `--slow-seconds` (default
  70) in a tool call; the clients give up on 30 s without a byte (a proxy's idle timeout), so only
  the bridge's heartbeats keep them alive.
* `clamd`: uploaders post files in a loop; clamd is killed mid-way: uploads must be refused with
  503 `scanner_unavailable` (never accepted unscanned), no temp file may stay in BRIDGE_UPLOAD_DIR,
  and uploads work again once clamd is back.
* `disconnect`: extra clients start long answers and all drop their connections mid-stream; Dust
  must get one cancel per answer, and the bridge's tasks and file descriptors (from /status)
  must come back to what they were (measured with the load paused, before and after).
* `sigterm`: extra clients start long answers, the bridge gets SIGTERM: every answer in flight
  must complete exactly within the grace period, the bridge must exit, and after a restart the
  load resumes with every conversation intact (Redis holds them).
* `rolling_restart` ("deploys that drop nothing"; always last, on its own stack: bench/rolling.py):
  `--bridges` bridges (default 3) on one Redis and one simulator behind Debian's nginx, run as an
  unprivileged child with a generated config (tests/procs.py `start_nginx`: round-robin with no
  affinity, HTTP/1.1 and nothing buffered, hour-long reads, a request passed to the next bridge
  only when none could be reached: `proxy_next_upstream error timeout`, never `non_idempotent`).
  `--per-kind` MCP SDK clients of each kind converse through nginx with the echo agent, each
  answer checked exactly (streamed text included): handshake-era Streamable HTTP sessions
  (`Client(mode="legacy")`), 2026-07-28 stateless clients (`mode="auto"`) and legacy `/sse` clients
  (`sse_client`), which connect again through nginx when their stream ends and go on with their
  handle. Each bridge in turn gets SIGTERM with a long answer of each kind streaming from it
  (asked of it directly, so that every restart has them), is awaited, started again on its port
  (BRIDGE_SHUTDOWN_GRACE_SECONDS = `--grace`) and awaited on /readyz and nginx's `fail_timeout`,
  and every conversation must answer again before the next one stops. Checks: every call either
  completed exactly or failed with a clear retryable error *and posted nothing to Dust* (each
  attempt sends its own text, so the simulator's conversations say exactly which attempts reached
  Dust, and its count of all user messages leaves none unaccounted for); every completed call
  reached Dust once, in order; every answer streaming at a SIGTERM completed; no `404 Session not
  found` for a Streamable HTTP session (nginx's log and the clients); no crossed context; every
  conversation goes on (same handle, next turn). Reported: calls, completed and failed (with
  reasons) per kind, legacy reconnects, the time of each restart, what nginx saw (502s, requests
  passed to the next bridge, its error log).

Per fault: attempts affected (failed while the fault was on or just after; for `rolling_restart`,
all of the run's), clients affected,
recovered (a later turn of the same conversation succeeded), lost (anything acknowledged that
did not survive: a conversation handle that stopped working, a crossed context, an answer that
was not exact), and the fault's own checks. Bounded in time, loopback only, every child stopped
by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import (  # noqa: E402
    ClientKeys,
    Conversationalist,
    Stack,
    TurnSample,
    bridge_status,
    fd_breakdown,
    load_average,
    machine_facts,
    metric_value,
    run_bounded,
    sim_faults,
    sim_stats,
    summarise,
)
from bench.rolling import (  # noqa: E402
    KINDS,
    RETRYABLE_REASONS,
    Audit,
    BalancedStack,
    Probe,
    RollingLoad,
    audit,
    nginx_errors,
    nginx_figures,
    nginx_log,
    reason_of,
    restart_one,
)
from bench.wire import Connection, McpWire, ToolResult, WireError  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.simulator.agents import story_text  # noqa: E402

OVERALL_TIMEOUT = 2400.0
FAULT_TIMEOUT = 240.0  # seconds one fault may take (plus --slow-seconds)
# The bridge's Dust keep-alive time in these runs (BRIDGE_DUST_KEEPALIVE_SECONDS, left at its default).
DUST_KEEPALIVE_SECONDS: float = Settings.model_fields["dust_keepalive_seconds"].default
# The bound of the bridge's one pool of Redis connections in these runs (BRIDGE_REDIS_MAX_CONNECTIONS).
REDIS_MAX_CONNECTIONS: int = Settings.model_fields["redis_max_connections"].default
ALL_FAULTS = (
    "redis",
    "dust_5xx",
    "dust_503",
    "dust_429",
    "stream_cut",
    "dust_slow",
    "clamd",
    "disconnect",
    "sigterm",
    "rolling_restart",
)
# Faults run against the one-bridge stack the load runs on; the others bring their own topology.
SHARED_STACK_FAULTS = tuple(f for f in ALL_FAULTS if f != "rolling_restart")
_LOST_MARKERS = ("unknown or expired conversation handle", "streamed text differs", "wrong answer")


# --- the background load ------------------------------------------------------------------------


class LoadDriver:
    """`n` conversationalists looping turns (retrying failed ones) until stopped; can be paused."""

    def __init__(self, stack: Stack, keys: ClientKeys, n: int, chars: int, think: float = 0.3) -> None:
        self.clients = [
            Conversationalist(i, stack.mcp_url, key=keys.keys[i], answer_chars=chars, idle_timeout=60)
            for i in range(n)
        ]
        self.think = think
        self._run = asyncio.Event()
        self._stop = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        gate = asyncio.Semaphore(25)

        async def warm(c: Conversationalist) -> None:
            async with gate:
                await c.warm()

        await asyncio.gather(*(warm(c) for c in self.clients))
        self._run.set()
        self._tasks = [asyncio.get_running_loop().create_task(self._loop(c)) for c in self.clients]

    async def _loop(self, c: Conversationalist) -> None:
        attempt = 1
        while not self._stop:
            await self._run.wait()
            if self._stop:
                return
            sample = await c.turn(attempt)
            if sample.ok:
                attempt = 1
                await asyncio.sleep(self.think * random.uniform(0.5, 1.5))
            else:
                attempt += 1
                await asyncio.sleep(min(2.0, 0.25 * attempt) * random.uniform(0.5, 1.5))

    async def pause(self, timeout: float = 120.0, hung_after: float = 60.0) -> int:
        """Stop starting turns and wait for the ones in flight to end; returns how many calls are
        still in flight after `hung_after` seconds (hung: the bridge never answers them)."""
        self._run.clear()
        async with asyncio.timeout(timeout):
            while True:
                now = time.perf_counter()
                waiting = [c for c in self.clients if c.in_call]
                if all(now - c.call_started > hung_after for c in waiting):
                    return len(waiting)
                await asyncio.sleep(0.05)

    def resume(self) -> None:
        self._run.set()

    async def stop(self) -> None:
        self._stop = True
        self._run.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self.clients:
            c.close()

    @property
    def samples(self) -> list[TurnSample]:
        return [s for c in self.clients for s in c.samples]

    def good_turn_since(self, t: float) -> bool:
        return any(s.ok and s.started >= t for s in self.samples)


@dataclass
class FaultReport:
    name: str
    description: str
    injected_at: float = 0.0
    lifted_at: float = 0.0
    recovered_at: float | None = None
    attempts: int = 0
    affected: int = 0
    affected_clients: int = 0
    recovered_clients: int = 0
    lost: int = 0
    errors_seen: dict[str, int] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.recovered_clients == self.affected_clients
            and all(v is True for v in self.checks.values() if isinstance(v, bool))
        )

    def as_dict(self) -> dict[str, Any]:
        body = {k: v for k, v in vars(self).items() if k not in ("injected_at", "lifted_at", "recovered_at")}
        body["fault_seconds"] = round(self.lifted_at - self.injected_at, 2)
        body["recovery_seconds"] = (
            round(max(0.0, self.recovered_at - self.lifted_at), 2) if self.recovered_at is not None else None
        )
        body["passed"] = self.passed
        return body


def _normalise(error: str) -> str:
    """An error message with ids, numbers and handles blanked, so equal causes count together."""
    error = re.sub(r"dmc_[A-Za-z0-9_-]+", "<handle>", error)
    error = re.sub(r"\b[A-Za-z0-9]{10}\b", "<id>", error)
    return re.sub(r"\d+(\.\d+)?", "N", error)[:160]


async def account(
    report: FaultReport, load: LoadDriver, window_end_slack: float = 1.0, recover_within: float = 90.0
) -> None:
    """Fill in affected/recovered/lost for the window from `injected_at` until the fault is over
    for the clients: `lifted_at + slack`, or the first good turn begun after `lifted_at` if that
    comes later (a fault can outlive its injection, e.g. an open circuit breaker)."""
    start = report.injected_at
    deadline = time.perf_counter() + recover_within
    while True:
        samples = load.samples
        first_good = min((s.started for s in samples if s.ok and s.started >= report.lifted_at), default=None)
        end = max(
            report.lifted_at + window_end_slack, first_good if first_good is not None else time.perf_counter()
        )
        in_window = [s for s in samples if s.ended >= start and s.started <= end]
        failed = [s for s in in_window if not s.ok]
        clients = {s.client for s in failed}
        last_failure = {c: max(s.ended for s in failed if s.client == c) for c in clients}
        recovered = {
            c
            for c in clients
            if any(s.ok and s.client == c and s.started >= last_failure[c] for s in samples)
        }
        now = time.perf_counter()
        # A turn is recorded when it ends: until the window is over and no call begun inside it is
        # still running, the window's failures (and losses) may not all be in `samples` yet.
        settled = now >= end and not any(c.in_call and c.call_started <= end for c in load.clients)
        if (settled and recovered == clients) or now > deadline:
            break
        await asyncio.sleep(0.25)
    report.attempts = len(in_window)
    report.affected = len(failed)
    report.affected_clients = len(clients)
    report.recovered_clients = len(recovered)
    if clients and recovered:
        report.recovered_at = max(
            min(s.ended for s in samples if s.ok and s.client == c and s.started >= last_failure[c])
            for c in recovered
        )
    elif not clients:
        report.recovered_at = report.lifted_at
    since = [s for s in samples if s.ended >= start]
    lost = [
        s
        for s in since
        if s.crossed is not None or (s.error is not None and any(m in s.error for m in _LOST_MARKERS))
    ]
    report.lost = len(lost)
    if lost:
        report.extra["lost_examples"] = [
            f"client {s.client} turn {s.turn}: {s.crossed or s.error}" for s in lost[:5]
        ]
    kinds: dict[str, int] = {}
    for s in failed:
        kind = _normalise(s.crossed or s.error or "")
        kinds[kind] = kinds.get(kind, 0) + 1
    report.errors_seen = dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:6])


# --- faults -------------------------------------------------------------------------------------


@dataclass
class Ctx:
    stack: Stack
    load: LoadDriver
    http: httpx2.AsyncClient
    keys: ClientKeys
    spare_keys: list[str]
    slow_seconds: float


async def _wait_for(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.HTTPError, WireError, OSError):
            if await check():
                return True
        await asyncio.sleep(interval)
    return False


async def fault_redis(ctx: Ctx, down_seconds: float = 8.0) -> FaultReport:
    report = FaultReport("redis", f"Redis SIGKILLed, restarted after {down_seconds:g} s (same data dir)")
    stack, http = ctx.stack, ctx.http
    assert stack.redis is not None and stack.bridge is not None
    handles_before = {c.index: c.handle for c in ctx.load.clients if c.handle}
    report.injected_at = time.perf_counter()
    stack.redis.stop(signal.SIGKILL)
    ready_codes: set[int] = set()
    reasons: set[str] = set()
    healthz_ok = True
    t_end = time.monotonic() + down_seconds
    while time.monotonic() < t_end:
        with contextlib.suppress(httpx2.HTTPError):
            ready = await http.get(f"{stack.bridge.url}/readyz", timeout=10)
            ready_codes.add(ready.status_code)
            if ready.status_code != 200:
                reasons.add(str(ready.json().get("reason"))[:160])
            healthz_ok &= (await http.get(f"{stack.bridge.url}/healthz", timeout=10)).status_code == 200
        await asyncio.sleep(1.0)
    down_errors = [
        s.error or "" for s in ctx.load.samples if s.started >= report.injected_at and s.error is not None
    ]
    stack.start_redis_again()
    report.lifted_at = time.perf_counter()
    await account(report, ctx.load)
    continued = {c.index: c.handle for c in ctx.load.clients if c.index in handles_before}
    report.checks = {
        "bridge_alive": stack.bridge.popen.poll() is None,
        "healthz_200_while_down": healthz_ok,
        "readyz_503_while_down": 503 in ready_codes,
        "errors_name_the_store": bool(down_errors)
        and all(("context store" in e or "Redis" in e) for e in down_errors if "tool error" in e),
        "handles_survived": all(continued[i] == h for i, h in handles_before.items()),
        "readyz_200_after": await _wait_for(
            lambda: _status_is(http, f"{stack.bridge.url}/readyz", 200), timeout=30
        ),
    }
    report.extra |= {"readyz_reasons_while_down": sorted(reasons)[:3], "failed_while_down": len(down_errors)}
    return report


async def _status_is(http: httpx2.AsyncClient, url: str, status: int) -> bool:
    return (await http.get(url, timeout=10)).status_code == status


async def _burst(ctx: Ctx, name: str, status: int, kind: str, count: int) -> FaultReport:
    report = FaultReport(name, f"the next {count} conversation POSTs to Dust answer {status} {kind}")
    rule = {
        "match": "/assistant/conversations",
        "method": "POST",
        "status": status,
        "type": kind,
        "count": count,
    }
    report.injected_at = time.perf_counter()
    await sim_faults(ctx.http, ctx.stack.simulator, fail_next=[rule])

    async def consumed() -> bool:
        return not (await sim_faults(ctx.http, ctx.stack.simulator))["fail_next"]

    drained = await _wait_for(consumed, timeout=120)
    report.lifted_at = time.perf_counter()
    await sim_faults(ctx.http, ctx.stack.simulator, fail_next=[])
    await account(report, ctx.load, recover_within=90)
    assert ctx.stack.bridge is not None
    report.checks = {"burst_consumed": drained, "bridge_alive": ctx.stack.bridge.popen.poll() is None}
    return report


async def fault_dust_5xx(ctx: Ctx, count: int = 20) -> FaultReport:
    return await _burst(ctx, "dust_5xx", 500, "internal_server_error", count)


async def fault_dust_503(ctx: Ctx, count: int = 40) -> FaultReport:
    return await _burst(ctx, "dust_503", 503, "service_unavailable", count)


async def fault_dust_429(ctx: Ctx, count: int = 40) -> FaultReport:
    return await _burst(ctx, "dust_429", 429, "rate_limit_error", count)


async def fault_stream_cut(ctx: Ctx, seconds: float = 10.0) -> FaultReport:
    report = FaultReport(
        "stream_cut", "each answer's Dust stream cut once after 3 events, then `done` every 4"
    )
    sim, bridge = ctx.stack.simulator, ctx.stack.bridge
    assert sim is not None and bridge is not None
    reconnects0 = await metric_value(ctx.http, bridge, "bridge_stream_reconnects_total")
    report.injected_at = time.perf_counter()
    await sim_faults(ctx.http, sim, cut_stream_after=3, events_per_connection=4)
    await asyncio.sleep(seconds)
    await sim_faults(ctx.http, sim, cut_stream_after=None, events_per_connection=50)
    report.lifted_at = time.perf_counter()
    await account(report, ctx.load)
    # Every turn whose answer streamed (at least partly) while the cuts were on.
    during = [s for s in ctx.load.samples if s.ended >= report.injected_at and s.started <= report.lifted_at]
    reconnects = await metric_value(ctx.http, bridge, "bridge_stream_reconnects_total") - reconnects0
    report.checks = {
        "answers_during_cut": len(during) > 0,
        "all_exact_during_cut": all(s.ok for s in during),
        "bridge_reconnected": reconnects >= len(during),
    }
    report.extra |= {"turns_while_cutting": len(during), "bridge_reconnects": reconnects}
    return report


async def _ask_raw(
    wire: McpWire, agent: str, message: str, on_progress: Callable[[str], None] | None = None
) -> ToolResult:
    return await wire.call_tool("ask_agent", {"agent": agent, "message": message}, on_progress=on_progress)


async def fault_dust_slow(
    ctx: Ctx, clients: int = 10, idle_timeout: float = 30.0, heartbeat: float = 15.0
) -> FaultReport:
    slow = ctx.slow_seconds
    report = FaultReport(
        "dust_slow", f"{clients} clients ask an agent silent for {slow:g} s; {idle_timeout:g} s idle timeout"
    )
    sim = ctx.stack.simulator
    assert sim is not None
    await sim_faults(ctx.http, sim, slow_seconds=slow)
    wires = [
        McpWire(ctx.stack.mcp_url, key=ctx.spare_keys[i], idle_timeout=idle_timeout) for i in range(clients)
    ]
    heartbeats = [0] * clients

    async def one(i: int) -> tuple[bool, str]:
        message = f"slow client {i} {os.urandom(3).hex()}"

        def progress(text: str) -> None:
            if text.startswith("[waiting]"):
                heartbeats[i] += 1

        try:
            # Bounded: a call the bridge never answers is kept open by the SDK's pings forever.
            async with asyncio.timeout(slow + 90):
                result = await _ask_raw(wires[i], "slow", message, progress)
        except TimeoutError:
            wires[i].abort()
            return False, f"HangError: no result within {slow + 90:g}s"
        except WireError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        answer = str(result.structured.get("answer"))
        return answer == f"Done after waiting: {message}", answer[:80]

    report.injected_at = time.perf_counter()
    started = time.monotonic()
    outcomes = await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    report.lifted_at = time.perf_counter()
    await sim_faults(ctx.http, sim, slow_seconds=3.0)
    for w in wires:
        w.close()
    await account(report, ctx.load)
    report.extra |= {
        "slow_answers_ok": sum(ok for ok, _ in outcomes),
        "slow_seconds_measured": round(elapsed, 1),
        "heartbeats_min": min(heartbeats),
        "failures": [why for ok, why in outcomes if not ok][:3],
    }
    report.checks = {
        "all_slow_answers_complete": all(ok for ok, _ in outcomes),
        "lived_past_60s": elapsed >= min(60.0, slow),
        "heartbeats_kept_them_alive": min(heartbeats) >= int(slow // heartbeat) - 1,
    }
    return report


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "chaosboundary" + os.urandom(6).hex()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def upload_once(conn: Connection, key: str, data: bytes) -> tuple[int, str]:
    """POST /v1/uploads; the status and the problem type (or "created")."""
    body, content_type = _multipart("notes.txt", data)
    response = await conn.request(
        "POST", "/v1/uploads", {"Authorization": f"Bearer {key}", "Content-Type": content_type}, body
    )
    raw = await conn.read_body(response)
    if response.status == 201:
        return 201, "created"
    try:
        kind = str(json.loads(raw).get("type"))
    except ValueError:
        kind = raw[:80].decode(errors="replace")
    return response.status, kind


def temp_files(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file()]


async def fault_clamd(ctx: Ctx, uploaders: int = 8, down_seconds: float = 5.0) -> FaultReport:
    report = FaultReport(
        "clamd", f"clamd SIGKILLed under {uploaders} looping uploaders, back after {down_seconds:g} s"
    )
    stack = ctx.stack
    assert stack.clamd is not None and stack.bridge is not None
    data = (b"The quarterly notes, line after line of plain text.\n" * 6000)[: 256 * 1024]
    outcomes: list[tuple[float, float, int, str]] = []
    stop = False

    async def uploader(i: int) -> None:
        conn = Connection(stack.bridge.url if stack.bridge else "", idle_timeout=60)
        while not stop:
            t0 = time.perf_counter()
            try:
                status, kind = await upload_once(conn, ctx.spare_keys[i], data)
            except WireError as exc:
                status, kind = 0, type(exc).__name__
            outcomes.append((t0, time.perf_counter(), status, kind))
            await asyncio.sleep(0.05)
        conn.close()

    tasks = [asyncio.get_running_loop().create_task(uploader(i)) for i in range(uploaders)]
    await _wait_for(lambda: _true(sum(1 for o in outcomes if o[2] == 201) >= uploaders), timeout=60)
    report.injected_at = time.perf_counter()
    stack.clamd.stop(signal.SIGKILL)
    await asyncio.sleep(down_seconds)
    stack.start_clamd_again()
    report.lifted_at = time.perf_counter()
    recovered = await _wait_for(
        lambda: _true(any(o[2] == 201 and o[0] > report.lifted_at for o in outcomes)), timeout=60
    )
    stop = True
    await asyncio.gather(*tasks)
    in_flight = await _wait_for(lambda: _in_flight_zero(ctx), timeout=30)
    leftovers = temp_files(stack.upload_dir)
    during = [o for o in outcomes if o[1] >= report.injected_at and o[0] <= report.lifted_at]
    refused = [o for o in during if o[2] != 201]
    report.attempts = len(during)
    report.affected = len(refused)
    report.affected_clients = len(refused) and uploaders
    report.recovered_clients = report.affected_clients if recovered else 0
    report.recovered_at = min(
        (o[1] for o in outcomes if o[2] == 201 and o[0] > report.lifted_at), default=None
    )
    kinds: dict[str, int] = {}
    for o in refused:
        kinds[f"{o[2]} {o[3]}"] = kinds.get(f"{o[2]} {o[3]}", 0) + 1
    report.errors_seen = kinds
    report.checks = {
        "refusals_are_503_scanner_unavailable": bool(refused)
        and all(o[2] == 503 and o[3] == "scanner_unavailable" for o in refused),
        "no_temp_files_left": not leftovers,
        "uploads_work_again": recovered,
        "no_upload_in_flight_after": in_flight,
    }
    report.extra |= {"uploads_total": len(outcomes), "leftover_files": leftovers[:3]}
    return report


async def _true(value: bool) -> bool:
    return value


async def _in_flight_zero(ctx: Ctx) -> bool:
    assert ctx.stack.bridge is not None
    return int((await bridge_status(ctx.http, ctx.stack.bridge))["uploads"]["in_flight"]) == 0


async def _quiescent_counts(ctx: Ctx) -> dict[str, int]:
    """Bridge tasks/fds and simulator streams with the load paused and nothing streaming."""
    assert ctx.stack.bridge is not None and ctx.stack.simulator is not None
    hung = await ctx.load.pause()

    async def settled() -> bool:
        status = await bridge_status(ctx.http, ctx.stack.bridge)
        stats = await sim_stats(ctx.http, ctx.stack.simulator)
        return status["active_streams"] == 0 and stats["open_streams"] == 0

    await _wait_for(settled, timeout=60)
    # Idle Dust connections stay pooled for the keep-alive time, and the pool sweeps them on a
    # timer of that period: after twice that, any Dust socket still open is one in use or leaked.
    await asyncio.sleep(2 * DUST_KEEPALIVE_SECONDS + 1)
    status = await bridge_status(ctx.http, ctx.stack.bridge)
    stats = await sim_stats(ctx.http, ctx.stack.simulator)
    ports = {"client_sockets": ctx.stack.bridge.port, "dust_sockets": ctx.stack.simulator.port}
    if ctx.stack.redis is not None:
        ports["redis_sockets"] = ctx.stack.redis.port
    return {
        "tasks": status["process"]["tasks"],
        "open_fds": status["process"]["open_fds"],
        **fd_breakdown(ctx.stack.bridge.pid, ports),
        "active_streams": status["active_streams"],
        "sim_open_streams": stats["open_streams"],
        "cancels": len(stats["cancels"]),
        "hung_load_calls": hung,
    }


async def start_long_answers(
    ctx: Ctx, count: int, key_offset: int = 0
) -> tuple[list[McpWire], list[asyncio.Task[ToolResult]], list[str], list[asyncio.Event]]:
    """`count` clients asking the storyteller (about 2,000 characters, several seconds each)."""
    wires = [
        McpWire(ctx.stack.mcp_url, key=ctx.spare_keys[key_offset + i], idle_timeout=60) for i in range(count)
    ]
    messages = [f"the sea, told to client {i} {os.urandom(3).hex()}" for i in range(count)]
    first = [asyncio.Event() for _ in range(count)]
    tasks = [
        asyncio.get_running_loop().create_task(
            _ask_raw(wires[i], "storyteller", messages[i], lambda text, e=first[i]: e.set())
        )
        for i in range(count)
    ]
    return wires, tasks, messages, first


async def _drop_mid_answer(ctx: Ctx, clients: int) -> tuple[float, float]:
    """`clients` long answers started, then every connection dropped once each has its first chunk."""
    wires, tasks, _, first = await start_long_answers(ctx, clients)
    async with asyncio.timeout(120):
        await asyncio.gather(*(e.wait() for e in first))
    dropped_at = time.perf_counter()
    for w in wires:
        w.abort()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return dropped_at, time.perf_counter()


async def fault_disconnect(ctx: Ctx, clients: int = 100) -> FaultReport:
    """Two rounds of mass disconnects; a leak is growth from the end of round 1 to the end of round 2.

    (Round 1 also warms the bridge's connection pool to Dust, which rightly keeps some keep-alive
    sockets, so comparing with a cold start would call that a leak.)
    """
    report = FaultReport("disconnect", f"{clients} clients drop their connections mid-answer at once, twice")
    assert ctx.stack.simulator is not None
    rounds: list[dict[str, int]] = [await _quiescent_counts(ctx)]
    for round_no in (1, 2):
        ctx.load.resume()
        injected, lifted = await _drop_mid_answer(ctx, clients)
        floor = rounds[-1]["cancels"] + clients

        async def cancelled(floor: int = floor) -> bool:
            stats = await sim_stats(ctx.http, ctx.stack.simulator)
            return len(stats["cancels"]) >= floor

        await _wait_for(cancelled, timeout=60)
        if round_no == 2:
            report.injected_at, report.lifted_at = injected, lifted
            await account(report, ctx.load)
        rounds.append(await _quiescent_counts(ctx))
    ctx.load.resume()
    cold, warm, after = rounds
    report.extra |= {"cold": cold, "after_round_1": warm, "after_round_2": after}
    report.checks = {
        "one_cancel_per_dropped_answer": after["cancels"] - warm["cancels"] == clients
        and warm["cancels"] - cold["cancels"] == clients,
        "no_leaked_streams": after["active_streams"] == 0 and after["sim_open_streams"] == 0,
        "no_leaked_tasks": after["tasks"] <= warm["tasks"] + 2,
        # Sockets of clients that left, or to Dust beyond the pool the first round warmed up, or
        # anything else (files, pipes).
        # (the load keeps one keep-alive connection per client, this run one for /status)
        "no_leaked_client_sockets": after["client_sockets"] <= len(ctx.load.clients) + 1
        and after["client_sockets_close_wait"] == 0,
        # Counted once idle pooled connections have expired (see _quiescent_counts): a leak would
        # add about one socket per dropped answer, or leave CLOSE_WAITs.
        "no_leaked_dust_sockets": after["dust_sockets"] - warm["dust_sockets"] < max(3, clients // 10)
        and after["dust_sockets_close_wait"] == 0,
        "no_leaked_other_fds": after["other"] <= warm["other"] + 2,
        # The process's one Redis pool keeps idle connections for BRIDGE_REDIS_IDLE_SECONDS (60 s, longer
        # than the count waits), but never more than its bound, and none half-open.
        "redis_sockets_within_the_pool_bound": after.get("redis_sockets", 0) <= REDIS_MAX_CONNECTIONS
        and after.get("redis_sockets_close_wait", 0) == 0,
    }
    return report


async def fault_sigterm(
    ctx: Ctx, clients: int = 30, grace: float = 30.0, key_offset: int = 200
) -> FaultReport:
    report = FaultReport("sigterm", f"bridge SIGTERMed with {clients} answers streaming, then restarted")
    stack = ctx.stack
    assert stack.bridge is not None
    wires, tasks, messages, first = await start_long_answers(ctx, clients, key_offset=key_offset)
    async with asyncio.timeout(120):
        await asyncio.gather(*(e.wait() for e in first))
    report.injected_at = time.perf_counter()
    t0 = time.monotonic()
    os.kill(stack.bridge.pid, signal.SIGTERM)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    answered = time.monotonic() - t0
    try:
        code = await asyncio.to_thread(stack.bridge.popen.wait, grace + 15)
    except Exception:
        code = None
    exited = time.monotonic() - t0
    exact = 0
    for message, result in zip(messages, results, strict=True):
        if isinstance(result, ToolResult):
            answer = str(result.structured.get("answer"))
            exact += answer == story_text(message) and "".join(result.chunks) == answer
    for w in wires:
        w.close()
    stack.restart_bridge()
    report.lifted_at = time.perf_counter()
    await account(report, ctx.load, recover_within=120)
    report.extra |= {
        "in_flight_at_sigterm": clients,
        "completed_exactly": exact,
        "answers_done_after_s": round(answered, 1),
        "bridge_exit_code": code,
        "bridge_exited_after_s": round(exited, 1),
        "failures": [f"{type(r).__name__}: {r}"[:120] for r in results if not isinstance(r, ToolResult)][:3],
    }
    report.lost += clients - exact
    report.checks = {
        "in_flight_answers_complete": exact == clients,
        "within_grace": answered <= grace,
        "bridge_exited": code is not None,
    }
    return report


async def fault_rolling_restart(
    bridges: int = 3,
    per_kind: int = 10,
    answer_chars: int = 300,
    grace: float = 30.0,
    call_timeout: float = 60.0,
) -> FaultReport:
    """Its own stack (bench/rolling.py): `bridges` bridges on one Redis behind nginx, `per_kind` SDK
    clients of each kind conversing through nginx; each bridge in turn SIGTERMed, awaited, started
    again on its port and awaited on /readyz while answers stream."""
    report = FaultReport(
        "rolling_restart",
        f"{bridges} bridges behind nginx restarted one after another (SIGTERM, exit, start, /readyz)"
        f" under {per_kind} SDK clients of each kind ({', '.join(KINDS)})",
    )
    keys = ClientKeys((per_kind + bridges) * len(KINDS))
    probe_keys = keys.keys[per_kind * len(KINDS) :]
    extra = {**keys.env, "BRIDGE_SHUTDOWN_GRACE_SECONDS": f"{grace:g}"}
    with contextlib.ExitStack() as cleanup, BalancedStack(bridges, bridge_extra=extra) as stack:
        cleanup.callback(keys.remove)
        assert stack.simulator is not None
        load = RollingLoad(stack, keys.keys, per_kind, answer_chars=answer_chars, call_timeout=call_timeout)
        async with httpx2.AsyncClient() as http:
            load.start()
            restarts: list[dict[str, Any]] = []
            probes: list[Probe] = []
            try:
                warmed = await load.wait_for_turns(since=0.0, turns=2, timeout=90)
                report.injected_at = time.perf_counter()
                for i in range(bridges):
                    times, asked = await restart_one(
                        stack, i, http, grace, probe_keys[i * len(KINDS) : (i + 1) * len(KINDS)], call_timeout
                    )
                    probes += asked
                    # Every conversation goes on (next turn, same handle) before the next bridge stops.
                    times["every_client_answered_after"] = await load.wait_for_turns(
                        since=times["ready_at"], turns=1, timeout=60
                    )
                    restarts.append(times)
                report.lifted_at = time.perf_counter()
                continued = await load.wait_for_turns(since=report.lifted_at, turns=2, timeout=90)
                report.recovered_at = time.perf_counter()
            finally:
                stuck = await load.stop(timeout=call_timeout + 30)
            found = await audit(http, stack.simulator, load.clients)
        seen = nginx_figures(nginx_log(stack.nginx_dir)) | {"error_log": nginx_errors(stack.nginx_dir)}
    _rolling_figures(report, load, restarts, found, seen)
    _probe_figures(report, probes, found)
    failed = [a for a in load.attempts if not a.ok]
    report.checks = {
        "warmed_up": warmed,
        "bridges_exited_cleanly": all(r["exit_code"] == 0 for r in restarts),
        "bridges_ready_again": all(r["readyz_200"] for r in restarts),
        "failures_clear_and_retryable": all(reason_of(a.error or "") in RETRYABLE_REASONS for a in failed),
        "in_flight_answers_complete": all(p.ok for p in probes),
        "failed_calls_posted_nothing": not found.failed_posted
        and found.unattributed == sum(1 for p in probes if p.posted)
        and not any(p.posted for p in probes if not p.ok),
        "completed_calls_posted_once": not found.completed_missing and not found.order_broken,
        "no_session_not_found": seen["status_404_mcp"] == 0
        and not any("Session not found" in (a.error or "") for a in failed),
        "no_crossed_contexts": not any(a.crossed for a in load.attempts),
        "conversations_continue": continued and all(r["every_client_answered_after"] for r in restarts),
        "load_stopped_cleanly": stuck == 0,
    }
    return report


def _rolling_figures(
    report: FaultReport, load: RollingLoad, restarts: list[dict[str, Any]], found: Audit, seen: dict[str, Any]
) -> None:
    attempts = load.attempts
    failed = [a for a in attempts if not a.ok]
    clients = {(a.kind, a.client) for a in failed}
    recovered = {
        (a.kind, a.client)
        for a in attempts
        if a.ok
        and (a.kind, a.client) in clients
        and a.started >= max(f.ended for f in failed if (f.kind, f.client) == (a.kind, a.client))
    }
    report.attempts, report.affected = len(attempts), len(failed)
    report.affected_clients, report.recovered_clients = len(clients), len(recovered)
    content = [a for a in failed if a.crossed or reason_of(a.error or "") not in RETRYABLE_REASONS]
    # Lost: a failed call whose message reached Dust (its answer never reached its caller), a
    # completed one missing from Dust or there twice, a crossed context or an answer not exact.
    report.lost = len(found.failed_posted) + len(found.completed_missing)
    report.lost += sum(1 for a in content if a.crossed or "HangError" not in (a.error or ""))
    kinds: dict[str, int] = {}
    for a in failed:
        key = f"{a.kind}: {reason_of(a.crossed or a.error or '')}"
        kinds[key] = kinds.get(key, 0) + 1
    report.errors_seen = dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
    windows = [(r["sigterm_at"], r["ready_at"] + 3.0) for r in restarts]
    per_kind: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [a for a in attempts if a.kind == kind]
        members = [c for c in load.clients if c.kind == kind]
        per_kind[kind] = {
            "clients": len(members),
            "calls": len(mine),
            "completed": sum(1 for a in mine if a.ok),
            "failed_then_retried": sum(1 for a in mine if not a.ok),
            "failed_but_posted": sum(1 for line in found.failed_posted if line.startswith(f"{kind} ")),
            # Per reason: how many calls failed so, and how many of those had reached Dust.
            "failures": {
                reason: {
                    "failed": count,
                    "reached_dust": sum(
                        1
                        for line in found.failed_posted
                        if line.startswith(f"{kind} ") and line.endswith(f": {reason}")
                    ),
                }
                for reason, count in _count(
                    reason_of(a.crossed or a.error or "") for a in mine if not a.ok
                ).items()
            },
            "in_flight_at_a_sigterm": sum(
                1 for a in mine for r in restarts if a.started < r["sigterm_at"] < a.ended
            ),
            "connections": sum(len(c.connections) for c in members),
            "reconnects": sum(len(c.connections) - 1 for c in members),
            "reconnect_reasons": _count(why for c in members for _, why in c.connections[1:]),
            "connect_failures": _count(why for c in members for why in c.connect_failures),
        }
    report.extra |= {
        "per_kind": per_kind,
        "restarts": [{k: v for k, v in r.items() if k not in ("sigterm_at", "ready_at")} for r in restarts],
        "failures_outside_restarts": sum(
            1 for a in failed if not any(a.ended >= start and a.started <= end for start, end in windows)
        ),
        "nginx": seen,
        "dust": {
            "user_messages": found.dust_user_messages,
            "completed_calls": found.completed,
            "failed_calls": found.failed,
            "completed_posted_once": found.completed_posted_once,
            "failed_but_posted": len(found.failed_posted),
            "unattributed_posts": found.unattributed,
        },
    }
    examples = found.failed_posted[:5] + found.completed_missing[:3] + found.order_broken[:3]
    examples += [f"{a.kind} {a.client} turn {a.turn}: {a.crossed or a.error}" for a in content[:5]]
    if examples:
        report.extra["lost_examples"] = examples


def _probe_figures(report: FaultReport, probes: list[Probe], found: Audit) -> None:
    """Long answers streaming from each bridge as it was stopped: per kind, how many completed.
    Each one not exact is lost (it was streaming: Dust had its message), and so is any message in
    Dust that neither a load client's conversation nor a probe accounts for."""
    report.extra["in_flight_on_the_stopping_bridge"] = {
        kind: {
            "asked": sum(1 for p in probes if p.kind == kind),
            "completed_exactly": sum(1 for p in probes if p.kind == kind and p.ok),
            "failed_but_posted": sum(1 for p in probes if p.kind == kind and not p.ok and p.posted),
            "failures": _count(reason_of(p.error or "") for p in probes if p.kind == kind and not p.ok),
        }
        for kind in KINDS
    }
    lost = [p for p in probes if not p.ok]
    report.lost += len(lost) + max(0, found.unattributed - sum(1 for p in probes if p.posted))
    if lost:
        report.extra.setdefault("lost_examples", [])
        report.extra["lost_examples"] += [f"{p.kind} probe on bridge {p.bridge}: {p.error}" for p in lost[:3]]


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


FAULTS: dict[str, Callable[[Ctx], Awaitable[FaultReport]]] = {
    "redis": fault_redis,
    "dust_5xx": fault_dust_5xx,
    "dust_503": fault_dust_503,
    "dust_429": fault_dust_429,
    "stream_cut": fault_stream_cut,
    "dust_slow": fault_dust_slow,
    "clamd": fault_clamd,
    "disconnect": fault_disconnect,
    "sigterm": fault_sigterm,
}


def print_report(r: FaultReport) -> None:
    d = r.as_dict()
    verdict = "PASS" if r.passed else "FAIL"
    print(f"\n--- {r.name}: {r.description} [{verdict}]", flush=True)
    print(
        f"  attempts in window {r.attempts}, affected {r.affected} ({r.affected_clients} clients),"
        f" recovered {r.recovered_clients}/{r.affected_clients} clients, lost {r.lost};"
        f" fault {d['fault_seconds']} s, recovery {d['recovery_seconds']} s"
    )
    for kind, count in r.errors_seen.items():
        print(f"  seen x{count}: {kind}")
    for name, value in r.checks.items():
        print(f"  check {name}: {value}")
    if r.extra:
        print(f"  {json.dumps(r.extra, default=str)}")


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_facts(),
        "load_average_start": load_average(),
        "clients": args.clients,
        "faults": {},
    }
    print(f"machine: {report['machine']}\nload average at start: {report['load_average_start']}", flush=True)
    shared = [name for name in args.only if name in SHARED_STACK_FAULTS]
    if shared:
        await _shared_stack_faults(args, shared, report)
    if "rolling_restart" in args.only:
        # Last, on its own stack, once the one-bridge stack is gone.
        try:
            async with asyncio.timeout(FAULT_TIMEOUT + args.bridges * (args.grace + 90)):
                result = await fault_rolling_restart(
                    args.bridges, args.per_kind, args.answer_chars, args.grace, args.call_timeout
                )
        except TimeoutError:
            result = FaultReport("rolling_restart", "did not finish in time")
            result.checks = {"finished_within_timeout": False}
        print_report(result)
        report["faults"]["rolling_restart"] = result.as_dict()
    report["load_average_end"] = load_average()
    passed = all(f["passed"] for f in report["faults"].values())
    if "load_totals" in report:
        print(f"\nload turns {report['load_totals']}", end="; ")
    print(f"load average at end {report['load_average_end']}")
    print("ALL FAULTS PASSED" if passed else "SOME FAULTS FAILED")
    report["passed"] = passed
    return report


async def _shared_stack_faults(args: argparse.Namespace, names: list[str], report: dict[str, Any]) -> None:
    """The faults that run on the one-bridge stack, under one load, one after another."""
    keys = ClientKeys(args.clients + 300)
    with (
        contextlib.ExitStack() as cleanup,
        Stack(redis=True, redis_persistent=True, clamd=True, bridge_extra=keys.env) as stack,
    ):
        cleanup.callback(keys.remove)
        load = LoadDriver(stack, keys, args.clients, args.answer_chars)
        async with httpx2.AsyncClient() as http:
            ctx = Ctx(stack, load, http, keys, keys.keys[args.clients :], args.slow_seconds)
            await load.start()
            await asyncio.sleep(5)  # steady state before the first fault
            for name in names:
                try:
                    async with asyncio.timeout(FAULT_TIMEOUT + args.slow_seconds):
                        result = await FAULTS[name](ctx)
                except TimeoutError:
                    result = FaultReport(name, "did not finish in time")
                    result.checks = {"finished_within_timeout": False}
                    ctx.load.resume()
                print_report(result)
                report["faults"][name] = result.as_dict()
                await asyncio.sleep(3)
            await load.stop()
        overall = summarise(load.samples, 1.0)
        totals = ("turns", "ok", "errors", "crossed", "unremembered", "error_kinds")
        report["load_totals"] = {k: overall[k] for k in totals}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--clients", type=int, default=100, help="conversationalists in the load (default 100)"
    )
    parser.add_argument("--answer-chars", type=int, default=200)
    parser.add_argument(
        "--only",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=list(ALL_FAULTS),
        help=f"comma-separated faults, in order (default all: {','.join(ALL_FAULTS)})",
    )
    parser.add_argument("--slow-seconds", type=float, default=70.0)
    parser.add_argument(
        "--bridges", type=int, default=3, help="rolling_restart: bridges behind nginx (default 3)"
    )
    parser.add_argument(
        "--per-kind",
        type=int,
        default=10,
        help="rolling_restart: SDK clients of each kind (session, stateless, sse; default 10)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="rolling_restart: the bridges' BRIDGE_SHUTDOWN_GRACE_SECONDS (default 30)",
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=60.0,
        help="rolling_restart: a call that has no answer by then hangs",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 500:
        parser.error("--clients must be between 1 and 500")
    unknown = set(args.only) - set(ALL_FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if not 5 <= args.slow_seconds <= 300:
        parser.error("--slow-seconds must be between 5 and 300")
    if not 2 <= args.bridges <= 6 or not 1 <= args.per_kind <= 50:
        parser.error("--bridges must be between 2 and 6, --per-kind between 1 and 50")
    if not 1 <= args.grace <= 120 or not 10 <= args.call_timeout <= 300:
        parser.error("--grace must be between 1 and 120 s, --call-timeout between 10 and 300 s")
    return args


def main(argv: list[str] | None = None) -> None:
    report = run_bounded(amain, parse_args(argv), OVERALL_TIMEOUT)
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
