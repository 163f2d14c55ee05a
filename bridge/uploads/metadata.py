"""Cheap facts about an accepted file: page count of a PDF, pixel size of an image.

Both come from small, maintained pure-Python libraries that read only headers and cross-reference
tables (imagesize, pypdf). Anything they cannot read is simply left out: these are hints for the
client, never a reason to refuse a file that passed the type check and the scan.
"""

from __future__ import annotations

import logging
from pathlib import Path

import imagesize
from pypdf import PdfReader

logger = logging.getLogger(__name__)

_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def describe(path: Path, mime: str) -> dict[str, int]:
    """`{"pages": n}` for a PDF, `{"width": w, "height": h}` for an image, else `{}`.

    Blocking (file reads): call it in a worker thread.
    """
    try:
        if mime == "application/pdf":
            pages = len(PdfReader(path, strict=False).pages)
            return {"pages": pages} if pages > 0 else {}
        if mime in _IMAGE_TYPES:
            width, height = imagesize.get(str(path))
            return {"width": int(width), "height": int(height)} if width > 0 and height > 0 else {}
    except Exception as exc:  # a malformed file only loses its hint
        logger.info("no metadata for a %s upload: %s", mime, type(exc).__name__)
    return {}
