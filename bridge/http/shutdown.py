"""The moment this process begins to shut down, for the app: ending its long-lived streams itself.

On SIGTERM (or SIGINT) uvicorn stops accepting and waits up to BRIDGE_SHUTDOWN_GRACE_SECONDS for
its open connections; the app hears of it only afterwards, in its lifespan's shutdown. Answers in
flight should finish in that time, but streams that never end by themselves (a session's GET
stream, a legacy `/sse` stream) would hold the process for the whole grace period, and cutting
them all at once (what sse-starlette does by default, `AppStatus`) cuts the answers they carry.
So the bridge turns sse-starlette's drain off and chains a handler of its own in front of
uvicorn's, which still runs: the app then ends each stream when it carries nothing unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Final

import anyio
from sse_starlette.sse import AppStatus

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def keep_answers_through_shutdown() -> None:
    """Stop sse-starlette from ending every SSE response the moment uvicorn is told to exit: its
    switch is process-wide (a class attribute), and the bridge ends its streams itself (`draining`)."""
    # The documented switch (sse-starlette >= 3.4) sets just this attribute; set here because the
    # library does not annotate its switch, which strict typing refuses to call.
    AppStatus.enable_automatic_graceful_drain = False


@contextlib.asynccontextmanager
async def draining(drain: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """While open, run `drain` once when SIGTERM or SIGINT arrives (uvicorn's handler runs too).

    Only the main thread may take signals: elsewhere (an app served from a test's thread) this
    does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    heard = asyncio.Event()
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(heard.set)
        chained = previous[signal.Signals(signum)]
        if callable(chained):
            chained(signum, frame)
        elif chained == signal.SIG_DFL:  # no server took the signal: it does what it always did
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    async def on_signal() -> None:
        await heard.wait()
        await drain()

    for sig in _SIGNALS:
        signal.signal(sig, handler)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(on_signal)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
    finally:
        for sig, chained in previous.items():
            signal.signal(sig, chained)
