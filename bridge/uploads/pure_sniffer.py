"""MIME sniffing without libmagic: for machines where it is not installed (a Claude Desktop extension on
macOS or Windows), behind the same `MimeSniffer` interface (mime.py).

The answers follow libmagic's names for the same bytes, so `decide_type` applies one policy to both.
What decides safety is done here, ahead of any library, and errs towards refusal:

- programs: ELF, PE/DOS (`MZ`), Mach-O, Java classes, and MSI installers (an OLE2 file whose root
  entry carries the installer's class id) get the program types `decide_type` always refuses;
- OLE2 containers otherwise are `application/x-ole-storage` (what old Office claims accept), never a
  guessed Office type; a zip is OOXML only when `[Content_Types].xml` is its first entry, as libmagic
  requires, else `application/zip`;
- text (no NUL, UTF-8 or mostly printable single-byte, or a UTF-16 BOM) is `text/plain`, JSON that parses
  `application/json`, SVG `image/svg+xml` (an image that can carry scripts, never text);
- everything else comes from `filetype`'s signature table (images, audio, video, archives), and an
  unknown binary is `application/octet-stream`, which no claim accepts.

Known differences from libmagic on the test corpus (tests/uploads/test_mime.py): CSV is `text/plain`
(libmagic: `text/csv`), a PE executable `application/x-dosexec` (libmagic:
`application/vnd.microsoft.portable-executable`; both refused), and a zip whose first entry is
`[Content_Types].xml` but lacks `_rels/.rels` is still OOXML (libmagic: `application/zip`).
"""

from __future__ import annotations

import json
import struct

import filetype

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# CLSID {000C1084-0000-0000-C000-000000000046} (Windows Installer package), as stored on disk.
_MSI_CLSID = bytes.fromhex("84100c000000000000c0000000000046")
_MACH_O = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_OOXML_FIRST_ENTRY = b"[Content_Types].xml"
# filetype's names that libmagic (and decide_type) spell otherwise.
_RENAMED = {"image/apng": "image/png", "application/x-msdownload": "application/x-dosexec"}
_OOXML = frozenset(
    {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)
_CONTROL_BYTES = frozenset(range(32)) - {9, 10, 12, 13, 8, 27}


def sniff(head: bytes) -> str:
    """The MIME type of a file from its first bytes, in libmagic's spelling (lowercase)."""
    if not head:
        return "application/x-empty"
    program = _program(head)
    if program is not None:
        return program
    if head.startswith(_OLE2):
        return "application/x-msi" if _is_msi(head) else "application/x-ole-storage"
    kind = filetype.guess_mime(head)
    if kind is not None:
        return _from_signature(str(kind), head)
    if _is_text(head):
        return _text_type(head)
    return "application/octet-stream"


def _program(head: bytes) -> str | None:
    if head.startswith(b"\x7fELF"):
        return "application/x-executable"
    if head.startswith(b"MZ"):
        return "application/x-dosexec"
    if head[:4] in _MACH_O:
        return "application/x-mach-binary"
    if head.startswith(b"\xca\xfe\xba\xbe"):
        # A Java class or a universal (fat) Mach-O binary: a program either way.
        return "application/x-java-applet"
    return None


def _is_msi(head: bytes) -> bool:
    """Whether the OLE2 root directory entry (when within `head`) names the Windows Installer class."""
    if len(head) < 0x34:
        return False
    (sector_shift,) = struct.unpack_from("<H", head, 0x1E)
    (first_directory_sector,) = struct.unpack_from("<I", head, 0x30)
    if not 7 <= sector_shift <= 16:
        return False
    root = (first_directory_sector + 1) << sector_shift
    return head[root + 0x50 : root + 0x60] == _MSI_CLSID


def _from_signature(kind: str, head: bytes) -> str:
    if kind in _OOXML and head[30 : 30 + len(_OOXML_FIRST_ENTRY)] != _OOXML_FIRST_ENTRY:
        return "application/zip"
    return _RENAMED.get(kind, kind)


def _is_text(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True  # UTF-16 with a byte-order mark
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the sniffed head is still text.
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return True
    # Single-byte text (ISO-8859, Windows-1252): few control characters.
    controls = sum(1 for byte in head if byte in _CONTROL_BYTES)
    return controls * 100 <= len(head)


def _text_type(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    lowered = text[:1024].lower()
    if "<svg" in lowered and lowered.startswith(("<svg", "<?xml", "<!doctype svg", "<!--")):
        return "image/svg+xml"
    if text[:1] in ("{", "["):
        try:
            json.loads(text)
        except ValueError:
            return "text/plain"
        return "application/json"
    return "text/plain"
