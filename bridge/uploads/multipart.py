"""Read the `file` part of a multipart request as a stream of chunks, never the whole body at once.

Starlette's `request.form()` spools every part before the handler sees any of it, so a size cap
could only be checked afterwards. Here python-multipart's push parser is fed the request stream
chunk by chunk and the file part's bytes are handed on as they arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import Message

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.requests import Request


class MultipartError(Exception):
    """The body is not a usable multipart upload; the message says what is wrong."""


@dataclass
class FilePart:
    """The headers of the `file` part and an iterator over its bytes."""

    filename: str
    content_type: str | None
    chunks: AsyncIterator[bytes]


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    field_name: bytes = b""
    field_value: bytes = b""


@dataclass
class _Event:
    kind: str  # "headers", "data" or "end"
    data: bytes = b""
    part: _Part | None = None


def _disposition(part: _Part) -> tuple[str | None, str | None, str | None]:
    message = Message()
    for header, value in part.headers:
        message[header.decode("latin-1")] = value.decode("utf-8", "replace")
    part_name = message.get_param("name", header="content-disposition")
    filename = message.get_param("filename", header="content-disposition")
    content_type = message.get("content-type")
    return (
        part_name if isinstance(part_name, str) else None,
        filename if isinstance(filename, str) else None,
        content_type.split(";")[0].strip().lower() if content_type else None,
    )


class _Collector:
    """python-multipart's callbacks: gathers each part's headers and turns the parse into `_Event`s."""

    def __init__(self) -> None:
        self._events: list[_Event] = []
        self._part = _Part()

    def parser(self, boundary: bytes) -> MultipartParser:
        """A push parser for a body with this boundary, reporting to this collector."""
        return MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    def take(self) -> list[_Event]:
        """The events parsed since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.field_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.field_value += data[start:end]

    def _on_header_end(self) -> None:
        part = self._part
        part.headers.append((part.field_name, part.field_value))
        part.field_name, part.field_value = b"", b""

    def _on_headers_finished(self) -> None:
        self._events.append(_Event("headers", part=self._part))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(_Event("data", data=bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._events.append(_Event("end"))


async def _events(request: Request) -> AsyncIterator[_Event]:
    """The body's parts as events, parsed as the request streams in."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise MultipartError("the body must be multipart/form-data with a part named 'file'")
    collector = _Collector()
    parser = collector.parser(params[b"boundary"])
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
            for event in collector.take():
                yield event
        parser.finalize()
    except ValueError as exc:  # python-multipart's parse errors derive from ValueError
        raise MultipartError(f"malformed multipart body: {exc}") from None
    for event in collector.take():
        yield event


async def file_part(request: Request, name: str = "file") -> FilePart:
    """The part called `name`; its chunks stream from the request as the caller iterates.

    Raises:
        MultipartError: not multipart, malformed, or no part called `name` with a filename.
    """
    events = _events(request)
    async for event in events:
        if event.kind != "headers" or event.part is None:
            continue
        part_name, filename, content_type = _disposition(event.part)
        if part_name == name:
            if filename is None:
                raise MultipartError(f"the '{name}' part must be a file (it has no filename)")
            return FilePart(filename=filename, content_type=content_type, chunks=_data(events))
    raise MultipartError(f"no part named '{name}' in the multipart body")


async def _data(events: AsyncIterator[_Event]) -> AsyncIterator[bytes]:
    async for event in events:
        if event.kind == "data":
            yield event.data
        elif event.kind == "end":
            return
    raise MultipartError("the multipart body ended inside the file part")
