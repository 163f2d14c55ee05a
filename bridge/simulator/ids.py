"""Identifiers and clocks shaped like Dust's: 10-char sIds, epoch-ms timestamps, `<ms>-<n>` event ids."""

from __future__ import annotations

import re
import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def new_sid(length: int = 10) -> str:
    """A random alphanumeric sId, as Dust generates for conversations, messages and agents."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (Dust's `created` fields)."""
    return time.time_ns() // 1_000_000


_EVENT_ID = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def parse_event_id(event_id: str) -> tuple[int, int] | None:
    """A Redis stream id, `"<ms>-<n>"` or just `"<ms>"` (sequence 0), as a sortable pair; None if
    Redis would refuse it."""
    match = _EVENT_ID.fullmatch(event_id)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


class EventIdClock:
    """Issues Redis-stream-like ids `<epoch-ms>-<n>` that strictly increase, even within one millisecond."""

    def __init__(self) -> None:
        self._ms = 0
        self._seq = -1

    def next(self) -> tuple[int, int]:
        """The next id as a (ms, n) pair."""
        ms = now_ms()
        if ms > self._ms:
            self._ms, self._seq = ms, 0
        else:
            # The wall clock stood still or went back: keep the last millisecond and count up.
            self._seq += 1
        return self._ms, self._seq
