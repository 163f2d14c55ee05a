"""Soak run: thousands of turns through one bridge; do its memory and open descriptors stay flat?

Usage (from the repository root):

    .venv/bin/python bench/soak.py [--turns 10000] [--clients 50] [--turns-per-conversation 20]
                                   [--store redis|memory] [--json PATH]

One simulator, Redis and bridge (production settings, warnings-only logs, one client key per
client). `--clients` conversationalists (bench/_common.py, every answer checked) ask the echo
agent turn after turn; each starts a new conversation every `--turns-per-conversation` turns, so
contexts keep accumulating (in Redis, with the default one-hour TTL). Every 2 s the bridge's
VmRSS and open file descriptors are read from /proc together with the number of turns done.
The slope is a least-squares fit over the second half of the run (the first half includes the
allocator, pools and caches warming up), in bytes per turn and descriptors per turn; the whole
run's fit is printed too. A flat bridge has a slope near 0 in both. Bounded in turns and time;
every child is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import (  # noqa: E402
    HEADER,
    ClientKeys,
    Conversationalist,
    Stack,
    fd_count,
    load_average,
    machine_facts,
    proc_status,
    row,
    run_bounded,
    summarise,
)

OVERALL_TIMEOUT = 3 * 3600.0


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else float("nan")


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_facts(),
        "load_average_start": load_average(),
    }
    print(f"machine: {report['machine']}\nload average at start: {report['load_average_start']}", flush=True)
    keys = ClientKeys(args.clients)
    with (
        contextlib.ExitStack() as cleanup,
        Stack(redis=args.store == "redis", bridge_extra=keys.env) as stack,
    ):
        cleanup.callback(keys.remove)
        assert stack.bridge is not None
        pid = stack.bridge.pid
        clients = [
            Conversationalist(
                i, stack.mcp_url, key=keys.keys[i], answer_chars=args.answer_chars, idle_timeout=120
            )
            for i in range(args.clients)
        ]
        for c in clients:
            await c.warm()
        done = 0
        points: list[tuple[int, int, int, float]] = []  # turns, rss KiB, fds, time

        def record() -> None:
            points.append((done, proc_status(pid)["VmRSS"], fd_count(pid), time.monotonic()))

        async def converse(c: Conversationalist) -> None:
            nonlocal done
            since_new = 0
            while done < args.turns:
                if since_new >= args.turns_per_conversation:
                    c.new_conversation()
                    since_new = 0
                await c.turn()
                since_new += 1
                done += 1

        async def sampler() -> None:
            while True:
                record()
                await asyncio.sleep(2.0)

        started = time.perf_counter()
        watch = asyncio.get_running_loop().create_task(sampler())
        next_print = 1000
        tasks = [asyncio.get_running_loop().create_task(converse(c)) for c in clients]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            if done >= next_print:
                last = points[-1]
                print(
                    f"  {done:>6} turns  RSS {last[1] / 1024:.1f} MiB  fds {last[2]}"
                    f"  {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
                next_print += 1000
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
        watch.cancel()
        record()
        for c in clients:
            c.close()
        samples = [s for c in clients for s in c.samples]
        summary = summarise(samples, wall)
        half = [p for p in points if p[0] >= args.turns / 2]
        report["summary"] = summary
        report["points"] = points
        report["rss_slope_bytes_per_turn"] = {
            "second_half": slope([p[0] for p in half], [p[1] * 1024 for p in half]),
            "whole_run": slope([p[0] for p in points], [p[1] * 1024 for p in points]),
        }
        report["fd_slope_per_turn"] = {
            "second_half": slope([p[0] for p in half], [p[2] for p in half]),
            "whole_run": slope([p[0] for p in points], [p[2] for p in points]),
        }
        report["rss_mib"] = {
            "first": points[0][1] / 1024,
            "at_half": half[0][1] / 1024 if half else None,
            "last": points[-1][1] / 1024,
            "peak": max(p[1] for p in points) / 1024,
        }
        report["fds"] = {"first": points[0][2], "last": points[-1][2], "peak": max(p[2] for p in points)}
        print(HEADER)
        print(row(f"soak {args.clients} clients", summary))
        rs, fs = report["rss_slope_bytes_per_turn"], report["fd_slope_per_turn"]
        print(
            f"  RSS {report['rss_mib']['first']:.1f} -> {report['rss_mib']['last']:.1f} MiB"
            f" (peak {report['rss_mib']['peak']:.1f}); slope {rs['second_half']:.1f} bytes/turn over the"
            f" second half ({rs['whole_run']:.1f} over the whole run)"
        )
        print(
            f"  fds {report['fds']['first']} -> {report['fds']['last']} (peak {report['fds']['peak']});"
            f" slope {fs['second_half']:.5f} fds/turn over the second half ({fs['whole_run']:.5f} whole run)"
        )
        for kind, count in summary["error_kinds"].items():
            print(f"  error x{count}: {kind}")
    report["load_average_end"] = load_average()
    print(f"load average at end: {report['load_average_end']}")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--turns-per-conversation", type=int, default=20)
    parser.add_argument("--answer-chars", type=int, default=120)
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 100 <= args.turns <= 200_000:
        parser.error("--turns must be between 100 and 200000")
    if not 1 <= args.clients <= 500:
        parser.error("--clients must be between 1 and 500")
    if args.turns_per_conversation < 1:
        parser.error("--turns-per-conversation must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    run_bounded(amain, parse_args(argv), OVERALL_TIMEOUT)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
