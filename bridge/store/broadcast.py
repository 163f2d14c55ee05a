"""Messages every bridge process hears: what one process receives for a session another one holds.

A handshake-era MCP session can be served by any process, but two things stay where they started:
the request the server sent to the client (an elicitation waits for its answer in the process that
sent it) and a legacy SSE session's event stream. When a client's message for one of them lands on
another process (a round-robin load balancer, a second worker), that process publishes it here and
every process hears it; the one that holds what the message is for acts on it, the others drop it.

Redis pub/sub on one channel when Redis is configured (sealed like the store when a store key is
set: a message holds what the user typed); without Redis there is one process, and a message goes
straight to its own handlers. Delivery is at most once: a message published while a process
reconnects to Redis is lost to it, as a dropped connection would lose it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import anyio

from bridge.store.base import StoreUnavailable
from bridge.store.connection import failure_reason
from bridge.store.pool import RedisPool
from bridge.store.sealing import Sealer

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None]]

CHANNEL: Final = "dmb:forward"
# How long one handler may take with a message before the next one is heard.
_HANDLER_SECONDS: Final = 10.0
_RECONNECT_SECONDS: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
# While Redis stays away the outage is said again this often, not at every retry.
_WARN_SECONDS: Final = 60.0


class Broadcast(Protocol):
    """One channel all processes publish to and hear, with a handler per message `kind`."""

    def on(self, kind: str, handler: Handler) -> None:
        """Call `handler` with every message of `kind` this process hears."""
        ...

    async def publish(self, message: Message) -> None:
        """Send `message` (JSON-able, with a `kind`) to every process; StoreUnavailable if it cannot."""
        ...

    async def run(self) -> None:
        """Hear messages until cancelled (the runtime runs it for its lifetime)."""
        ...


class _Handlers:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    async def dispatch(self, message: Message) -> None:
        handler = self._handlers.get(str(message.get("kind")))
        if handler is None:
            return
        with anyio.move_on_after(_HANDLER_SECONDS):
            try:
                await handler(message)
            except Exception:  # one bad message must not stop the process hearing the next
                logger.exception("a forwarded message of kind %s failed", message.get("kind"))


class LocalBroadcast(_Handlers):
    """One process: a message is handled at once, by this process."""

    async def publish(self, message: Message) -> None:
        await self.dispatch(message)

    async def run(self) -> None:
        await anyio.sleep_forever()


class _Outage:
    """The listener's failures to reach Redis: said with where and why when they start, at most once
    a minute while they last, and once when it hears again; the retry delay grows with them."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._failures = 0
        self._warned_at: float | None = None
        self._unwarned = 0

    def failed(self, exc: Exception) -> float:
        """Note one failure (a warning unless one was given within the minute); the seconds to wait."""
        delay = _RECONNECT_SECONDS[min(self._failures, len(_RECONNECT_SECONDS) - 1)]
        self._failures += 1
        reason = failure_reason(exc)
        logger.debug("cannot hear forwarded MCP messages (%s); retrying in %.1f s", reason, delay)
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < _WARN_SECONDS:
            self._unwarned += 1
            return delay
        also = f" ({self._unwarned} more failed attempts since the last warning)" if self._unwarned else ""
        logger.warning(
            "%scannot hear forwarded MCP messages from Redis at %s: %s; retrying until it answers%s",
            "" if self._warned_at is None else "still ",
            self._target,
            reason,
            also,
        )
        self._warned_at, self._unwarned = now, 0
        return delay

    def heard(self) -> None:
        """The subscription is in place: an outage that was said is over, and retries start quick again."""
        if self._warned_at is not None:
            logger.info("hearing forwarded MCP messages again from Redis at %s", self._target)
        self._failures, self._warned_at, self._unwarned = 0, None, 0


class RedisBroadcast(_Handlers):
    """Redis pub/sub on `CHANNEL`: published on the shared pool (one round trip), heard on one
    connection held for the process's lifetime (`RedisPool.held_client`), outside the pool's bound."""

    def __init__(self, pool: RedisPool, sealer: Sealer | None = None) -> None:
        super().__init__()
        self._pool = pool
        self._sealer = sealer
        self._listener: Any = None
        self._outage = _Outage(pool.describe())

    async def publish(self, message: Message) -> None:
        payload = json.dumps(message, separators=(",", ":"))
        if self._sealer is not None:
            payload = self._sealer.seal(payload)
        try:
            await self._pool.client.publish(CHANNEL, payload)
        except Exception as exc:  # redis-py's, the pool's and the socket's errors alike
            raise StoreUnavailable("context store (Redis) is unreachable") from exc

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as exc:
                await anyio.sleep(self._outage.failed(exc))

    async def _listen(self) -> None:
        if self._listener is None:
            self._listener = self._pool.held_client()
        pubsub = self._listener.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            self._outage.heard()
            while True:
                raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if raw is not None and raw.get("type") == "message":
                    message = self._decode(raw.get("data"))
                    if message is not None:
                        await self.dispatch(message)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await pubsub.aclose()

    def _decode(self, data: object) -> Message | None:
        text = data.decode() if isinstance(data, bytes) else data
        if not isinstance(text, str):
            return None
        if self._sealer is not None:
            opened = self._sealer.open(text)
            if opened is None:
                return None
            text = opened
        try:
            message = json.loads(text)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None
