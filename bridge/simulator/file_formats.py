"""The content types Dust accepts for files, their size category and extensions.

Sources (dust-tt/dust): `front/types/files.ts` FILE_FORMATS and MAX_FILE_SIZES (the newest stored
version readable, commit 000963ef), extended with the image and audio types the newer
`front/lib/api/files/processing/index.ts` (5a24955c) and `use_cases/conversation.ts` (2e77a376)
handle, which are typed as supported file content types there (svg, bmp, ico, x-wav, video/webm);
the conversation use case's own list is `use_cases/conversation.ts` SUPPORTED_CONTENT_TYPES.
"""

from __future__ import annotations

_MB = 1024 * 1024

# MAX_FILE_SIZES by category (without the sandbox-tools feature flag).
MAX_FILE_SIZES = {
    "data": 50 * _MB,
    "code": 50 * _MB,
    "delimited": 50 * _MB,
    "image": 5 * _MB,
    "audio": 100 * _MB,
}

# content type -> (category, extensions)
FILE_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "image/jpeg": ("image", (".jpg", ".jpeg")),
    "image/png": ("image", (".png",)),
    "image/gif": ("image", (".gif",)),
    "image/webp": ("image", (".webp",)),
    "image/bmp": ("image", (".bmp",)),
    "image/svg+xml": ("image", (".svg",)),
    "image/x-icon": ("image", (".ico",)),
    "text/csv": ("delimited", (".csv",)),
    "text/comma-separated-values": ("delimited", (".csv",)),
    "text/tsv": ("delimited", (".tsv",)),
    "text/tab-separated-values": ("delimited", (".tsv",)),
    "application/vnd.ms-excel": ("delimited", (".xls",)),
    "application/vnd.google-apps.spreadsheet": ("delimited", ()),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ("delimited", (".xlsx",)),
    "application/vnd.dust.section.json": ("data", (".json",)),
    "text/plain": ("data", (".txt", ".log", ".cfg", ".conf")),
    "text/markdown": ("data", (".md", ".markdown")),
    "text/vnd.dust.attachment.pasted": ("data", (".txt",)),
    "text/vnd.dust.attachment.slack.thread": ("data", (".txt",)),
    "text/calendar": ("data", (".ics",)),
    "application/json": ("data", (".json",)),
    "application/msword": ("data", (".doc", ".docx")),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("data", (".docx", ".doc")),
    "application/vnd.ms-powerpoint": ("data", (".ppt", ".pptx")),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ("data", (".ppt", ".pptx")),
    "application/pdf": ("data", (".pdf",)),
    "application/vnd.google-apps.document": ("data", ()),
    "application/vnd.google-apps.presentation": ("data", ()),
    "message/rfc822": ("data", (".eml",)),
    "text/xml": ("data", (".xml",)),
    "application/xml": ("data", (".xml",)),
    "text/html": ("data", (".html", ".htm", ".xhtml", ".xhtml+xml")),
    "text/css": ("code", (".css",)),
    "text/javascript": ("code", (".js", ".mjs", ".jsx")),
    "text/typescript": ("code", (".ts", ".tsx")),
    "application/x-sh": ("code", (".sh",)),
    "text/x-sh": ("code", (".sh",)),
    "text/x-python": ("code", (".py",)),
    "text/x-python-script": ("code", (".py",)),
    "application/x-yaml": ("code", (".yaml", ".yml")),
    "text/yaml": ("code", (".yaml", ".yml")),
    "text/vnd.yaml": ("code", (".yaml", ".yml")),
    "text/x-c": ("code", (".c", ".cc", ".cpp", ".cxx", ".dic", ".h", ".hh")),
    "text/x-csharp": ("code", (".cs",)),
    "text/x-java-source": ("code", (".java",)),
    "text/x-php": ("code", (".php",)),
    "text/x-ruby": ("code", (".rb",)),
    "text/x-sql": ("code", (".sql",)),
    "text/x-swift": ("code", (".swift",)),
    "text/x-rust": ("code", (".rs",)),
    "text/x-go": ("code", (".go",)),
    "text/x-kotlin": ("code", (".kt", ".kts")),
    "text/x-scala": ("code", (".scala",)),
    "text/x-groovy": ("code", (".groovy",)),
    "text/x-perl": ("code", (".pl", ".pm")),
    "text/x-perl-script": ("code", (".pl", ".pm")),
    "audio/mpeg": ("audio", (".mp3", ".mp4")),
    "audio/x-m4a": ("audio", (".m4a", ".mp4")),
    "audio/wav": ("audio", (".wav",)),
    "audio/x-wav": ("audio", (".wav",)),
    "audio/ogg": ("audio", (".ogg",)),
    "audio/webm": ("audio", (".webm",)),
    "video/webm": ("audio", (".webm",)),
    "application/octet-stream": ("data", ()),
}

# front/lib/api/files/use_cases/conversation.ts SUPPORTED_CONTENT_TYPES (the frame types listed
# there are not FILE_FORMATS, so the files route refuses them first).
CONVERSATION_CONTENT_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/svg+xml",
        "audio/mpeg",
        "audio/wav",
        "audio/x-wav",
        "audio/webm",
        "audio/ogg",
        "audio/x-m4a",
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.google-apps.document",
        "application/vnd.google-apps.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-excel",
        "text/csv",
        "text/tab-separated-values",
        "application/octet-stream",
        "text/plain",
        "text/markdown",
        "text/html",
        "text/xml",
        "text/calendar",
        "text/css",
        "text/javascript",
        "text/typescript",
        "application/json",
        "application/xml",
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
        "message/rfc822",
        "text/vnd.dust.attachment.slack.thread",
        "text/vnd.dust.attachment.pasted",
    }
)


# The FILE_FORMATS types marked `isSafeToDisplay: true` in front/types/files.ts (the stored version:
# images jpeg/png/gif/webp, the delimited types, text, markdown, json, office documents, pdf,
# audio). Every other type, the newer ones whose flag could not be read included, is treated as
# unsafe, as that file says unknown types must be.
SAFE_TO_DISPLAY = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "text/csv",
        "text/comma-separated-values",
        "text/tsv",
        "text/tab-separated-values",
        "application/vnd.ms-excel",
        "application/vnd.google-apps.spreadsheet",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.dust.section.json",
        "text/plain",
        "text/markdown",
        "text/vnd.dust.attachment.pasted",
        "text/vnd.dust.attachment.slack.thread",
        "text/calendar",
        "application/json",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/pdf",
        "application/vnd.google-apps.document",
        "application/vnd.google-apps.presentation",
        "audio/mpeg",
        "audio/x-m4a",
        "audio/wav",
        "audio/ogg",
        "audio/webm",
    }
)


def is_safe_to_display(content_type: str) -> bool:
    """FileResource.isSafeToDisplay: may the file be shown inline (`action=view`)?"""
    return content_type in SAFE_TO_DISPLAY


def is_supported(content_type: str) -> bool:
    """isSupportedFileContentType: one of FILE_FORMATS, exactly (no parameters, no case folding)."""
    return content_type in FILE_FORMATS


def max_size(content_type: str) -> int:
    """ensureFileSize's limit for a supported content type."""
    return MAX_FILE_SIZES[FILE_FORMATS[content_type][0]]


def extensions(content_type: str) -> tuple[str, ...]:
    """extensionsForContentType (empty for an unknown type)."""
    return FILE_FORMATS.get(content_type, ("", ()))[1]


def is_inline_fragment_type(content_type: str) -> bool:
    """isSupportedInlinedFragmentContentType (front/types/api/assistant.ts): a non-image file format,
    or one of the SDK's internal connector mime types (`application/vnd.dust.<provider>.<kind>`,
    approximated here by that prefix)."""
    if content_type in FILE_FORMATS:
        return FILE_FORMATS[content_type][0] != "image"
    return content_type.startswith("application/vnd.dust.")
