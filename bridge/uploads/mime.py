"""Which files may go to Dust: Dust's accepted types, file-name hygiene and libmagic-based checks.

The type policy trusts bytes over names: libmagic sniffs the first 8 KB (reference/infra.md §3),
and `decide_type` reconciles that with what the client claimed. Dust's list and limits come from
its server's `FILE_FORMATS` / `MAX_FILE_SIZES` (reference/dust-api.md §7).
"""

from __future__ import annotations

import logging
import mimetypes
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from types import MappingProxyType, ModuleType
from typing import Any

import anyio.to_thread

from bridge.uploads import pure_sniffer

logger = logging.getLogger(__name__)

SNIFF_BYTES = 8192
MAX_FILENAME_CHARS = 200
_MB = 1024 * 1024


class TypeNotAllowed(Exception):
    """The file's type is not one Dust accepts or the operator allows; `.mime` names it."""

    def __init__(self, mime: str, message: str) -> None:
        super().__init__(message)
        self.mime = mime


class TypeMismatch(Exception):
    """The claimed type (header or extension) and the sniffed bytes disagree in a way that matters."""

    def __init__(self, claimed: str, sniffed: str) -> None:
        super().__init__(f"the file claims to be {claimed} but its content is {sniffed}")
        self.claimed = claimed
        self.sniffed = sniffed


class InvalidFileName(Exception):
    """Nothing usable is left of the file name after sanitising."""


_CATEGORIES: dict[str, tuple[str, ...]] = {
    "image": ("image/jpeg", "image/png", "image/gif", "image/webp"),
    "data": (
        "text/csv",
        "text/comma-separated-values",
        "text/tsv",
        "text/tab-separated-values",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    "document": (
        "text/plain",
        "text/markdown",
        "application/json",
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "text/html",
        "application/xml",
        "text/xml",
        "message/rfc822",
        "text/calendar",
    ),
    "code": (
        "text/css",
        "text/javascript",
        "text/typescript",
        "application/x-sh",
        "text/x-sh",
        "text/x-python",
        "text/x-python-script",
        "application/x-yaml",
        "text/yaml",
        "text/vnd.yaml",
        "text/x-c",
        "text/x-csharp",
        "text/x-java-source",
        "text/x-php",
        "text/x-ruby",
        "text/x-sql",
        "text/x-swift",
        "text/x-rust",
        "text/x-go",
        "text/x-kotlin",
        "text/x-scala",
        "text/x-groovy",
        "text/x-perl",
        "text/x-perl-script",
    ),
    # Dust's server names m4a `audio/x-m4a` (not `audio/mp4`): see _ALIASES.
    "audio": ("audio/mpeg", "audio/x-m4a", "audio/wav", "audio/ogg", "audio/webm"),
}

#: Dust's accepted upload types -> category. Left out on purpose: `application/octet-stream` (Dust
#: takes it, but it would defeat this policy), Google-Apps and Dust-internal types (not file bytes).
DUST_TYPES: Mapping[str, str] = MappingProxyType(
    {mime: category for category, types in _CATEGORIES.items() for mime in types}
)

#: Dust's per-category size limits in bytes.
CATEGORY_LIMITS: Mapping[str, int] = MappingProxyType(
    {"image": 5 * _MB, "data": 50 * _MB, "document": 50 * _MB, "code": 50 * _MB, "audio": 100 * _MB}
)

# Other spellings (from clients or libmagic) of a Dust type.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/mp4": "audio/x-m4a",
    "audio/m4a": "audio/x-m4a",
    "audio/mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "application/csv": "text/csv",
    "application/javascript": "text/javascript",
    "application/x-javascript": "text/javascript",
    "application/yaml": "application/x-yaml",
    "text/x-yaml": "text/yaml",
    "text/x-markdown": "text/markdown",
    "text/x-script.python": "text/x-python",
    "text/x-shellscript": "text/x-sh",
    "text/x-java": "text/x-java-source",
    "text/x-c++": "text/x-c",
}

# File extension -> type, for claims without a usable declared type. Covers Dust's extensions;
# the stdlib table (without the host's /etc/mime.types, for the same answer everywhere) does the rest.
_EXTENSIONS = {
    ".txt": "text/plain",
    ".log": "text/plain",
    ".cfg": "text/plain",
    ".conf": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".xml": "application/xml",
    ".html": "text/html",
    ".htm": "text/html",
    ".eml": "message/rfc822",
    ".ics": "text/calendar",
    ".pdf": "application/pdf",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".ppt": "application/vnd.ms-powerpoint",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/x-m4a",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".webm": "audio/webm",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".jsx": "text/javascript",
    ".ts": "text/typescript",  # the stdlib says video/mp2t (MPEG transport stream)
    ".tsx": "text/typescript",
    ".sh": "application/x-sh",
    ".py": "text/x-python",
    ".yaml": "application/x-yaml",
    ".yml": "application/x-yaml",
    ".c": "text/x-c",
    ".h": "text/x-c",
    ".cc": "text/x-c",
    ".cpp": "text/x-c",
    ".cxx": "text/x-c",
    ".hh": "text/x-c",
    ".hpp": "text/x-c",
    ".cs": "text/x-csharp",
    ".java": "text/x-java-source",
    ".php": "text/x-php",
    ".rb": "text/x-ruby",
    ".sql": "text/x-sql",
    ".swift": "text/x-swift",
    ".rs": "text/x-rust",
    ".go": "text/x-go",
    ".kt": "text/x-kotlin",
    ".kts": "text/x-kotlin",
    ".scala": "text/x-scala",
    ".groovy": "text/x-groovy",
    ".pl": "text/x-perl",
    ".pm": "text/x-perl",
}
_STDLIB_TYPES = mimetypes.MimeTypes()

# Sniffed types that are programs or carry them: refused whatever the claim.
_DANGEROUS = frozenset(
    {
        "application/x-executable",
        "application/x-pie-executable",
        "application/x-sharedlib",
        "application/x-object",
        "application/x-coredump",
        "application/x-elf",
        "application/x-dosexec",
        "application/x-msdownload",
        "application/x-ms-ne-executable",
        "application/vnd.microsoft.portable-executable",
        "application/x-mach-binary",
        "application/x-java-archive",
        "application/java-archive",
        "application/x-java-applet",
        "application/vnd.android.package-archive",
        "application/x-msi",
        "application/x-ms-shortcut",
    }
)
# Claims that name a program themselves (e.g. `.exe` -> application/x-msdownload): refusing those is
# a plain "not allowed", not a mismatch.
_PROGRAM_CLAIMS = _DANGEROUS | {"application/x-msdos-program", "application/x-ms-installer"}

_EMPTY = frozenset({"application/x-empty", "inode/x-empty"})

# libmagic's answers for OLE2 containers it cannot pin down further (old Office formats).
_OLE = ("application/x-ole-storage", "application/cdfv2", "application/vnd.ms-office")
# Binary claims -> the sniffed types that confirm them. OOXML may sniff as plain application/zip:
# libmagic only names it when `word/`, `xl/` or `ppt/` is among the first zip entries, which many
# writers (e.g. docProps/ first) do not do; ClamAV still scans the archive's contents.
_BINARY_SNIFFS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "application/pdf": frozenset({"application/pdf"}),
        "image/jpeg": frozenset({"image/jpeg"}),
        "image/png": frozenset({"image/png"}),
        "image/gif": frozenset({"image/gif"}),
        "image/webp": frozenset({"image/webp"}),
        "application/msword": frozenset({"application/msword", *_OLE}),
        "application/vnd.ms-excel": frozenset({"application/vnd.ms-excel", *_OLE}),
        "application/vnd.ms-powerpoint": frozenset({"application/vnd.ms-powerpoint", *_OLE}),
        **{
            ooxml: frozenset({ooxml, "application/zip"})
            for ooxml in (
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            )
        },
        "audio/mpeg": frozenset({"audio/mpeg"}),
        # An m4a is an MP4 container; libmagic says video/mp4 for brands other than `M4A `.
        "audio/x-m4a": frozenset({"audio/x-m4a", "audio/mp4", "video/mp4"}),
        "audio/wav": frozenset({"audio/wav", "audio/x-wav", "audio/vnd.wave"}),
        "audio/ogg": frozenset({"audio/ogg", "application/ogg"}),
        # libmagic cannot tell audio-only WebM from video.
        "audio/webm": frozenset({"audio/webm", "video/webm"}),
    }
)
# Non-text/* types libmagic gives to text content.
_TEXT_APPLICATION = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "application/javascript",
        "message/rfc822",
    }
)
# Types listed first when telling a client what is accepted.
_COMMON = (
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "image/png",
    "image/jpeg",
)


def _normalise(mime: str) -> str:
    """Lowercased, without parameters (`; charset=...`), with aliases mapped to Dust's spelling."""
    base = mime.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def _matches(entry: str) -> frozenset[str]:
    """The Dust types a configured entry names: an exact type, `major/*`, or `*`/`*/*`."""
    entry = entry.strip().lower()
    if entry in ("*", "*/*"):
        return frozenset(DUST_TYPES)
    if entry.endswith("/*"):
        major = entry[:-1]
        return frozenset(t for t in DUST_TYPES if t.startswith(major))
    mime = _normalise(entry)
    return frozenset({mime}) if mime in DUST_TYPES else frozenset()


def allowed_types(narrow_to: Iterable[str] = ()) -> frozenset[str]:
    """Dust's accepted types, intersected with `narrow_to` (e.g. BRIDGE_UPLOAD_ALLOWED_TYPES) if non-empty.

    Entries may be exact types (aliases such as `image/jpg` count), `major/*` or `*`; entries
    naming no Dust type are ignored here (report them with `unknown_types`).
    """
    entries = [e for e in narrow_to if e.strip()]
    if not entries:
        return frozenset(DUST_TYPES)
    return frozenset().union(*(_matches(e) for e in entries))


def unknown_types(entries: Iterable[str]) -> list[str]:
    """The configured entries (stripped, in order) that name no type Dust accepts."""
    return [e.strip() for e in entries if e.strip() and not _matches(e)]


def size_limit(mime: str, configured_max: int) -> int:
    """The byte cap for a file of type `mime`: the smaller of `configured_max` and Dust's category limit.

    Raises:
        TypeNotAllowed: `mime` is not a type Dust accepts.
    """
    category = DUST_TYPES.get(_normalise(mime))
    if category is None:
        raise TypeNotAllowed(mime, f"files of type {mime} are not accepted")
    return min(configured_max, CATEGORY_LIMITS[category])


_CONTROL = frozenset({"Cc", "Cf", "Cs"})
_WHITESPACE = re.compile(r"\s+")
_MAX_EXTENSION_CHARS = 16


def sanitize_filename(name: str) -> str:
    """A safe display/upload name: the last path component, without control or format characters.

    Splits on `/` and `\\` and keeps the last part, drops Unicode categories Cc (control, NUL,
    newlines), Cf (format, e.g. U+202E right-to-left override that disguises `exe.pdf` as
    `fdp.exe`) and Cs (lone surrogates, unencodable), collapses whitespace, drops leading dots and
    spaces (no hidden files, no `..`) and trailing ones, and caps the result at 200 characters
    keeping a short extension.

    Raises:
        InvalidFileName: nothing usable remains (e.g. `...`, `/`, only control characters).
    """
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name))[-1]
    # Whitespace controls become spaces first, so "a\nb" stays two words.
    base = _WHITESPACE.sub(" ", base)
    base = "".join(ch for ch in base if unicodedata.category(ch) not in _CONTROL)
    base = _WHITESPACE.sub(" ", base).strip(" .")
    if not base:
        raise InvalidFileName("the file name is empty after removing paths and control characters")
    if len(base) > MAX_FILENAME_CHARS:
        stem, dot, extension = base.rpartition(".")
        if dot and stem and 0 < len(extension) <= _MAX_EXTENSION_CHARS:
            keep = MAX_FILENAME_CHARS - len(extension) - 1
            base = f"{stem[:keep].rstrip(' .')}.{extension}"
        else:
            base = base[:MAX_FILENAME_CHARS].rstrip(" .")
    return base


def _guess_from_name(filename: str) -> str | None:
    dot = filename.rfind(".")
    if dot <= 0:
        return None
    extension = filename[dot:].lower()
    guessed = _EXTENSIONS.get(extension) or _STDLIB_TYPES.guess_type(f"x{extension}", strict=False)[0]
    return _normalise(guessed) if guessed else None


def _is_text(mime: str) -> bool:
    """Whether a (normalised) type names text content: what libmagic calls text, or a Dust text type."""
    return (
        mime.startswith("text/")
        or mime in _TEXT_APPLICATION
        or (mime in DUST_TYPES and mime not in _BINARY_SNIFFS)
    )


def _not_allowed(mime: str, allowed: frozenset[str]) -> TypeNotAllowed:
    if not allowed:
        return TypeNotAllowed(mime, f"files of type {mime} are not accepted: uploads accept no types")
    examples = [t for t in _COMMON if t in allowed] or sorted(allowed)
    shown = ", ".join(examples[:6])
    more = len(allowed) - min(len(examples), 6)
    suffix = f" and {more} more" if more > 0 else ""
    return TypeNotAllowed(
        mime, f"files of type {mime} are not accepted; accepted types include {shown}{suffix}"
    )


def decide_type(*, filename: str, declared: str | None, sniffed: str, allowed: frozenset[str]) -> str:
    """The MIME type to send to Dust for a file, from its name, declared type and sniffed bytes.

    Rules, in order:

    1. The claim is `declared` (parameters stripped, lowercased, aliases such as `image/jpg` or
       `audio/mp4` mapped to Dust's spelling) or, when that is absent or
       `application/octet-stream`, the type guessed from the file extension.
    2. Empty content is refused (Dust rejects empty files).
    3. Programs sniffed from the bytes (ELF, PE/DOS, Mach-O, Java archives/classes, MSI, ...)
       are always refused: `TypeMismatch` if the claim was something else, else `TypeNotAllowed`.
    4. Binary claims (images, PDF, Office, audio) need the sniffed type to be the same type or
       one of libmagic's names for it: OOXML (docx/xlsx/pptx) may sniff as `application/zip`,
       old Office as an OLE2 container (`application/x-ole-storage`, `application/CDFV2`),
       m4a as `audio/x-m4a`/`audio/mp4`/`video/mp4`, wav as `audio/x-wav`, webm as `video/webm`.
       A declared binary type over text bytes falls back to the extension's text type when there
       is one (browsers on Windows send `.csv` as `application/vnd.ms-excel`); otherwise
       `TypeMismatch`.
    5. Text claims (text/*, JSON, XML, YAML, code, CSV/TSV, e-mail, calendar) need text bytes
       (libmagic's text/*, JSON, NDJSON, XML, JavaScript or message/rfc822; not SVG, which is an
       image that can carry scripts); else `TypeMismatch`. libmagic's finer text labels (CSV as
       text/plain, markdown as text/plain, ...) do not matter: the claim is kept.
    6. No usable claim: the sniffed type itself (with aliases mapped).
    7. Text that is no Dust type (e.g. `text/x-lua`, `text/x-makefile`) is sent as `text/plain`.
    8. The result must be in `allowed`, else `TypeNotAllowed`.

    Raises:
        TypeMismatch: the claim and the bytes disagree (see rules 3-5).
        TypeNotAllowed: the resulting type is not allowed, the content is empty or a program.
    """
    sniffed = _normalise(sniffed)
    claim = _claimed_type(filename, declared)
    _refuse_empty_or_program(claim, sniffed)
    result = _confirmed_type(claim, sniffed, filename, allowed)
    if result not in DUST_TYPES and _is_text(result):  # rule 7
        result = "text/plain"
    if result not in allowed:  # rule 8
        raise _not_allowed(result, allowed)
    return result


def _claimed_type(filename: str, declared: str | None) -> str | None:
    """Rule 1: the declared type, else (absent or `application/octet-stream`) the extension's."""
    claim = _normalise(declared) if declared and declared.strip() else None
    if claim in (None, "application/octet-stream"):
        claim = _guess_from_name(filename)
    return None if claim == "application/octet-stream" else claim


def _refuse_empty_or_program(claim: str | None, sniffed: str) -> None:
    """Rules 2 and 3: empty content and programs are refused whatever the claim."""
    if sniffed in _EMPTY:
        raise TypeNotAllowed(sniffed, "the file is empty")
    if sniffed in _DANGEROUS:
        if claim is None or claim in _PROGRAM_CLAIMS:
            raise TypeNotAllowed(sniffed, f"programs ({sniffed}) are not accepted")
        raise TypeMismatch(claim, sniffed)


def _confirmed_type(claim: str | None, sniffed: str, filename: str, allowed: frozenset[str]) -> str:
    """Rules 4 to 6: the claim if the bytes bear it out, the sniffed type if there is no claim."""
    if claim is None:
        return sniffed
    if claim in _BINARY_SNIFFS:
        return _confirmed_binary_type(claim, sniffed, filename)
    if _is_text(claim):
        if not _is_text(sniffed):
            raise TypeMismatch(claim, sniffed)
        return claim
    # A claim that is neither a Dust type nor text (application/zip, image/svg+xml, video/mp4...).
    raise _not_allowed(claim, allowed)


def _confirmed_binary_type(claim: str, sniffed: str, filename: str) -> str:
    """Rule 4: a binary claim needs one of libmagic's names for it, or text bytes and a text extension."""
    if sniffed in _BINARY_SNIFFS[claim]:
        return claim
    by_name = _guess_from_name(filename)
    if _is_text(sniffed) and by_name is not None and _is_text(by_name):
        return by_name
    raise TypeMismatch(claim, sniffed)


def _import_libmagic() -> ModuleType | None:
    """python-magic, or None where libmagic is not installed (it raises ImportError then; a library
    that is found but cannot be loaded raises OSError)."""
    try:
        import magic
    except (ImportError, OSError) as exc:
        logger.info("libmagic is not available (%s): MIME types are sniffed without it", exc)
        return None
    return magic


class MimeSniffer:
    """MIME detection off the event loop: libmagic where it is installed, else `pure_sniffer`.

    libmagic's handle is not thread-safe; python-magic serialises calls on one instance with a
    lock, so per-thread instances (created lazily) let concurrent sniffs run in parallel. When
    libmagic is missing, or its handle cannot be made (no magic database), the pure-Python sniffer
    answers instead, with libmagic's names for the same bytes (see bridge/uploads/pure_sniffer.py).
    """

    def __init__(self, *, use_libmagic: bool = True) -> None:
        self._local = threading.local()
        self._libmagic = _import_libmagic() if use_libmagic else None

    @property
    def backend(self) -> str:
        """What sniffs: `libmagic`, or `pure-python` where libmagic is missing or broken."""
        return "libmagic" if self._libmagic is not None else "pure-python"

    def _magic(self) -> Any:
        instance = getattr(self._local, "magic", None)
        if instance is None and self._libmagic is not None:
            try:
                instance = self._libmagic.Magic(mime=True)
            except self._libmagic.MagicException as exc:
                logger.warning("libmagic cannot start (%s): MIME types are sniffed without it", exc)
                self._libmagic = None
                return None
            self._local.magic = instance
        return instance

    def _sniff_sync(self, head: bytes) -> str:
        instance = self._magic()
        if instance is None:
            return pure_sniffer.sniff(head)
        return str(instance.from_buffer(head)).lower()

    async def sniff(self, head: bytes) -> str:
        """The MIME type of the first 8 KB of `head` (lowercased, e.g. `application/pdf`).

        Only 8 KB are examined: libmagic's text analysis walks up to 7 MiB otherwise, and every
        format it identifies is recognisable from its start.

        Raises:
            magic.MagicException: libmagic failed on these bytes (broken magic database).
        """
        return await anyio.to_thread.run_sync(self._sniff_sync, bytes(head[:SNIFF_BYTES]))
