"""Just enough of zod 3 to validate request bodies the way Dust does, with Dust's error messages.

Dust's Hono routes validate bodies and queries with `@hono/zod-validator` against the schemas of its
own SDK (`@dust-tt/client`, zod ^3.25) and answer a failure with
`400 invalid_request_error "Invalid <target>: <fromError(zodError).toString()>"`
(`front-api/middlewares/validator.ts`, zod-validation-error ^3.4 per `front-api/package.json`).
The schemas in `bridge/simulator/schemas.py` are transcribed from the SDK with the combinators
below, which keep zod's parse semantics where they decide the outcome or the message: which
issues are collected (every object key is checked), `dirty` vs `aborted` results, how unions pick
an option, `.catch()` swallowing errors, unknown keys being stripped, and zod's default messages.
`format_issues` renders the issues as zod-validation-error 3 does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final


class _Missing:
    """JavaScript's `undefined`: a key that is absent from the JSON object."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

PathItem = str | int
Path = tuple[PathItem, ...]

# zod's ParseStatus values.
VALID, DIRTY, ABORTED = "valid", "dirty", "aborted"


@dataclass(frozen=True)
class Issue:
    """One zod issue; `union_errors` holds each option's issues for an `invalid_union`."""

    code: str
    path: Path
    message: str
    union_errors: tuple[tuple[Issue, ...], ...] = field(default=())


@dataclass(frozen=True)
class Parsed:
    status: str
    value: Any


_INVALID = Parsed(ABORTED, None)


def js_length(value: str) -> int:
    """`string.length` in JavaScript: UTF-16 code units."""
    return len(value.encode("utf-16-le")) // 2


def parsed_type(value: Any) -> str:
    """zod's `getParsedType` for JSON values."""
    if value is MISSING:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "nan" if isinstance(value, float) and math.isnan(value) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "unknown"


def _invalid_type(expected: str, value: Any, path: Path, issues: list[Issue]) -> Parsed:
    received = parsed_type(value)
    message = "Required" if received == "undefined" else f"Expected {expected}, received {received}"
    issues.append(Issue("invalid_type", path, message))
    return _INVALID


def _join_values(values: Sequence[Any]) -> str:
    return " | ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values)


class Schema:
    """A zod type: `_parse` appends issues and returns a status and the (stripped) value."""

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        raise NotImplementedError

    def safe_parse(self, data: Any) -> tuple[bool, Any, list[Issue]]:
        """(success, parsed value, issues), like `schema.safeParse(data)`."""
        issues: list[Issue] = []
        result = self._parse(data, (), issues)
        return result.status == VALID, result.value, issues

    def optional(self) -> Schema:
        return Optional(self)

    def nullable(self) -> Schema:
        return Nullable(self)

    def default(self, value: Any) -> Schema:
        return Default(self, value)

    def catch(self, value: Any) -> Schema:
        return Catch(self, value)

    def or_(self, other: Schema) -> Schema:
        return Union([self, other])

    def refine(self, check: Callable[[Any], bool], message: str) -> Schema:
        return Refine(self, check, message)


class String(Schema):
    def __init__(
        self, *, min_length: int | None = None, max_length: int | None = None, max_message: str | None = None
    ) -> None:
        self.min_length, self.max_length, self.max_message = min_length, max_length, max_message

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if not isinstance(data, str):
            return _invalid_type("string", data, path, issues)
        status = VALID
        if self.min_length is not None and js_length(data) < self.min_length:
            issues.append(
                Issue("too_small", path, f"String must contain at least {self.min_length} character(s)")
            )
            status = DIRTY
        if self.max_length is not None and js_length(data) > self.max_length:
            message = self.max_message or f"String must contain at most {self.max_length} character(s)"
            issues.append(Issue("too_big", path, message))
            status = DIRTY
        return Parsed(status, data)


class Number(Schema):
    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if parsed_type(data) != "number":
            return _invalid_type("number", data, path, issues)
        return Parsed(VALID, data)


class Boolean(Schema):
    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if not isinstance(data, bool):
            return _invalid_type("boolean", data, path, issues)
        return Parsed(VALID, data)


class Enum(Schema):
    def __init__(self, values: Sequence[str]) -> None:
        self.values = tuple(values)

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if not isinstance(data, str):
            return _invalid_type(_join_values(self.values), data, path, issues)
        if data not in self.values:
            message = f"Invalid enum value. Expected {_join_values(self.values)}, received '{data}'"
            issues.append(Issue("invalid_enum_value", path, message))
            return _INVALID
        return Parsed(VALID, data)


class Literal(Schema):
    def __init__(self, value: str) -> None:
        self.value = value

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if data != self.value or not isinstance(data, str):
            issues.append(Issue("invalid_literal", path, f'Invalid literal value, expected "{self.value}"'))
            return _INVALID
        return Parsed(VALID, data)


class Undefined(Schema):
    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if data is not MISSING:
            return _invalid_type("undefined", data, path, issues)
        return Parsed(VALID, MISSING)


class Null(Schema):
    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if data is not None:
            return _invalid_type("null", data, path, issues)
        return Parsed(VALID, None)


class AnyValue(Schema):
    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        return Parsed(VALID, data)


class Custom(Schema):
    """`z.custom(check)` (the SDK's `FlexibleEnumSchema` is `z.custom(v => typeof v === "string")`)."""

    def __init__(self, check: Callable[[Any], bool]) -> None:
        self.check = check

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if not self.check(data):
            # zod 3.23+: a failing z.custom() check is fatal (aborts) with the default message.
            issues.append(Issue("custom", path, "Invalid input"))
            return _INVALID
        return Parsed(VALID, data)


class Record(Schema):
    """`z.record(valueSchema)` with string keys."""

    def __init__(self, value: Schema) -> None:
        self.value = value

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if not isinstance(data, dict):
            return _invalid_type("object", data, path, issues)
        status, out = VALID, {}
        for key, item in data.items():
            result = self.value._parse(item, (*path, key), issues)
            if result.status == ABORTED:
                status = ABORTED
            elif result.status == DIRTY and status == VALID:
                status = DIRTY
            out[key] = result.value
        return _INVALID if status == ABORTED else Parsed(status, out)


class Object(Schema):
    """`z.object(shape)`: unknown keys are stripped; every key is checked before deciding."""

    def __init__(self, shape: dict[str, Schema]) -> None:
        self.shape = shape

    def extend(self, shape: dict[str, Schema]) -> Object:
        return Object({**self.shape, **shape})

    def partial(self) -> Object:
        return Object({key: schema.optional() for key, schema in self.shape.items()})

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if not isinstance(data, dict):
            return _invalid_type("object", data, path, issues)
        status = VALID
        out: dict[str, Any] = {}
        for key, schema in self.shape.items():
            result = schema._parse(data.get(key, MISSING), (*path, key), issues)
            if result.status == ABORTED:
                status = ABORTED
            elif result.status == DIRTY and status == VALID:
                status = DIRTY
            # zod sets a key when its value is defined or the key was present in the input.
            if result.value is not MISSING or key in data:
                out[key] = result.value
        return _INVALID if status == ABORTED else Parsed(status, out)


class Array(Schema):
    def __init__(self, item: Schema) -> None:
        self.item = item

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if not isinstance(data, list):
            return _invalid_type("array", data, path, issues)
        status, out = VALID, []
        for index, item in enumerate(data):
            result = self.item._parse(item, (*path, index), issues)
            if result.status == ABORTED:
                status = ABORTED
            elif result.status == DIRTY and status == VALID:
                status = DIRTY
            out.append(result.value)
        return _INVALID if status == ABORTED else Parsed(status, out)


class Optional(Schema):
    def __init__(self, inner: Schema) -> None:
        self.inner = inner

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if data is MISSING:
            return Parsed(VALID, MISSING)
        return self.inner._parse(data, path, issues)


class Nullable(Schema):
    def __init__(self, inner: Schema) -> None:
        self.inner = inner

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        if data is None:
            return Parsed(VALID, None)
        return self.inner._parse(data, path, issues)


class Default(Schema):
    def __init__(self, inner: Schema, value: Any) -> None:
        self.inner, self.value = inner, value

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        return self.inner._parse(self.value if data is MISSING else data, path, issues)


class Catch(Schema):
    """`.catch(value)`: any failure of the inner schema (issues included) yields `value`."""

    def __init__(self, inner: Schema, value: Any) -> None:
        self.inner, self.value = inner, value

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        result = self.inner._parse(data, path, [])
        return result if result.status == VALID else Parsed(VALID, self.value)


class Refine(Schema):
    def __init__(self, inner: Schema, check: Callable[[Any], bool], message: str) -> None:
        self.inner, self.check, self.message = inner, check, message

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        result = self.inner._parse(data, path, issues)
        if result.status == ABORTED:
            return _INVALID
        status = result.status
        if not self.check(result.value):
            issues.append(Issue("custom", path, self.message))
            status = DIRTY
        return Parsed(status, result.value)


class Union(Schema):
    """`z.union`: the first valid option wins, else the first dirty one, else `invalid_union`."""

    def __init__(self, options: Sequence[Schema]) -> None:
        self.options = tuple(options)

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        dirty: tuple[Parsed, list[Issue]] | None = None
        option_issues: list[tuple[Issue, ...]] = []
        for option in self.options:
            own: list[Issue] = []
            result = option._parse(data, path, own)
            if result.status == VALID:
                return result
            if result.status == DIRTY and dirty is None:
                dirty = (result, own)
            if own:
                option_issues.append(tuple(own))
        if dirty is not None:
            issues.extend(dirty[1])
            return dirty[0]
        issues.append(Issue("invalid_union", path, "Invalid input", tuple(option_issues)))
        return _INVALID


def _merge(a: Any, b: Any) -> tuple[bool, Any]:
    if isinstance(a, dict) and isinstance(b, dict):
        merged = {**a, **b}
        for key in a.keys() & b.keys():
            ok, value = _merge(a[key], b[key])
            if not ok:
                return False, None
            merged[key] = value
        return True, merged
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False, None
        items = []
        for x, y in zip(a, b, strict=True):
            ok, value = _merge(x, y)
            if not ok:
                return False, None
            items.append(value)
        return True, items
    same = parsed_type(a) == parsed_type(b) and a == b
    return (True, a) if same else (False, None)


class Intersection(Schema):
    def __init__(self, left: Schema, right: Schema) -> None:
        self.left, self.right = left, right

    def _parse(self, data: Any, path: Path, issues: list[Issue]) -> Parsed:
        left = self.left._parse(data, path, issues)
        right = self.right._parse(data, path, issues)
        if ABORTED in (left.status, right.status):
            return _INVALID
        ok, merged = _merge(left.value, right.value)
        if not ok:
            issues.append(
                Issue("invalid_intersection_types", path, "Intersection results could not be merged")
            )
            return _INVALID
        status = DIRTY if DIRTY in (left.status, right.status) else VALID
        return Parsed(status, merged)


# zod-validation-error 3: `fromError(zodError).toString()`.

# zod-validation-error tests `/[$_\p{ID_Start}][$\u200c\u200d\p{ID_Continue}]*/u` unanchored: a key
# with any letter, `$` or `_` is written with a dot, anything else in brackets.
_IDENTIFIER = re.compile(r"[$_]|[^\W\d_]")


def _join_path(path: Path) -> str:
    if len(path) == 1:
        return str(path[0])
    joined = ""
    for item in path:
        if isinstance(item, int):
            joined += f"[{item}]"
        elif '"' in item:
            escaped = item.replace('"', '\\"')
            joined += f'["{escaped}"]'
        elif not _IDENTIFIER.search(item):
            joined += f'["{item}"]'
        else:
            joined += ("." if joined else "") + item
    return joined


def _issue_message(issue: Issue) -> str:
    if issue.code == "invalid_union":
        options: list[str] = []
        for option in issue.union_errors:
            text = "; ".join(_issue_message(inner) for inner in option)
            if text not in options:
                options.append(text)
        return ", or ".join(options)
    if issue.path:
        if len(issue.path) == 1 and isinstance(issue.path[0], int):
            return f"{issue.message} at index {issue.path[0]}"
        return f'{issue.message} at "{_join_path(issue.path)}"'
    return issue.message


def format_issues(issues: Sequence[Issue]) -> str:
    """zod-validation-error's message: `Validation error: <issue>; <issue>...` (at most 99 issues)."""
    return "Validation error: " + "; ".join(_issue_message(issue) for issue in issues[:99])
