"""Dust's citation markers turned into numbered footnotes with their sources.

Dust's agents cite with `:cite[REF]` or `:cite[REF1,REF2]`; each REF names a result in the
output of one of the message's actions: a web search result (`reference`, `uri`, `title`) or a
data-source search result (`ref`, `uri`, title in `text`) (front/lib/api/assistant/citations.ts;
the SDK's tool-output schemas). As Dust's own Slack bot does, each marker becomes `[n]` (numbered
in order of first citation), a marker whose refs match no source is dropped, and the sources are
listed under the answer. While an answer streams, markers are stripped instead (their sources may
not be known yet); a marker split across chunks is held back until it is whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MARKER = re.compile(r":cite\[([A-Za-z0-9_,\s-]*)\]")
# A chunk ending like this may be the start of a marker: hold it back until the next chunk.
_PARTIAL = re.compile(r":(?:c(?:i(?:t(?:e(?:\[[A-Za-z0-9_,\s-]*)?)?)?)?)?$")
_MAX_HELD = 64


@dataclass(frozen=True)
class Source:
    """One cited source, numbered as it appears in the answer."""

    number: int
    ref: str
    title: str
    url: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "ref": self.ref, "title": self.title, "url": self.url}


def sources_in(actions: Iterable[Any]) -> dict[str, tuple[str, str | None]]:
    """ref -> (title, url) for every search result in the actions' outputs."""
    found: dict[str, tuple[str, str | None]] = {}
    for action in actions:
        output = action.get("output") if isinstance(action, dict) else None
        for block in output if isinstance(output, list) else []:
            resource = block.get("resource") if isinstance(block, dict) else None
            if isinstance(resource, dict):
                _add_source(found, resource)
    return found


def _add_source(found: dict[str, tuple[str, str | None]], resource: dict[str, Any]) -> None:
    ref = resource.get("reference") or resource.get("ref")
    if not isinstance(ref, str) or not ref:
        return
    uri = resource.get("uri")
    url = uri if isinstance(uri, str) and uri else None
    title = resource.get("title") if "reference" in resource else resource.get("text")
    found.setdefault(ref, (str(title or url or ref), url))


def footnote(text: str, known: dict[str, tuple[str, str | None]]) -> tuple[str, list[Source]]:
    """`text` with each marker as `[n]` (unknown refs dropped) and the sources it cites, in order."""
    numbers: dict[str, Source] = {}

    def replace(match: re.Match[str]) -> str:
        marks = []
        for ref in (part.strip() for part in match.group(1).split(",")):
            if ref not in known:
                continue
            if ref not in numbers:
                title, url = known[ref]
                numbers[ref] = Source(len(numbers) + 1, ref, title, url)
            marks.append(f"[{numbers[ref].number}]")
        return "".join(marks)

    return MARKER.sub(replace, text), list(numbers.values())


def cited(text: str, actions: Iterable[Any], finished: bool) -> tuple[str, list[Source]]:
    """An answer as the user reads it: finished, its markers as footnotes over the sources of its
    `actions`, listed under it; unfinished (its sources may be incomplete), without its markers."""
    if not finished:
        return strip_markers(text), []
    footnoted, sources = footnote(text, sources_in(actions))
    return with_sources(footnoted, sources), sources


def with_sources(text: str, sources: list[Source]) -> str:
    """The footnoted answer followed by its list of sources."""
    if not sources:
        return text
    lines = [f"[{source.number}] {source.title}" + _link(source) for source in sources]
    return f"{text}\n\nSources:\n" + "\n".join(lines)


def _link(source: Source) -> str:
    return f" — {source.url}" if source.url and source.url != source.title else ""


def strip_markers(text: str) -> str:
    """`text` without citation markers (for text whose sources are not known)."""
    return MARKER.sub("", text)


class MarkerFilter:
    """Strips markers from streamed text, holding back a chunk's tail that may start one."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, chunk: str) -> str:
        """What of `chunk` (after what was held) can go out now."""
        if not self._held and ":" not in chunk:
            return chunk
        text = strip_markers(self._held + chunk)
        partial = _PARTIAL.search(text)
        if partial is not None and len(text) - partial.start() <= _MAX_HELD:
            self._held = text[partial.start() :]
            return text[: partial.start()]
        self._held = ""
        return text

    def flush(self) -> str:
        """Whatever is still held (the stream ended: it was not a marker)."""
        held, self._held = self._held, ""
        return held
