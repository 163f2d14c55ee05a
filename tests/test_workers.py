"""`serve --workers N` (bridge/workers.py): how many workers, real workers sharing one port and one
set of metrics, a graceful stop of them all; and the refusals (no Redis) and exceptions (demo)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from uvicorn.config import STARTUP_FAILURE

from bridge.config import ConfigError
from bridge.workers import (
    SPREAD_BY_KERNEL,
    WorkerPlan,
    available_cores,
    cgroup_cpu_limit,
    per_worker,
    resolve_workers,
    worker_listener,
)
from tests.helpers import answer_through_sigterm, faults, run_cli, text_of
from tests.observability.test_metrics import value
from tests.procs import Proc, bridge_env, free_port, running, spawn, wait_for_http

# --- How many ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "shared_store", "expected"),
    [
        (None, True, WorkerPlan(6)),  # auto with Redis: one per core
        (None, False, WorkerPlan(1)),  # auto without: what workers share would not be shared
        (3, True, WorkerPlan(3)),
        (1, False, WorkerPlan(1)),
    ],
)
def test_the_count_is_one_per_core_with_redis_else_one_unless_asked(
    requested: int | None, shared_store: bool, expected: WorkerPlan
) -> None:
    assert resolve_workers(requested, shared_store=shared_store, demo=False, cores=6) == expected


def test_auto_counts_the_cores_this_process_may_use() -> None:
    assert resolve_workers(None, shared_store=True, demo=False) == WorkerPlan(available_cores())


def test_more_than_one_worker_without_redis_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_workers(4, shared_store=False, demo=False, cores=8)
    assert str(refused.value) == (
        "4 workers need REDIS_URL, where they share sessions, conversations and limits:"
        " set REDIS_URL, or use --workers 1"
    )


@pytest.mark.parametrize(("requested", "noted"), [(None, False), (1, False), (4, True)])
def test_demo_mode_runs_one_worker_and_says_so_when_more_were_asked(
    requested: int | None, noted: bool
) -> None:
    plan = resolve_workers(requested, shared_store=True, demo=True, cores=8)
    assert plan.count == 1
    assert (plan.note is not None) is noted
    if noted:
        assert plan.note == "demo mode runs 1 worker, not 4: the bundled Dust simulator lives in it"


def cgroup_file(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("files", "membership", "expected"),
    [
        # cgroup v2 in a container: its own cgroup is the root it sees.
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),
        # A limit on a cgroup above the process's counts; the tighter one wins.
        (
            {"system.slice/cpu.max": "400000 100000", "system.slice/bridge.service/cpu.max": "max 100000"},
            "0::/system.slice/bridge.service\n",
            4.0,
        ),
        ({"a/cpu.max": "300000 100000", "a/b/cpu.max": "200000 100000"}, "0::/a/b\n", 2.0),
        # The path of the host's view, absent in the container's: the directories above are read.
        ({"cpu.max": "200000 100000"}, "0::/kubepods/pod1/c1\n", 2.0),
        # cgroup v1: the cpu controller's hierarchy; -1 is no quota.
        (
            {"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000"},
            "4:memory:/\n2:cpu,cpuacct:/\n",
            2.5,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "2:cpu,cpuacct:/\n", None),
        ({}, "0::/\n", None),  # no cgroup files at all (not Linux, or not mounted)
    ],
)
def test_a_cgroup_cpu_quota_is_read_as_a_number_of_cpus(
    tmp_path: Path, files: dict[str, str], membership: str, expected: float | None
) -> None:
    for relative, text in files.items():
        cgroup_file(tmp_path, relative, text)
    assert cgroup_cpu_limit(tmp_path, membership) == expected


def test_a_container_cpu_limit_caps_the_cores_rounding_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.workers

    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(bridge.workers, "cgroup_cpu_limit", lambda: 0.5)
    assert available_cores() == 1
    monkeypatch.setattr(bridge.workers, "cgroup_cpu_limit", lambda: 1000.0)
    assert available_cores() == affinity
    monkeypatch.setattr(bridge.workers, "cgroup_cpu_limit", lambda: None)
    assert available_cores() == affinity


# --- The command line ---------------------------------------------------------------------------------

PRODUCTION = {"DUST_API_KEY": "sk-test0123456789", "DUST_WORKSPACE_ID": "demo", "BRIDGE_DEMO": "off"}


@pytest.mark.parametrize(
    ("arguments", "env", "count"),
    [
        (["--workers", "2"], {}, 2),
        (["--workers", "2"], {"BRIDGE_WORKERS": "1"}, 2),  # the flag wins
        ([], {"BRIDGE_WORKERS": "3"}, 3),
        (["--workers"], {"BRIDGE_WORKERS": "3"}, 3),  # without a count: the setting's (the image's CMD)
    ],
)
def test_workers_without_redis_exit_2_with_one_sentence(
    arguments: list[str], env: dict[str, str], count: int
) -> None:
    done = run_cli("serve", "--port", str(free_port()), *arguments, env={**PRODUCTION, **env})
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "REDIS_URL" in line]
    assert lines == [
        f"dust-mcp-bridge: configuration error: {count} workers need REDIS_URL, where they share sessions,"
        " conversations and limits: set REDIS_URL, or use --workers 1"
    ]
    assert "listening on" not in done.stderr


@pytest.mark.parametrize("count", ["0", "two", "1.5", "257"])
def test_a_bad_worker_count_is_refused_by_the_flag_and_the_setting_alike(count: str) -> None:
    flag = run_cli("serve", "--workers", count)
    setting = run_cli("serve", env={"BRIDGE_WORKERS": count})
    assert flag.returncode == setting.returncode == 2
    rule = "must be auto (one per core the bridge may use) or a number of worker processes from 1 to 256"
    assert f"argument --workers: {rule}" in flag.stderr
    assert f"configuration error: BRIDGE_WORKERS: {rule} (got '{count}')" in setting.stderr


def test_demo_mode_serves_with_one_worker_whatever_was_asked() -> None:
    port = free_port()
    demo = spawn([sys.executable, "-m", "bridge", "demo", "--port", str(port), "--workers", "3"], port)
    with running(demo):
        wait_for_http(f"{demo.url}/healthz", demo.popen)
        status = httpx2.get(f"{demo.url}/status", timeout=10).json()
    assert status["mode"] == "demo" and status["worker"] == {"pid": demo.pid, "workers": 1}
    log = demo.log()
    assert "dust-mcp-bridge: demo mode runs 1 worker, not 3: the bundled Dust simulator lives in it" in log
    assert "listening on http://127.0.0.1:" in log and " with 1 worker (MCP: /mcp" in log


# --- Real workers ---------------------------------------------------------------------------------------


def start_workers(simulator: Proc, redis_url: str, count: int, **extra: str) -> Proc:
    """`serve --workers COUNT` on Redis and the simulator, awaited on /healthz (one worker is enough)."""
    port = free_port()
    # bridge_env asks for one worker: the flag wins over it.
    env = bridge_env(simulator, None, REDIS_URL=redis_url, BRIDGE_SCAN_MODE="off", **extra)
    args = [sys.executable, "-m", "bridge", "serve", "--port", str(port), "--workers", str(count)]
    proc = spawn(args, port, env=env, name="workers")
    wait_for_http(f"{proc.url}/healthz", proc.popen)
    return proc


def worker_pids(bridge: Proc, count: int, timeout: float = 60.0) -> tuple[set[int], int]:
    """Ask /status on new connections until `count` different workers have answered: their pids, and
    how many requests that took. Each answer says how many workers there are."""
    pids: set[int] = set()
    requests = 0
    deadline = time.monotonic() + timeout
    while len(pids) < count:
        assert time.monotonic() < deadline, f"only workers {pids} answered {requests} requests"
        worker = httpx2.get(f"{bridge.url}/status", timeout=10).json()["worker"]
        requests += 1
        assert worker["workers"] == count
        pids.add(worker["pid"])
    return pids, requests


def scrape_when_counted(bridge: Proc, requests: int, timeout: float = 10.0) -> str:
    """/metrics once the `requests` to /status are all counted: a worker counts a request just
    after answering it, and the scrape may reach the other worker first."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx2.get(f"{bridge.url}/metrics", timeout=10).text
        counted = value(text, "bridge_http_requests_total", route="/status", method="GET", status="200")
        if counted >= requests or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def children_of(parent: int) -> set[int]:
    """The processes whose parent is `parent` (read from /proc, as ps does)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(stat.parent.name))
    return found


def running_pids(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            alive.add(pid)
    return alive


def test_two_workers_answer_on_one_port_and_metrics_add_up_across_them(
    simulator: Proc, redis_url: str
) -> None:
    with running(start_workers(simulator, redis_url, 2)) as bridge:
        pids, requests = worker_pids(bridge, 2)
        metrics = scrape_when_counted(bridge, requests)
        memory = sum(rss_bytes(pid) for pid in {bridge.pid, *pids})
    assert bridge.pid not in pids  # the supervisor serves nothing itself
    assert "listening on http://127.0.0.1:" in bridge.log() and " with 2 workers (MCP: /mcp" in bridge.log()
    # Counted by two workers, reported whole by whichever answered the scrape.
    assert (
        value(metrics, "bridge_http_requests_total", route="/status", method="GET", status="200") == requests
    )
    assert value(metrics, "bridge_active_streams") == 0
    assert value(metrics, "bridge_mcp_sessions_active", transport="streamable-http") == 0
    # The container's memory: the supervisor's and both workers', as the chart's alert compares it.
    assert abs(value(metrics, "process_resident_memory_bytes") - memory) < 0.25 * memory
    assert value(metrics, "process_cpu_seconds_total") > 0


async def test_sigterm_to_the_supervisor_lets_answers_finish_then_leaves_nothing_behind(
    simulator: Proc, redis_url: str, tmp_path: Path
) -> None:
    faults(simulator, token_delay_ms=40)
    # Its temporary files (the shared metrics among them) under tmp_path, to see them go.
    bridge = start_workers(
        simulator,
        redis_url,
        2,
        BRIDGE_SHUTDOWN_GRACE_SECONDS="60",
        BRIDGE_LOG_FORMAT="json",
        TMPDIR=str(tmp_path),
    )
    try:
        pids, _ = worker_pids(bridge, 2)
        processes = children_of(bridge.pid)
        assert pids <= processes
        assert list(tmp_path.glob("dust-mcp-bridge-metrics-*"))
        result, exit_code = await answer_through_sigterm(bridge, "finish me " * 20)
    finally:
        bridge.stop()
        faults(simulator, token_delay_ms=15)
    assert not result.is_error, text_of(result)
    assert text_of(result).startswith("Echo (turn 1): " + ("finish me " * 20).strip())
    assert exit_code == 0, bridge.log()
    # Every worker (and anything else the supervisor started) is gone, and so are the shared metrics.
    deadline = time.monotonic() + 10
    while running_pids(processes) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    assert running_pids(processes) == set()
    assert list(tmp_path.glob("dust-mcp-bridge-metrics-*")) == []
    # Each worker drained and exited 0 (the supervisor would say otherwise), logging as configured.
    log = bridge.log()
    assert "ended with exit status" not in log and "Traceback" not in log
    for pid in pids:
        assert f'"message": "Finished server process [{pid}]"' in log


# --- Connections spread over the workers ------------------------------------------------------------


async def _worker_of_new_connection(port: int) -> tuple[int, asyncio.StreamWriter]:
    """The worker that answers /status on a new connection, with the connection (kept open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
    )
    return int(json.loads(await reader.readexactly(length))["worker"]["pid"]), writer


@pytest.mark.skipif(not SPREAD_BY_KERNEL, reason="the kernel spreads connections over sockets on Linux")
async def test_a_burst_of_new_connections_is_spread_over_the_workers(simulator: Proc, redis_url: str) -> None:
    bridge = start_workers(simulator, redis_url, 2)
    try:
        worker_pids(bridge, 2)
        # Bursts of 50 clients connecting and asking at once: on one shared socket the worker that
        # woke first took nearly all of a burst (up to 49 of 50), and kept its keep-alive connections.
        bursts = []
        for _ in range(4):
            held = await asyncio.gather(*(_worker_of_new_connection(bridge.port) for _ in range(50)))
            for _, writer in held:
                writer.close()
            bursts.append(sorted(Counter(pid for pid, _ in held).values()))
    finally:
        bridge.stop()
    assert all(len(burst) == 2 and burst[0] >= 10 for burst in bursts), bursts


def test_the_supervisor_holds_the_port_and_each_worker_listens_on_its_own_socket() -> None:
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    held = per_worker(plain)
    address = held.getsockname()
    try:
        with pytest.raises(ConnectionRefusedError):  # bound, not listening: it takes no connection
            socket.create_connection(address, timeout=5).close()
        # What multiprocessing does to hand it to a worker: a new socket of the worker's own.
        worker = pickle.loads(pickle.dumps(held))
        try:
            assert type(worker) is socket.socket and worker.getsockname() == address
            # Connections of a socket made as IPPROTO_TCP get TCP_NODELAY from asyncio.
            assert worker.proto == socket.IPPROTO_TCP
            worker.listen()
            socket.create_connection(address, timeout=5).close()
        finally:
            worker.close()
    finally:
        held.close()


def test_a_worker_that_cannot_take_up_the_port_fails_its_start(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:  # another program's, without SO_REUSEPORT
        address = taken.getsockname()
        with pytest.raises(SystemExit) as failed:
            worker_listener(socket.AF_INET, address)
    assert failed.value.code == STARTUP_FAILURE
    assert f"a worker cannot listen on {address!r}" in capsys.readouterr().err


# --- Sessions across workers, and a worker that dies ------------------------------------------------


REBUILT = "continued on this process from the session store"


async def test_one_handshake_era_session_is_served_by_every_worker(simulator: Proc, redis_url: str) -> None:
    bridge = start_workers(simulator, redis_url, 2)
    try:
        worker_pids(bridge, 2)
        # No keep-alive: every request is a new connection, which either worker may accept.
        fresh = httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0), timeout=30)
        async with (
            fresh,
            Client(streamable_http_client(f"{bridge.url}/mcp", http_client=fresh), mode="legacy") as client,
        ):
            first = await client.call_tool("ask_agent", {"agent": "echo", "message": "one"})
            # Which worker accepts a connection is the kernel's choice and may favour one for a
            # while: ask until the other one has served the session, within a bound.
            for _ in range(200):
                await client.list_tools()
                if REBUILT in bridge.log():
                    break
            second = await client.call_tool("ask_agent", {"agent": "echo", "message": "two"})
        log = bridge.log()
    finally:
        bridge.stop()
    assert not first.is_error and not second.is_error, text_of(second)
    # No `conversation` passed: the session's memory continued the chat, whichever worker answered.
    assert (second.structured_content or {})["continued"] is True
    # The worker that did not open the session rebuilt it from the store.
    assert REBUILT in log


async def test_a_worker_killed_mid_answer_fails_only_its_own_answers(simulator: Proc, redis_url: str) -> None:
    faults(simulator, token_delay_ms=60)  # answers of about 6 s: none ends while the workers are polled
    # The killed worker's answer slots (leases in Redis) come free when their lease runs out.
    bridge = start_workers(simulator, redis_url, 2, BRIDGE_CONCURRENCY_LEASE_SECONDS="3")
    try:
        worker_pids(bridge, 2)
        streaming = [anyio.Event() for _ in range(8)]
        outcomes: dict[int, str] = {}

        async def ask(n: int) -> None:
            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                streaming[n].set()

            message = f"answer {n} " * 40
            try:
                with anyio.fail_after(60):
                    async with Client(f"{bridge.url}/mcp") as client:
                        result = await client.call_tool(
                            "ask_agent", {"agent": "echo", "message": message}, progress_callback=on_progress
                        )
                exact = not result.is_error and text_of(result).startswith(
                    f"Echo (turn 1): {message.strip()}"
                )
                outcomes[n] = "exact" if exact else f"tool error: {text_of(result)[:80]}"
            except Exception as exc:  # the client's own view of a connection that died
                outcomes[n] = f"error: {type(exc).__name__}"
            finally:
                streaming[n].set()

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(ask, n)
            with anyio.fail_after(30):
                for event in streaming:
                    await event.wait()
            streaming_on = await _streams_per_worker(bridge)
            victim = max(streaming_on, key=lambda pid: streaming_on[pid])
            os.kill(victim, signal.SIGKILL)
        # The supervisor starts a worker in its place; the bridge answers as before once the dead
        # worker's slots are free again (8 were in use: the default BRIDGE_MAX_CONCURRENT_ANSWERS).
        pids, _ = worker_pids(bridge, 2)
        async with Client(f"{bridge.url}/mcp") as client:
            with anyio.fail_after(15):
                while (
                    after := await client.call_tool("ask_agent", {"agent": "echo", "message": "after"})
                ).is_error:
                    assert "retry" in text_of(after), text_of(after)
                    await anyio.sleep(0.5)
    finally:
        bridge.stop()
        faults(simulator, token_delay_ms=15)
    failed = [o for o in outcomes.values() if o != "exact"]
    assert len(outcomes) == 8
    # The answers the killed worker was streaming fail with an error; the other worker's complete.
    assert failed and all(o.startswith("error") for o in failed), outcomes
    assert len(failed) == streaming_on[victim], (streaming_on, outcomes)
    assert victim not in pids and not after.is_error


async def _streams_per_worker(bridge: Proc) -> dict[int, int]:
    """How many answers each worker is streaming now, from /status on new connections (each may
    reach either worker), once both have answered and at least one streams."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 20
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0), timeout=10) as http:
        while len(seen) < 2 or not any(seen.values()):
            assert time.monotonic() < deadline, f"workers streaming: {seen}"
            status = (await http.get(f"{bridge.url}/status")).json()
            seen[int(status["worker"]["pid"])] = int(status["active_streams"])
    return seen
