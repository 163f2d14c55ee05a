"""Server-sent events: the WHATWG event-stream format, decoded from a response's byte chunks.

The Dust client reads event streams through aiohttp, which has no SSE decoder of its own. This one
takes whatever chunks arrive (one read of the socket each), so an answer streamed token by token
costs one split per chunk rather than a pass through a line iterator per line; it accepts every
line ending the format allows (CRLF, LF, CR, also split across chunks) and bounds the memory one
event may take.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dust's largest frames carry a whole agent message (text, actions, citations): far below this,
# which only stops a broken or hostile server from growing one event without end.
MAX_EVENT_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SseFrame:
    """One dispatched event: its type ("message" unless named), data lines joined by LF, last id."""

    event: str = "message"
    data: str = ""
    id: str = ""


class SseTooLarge(ValueError):
    """An event (or an unterminated line) grew past the decoder's limit."""


class SseDecoder:
    """Feed it the chunks of one response in order; it returns the events each chunk completed."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._partial = b""  # the start of a line whose end has not arrived yet
        self._after_cr = False  # the last chunk ended in CR: a LF starting the next one is its pair
        self._started = False  # a first line has been read
        self._event = ""
        self._data: list[str] = []
        self._id = ""
        self._size = 0

    def feed(self, chunk: bytes) -> list[SseFrame]:
        """The events completed by `chunk`.

        Raises:
            SseTooLarge: the current event would exceed the limit.
        """
        if not chunk:
            return []
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        text = self._partial + chunk if self._partial else chunk
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = text.split(b"\n")
        self._partial = lines.pop()
        if lines and not self._started:
            self._started = True
            lines[0] = lines[0].removeprefix(_BOM)  # only the stream's very first line may have one
        if self._size + len(self._partial) > self._max:
            raise SseTooLarge(f"a server-sent event exceeded {self._max} bytes")
        frames: list[SseFrame] = []
        for line in lines:
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)
        return frames

    def _line(self, raw: bytes) -> SseFrame | None:
        if not raw:
            return self._dispatch()
        if raw.startswith(b":"):
            return None  # a comment (keep-alive)
        self._size += len(raw)
        if self._size > self._max:
            raise SseTooLarge(f"a server-sent event exceeded {self._max} bytes")
        name, colon, value = raw.decode("utf-8", "replace").partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields are ignored: reconnect timing is the client's own policy.
        return None

    def _dispatch(self) -> SseFrame | None:
        event, data = self._event, self._data
        self._event, self._data, self._size = "", [], 0
        if not data:
            return None  # an event without data is not dispatched (WHATWG "dispatch the event")
        return SseFrame(event=event or "message", data="\n".join(data), id=self._id)
