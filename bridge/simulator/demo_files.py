"""The bytes of the files the file-maker agent's tool generates: deterministic, from the message.

`report_csv` is a small table (twelve months of values drawn from a hash of the message) and
`chart_png` a valid PNG bar chart of the same values; `csv_snippet` is the snippet Dust writes for a
CSV a tool made (front/lib/api/csv.ts generateCSVSnippet, for a file under its 16,384-character cap).
"""

from __future__ import annotations

import csv
import hashlib
import io
import struct
import zlib

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WIDTH, _HEIGHT, _BAR = 48, 32, 4  # one 4-pixel column per month
_BACKGROUND, _BAR_COLOUR = (255, 255, 255), (31, 119, 180)


def report_values(message: str) -> list[int]:
    """One value per month (0 to 255), from the SHA-256 of the message."""
    digest = hashlib.sha256(message.encode("utf-8")).digest()
    return list(digest[: len(MONTHS)])


def report_csv(message: str) -> bytes:
    """`month,topic,value` and one row per month; the topic is the message (quoted as CSV needs)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["month", "topic", "value"])
    for month, value in zip(MONTHS, report_values(message), strict=True):
        writer.writerow([month, message, value])
    return out.getvalue().encode("utf-8")


def csv_snippet(data: bytes) -> str:
    """generateCSVSnippet of a small CSV: `TOTAL_LINES: <records>`, the header and every record
    (each written back as one CSV line, trimmed), then `(end of file)`."""
    header, *records = csv.reader(io.StringIO(data.decode("utf-8")))
    lines = []
    for row in (header, *records):
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(row)
        lines.append(out.getvalue().strip())
    body = "".join(f"{line}\n" for line in lines)
    return f"TOTAL_LINES: {len(records)}\n{body}\n(end of file)\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def chart_png(message: str) -> bytes:
    """A 48x32 RGB PNG: one blue bar per month, as tall as its value allows."""
    heights = [1 + value * (_HEIGHT - 1) // 255 for value in report_values(message)]
    rows = bytearray()
    for y in range(_HEIGHT):
        rows.append(0)  # filter type: none
        for x in range(_WIDTH):
            month = x // _BAR
            in_bar = x % _BAR != _BAR - 1 and _HEIGHT - y <= heights[month]
            rows.extend(_BAR_COLOUR if in_bar else _BACKGROUND)
    header = struct.pack(">IIBBBBB", _WIDTH, _HEIGHT, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _chunk(b"IEND", b"")
    )
