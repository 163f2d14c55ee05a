"""Load run: N concurrent MCP clients, each holding its own conversation for M turns over /mcp.

Usage (from the repository root):

    .venv/bin/python bench/load.py [--clients 100,250,500] [--turns 3] [--answer-chars 200]
                                   [--store redis|memory] [--skip-floor] [--skip-tools-list]
                                   [--tools-list-seconds 10] [--tools-list-replicas 1,2] [--json PATH]

For each level N it starts a fresh simulator, Redis and bridge (production settings, except
warnings-only logs and one client key per client, see below), opens N keep-alive connections,
lets every client list the tools (untimed), and then starts all N together: each client asks the
echo agent M turns back to back in its own conversation, passing the handle back every turn,
over the 2026-07-28 stateless wire. Every answer is checked (bench/_common.py): exact text, the
same handle and Dust conversation every turn, the right turn number, and the streamed progress
text equal to the final answer. Then the same N clients talk to the simulator directly (create or
post, then read the event stream) with the same messages: the floor.

Client keys: each client has its own key (BRIDGE_API_KEYS from a file), so each is its own
principal with the default budgets (300 requests/minute, 8 concurrent answers). This is how a
deployment with many users looks; one shared principal would need BRIDGE_RATE_LIMIT and
BRIDGE_MAX_CONCURRENT_ANSWERS raised instead (the tools/list phase does that, as one principal
sends thousands of requests a second there).

`tools/list` rate: K keep-alive connections loop `tools/list` for a few seconds, in the stateless
2026-07-28 form and over handshake-era sessions, against a bridge with BRIDGE_RATE_LIMIT raised.
`GET /healthz` on the same connections is the HTTP floor of this server stack. Those rows use the
Python client of bench/wire.py, whose own CPU competes with the bridge's on these 2 cores; so the
stateless form is measured again with wrk (a C load generator, installed by `make bench`), against
1 and 2 bridge replicas sharing Redis (--tools-list-replicas), one wrk process per replica with the
connections split evenly, as a Kubernetes Service spreads connections. Every wrk response is
checked (status 200 and the tool list in the body).

Figures: answers/s, p50/p95/p99 time to first chunk (first progress notification with answer
text) and to result, errors, crossed contexts, the bridge's peak RSS and CPU, client CPU, the
peak number of calls in flight, and the machine's load average. Bounded: every level has a time
limit, the whole run too; every child is stopped by pid. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import (  # noqa: E402
    HEADER,
    TEST_DUST_KEY,
    ClientKeys,
    Conversationalist,
    ProcSampler,
    Stack,
    TurnSample,
    cpu_seconds,
    load_average,
    machine_busy_seconds,
    machine_facts,
    percentile,
    row,
    run_bounded,
    summarise,
)
from bench.stream_overhead import int_list  # noqa: E402
from bench.wire import DustWire, McpWire, WireError  # noqa: E402
from tests.procs import start_bridge  # noqa: E402

ECHO_SID = "echo000001"
LEVEL_TIMEOUT = 900.0
OVERALL_TIMEOUT = 3600.0
WARM_PARALLEL = 50


async def _bounded(coros: list[Any], parallel: int) -> list[Any]:
    gate = asyncio.Semaphore(parallel)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


class InFlight:
    """Samples how many clients are inside a call, to report the concurrency actually reached."""

    def __init__(self, clients: list[Conversationalist]) -> None:
        self.clients = clients
        self.samples: list[int] = []

    async def run(self) -> None:
        while True:
            self.samples.append(sum(1 for c in self.clients if c.in_call))
            await asyncio.sleep(0.1)

    def summary(self) -> dict[str, float]:
        values = self.samples or [0]
        return {"peak": max(values), "median": percentile([float(v) for v in values], 50)}


async def bridge_level(
    stack: Stack, keys: ClientKeys, clients_n: int, turns: int, chars: int
) -> dict[str, Any]:
    """N conversationalists, M turns each, all started together."""
    clients = [
        Conversationalist(i, stack.mcp_url, key=keys.keys[i], answer_chars=chars, idle_timeout=300)
        for i in range(clients_n)
    ]
    await _bounded([c.warm() for c in clients], WARM_PARALLEL)
    assert stack.bridge is not None and stack.simulator is not None
    pids = {
        "bridge": stack.bridge_pid,
        "simulator": lambda: stack.simulator.pid if stack.simulator else None,
        "client": os.getpid,
    }
    if stack.redis is not None:
        pids["redis"] = lambda: stack.redis.pid if stack.redis else None
    sampler = ProcSampler(pids, interval=0.5)
    inflight = InFlight(clients)
    go = asyncio.Event()

    async def converse(c: Conversationalist) -> None:
        await go.wait()
        for _ in range(turns):
            await c.turn()

    sampler.sample()
    sampler.start()
    watcher = asyncio.get_running_loop().create_task(inflight.run())
    rss_before = sampler.series["bridge"].rss_kib[-1:] or [0]
    tasks = [asyncio.get_running_loop().create_task(converse(c)) for c in clients]
    await asyncio.sleep(0)
    cpu0 = {name: cpu_seconds(pid() if name != "client" else None) for name, pid in pids.items() if pid()}
    busy0 = machine_busy_seconds()
    started = time.perf_counter()
    go.set()
    async with asyncio.timeout(LEVEL_TIMEOUT):
        await asyncio.gather(*tasks)
    wall = time.perf_counter() - started
    cpu = {
        name: cpu_seconds(pid() if name != "client" else None) - cpu0[name]
        for name, pid in pids.items()
        if name in cpu0 and pid()
    }
    # CPU that other processes on the machine used meanwhile (they perturb every figure).
    cpu["other"] = machine_busy_seconds() - busy0 - sum(cpu.values())
    watcher.cancel()
    await sampler.stop()
    for c in clients:
        c.close()
    samples: list[TurnSample] = [s for c in clients for s in c.samples]
    summary = summarise(samples, wall)
    good = max(summary["ok"], 1)
    summary.update(
        {
            "clients": clients_n,
            "turns_per_client": turns,
            "answer_chars": chars,
            "in_flight": inflight.summary(),
            "bridge_rss_mib": {
                "before": rss_before[0] / 1024,
                "peak": sampler.peak_rss_mib("bridge"),
                "after": sampler.series["bridge"].rss_kib[-1] / 1024,
            },
            "bridge_fds_peak": max(sampler.series["bridge"].fds, default=-1),
            "cpu_s": cpu,
            "cpu_ms_per_answer": {name: used * 1000 / good for name, used in cpu.items()},
            "bridge_cores": cpu.get("bridge", math.nan) / wall,
            "load_average_after": load_average(),
        }
    )
    return summary


async def floor_level(stack: Stack, clients_n: int, turns: int, chars: int) -> dict[str, Any]:
    """The same conversations straight against the simulator (no bridge): the floor."""
    assert stack.simulator is not None
    # Messages are built like the conversationalists' (same lengths, same echo answers).
    shapes = [Conversationalist(i, "http://127.0.0.1:1/mcp", answer_chars=chars) for i in range(clients_n)]
    wires = [DustWire(stack.simulator.url, TEST_DUST_KEY, idle_timeout=300) for _ in range(clients_n)]
    samples: list[TurnSample] = []
    go = asyncio.Event()

    async def converse(i: int) -> None:
        await go.wait()
        conversation: str | None = None
        for turn in range(1, turns + 1):
            message = shapes[i].message(turn)
            sample = TurnSample(i, turn, 1, time.perf_counter(), 0.0)
            try:
                got = await wires[i].ask(ECHO_SID, message, conversation)
            except (WireError, KeyError, ValueError, StopIteration) as exc:
                sample.error = f"{type(exc).__name__}: {exc}"[:200]
            else:
                conversation = got.conversation_id
                sample.first_chunk = got.first_chunk
                if got.text != f"Echo (turn {turn}): {message}":
                    sample.error = f"wrong answer {got.text[:100]!r}"
            sample.ended = time.perf_counter()
            samples.append(sample)

    tasks = [asyncio.get_running_loop().create_task(converse(i)) for i in range(clients_n)]
    await asyncio.sleep(0)
    cpu0 = (cpu_seconds(None), cpu_seconds(stack.simulator.pid))
    started = time.perf_counter()
    go.set()
    async with asyncio.timeout(LEVEL_TIMEOUT):
        await asyncio.gather(*tasks)
    wall = time.perf_counter() - started
    for w in wires:
        w.close()
    summary = summarise(samples, wall)
    good = max(summary["ok"], 1)
    summary["cpu_ms_per_answer"] = {
        "client": (cpu_seconds(None) - cpu0[0]) * 1000 / good,
        "simulator": (cpu_seconds(stack.simulator.pid) - cpu0[1]) * 1000 / good,
    }
    return summary


async def request_rate(
    url: str, connections: int, seconds: float, *, legacy: bool, healthz: bool, bridge_pid: int
) -> dict[str, Any]:
    """Requests/s over `connections` keep-alive connections looping one request for `seconds`."""
    wires = [McpWire(url, legacy=legacy, idle_timeout=60) for _ in range(connections)]
    for w in wires:
        if legacy:
            await w.initialize()
        await w.list_tools()
    latencies: list[float] = []
    errors = 0
    deadline = 0.0

    async def loop(w: McpWire) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                if healthz:
                    response = await w.conn.request("GET", "/healthz", {})
                    await w.conn.read_body(response)
                    if response.status != 200:
                        errors += 1
                else:
                    tools = await w.list_tools()
                    if not any(t.get("name") == "ask_agent" for t in tools):
                        errors += 1
            except WireError:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    client0, bridge0 = cpu_seconds(None), cpu_seconds(bridge_pid)
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(loop(w) for w in wires))
    wall = time.monotonic() - started
    n = max(len(latencies), 1)
    for w in wires:
        w.close()
    return {
        "requests": len(latencies),
        "errors": errors,
        "per_s": len(latencies) / wall,
        "latency_ms": {q: percentile(latencies, p) * 1000 for q, p in (("p50", 50), ("p99", 99))},
        "bridge_cpu_ms_per_request": (cpu_seconds(bridge_pid) - bridge0) * 1000 / n,
        "client_cpu_ms_per_request": (cpu_seconds(None) - client0) * 1000 / n,
        "connections": connections,
    }


# wrk (C, one thread per process) loads the bridge for far less CPU than any Python client, which
# matters when the generator shares the 2 cores with the bridge. Every response is checked in Lua:
# status 200 and the tool list in the body (a refusal or an error body counts as an error).
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/list"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{'
  .. '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
  .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"},'
  .. '"io.modelcontextprotocol/clientCapabilities":{}}}}'
local threads = {}
function setup(thread) table.insert(threads, thread) end
bad = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"ask_agent"', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %.0f %.0f %.0f\\n", summary.requests,
    summary.duration, b, e.connect + e.read + e.write + e.timeout, e.status,
    latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


async def wrk_rate(
    urls: list[str], connections: int, seconds: float, bridge_pids: list[int]
) -> dict[str, Any]:
    """Stateless `tools/list` requests/s from one wrk process per bridge, `connections` split evenly."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    per = max(1, connections // len(urls))
    try:
        cpu0 = [cpu_seconds(pid) for pid in bridge_pids]
        procs = [
            await asyncio.create_subprocess_exec(
                wrk,
                "-t1",
                f"-c{per}",
                f"-d{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for url in urls
        ]
        outputs = []
        for proc in procs:
            async with asyncio.timeout(seconds + 30):
                out, _ = await proc.communicate()
            outputs.append(out.decode(errors="replace"))
        cpu = sum(cpu_seconds(pid) - c for pid, c in zip(bridge_pids, cpu0, strict=True))
    finally:
        os.unlink(script.name)
    requests = errors = 0
    per_s = 0.0
    p50s, p99s = [], []
    for out in outputs:
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result: {out[-500:]}")
        n, duration_us, bad, socket_errors, _status, _max, p50, _p90, p99 = (
            float(x) for x in line.split()[1:]
        )
        requests += int(n)
        errors += int(bad + socket_errors)
        per_s += n / (duration_us / 1e6)
        p50s.append(p50 / 1000)
        p99s.append(p99 / 1000)
    return {
        "requests": requests,
        "errors": errors,
        "per_s": per_s,
        # One figure per wrk process; the worse of them is reported.
        "latency_ms": {"p50": max(p50s), "p99": max(p99s)},
        "bridge_cpu_ms_per_request": cpu * 1000 / max(requests, 1),
        "client_cpu_ms_per_request": float("nan"),
        "connections": per * len(urls),
        "generator": "wrk",
    }


async def tools_list_phase(
    store: str, seconds: float, connections: int, replicas: list[int]
) -> dict[str, Any]:
    """`tools/list` (and the `/healthz` floor) against 1..R bridge replicas sharing Redis."""
    out: dict[str, Any] = {}
    extra = {"BRIDGE_RATE_LIMIT": "1000000/minute"}
    with Stack(redis=store == "redis", bridge_extra=extra) as stack, contextlib.ExitStack() as more:
        assert stack.bridge is not None
        bridges = [stack.bridge]
        for _ in range(max(replicas) - 1):
            extra_bridge = start_bridge(stack.env())
            more.callback(extra_bridge.stop)
            bridges.append(extra_bridge)
        # The wrk rows first, on replicas that have served nothing else: the Python rows leave 50
        # idle handshake-era sessions in the first bridge, which measurably slowed it afterwards.
        cases: list[tuple[str, int, Callable[[], Awaitable[dict[str, Any]]]]] = []
        if shutil.which("wrk") is not None:
            for r in replicas:
                urls = [f"{b.url}/mcp" for b in bridges[:r]]
                pids = [b.pid for b in bridges[:r]]
                label = f"tools/list 2026-07-28 stateless, wrk, {r} replica(s)"
                cases.append((label, r, functools.partial(wrk_rate, urls, connections, seconds, pids)))
        else:
            print("  (wrk is not installed, `make bench` installs it: no replica rows)", flush=True)
        for label, legacy, healthz in (
            ("GET /healthz (HTTP floor)", False, True),
            ("tools/list 2026-07-28 stateless", False, False),
            ("tools/list 2025-11-25 session", True, False),
        ):
            rate = functools.partial(
                request_rate,
                f"{stack.bridge.url}/mcp",
                connections,
                seconds,
                legacy=legacy,
                healthz=healthz,
                bridge_pid=stack.bridge.pid,
            )
            cases.append((label, 1, rate))
        for label, r, measuring in cases:
            figures = await measuring()
            figures["replicas"] = r
            out[f"{label} x{connections}"] = figures
            print(
                f"  {label:<52} {connections:>3} conns {figures['per_s']:>7.0f} req/s"
                f"  err {figures['errors']}"
                f"  p50 {figures['latency_ms']['p50']:.1f} ms p99 {figures['latency_ms']['p99']:.1f} ms"
                f"  bridge {figures['bridge_cpu_ms_per_request']:.2f} ms CPU/req"
                f"  client {figures['client_cpu_ms_per_request']:.2f}",
                flush=True,
            )
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_facts(),
        "load_average_start": load_average(),
        "store": args.store,
        "levels": {},
    }
    print(f"machine: {report['machine']}\nload average at start: {report['load_average_start']}", flush=True)
    for n in args.clients:
        keys = ClientKeys(n)
        with (
            contextlib.ExitStack() as cleanup,
            Stack(redis=args.store == "redis", bridge_extra=keys.env) as stack,
        ):
            cleanup.callback(keys.remove)
            print(f"\n=== {n} clients x {args.turns} turns, {args.answer_chars}-char answers ===", flush=True)
            print(HEADER)
            level: dict[str, Any] = {"load_average_before": load_average()}
            level["bridge"] = await bridge_level(stack, keys, n, args.turns, args.answer_chars)
            b = level["bridge"]
            print(row("bridge /mcp (2026-07-28)", b), flush=True)
            if not args.skip_floor:
                level["direct"] = await floor_level(stack, n, args.turns, args.answer_chars)
                print(row("direct simulator (floor)", level["direct"]), flush=True)
            cpu = b["cpu_ms_per_answer"]
            print(
                f"  in flight: peak {b['in_flight']['peak']}, median {b['in_flight']['median']:.0f};"
                f" bridge RSS {b['bridge_rss_mib']['before']:.1f} -> peak {b['bridge_rss_mib']['peak']:.1f}"
                f" MiB; bridge fds peak {b['bridge_fds_peak']}; bridge {b['bridge_cores']:.2f} cores",
                flush=True,
            )
            print(
                "  CPU ms per answer: "
                + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                + f"; load average {b['load_average_after']}",
                flush=True,
            )
            print(f"  answers/s while answers flowed: {b['answers_per_s_active']:.1f}", flush=True)
            for kind, count in b["error_kinds"].items():
                print(f"  error x{count}: {kind}")
            for example in b["crossed_examples"]:
                print(f"  CROSSED: {example}")
            report["levels"][str(n)] = level
    if not args.skip_tools_list:
        print("\n=== tools/list through /mcp ===", flush=True)
        report["tools_list"] = await tools_list_phase(
            args.store, args.tools_list_seconds, 50, args.tools_list_replicas
        )
    report["load_average_end"] = load_average()
    print(f"\nload average at end: {report['load_average_end']}")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--clients",
        type=int_list,
        default=[100, 250, 500],
        help="comma-separated levels (default 100,250,500)",
    )
    parser.add_argument("--turns", type=int, default=3, help="turns per client (default 3)")
    parser.add_argument("--answer-chars", type=int, default=200, help="length of each answer (default 200)")
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--skip-floor", action="store_true", help="no direct-simulator comparison")
    parser.add_argument("--skip-tools-list", action="store_true")
    parser.add_argument("--tools-list-seconds", type=float, default=10.0)
    parser.add_argument(
        "--tools-list-replicas",
        type=int_list,
        default=[1, 2],
        help="bridge replicas (sharing Redis) for the wrk tools/list rows (default 1,2)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if any(not 1 <= n <= 2000 for n in args.clients):
        parser.error("levels must be between 1 and 2000 clients")
    if not 1 <= args.turns <= 100:
        parser.error("--turns must be between 1 and 100")
    if not 60 <= args.answer_chars <= 5000:
        parser.error("--answer-chars must be between 60 and 5000")
    if any(not 1 <= r <= 8 for r in args.tools_list_replicas):
        parser.error("--tools-list-replicas must be between 1 and 8")
    if not 1 <= args.tools_list_seconds <= 120:
        parser.error("--tools-list-seconds must be between 1 and 120")
    return args


def main(argv: list[str] | None = None) -> None:
    report = run_bounded(amain, parse_args(argv), OVERALL_TIMEOUT)
    print(f"total {report['duration_s']} s")


if __name__ == "__main__":
    main()
