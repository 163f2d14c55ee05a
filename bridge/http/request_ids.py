"""The id of the JSON-RPC request in a body: read whole (`request_id_of`), or scanned as it arrives.

Finding the id of an oversized body: `IdScan` reads the body as it arrives, tracking only what it
needs (nesting depth, strings, the top-level keys), keeps no more than a few bytes, skips string
contents with one regular-expression match each, and stops at the first top-level `id`. Clients
put the id near the start (the SDK's writes `{"jsonrpc":"2.0","id":...`); one after a large
`params` is still found within the caller's bound and `_SCAN_STEPS` tokens; past either bound the
caller's error goes out with `id: null`, as JSON-RPC prescribes when the id cannot be determined.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

# Tokens the scan looks at before it gives up (a string is one, so is a bracket; below the top
# level nothing else is looked at): about 30 ms of CPU.
_SCAN_STEPS: Final = 50_000
_KEY_BYTES: Final = 64  # a longer top-level key is not one this scan looks for
_STRING_ID_BYTES: Final = 4096
_SCALAR_BYTES: Final = 256

_NON_WS = re.compile(rb"[^ \t\r\n]")
_STRUCTURAL = re.compile(rb'["{}\[\],:]')  # at the top level, where keys and values alternate
_NESTED = re.compile(rb'["{}\[\]]')
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_SCALAR_END = re.compile(rb"[,}\] \t\r\n]")
_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_QUOTE, _BACKSLASH, _COMMA, _COLON = ord('"'), ord("\\"), ord(","), ord(":")
_OPEN, _CLOSE = frozenset(b"{["), frozenset(b"}]")

VALID_ID_KINDS: Final = frozenset({"string", "integer"})


def request_id_of(body: bytes) -> str | int | None:
    """The id of the JSON-RPC request in `body`; None for a notification, a batch or garbage."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if isinstance(message, dict) and "method" in message:
        found = message.get("id")
        if isinstance(found, str | int) and not isinstance(found, bool):
            return found
    return None


@dataclass(frozen=True)
class FoundId:
    """The value of a top-level `id` member: its kind, and its value when it is a usable id."""

    kind: str  # "string", "integer", a key of _KIND_NAMES, or "unknown" (garbage, or past a bound)
    value: str | int | None = None


class IdScan:
    """Finds the top-level `id` (and whether there is a `method`) of a JSON object fed in chunks.

    Not a validator: it follows strings and nesting only, so garbage yields "unknown" or nothing
    (the SDK then refuses the body itself). Only the first top-level `id` member counts. The
    chunks can end anywhere (inside a key, an escape, a number); what it keeps is a few bytes.
    """

    def __init__(self) -> None:
        self.id: FoundId | None = None
        self.has_method = False
        self.finished = False  # the top-level value is closed (or was not an object)
        self.gave_up = False  # _SCAN_STEPS spent
        self._steps = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False  # a backslash ended the previous chunk, inside a string
        self._capture: bytearray | None = None  # the key or string id being read
        self._capture_limit = 0
        self._capture_overflow = False
        self._capture_is_key = False
        self._expect_key = False
        self._key: str | None = None
        self._id_value_next = False
        self._scalar: bytearray | None = None

    @property
    def settled(self) -> bool:
        """Whether more of the body can change nothing this scan reports."""
        if self.finished or self.gave_up:
            return True
        return self.id is not None and (self.id.kind in VALID_ID_KINDS or self.has_method)

    def feed(self, data: bytes) -> None:
        """Scan the next chunk of the body."""
        i, n = 0, len(data)
        while i < n and not self.settled:
            self._steps += 1
            if self._steps > _SCAN_STEPS:
                self.gave_up = True
                return
            if self._in_string:
                i = self._string(data, i)
            elif self._scalar is not None:
                i = self._scalar_part(data, i)
            elif self._id_value_next or self._depth == 0:
                found = _NON_WS.search(data, i)
                if found is None:
                    return
                i = found.start()
                if self._depth == 0:
                    if data[i] != ord("{"):
                        self.finished = True
                        return
                    self._depth, self._expect_key = 1, True
                    i += 1
                else:
                    i = self._id_value_start(data, i)
            else:
                i = self._structural(data, i)

    def _structural(self, data: bytes, i: int) -> int:
        found = (_STRUCTURAL if self._depth == 1 else _NESTED).search(data, i)
        if found is None:
            return len(data)
        j = found.start()
        char = data[j]
        if char == _QUOTE:
            self._in_string = True
            if self._depth == 1 and self._expect_key:
                self._start_capture(_KEY_BYTES, is_key=True)
        elif char in _OPEN:
            self._depth += 1
        elif char in _CLOSE:
            self._depth -= 1
            self.finished = self._depth == 0
        elif self._depth == 1 and char == _COMMA:
            self._expect_key, self._key = True, None
        elif self._depth == 1 and char == _COLON:
            if self._key == "id" and self.id is None:
                self._id_value_next = True
            elif self._key == "method":
                self.has_method = True
        return j + 1

    def _id_value_start(self, data: bytes, i: int) -> int:
        self._id_value_next = False
        char = data[i]
        if char == _QUOTE:
            self._in_string = True
            self._start_capture(_STRING_ID_BYTES, is_key=False)
            return i + 1
        if char in _OPEN:
            self.id = FoundId("object" if char == ord("{") else "list")
            return i  # the bracket itself is counted by _structural
        self._scalar = bytearray()
        return i

    def _string(self, data: bytes, i: int) -> int:
        if self._escaped:
            self._escaped = False
            self._take(data[i : i + 1])
            return i + 1
        j = _STRING_BODY.match(data, i).end()  # type: ignore[union-attr]  # matches the empty string
        self._take(data[i:j])
        if j == len(data):
            return j
        if data[j] == _BACKSLASH:  # the chunk ends between a backslash and what it escapes
            self._take(b"\\")
            self._escaped = True
            return j + 1
        self._in_string = False
        self._string_closed()
        return j + 1

    def _scalar_part(self, data: bytes, i: int) -> int:
        assert self._scalar is not None
        found = _SCALAR_END.search(data, i)
        j = found.start() if found is not None else len(data)
        if len(self._scalar) + (j - i) <= _SCALAR_BYTES:
            self._scalar += data[i:j]
        else:
            self._scalar = bytearray(b"?" * (_SCALAR_BYTES + 1))  # too long: "unknown"
        if found is None:
            return j
        self.id = _scalar_id(bytes(self._scalar))
        self._scalar = None
        return j  # the delimiter is _structural's

    def _start_capture(self, limit: int, *, is_key: bool) -> None:
        self._capture, self._capture_limit = bytearray(), limit
        self._capture_overflow, self._capture_is_key = False, is_key

    def _take(self, part: bytes) -> None:
        if self._capture is None or self._capture_overflow:
            return
        if len(self._capture) + len(part) > self._capture_limit:
            self._capture_overflow = True
        else:
            self._capture += part

    def _string_closed(self) -> None:
        if self._capture is None:
            return
        decoded: str | None = None
        if not self._capture_overflow:
            try:
                decoded = json.loads(b'"' + bytes(self._capture) + b'"')
            except ValueError:
                decoded = None
        if self._capture_is_key:
            self._key, self._expect_key = decoded, False
        else:
            self.id = FoundId("string", decoded)
        self._capture = None


def _scalar_id(raw: bytes) -> FoundId:
    if raw in (b"true", b"false"):
        return FoundId("boolean")
    if raw == b"null":
        return FoundId("null")
    if _INTEGER.fullmatch(raw):
        try:
            return FoundId("integer", int(raw))
        except ValueError:  # more digits than int() converts
            return FoundId("integer")
    if _NUMBER.fullmatch(raw):
        return FoundId("number")
    return FoundId("unknown")


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return "null"


def invalid_request_id(body: bytes) -> str | None:
    """The kind of this request's `id` when it is neither a string nor an integer, else None.

    None too for a notification, a response (the SDK refuses a bad one itself; an error response
    may carry `id: null`), a batch or garbage (the SDK answers those). The scan settles within the
    first bytes for the usual key order; when it cannot, the body (at most the cap) is parsed.
    """
    scan = IdScan()
    scan.feed(body)
    found = scan.id
    if scan.settled and not scan.gave_up and (found is None or found.kind != "unknown"):
        if found is None or found.kind in VALID_ID_KINDS or not scan.has_method:
            return None
        return found.kind
    # Past the scan's bounds, or an id it could not read: the body decides (it is within the cap).
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return None
    kind = _kind_of(message["id"])
    return None if kind in VALID_ID_KINDS else kind
