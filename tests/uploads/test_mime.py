"""Type policy with real libmagic: sniffing generated files, decide_type, names, allow-lists, limits."""

from __future__ import annotations

import io
import struct
import threading
import zipfile
import zlib

import anyio
import pytest

from bridge.uploads.mime import (
    CATEGORY_LIMITS,
    DUST_TYPES,
    InvalidFileName,
    MimeSniffer,
    TypeMismatch,
    TypeNotAllowed,
    allowed_types,
    decide_type,
    sanitize_filename,
    size_limit,
    unknown_types,
)

MB = 1024 * 1024
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ALL = allowed_types()


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))

    header = struct.pack("!IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
        + chunk(b"IEND", b"")
    )


def zipped(*entries: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"></Types>'
)


def docx(*, rels: bool = True) -> bytes:
    """A minimal docx; without `_rels/.rels` second, libmagic only sees a zip."""
    entries = [("[Content_Types].xml", CONTENT_TYPES)]
    if rels:
        entries.append(("_rels/.rels", b"<Relationships/>"))
    entries.append(("word/document.xml", b"<w:document/>"))
    return zipped(*entries)


def elf() -> bytes:
    """An x86-64 ELF executable header."""
    ident = b"\x7fELF\x02\x01\x01\x00" + bytes(8)
    return (
        ident
        + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x400000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
        + bytes(100)
    )


def pe() -> bytes:
    """`MZ`, e_lfanew pointing at a minimal i386 PE header."""
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x80) + bytes(0x80 - 0x40)
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    return dos + b"PE\0\0" + coff + bytes(0xE0)


SAMPLES = {
    "pdf": (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n", "application/pdf"),
    "png": (png(), "image/png"),
    "jpeg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9", "image/jpeg"),
    "gif": (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
        "image/gif",
    ),
    "text": ("héllo wörld\nsecond line\n".encode(), "text/plain"),
    "json": (b'{"a": [1, 2, 3], "b": "x"}\n', "application/json"),
    "csv": (b"name,age,city\nalice,30,paris\nbob,25,berlin\ncarol,41,rome\n", "text/csv"),
    "zip": (zipped(("a.txt", b"hello")), "application/zip"),
    "docx": (docx(), DOCX),
    "docx-as-zip": (docx(rels=False), "application/zip"),
    "elf": (elf(), "application/x-executable"),
    "pe": (pe(), "application/vnd.microsoft.portable-executable"),
    "empty": (b"", "application/x-empty"),
}


@pytest.mark.parametrize("name", list(SAMPLES))
async def test_sniff_generated_files(name: str) -> None:
    data, expected = SAMPLES[name]
    assert await MimeSniffer().sniff(data) == expected


async def test_sniff_looks_at_the_first_8_kb_only() -> None:
    sniffer = MimeSniffer()
    # Text for 8 KB, then binary: libmagic would call the whole buffer binary.
    assert await sniffer.sniff(b"plain words\n" * 700 + bytes(range(256)) * 100) == "text/plain"
    assert await sniffer.sniff(b"%PDF-1.7\n" + bytes(10 * MB)) == "application/pdf"


async def test_sniff_runs_in_worker_threads_concurrently() -> None:
    sniffer = MimeSniffer()
    names = list(SAMPLES) * 8
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        results[i] = await sniffer.sniff(SAMPLES[names[i]][0])

    async with anyio.create_task_group() as tg:
        for i in range(len(names)):
            tg.start_soon(one, i)
    assert results == {i: SAMPLES[name][1] for i, name in enumerate(names)}
    # The event loop's thread never created a libmagic handle: every call ran in a worker thread.
    assert threading.current_thread() is threading.main_thread()
    assert getattr(sniffer._local, "magic", None) is None


@pytest.mark.parametrize(
    ("filename", "declared", "sniffed", "expected"),
    [
        ("report.pdf", "application/pdf", "application/pdf", "application/pdf"),
        ("report.pdf", None, "application/pdf", "application/pdf"),
        ("blob", "application/octet-stream", "application/pdf", "application/pdf"),
        ("photo.jpg", "image/JPG", "image/jpeg", "image/jpeg"),
        ("scan.png", "image/png; charset=binary", "image/png", "image/png"),
        ("notes.md", None, "text/plain", "text/markdown"),
        ("notes.txt", "text/plain; charset=utf-8", "text/html", "text/plain"),
        ("data.csv", "text/csv", "text/plain", "text/csv"),
        ("data.tsv", None, "text/plain", "text/tab-separated-values"),
        # Browsers on Windows send .csv as application/vnd.ms-excel.
        ("data.csv", "application/vnd.ms-excel", "text/csv", "text/csv"),
        ("data.json", "application/json; charset=utf-8", "application/json", "application/json"),
        ("config.yaml", None, "text/plain", "application/x-yaml"),
        ("script.py", None, "text/x-script.python", "text/x-python"),
        ("app.ts", None, "application/javascript", "text/typescript"),
        ("mail.eml", None, "message/rfc822", "message/rfc822"),
        ("Makefile", None, "text/x-makefile", "text/plain"),
        ("init.lua", "text/x-lua", "text/plain", "text/plain"),
        ("letter.docx", None, DOCX, DOCX),
        ("letter.docx", None, "application/zip", DOCX),
        ("budget.xlsx", XLSX, "application/zip", XLSX),
        ("old.xls", None, "application/CDFV2", "application/vnd.ms-excel"),
        ("old.doc", None, "application/msword", "application/msword"),
        ("memo.m4a", "audio/mp4", "audio/x-m4a", "audio/x-m4a"),
        ("take.wav", None, "audio/x-wav", "audio/wav"),
        ("song.mp3", None, "audio/mpeg", "audio/mpeg"),
    ],
)
def test_decide_type_accepts(filename: str, declared: str | None, sniffed: str, expected: str) -> None:
    assert decide_type(filename=filename, declared=declared, sniffed=sniffed, allowed=ALL) == expected


@pytest.mark.parametrize(
    ("filename", "declared", "sniffed"),
    [
        ("report.pdf", "application/pdf", "application/x-executable"),
        ("report.pdf", None, "application/vnd.microsoft.portable-executable"),
        ("notes.txt", None, "application/x-dosexec"),
        ("report.pdf", "application/pdf", "image/png"),
        ("photo.png", "image/png", "text/plain"),
        ("notes.txt", "text/plain", "application/octet-stream"),
        ("notes.txt", "text/plain", "image/svg+xml"),
        ("letter.docx", DOCX, XLSX),
        ("song.mp3", None, "application/pdf"),
    ],
)
def test_decide_type_mismatch(filename: str, declared: str | None, sniffed: str) -> None:
    with pytest.raises(TypeMismatch) as info:
        decide_type(filename=filename, declared=declared, sniffed=sniffed, allowed=ALL)
    assert info.value.sniffed == sniffed.lower()


@pytest.mark.parametrize(
    ("filename", "declared", "sniffed", "mime"),
    [
        (
            "setup.exe",
            None,
            "application/vnd.microsoft.portable-executable",
            "application/vnd.microsoft.portable-executable",
        ),
        ("tool", None, "application/x-executable", "application/x-executable"),
        ("lib.so", "application/octet-stream", "application/x-sharedlib", "application/x-sharedlib"),
        ("archive.zip", None, "application/zip", "application/zip"),
        ("archive", None, "application/zip", "application/zip"),
        ("drawing.svg", None, "image/svg+xml", "image/svg+xml"),
        ("clip.mp4", "video/mp4", "video/mp4", "video/mp4"),
        ("empty.txt", "text/plain", "application/x-empty", "application/x-empty"),
    ],
)
def test_decide_type_not_allowed(filename: str, declared: str | None, sniffed: str, mime: str) -> None:
    with pytest.raises(TypeNotAllowed) as info:
        decide_type(filename=filename, declared=declared, sniffed=sniffed, allowed=ALL)
    assert info.value.mime == mime


def test_not_allowed_message_names_the_type_and_what_is_accepted() -> None:
    with pytest.raises(TypeNotAllowed, match=r"application/zip .*accepted types include application/pdf"):
        decide_type(filename="a.zip", declared=None, sniffed="application/zip", allowed=ALL)


def test_narrowed_allow_list_refuses_the_rest() -> None:
    allowed = allowed_types(["application/pdf", "text/*"])
    assert (
        decide_type(filename="a.md", declared=None, sniffed="text/plain", allowed=allowed) == "text/markdown"
    )
    with pytest.raises(TypeNotAllowed, match="image/png") as info:
        decide_type(filename="a.png", declared="image/png", sniffed="image/png", allowed=allowed)
    assert "image/png" not in str(info.value).split("include", 1)[1]


async def test_real_bytes_end_to_end() -> None:
    sniffer = MimeSniffer()
    with pytest.raises(TypeMismatch):
        decide_type(
            filename="report.pdf", declared="application/pdf", sniffed=await sniffer.sniff(elf()), allowed=ALL
        )
    with pytest.raises(TypeMismatch):
        decide_type(filename="report.pdf", declared=None, sniffed=await sniffer.sniff(pe()), allowed=ALL)
    with pytest.raises(TypeMismatch):
        decide_type(
            filename="chart.pdf", declared="application/pdf", sniffed=await sniffer.sniff(png()), allowed=ALL
        )
    sniffed = await sniffer.sniff(docx(rels=False))
    assert decide_type(filename="cv.docx", declared=None, sniffed=sniffed, allowed=ALL) == DOCX


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\a.pdf", "a.pdf"),
        ("re\x00port.pdf", "report.pdf"),
        ("two\nlines.txt", "two lines.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("  .hidden", "hidden"),
        ("a \t  b.txt", "a b.txt"),
        ("trailing. ", "trailing"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),
    ],
)
def test_sanitize_filename(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_sanitize_filename_caps_length_keeping_the_extension() -> None:
    name = sanitize_filename("x" * 500 + ".pdf")
    assert len(name) == 200
    assert name.endswith("x.pdf")
    assert len(sanitize_filename("y" * 500)) == 200


@pytest.mark.parametrize("raw", ["...", "", "/", "dir/", " . ", "\x00\x01\u200b"])
def test_sanitize_filename_refuses_empty_results(raw: str) -> None:
    with pytest.raises(InvalidFileName):
        sanitize_filename(raw)


def test_allowed_types_and_wildcards() -> None:
    images = {"image/jpeg", "image/png", "image/gif", "image/webp"}
    assert allowed_types() == frozenset(DUST_TYPES)
    assert allowed_types([" ", ""]) == frozenset(DUST_TYPES)
    assert allowed_types(["*"]) == frozenset(DUST_TYPES)
    assert allowed_types(["image/*"]) == images
    assert allowed_types(["IMAGE/*", "application/pdf", "application/zip"]) == images | {"application/pdf"}
    assert allowed_types(["image/jpg"]) == {"image/jpeg"}
    assert allowed_types(["application/zip"]) == frozenset()


def test_unknown_types() -> None:
    entries = ["application/pdf", "application/zip", "video/*", "nonsense", " image/* ", "audio/mp4", ""]
    assert unknown_types(entries) == ["application/zip", "video/*", "nonsense"]


def test_size_limit() -> None:
    assert size_limit("image/png", 50 * MB) == 5 * MB
    assert size_limit("application/pdf", 10 * MB) == 10 * MB
    assert size_limit("application/pdf", 200 * MB) == 50 * MB
    assert size_limit("audio/mpeg", 200 * MB) == 100 * MB
    assert size_limit("text/csv; charset=utf-8", 200 * MB) == 50 * MB
    with pytest.raises(TypeNotAllowed):
        size_limit("application/zip", 10 * MB)


def test_every_dust_type_has_a_category_limit() -> None:
    assert set(DUST_TYPES.values()) == set(CATEGORY_LIMITS)
    assert "application/octet-stream" not in DUST_TYPES
