"""Citation markers become numbered footnotes with titles and links; streamed text never shows them."""

from __future__ import annotations

from bridge.domain.citations import MarkerFilter, footnote, sources_in, strip_markers, with_sources

WEB = {
    "type": "resource",
    "resource": {
        "mimeType": "application/vnd.dust.tool-output.websearch-result",
        "reference": "w1a",
        "uri": "https://example.com/q3",
        "title": "Q3 results",
        "text": "snippet",
    },
}
DOC = {
    "type": "resource",
    "resource": {
        "mimeType": "application/vnd.dust.tool-output.data-source-search-result",
        "ref": "d2b",
        "uri": "https://drive.example.com/plan",
        "text": "Plan 2027",
        "id": "doc1",
    },
}
ACTIONS = [{"output": [WEB, {"type": "text", "text": "3 results"}]}, {"output": [DOC]}, {"output": None}]


def test_sources_are_read_from_web_and_document_search_outputs() -> None:
    assert sources_in(ACTIONS) == {
        "w1a": ("Q3 results", "https://example.com/q3"),
        "d2b": ("Plan 2027", "https://drive.example.com/plan"),
    }


def test_markers_become_numbered_footnotes_in_order_and_unknown_refs_are_dropped() -> None:
    text = "Revenue grew :cite[w1a]. The plan :cite[d2b, w1a] holds. Rumour :cite[zzz]."
    footnoted, sources = footnote(text, sources_in(ACTIONS))
    assert footnoted == "Revenue grew [1]. The plan [2][1] holds. Rumour ."
    assert [(s.number, s.ref, s.title, s.url) for s in sources] == [
        (1, "w1a", "Q3 results", "https://example.com/q3"),
        (2, "d2b", "Plan 2027", "https://drive.example.com/plan"),
    ]
    assert with_sources(footnoted, sources).endswith(
        "Sources:\n[1] Q3 results — https://example.com/q3\n[2] Plan 2027 — https://drive.example.com/plan"
    )


def test_text_without_sources_only_loses_its_markers() -> None:
    assert strip_markers("a :cite[x1y] b :cite[a,b]") == "a  b "
    assert with_sources("plain", []) == "plain"


def test_streamed_chunks_never_show_a_marker_even_split_across_chunks() -> None:
    markers = MarkerFilter()
    chunks = ["Revenue grew :c", "ite[w1", "a]. Ratio 3:1 :", "cite[d2b] done: ok"]
    shown = "".join(markers.feed(chunk) for chunk in chunks) + markers.flush()
    assert shown == "Revenue grew . Ratio 3:1  done: ok"


def test_a_colon_that_starts_no_marker_is_released_at_the_end() -> None:
    markers = MarkerFilter()
    assert markers.feed("time is 10:") == "time is 10"
    assert markers.flush() == ":"
