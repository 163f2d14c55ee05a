"""Injected failures: "the next N requests matching X get error Y", queued through `/_sim/faults`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, TypeAdapter


class FailRule(BaseModel):
    """Fail the next `count` /api requests whose path contains `match` (and method, if set)."""

    match: str
    method: str | None = None
    status: int = Field(default=500, ge=400, le=599)
    type: str = "internal_server_error"
    message: str = "Injected failure."
    count: int = Field(default=1, ge=1)


_RULES = TypeAdapter(list[FailRule])


def parse_rules(raw: object) -> list[FailRule]:
    """Rules from their JSON form (a list of objects); raises ValueError if malformed."""
    return _RULES.validate_python(raw)


class FaultQueue:
    """Pending fail rules, consumed in the order they were added."""

    def __init__(self) -> None:
        self.rules: list[FailRule] = []

    def add(self, rules: list[FailRule]) -> None:
        """Queue `rules` after the pending ones."""
        self.rules.extend(rules)

    def take(self, method: str, path: str) -> FailRule | None:
        """The first rule matching this request, with one use consumed; None if no rule applies."""
        for rule in self.rules:
            if rule.match in path and (rule.method is None or rule.method.upper() == method):
                rule.count -= 1
                if rule.count == 0:
                    self.rules.remove(rule)
                return rule
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The pending rules as JSON."""
        return [rule.model_dump() for rule in self.rules]
