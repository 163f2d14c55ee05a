"""Throughput of the whole upload pipeline, the scan's share of it, and the bridge's memory while a
100 MB upload streams.

Usage (from the repository root):

    .venv/bin/python bench/upload.py [--sizes-mb 1,25] [--concurrency 1,20] [--rounds N] [--json PATH]

What it does:

1. Starts the Dust simulator, a clamd with the EICAR test signature only (StreamMaxLength 128M) and a
   bridge (BRIDGE_UPLOAD_MAX_BYTES = 100 MiB, in-memory store), all on loopback, stopped by pid at the end.
2. For each file size S and concurrency C: C clients post a text file of S MB to `POST /v1/uploads`
   at once, `rounds` times. Reports uploads/s, MB/s, p50/p99 per-upload latency, and the scan's share
   (clamd time from the bridge's `bridge_scan_duration_seconds` histogram over the summed upload time).
3. Memory (run first, right after one tiny warm-up upload): reads the bridge's VmRSS while idle,
   then samples it every 20 ms while one 100 MB upload (a WAV file: Dust's audio limit is 100 MB)
   streams through, and reports the peak above idle.

Bounded in count and time; loopback only. The figures go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.procs import Proc, bridge_env, running, start_bridge, start_clamd, start_simulator  # noqa: E402

MB = 1024 * 1024
_OVERALL_TIMEOUT = 900.0


def rss_kb(pid: int) -> int:
    """The process's resident set size, kB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def text_file(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again.\n"
    return (line * (size // len(line) + 1))[:size]


def scan_seconds_total(bridge: Proc) -> float:
    """Sum of the bridge's scan-duration histogram."""
    metrics = httpx2.get(f"{bridge.url}/metrics", timeout=10).text
    match = re.search(r"^bridge_scan_duration_seconds_sum ([0-9.e+-]+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def post(http: httpx2.AsyncClient, url: str, name: str, data: bytes, mime: str) -> float:
    started = time.perf_counter()
    response = await http.post(url, files={"file": (name, data, mime)})
    if response.status_code != 201:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:200]}")
    return time.perf_counter() - started


async def _timed(into: list[float], http: httpx2.AsyncClient, url: str, name: str, data: bytes) -> None:
    into.append(await post(http, url, name, data, "text/plain"))


async def throughput(
    bridge: Proc, sizes_mb: list[int], levels: list[int], rounds: int, min_samples: int
) -> list[dict[str, Any]]:
    rows = []
    url = f"{bridge.url}/v1/uploads"
    async with httpx2.AsyncClient(timeout=300, limits=httpx2.Limits(max_connections=100)) as http:
        for size_mb in sizes_mb:
            data = text_file(size_mb * MB)
            for level in levels:
                latencies: list[float] = []
                scan_before = scan_seconds_total(bridge)
                wall_start = time.perf_counter()
                # Enough rounds for at least `min_samples` uploads per cell, so p99 means something.
                for _ in range(max(rounds, -(-min_samples // level))):
                    async with anyio.create_task_group() as tg:
                        for index in range(level):
                            tg.start_soon(_timed, latencies, http, url, f"f{index}.txt", data)
                wall = time.perf_counter() - wall_start
                scanned = scan_seconds_total(bridge) - scan_before
                count = len(latencies)
                rows.append(
                    {
                        "size_mb": size_mb,
                        "concurrency": level,
                        "uploads": count,
                        "uploads_per_s": count / wall,
                        "mb_per_s": count * size_mb / wall,
                        "p50_s": percentile(latencies, 50),
                        "p99_s": percentile(latencies, 99),
                        "scan_share": scanned / sum(latencies),
                    }
                )
                print(
                    f"{size_mb:>4} MB x{level:<3} {count:>4} uploads  {count / wall:7.2f}/s  "
                    f"{count * size_mb / wall:7.1f} MB/s  p50 {percentile(latencies, 50) * 1000:8.1f} ms  "
                    f"p99 {percentile(latencies, 99) * 1000:8.1f} ms  "
                    f"scan share {scanned / sum(latencies):5.1%}",
                    flush=True,
                )
    return rows


async def big_upload_rss(bridge: Proc, size: int) -> dict[str, Any]:
    """Peak RSS above idle while one `size`-byte WAV upload streams (sent in 1 MB pieces)."""
    header = b"RIFF" + (size - 8).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += bytes.fromhex("0100010044ac000088580100020010006461746100000000")

    async def body() -> AsyncIterator[bytes]:
        boundary_open = (
            b'--bench\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )
        yield boundary_open + header
        remaining = size - len(header)
        block = bytes(MB)
        while remaining > 0:
            piece = block[: min(MB, remaining)]
            remaining -= len(piece)
            yield piece
        yield b"\r\n--bench--\r\n"

    idle = rss_kb(bridge.pid)
    peak = idle
    done = anyio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb(bridge.pid))
            await anyio.sleep(0.02)

    async with httpx2.AsyncClient(timeout=600) as http, anyio.create_task_group() as tg:
        tg.start_soon(sample)
        started = time.perf_counter()
        response = await http.post(
            f"{bridge.url}/v1/uploads",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=bench"},
        )
        elapsed = time.perf_counter() - started
        done.set()
    if response.status_code != 201:
        raise RuntimeError(f"big upload failed: {response.status_code} {response.text[:300]}")
    result = {
        "size_bytes": size,
        "seconds": elapsed,
        "idle_rss_mb": idle / 1024,
        "peak_rss_mb": peak / 1024,
        "peak_above_idle_mb": (peak - idle) / 1024,
    }
    print(
        f"100 MB upload: {elapsed:.2f} s; RSS idle {idle / 1024:.1f} MB, peak {peak / 1024:.1f} MB,"
        f" +{(peak - idle) / 1024:.1f} MB above idle (target < 30 MB)",
        flush=True,
    )
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", default="1,25")
    parser.add_argument("--concurrency", default="1,20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-samples", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes_mb.split(",")]
    levels = [int(v) for v in args.concurrency.split(",")]
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()};"
        f" command: {' '.join(sys.argv)}",
        flush=True,
    )
    with anyio.fail_after(_OVERALL_TIMEOUT):
        with running(start_simulator(args=["--log-level", "warning"])) as simulator:
            clamd = start_clamd(stream_max_length="128M")
            with running(clamd):
                env = bridge_env(
                    simulator,
                    clamd=clamd,
                    BRIDGE_UPLOAD_MAX_BYTES=str(100 * MB),
                    BRIDGE_LOG_LEVEL="WARNING",
                )
                with running(start_bridge(env)) as bridge:
                    # The simulator's 40 files/minute limit is Dust's; the benchmark measures the bridge.
                    httpx2.post(
                        f"{simulator.url}/_sim/faults", json={"files_per_minute": 1_000_000}, timeout=5
                    )
                    async with httpx2.AsyncClient(timeout=60) as http:
                        await post(http, f"{bridge.url}/v1/uploads", "warm.txt", b"warm", "text/plain")
                    # Memory first, while the bridge has done nothing but one tiny upload: the fairest idle.
                    big = await big_upload_rss(bridge, 100 * 1000 * 1000)
                    rows = await throughput(bridge, sizes, levels, args.rounds, args.min_samples)
    if args.json:
        args.json.write_text(json.dumps({"throughput": rows, "big_upload": big}, indent=2), encoding="utf-8")
    print(f"done: {len(rows)} throughput cells and the 100 MB memory run")


if __name__ == "__main__":
    anyio.run(main)
