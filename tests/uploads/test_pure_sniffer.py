"""MIME sniffing without libmagic (bridge/uploads/pure_sniffer.py), on the corpus the libmagic tests
use (tests/uploads/test_mime.py SAMPLES): the same names where it can, the listed differences where
it cannot, and the same allow-list decisions either way; programs stay refused whatever their name."""

from __future__ import annotations

import struct
import sys

import pytest

from bridge.uploads import mime, pure_sniffer
from bridge.uploads.mime import MimeSniffer, TypeMismatch, TypeNotAllowed, decide_type
from tests.uploads.test_mime import ALL, DOCX, SAMPLES, elf, pe, png

# Where the pure-Python sniffer names a sample otherwise than libmagic (and why that is safe).
DIFFERENCES = {
    # text either way: a .csv claim is kept, an unnamed file goes to Dust as text/plain
    "csv": "text/plain",
    # a program either way: refused whatever the claim
    "pe": "application/x-dosexec",
    # [Content_Types].xml first is enough here; a .docx claim accepts both answers
    "docx-as-zip": DOCX,
}

# The name each sample would typically arrive with.
NAMES = {
    "pdf": "a.pdf",
    "png": "a.png",
    "jpeg": "a.jpg",
    "gif": "a.gif",
    "text": "a.txt",
    "json": "a.json",
    "csv": "a.csv",
    "zip": "a.zip",
    "docx": "a.docx",
    "docx-as-zip": "a.docx",
    "elf": "a.pdf",
    "pe": "a.pdf",
    "empty": "a.txt",
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_corpus_gets_libmagics_names_but_for_the_listed_differences(name: str) -> None:
    data, libmagic = SAMPLES[name]
    assert pure_sniffer.sniff(data) == DIFFERENCES.get(name, libmagic)


def _decision(filename: str, declared: str | None, sniffed: str) -> str:
    try:
        return decide_type(filename=filename, declared=declared, sniffed=sniffed, allowed=ALL)
    except (TypeMismatch, TypeNotAllowed) as exc:
        return type(exc).__name__


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_the_allow_list_decides_the_same_for_both_sniffers(name: str, named: bool) -> None:
    data, libmagic = SAMPLES[name]
    filename = NAMES[name] if named else "upload"
    by_libmagic = _decision(filename, None, libmagic)
    by_fallback = _decision(filename, None, pure_sniffer.sniff(data))
    if name == "csv" and not named:
        # Unnamed CSV: text either way, sent as text/plain instead of text/csv.
        assert (by_libmagic, by_fallback) == ("text/csv", "text/plain")
    elif name == "docx-as-zip" and not named:
        # Unnamed: libmagic sees a zip (refused), the fallback a docx (accepted, then scanned by ClamAV).
        assert (by_libmagic, by_fallback) == ("TypeNotAllowed", DOCX)
    else:
        assert by_fallback == by_libmagic


def macho() -> bytes:
    return b"\xcf\xfa\xed\xfe" + struct.pack("<IIIIII", 0x01000007, 3, 2, 0, 0, 0) + bytes(64)


def java_class() -> bytes:
    return b"\xca\xfe\xba\xbe\x00\x00\x00\x41" + bytes(64)


def ole2(clsid: bytes) -> bytes:
    """An OLE2 header (512-byte sectors, directory in sector 0) whose root entry carries `clsid`."""
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHH", header, 0x1A, 0x3E, 3, 0xFFFE)
    struct.pack_into("<H", header, 0x1E, 9)
    struct.pack_into("<I", header, 0x30, 0)
    root = bytearray(128)
    name = "Root Entry".encode("utf-16-le")
    root[: len(name)] = name
    root[0x50:0x60] = clsid
    return bytes(header) + bytes(root) + bytes(384)


MSI_CLSID = bytes.fromhex("84100c000000000000c0000000000046")
WORD_CLSID = bytes.fromhex("0609020000000000c000000000000046")


@pytest.mark.parametrize(
    ("program", "sniffed"),
    [
        (elf(), "application/x-executable"),
        (pe(), "application/x-dosexec"),
        (macho(), "application/x-mach-binary"),
        (java_class(), "application/x-java-applet"),
        (ole2(MSI_CLSID), "application/x-msi"),
    ],
    ids=["elf", "pe", "mach-o", "java-class", "msi"],
)
@pytest.mark.parametrize("filename", ["report.pdf", "letter.doc", "photo.png", "notes.txt", "program"])
def test_a_program_is_refused_whatever_it_is_called(program: bytes, sniffed: str, filename: str) -> None:
    assert pure_sniffer.sniff(program) == sniffed
    with pytest.raises((TypeMismatch, TypeNotAllowed)):
        decide_type(filename=filename, declared=None, sniffed=sniffed, allowed=ALL)


def test_an_office_97_file_is_an_ole2_container_that_old_office_claims_accept() -> None:
    sniffed = pure_sniffer.sniff(ole2(WORD_CLSID))
    assert sniffed == "application/x-ole-storage"
    assert decide_type(filename="a.doc", declared=None, sniffed=sniffed, allowed=ALL) == "application/msword"
    with pytest.raises(TypeMismatch):
        decide_type(filename="a.pdf", declared=None, sniffed=sniffed, allowed=ALL)


@pytest.mark.parametrize(
    ("data", "sniffed"),
    [
        ("déjà vu, naïve café\n".encode("latin-1"), "text/plain"),
        ("\ufeffhello".encode("utf-16-le"), "text/plain"),
        (("é" * 4096).encode()[:8191], "text/plain"),  # a character cut by the 8 KB head
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>', "image/svg+xml"),
        (b'{"truncated": [1, 2', "text/plain"),
        (b"[1, 2, 3]", "application/json"),
        (bytes(range(256)) * 4, "application/octet-stream"),
        (png()[:40] + b"APNG-ish tail", "image/png"),
    ],
    ids=["latin-1", "utf-16", "cut-utf-8", "svg", "truncated-json", "json-array", "binary", "png"],
)
def test_text_and_other_content(data: bytes, sniffed: str) -> None:
    assert pure_sniffer.sniff(data) == sniffed


def test_svg_stays_refused_as_text() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    with pytest.raises(TypeMismatch):
        decide_type(filename="notes.txt", declared=None, sniffed=pure_sniffer.sniff(svg), allowed=ALL)


async def test_the_sniffer_uses_the_fallback_when_told_and_says_so() -> None:
    sniffer = MimeSniffer(use_libmagic=False)
    assert sniffer.backend == "pure-python"
    assert await sniffer.sniff(SAMPLES["pdf"][0]) == "application/pdf"
    assert MimeSniffer().backend == "libmagic"


async def test_without_python_magic_importable_the_fallback_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "magic", None)  # `import magic` raises ImportError
    sniffer = MimeSniffer()
    assert sniffer.backend == "pure-python"
    assert await sniffer.sniff(elf()) == "application/x-executable"


async def test_a_libmagic_that_cannot_start_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import magic

    def broken(*args: object, **kwargs: object) -> None:
        raise magic.MagicException("could not find any valid magic files!")

    sniffer = MimeSniffer()
    monkeypatch.setattr(magic, "Magic", broken)
    assert await sniffer.sniff(SAMPLES["png"][0]) == "image/png"
    assert sniffer.backend == "pure-python"
    assert mime.pure_sniffer is pure_sniffer
