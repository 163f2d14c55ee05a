"""A rolling restart behind a real load balancer: the topology, the clients and the audit that
bench/chaos.py's `rolling_restart` fault runs (see its module docstring for what the fault proves).

Topology (`BalancedStack`): one Redis, one Dust simulator, `n` bridges on one Redis, and Debian's
nginx in front of them (tests/procs.py `start_nginx`: round-robin, no affinity, SSE-friendly,
passing a request to the next bridge only when it could not reach one). Every client connects to
nginx only.

Clients (`SdkConversationalist`): the MCP SDK's own clients, one conversation each with the echo
agent, in three kinds:

* `session`: a handshake-era (2025-11-25) Streamable HTTP session, `Client(..., mode="legacy")`,
  with its `Mcp-Session-Id` (and the SDK's GET stream for server messages);
* `stateless`: a 2026-07-28 client, `Client(..., mode="auto")`, every request on its own;
* `sse`: a legacy HTTP+SSE client (`mcp.client.sse.sse_client`): one `GET /sse` stream that every
  answer comes back on, its requests POSTed to `/messages/` (through nginx: any bridge).

Every attempt at a turn sends its own text (`<nonce> turn <t> try <a> ...`), so the simulator's
record of each conversation says exactly which attempts reached Dust (`audit`). An answer is good
when it is exactly `Echo (turn N): <that text>` with N the conversation's next turn (or further
by the number of failed attempts that may have reached Dust), in the client's own conversation
(same handle, same Dust conversation), and the text streamed as progress equals the answer. A
failed attempt is retried after a short backoff; a client whose connection is gone (a legacy
stream that ended, or an SDK client that failed) connects again, through nginx, and goes on with
its conversation handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import ECHO, TEST_DUST_KEY, Stack  # noqa: E402
from bridge.simulator.agents import story_text  # noqa: E402
from tests.procs import Proc, free_port, start_bridge, start_nginx, start_redis, start_simulator  # noqa: E402

KINDS = ("session", "stateless", "sse")
_FILLER = "the harbour bell rings for the boats while the keeper counts the waves before dawn "


# --- the stack ----------------------------------------------------------------------------------


class BalancedStack(Stack):
    """Redis, the simulator, `bridges` bridges on that one Redis, and nginx in front of them; every
    one stopped by pid on exit (nginx's directory removed). Each bridge keeps its port across
    restarts, so nginx's upstream list stays right."""

    def __init__(self, bridges: int = 2, fail_timeout: float = 1.0, **options: Any) -> None:
        super().__init__(redis=True, clamd=False, **options)
        self.size = bridges
        self.fail_timeout = fail_timeout
        self.bridges: list[Proc] = []
        self.nginx: Proc | None = None

    def __enter__(self) -> BalancedStack:
        try:
            self.redis = start_redis()
            sim_port = free_port()
            dust_url = f"http://127.0.0.1:{sim_port}"
            with ThreadPoolExecutor(self.size + 1) as pool:
                sim = pool.submit(start_simulator, sim_port, self.sim_args)
                bridges = [pool.submit(start_bridge, self.env(dust_url)) for _ in range(self.size)]
                for future in (sim, *bridges):
                    with contextlib.suppress(Exception):
                        future.result()
                self.simulator = sim.result() if sim.exception() is None else None
                self.bridges = [f.result() for f in bridges if f.exception() is None]
                for future in (sim, *bridges):
                    if (error := future.exception()) is not None:
                        raise error
            self.nginx = start_nginx([b.port for b in self.bridges], fail_timeout=self.fail_timeout)
        except BaseException:
            self.stop_all()
            raise
        return self

    @property
    def url(self) -> str:
        """nginx: where every client connects."""
        assert self.nginx is not None
        return self.nginx.url

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def nginx_dir(self) -> Path:
        assert self.nginx is not None
        return Path(self.nginx.extra["dir"])

    def start_bridge_again(self, index: int) -> Proc:
        """A new bridge process on the port of bridge `index` (which must have exited)."""
        self.bridges[index] = start_bridge(self.env(), port=self.bridges[index].port)
        return self.bridges[index]

    def stop_all(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for bridge in self.bridges:
            bridge.stop()
        super().stop_all()
        if self.nginx is not None:
            shutil.rmtree(self.nginx.extra["dir"], ignore_errors=True)


# --- the clients --------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One attempt at one turn, by one client."""

    kind: str
    client: int
    turn: int
    attempt: int
    message: str
    started: float  # perf_counter
    ended: float = 0.0
    error: str | None = None
    crossed: str | None = None
    dust_turn: int | None = None
    connection: int = 0  # which of the client's connections it was made on (1 = the first)

    @property
    def ok(self) -> bool:
        return self.error is None and self.crossed is None


def reason_of(error: str) -> str:
    """What kind of failure an error message is, in a few words (equal causes count together)."""
    checks = (
        ("Session not found", "404 session not found"),
        # The bridge's own refusal of a tool call on a legacy stream it is draining (nothing sent to Dust).
        ("this bridge process is shutting down", "refused: the bridge is shutting down"),
        ("HangError", "no answer within the call timeout"),
        ("SSE stream ended without a response", "answer stream ended without the answer"),
        ("Connection closed", "legacy stream closed (connection closed)"),
        ("502 Bad Gateway", "HTTP 502 from nginx"),
        ("503 Service Unavailable", "HTTP 503"),
        # What the SDK's Streamable HTTP client says for any error status (nginx's log says which).
        ("Server returned an error response", "HTTP error status (the SDK does not say which)"),
        ("ConnectError", "connect failed"),
        ("RemoteProtocolError", "connection lost mid-response"),
        ("ReadError", "connection lost mid-response"),
        ("tool error", "tool error"),
        ("streamed text differs", "streamed text differs"),
        ("wrong answer", "wrong answer"),
    )
    for needle, reason in checks:
        if needle in error:
            return reason
    error = re.sub(r"[0-9a-f]{16,}", "<id>", error)
    return re.sub(r"\d+(\.\d+)?", "N", error)[:100]


# Failures that say nothing was answered wrongly: the call can be tried again as it is.
RETRYABLE_REASONS = frozenset(
    {
        "answer stream ended without the answer",
        "refused: the bridge is shutting down",
        "legacy stream closed (connection closed)",
        "HTTP 502 from nginx",
        "HTTP 503",
        "HTTP error status (the SDK does not say which)",
        "connect failed",
        "connection lost mid-response",
    }
)


class _PostsElsewhere(httpx2.AsyncBaseTransport):
    """Sends POSTs to `base` (scheme, host and port), everything else where it was going."""

    def __init__(self, base: str) -> None:
        self._base = httpx2.URL(base)
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            request.url = request.url.copy_with(
                scheme=self._base.scheme, host=self._base.host, port=self._base.port
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _posting_through(base: str) -> Callable[..., httpx2.AsyncClient]:
    """An httpx client factory (the SDK's legacy client takes one) whose POSTs go to `base`."""

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=_PostsElsewhere(base), headers=headers, timeout=timeout, auth=auth
        )

    return factory


class SdkConversationalist:
    """One SDK client of one kind, conversing with the echo agent through nginx (module docstring)."""

    def __init__(
        self,
        kind: str,
        index: int,
        base_url: str,
        key: str,
        *,
        answer_chars: int = 300,
        call_timeout: float = 60.0,
        think: float = 0.3,
        post_url: str | None = None,
    ) -> None:
        """`post_url`: where a legacy client sends its POSTs, when not where its stream is (a probe's
        stream is opened on one bridge directly, its POSTs go through nginx as a real client's do)."""
        assert kind in KINDS
        self.kind = kind
        self.index = index
        self.base_url = base_url
        self.key = key
        self.answer_chars = answer_chars
        self.call_timeout = call_timeout
        self.think = think
        self.post_url = post_url
        self.nonce = f"{kind[:4]}{index:03d}x{secrets.token_hex(4)}"
        self.handle: str | None = None
        self.dust_conversation: str | None = None
        self.acked = 0  # turns answered exactly
        self.dust_turns = 0  # Dust's turn number at the last good answer
        self.unacked = 0  # failed attempts since the last good answer (each may have reached Dust)
        self.attempts: list[Attempt] = []
        self.connections: list[tuple[float, str]] = []  # (perf_counter, why) of each connection made
        self.connect_failures: list[str] = []
        self.in_call = False
        self.call_started = 0.0

    # -- one connection -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Client]:
        auth = {"Authorization": f"Bearer {self.key}"}
        if self.kind == "sse":
            elsewhere = {"httpx_client_factory": _posting_through(self.post_url)} if self.post_url else {}
            transport = sse_client(
                f"{self.base_url}/sse", headers=auth, timeout=10, sse_read_timeout=120, **elsewhere
            )
            async with Client(transport, mode="legacy") as client:
                yield client
            return
        http = httpx2.AsyncClient(headers=auth, timeout=httpx2.Timeout(10, read=120))
        mode = "legacy" if self.kind == "session" else "auto"
        async with (
            http,
            Client(streamable_http_client(f"{self.base_url}/mcp", http_client=http), mode=mode) as c,
        ):
            yield c

    def message(self, turn: int, attempt: int) -> str:
        head = f"{self.nonce} turn {turn} try {attempt} "
        tail = f" end {self.nonce}"
        room = max(0, self.answer_chars - len(f"Echo (turn {turn}): ") - len(head) - len(tail))
        return head + (_FILLER * (room // len(_FILLER) + 1))[:room] + tail

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, gate: asyncio.Event, stopping: Callable[[], bool]) -> None:
        """Connect, converse, and connect again whenever the connection is gone, until `stopping()`."""
        attempt = 1
        why = "first connection"
        while not stopping():
            await gate.wait()
            stack = contextlib.AsyncExitStack()
            try:
                async with asyncio.timeout(30):
                    client = await stack.enter_async_context(self._client())
                    await client.list_tools()
            except Exception as exc:
                self.connect_failures.append(reason_of(f"{type(exc).__name__}: {exc}"))
                await _close(stack)
                await asyncio.sleep(0.5)
                continue
            self.connections.append((time.perf_counter(), why))
            try:
                while not stopping():
                    await gate.wait()
                    if stopping():
                        return
                    sample = await self.turn(client, attempt)
                    if sample.ok:
                        attempt = 1
                        await asyncio.sleep(self.think * (0.5 + secrets.randbelow(100) / 100))
                        continue
                    attempt += 1
                    why = self._connect_again(sample)
                    if why:
                        break
                    await asyncio.sleep(min(2.0, 0.25 * attempt))
            finally:
                await _close(stack)

    def _connect_again(self, sample: Attempt) -> str:
        """Why this client must connect again after the failed `sample` ("" when it need not)."""
        reason = reason_of(sample.error or sample.crossed or "")
        if self.kind == "sse":
            # The SDK's legacy client is done once its stream ends (or once a POST failed: it stops
            # sending), as a legacy client is: it connects again.
            return reason
        if reason in ("404 session not found", "no answer within the call timeout"):
            return reason
        return ""

    async def turn(self, client: Client, attempt: int) -> Attempt:
        """Ask the next turn once; record and return the attempt."""
        turn = self.acked + 1
        message = self.message(turn, attempt)
        sample = Attempt(self.kind, self.index, turn, attempt, message, time.perf_counter())
        sample.connection = len(self.connections)
        streamed: list[str] = []

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if message and not message.startswith("["):
                streamed.append(message)

        arguments: dict[str, Any] = {"agent": ECHO, "message": message}
        if self.handle is not None:
            arguments["conversation"] = self.handle
        self.in_call, self.call_started = True, sample.started
        try:
            async with asyncio.timeout(self.call_timeout):
                result = await client.call_tool("ask_agent", arguments, progress_callback=progress)
        except TimeoutError:
            sample.error = f"HangError: no result within {self.call_timeout:g}s"
        except Exception as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.in_call = False
            sample.ended = time.perf_counter()
        if sample.error is None:
            self._check(sample, result, message, "".join(streamed))
        if sample.ok:
            self.acked += 1
            self.dust_turns = sample.dust_turn or self.dust_turns + 1
            self.unacked = 0
        elif sample.crossed is None:
            self.unacked += 1
        self.attempts.append(sample)
        return sample

    def _check(self, sample: Attempt, result: CallToolResult, message: str, streamed: str) -> None:
        text = "".join(block.text for block in result.content if isinstance(block, TextContent))
        if result.is_error:
            sample.error = f"tool error: {text[:200]}"
            return
        got = result.structured_content or {}
        answer = str(got.get("answer", ""))
        prefix, sep, echoed = answer.partition("): ")
        with contextlib.suppress(ValueError):
            sample.dust_turn = int(prefix.removeprefix("Echo (turn ")) if sep else None
        if echoed != message:
            if self.nonce not in answer:
                sample.crossed = f"answer for another message: {answer[:100]!r}"
            else:
                sample.error = f"wrong answer {answer[:120]!r}"
            return
        low, high = self.dust_turns + 1, self.dust_turns + 1 + self.unacked
        if sample.dust_turn is None or not low <= sample.dust_turn <= high:
            sample.crossed = f"turn {sample.dust_turn} in a conversation at turn {low}..{high}"
            return
        handle, conversation = got.get("conversation"), got.get("dust_conversation_id")
        continuing = self.handle is not None
        if self.handle is None:
            self.handle, self.dust_conversation = str(handle), str(conversation)
        elif (handle, conversation) != (self.handle, self.dust_conversation):
            sample.crossed = f"handle/conversation changed: {handle} {conversation}"
            return
        first = (
            result.content[0].text if result.content and isinstance(result.content[0], TextContent) else ""
        )
        if got.get("continued") is not continuing:
            sample.error = f"continued={got.get('continued')} on turn {sample.turn}"
        elif first != answer:
            sample.error = "text content differs from the structured answer"
        elif streamed != answer:
            sample.error = f"streamed text differs from the answer ({len(streamed)} vs {len(answer)} chars)"


async def _close(stack: contextlib.AsyncExitStack) -> None:
    """Leave an SDK client, whatever state it is in, within a bound."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(15):
            await stack.aclose()


class RollingLoad:
    """`per_kind` clients of each kind conversing in a loop (retrying failed turns) until stopped."""

    def __init__(
        self, stack: BalancedStack, keys: list[str], per_kind: int, *, answer_chars: int, call_timeout: float
    ) -> None:
        assert len(keys) >= per_kind * len(KINDS)
        self.clients = [
            SdkConversationalist(
                kind,
                i,
                stack.url,
                keys[k * per_kind + i],
                answer_chars=answer_chars,
                call_timeout=call_timeout,
            )
            for k, kind in enumerate(KINDS)
            for i in range(per_kind)
        ]
        self._gate = asyncio.Event()
        self._stop = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._gate.set()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(c.run(self._gate, lambda: self._stop)) for c in self.clients]

    async def wait_for_turns(self, since: float, turns: int = 1, timeout: float = 60.0) -> bool:
        """Until every client has had `turns` good answers to calls begun after `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(sum(1 for a in c.attempts if a.ok and a.started >= since) >= turns for c in self.clients):
                return True
            await asyncio.sleep(0.2)
        return False

    async def stop(self, timeout: float = 90.0) -> int:
        """Let the calls in flight end (each is bounded by its call timeout), then stop; returns how
        many clients had to be cancelled."""
        self._stop = True
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return len(pending)

    @property
    def attempts(self) -> list[Attempt]:
        return [a for c in self.clients for a in c.attempts]


# --- answers in flight on the bridge that stops --------------------------------------------------


@dataclass
class Probe:
    """One long answer (the storyteller's) asked of the bridge about to be stopped, connected to
    it directly: through nginx it would land on any bridge, and each restart must have answers of
    every kind streaming from the bridge that stops."""

    kind: str
    bridge: int
    message: str
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    posted: bool | None = None  # whether Dust received its message (from the simulator's bodies)
    task: asyncio.Task[None] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def _ask_probe(probe: Probe, client: SdkConversationalist) -> None:
    streamed: list[str] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        if message and not message.startswith("["):
            streamed.append(message)
            probe.first_chunk.set()

    stack = contextlib.AsyncExitStack()
    try:
        async with asyncio.timeout(client.call_timeout):
            sdk = await stack.enter_async_context(client._client())
            arguments = {"agent": "storyteller", "message": probe.message}
            result = await sdk.call_tool("ask_agent", arguments, progress_callback=progress)
    except TimeoutError:
        probe.error = f"HangError: no result within {client.call_timeout:g}s"
    except Exception as exc:
        probe.error = f"{type(exc).__name__}: {exc}"[:300]
    else:
        answer = str((result.structured_content or {}).get("answer"))
        if result.is_error or answer != story_text(probe.message):
            probe.error = f"wrong answer {answer[:120]!r}"
        elif "".join(streamed) != answer:
            probe.error = "streamed text differs from the answer"
    finally:
        probe.first_chunk.set()
        await _close(stack)


async def start_probes(
    stack: BalancedStack, index: int, keys: list[str], call_timeout: float, wait: float = 30.0
) -> list[Probe]:
    """One long answer of each kind per key triple in `keys`, asked of bridge `index` directly;
    returns once each has streamed its first text (or ended)."""
    probes: list[Probe] = []
    loop = asyncio.get_running_loop()
    for n, key in enumerate(keys):
        kind = KINDS[n % len(KINDS)]
        probe = Probe(kind, index, f"probe {kind} {n} of bridge {index} {secrets.token_hex(4)}")
        client = SdkConversationalist(
            kind, n, stack.bridges[index].url, key, call_timeout=call_timeout, post_url=stack.url
        )
        probe.task = loop.create_task(_ask_probe(probe, client))
        probes.append(probe)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            await asyncio.gather(*(p.first_chunk.wait() for p in probes))
    return probes


async def finish_probes(probes: list[Probe], http: httpx2.AsyncClient, simulator: Proc) -> None:
    """Wait for the probes' answers, then look up which of their messages reached Dust (the
    simulator's last request bodies: a probe's text is in the one that posted it)."""
    await asyncio.gather(*(p.task for p in probes if p.task is not None), return_exceptions=True)
    bodies = (await http.get(f"{simulator.url}/_sim/bodies", timeout=10)).json()["bodies"]
    posted = [json.dumps(b.get("json")) for b in bodies if b.get("status") == 200]
    for p in probes:
        p.posted = any(p.message in body for body in posted)


# --- the rolling restart ------------------------------------------------------------------------


async def bridge_ready(http: httpx2.AsyncClient, bridge: Proc) -> bool:
    with contextlib.suppress(httpx2.HTTPError):
        return (await http.get(f"{bridge.url}/readyz", timeout=5)).status_code == 200
    return False


async def active_streams(http: httpx2.AsyncClient, bridge: Proc) -> int | None:
    """Answers the bridge is streaming from Dust right now (its /status)."""
    with contextlib.suppress(httpx2.HTTPError, ValueError, KeyError):
        response = await http.get(f"{bridge.url}/status", timeout=5)
        return int(response.json()["active_streams"])
    return None


async def restart_one(
    stack: BalancedStack,
    index: int,
    http: httpx2.AsyncClient,
    grace: float,
    probe_keys: list[str],
    call_timeout: float,
) -> tuple[dict[str, Any], list[Probe]]:
    """With long answers of each kind streaming from bridge `index` (`start_probes`), SIGTERM it,
    wait for it to exit, start it again on its port, wait for /readyz and for nginx to take it back
    (its `fail_timeout`); the times of each step, and the probes once their answers are in."""
    bridge = stack.bridges[index]
    probes = await start_probes(stack, index, probe_keys, call_timeout)
    streaming = await active_streams(http, bridge)
    t0 = time.perf_counter()
    os.kill(bridge.pid, signal.SIGTERM)
    try:
        code: int | None = await asyncio.to_thread(bridge.popen.wait, grace + 20)
    except Exception:
        code = None
        bridge.stop(signal.SIGKILL)
    exited = time.perf_counter()
    await asyncio.to_thread(stack.start_bridge_again, index)
    started = time.perf_counter()
    ready = False
    deadline = time.monotonic() + 30
    while not ready and time.monotonic() < deadline:
        ready = await bridge_ready(http, stack.bridges[index])
        if not ready:
            await asyncio.sleep(0.1)
    ready_at = time.perf_counter()
    # nginx sends it requests again once its `fail_timeout` after the last refused connection is over.
    await asyncio.sleep(stack.fail_timeout + 0.5)
    assert stack.simulator is not None
    await finish_probes(probes, http, stack.simulator)
    return {
        "bridge": index,
        "port": bridge.port,
        "answers_streaming_at_sigterm": streaming,
        "exit_code": code,
        "sigterm_at": t0,
        "ready_at": ready_at,
        "exit_s": round(exited - t0, 2),
        "start_s": round(started - exited, 2),
        "ready_s": round(ready_at - exited, 2),
        "sigterm_to_ready_s": round(ready_at - t0, 2),
        "readyz_200": ready,
    }, probes


# --- what nginx saw, and what reached Dust ------------------------------------------------------


@dataclass
class NginxLine:
    at: float  # epoch seconds
    status: int
    method: str
    path: str
    upstreams: list[str]
    upstream_statuses: list[str]


def nginx_log(directory: Path) -> list[NginxLine]:
    """The access log (tests/procs.py NGINX_LOG_FORMAT)."""
    lines: list[NginxLine] = []
    path = directory / "access.log"
    if not path.exists():
        return lines
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError, IndexError):
            head, statuses, *_ = raw.split("|")
            at, status, method, uri, upstreams = head.split(" ", 4)
            lines.append(
                NginxLine(
                    float(at),
                    int(status),
                    method,
                    uri,
                    [a.strip() for a in upstreams.split(",") if a.strip()],
                    [s.strip() for s in statuses.split(",")],
                )
            )
    return lines


def nginx_errors(directory: Path) -> dict[str, int]:
    """nginx's error log, counted by what happened (to which request method and path)."""
    path = directory / "error.log"
    counts: dict[str, int] = {}
    if not path.exists():
        return counts
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        found = re.match(
            r"\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*?request: \"(\S+) (\S+?)[?\s].*)?$",
            raw,
        )
        if found is None:
            continue
        level, what, method, path_ = found.groups()
        what = re.sub(r"\d+", "N", what)[:120]
        key = f"[{level}] {what}" + (f" ({method} {path_})" if method else "")
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def nginx_figures(lines: list[NginxLine]) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for line in lines:
        key = f"{line.status} {line.method} {line.path}"
        by_status[key] = by_status.get(key, 0) + 1
    return {
        "requests": len(lines),
        "status_502": sum(1 for line in lines if line.status == 502),
        "status_504": sum(1 for line in lines if line.status == 504),
        "status_404_mcp": sum(1 for line in lines if line.status == 404 and line.path == "/mcp"),
        "status_404_messages": sum(1 for line in lines if line.status == 404 and line.path == "/messages/"),
        "legacy_streams_opened": sum(1 for line in lines if line.method == "GET" and line.path == "/sse"),
        # The SDK's GET stream of a handshake-era session (opened again when its bridge ends it).
        "session_get_streams": sum(1 for line in lines if line.method == "GET" and line.path == "/mcp"),
        # Passed on to another bridge after one could not be reached (`proxy_next_upstream`).
        "passed_to_next_bridge": sum(1 for line in lines if len(line.upstreams) > 1),
        "non_2xx": {k: v for k, v in sorted(by_status.items()) if not 200 <= int(k.split()[0]) < 300},
    }


async def dust_user_messages(
    http: httpx2.AsyncClient, simulator: Proc, conversation: str
) -> list[str] | None:
    """The user messages of one Dust conversation, in order, from the simulator (None: not found)."""
    url = f"{simulator.url}/api/v1/w/demo/assistant/conversations/{conversation}"
    response = await http.get(url, headers={"Authorization": f"Bearer {TEST_DUST_KEY}"}, timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    content = response.json()["conversation"]["content"]
    return [str(m.get("content")) for rank in content for m in rank[-1:] if m.get("type") == "user_message"]


@dataclass
class Audit:
    """What reached Dust against what the clients were told (see `audit`)."""

    completed: int = 0
    failed: int = 0
    dust_user_messages: int = 0
    completed_posted_once: int = 0
    failed_posted: list[str] = field(default_factory=list)  # failed attempts whose message is in Dust
    completed_missing: list[str] = field(default_factory=list)
    unattributed: int = 0  # user messages in Dust that no known conversation holds
    order_broken: list[str] = field(default_factory=list)


async def audit(http: httpx2.AsyncClient, simulator: Proc, clients: list[SdkConversationalist]) -> Audit:
    """Attribute every user message Dust holds to the attempt that sent it.

    Each attempt sends its own text, so a conversation's user messages name exactly the attempts
    that reached Dust. For each client, its one Dust conversation must hold exactly the messages of
    its completed attempts, once each and in order; a failed attempt whose text is there was posted
    although its caller was told it failed (the answer it started is lost to the caller). A first
    turn that reached Dust but failed would have made a conversation no client knows: the
    simulator's count of all user messages, beyond those of the known conversations, counts them.
    """
    result = Audit()
    stats = (await http.get(f"{simulator.url}/_sim/stats", timeout=10)).json()
    result.dust_user_messages = int(stats["messages"])
    known = 0
    for c in clients:
        done = [a for a in c.attempts if a.ok]
        failed = [a for a in c.attempts if not a.ok]
        result.completed += len(done)
        result.failed += len(failed)
        posted = (
            await dust_user_messages(http, simulator, c.dust_conversation) if c.dust_conversation else []
        ) or []
        known += len(posted)
        counts: dict[str, int] = {}
        for text in posted:
            counts[text] = counts.get(text, 0) + 1
        for a in done:
            if counts.get(a.message, 0) == 1:
                result.completed_posted_once += 1
            else:
                result.completed_missing.append(f"{c.kind} {c.index} turn {a.turn} try {a.attempt}")
        for a in failed:
            if a.message in counts:
                why = reason_of(a.error or a.crossed or "")
                result.failed_posted.append(f"{c.kind} {c.index} turn {a.turn} try {a.attempt}: {why}")
        mine = [t for t in posted if t in {a.message for a in done}]
        if mine != [a.message for a in done]:
            result.order_broken.append(f"{c.kind} {c.index}")
    result.unattributed = result.dust_user_messages - known
    return result
