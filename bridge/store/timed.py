"""A context store with every operation timed, for whoever wants to know (the metrics, in production)."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, cast

from bridge.store.base import ContextStore

# (operation, outcome, seconds): the method name, "ok" or "error", and how long it took.
StoreObserver = Callable[[str, str, float], None]


def timed_store(store: ContextStore, observe: StoreObserver) -> ContextStore:
    """`store` with every coroutine method timed into `observe(operation, "ok" | "error", seconds)`."""
    return cast(ContextStore, _TimedStore(store, observe))


class _TimedStore:
    """A transparent proxy that times the store's coroutine methods (the protocol's operations,
    and any added later) without restating each of them."""

    def __init__(self, inner: ContextStore, observe: StoreObserver) -> None:
        self._inner = inner
        self._observe = observe
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await attribute(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                self._observe(name, outcome, time.perf_counter() - started)

        return timed
