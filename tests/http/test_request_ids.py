"""Finding the id of a JSON-RPC request in a body, whole or as it arrives (bridge/http/request_ids.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.http.jsonrpc import MCP_MAX_BODY_BYTES
from bridge.http.middleware.jsonrpc_guard import ID_SEARCH_BYTES
from bridge.http.request_ids import IdScan, invalid_request_id
from tests.http.helpers import BAD_IDS


@pytest.mark.parametrize(("kind", "bad"), BAD_IDS.items())
def test_a_request_id_of_each_invalid_kind_is_named(kind: str, bad: Any) -> None:
    first = json.dumps({"jsonrpc": "2.0", "id": bad, "method": "tools/list"}).encode()
    last = json.dumps({"jsonrpc": "2.0", "method": "m", "params": {"id": 1, "s": '"}'}, "id": bad}).encode()
    assert invalid_request_id(first) == kind
    assert invalid_request_id(last) == kind


def test_valid_ids_notifications_responses_and_batches_are_left_to_the_sdk() -> None:
    for body in (
        {"jsonrpc": "2.0", "id": "a", "method": "tools/list"},
        {"jsonrpc": "2.0", "id": -3, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
        [{"jsonrpc": "2.0", "id": {}, "method": "tools/list"}],
    ):
        assert invalid_request_id(json.dumps(body).encode()) is None, body
    assert invalid_request_id(b"{not json") is None


def _scanned(body: bytes, size: int) -> IdScan:
    scan = IdScan()
    for start in range(0, len(body), size):
        scan.feed(body[start : start + size])
        if scan.id is not None:
            break
    return scan


def test_the_id_of_a_body_is_found_across_chunks_wherever_it_is() -> None:
    def body(pad: bytes) -> tuple[bytes, bytes]:
        early = b'{"jsonrpc":"2.0","id":"r\\"1","method":"tools/call","params":{"a":"' + pad + b'"}}'
        late = b'{"jsonrpc":"2.0","method":"m","params":{"a":"' + pad + b'\\\\", "id": 3},"id": 42}'
        return early, late

    early, late = body(b'x\\"{' * 10)
    for size in range(1, 8):  # chunks that end anywhere: inside keys, escapes, numbers
        assert _scanned(early, size).id.value == 'r"1'  # type: ignore[union-attr]
        assert _scanned(late, size).id.value == 42  # type: ignore[union-attr]
    early, late = body(b"x" * MCP_MAX_BODY_BYTES)  # past the cap, and still within the search
    assert len(late) < ID_SEARCH_BYTES
    assert _scanned(early, 65536).id.value == 'r"1'  # type: ignore[union-attr]
    assert _scanned(late, 65536).id.value == 42  # type: ignore[union-attr]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
MESSAGES = st.dictionaries(
    st.sampled_from(["jsonrpc", "id", "method", "params", "error", 'i"d', "ID"]) | st.text(max_size=3),
    JSON_VALUES,
    max_size=6,
)


def _kind(value: Any) -> str:
    kinds = ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "number"), (dict, "object"))
    fallback = "list" if value is not None else "null"
    return next((name for cls, name in kinds if isinstance(value, cls)), fallback)


@given(message=MESSAGES, size=st.integers(1, 40), indent=st.sampled_from([None, 2]), ascii_only=st.booleans())
def test_the_scan_agrees_with_a_json_parser_however_the_body_is_cut(
    message: dict[str, Any], size: int, indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(message, indent=indent, ensure_ascii=ascii_only).encode()
    kind = _kind(message["id"]) if "id" in message else None
    invalid = kind not in (None, "string", "integer") and "method" in message
    assert invalid_request_id(body) == (kind if invalid else None)
    scan = IdScan()
    for start in range(0, len(body), size):
        scan.feed(body[start : start + size])
    assert (scan.id.kind if scan.id is not None else None) == kind
    if kind in ("string", "integer"):
        assert scan.id is not None and scan.id.value == message["id"]
