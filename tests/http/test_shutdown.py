"""The app hears SIGTERM before uvicorn's drain (bridge/http/shutdown.py), and uvicorn still does.

The end-to-end proof (answers in flight finish, streams end after them) is the rolling restart,
tests/bench/test_rolling_restart.py; this checks the signal plumbing on its own.
"""

from __future__ import annotations

import signal
from types import FrameType

import anyio
from sse_starlette.sse import AppStatus

from bridge.http.shutdown import draining, keep_answers_through_shutdown


async def test_sigterm_runs_the_drain_once_and_the_server_handler_too() -> None:
    heard: list[int] = []
    drained = anyio.Event()
    calls = 0

    def server_handler(signum: int, frame: FrameType | None) -> None:
        heard.append(signum)

    async def drain() -> None:
        nonlocal calls
        calls += 1
        drained.set()

    before = signal.signal(signal.SIGTERM, server_handler)
    try:
        async with draining(drain):
            signal.raise_signal(signal.SIGTERM)
            with anyio.fail_after(5):
                await drained.wait()
            signal.raise_signal(signal.SIGTERM)  # a second signal: uvicorn's force-exit, no new drain
            # Whatever the second signal woke has run until it waits again: a second drain has had
            # every chance to start.
            await anyio.wait_all_tasks_blocked()
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == 1
    assert heard == [signal.SIGTERM, signal.SIGTERM]
    assert restored is server_handler


async def test_without_a_server_handler_the_signal_keeps_its_default_meaning() -> None:
    # SIG_IGN stands in for "what the signal did before": it must stay ignored, not be swallowed
    # into an exception or re-raised.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    drained = anyio.Event()

    async def drain() -> None:
        drained.set()

    try:
        async with draining(drain):
            signal.raise_signal(signal.SIGINT)
            with anyio.fail_after(5):
                await drained.wait()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_sse_starlette_no_longer_ends_every_stream_on_exit() -> None:
    saved = AppStatus.enable_automatic_graceful_drain
    try:
        keep_answers_through_shutdown()
        assert AppStatus.enable_automatic_graceful_drain is False
    finally:
        AppStatus.enable_automatic_graceful_drain = saved
