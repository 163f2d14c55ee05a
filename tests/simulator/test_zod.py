"""The zod-3 port the simulator validates Dust's SDK schemas with (bridge/simulator/zod.py)."""

from __future__ import annotations

from typing import Any

from bridge.simulator.schemas import PostConversationsBody, PostMessagesBody
from bridge.simulator.zod import Enum, Intersection, Number, Object, String, Union, format_issues


def message_for(schema: Any, value: Any) -> str:
    ok, _, issues = schema.safe_parse(value)
    assert not ok
    return format_issues(issues)


def test_every_object_key_is_checked_and_unknown_keys_are_stripped() -> None:
    schema = Object({"a": String(), "b": Number(), "c": String().optional()})
    assert (
        message_for(schema, {"b": "x"})
        == 'Validation error: Required at "a"; Expected number, received string at "b"'
    )
    ok, value, _ = schema.safe_parse({"a": "x", "b": 1, "junk": True})
    assert ok and value == {"a": "x", "b": 1}


def test_a_union_keeps_the_first_dirty_option_and_lists_the_others() -> None:
    # A refinement failure is "dirty": the union reports that option's issue alone.
    ctx = {"username": "u", "timezone": "Nowhere/Land"}
    assert message_for(PostMessagesBody, {"content": "x", "mentions": [], "context": ctx}) == (
        'Validation error: Invalid timezone at "context.timezone"'
    )
    # Aborted options: every option's message, deduplicated, joined with ", or ".
    union = Union([Enum(["a"]), Enum(["a"]), Number()])
    assert message_for(union, "b") == (
        "Validation error: Invalid enum value. Expected 'a', received 'b', "
        "or Expected number, received string"
    )


def test_catch_coerces_and_intersection_merges() -> None:
    ok, value, _ = PostConversationsBody.safe_parse(
        {
            "message": {
                "content": "x",
                "mentions": [],
                "context": {"username": "u", "timezone": "UTC", "origin": 3},
            }
        }
    )
    assert ok and value["message"]["context"]["origin"] == "api" and value["visibility"] == "unlisted"
    both = Intersection(Object({"a": Number()}), Object({"a": Number(), "b": Number().optional()}))
    assert both.safe_parse({"a": 1, "b": 2})[1] == {"a": 1, "b": 2}
    assert both.safe_parse({"a": 1})[1] == {"a": 1}  # an absent optional key stays absent


def test_paths_and_array_indexes_are_written_like_zod_validation_error() -> None:
    schema = Object({"items": Union([Object({"x-y": String()}), Number()])})
    assert message_for(Object({"list": Object({"0": String()})}), {"list": {"0": 1}}) == (
        'Validation error: Expected string, received number at "list["0"]"'
    )
    # zod-validation-error's identifier test is unanchored: any letter makes a dotted key.
    assert '"items.x-y"' in message_for(schema, {"items": {"x-y": 1}})
    assert message_for(Union([String()]).or_(Number()), None).startswith("Validation error: Expected string")
