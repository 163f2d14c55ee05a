"""A lean HTTP/1.1 client on raw asyncio streams, and the two protocols the load runs speak with it.

Why not httpx2 or `mcp.Client`: on this 2-core machine the client shares the CPU with the bridge,
and both of those cost more client CPU per streamed answer than the bridge itself does (see
docs/performance.md), so 500 of them measure the client. This client does only what the runs
need: keep-alive connections, `Content-Length` and chunked bodies, Server-Sent Events, an idle
timeout on every read (like a proxy's idle-read timeout), and an abrupt close (a client that goes
away mid-answer). Protocol correctness is proven separately with `mcp.Client` (tests/bench).

Speaks:

* `McpWire`: MCP Streamable HTTP on `/mcp`, either the 2026-07-28 stateless form (every request
  carries `_meta` with the protocol version and client capabilities, plus the `MCP-Protocol-Version`,
  `Mcp-Method` and `Mcp-Name` headers) or a handshake-era session (`initialize`, then
  `Mcp-Session-Id` on every request).
* `DustWire`: the Dust conversation API the simulator serves (create a conversation or post a
  message, then read the agent message's event stream), the floor the bridge is compared with.

Loopback only: `connect` refuses any host that is not 127.0.0.1 or localhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MODERN_VERSION = "2026-07-28"
LEGACY_VERSION = "2025-11-25"
_LOOPBACK = frozenset({"127.0.0.1", "localhost"})
# uvicorn closes keep-alive connections idle for 5 s; reconnect before reusing one idle this long.
_STALE_AFTER_SECONDS = 4.0
_MAX_HEADER_BYTES = 64 * 1024


class WireError(Exception):
    """The exchange failed: connection refused or lost, timeout, or a malformed response."""


class IdleTimeout(WireError):
    """Nothing arrived for `idle_timeout` seconds."""


@dataclass
class Response:
    """Status line and headers of one response; read the body through the connection."""

    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class Connection:
    """One keep-alive HTTP/1.1 connection to a loopback server; one exchange at a time."""

    def __init__(self, url: str, idle_timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.hostname not in _LOOPBACK:
            raise ValueError(f"loopback only: {parts.hostname!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.idle_timeout = idle_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self._reusable = False

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def _open(self) -> None:
        self.close()
        try:
            async with asyncio.timeout(self.idle_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, limit=1 << 20
                )
        except (OSError, TimeoutError) as exc:
            raise WireError(f"connect failed: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Close the socket (politely: FIN)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None
        self._reusable = False

    def abort(self) -> None:
        """Drop the connection at once (RST), as a client process that dies would."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.transport.abort()
        self._reader = self._writer = None
        self._reusable = False

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Response:
        """Send one request and read the status line and headers (opening a connection if needed)."""
        stale = time.monotonic() - self._last_used > _STALE_AFTER_SECONDS
        if (
            self._writer is None
            or not self._reusable
            or stale
            or self._reader is None
            or self._reader.at_eof()
        ):
            await self._open()
        assert self._reader is not None and self._writer is not None
        self._reusable = False
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self._writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                self._writer.write(body)
            await self._writer.drain()
            async with asyncio.timeout(self.idle_timeout):
                raw = await self._reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self.abort()
            raise IdleTimeout(f"no response head within {self.idle_timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.abort()
            raise WireError(f"connection lost before the response: {type(exc).__name__}") from None
        if len(raw) > _MAX_HEADER_BYTES:
            self.abort()
            raise WireError("response head too large")
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError):
            self.abort()
            raise WireError(f"bad status line {status_line[:80]!r}") from None
        parsed: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                parsed[name.strip().lower()] = value.strip()
        return Response(status, parsed)

    async def body_chunks(self, response: Response) -> AsyncIterator[bytes]:
        """The body, as it arrives; the connection is reusable once this has been read to the end."""
        assert self._reader is not None
        reader = self._reader
        try:
            if response.chunked:
                while True:
                    async with asyncio.timeout(self.idle_timeout):
                        size_line = await reader.readline()
                        if not size_line:
                            raise asyncio.IncompleteReadError(b"", None)
                        size = int(size_line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")  # no trailers are ever sent here
                            break
                        data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif "content-length" in response.headers:
                remaining = int(response.headers["content-length"])
                while remaining > 0:
                    async with asyncio.timeout(self.idle_timeout):
                        data = await reader.read(min(remaining, 1 << 16))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(data)
                    yield data
            elif response.status in (204, 304) or 100 <= response.status < 200:
                pass
            else:
                # No length: the body runs to the end of the connection.
                while True:
                    async with asyncio.timeout(self.idle_timeout):
                        data = await reader.read(1 << 16)
                    if not data:
                        break
                    yield data
                self.close()
                return
        except TimeoutError:
            self.abort()
            raise IdleTimeout(f"nothing received for {self.idle_timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.abort()
            raise WireError(f"connection lost mid-body: {type(exc).__name__}") from None
        self._last_used = time.monotonic()
        self._reusable = response.headers.get("connection", "").lower() != "close"
        if not self._reusable:
            self.close()

    async def read_body(self, response: Response) -> bytes:
        parts = [chunk async for chunk in self.body_chunks(response)]
        return b"".join(parts)


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None = None


class SseParser:
    """Incremental Server-Sent Events parser (LF or CRLF line ends; comments are skipped)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            lf = self._buffer.find(b"\n\n")
            crlf = self._buffer.find(b"\r\n\r\n")
            candidates = [(i, 2) for i in (lf,) if i >= 0] + [(i, 4) for i in (crlf,) if i >= 0]
            if not candidates:
                return events
            end, width = min(candidates)
            raw, self._buffer = self._buffer[:end], self._buffer[end + width :]
            event = "message"
            data: list[str] = []
            event_id: str | None = None
            for line in raw.decode("utf-8").replace("\r\n", "\n").split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id":
                    event_id = value
            if data:
                events.append(SseEvent(event, "\n".join(data), event_id))


# --- MCP --------------------------------------------------------------------------------------

Progress = Callable[[str], None]


class McpError(WireError):
    """A JSON-RPC error, an HTTP error status, or a response that is not what MCP says."""

    def __init__(self, message: str, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class ToolResult:
    result: dict[str, Any]
    progress_messages: int = 0
    first_chunk: float | None = None  # perf_counter() of the first progress with answer text
    chunks: list[str] = field(default_factory=list)  # answer text as it streamed
    heartbeats: int = 0  # progress messages that were status lines ("[waiting] ...")
    sse: bool = False

    @property
    def is_error(self) -> bool:
        return bool(self.result.get("isError"))

    @property
    def text(self) -> str:
        return "".join(
            block.get("text", "") for block in self.result.get("content") or [] if block.get("type") == "text"
        )

    @property
    def structured(self) -> dict[str, Any]:
        value = self.result.get("structuredContent")
        return value if isinstance(value, dict) else {}


class McpWire:
    """MCP over one keep-alive connection: 2026-07-28 stateless requests, or a handshake session."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        legacy: bool = False,
        idle_timeout: float = 60.0,
        client_name: str = "dmb-bench",
    ) -> None:
        self.conn = Connection(url, idle_timeout)
        self.path = urlsplit(url).path or "/mcp"
        self.legacy = legacy
        self.session_id: str | None = None
        self._ids = itertools.count(1)
        self._headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        if key is not None:
            self._headers["Authorization"] = f"Bearer {key}"
        self._meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientInfo": {"name": client_name, "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }

    async def initialize(self) -> None:
        """Open a handshake-era session (legacy mode only)."""
        assert self.legacy
        params = {
            "protocolVersion": LEGACY_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "dmb-bench", "version": "1"},
        }
        await self._call("initialize", params)
        if self.session_id is None:
            raise McpError("initialize answered without Mcp-Session-Id")
        await self._notify("notifications/initialized")

    def _request_headers(self, method: str, name: str | None) -> dict[str, str]:
        headers = dict(self._headers)
        if self.legacy:
            if self.session_id is not None:
                headers["Mcp-Session-Id"] = self.session_id
                headers["MCP-Protocol-Version"] = LEGACY_VERSION
        else:
            headers["MCP-Protocol-Version"] = MODERN_VERSION
            headers["Mcp-Method"] = method
            if name is not None:
                headers["Mcp-Name"] = name
        return headers

    async def _notify(self, method: str) -> None:
        body = json.dumps({"jsonrpc": "2.0", "method": method}).encode()
        response = await self.conn.request("POST", self.path, self._request_headers(method, None), body)
        await self.conn.read_body(response)
        if response.status != 202:
            raise McpError(f"{method}: HTTP {response.status}", status=response.status)

    async def _call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        progress_token: int | None = None,
        on_progress: Progress | None = None,
        on_open: Callable[[], Awaitable[None]] | None = None,
    ) -> ToolResult:
        request_id = next(self._ids)
        params = dict(params or {})
        meta: dict[str, Any] = {} if self.legacy else dict(self._meta)
        if progress_token is not None:
            meta["progressToken"] = progress_token
        if meta:
            params["_meta"] = meta
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params:
            message["params"] = params
        body = json.dumps(message, separators=(",", ":")).encode()
        response = await self.conn.request("POST", self.path, self._request_headers(method, name), body)
        if method == "initialize":
            self.session_id = response.headers.get("mcp-session-id")
        out = ToolResult(result={})
        if response.content_type == "application/json":
            raw = await self.conn.read_body(response)
            try:
                decoded = json.loads(raw)
            except ValueError:
                raise McpError(
                    f"HTTP {response.status}: not JSON: {raw[:200]!r}", status=response.status
                ) from None
            return self._finish(decoded, response.status, out)
        if response.content_type != "text/event-stream":
            raw = await self.conn.read_body(response)
            raise McpError(
                f"HTTP {response.status} {response.content_type}: {raw[:200]!r}", status=response.status
            )
        out.sse = True
        if on_open is not None:
            await on_open()
        parser = SseParser()
        final: dict[str, Any] | None = None
        async for chunk in self.conn.body_chunks(response):
            for event in parser.feed(chunk):
                decoded = json.loads(event.data)
                if decoded.get("method") == "notifications/progress":
                    text = str((decoded.get("params") or {}).get("message") or "")
                    out.progress_messages += 1
                    if text.startswith("["):
                        out.heartbeats += 1
                    else:
                        if out.first_chunk is None:
                            out.first_chunk = time.perf_counter()
                        out.chunks.append(text)
                    if on_progress is not None:
                        on_progress(text)
                elif decoded.get("id") == request_id:
                    final = decoded
        if final is None:
            raise McpError("the event stream ended without the response", status=response.status)
        return self._finish(final, response.status, out)

    @staticmethod
    def _finish(decoded: dict[str, Any], status: int, out: ToolResult) -> ToolResult:
        if "error" in decoded:
            error = decoded["error"] or {}
            raise McpError(
                f"HTTP {status}: JSON-RPC {error.get('code')}: {str(error.get('message'))[:300]}",
                status=status,
                code=error.get("code"),
            )
        if status >= 400 or "result" not in decoded:
            raise McpError(f"HTTP {status}: {str(decoded)[:300]}", status=status)
        out.result = decoded["result"]
        return out

    async def list_tools(self) -> list[dict[str, Any]]:
        result = await self._call("tools/list")
        tools = result.result.get("tools")
        if not isinstance(tools, list):
            raise McpError("tools/list without tools")
        return tools

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        on_progress: Progress | None = None,
        on_open: Callable[[], Awaitable[None]] | None = None,
    ) -> ToolResult:
        """`tools/call` with a progress token; progress messages are collected in the result."""
        token = next(self._ids) + 100_000
        return await self._call(
            "tools/call",
            {"name": name, "arguments": arguments},
            name=name,
            progress_token=token,
            on_progress=on_progress,
            on_open=on_open,
        )

    def close(self) -> None:
        self.conn.close()

    def abort(self) -> None:
        self.conn.abort()


# --- Dust (the simulator), the floor ------------------------------------------------------------


@dataclass
class DustTurn:
    conversation_id: str
    message_id: str
    text: str
    first_chunk: float | None
    terminal: str | None


class DustWire:
    """Create/continue a conversation and read the agent's event stream, straight from the simulator."""

    def __init__(self, url: str, key: str, workspace: str = "demo", idle_timeout: float = 60.0) -> None:
        self.conn = Connection(url, idle_timeout)
        self.workspace = workspace
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def _json(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        response = await self.conn.request(method, path, self._headers, body)
        raw = await self.conn.read_body(response)
        if response.status >= 400:
            raise WireError(f"Dust HTTP {response.status}: {raw[:200]!r}")
        decoded: dict[str, Any] = json.loads(raw)
        return decoded

    async def ask(self, agent: str, message: str, conversation_id: str | None) -> DustTurn:
        base = f"/api/v1/w/{self.workspace}/assistant/conversations"
        body = {
            "content": message,
            "mentions": [{"configurationId": agent}],
            "context": {"username": "bench", "timezone": "UTC"},
        }
        if conversation_id is None:
            created = await self._json(
                "POST", base, {"title": None, "visibility": "unlisted", "blocking": False, "message": body}
            )
            conversation_id = str(created["conversation"]["sId"])
            user_sid = created["message"]["sId"]
            agent_sid = next(
                m["sId"]
                for group in created["conversation"]["content"]
                for m in group
                if m.get("type") == "agent_message" and m.get("parentMessageId") == user_sid
            )
        else:
            posted = await self._json("POST", f"{base}/{conversation_id}/messages", body)
            agent_sid = posted["agentMessages"][0]["sId"]
        events = (
            f"/api/sse/v1/w/{self.workspace}/assistant/conversations/{conversation_id}"
            f"/messages/{agent_sid}/events"
        )
        text: list[str] = []
        first: float | None = None
        terminal: str | None = None
        last_event: str | None = None
        for _ in range(20):  # reconnect like a Dust client does, from the last event seen
            path = events + (f"?lastEventId={last_event}" if last_event else "")
            response = await self.conn.request("GET", path, {"Authorization": self._headers["Authorization"]})
            if response.status >= 400:
                raw = await self.conn.read_body(response)
                raise WireError(f"Dust events HTTP {response.status}: {raw[:200]!r}")
            parser = SseParser()
            async for chunk in self.conn.body_chunks(response):
                for event in parser.feed(chunk):
                    if event.data == "done":
                        continue
                    decoded = json.loads(event.data)
                    data = decoded.get("data") or {}
                    last_event = decoded.get("eventId") or last_event
                    kind = data.get("type")
                    if kind == "generation_tokens" and data.get("classification") == "tokens":
                        if first is None:
                            first = time.perf_counter()
                        text.append(str(data.get("text") or ""))
                    elif kind in ("agent_message_success", "agent_error", "agent_generation_cancelled"):
                        terminal = kind
            if terminal is not None:
                break
        return DustTurn(conversation_id, agent_sid, "".join(text), first, terminal)

    def close(self) -> None:
        self.conn.close()
